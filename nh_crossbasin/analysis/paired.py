"""Paired comparison of two runs over their common basins (medians, share improved, Wilcoxon, Cohen's d).

Each metric has a direction: NSE, KGE and Pearson-r are better when higher; Alpha-NSE and Beta-KGE when closer to 1;
Beta-NSE, FHV, FMS, FLV, the peak metrics and (R)MSE when closer to 0. The comparison turns a value ``v`` into a
*skill score* that is always better when higher (``v``, ``-|v - 1|`` or ``-|v|``), so that for every metric

- ``share_improved`` is the share of basins whose score in B is strictly higher than in A,
- ``p_wilcoxon`` is the two-sided paired Wilcoxon signed-rank p-value of the score differences ``B - A``,
- ``cohens_d`` is the paired effect size ``d_z = mean(B - A) / std(B - A)`` of the score differences
  (sample std, ddof=1): positive means B is better.

``median_diff`` and the medians and means are those of the raw metric values (``median(B - A)`` per basin).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

HIGHER_IS_BETTER = "higher"
IDEAL_VALUE: Dict[str, object] = {
    "NSE": HIGHER_IS_BETTER, "KGE": HIGHER_IS_BETTER, "Pearson-r": HIGHER_IS_BETTER,
    "Alpha-NSE": 1.0, "Beta-KGE": 1.0,
    "Beta-NSE": 0.0, "FHV": 0.0, "FMS": 0.0, "FLV": 0.0, "MSE": 0.0, "RMSE": 0.0,
    "Peak-Timing": 0.0, "Missed-Peaks": 0.0, "Peak-MAPE": 0.0,
}
ALL_REGIONS = "all"
COLUMNS = ("region", "metric", "n_basins", "median_a", "median_b", "mean_a", "mean_b", "median_diff",
           "share_improved", "le0_a", "le0_b", "p_wilcoxon", "cohens_d")


def skill_score(metric: str, values) -> np.ndarray:
    """Values of ``metric`` turned into a score that is better when higher (see the module docstring).

    Raises
    ------
    KeyError
        For a metric without a known direction.
    """
    ideal = IDEAL_VALUE[metric]
    values = np.asarray(values, dtype=float)
    return values if ideal == HIGHER_IS_BETTER else -np.abs(values - float(ideal))


def paired_statistics(metric: str, a, b) -> dict:
    """Paired statistics of one metric over basins where both values are finite.

    Parameters
    ----------
    metric : str
        NH metric name (decides the direction of "better").
    a, b : array-like
        Values of run A and run B for the same basins, in the same order.

    Returns
    -------
    dict
        ``n_basins``, ``median_a``, ``median_b``, ``mean_a``, ``mean_b``, ``median_diff`` (median of ``b - a``),
        ``share_improved``, ``le0_a``/``le0_b`` (basins with a value <= 0; for higher-is-better metrics only, else
        NaN), ``p_wilcoxon`` and ``cohens_d`` (NaN when undefined: fewer than two basins, all differences zero).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = len(a)
    out = {"n_basins": n, "median_a": _median(a), "median_b": _median(b), "mean_a": _mean(a), "mean_b": _mean(b),
           "median_diff": _median(b - a), "share_improved": math.nan, "le0_a": math.nan, "le0_b": math.nan,
           "p_wilcoxon": math.nan, "cohens_d": math.nan}
    if n == 0:
        return out
    if IDEAL_VALUE[metric] == HIGHER_IS_BETTER:
        out["le0_a"], out["le0_b"] = int((a <= 0).sum()), int((b <= 0).sum())
    diff = skill_score(metric, b) - skill_score(metric, a)
    out["share_improved"] = float((diff > 0).mean())
    if np.any(diff != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(diff).pvalue)
    if n > 1 and np.std(diff, ddof=1) > 0:
        out["cohens_d"] = float(np.mean(diff) / np.std(diff, ddof=1))
    return out


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else math.nan


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else math.nan


def paired_comparison(table_a: pd.DataFrame, table_b: pd.DataFrame, metrics: Optional[Iterable[str]] = None,
                      regions: Optional[Mapping[str, object]] = None, names: Sequence[str] = ("A", "B"),
                      min_basins_per_region: int = 1) -> pd.DataFrame:
    """Compare run B with run A over their common basins, for every metric, overall and by region.

    Parameters
    ----------
    table_a, table_b : pandas.DataFrame
        Basin × metric tables (e.g. from :func:`nh_crossbasin.analysis.basin_metrics`).
    metrics : iterable of str, optional
        Metrics to compare (default: the metrics both tables have, in A's order).
    regions : mapping or pandas.Series, optional
        Region label per basin (e.g. ``huc_02``); adds one block of rows per region. Basins without a label only
        count in ``all``.
    names : pair of str, optional
        Labels of A and B, stored in ``attrs``.
    min_basins_per_region : int, optional
        Regions with fewer common basins are left out.

    Returns
    -------
    pandas.DataFrame
        One row per (region, metric) with the columns of :data:`COLUMNS`; region ``all`` first.
    """
    metrics = [m for m in (metrics or table_a.columns) if m in table_a.columns and m in table_b.columns]
    unknown = [m for m in metrics if m not in IDEAL_VALUE]
    if unknown:
        raise ValueError(f"No direction known for metrics {unknown}; known: {sorted(IDEAL_VALUE)}.")
    common = table_a.index.intersection(table_b.index)
    a, b = table_a.loc[common], table_b.loc[common]
    blocks = [(ALL_REGIONS, common)]
    if regions is not None:
        labels = pd.Series(regions)
        labels.index = labels.index.astype(str)
        labels = labels.reindex(common.astype(str))
        labels.index = common
        for region in sorted(labels.dropna().unique(), key=_region_sort_key):
            members = labels.index[labels == region]
            if len(members) >= min_basins_per_region:
                blocks.append((region, members))
    rows = []
    for region, members in blocks:
        for metric in metrics:
            row = {"region": region, "metric": metric}
            row.update(paired_statistics(metric, a.loc[members, metric], b.loc[members, metric]))
            rows.append(row)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.attrs.update(a=names[0], b=names[1])
    return table


def _region_sort_key(value):
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def format_comparison(table: pd.DataFrame, digits: int = 3) -> str:
    """A terminal-friendly rendering of a :func:`paired_comparison` table: a line naming A and B, then the table
    (``improved``: share of basins better in B; ``p``: Wilcoxon; ``d``: Cohen's d, positive when B is better)."""
    a, b = table.attrs.get("a", "A"), table.attrs.get("b", "B")
    shown = table.rename(columns={"n_basins": "n", "median_a": "median A", "median_b": "median B",
                                  "mean_a": "mean A", "mean_b": "mean B", "median_diff": "median B-A",
                                  "share_improved": "improved", "le0_a": "<=0 A", "le0_b": "<=0 B",
                                  "p_wilcoxon": "p", "cohens_d": "d"})
    for column in ("<=0 A", "<=0 B"):
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else str(int(v)))
    shown["p"] = shown["p"].map(lambda v: "" if pd.isna(v) else f"{v:.2g}")
    legend = f"A = {a}, B = {b}; improved = share of basins better in B; p = Wilcoxon signed-rank; d = Cohen's d"
    return legend + "\n" + shown.to_string(index=False, float_format=lambda v: f"{v:.{digits}f}")
