"""The basin-averaged NSE* loss as an NH loss class (``loss: xb_nse_star``)."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from neuralhydrology.training.loss import BaseLoss
from neuralhydrology.utils.config import Config

from nh_crossbasin.config_keys import ConfigKey, at_least, options
from nh_crossbasin.core.nse_star import nse_star
from nh_crossbasin.registry import register_loss

BASIN_INDEX_KEY = "basin_index"


@register_loss("xb_nse_star")
class NSEStarLoss(BaseLoss):
    """NSE* (Kratzert et al. 2019, eq. 13) with a configurable ε and optional per-basin weights.

    Per batch, the mean over all valid targets of the scaled squared errors ``(y_hat - y)^2 / (s_b + eps)^2``: an
    unbiased estimate of eq. 13's objective under the training draw, whose expectation does not depend on the batch
    size (see :mod:`nh_crossbasin.core.nse_star`). With weights (:meth:`set_basin_weights`, e.g. influence weights
    applied in the loss instead of the draw) each sample's errors are multiplied by its basin's weight. Without
    weights and with ``xb_nse_eps: 0.1`` it equals NH's ``NSE`` loss exactly. ``eps`` comes from the config key
    ``xb_nse_eps``. Multiple targets and ``target_loss_weights`` work as in NH's ``NSE`` loss.

    The batch must carry ``basin_index`` (each sample's basin); the plugin adds it to every dataset of a config that
    uses the plugin.

    Parameters
    ----------
    cfg : Config
        The run configuration.
    """

    needs_basin_target_stds = True  # asks the NH adapter to have NH compute per-basin target stds
    config_keys = (ConfigKey("xb_nse_eps", 0.1, "epsilon added to each basin's discharge std in the NSE* loss",
                             types=(float,), check=at_least(0.0), allowed="a number >= 0"),)

    def __init__(self, cfg: Config):
        super().__init__(cfg, prediction_keys=["y_hat"], ground_truth_keys=["y"],
                         additional_data=["per_basin_target_stds", BASIN_INDEX_KEY])
        self.eps = float(options(cfg)["xb_nse_eps"])
        self._basin_weights: Optional[torch.Tensor] = None

    def set_basin_weights(self, weights: Optional[torch.Tensor]) -> None:
        """Multiply each sample's scaled errors by its basin's weight (None: unit weights).

        Parameters
        ----------
        weights : torch.Tensor, optional
            Non-negative weights indexed by basin index (the position of the basin in the training basin file).
        """
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.float32)
            if weights.ndim != 1 or bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
                raise ValueError("Basin weights must be a 1-d tensor of finite, non-negative numbers.")
        self._basin_weights = weights

    def forward(self, prediction: Dict[str, torch.Tensor], data: Dict[str, torch.Tensor]):
        if BASIN_INDEX_KEY not in data or "per_basin_target_stds" not in data:
            missing = [k for k in (BASIN_INDEX_KEY, "per_basin_target_stds") if k not in data]
            raise KeyError(f"Loss 'xb_nse_star' needs {missing} in the batch. The plugin adds 'basin_index' to NH "
                           f"datasets of configs that use it; make sure nh-crossbasin is activated "
                           f"(nh_crossbasin.register()) before the dataset is built.")
        return super().forward(prediction, data)

    def _subset_additional_data(self, additional_data: Dict[str, torch.Tensor], n_target: int):
        stds = additional_data["per_basin_target_stds"][:, :, n_target:n_target + 1]
        return {"per_basin_target_stds": stds, BASIN_INDEX_KEY: additional_data[BASIN_INDEX_KEY]}

    def _get_loss(self, prediction: Dict[str, torch.Tensor], ground_truth: Dict[str, torch.Tensor], **kwargs):
        return nse_star(prediction["y_hat"], ground_truth["y"], kwargs["per_basin_target_stds"],
                        kwargs[BASIN_INDEX_KEY], eps=self.eps, basin_weights=self._basin_weights)
