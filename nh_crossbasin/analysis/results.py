"""Load the evaluation results of NH run directories and turn them into per-basin metric tables.

A run directory (plain NH or plugin) holds ``<period>/model_epochNNN/<period>_results.p`` after ``nh-run evaluate``
(and ``validation/...`` during training when ``save_validation_results`` is set). :func:`load_run` reads that pickle
for the requested epoch (default: the run's last saved weights) and, when it is missing, evaluates the run with NH's
own :func:`neuralhydrology.nh_run.eval_run` while the plugin is active, exactly like ``nh-run evaluate``.

Metrics are computed with NH's own :func:`neuralhydrology.evaluation.metrics.calculate_metrics` on the observed and
simulated series exactly as NH's tester prepares them (time steps stacked to a datetime axis, negative simulations
clipped for ``clip_targets_to_zero`` targets), so the values equal NH's ``<period>_metrics.csv``.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import xarray as xr
from tqdm import tqdm

PERIODS = ("train", "validation", "test")
DEFAULT_METRICS = ("NSE", "KGE", "Alpha-NSE", "Beta-NSE", "FHV", "FMS", "FLV")
_RESULTS_FOLDER = re.compile(r"model_epoch(\d+)$")

RunLike = Union[str, Path, "RunResults"]


@dataclass
class RunResults:
    """The evaluation results of one run (or of a seed ensemble) for one period.

    Attributes
    ----------
    name : str
        Label used in tables and figures (default: the run directory's name).
    period : str
        ``train``, ``validation`` or ``test``.
    epoch : int or None
        Epoch of the weights that produced the results (None for ensembles of different epochs).
    results : dict
        NH's result dictionary ``{basin: {frequency: {'xr': xarray.Dataset, <metric>: value}}}``; each dataset holds
        ``<target>_obs`` and ``<target>_sim`` with dims ``(date, time_step)`` as NH's tester stores them (unclipped).
    target_variables : list of str
        The run's target variables.
    clip_targets_to_zero : list of str
        Targets whose negative simulations NH clips to zero before computing metrics.
    run_dirs : list of Path
        The run directories the results come from (several for an ensemble).
    """

    name: str
    period: str
    epoch: Optional[int]
    results: dict
    target_variables: List[str]
    clip_targets_to_zero: List[str] = field(default_factory=list)
    run_dirs: List[Path] = field(default_factory=list)

    @property
    def basins(self) -> List[str]:
        """Basin ids with results, in the order NH evaluated them."""
        return list(self.results)

    def frequencies(self) -> List[str]:
        """Frequencies present in the results (e.g. ``['1D']``)."""
        return list(next(iter(self.results.values())).keys()) if self.results else []

    def observed_and_simulated(self, basin: str, target: Optional[str] = None,
                               frequency: Optional[str] = None) -> Tuple[xr.DataArray, xr.DataArray]:
        """Observed and simulated series of one basin, prepared as NH's tester does before computing metrics.

        Parameters
        ----------
        basin : str
            Basin id.
        target : str, optional
            Target variable (default: the first one).
        frequency : str, optional
            Frequency (default: the lowest frequency in the results).

        Returns
        -------
        tuple of xarray.DataArray
            ``(obs, sim)`` along a ``datetime`` dimension; ``sim`` clipped at zero if the target is in
            ``clip_targets_to_zero``.
        """
        from neuralhydrology.datautils.utils import get_frequency_factor, sort_frequencies

        target = target or self.target_variables[0]
        frequencies = list(self.results[basin])
        lowest = sort_frequencies(frequencies)[0]
        frequency = frequency or lowest
        data = self.results[basin][frequency]["xr"]
        factor = int(get_frequency_factor(lowest, frequency))
        dates = pd.date_range(start=data.coords["date"].values[0], periods=len(data.coords["date"]) * factor,
                              freq=frequency)
        mask = np.ones(factor, dtype=bool)
        mask[:-len(data.coords["time_step"])] = False
        dates = dates[np.tile(mask, len(data.coords["date"]))]
        stacked = data.isel(time_step=slice(-factor, None)).stack(datetime=["date", "time_step"]) \
            .drop_vars({"datetime", "date", "time_step"})
        obs = stacked[f"{target}_obs"].assign_coords(datetime=dates)
        sim = stacked[f"{target}_sim"].assign_coords(datetime=dates)
        if "samples" in sim.dims:
            sim = sim.mean(dim="samples")
        if target in self.clip_targets_to_zero:
            sim = xr.where(sim < 0, 0, sim)
        return obs, sim


# ------------------------------------------------------------------------------------------------- locating
def read_run_config(run_dir: Union[str, Path]):
    """The run's ``config.yml`` as NH's ``Config``, read with the plugin active (plugin keys are accepted)."""
    import nh_crossbasin
    from neuralhydrology.utils.config import Config
    with nh_crossbasin.activated():
        return Config(Path(run_dir) / "config.yml")


def last_weights_epoch(run_dir: Union[str, Path]) -> Optional[int]:
    """Epoch of the run's last ``model_epochNNN.pt`` (the weights ``nh-run evaluate`` uses), or None."""
    epochs = [int(p.stem[len("model_epoch"):]) for p in Path(run_dir).glob("model_epoch*.pt")
              if p.stem[len("model_epoch"):].isdigit()]
    return max(epochs) if epochs else None


def results_file(run_dir: Union[str, Path], period: str = "test", epoch: Optional[int] = None) -> Optional[Path]:
    """The result pickle NH wrote for ``period`` and ``epoch``, or None if there is none.

    Parameters
    ----------
    run_dir : str or Path
        The run directory.
    period : {'train', 'validation', 'test'}
        Evaluation period.
    epoch : int, optional
        Epoch; default: the run's last saved weights, or, without weight files, the last epoch with results.
    """
    if period not in PERIODS:
        raise ValueError(f"period must be one of {PERIODS}, got {period!r}")
    run_dir = Path(run_dir)
    if epoch is None:
        epoch = last_weights_epoch(run_dir)
    if epoch is not None:
        path = run_dir / period / f"model_epoch{epoch:03d}" / f"{period}_results.p"
        return path if path.is_file() else None
    found = sorted(run_dir.glob(f"{period}/model_epoch*/{period}_results.p"))
    return found[-1] if found else None


def evaluate_run(run_dir: Union[str, Path], period: str = "test", epoch: Optional[int] = None,
                 gpu: Optional[int] = None) -> Path:
    """Evaluate a run with NH's own ``eval_run`` (plugin active), as ``nh-run evaluate`` does, and return the pickle.

    Parameters
    ----------
    run_dir : str or Path
        The run directory.
    period : {'train', 'validation', 'test'}
        Evaluation period.
    epoch : int, optional
        Epoch of the weights (default: the last saved).
    gpu : int, optional
        GPU id; a value < 0 means CPU. Default: the config's device, or CPU when that is a GPU this machine lacks.
    """
    import torch

    import nh_crossbasin
    from neuralhydrology.nh_run import eval_run

    run_dir = Path(run_dir)
    if gpu is None and not torch.cuda.is_available():
        gpu = -1
    with nh_crossbasin.activated():
        eval_run(run_dir=run_dir, period=period, epoch=epoch, gpu=gpu)
    path = results_file(run_dir, period, epoch)
    if path is None:
        raise RuntimeError(f"NH evaluated {run_dir} ({period}) but wrote no results pickle; does the period have "
                           f"data for any basin?")
    return path


def load_run(run_dir: RunLike, period: str = "test", epoch: Optional[int] = None, evaluate_missing: bool = True,
             gpu: Optional[int] = None, name: Optional[str] = None) -> RunResults:
    """Load the results of one run directory, evaluating it first if they are missing.

    Parameters
    ----------
    run_dir : str, Path or RunResults
        A run directory (plain NH or plugin); a :class:`RunResults` is returned unchanged.
    period : {'train', 'validation', 'test'}
        Evaluation period.
    epoch : int, optional
        Epoch (default: the run's last saved weights).
    evaluate_missing : bool, optional
        Run NH's evaluation when no results exist for that period and epoch (otherwise raise).
    gpu : int, optional
        Passed to :func:`evaluate_run`.
    name : str, optional
        Label (default: the directory name).

    Returns
    -------
    RunResults

    Raises
    ------
    FileNotFoundError
        If there are no results and ``evaluate_missing`` is False, or ``run_dir`` is no run directory.
    """
    if isinstance(run_dir, RunResults):
        return run_dir
    run_dir = Path(run_dir)
    if not (run_dir / "config.yml").is_file():
        raise FileNotFoundError(f"{run_dir} is not an NH run directory (no config.yml).")
    path = results_file(run_dir, period, epoch)
    if path is None:
        if not evaluate_missing:
            raise FileNotFoundError(f"{run_dir} has no {period} results for epoch {epoch or 'last'}; run "
                                    f"`nh-run evaluate --run-dir {run_dir} --period {period}` first (or let the "
                                    f"analysis evaluate it: `nh-xb compare` without --no-evaluate, or "
                                    f"evaluate_missing=True in Python).")
        path = evaluate_run(run_dir, period, epoch, gpu)
    with path.open("rb") as fp:
        results = pickle.load(fp)
    cfg = read_run_config(run_dir)
    return RunResults(name=name or run_dir.name, period=period,
                      epoch=int(_RESULTS_FOLDER.search(path.parent.name).group(1)), results=results,
                      target_variables=list(cfg.target_variables), clip_targets_to_zero=list(cfg.clip_targets_to_zero),
                      run_dirs=[run_dir])


# ------------------------------------------------------------------------------------------------ ensembles
def ensemble_results(runs: Sequence[RunLike], period: str = "test", epoch: Optional[int] = None,
                     name: Optional[str] = None, evaluate_missing: bool = True,
                     gpu: Optional[int] = None) -> RunResults:
    """The seed ensemble of several runs: the mean simulation per time step (Kratzert et al. 2019).

    The simulations of the runs are averaged (unclipped, as NH's ``nh_results_ensemble`` does) for every basin the
    runs have in common; metrics of the result are then those of the mean prediction, not the mean of the metrics.

    Parameters
    ----------
    runs : sequence of run directories or RunResults
        At least one run (one run gives its own results back under the ensemble name).
    period, epoch, evaluate_missing, gpu
        As in :func:`load_run`.
    name : str, optional
        Label (default: ``"<first run> (ensemble of n)"``).

    Returns
    -------
    RunResults
        ``epoch`` is the common epoch, or None when the runs' epochs differ.
    """
    loaded = [load_run(r, period, epoch, evaluate_missing, gpu=gpu) for r in runs]
    if not loaded:
        raise ValueError("An ensemble needs at least one run.")
    targets = loaded[0].target_variables
    common = [b for b in loaded[0].basins if all(b in r.results for r in loaded[1:])]
    averaged = {}
    for basin in common:
        averaged[basin] = {}
        for frequency in loaded[0].results[basin]:
            member_data = [r.results[basin][frequency]["xr"] for r in loaded]
            mean = member_data[0].copy()
            for target in targets:
                sims = xr.concat([d[f"{target}_sim"] for d in member_data], dim="member", join="exact")
                mean[f"{target}_sim"] = sims.mean("member")
            averaged[basin][frequency] = {"xr": mean}
    epochs = {r.epoch for r in loaded}
    return RunResults(name=name or f"{loaded[0].name} (ensemble of {len(loaded)})", period=period,
                      epoch=epochs.pop() if len(epochs) == 1 else None, results=averaged, target_variables=targets,
                      clip_targets_to_zero=loaded[0].clip_targets_to_zero,
                      run_dirs=[d for r in loaded for d in r.run_dirs])


# -------------------------------------------------------------------------------------------------- metrics
def basin_metrics(run: RunLike, metrics: Iterable[str] = DEFAULT_METRICS, target: Optional[str] = None,
                  frequency: Optional[str] = None, period: str = "test", progress: bool = True) -> pd.DataFrame:
    """Per-basin metrics of one run (or ensemble), computed with NH's own metric functions.

    Parameters
    ----------
    run : str, Path or RunResults
        A run directory (loaded with :func:`load_run` for ``period``) or loaded results.
    metrics : iterable of str
        NH metric names (see ``neuralhydrology.evaluation.metrics.get_available_metrics``).
    target, frequency : str, optional
        Which target and frequency (defaults: the first target, the lowest frequency).
    period : str, optional
        Used only when ``run`` is a directory.
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        Index ``basin`` (str), one column per metric; NaN where NH cannot compute a metric (e.g. all-NaN
        observations). ``attrs`` hold ``run``, ``period`` and ``epoch``.
    """
    from neuralhydrology.datautils.utils import sort_frequencies
    from neuralhydrology.evaluation.metrics import calculate_metrics
    from neuralhydrology.utils.errors import AllNaNError

    run = load_run(run, period)
    metrics = canonical_metric_names(list(metrics))
    rows = {}
    for basin in tqdm(run.basins, desc=f"metrics {run.name}", disable=not progress, leave=False):
        obs, sim = run.observed_and_simulated(basin, target, frequency)
        freq = frequency or sort_frequencies(list(run.results[basin]))[0]
        try:
            values = calculate_metrics(obs, sim, metrics=metrics, resolution=freq)
        except AllNaNError:
            values = {}
        rows[basin] = {m: float(values.get(m, np.nan)) for m in metrics}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=metrics)
    table.index = pd.Index(table.index.astype(str), name="basin")
    table.attrs.update(run=run.name, period=run.period, epoch=run.epoch)
    return table


def canonical_metric_names(metrics: Sequence[str]) -> List[str]:
    """NH's spelling of metric names given in any case (``'all'``: every NH metric).

    Raises
    ------
    ValueError
        For a name NH does not know.
    """
    from neuralhydrology.evaluation.metrics import get_available_metrics
    if "all" in metrics:
        return get_available_metrics()
    canonical = {m.lower(): m for m in get_available_metrics()}
    unknown = [m for m in metrics if m.lower() not in canonical]
    if unknown:
        raise ValueError(f"Unknown metrics {unknown}; NH knows {sorted(canonical.values())}.")
    return [canonical[m.lower()] for m in metrics]


def metrics_table(runs: Union[Sequence[RunLike], Mapping[str, RunLike]], metrics: Iterable[str] = DEFAULT_METRICS,
                  period: str = "test", progress: bool = True) -> pd.DataFrame:
    """Tidy table of per-basin metrics of several runs: one row per (run, basin, metric).

    Parameters
    ----------
    runs : sequence or mapping
        Run directories or :class:`RunResults` (a mapping gives each its label).
    metrics, period, progress
        As in :func:`basin_metrics`.

    Returns
    -------
    pandas.DataFrame
        Columns ``run``, ``basin``, ``metric``, ``value``.
    """
    items = runs.items() if isinstance(runs, Mapping) else [(None, r) for r in runs]
    frames = []
    for label, run in items:
        loaded = load_run(run, period, name=label)
        table = basin_metrics(loaded, metrics, progress=progress)
        long = table.reset_index().melt(id_vars="basin", var_name="metric", value_name="value")
        long.insert(0, "run", label or loaded.name)
        frames.append(long)
    return pd.concat(frames, ignore_index=True)


def wide_metric(tidy: pd.DataFrame, metric: str = "NSE") -> pd.DataFrame:
    """One metric from a :func:`metrics_table` as a basin × run table."""
    subset = tidy[tidy["metric"] == metric]
    return subset.pivot(index="basin", columns="run", values="value")


def run_tables(tidy: pd.DataFrame) -> Dict[str, pd.DataFrame]:
    """Split a :func:`metrics_table` into ``{run: basin × metric table}`` (the input of the comparison functions)."""
    return {run: group.pivot(index="basin", columns="metric", values="value")
            for run, group in tidy.groupby("run", sort=False)}
