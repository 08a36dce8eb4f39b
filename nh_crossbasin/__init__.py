"""nh-crossbasin: cross-basin training tools for NeuralHydrology.

Importing this package is cheap: torch and NeuralHydrology are imported only by :func:`register` (or when one of
the lazily exported names below is used). See the README for the config keys and the three ways of activation.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "register_model": "nh_crossbasin.registry",
    "register_loss": "nh_crossbasin.registry",
    "register_sampler": "nh_crossbasin.registry",
    "register_config_key": "nh_crossbasin.config_keys",
    "ConfigKey": "nh_crossbasin.config_keys",
}


def register() -> None:
    """Activate the plugin in this Python process: register the built-ins and wire them into NeuralHydrology.

    Idempotent. Works whether or not the start-up hook already did it, and also when ``NH_CROSSBASIN_DISABLE`` is
    set (explicit activation wins).

    Raises
    ------
    RuntimeError
        If the installed NeuralHydrology version is outside the tested range.
    """
    from nh_crossbasin import builtins, nh_adapter
    builtins.register_builtins()
    nh_adapter.install()


def activated():
    """Context manager: the plugin is active inside the block and NH is restored afterwards (for tests).

    Returns
    -------
    contextlib.AbstractContextManager
    """
    from nh_crossbasin import builtins, nh_adapter
    builtins.register_builtins()
    return nh_adapter.activated()


def unregister() -> None:
    """Undo :func:`register`'s changes to NeuralHydrology (the plugin's registries keep their entries)."""
    from nh_crossbasin import nh_adapter
    nh_adapter.uninstall()


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nh_crossbasin' has no attribute {name!r}")
