"""Looks inside a trained model through its static inputs (Kratzert et al. 2019, sect. 3.6 and 4.3).

- :func:`morris_sensitivity`: Morris-style sensitivity, the mean absolute gradient of the model output (last time
  step, normalised target units) with respect to each normalised static input, over all samples of a period, per
  basin; :func:`rank_sensitivity` ranks the inputs overall.
- :func:`noise_robustness`: the metric of each basin when Gaussian noise ``N(0, σ²)`` is added to its normalised
  static inputs. The noise of a basin is drawn once per repeat and kept for all its time steps (an attribute error
  is constant in time), and the same standard-normal draw is scaled by every σ, so curves over σ are smooth.

Both read each basin's samples with NH's own dataset classes (``get_dataset``, the run's stored scaler), as NH's
tester does. They work for any NH model with static inputs ``x_s`` (``xb_ealstm``, NH ``ealstm``, ``cudalstm``, ...)
and a regression head.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
import xarray as xr
from tqdm import tqdm

DEFAULT_SIGMAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def static_input_gradients(model: torch.nn.Module, data: dict, target_index: int = 0) -> torch.Tensor:
    """``d y_hat[i, -1, target] / d x_s[i, :]`` for every sample ``i`` of a batch.

    Samples are independent in NH's models, so the gradient of the summed output gives each sample's own gradient.

    Parameters
    ----------
    model : torch.nn.Module
        An NH model (``model(data)['y_hat']`` of shape ``[batch, time, targets]``).
    data : dict
        An NH batch on the model's device, with ``x_s`` ``[batch, n_static]``.
    target_index : int, optional
        Which output.

    Returns
    -------
    torch.Tensor
        ``[batch, n_static]``.
    """
    if "x_s" not in data:
        raise ValueError("The batch has no static inputs 'x_s'; the run uses no static attributes.")
    data = dict(data)
    x_s = data["x_s"].detach().clone().requires_grad_(True)
    data["x_s"] = x_s
    with torch.enable_grad():
        data = model.pre_model_hook(data, is_train=False)
        y_hat = model(data)["y_hat"][:, -1, target_index]
        (gradient,) = torch.autograd.grad(y_hat.sum(), x_s)
    return gradient.detach()


def _check_supported(cfg) -> None:
    if cfg.head.lower() != "regression" or cfg.mc_dropout:
        raise NotImplementedError(f"Only regression heads without MC dropout are supported (head: {cfg.head}).")
    if len(cfg.use_frequencies) > 1 or not isinstance(cfg.predict_last_n, int):
        raise NotImplementedError("Multi-frequency runs are not supported.")
    if not (cfg.static_attributes or cfg.hydroatlas_attributes):
        raise ValueError("The run has no static attributes.")


def _to_device(data: dict, device: torch.device) -> dict:
    out = {}
    for key, value in data.items():
        if key.startswith("x_d") and isinstance(value, dict):
            out[key] = {k: v.to(device) for k, v in value.items()}
        elif key.startswith("date") or not isinstance(value, torch.Tensor):
            out[key] = value
        else:
            out[key] = value.to(device)
    return out


def basin_batches(run_dir: Path, cfg, basins: Sequence[str], period: str, batch_size: Optional[int] = None,
                  progress: bool = True, desc: str = "basins") -> Iterator[Tuple[str, List[dict], str]]:
    """Each basin's samples of ``period`` as NH batches (NH's dataset class, the run's scaler and basin ids).

    Basins without data in the period are skipped, as NH's tester skips them.

    Yields
    ------
    tuple
        ``(basin, batches, frequency)``, the frequency of the data (e.g. ``'1D'``).
    """
    import nh_crossbasin
    from neuralhydrology.datasetzoo import get_dataset
    from neuralhydrology.datautils.utils import load_scaler
    from neuralhydrology.evaluation.utils import load_basin_id_encoding
    from neuralhydrology.utils.errors import NoEvaluationDataError

    scaler = load_scaler(run_dir)
    id_to_int = load_basin_id_encoding(run_dir) if cfg.use_basin_id_encoding else {}
    additional = []
    for file in cfg.additional_feature_files:
        with open(file, "rb") as fp:
            additional.append(pickle.load(fp))
    for basin in tqdm(basins, desc=desc, disable=not progress):
        try:
            with nh_crossbasin.activated():
                dataset = get_dataset(cfg=cfg, is_train=False, period=period, basin=basin,
                                      additional_features=additional, id_to_int=id_to_int, scaler=scaler)
        except NoEvaluationDataError:
            continue
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size or cfg.batch_size, num_workers=0,
                                             collate_fn=dataset.collate_fn)
        yield basin, list(loader), dataset.frequencies[0]


def _setup(run_dir, epoch, basins, period, device):
    from neuralhydrology.datautils.utils import load_basin_file

    from nh_crossbasin.analysis.results import read_run_config
    from nh_crossbasin.analysis.similarity import attribute_names
    from nh_crossbasin.nh.run_dirs import load_trained_model

    run_dir = Path(run_dir)
    cfg, model, epoch = load_trained_model(run_dir, epoch)
    _check_supported(cfg)
    cfg_for_data = read_run_config(run_dir)
    if basins is None:
        basins = Path(getattr(cfg_for_data, f"{period}_basin_file"))
    if isinstance(basins, (str, Path)) and Path(basins).is_file():
        basin_ids = load_basin_file(Path(basins))
    else:
        basin_ids = [basins] if isinstance(basins, str) else [str(b) for b in basins]
    return run_dir, cfg_for_data, model.to(torch.device(device)), epoch, basin_ids, attribute_names(cfg_for_data)


def morris_sensitivity(run_dir: Union[str, Path], basins=None, period: str = "test", epoch: Optional[int] = None,
                       max_samples: Optional[int] = None, target_index: int = 0, device: str = "cpu",
                       progress: bool = True) -> pd.DataFrame:
    """Mean absolute gradient of the output with respect to each static input, per basin.

    Parameters
    ----------
    run_dir : str or Path
        A trained run with static attributes.
    basins : str, Path or sequence of str, optional
        A basin file or ids (default: the basin file of ``period``).
    period : str, optional
        Whose samples are averaged (default ``test``).
    epoch : int, optional
        Weights (default: the last saved).
    max_samples : int, optional
        Use at most this many evenly spaced samples per basin (default: all).
    target_index : int, optional
        Which output.
    device : str, optional
        ``cpu`` or ``cuda:N``.
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        basin × attribute: ``mean_i |d y_hat_i / d x_s,i|`` in normalised units (target std per attribute std).
    """
    run_dir, cfg, model, epoch, basin_ids, names = _setup(run_dir, epoch, basins, period, device)
    rows = {}
    for basin, batches, _ in basin_batches(run_dir, cfg, basin_ids, period, progress=progress,
                                           desc="sensitivity"):
        gradients = torch.cat([static_input_gradients(model, _to_device(b, model_device(model)), target_index)
                               for b in _thin(batches, max_samples)])
        rows[basin] = gradients[:, :len(names)].abs().mean(dim=0).cpu().numpy()
    table = pd.DataFrame.from_dict(rows, orient="index", columns=names)
    table.index.name = "basin"
    table.attrs.update(run_dir=str(run_dir), epoch=epoch, period=period)
    return table


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters."""
    return next(model.parameters()).device


def _thin(batches: List[dict], max_samples: Optional[int]) -> List[dict]:
    n = sum(len(b["y"]) for b in batches)
    if max_samples is None or n <= max_samples:
        return batches
    keep = np.unique(np.linspace(0, n - 1, max_samples).round().astype(int))
    out, start = [], 0
    for batch in batches:
        size = len(batch["y"])
        local = keep[(keep >= start) & (keep < start + size)] - start
        if len(local):
            out.append(_select(batch, torch.as_tensor(local)))
        start += size
    return out


def _select(batch: dict, index: torch.Tensor) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, dict):
            out[key] = {k: v[index] for k, v in value.items()}
        elif isinstance(value, torch.Tensor):
            out[key] = value[index]
        elif isinstance(value, np.ndarray):
            out[key] = value[index.numpy()]
        else:
            out[key] = value
    return out


def rank_sensitivity(table: pd.DataFrame) -> pd.DataFrame:
    """Rank static inputs by their sensitivity averaged over basins.

    Returns
    -------
    pandas.DataFrame
        Index ``attribute``; columns ``mean`` and ``median`` over basins and ``rank`` (1 = most influential),
        sorted by rank.
    """
    summary = pd.DataFrame({"mean": table.mean(axis=0), "median": table.median(axis=0)})
    summary = summary.sort_values("mean", ascending=False)
    summary["rank"] = np.arange(1, len(summary) + 1)
    summary.index.name = "attribute"
    return summary


def noise_robustness(run_dir: Union[str, Path], sigmas: Sequence[float] = DEFAULT_SIGMAS, basins=None,
                     period: str = "test", epoch: Optional[int] = None, metrics: Sequence[str] = ("NSE",),
                     repeats: int = 1, seed: int = 0, target_index: int = 0, device: str = "cpu",
                     progress: bool = True) -> pd.DataFrame:
    """Metrics of each basin with Gaussian noise of std σ added to its normalised static inputs.

    Parameters
    ----------
    run_dir : str or Path
        A trained run with static attributes and a regression head.
    sigmas : sequence of float
        Noise levels in units of the normalised attributes; 0 reproduces NH's own evaluation.
    basins, period, epoch, target_index, device, progress
        As in :func:`morris_sensitivity`.
    metrics : sequence of str
        NH metric names.
    repeats : int
        Independent noise draws per basin and σ.
    seed : int
        Seed of the noise.

    Returns
    -------
    pandas.DataFrame
        Tidy: ``basin``, ``sigma``, ``repeat``, ``metric``, ``value``.
    """
    from neuralhydrology.evaluation.metrics import calculate_metrics
    from neuralhydrology.utils.errors import AllNaNError

    from neuralhydrology.datautils.utils import load_scaler

    from nh_crossbasin.analysis.results import canonical_metric_names

    run_dir, cfg, model, epoch, basin_ids, names = _setup(run_dir, epoch, basins, period, device)
    metrics = canonical_metric_names(list(metrics))
    target = cfg.target_variables[target_index]
    scaler = load_scaler(run_dir)
    scale = float(scaler["xarray_feature_scale"][target].values)
    center = float(scaler["xarray_feature_center"][target].values)
    rows = []
    device = model_device(model)
    for basin, batches, frequency in basin_batches(run_dir, cfg, basin_ids, period, progress=progress,
                                                   desc="robustness"):
        batches = [_to_device(b, device) for b in batches]
        obs = np.concatenate([b["y"][:, -1, target_index].cpu().numpy() for b in batches]) * scale + center
        dates = np.concatenate([b["date"][:, -1] for b in batches])
        for repeat in range(repeats):
            z = np.random.default_rng([seed, repeat, basin_ids.index(basin)]).standard_normal(len(names))
            for sigma in sigmas:
                noise = torch.zeros(batches[0]["x_s"].shape[1], device=device)
                noise[:len(names)] = torch.as_tensor(sigma * z, dtype=torch.float32, device=device)
                with torch.no_grad():
                    sim = np.concatenate([_predict(model, b, noise, target_index) for b in batches]) * scale + center
                obs_da, sim_da = _as_nh_series(obs, sim, dates, frequency, target in cfg.clip_targets_to_zero)
                try:
                    values = calculate_metrics(obs_da, sim_da, metrics=metrics, resolution=frequency)
                except AllNaNError:
                    values = {}
                rows += [{"basin": basin, "sigma": float(sigma), "repeat": repeat, "metric": m,
                          "value": float(values.get(m, np.nan))} for m in metrics]
    table = pd.DataFrame(rows, columns=["basin", "sigma", "repeat", "metric", "value"])
    table.attrs.update(run_dir=str(run_dir), epoch=epoch, period=period)
    return table


def _predict(model: torch.nn.Module, batch: dict, noise: torch.Tensor, target_index: int) -> np.ndarray:
    data = dict(batch)
    data["x_s"] = batch["x_s"] + noise
    data = model.pre_model_hook(data, is_train=False)
    return model(data)["y_hat"][:, -1, target_index].cpu().numpy()


def _as_nh_series(obs: np.ndarray, sim: np.ndarray, dates: np.ndarray, frequency: str, clip: bool):
    """Observed and simulated series on the full date range of the period, as NH's tester builds them."""
    index = pd.DatetimeIndex(dates, name="datetime")
    full = pd.date_range(index[0], index[-1], freq=frequency, name="datetime")
    obs_da = xr.DataArray(obs, dims="datetime", coords={"datetime": index}).reindex(datetime=full)
    sim_da = xr.DataArray(sim, dims="datetime", coords={"datetime": index}).reindex(datetime=full)
    if clip:
        sim_da = xr.where(sim_da < 0, 0, sim_da)
    return obs_da, sim_da


def robustness_summary(table: pd.DataFrame, statistic: str = "median") -> pd.DataFrame:
    """Per σ and metric, the ``statistic`` over basins (and repeats) and its change from σ = 0 when present."""
    summary = table.groupby(["metric", "sigma"])["value"].agg(statistic).unstack("metric")
    if 0.0 in summary.index:
        for metric in list(summary.columns):
            summary[f"{metric} change"] = summary[metric] - summary.loc[0.0, metric]
    return summary
