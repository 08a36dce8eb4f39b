"""Drawing training samples by basin weights: the mechanics of the influence sampler and its controls.

:class:`WeightedDraw` runs NH's own shuffle for the first ``xb_influence_warmup_epochs`` epochs, then draws
each epoch (NH's length) with replacement: basin ``s`` with probability ``q(s)``, then one of its samples uniformly
(``xb_influence_basis: basin``), or every sample with probability proportional to ``q(s)`` (``samples``). With
``xb_influence_apply: loss`` the draw stays NH's shuffle and the weights go into the loss instead, as importance
weights ``p_q(sample) / p_NH(sample)`` (mean 1 under NH's draw), so that the expected gradient is the same.

Two controls use the same mechanics with fixed weights, so that a comparison changes only the weights:

- ``xb_sampler: uniform_replacement``: ``q`` uniform over all training basins (the influence sampler with its
  influence switched off);
- ``xb_sampler: targets_replacement``: ``q`` uniform over the basins of ``xb_influence_targets_file`` (training on
  the targets' own basins, with the epoch length of all training basins).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler

from nh_crossbasin.config_keys import ConfigKey, at_least, options
from nh_crossbasin.core.weights import basin_draw_probabilities
from nh_crossbasin.nh.influence_meter import target_basins
from nh_crossbasin.nh.sampling import SamplingScheme
from nh_crossbasin.registry import register_sampler

LOGGER = logging.getLogger(__name__)
WEIGHTED_LOSS = "xb_nse_star"
WEIGHTED_DRAW_KEYS = (
    ConfigKey("xb_influence_targets_file", None, "basin file of the target basins (region of interest) whose "
              "loss the weights serve; null: all training basins", types=(Path,), nullable=True,
              allowed="a basin file whose basins are all training basins, or null"),
    ConfigKey("xb_influence_warmup_epochs", 1, "homogeneous epochs (NH's shuffle) before the first refresh",
              types=(int,), check=at_least(0), allowed="an integer >= 0"),
    ConfigKey("xb_influence_apply", "draw", "where the basin weights act: 'draw' (samples drawn by q with "
              "replacement) or 'loss' (NH's shuffle, per-basin importance weights in the xb_nse_star loss)",
              choices=("draw", "loss")),
    ConfigKey("xb_influence_basis", "basin", "'basin': a sample of basin s is drawn with probability q(s)/n_s; "
              "'samples': proportional to q(s) (NH's record-length weighting when q is uniform)",
              choices=("basin", "samples")),
)


class _EpochIndices(Sampler):
    """The sample order of one epoch: NH's shuffle while no weights are drawn, weighted draws after that."""

    def __init__(self, owner: "WeightedDraw"):
        self.owner = owner
        self.shuffle = RandomSampler(owner.dataset)

    def __len__(self) -> int:
        return len(self.owner.dataset)

    def __iter__(self):
        if self.owner.draw_probabilities is None or self.owner.opts["xb_influence_apply"] == "loss":
            return iter(self.shuffle)
        return iter(self.owner.draw_epoch().tolist())


class WeightedDraw(SamplingScheme):
    """Base class: NH's shuffle during warm-up, then a weighted draw (or weighted loss) by basin weights ``q``.

    Subclasses provide the weights: :meth:`fixed_weights` (set at the first epoch after warm-up) or
    :meth:`set_basin_weights` at any time. The draw's config keys are :data:`WEIGHTED_DRAW_KEYS`.

    Parameters
    ----------
    cfg : neuralhydrology.utils.config.Config
        The run configuration.
    dataset : nh_crossbasin.nh_adapter.BasinIndexedDataset
        The training dataset.
    """

    config_keys = WEIGHTED_DRAW_KEYS

    @classmethod
    def check_config(cls, cfg) -> None:
        """Checks that can reject the config before NH creates the run directory."""
        opts = options(cfg)
        if opts["xb_influence_apply"] == "loss" and str(cfg.loss).lower() != WEIGHTED_LOSS:
            raise ValueError(f"Config key 'xb_influence_apply': 'loss' puts the basin weights into the loss, which "
                             f"needs 'loss: {WEIGHTED_LOSS}' (got loss: {cfg.loss}); allowed: 'draw' with any loss, "
                             f"'loss' with {WEIGHTED_LOSS}.")

    def __init__(self, cfg, dataset):
        super().__init__(cfg, dataset)
        self.opts = options(cfg)
        self.basins = list(dataset.basins)
        self.samples_per_basin = np.bincount(dataset.sample_basin_index, minlength=len(self.basins))
        self.draw_probabilities: Optional[np.ndarray] = None
        self.loss_weights: Optional[np.ndarray] = None
        self.epoch = 0
        self._order = np.argsort(dataset.sample_basin_index, kind="stable")
        self._bounds = np.searchsorted(dataset.sample_basin_index[self._order], np.arange(len(self.basins)))

    def data_loader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.cfg.batch_size, sampler=_EpochIndices(self),
                          num_workers=self.cfg.num_workers, collate_fn=self.dataset.collate_fn)

    def after_warmup(self, epoch: int) -> bool:
        """Whether ``epoch`` (1-based) is past the homogeneous warm-up."""
        return epoch > self.opts["xb_influence_warmup_epochs"]

    def fixed_weights(self) -> Optional[np.ndarray]:
        """Basin weights to use from the first epoch after warm-up on (None: the subclass sets them itself)."""
        return None

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.epoch = epoch
        if self.draw_probabilities is None and self.after_warmup(epoch):
            q = self.fixed_weights()
            if q is not None:
                self.set_basin_weights(q)
        self.apply_loss_weights(trainer)

    def set_basin_weights(self, q: np.ndarray) -> None:
        """Draw by basin weights ``q`` from now on (or weight the loss by them, with ``xb_influence_apply: loss``)."""
        self.draw_probabilities = basin_draw_probabilities(q, self.samples_per_basin, self.opts["xb_influence_basis"])
        if self.opts["xb_influence_apply"] == "loss":
            per_sample = np.divide(self.draw_probabilities, self.samples_per_basin,
                                   out=np.zeros_like(self.draw_probabilities), where=self.samples_per_basin > 0)
            self.loss_weights = per_sample * len(self.dataset)

    def apply_loss_weights(self, trainer) -> None:
        """Hand the importance weights to the trainer's loss (``xb_influence_apply: loss``)."""
        if self.loss_weights is not None and getattr(trainer, "loss_obj", None) is not None:
            trainer.loss_obj.set_basin_weights(torch.as_tensor(self.loss_weights))

    def draw_epoch(self) -> np.ndarray:
        """Sample indices of the current epoch: basin by ``draw_probabilities``, then a uniform sample of it."""
        rng = np.random.default_rng([int(self.cfg.seed), int(self.epoch), 1])
        n = len(self.dataset)
        basins = rng.choice(len(self.basins), size=n, p=self.draw_probabilities)
        offsets = np.floor(rng.random(n) * self.samples_per_basin[basins]).astype(np.int64)
        return self._order[self._bounds[basins] + offsets]


@register_sampler("uniform_replacement")
class UniformReplacementDraw(WeightedDraw):
    """Control of the influence sampler: the same draw with ``q`` uniform over all training basins
    (``xb_sampler: uniform_replacement``)."""

    def fixed_weights(self) -> np.ndarray:
        return np.full(len(self.basins), 1.0 / len(self.basins))


@register_sampler("targets_replacement")
class TargetsReplacementDraw(WeightedDraw):
    """Control: the same draw with ``q`` uniform over the basins of ``xb_influence_targets_file``
    (``xb_sampler: targets_replacement``; training on the targets' own basins with NH's epoch length)."""

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        if options(cfg)["xb_influence_targets_file"] is None:
            raise ValueError("Config key 'xb_influence_targets_file': 'xb_sampler: targets_replacement' draws from "
                             "the target basins only and needs a basin file of them; allowed: a basin file whose "
                             "basins are all training basins.")
        from neuralhydrology.datautils.utils import load_basin_file
        target_basins(cfg, load_basin_file(cfg.train_basin_file))

    def fixed_weights(self) -> np.ndarray:
        targets = set(target_basins(self.cfg, self.basins))
        q = np.array([1.0 if b in targets else 0.0 for b in self.basins])
        if not (q * (self.samples_per_basin > 0)).any():
            raise RuntimeError(f"xb_sampler targets_replacement: none of the {len(targets)} target basins has "
                               f"training samples.")
        return q / q.sum()
