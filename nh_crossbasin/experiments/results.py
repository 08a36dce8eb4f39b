"""Collecting NH's evaluation results of several runs: tidy metric tables and merged NH-format result folders."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Dict, Iterable, Optional

import pandas as pd


def result_files(run_dir: Path, period: str = "test") -> tuple:
    """``(results pickle, metrics csv)`` NH wrote when it evaluated the run's last weights (see
    :func:`nh_crossbasin.analysis.results.results_file`)."""
    from nh_crossbasin.analysis.results import results_file
    pickle_file = results_file(run_dir, period)
    if pickle_file is None:
        raise FileNotFoundError(f"{run_dir} has no {period} results; run `nh-run evaluate --run-dir {run_dir} "
                                f"--period {period}` first.")
    return pickle_file, pickle_file.with_name(f"{period}_metrics.csv")


def run_metrics(run_dir: Path, basins: Optional[Iterable[str]] = None, period: str = "test") -> pd.DataFrame:
    """NH's per-basin metrics of a run (``basin`` column first), optionally restricted to ``basins``."""
    _, metrics_file = result_files(run_dir, period)
    table = pd.read_csv(metrics_file, dtype={"basin": str})
    if basins is not None:
        table = table[table["basin"].isin(set(basins))]
    return table.reset_index(drop=True)


def merge_results(parts: Dict[str, tuple], out_dir: Path, epoch: int, period: str = "test") -> Path:
    """Merge the results of several runs into one NH-format result folder.

    Parameters
    ----------
    parts : dict
        ``{name: (run_dir, basins)}``: which basins to take from which run (each basin from exactly one run).
    out_dir : Path
        The merged "run" folder; results go to ``out_dir/<period>/model_epoch<epoch>/`` as NH writes them
        (``<period>_results.p``, ``<period>_metrics.csv``) and the first run's ``config.yml`` beside them, so that
        NH's and the plugin's analysis (``nh-xb compare``) read it as one run. It holds no model weights.
    epoch : int
        Epoch number used in the folder name.

    Raises
    ------
    ValueError
        If a basin would come from two runs.
    """
    results, metrics, origin = {}, [], {}
    for name, (run_dir, basins) in parts.items():
        results_file, _ = result_files(run_dir, period)
        with open(results_file, "rb") as fp:
            run_results = pickle.load(fp)
        for basin in basins:
            if basin in origin:
                raise ValueError(f"basin {basin} is in both {origin[basin]} and {name}")
            origin[basin] = name
            results[basin] = run_results[basin]
        metrics.append(run_metrics(run_dir, basins, period))
    folder = Path(out_dir) / period / f"model_epoch{epoch:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    # the config of the first run (all share targets and clipping), so that analysis reads the folder as one run
    first_run = Path(next(iter(parts.values()))[0])
    (Path(out_dir) / "config.yml").write_text((first_run / "config.yml").read_text())
    with open(folder / f"{period}_results.p", "wb") as fp:
        pickle.dump(results, fp)
    pd.concat(metrics, ignore_index=True).set_index("basin").to_csv(folder / f"{period}_metrics.csv")
    return folder
