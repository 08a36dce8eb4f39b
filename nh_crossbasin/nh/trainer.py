"""The trainer NH uses for configs that ask for anything of the plugin."""
from __future__ import annotations

import logging

from neuralhydrology.datautils.utils import load_basin_file
from neuralhydrology.training.basetrainer import BaseTrainer

from nh_crossbasin.config_keys import options
from nh_crossbasin.registry import MODELS, SAMPLERS

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
        model_class = MODELS.get(cfg.model)
        if hasattr(model_class, "check_config"):
            model_class.check_config(cfg)
        sampler_class = SAMPLERS.get(self.xb_options["xb_sampler"])
        if hasattr(sampler_class, "check_config"):
            sampler_class.check_config(cfg)
        if self.xb_options["xb_influence_targets_file"] is not None:
            from nh_crossbasin.nh.influence_meter import target_basins
            target_basins(cfg, load_basin_file(cfg.train_basin_file))  # a bad file is an error with any sampler
            if self.xb_options["xb_sampler"] in ("uniform", "uniform_replacement"):
                LOGGER.warning(f"Config key 'xb_influence_targets_file' has no effect with xb_sampler: "
                               f"{self.xb_options['xb_sampler']} (it is read by 'influence' and "
                               f"'targets_replacement').")
        self._sampler_class = sampler_class
        self.sampler = None
        super().__init__(cfg)

    def _get_data_loader(self, ds):
        self.sampler = self._sampler_class(self.cfg, ds)
        return self.sampler.data_loader()

    def _train_epoch(self, epoch: int):
        self.sampler.on_epoch_start(self, epoch)
        super()._train_epoch(epoch)
