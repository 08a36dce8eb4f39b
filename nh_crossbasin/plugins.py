"""Third-party entries: models, losses and sampling schemes of other packages, found through entry points.

NeuralHydrology has a registry for datasets only; this is the one it lacks for models, losses and samplers. A
package declares, in its ``pyproject.toml``, modules (or callables) of the entry-point group
``nh_crossbasin.plugins``::

    [project.entry-points."nh_crossbasin.plugins"]
    my_models = "my_package.models"          # a module whose classes register themselves with a decorator

When the plugin activates (the start-up hook on ``import neuralhydrology``, ``nh-xb``, or
``nh_crossbasin.register()``), each entry is loaded once: a module is imported (its ``@register_model`` /
``@register_loss`` / ``@register_sampler`` decorators run), a callable is called. An entry that fails to load gives
one warning naming its package and entry and is skipped; the plugin's own entries and the other packages' are not
affected.
"""
from __future__ import annotations

import types
import warnings
from importlib.metadata import entry_points
from typing import Dict

GROUP = "nh_crossbasin.plugins"
_LOADED: Dict[str, str] = {}


def load_plugins() -> Dict[str, str]:
    """Load every entry of the group :data:`GROUP` not loaded yet.

    Returns
    -------
    dict
        ``{"<package>:<entry>": "loaded" | "failed: <reason>"}`` of every entry seen in this process.
    """
    for entry in entry_points(group=GROUP):
        package = entry.dist.name if entry.dist is not None else "an unknown package"
        label = f"{package}:{entry.name}"
        if label in _LOADED:
            continue
        try:
            target = entry.load()
            if callable(target) and not isinstance(target, (type, types.ModuleType)):
                target()
            _LOADED[label] = "loaded"
        except Exception as err:  # noqa: BLE001 - a broken third-party entry must not stop the plugin
            _LOADED[label] = f"failed: {type(err).__name__}: {err}"
            warnings.warn(f"nh-crossbasin: entry '{entry.name}' ({entry.value}) of the package '{package}' could not "
                          f"be loaded and is skipped: {type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)
    return dict(_LOADED)
