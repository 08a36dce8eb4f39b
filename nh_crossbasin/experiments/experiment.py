"""``nh-xb experiment``: build a design from a base config and a region scheme, write it, run it, summarise it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import pandas as pd

from nh_crossbasin.experiments.designs import (DESIGNS, global_vs_local, homogeneous_vs_heterogeneous,
                                               safe_name, similar_vs_dissimilar, single_vs_regional)
from nh_crossbasin.experiments.regions import region_scheme
from nh_crossbasin.experiments.results import run_metrics
from nh_crossbasin.experiments.runner import FAILURES, finished_run_dir, run_tasks, write_failures
from nh_crossbasin.experiments.writer import MANIFEST, read_config, tasks_of, write_experiment

BASELINE = {"global-vs-local": "global", "similar-vs-dissimilar": "local", "single-vs-regional": "regional",
            "homogeneous-vs-heterogeneous": "homogeneous"}


def build_experiment(design: str, base_config: Path, regions: Optional[str], out: Path, n_seeds: int = 1,
                     level: int = 0, rois: Optional[Sequence[str]] = None, size_control: bool = True) -> List[dict]:
    """Write the configs, basin files and manifest of ``design`` to ``out`` and return the manifest's runs.

    Raises
    ------
    ValueError
        For an unknown design, a missing or malformed region spec, or regions the design cannot use.
    """
    import nh_crossbasin
    nh_crossbasin.register()
    from neuralhydrology.datautils.utils import load_basin_file
    from neuralhydrology.utils.config import Config

    from nh_crossbasin.nh_adapter import raw_attributes

    if design not in DESIGNS:
        raise ValueError(f"design {design!r} is not one of {DESIGNS}")
    cfg = Config(read_config(base_config))
    basins = load_basin_file(Path(cfg.train_basin_file))
    needs_regions = design != "single-vs-regional"
    if needs_regions and not regions and design != "homogeneous-vs-heterogeneous":
        raise ValueError(f"design {design} needs --regions (e.g. 'huc_02' or 'clz_cl_smj>tbi_cl_smj').")
    attributes = raw_attributes(cfg, basins) if (regions or design == "similar-vs-dissimilar") else None
    scheme = region_scheme(regions, basins, attributes) if regions else None
    if scheme is not None and not 0 <= level < len(scheme.levels):
        raise ValueError(f"--level {level}: the region spec has levels 0..{len(scheme.levels) - 1}")
    first_seed = int(cfg.seed) if cfg.seed is not None else 1
    seeds = [first_seed + i for i in range(n_seeds)]
    if design == "global-vs-local":
        runs = global_vs_local(scheme, level)
    elif design == "single-vs-regional":
        runs = single_vs_regional(basins)
    elif design == "similar-vs-dissimilar":
        runs = similar_vs_dissimilar(scheme, attributes, cfg.static_attributes, rois, size_control, seed=first_seed)
    else:
        targets = None
        if scheme is not None:
            targets = {r: (out / "basins" / f"influence_roi_{safe_name(r)}_eval.txt").resolve()
                       for r in scheme.regions(level)}
        runs = homogeneous_vs_heterogeneous(scheme, basins, level, targets)
    return write_experiment(design, runs, base_config, out, seeds, extra={"regions": regions, "level": level})


def collect_results(out: Path) -> pd.DataFrame:
    """Tidy table of the finished runs' test metrics on their evaluation basins (one row per run, seed, basin)."""
    rows = []
    for entry, run_dir in _finished_runs(out):
        eval_basins = Path(entry["eval_basin_file"]).read_text().split()
        metrics = run_metrics(run_dir, eval_basins)
        rows.append(metrics.assign(run=entry["run"], seed=entry["seed"], variant=entry["variant"],
                                   group=entry["group"], run_dir=str(run_dir)))
    return _tidy(rows)


def collect_ensembles(out: Path) -> pd.DataFrame:
    """Seed ensembles: per run, the mean prediction over its seeds (Kratzert et al. 2019), then NH's metrics on the
    run's evaluation basins (one row per run and basin; ``seed`` is ``"ensemble"``)."""
    from nh_crossbasin.analysis.results import basin_metrics, ensemble_results
    members: dict = {}
    for entry, run_dir in _finished_runs(out):
        members.setdefault(entry["run"], (entry, []))[1].append(run_dir)
    rows = []
    for run, (entry, run_dirs) in members.items():
        eval_basins = set(Path(entry["eval_basin_file"]).read_text().split())
        metrics = basin_metrics(ensemble_results(run_dirs, evaluate_missing=False), metrics=["NSE", "KGE"],
                                progress=False)
        metrics = metrics[metrics.index.isin(eval_basins)].reset_index()
        rows.append(metrics.assign(run=run, seed="ensemble", variant=entry["variant"], group=entry["group"],
                                   members=len(run_dirs)))
    return _tidy(rows)


def _finished_runs(out: Path):
    """``(manifest entry, run directory)`` of every run of the manifest that has test results."""
    manifest = json.loads((Path(out) / MANIFEST).read_text())
    for entry in manifest["runs"]:
        run_dir = finished_run_dir(Path(entry["run_parent"]))
        if run_dir is not None:
            yield entry, run_dir


def _tidy(rows: List[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-run metric tables, identifying columns first."""
    if not rows:
        return pd.DataFrame()
    table = pd.concat(rows, ignore_index=True)
    first = ["run", "variant", "group", "seed", "basin"]
    return table[first + [c for c in table.columns if c not in first]]


def summarise(table: pd.DataFrame, design: str) -> str:
    """Median/mean NSE per variant and the paired difference to the design's baseline over (basin, seed)."""
    if table.empty:
        return "no finished runs"
    baseline = BASELINE[design]
    wide = table.pivot_table(index=["basin", "seed"], columns="variant", values="NSE", aggfunc="mean")
    lines = [f"{'variant':28s}{'median NSE':>11s}{'mean NSE':>10s}{'pairs':>7s}{'median dNSE':>13s}"]
    for variant, group in table.groupby("variant"):
        diff = (wide[variant] - wide[baseline]).dropna() if baseline in wide else pd.Series(dtype=float)
        dnse = f"{diff.median():+13.3f}" if variant != baseline and len(diff) else f"{'-':>13s}"
        lines.append(f"{variant:28s}{group['NSE'].median():11.3f}{group['NSE'].mean():10.3f}{len(diff):7d}{dnse}")
    return "\n".join(lines)


def run_experiment(out: Path, workers: int = 1, ray: Optional[str] = None, gpus=None, gpus_per_task: float = 0,
                   threads_per_task: Optional[int] = None) -> str:
    """Run every run of the manifest (finished ones are skipped), write ``results.csv`` (and, with several seeds,
    ``results_ensemble.csv``), return the summary."""
    out = Path(out)
    manifest = json.loads((out / MANIFEST).read_text())
    results = run_tasks(tasks_of(manifest["runs"]), workers=workers, ray=ray, gpus=gpus,
                        gpus_per_task=gpus_per_task, threads_per_task=threads_per_task)
    failed = write_failures(out, results)
    table = collect_results(out)
    table.to_csv(out / "results.csv", index=False)
    text = summarise(table, manifest["design"])
    if len(manifest["seeds"]) > 1:
        ensembles = collect_ensembles(out)
        ensembles.to_csv(out / "results_ensemble.csv", index=False)
        text += f"\n\nseed ensembles (mean prediction of {len(manifest['seeds'])} seeds):\n"
        text += summarise(ensembles, manifest["design"])
    if failed:
        text += f"\n{len(failed)} runs failed: {[r['name'] for r in failed]} (see {out / FAILURES})"
    return text
