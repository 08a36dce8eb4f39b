"""Influence of a trained run, computed offline (``nh-xb influence``): the same measurement as a training refresh."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import torch
import xarray as xr

import nh_crossbasin
from nh_crossbasin.config_keys import options
from nh_crossbasin.nh.influence_meter import InfluenceMeter, add_weights
from nh_crossbasin.files import next_free_path
from nh_crossbasin.nh.influence_draw import INFLUENCE_DIR
from nh_crossbasin.nh.run_dirs import load_trained_model, training_dataset


def learning_rate_at(cfg, epoch: int) -> float:
    """The learning rate NH used in ``epoch`` (the last schedule entry at or before it)."""
    schedule = cfg.learning_rate
    return float(schedule[max(k for k in schedule if k <= max(epoch, 0))] if min(schedule) <= epoch
                 else schedule[min(schedule)])


def influence_for_run(run_dir: Path, epoch: Optional[int] = None, overrides: Optional[dict] = None,
                      device: str = "cpu", write: bool = True) -> Tuple[xr.Dataset, Optional[Path]]:
    """Measure the influence matrix and weights of a trained run directory.

    Parameters
    ----------
    run_dir : Path
        An NH run directory (plugin or plain NH run).
    epoch : int, optional
        Weights to use (default: the last saved epoch); also seeds the probes as in training.
    overrides : dict, optional
        ``xb_influence_*`` values replacing the run's (e.g. ``{"xb_influence_targets_file": Path(...)}``).
    device : str, optional
        ``cpu`` or ``cuda:N``.
    write : bool, optional
        Write ``influence/offline_epochNNN.nc`` into the run directory (never overwriting an existing file).

    Returns
    -------
    tuple
        The record (:meth:`~nh_crossbasin.nh.influence_meter.InfluenceMeter.measure` with the weights of
        :func:`~nh_crossbasin.nh.influence_meter.add_weights`) and the file written.
    """
    from neuralhydrology.training import get_loss_obj

    run_dir = Path(run_dir)
    cfg, model, epoch = load_trained_model(run_dir, epoch)
    with nh_crossbasin.activated():
        cfg.update_config(dict(overrides or {}))
        cfg.is_continue_training = False
        dataset = training_dataset(cfg, run_dir)
        loss_obj = get_loss_obj(cfg)
        meter = InfluenceMeter(cfg, dataset)
        opts = options(cfg)
    device = torch.device(device)
    record = meter.measure(model.to(device), loss_obj.to(device), device, epoch,
                           opts["xb_influence_lookahead_lr"] or learning_rate_at(cfg, epoch))
    record = add_weights(record, opts)
    record.attrs["run_dir"] = str(run_dir)
    path = None
    if write:
        (run_dir / INFLUENCE_DIR).mkdir(exist_ok=True)
        path = next_free_path(run_dir / INFLUENCE_DIR / f"offline_epoch{epoch:03d}.nc")
        record.to_netcdf(path)
    return record, path
