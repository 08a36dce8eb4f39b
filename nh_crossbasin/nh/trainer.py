"""The trainer NH uses for configs that ask for anything of the plugin."""
from __future__ import annotations

import logging

from neuralhydrology.training.basetrainer import BaseTrainer

from nh_crossbasin.config_keys import options
from nh_crossbasin.registry import SAMPLERS

LOGGER = logging.getLogger(__name__)


class CrossBasinTrainer(BaseTrainer):
    """NH's ``BaseTrainer`` plus the plugin's sampler.

    The sampler named by ``xb_sampler`` provides the data loader and is told when an epoch starts. Everything that
    can reject the configuration is checked before NH creates the run directory, so a bad config leaves nothing
    behind.

    Parameters
    ----------
    cfg : neuralhydrology.utils.config.Config
        The run configuration.
    """

    def __init__(self, cfg):
        self.xb_options = options(cfg)
        sampler_class = SAMPLERS.get(self.xb_options["xb_sampler"])
        if hasattr(sampler_class, "check_config"):
            sampler_class.check_config(cfg)
        self._sampler_class = sampler_class
        self.sampler = None
        super().__init__(cfg)

    def _get_data_loader(self, ds):
        self.sampler = self._sampler_class(self.cfg, ds)
        return self.sampler.data_loader()

    def _train_epoch(self, epoch: int):
        self.sampler.on_epoch_start(self, epoch)
        super()._train_epoch(epoch)
