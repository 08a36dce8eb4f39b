"""Registers the plugin's own models, losses, samplers and config keys (idempotent)."""
from __future__ import annotations

from nh_crossbasin.config_keys import ConfigKey, at_least, register_config_key
from nh_crossbasin.registry import SAMPLERS, register_loss, register_model, register_sampler

CORE_KEYS = (
    ConfigKey("xb_nse_eps", 0.1, "epsilon added to each basin's discharge std in the NSE* loss", types=(float,),
              check=at_least(0.0), allowed="a number >= 0"),
    ConfigKey("xb_sampler", "uniform", "how training samples are drawn: 'uniform' is NH's shuffled pass, "
              "'influence' weights basins by gradient influence; its controls draw the same way with fixed weights: "
              "'uniform_replacement' (all basins equally), 'targets_replacement' (the target basins only)",
              choices=SAMPLERS),
)


def register_builtins() -> None:
    """Add the plugin's built-in entries to the registries."""
    from nh_crossbasin.nh.influence_sampler import INFLUENCE_KEYS, InfluenceSampler
    from nh_crossbasin.nh.losses import NSEStarLoss
    from nh_crossbasin.nh.models.fused_ealstm import FusedEALSTM
    from nh_crossbasin.nh.samplers import UniformSampler
    from nh_crossbasin.nh.weighted_draw import TargetsReplacementSampler, UniformReplacementSampler
    from nh_crossbasin.nh.datasets.pooled import PooledDataset
    from nh_crossbasin.nh.degenerate import DEGENERATE_KEY
    from nh_crossbasin.nh.datasets.pooled_sources import POOLED_DATASET, POOLED_KEYS
    from neuralhydrology.datasetzoo import register_dataset

    for key in CORE_KEYS + INFLUENCE_KEYS + POOLED_KEYS + (DEGENERATE_KEY,):
        register_config_key(key, overwrite=True)
    register_loss("xb_nse_star", NSEStarLoss, overwrite=True)
    register_sampler("uniform", UniformSampler, overwrite=True)
    register_sampler("influence", InfluenceSampler, overwrite=True)
    register_sampler("uniform_replacement", UniformReplacementSampler, overwrite=True)
    register_sampler("targets_replacement", TargetsReplacementSampler, overwrite=True)
    register_model("xb_ealstm", FusedEALSTM, overwrite=True)
    register_dataset(POOLED_DATASET, PooledDataset)  # NH's public dataset registry
