"""Analysis of NH run directories (plain NH runs included): per-basin metrics, seed ensembles, paired statistics,
CDFs, influence maps, EA-LSTM embeddings, sensitivity and robustness.

Typical use in a notebook::

    from nh_crossbasin import analysis as xa
    report = xa.compare_runs(["runs/homogeneous", ["runs/het_seed1", "runs/het_seed2"]], out_dir="runs/compare")
    report.comparisons                              # B vs A: medians, share improved, Wilcoxon p, Cohen's d
    xa.plot_metric_cdfs(report.tables, ["NSE", "KGE"])

Results missing from a run directory are produced with NH's own ``eval_run`` (plugin active); metrics come from
NH's own metric functions. Figures are matplotlib ``Figure`` objects on an Agg canvas, optionally saved as PNG.

The names below are imported on first use, so that ``import nh_crossbasin.analysis`` stays cheap (torch is only
imported by the functions that run models).
"""
from __future__ import annotations

import importlib

_MODULES = {
    "attributes": ("coordinates", "load_attribute_table", "region_labels", "run_attributes"),
    "clustering": ("KMeansResult", "cluster_scan", "kmeans", "silhouette_samples", "silhouette_score",
                   "variance_reduction"),
    "figures": ("plot_basin_map", "plot_cluster_scan", "plot_influence_heatmap", "plot_metric_cdfs",
                "plot_robustness", "plot_sensitivity_ranking", "plot_weight_history", "save_figure"),
    "influence": ("cluster_influence_rows", "group_order", "influence_files", "load_influence", "same_group_share",
                  "top_sources", "weight_history"),
    "paired": ("format_comparison", "paired_comparison", "paired_statistics", "skill_score"),
    "report": ("ComparisonReport", "compare_runs"),
    "results": ("DEFAULT_METRICS", "RunResults", "basin_metrics", "ensemble_results", "evaluate_run", "load_run",
                "metrics_table", "results_file", "run_tables", "wide_metric"),
    "sensitivity": ("DEFAULT_SIGMAS", "morris_sensitivity", "noise_robustness", "rank_sensitivity",
                    "robustness_summary", "static_input_gradients"),
    "similarity": ("catchment_similarity", "embedding_and_attributes", "hydrological_signatures",
                   "observed_discharge", "run_time_series", "signature_variance_reduction"),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
