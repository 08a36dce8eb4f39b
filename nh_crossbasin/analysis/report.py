"""One call from run directories to the comparison tables and figures (the engine of ``nh-xb compare``)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pandas as pd

from nh_crossbasin.analysis.figures import plot_basin_map, plot_metric_cdfs
from nh_crossbasin.analysis.paired import paired_comparison
from nh_crossbasin.analysis.results import (DEFAULT_METRICS, RunResults, basin_metrics, ensemble_results,
                                            load_run)

RunSpec = Union[str, Path, RunResults, Sequence[Union[str, Path]]]
CDF_METRICS = ("NSE", "KGE")


@dataclass
class ComparisonReport:
    """What :func:`compare_runs` produced.

    Attributes
    ----------
    runs : dict
        ``{name: RunResults}``; the first is the baseline A.
    tables : dict
        ``{name: basin × metric table}``.
    comparisons : dict
        ``{name of B: paired comparison of B vs A}`` (see :func:`nh_crossbasin.analysis.paired_comparison`).
    files : list of Path
        Figures and tables written.
    """

    runs: Dict[str, RunResults]
    tables: Dict[str, pd.DataFrame]
    comparisons: Dict[str, pd.DataFrame]
    files: List[Path] = field(default_factory=list)

    @property
    def baseline(self) -> str:
        """Name of run A."""
        return next(iter(self.runs))

    def tidy_metrics(self) -> pd.DataFrame:
        """All per-basin metrics as one tidy table (``run``, ``basin``, ``metric``, ``value``)."""
        frames = []
        for name, table in self.tables.items():
            long = table.reset_index().melt(id_vars="basin", var_name="metric", value_name="value")
            long.insert(0, "run", name)
            frames.append(long)
        return pd.concat(frames, ignore_index=True)


def slug(text: str) -> str:
    """``text`` reduced to characters safe in file names."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "run"


def load_spec(spec: RunSpec, period: str = "test", epoch: Optional[int] = None, name: Optional[str] = None,
              evaluate_missing: bool = True, gpu: Optional[int] = None) -> RunResults:
    """Load one run, or a seed ensemble when ``spec`` is a sequence of several run directories."""
    if isinstance(spec, (list, tuple)):
        if len(spec) == 1:
            return load_run(spec[0], period, epoch, evaluate_missing, gpu=gpu, name=name)
        return ensemble_results(spec, period, epoch, name=name, evaluate_missing=evaluate_missing, gpu=gpu)
    return load_run(spec, period, epoch, evaluate_missing, gpu=gpu, name=name)


def unique_names(names: Sequence[str]) -> List[str]:
    """``names`` with repeats numbered (``run``, ``run (2)``, ...)."""
    seen: Dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique


def compare_runs(specs: Sequence[RunSpec], names: Optional[Sequence[str]] = None, period: str = "test",
                 epoch: Optional[int] = None, metrics: Sequence[str] = DEFAULT_METRICS,
                 regions: Optional[Mapping[str, object]] = None,
                 coordinates: Optional[Tuple[Mapping[str, float], Mapping[str, float]]] = None,
                 out_dir: Optional[Union[str, Path]] = None, evaluate_missing: bool = True,
                 progress: bool = True, gpu: Optional[int] = None) -> ComparisonReport:
    """Load runs, compute their per-basin metrics, compare each with the first, and write figures.

    Parameters
    ----------
    specs : sequence
        Two or more runs; each a run directory, loaded results, or a list of run directories (a seed ensemble:
        the mean prediction per time step).
    names : sequence of str, optional
        Labels (default: directory names).
    period, epoch, evaluate_missing
        As in :func:`nh_crossbasin.analysis.load_run`.
    metrics : sequence of str
        NH metrics.
    regions : mapping, optional
        Region per basin: adds per-region rows to each comparison.
    coordinates : tuple of mappings, optional
        ``(latitude, longitude)`` per basin: adds maps of the NSE difference of each run vs the baseline.
    out_dir : str or Path, optional
        Where figures (PNG) and tables (CSV) go; nothing is written without it.
    progress : bool
        Show progress bars.
    gpu : int, optional
        GPU id for evaluations that are missing (< 0: CPU).

    Returns
    -------
    ComparisonReport
    """
    if len(specs) < 2:
        raise ValueError("Comparing needs at least two runs (A and B).")
    loaded = [load_spec(s, period, epoch, evaluate_missing=evaluate_missing, gpu=gpu) for s in specs]
    if names is not None and len(names) != len(loaded):
        raise ValueError(f"{len(names)} names for {len(loaded)} runs.")
    labels = unique_names(list(names) if names else [r.name for r in loaded])
    runs = {label: replace(run, name=label) for run, label in zip(loaded, labels)}
    tables = {name: basin_metrics(run, metrics, progress=progress) for name, run in runs.items()}
    baseline = labels[0]
    comparisons = {name: paired_comparison(tables[baseline], tables[name], metrics, regions=regions,
                                           names=(baseline, name)) for name in labels[1:]}
    report = ComparisonReport(runs=runs, tables=tables, comparisons=comparisons)
    if out_dir is not None:
        _write(report, Path(out_dir), coordinates)
    return report


def planned_files(names: Sequence[str], with_maps: bool) -> List[str]:
    """File names :func:`compare_runs` writes into ``out_dir`` for runs named ``names`` (baseline first)."""
    files = ["metrics_per_basin.csv", "comparison.csv", "cdf.png"]
    if with_maps:
        files += [f"map_NSE_{slug(name)}_vs_{slug(names[0])}.png" for name in names[1:]]
    return files


def _write(report: ComparisonReport, out_dir: Path, coordinates) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(report.runs)
    tidy = report.tidy_metrics()
    tidy.to_csv(out_dir / "metrics_per_basin.csv", index=False)
    combined = pd.concat([table.assign(a=table.attrs["a"], b=table.attrs["b"])
                          for table in report.comparisons.values()], ignore_index=True)
    combined.to_csv(out_dir / "comparison.csv", index=False)
    report.files += [out_dir / "metrics_per_basin.csv", out_dir / "comparison.csv"]
    first = report.tables[names[0]]
    cdf_metrics = [m for m in CDF_METRICS if m in first.columns] or [first.columns[0]]
    plot_metric_cdfs(report.tables, cdf_metrics, path=out_dir / "cdf.png")
    report.files.append(out_dir / "cdf.png")
    if coordinates is not None and "NSE" in first.columns:
        latitude, longitude = coordinates
        for name in names[1:]:
            common = first.index.intersection(report.tables[name].index)
            difference = report.tables[name].loc[common, "NSE"] - first.loc[common, "NSE"]
            path = out_dir / f"map_NSE_{slug(name)}_vs_{slug(names[0])}.png"
            plot_basin_map(difference, latitude, longitude, label=f"NSE {name} − {names[0]}",
                           title=f"NSE difference ({report.runs[name].period}): blue = {name} better", path=path)
            report.files.append(path)
