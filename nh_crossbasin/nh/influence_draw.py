"""The heterogeneous gradient-influence sampler (``xb_sampler: influence``; Yoon, Kim & Ahn 2026; DESIGN.md §2).

After ``xb_influence_warmup_epochs`` homogeneous epochs (NH's own shuffle, identical to ``uniform``), the sampler
refreshes every ``xb_influence_refresh_every`` epochs, before the epoch trains: the influence meter
(:mod:`nh_crossbasin.nh.influence_meter`) measures the influence of each training basin's source probe on each
target basin's disjoint target probe, :func:`~nh_crossbasin.nh.influence_meter.add_weights` turns it into basin
weights ``q``, and the weighted draw (:mod:`nh_crossbasin.nh.weighted_draw`) draws the epoch's samples by them. Each
refresh writes ``influence/influence_epochNNN.nc`` to the run directory and logs the weight entropy and the effective
number of sources (``1 / sum q^2``) to tensorboard.

Fallbacks, each logged: basins without training samples are never sources; a source whose probe gradient is not
finite gets no weight in that refresh (only the uniform share, if ``xb_influence_uniform_mix`` > 0); a target whose
target-probe gradient is not finite keeps uniform weights for that refresh; basins with fewer than twice the probe
size get two halves of their samples as probes. If no source has a finite gradient, training stops with an error.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
import xarray as xr
from neuralhydrology.datautils.utils import load_basin_file

from nh_crossbasin.config_keys import ConfigKey, at_least, between, options
from nh_crossbasin.core.influence import MEASURES
from nh_crossbasin.files import next_free_path
from nh_crossbasin.nh.influence_meter import InfluenceMeter, add_weights, target_basins
from nh_crossbasin.nh.weighted_draw import WeightedDraw
from nh_crossbasin.registry import register_sampler

LOGGER = logging.getLogger(__name__)
INFLUENCE_DIR = "influence"


def _params_check(value) -> Optional[str]:
    if isinstance(value, str):
        return None if value == "all" else "a string must be 'all'"
    if not value or not all(isinstance(v, str) for v in value):
        return "a list must hold at least one module or parameter name"
    return None


INFLUENCE_KEYS = (
    ConfigKey("xb_influence_refresh_every", 1, "epochs between influence refreshes", types=(int,),
              check=at_least(1), allowed="an integer >= 1"),
    ConfigKey("xb_influence_probe_size", 64, "training sequences per basin in each of its two disjoint probes "
              "(source and target)", types=(int,), check=at_least(1), allowed="an integer >= 1"),
    ConfigKey("xb_influence_measure", "cosine", "influence I[t,s] of s's source probe on t's target probe: 'dot' "
              "<g_t,g_s>, 'cosine', or 'lookahead' 1 - L_t(θ-ηg_s)/L_t(θ) (one forward per target-source pair)",
              choices=MEASURES),
    ConfigKey("xb_influence_params", "all", "parameters whose gradients count: 'all' or a list of module or "
              "parameter names, e.g. [head, input_gate]", types=(str, list), check=_params_check,
              allowed="'all' or a list of names"),
    ConfigKey("xb_influence_projection_dim", None, "count-sketch gradients to this many dimensions; null: exact",
              types=(int,), nullable=True, check=at_least(1), allowed="an integer >= 1 or null"),
    ConfigKey("xb_influence_temperature", 1.0, "softmax temperature τ, in units of each row's robust scale",
              types=(float,), check=lambda v: None if 0 < v < float("inf") else "must be finite and > 0",
              allowed="a finite number > 0"),
    ConfigKey("xb_influence_aggregate", "per_target", "how target rows become basin weights q: 'per_target', the "
              "mean over targets of each target's softmax weights (a DoGE-style 'mean_influence' alternative was "
              "measured on validation data, did not beat its control, and was dropped)", choices=("per_target",)),
    ConfigKey("xb_influence_uniform_mix", 0.1, "share ε of uniform weight mixed into each target's weights",
              types=(float,), check=between(0.0, 1.0), allowed="a number in [0, 1]"),
    ConfigKey("xb_influence_self_floor", 0.0, "minimum weight of a target's own basin", types=(float,),
              check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)", allowed="a number in [0, 1)"),
    ConfigKey("xb_influence_smoothing", 0.0, "weight of the previous influence matrix in an exponential moving "
              "average across refreshes", types=(float,), check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
              allowed="a number in [0, 1)"),
    ConfigKey("xb_influence_lookahead_lr", None, "step size η of the lookahead measure; null: the optimizer's "
              "current learning rate", types=(float,), nullable=True, check=at_least(0.0, inclusive=False),
              allowed="a number > 0 or null"),
)




@register_sampler("influence")
class InfluenceWeightedDraw(WeightedDraw):
    """Samples training data by per-target gradient influence (see the module docstring); built like every
    :class:`~nh_crossbasin.nh.weighted_draw.WeightedDraw`, from the run configuration and the training dataset."""

    config_keys = WeightedDraw.config_keys + INFLUENCE_KEYS

    @classmethod
    def check_config(cls, cfg) -> None:
        """Checks that can reject the config before NH creates the run directory: the targets file and the parameter
        names of ``xb_influence_params`` (on a model built from the config, without touching the run's RNG)."""
        super().check_config(cfg)
        target_basins(cfg, load_basin_file(cfg.train_basin_file))
        names = options(cfg)["xb_influence_params"]
        if names != "all":
            import torch
            from neuralhydrology.modelzoo import get_model

            from nh_crossbasin.nh.probes import select_parameters
            if cfg.use_basin_id_encoding:
                cfg.number_of_basins = len(load_basin_file(cfg.train_basin_file))
            with torch.random.fork_rng(devices=[]):
                select_parameters(get_model(cfg), names)

    def __init__(self, cfg, dataset):
        super().__init__(cfg, dataset)
        self.meter = InfluenceMeter(cfg, dataset)
        self.targets = self.meter.targets
        self.influence: Optional[np.ndarray] = None
        self._refresh_now = False
        if cfg.is_continue_training:
            self._restore(Path(cfg.base_run_dir), cfg.continue_from_epoch)

    def is_refresh_epoch(self, epoch: int) -> bool:
        """Whether the influence is measured before training ``epoch`` (1-based)."""
        warmup, every = self.opts["xb_influence_warmup_epochs"], self.opts["xb_influence_refresh_every"]
        return epoch > warmup and (epoch - warmup - 1) % every == 0

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.epoch = epoch
        if self.is_refresh_epoch(epoch) or (self._refresh_now and self.after_warmup(epoch)):
            self.refresh(trainer, epoch)
            self._refresh_now = False
        self.apply_loss_weights(trainer)

    def refresh(self, trainer, epoch: int) -> xr.Dataset:
        """Measure the influence with the trainer's current model, update the weights, write and log the record."""
        start = time.perf_counter()
        learning_rate = self.opts["xb_influence_lookahead_lr"] or trainer.optimizer.param_groups[0]["lr"]
        record = self.measure(trainer.model, trainer.loss_obj, trainer.device, epoch, learning_rate)
        folder = Path(self.cfg.run_dir) / INFLUENCE_DIR
        folder.mkdir(exist_ok=True)
        record.to_netcdf(next_free_path(folder / f"influence_epoch{epoch:03d}.nc"))
        writer = getattr(trainer.experiment_logger, "writer", None)
        if writer is not None:
            writer.add_scalar("influence/weight_entropy", record.attrs["weight_entropy"], epoch)
            writer.add_scalar("influence/effective_sources", record.attrs["effective_sources"], epoch)
        LOGGER.info(f"Influence refresh before epoch {epoch}: {len(self.targets)} targets x {len(self.basins)} "
                    f"sources, effective sources {record.attrs['effective_sources']:.1f}, weight entropy "
                    f"{record.attrs['weight_entropy']:.3f}, {time.perf_counter() - start:.1f} s")
        return record

    def measure(self, model, loss_obj, device, epoch: int, learning_rate: Optional[float] = None) -> xr.Dataset:
        """Measure the influence of ``model`` (probes seeded by run seed and ``epoch``) and update the weights.

        Returns
        -------
        xr.Dataset
            The record of :meth:`InfluenceMeter.measure` with the weights of :func:`add_weights`.
        """
        return self.update_weights(self.meter.measure(model, loss_obj, device, epoch, learning_rate))

    def update_weights(self, record: xr.Dataset) -> xr.Dataset:
        """Smooth the measured influence, derive weights and draw probabilities; return the weighted record."""
        record = add_weights(record, self.opts, self.influence)
        self.influence = record["influence"].values
        self.set_basin_weights(record["basin_weight"].values)
        return record

    # --------------------------------------------------------------------------------------- continue_training
    def _restore(self, base_run_dir: Path, continue_from_epoch: Optional[int]) -> None:
        """Resume with the last influence record at or before the epoch training resumes from, found in the base run
        or any run it continued (``continue_training`` of a ``continue_training`` ...)."""
        start = continue_from_epoch if continue_from_epoch is not None else max(
            [int(p.name[-6:-3]) for p in base_run_dir.glob("model_epoch*.pt")], default=0)
        candidates = [(epoch, -depth, path) for depth, epoch, path in influence_records(base_run_dir) if epoch <= start]
        if not candidates:
            self._refresh_now = True
            LOGGER.info(f"continue_training: no influence record at or before epoch {start} in {base_run_dir} or the "
                        f"runs it continued; refreshing at the first epoch after warm-up.")
            return
        path = max(candidates)[2]
        with xr.open_dataset(path) as record:
            if list(record["source"].values) != self.basins or list(record["target"].values) != self.targets:
                raise ValueError(f"continue_training: {path} was written for other training or target basins; "
                                 f"keep train_basin_file and xb_influence_targets_file unchanged to resume.")
            self.influence = record["influence"].values.copy()
            q = record["basin_weight"].values.copy()
        self.set_basin_weights(q)
        LOGGER.info(f"continue_training: sampling with the influence weights of {path}")


CONTINUED = "continue_training_from_epoch"


def influence_records(run_dir: Path):
    """``(depth, epoch, path)`` of the training influence records of ``run_dir`` (depth 0) and of every run it
    continued (NH puts a continued run into ``<base run>/continue_training_from_epochNNN``; depth 1, 2, ...)."""
    depth, run_dir = 0, Path(run_dir)
    while True:
        for path in sorted((run_dir / INFLUENCE_DIR).glob("influence_epoch*.nc")):
            yield depth, int(path.stem.split("epoch")[1][:3]), path
        if not run_dir.name.startswith(CONTINUED):
            return
        depth, run_dir = depth + 1, run_dir.parent
