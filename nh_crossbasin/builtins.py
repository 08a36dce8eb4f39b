"""The plugin's own entries and config keys (idempotent).

Each model, loss and sampling scheme is one class that registers itself (with its config keys) by a decorator when
its module is imported; :func:`register_builtins` imports those modules, declares the keys that belong to no single
class, and loads third-party entries (:mod:`nh_crossbasin.plugins`).
"""
from __future__ import annotations

import importlib

from nh_crossbasin.config_keys import ConfigKey, register_config_key
from nh_crossbasin.registry import SAMPLERS

#: modules whose classes register themselves
BUILTIN_MODULES = ("nh_crossbasin.nh.sampling", "nh_crossbasin.nh.weighted_draw", "nh_crossbasin.nh.influence_draw",
                   "nh_crossbasin.nh.losses", "nh_crossbasin.nh.models.fused_ealstm")

SAMPLER_KEY = ConfigKey(
    "xb_sampler", "uniform", "how training samples are drawn: 'uniform' is NH's shuffled pass, 'influence' weights "
    "basins by gradient influence; its controls draw the same way with fixed weights: 'uniform_replacement' (all "
    "basins equally), 'targets_replacement' (the target basins only)", choices=SAMPLERS)


def register_builtins() -> None:
    """Register the plugin's built-in entries and keys, then third-party entries (once per process)."""
    from nh_crossbasin import plugins
    from nh_crossbasin.nh.datasets.pooled_sources import POOLED_KEYS
    from nh_crossbasin.nh.degenerate import DEGENERATE_KEY

    for key in (SAMPLER_KEY, DEGENERATE_KEY) + POOLED_KEYS:
        register_config_key(key, overwrite=True)
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    plugins.load_plugins()
