"""Arm tables of an experiment: each variant against the baseline and against its control, paired over
(basin, seed) -- or over basins, for seed-ensemble tables (one row per basin).

A pair is one basin under one seed (or one basin's seed-ensemble mean prediction): the two arms must have been
evaluated on the same basin with the same seed. Statistics: the median and mean metric of each arm, the median of
the paired differences, the share of pairs improved, the two-sided Wilcoxon signed-rank p (``scipy.stats``) and
Cohen's d_z (mean difference over the standard deviation of the differences).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats


def paired_difference(table: pd.DataFrame, arm: str, reference: str, metric: str = "NSE") -> pd.Series:
    """``metric`` of ``arm`` minus that of ``reference`` for every (basin, seed) both have."""
    wide = table.pivot_table(index=["basin", "seed"], columns="variant", values=metric, aggfunc="mean")
    if arm not in wide or reference not in wide:
        return pd.Series(dtype=float)
    return (wide[arm] - wide[reference]).dropna()


def difference_stats(diff: pd.Series) -> dict:
    """Median difference, share improved, Wilcoxon p and Cohen's d_z of paired differences (NaN when undefined)."""
    diff = pd.Series(diff, dtype=float).dropna()
    if diff.empty:
        return {"median_diff": np.nan, "improved": np.nan, "p": np.nan, "d": np.nan, "pairs": 0}
    nonzero = (diff != 0).any()
    p = float(stats.wilcoxon(diff).pvalue) if nonzero and len(diff) > 1 else np.nan
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else np.nan
    return {"median_diff": float(diff.median()), "improved": float((diff > 0).mean()), "p": p,
            "d": float(diff.mean() / sd) if sd and sd > 0 else np.nan, "pairs": int(len(diff))}


def arm_table(table: pd.DataFrame, baseline: str, controls: Optional[Mapping[str, Optional[str]]] = None,
              metrics: Sequence[str] = ("NSE", "KGE")) -> pd.DataFrame:
    """One row per variant: medians and means of ``metrics``, basins with NSE <= 0, and for the first metric the
    paired comparison with ``baseline`` (``vs_base_*``) and with the variant's control (``vs_control_*``).

    Parameters
    ----------
    table : pd.DataFrame
        Tidy results: ``variant``, ``seed``, ``basin`` and the metric columns.
    baseline : str
        The design's baseline variant (e.g. ``homogeneous``).
    controls : mapping, optional
        ``{variant: control variant}``.
    metrics : sequence of str
        Metric columns to summarise (those present).
    """
    controls = dict(controls or {})
    metrics = [m for m in metrics if m in table]
    first = metrics[0]
    rows = []
    for variant, group in table.groupby("variant", sort=False):
        row = {"variant": variant, "pairs": int(len(group))}
        for metric in metrics:
            row[f"median_{metric}"] = float(group[metric].median())
            row[f"mean_{metric}"] = float(group[metric].mean())
        if "NSE" in group:
            row["nse_le_0"] = int((group["NSE"] <= 0).sum())
        for prefix, reference in (("vs_base", baseline), ("vs_control", controls.get(variant))):
            row[f"{prefix}"] = reference if reference and reference != variant else ""
            values = difference_stats(paired_difference(table, variant, reference, first)) if row[prefix] else \
                difference_stats(pd.Series(dtype=float))
            row.update({f"{prefix}_{k}": v for k, v in values.items() if k != "pairs"})
        rows.append(row)
    arms = pd.DataFrame(rows)
    arms.attrs["compared"] = first
    return arms


def format_arm_table(arms: pd.DataFrame) -> str:
    """A markdown table of :func:`arm_table`: median and mean NSE and KGE of every arm (those computed), basins with
    NSE <= 0, and the paired differences in the metric the table compared (its first metric, named in the header)."""
    def num(value, fmt):
        return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, fmt)

    compared = arms.attrs.get("compared", "NSE")
    levels = [(f"{stat}_{m}", f"{stat} {m}") for m in ("NSE", "KGE") for stat in ("median", "mean")
              if f"{stat}_{m}" in arms]
    header = ("| variant | " + " | ".join(label for _, label in levels) + f" | NSE ≤ 0 | vs baseline: median "
              f"Δ{compared} | improved | p | d | control | vs control: median Δ{compared} | improved | p | d |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for _, r in arms.iterrows():
        lines.append(
            f"| {r['variant']} | " + " | ".join(num(r[column], ".3f") for column, _ in levels) + " | "
            f"{num(r.get('nse_le_0'), 'd')} | "
            f"{num(r['vs_base_median_diff'], '+.3f')} | {num(r['vs_base_improved'], '.2f')} | "
            f"{num(r['vs_base_p'], '.2g')} | {num(r['vs_base_d'], '+.2f')} | {r['vs_control'] or '–'} | "
            f"{num(r['vs_control_median_diff'], '+.3f')} | {num(r['vs_control_improved'], '.2f')} | "
            f"{num(r['vs_control_p'], '.2g')} | {num(r['vs_control_d'], '+.2f')} |")
    return "\n".join(lines)
