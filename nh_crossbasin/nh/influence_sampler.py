"""The heterogeneous gradient-influence sampler (``xb_sampler: influence``; Yoon, Kim & Ahn 2026; DESIGN.md §2).

After ``xb_influence_warmup_epochs`` homogeneous epochs (NH's own shuffle, identical to ``uniform``), the sampler
refreshes every ``xb_influence_refresh_every`` epochs, before the epoch trains: it measures the influence of each
training basin (source) on each target basin from per-basin probe gradients, turns each target's row into source
weights, averages them over the target set into basin weights ``q``, and draws the epoch's samples accordingly
(with replacement; the epoch keeps NH's length). Each refresh writes ``influence/influence_epochNNN.nc`` to the run
directory and logs the weight entropy and the effective number of sources (``1 / sum q^2``) to tensorboard.

Fallbacks, each logged: basins without training samples are never sources; a source whose probe gradient is not
finite gets no weight in that refresh (only the uniform share, if ``xb_influence_uniform_mix`` > 0); a target whose
gradient is not finite keeps uniform weights for that refresh. If no source has a finite gradient, training stops
with an error.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import xarray as xr
from neuralhydrology.datautils.utils import load_basin_file
from torch.utils.data import DataLoader, RandomSampler, Sampler

from nh_crossbasin.config_keys import ConfigKey, at_least, between, options
from nh_crossbasin.core.influence import MEASURES, smooth
from nh_crossbasin.core.weights import (basin_draw_probabilities, basin_weights, effective_number, entropy,
                                        target_weights)
from nh_crossbasin.nh.probes import draw_probes, measure_influence, nh_loss_fn, probe_batches, select_parameters
from nh_crossbasin.nh.samplers import BasinSampler

LOGGER = logging.getLogger(__name__)
INFLUENCE_DIR = "influence"


def _params_check(value) -> Optional[str]:
    if isinstance(value, str):
        return None if value == "all" else "a string must be 'all'"
    if not value or not all(isinstance(v, str) for v in value):
        return "a list must hold at least one module or parameter name"
    return None


INFLUENCE_KEYS = (
    ConfigKey("xb_influence_targets_file", None, "basin file of the target basins (region of interest) whose "
              "loss the weights serve; null: all training basins", types=(Path,), nullable=True,
              allowed="a basin file whose basins are all training basins, or null"),
    ConfigKey("xb_influence_warmup_epochs", 1, "homogeneous epochs (NH's shuffle) before the first refresh",
              types=(int,), check=at_least(0), allowed="an integer >= 0"),
    ConfigKey("xb_influence_refresh_every", 1, "epochs between influence refreshes", types=(int,),
              check=at_least(1), allowed="an integer >= 1"),
    ConfigKey("xb_influence_probe_size", 16, "training sequences per basin in each probe batch", types=(int,),
              check=at_least(1), allowed="an integer >= 1"),
    ConfigKey("xb_influence_measure", "cosine", "influence I[t,s]: 'dot' <g_t,g_s>, 'cosine', or 'lookahead' "
              "1 - L_t(θ-ηg_s)/L_t(θ) (one forward per target-source pair)", choices=MEASURES),
    ConfigKey("xb_influence_params", "all", "parameters whose gradients count: 'all' or a list of module or "
              "parameter names, e.g. [head, input_gate]", types=(str, list), check=_params_check,
              allowed="'all' or a list of names"),
    ConfigKey("xb_influence_projection_dim", None, "count-sketch gradients to this many dimensions; null: exact",
              types=(int,), nullable=True, check=at_least(1), allowed="an integer >= 1 or null"),
    ConfigKey("xb_influence_temperature", 1.0, "softmax temperature τ, in units of each row's robust scale",
              types=(float,), check=at_least(0.0, inclusive=False), allowed="a number > 0"),
    ConfigKey("xb_influence_uniform_mix", 0.1, "share ε of uniform weight mixed into each target's weights",
              types=(float,), check=between(0.0, 1.0), allowed="a number in [0, 1]"),
    ConfigKey("xb_influence_self_floor", 0.0, "minimum weight of a target's own basin", types=(float,),
              check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)", allowed="a number in [0, 1)"),
    ConfigKey("xb_influence_smoothing", 0.0, "weight of the previous influence matrix in an exponential moving "
              "average across refreshes", types=(float,), check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
              allowed="a number in [0, 1)"),
    ConfigKey("xb_influence_basis", "basin", "'basin': a sample of basin s is drawn with probability q(s)/n_s; "
              "'samples': proportional to q(s) (NH's record-length weighting when q is uniform)",
              choices=("basin", "samples")),
    ConfigKey("xb_influence_lookahead_lr", None, "step size η of the lookahead measure; null: the optimizer's "
              "current learning rate", types=(float,), nullable=True, check=at_least(0.0, inclusive=False),
              allowed="a number > 0 or null"),
)


def target_basins(cfg, train_basins: list) -> list:
    """The target basins of a run (ROI file or all training basins), checked against the training basins."""
    targets_file = options(cfg)["xb_influence_targets_file"]
    if targets_file is None:
        return list(train_basins)
    if not Path(targets_file).is_file():
        raise ValueError(f"Config key 'xb_influence_targets_file': {targets_file} does not exist.")
    targets = load_basin_file(Path(targets_file))
    missing = [b for b in targets if b not in set(train_basins)]
    if missing or not targets:
        raise ValueError(f"Config key 'xb_influence_targets_file': {len(missing)} of the {len(targets)} basins in "
                         f"{targets_file} are not training basins ({cfg.train_basin_file}), e.g. {missing[:5]}; "
                         f"allowed: a non-empty subset of the training basins.")
    return targets


def influence_dataset(raw: np.ndarray, used: np.ndarray, weights: np.ndarray, q: np.ndarray, gradients,
                      basins: list, targets: list, opts: dict, epoch: int) -> xr.Dataset:
    """The netCDF record of one influence measurement (target × source, basin ids as coordinates)."""
    attrs = {k[len("xb_influence_"):]: str(v) for k, v in opts.items() if k.startswith("xb_influence_")}
    attrs.update(epoch=epoch, weight_entropy=entropy(q), effective_sources=effective_number(q),
                 definition="I[t, s] per DESIGN.md §2; weights[t, s] = w_t(s); basin_weight = mean_t w_t(s)")
    return xr.Dataset(
        {"influence": (("target", "source"), used), "influence_raw": (("target", "source"), raw),
         "weights": (("target", "source"), weights), "basin_weight": (("source",), q),
         "grad_norm": (("source",), gradients.norms.detach().cpu().double().numpy()),
         "probe_loss": (("source",), gradients.losses.detach().cpu().double().numpy()),
         "probe_size": (("source",), gradients.probe_sizes.astype(np.int64))},
        coords={"target": list(targets), "source": list(basins)}, attrs=attrs)


def next_free_path(path: Path) -> Path:
    """``path`` if it does not exist, else ``stem_2.ext``, ``stem_3.ext``, ...: nothing is ever overwritten."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate


class _EpochIndices(Sampler):
    """The sample order of one epoch: NH's shuffle before the first refresh, weighted draws after it."""

    def __init__(self, owner: "InfluenceSampler"):
        self.owner = owner
        self.shuffle = RandomSampler(owner.dataset)

    def __len__(self) -> int:
        return len(self.owner.dataset)

    def __iter__(self):
        if self.owner.draw_probabilities is None:
            return iter(self.shuffle)
        return iter(self.owner.draw_epoch().tolist())


class InfluenceSampler(BasinSampler):
    """Samples training data by per-target gradient influence (see the module docstring).

    Parameters
    ----------
    cfg : neuralhydrology.utils.config.Config
        The run configuration (``xb_influence_*`` keys).
    dataset : nh_crossbasin.nh_adapter.BasinIndexedDataset
        The training dataset.
    """

    @classmethod
    def check_config(cls, cfg) -> None:
        """Checks that can reject the config before NH creates the run directory."""
        target_basins(cfg, load_basin_file(cfg.train_basin_file))

    def __init__(self, cfg, dataset):
        super().__init__(cfg, dataset)
        self.opts = options(cfg)
        self.basins = list(dataset.basins)
        self.samples_per_basin = np.bincount(dataset.sample_basin_index, minlength=len(self.basins))
        self.targets = [b for b in target_basins(cfg, self.basins)]
        self.target_index = [self.basins.index(b) for b in self.targets]
        self.influence: Optional[np.ndarray] = None
        self.draw_probabilities: Optional[np.ndarray] = None
        self.epoch = 0
        order = np.argsort(dataset.sample_basin_index, kind="stable")
        self._order = order
        self._bounds = np.searchsorted(dataset.sample_basin_index[order], np.arange(len(self.basins)))
        self._refresh_now = False
        if cfg.is_continue_training:
            self._restore(Path(cfg.base_run_dir), cfg.continue_from_epoch)

    # -------------------------------------------------------------------------------------------- schedule
    def data_loader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.cfg.batch_size, sampler=_EpochIndices(self),
                          num_workers=self.cfg.num_workers, collate_fn=self.dataset.collate_fn)

    def is_refresh_epoch(self, epoch: int) -> bool:
        """Whether the influence is measured before training ``epoch`` (1-based)."""
        warmup, every = self.opts["xb_influence_warmup_epochs"], self.opts["xb_influence_refresh_every"]
        return epoch > warmup and (epoch - warmup - 1) % every == 0

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.epoch = epoch
        if self.is_refresh_epoch(epoch) or (self._refresh_now and epoch > self.opts["xb_influence_warmup_epochs"]):
            self.refresh(trainer, epoch)
            self._refresh_now = False

    def draw_epoch(self) -> np.ndarray:
        """Sample indices of the current epoch: basin by ``draw_probabilities``, then a uniform sample of it."""
        rng = np.random.default_rng([int(self.cfg.seed), int(self.epoch), 1])
        n = len(self.dataset)
        basins = rng.choice(len(self.basins), size=n, p=self.draw_probabilities)
        offsets = np.floor(rng.random(n) * self.samples_per_basin[basins]).astype(np.int64)
        return self._order[self._bounds[basins] + offsets]

    # --------------------------------------------------------------------------------------------- refresh
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

        Parameters
        ----------
        model, loss_obj
            The NH model and the training loss object.
        device : torch.device
            Where the probes run (the model's device).
        epoch : int
            The epoch the weights are for (seeds the probe draw; recorded in the result).
        learning_rate : float, optional
            Step size of the lookahead measure.

        Returns
        -------
        xr.Dataset
            The record :func:`influence_dataset` describes.
        """
        params = select_parameters(model, None if self.opts["xb_influence_params"] == "all"
                                   else self.opts["xb_influence_params"])
        probes = draw_probes(self.dataset.sample_basin_index, len(self.basins), self.opts["xb_influence_probe_size"],
                             seed=(int(self.cfg.seed), epoch))
        batches = probe_batches(self.dataset, probes, device, dtype=params[0][1].dtype)
        raw, gradients = measure_influence(model, nh_loss_fn(loss_obj), batches, self.target_index,
                                           self.opts["xb_influence_measure"], params,
                                           self.opts["xb_influence_projection_dim"], int(self.cfg.seed),
                                           learning_rate)
        return self.update_weights(raw.detach().cpu().double().numpy(), gradients, epoch)

    def update_weights(self, raw: np.ndarray, gradients, epoch: int) -> xr.Dataset:
        """Smooth the measured influence, derive weights and draw probabilities; return the netCDF record."""
        has_samples = self.samples_per_basin > 0
        finite_source = np.isfinite(raw).any(axis=0)
        valid = has_samples & finite_source
        if not valid.any():
            raise RuntimeError(f"Influence refresh before epoch {epoch}: no source basin has a finite probe "
                               f"gradient (probe losses: {gradients.losses.tolist()[:5]}...); stopping rather than "
                               f"sampling without information.")
        bad = [self.basins[i] for i in np.flatnonzero(has_samples & ~finite_source)]
        if bad:
            LOGGER.warning(f"Influence refresh before epoch {epoch}: {len(bad)} source basins have no finite probe "
                           f"gradient and get no influence weight this refresh: {bad[:10]}")
        norms = gradients.norms.detach().cpu().double().numpy()
        zero = [self.basins[i] for i in np.flatnonzero(has_samples & (norms == 0))]
        if zero:
            LOGGER.warning(f"Influence refresh before epoch {epoch}: {len(zero)} basins have a zero probe gradient "
                           f"(their probes are already fitted or their parameters get no gradient); their influence "
                           f"is 0 with every basin this refresh: {zero[:10]}")
        bad_targets = [t for t, row in zip(self.targets, raw) if not np.isfinite(row).any()]
        if bad_targets:
            LOGGER.warning(f"Influence refresh before epoch {epoch}: targets without a finite probe gradient keep "
                           f"uniform weights this refresh: {bad_targets[:10]}")
        self.influence = smooth(None if self.influence is None else torch.from_numpy(self.influence),
                                torch.from_numpy(raw), self.opts["xb_influence_smoothing"]).numpy()
        weights = target_weights(self.influence, self.opts["xb_influence_temperature"],
                                 self.opts["xb_influence_uniform_mix"], self.opts["xb_influence_self_floor"],
                                 self_source=self.target_index, valid_sources=valid)
        q = basin_weights(weights)
        self.draw_probabilities = basin_draw_probabilities(q, self.samples_per_basin, self.opts["xb_influence_basis"])
        return influence_dataset(raw, self.influence, weights, q, gradients, self.basins, self.targets, self.opts,
                                 epoch)

    # --------------------------------------------------------------------------------------- continue_training
    def _restore(self, base_run_dir: Path, continue_from_epoch: Optional[int]) -> None:
        """Resume with the last influence record of the base run (at or before the epoch training resumes from)."""
        files = sorted((base_run_dir / INFLUENCE_DIR).glob("influence_epoch*.nc"))
        start = continue_from_epoch if continue_from_epoch is not None else max(
            [int(p.name[-6:-3]) for p in base_run_dir.glob("model_epoch*.pt")], default=0)
        files = [f for f in files if int(f.stem.split("epoch")[1][:3]) <= start]
        if not files:
            self._refresh_now = True
            LOGGER.info("continue_training: no influence record in the base run; refreshing at the first epoch "
                        "after warm-up.")
            return
        with xr.open_dataset(files[-1]) as record:
            if list(record["source"].values) != self.basins or list(record["target"].values) != self.targets:
                raise ValueError(f"continue_training: {files[-1]} was written for other training or target basins; "
                                 f"keep train_basin_file and xb_influence_targets_file unchanged to resume.")
            self.influence = record["influence"].values.copy()
            q = record["basin_weight"].values.copy()
        self.draw_probabilities = basin_draw_probabilities(q, self.samples_per_basin, self.opts["xb_influence_basis"])
        LOGGER.info(f"continue_training: sampling with the influence weights of {files[-1]}")
