"""Sampling schemes decide which training samples make up an epoch (config key ``xb_sampler``).

A sampling scheme is built once per training run by :class:`~nh_crossbasin.nh.trainer.CrossBasinTrainer` and hands
NH's training loop its data loader. ``uniform`` is NH's own behaviour (a shuffled pass over all samples); the
weighted draws live in :mod:`nh_crossbasin.nh.weighted_draw` and :mod:`nh_crossbasin.nh.influence_draw`.
"""
from __future__ import annotations

from typing import Any, Dict

from torch.utils.data import DataLoader

from nh_crossbasin.registry import register_sampler


class SamplingScheme:
    """Base class of sampling schemes: builds the loader of each epoch and is told when an epoch starts.

    Parameters
    ----------
    cfg : neuralhydrology.utils.config.Config
        The run configuration.
    dataset : nh_crossbasin.nh_adapter.BasinIndexedDataset
        The training dataset; ``dataset.sample_basin_index[i]`` is the basin of sample ``i`` and
        ``dataset.basins`` lists the training basins in that order.
    """

    def __init__(self, cfg, dataset):
        self.cfg = cfg
        self.dataset = dataset

    def data_loader(self) -> DataLoader:
        """The loader NH's training loop iterates over each epoch."""
        raise NotImplementedError

    def on_epoch_start(self, trainer, epoch: int) -> None:
        """Called by the trainer before each training epoch (e.g. to refresh weights)."""

    def state_dict(self) -> Dict[str, Any]:
        """What must be saved with a checkpoint to resume sampling in ``continue_training``."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""


@register_sampler("uniform")
class NHShuffle(SamplingScheme):
    """NH's homogeneous sampling: every sample once per epoch, in shuffled order (``xb_sampler: uniform``)."""

    def data_loader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.cfg.batch_size, shuffle=True,
                          num_workers=self.cfg.num_workers, collate_fn=self.dataset.collate_fn)
