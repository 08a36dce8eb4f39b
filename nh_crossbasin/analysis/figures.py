"""Figures of the analysis: metric CDFs, influence heatmaps, weight histories, basin maps, clusters, sensitivity.

Every function builds a :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot state, nothing shown),
saves it as PNG when ``path`` is given and returns it; in a notebook the returned figure displays inline.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from nh_crossbasin.analysis.influence import basin_labels, group_order
from nh_crossbasin.analysis.paired import HIGHER_IS_BETTER, IDEAL_VALUE

PathLike = Union[str, Path]


class AnalysisFigure(Figure):
    """A matplotlib ``Figure`` that displays itself as PNG in Jupyter/IPython, whatever the backend."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    """An empty figure on an Agg canvas (independent of pyplot and of the notebook backend)."""
    figure = AnalysisFigure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Optional[PathLike], dpi: int = 120) -> Figure:
    """Save ``figure`` as PNG at ``path`` (parent folders created) if a path is given; return the figure."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=dpi, format="png")
    return figure


def _as_series(table, metric: str) -> pd.Series:
    return (table[metric] if isinstance(table, pd.DataFrame) else pd.Series(table)).astype(float).dropna()


def plot_metric_cdfs(tables: Mapping[str, Union[pd.DataFrame, pd.Series]], metrics: Union[str, Sequence[str]] = "NSE",
                     path: Optional[PathLike] = None, lower_limit: float = -1.0) -> Figure:
    """Empirical CDFs of per-basin metrics, one panel per metric, one line per run.

    Parameters
    ----------
    tables : mapping of str to DataFrame or Series
        ``{run name: basin × metric table}`` (or a Series of one metric).
    metrics : str or sequence of str
        Metrics to draw.
    path : str or Path, optional
        PNG file to write.
    lower_limit : float, optional
        For metrics that are better when higher (NSE, KGE), the x axis starts here at the lowest (the CDF of the
        basins below still counts them); the axis ends at 1.
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    figure = new_figure(4.2 * len(metrics), 3.6)
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        lowest = np.inf
        for name, table in tables.items():
            values = np.sort(_as_series(table, metric).to_numpy())
            if not len(values):
                continue
            lowest = min(lowest, values[0])
            cdf = np.arange(1, len(values) + 1) / len(values)
            ax.step(np.r_[values[0], values], np.r_[0.0, cdf], where="post", label=f"{name} (median {np.median(values):.3f})")
        if IDEAL_VALUE.get(metric) == HIGHER_IS_BETTER and np.isfinite(lowest):
            ax.set_xlim(max(lowest, lower_limit), 1.0)
        ax.set_xlabel(metric)
        ax.set_ylabel("share of basins")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left")
    return save_figure(figure, path)


def _block_edges(order: Sequence[str], groups: Optional[Mapping[str, object]]):
    if not groups:
        return [], []
    labels = [groups.get(b) for b in order]
    edges, centers, start = [], [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            centers.append(((start + i - 1) / 2, labels[start]))
            if i < len(labels):
                edges.append(i - 0.5)
            start = i
    return edges, centers


def plot_influence_heatmap(record: xr.Dataset, groups: Optional[Mapping[str, object]] = None,
                           variable: str = "influence", path: Optional[PathLike] = None,
                           max_tick_labels: int = 40) -> Figure:
    """Heatmap of an influence record (targets × sources), both axes ordered by group (region, regime, cluster).

    Influence is shown on a diverging scale centred at zero (limits: the 98th percentile of its absolute values);
    ``weights`` on a sequential scale. Lines separate the groups.
    """
    groups = basin_labels(groups)
    targets = group_order(record["target"].values, groups)
    sources = group_order(record["source"].values, groups)
    values = record[variable].transpose("target", "source").sel(target=targets, source=sources).values
    figure = new_figure(7.0, 6.0)
    ax = figure.add_subplot()
    finite = values[np.isfinite(values)]
    if variable.startswith("influence") and finite.size:
        limit = float(np.quantile(np.abs(finite), 0.98)) or 1.0
        image = ax.imshow(values, cmap="RdBu", norm=TwoSlopeNorm(0.0, -limit, limit), aspect="auto",
                          interpolation="nearest")
    else:
        image = ax.imshow(values, cmap="viridis", aspect="auto", interpolation="nearest")
    figure.colorbar(image, ax=ax, label=variable)
    for axis_order, set_ticks, set_labels, line in ((sources, ax.set_xticks, ax.set_xticklabels, ax.axvline),
                                                     (targets, ax.set_yticks, ax.set_yticklabels, ax.axhline)):
        edges, centers = _block_edges(axis_order, groups)
        for edge in edges:
            line(edge, color="black", linewidth=0.8)
        if len(axis_order) <= max_tick_labels:
            set_ticks(range(len(axis_order)))
            set_labels(axis_order, fontsize=6)
        elif centers:
            set_ticks([c for c, _ in centers])
            set_labels([str(g) for _, g in centers], fontsize=7)
        else:
            set_ticks([])
    ax.tick_params(axis="x", labelrotation=90)
    ax.set_xlabel("source basin (its data)")
    ax.set_ylabel("target basin (its loss)")
    ax.set_title(f"{variable}, epoch {record.attrs.get('epoch', '?')}, {record.attrs.get('measure', '')}")
    return save_figure(figure, path)


def _group_colors(basins: Sequence[str], groups: Optional[Mapping[str, object]]):
    from matplotlib import colormaps
    labels = [None if not groups else groups.get(b) for b in basins]
    unique = sorted({lab for lab in labels if lab is not None}, key=str)
    cmap = colormaps["tab10" if len(unique) <= 10 else "tab20"]
    palette = {lab: cmap(i % cmap.N) for i, lab in enumerate(unique)}
    return [palette.get(lab, (0.5, 0.5, 0.5, 1.0)) for lab in labels], palette


def plot_weight_history(history: pd.DataFrame, summary: Optional[pd.DataFrame] = None,
                        groups: Optional[Mapping[str, object]] = None, path: Optional[PathLike] = None) -> Figure:
    """Basin weights q across refreshes (one line per source basin, coloured by group) and the effective number
    of sources, from the two tables of :func:`nh_crossbasin.analysis.weight_history`."""
    groups = basin_labels(groups)
    figure = new_figure(10.0, 3.8)
    left, right = figure.subplots(1, 2, width_ratios=[2, 1])
    colors, palette = _group_colors([str(c) for c in history.columns], groups)
    epochs = history.index.to_numpy()
    for color, column in zip(colors, history.columns):
        left.plot(epochs, history[column].to_numpy(), marker="o", markersize=3, color=color, alpha=0.7,
                  linewidth=1)
    left.axhline(1.0 / history.shape[1], color="black", linestyle="--", linewidth=1, label="uniform")
    for label, color in palette.items():
        left.plot([], [], color=color, label=str(label))
    left.set_xlabel("epoch of refresh")
    left.set_ylabel("basin weight q")
    left.legend(fontsize="small")
    left.grid(alpha=0.3)
    effective = (1.0 / (history ** 2).sum(axis=1)) if summary is None else summary["effective_sources"]
    right.plot(effective.index, effective.to_numpy(), marker="o")
    right.axhline(history.shape[1], color="black", linestyle="--", linewidth=1, label="all sources")
    right.set_xlabel("epoch of refresh")
    right.set_ylabel("effective sources 1/Σq²")
    right.legend(fontsize="small")
    right.grid(alpha=0.3)
    return save_figure(figure, path)


def plot_basin_map(values: Mapping[str, object], latitude: Mapping[str, float], longitude: Mapping[str, float],
                   categorical: bool = False, label: str = "", title: str = "", path: Optional[PathLike] = None,
                   marker_size: float = 25.0) -> Figure:
    """Basins at their gauge location (lon/lat scatter) coloured by a value, e.g. a metric difference or a cluster.

    Numbers are drawn on a diverging scale centred at zero (red worse, blue better for differences); categories
    (``categorical=True``) with one colour each and a legend. Basins without a location are left out.
    """
    values = pd.Series(values)
    values.index = values.index.astype(str)
    lat, lon = pd.Series(latitude), pd.Series(longitude)
    lat.index, lon.index = lat.index.astype(str), lon.index.astype(str)
    basins = [b for b in values.index if b in lat.index and b in lon.index and pd.notna(values[b])]
    figure = new_figure(7.5, 4.5)
    ax = figure.add_subplot()
    x, y = lon.loc[basins].to_numpy(float), lat.loc[basins].to_numpy(float)
    if categorical:
        colors, palette = _group_colors(basins, values.loc[basins].to_dict())
        ax.scatter(x, y, c=colors, s=marker_size, edgecolors="black", linewidths=0.3)
        for group, color in palette.items():
            ax.scatter([], [], color=color, label=str(group), s=marker_size)
        ax.legend(title=label or None, fontsize="small", loc="best", ncol=2 if len(palette) > 8 else 1)
    else:
        numbers = values.loc[basins].to_numpy(float)
        limit = float(np.nanmax(np.abs(numbers))) if len(numbers) else 1.0
        limit = limit or 1.0
        points = ax.scatter(x, y, c=numbers, cmap="RdBu", norm=TwoSlopeNorm(0.0, -limit, limit), s=marker_size,
                            edgecolors="black", linewidths=0.3)
        figure.colorbar(points, ax=ax, label=label)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return save_figure(figure, path)


def plot_cluster_scan(scan: pd.DataFrame, path: Optional[PathLike] = None) -> Figure:
    """Mean (solid) and minimum (dashed) silhouette over k for each feature space of
    :func:`nh_crossbasin.analysis.catchment_similarity`."""
    figure = new_figure(6.0, 3.8)
    ax = figure.add_subplot()
    for i, (space, table) in enumerate(scan.groupby("space", sort=False)):
        color = f"C{i}"
        ax.plot(table["k"], table["mean_silhouette"], color=color, marker="o", label=f"{space}: mean")
        ax.plot(table["k"], table["min_cluster_silhouette"], color=color, linestyle="--", marker=".",
                label=f"{space}: worst cluster")
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel("silhouette")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(figure, path)


def plot_sensitivity_ranking(ranking: pd.DataFrame, path: Optional[PathLike] = None,
                             top: Optional[int] = None) -> Figure:
    """Horizontal bars of the mean absolute gradient per static input (:func:`rank_sensitivity`'s table)."""
    shown = ranking if top is None else ranking.head(top)
    figure = new_figure(6.0, 0.3 * len(shown) + 1.2)
    ax = figure.add_subplot()
    ax.barh(range(len(shown)), shown["mean"].to_numpy()[::-1], color="C0")
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels(list(shown.index)[::-1])
    ax.set_xlabel("mean |∂ output / ∂ attribute| (normalised)")
    ax.grid(alpha=0.3, axis="x")
    return save_figure(figure, path)


def plot_robustness(table: pd.DataFrame, metric: str = "NSE", path: Optional[PathLike] = None,
                    band: Tuple[float, float] = (0.25, 0.75)) -> Figure:
    """Median metric over basins against the noise level σ, with an inter-quantile band
    (:func:`nh_crossbasin.analysis.noise_robustness`'s table)."""
    subset = table[table["metric"] == metric].groupby("sigma")["value"]
    median = subset.median()
    low, high = subset.quantile(band[0]), subset.quantile(band[1])
    figure = new_figure(5.5, 3.6)
    ax = figure.add_subplot()
    ax.plot(median.index, median.to_numpy(), marker="o", label="median")
    ax.fill_between(median.index, low.to_numpy(), high.to_numpy(), alpha=0.3,
                    label=f"{int(band[0] * 100)}-{int(band[1] * 100)} % of basins")
    ax.set_xlabel("σ of noise on normalised static inputs")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(figure, path)
