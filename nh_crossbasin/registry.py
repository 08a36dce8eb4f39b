"""Name-to-class registries for the plugin's models, losses and samplers.

The registries have the shape NeuralHydrology users know from ``DatasetRegistry``: a key (the value a user writes
in the config, matched case-insensitively as NH does) maps to a class. An entry is one class that registers itself
with a decorator, in the style of pandas accessors, and carries its own config keys (a ``config_keys`` class
attribute of :class:`~nh_crossbasin.config_keys.ConfigKey` declarations, registered with the class)::

    from nh_crossbasin import register_model

    @register_model("my_lstm")                 # MyLSTM(cfg) subclasses neuralhydrology's BaseModel
    class MyLSTM(BaseModel):
        ...

Other packages reach the unmodified ``nh-run`` by declaring the module that holds such classes as an entry point of
the group ``nh_crossbasin.plugins`` (see :mod:`nh_crossbasin.plugins` and the README). Config keys have a registry
of their own in :mod:`nh_crossbasin.config_keys`.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional, Type


class Registry:
    """A case-insensitive mapping from config names to classes.

    Parameters
    ----------
    kind : str
        What the registry holds (``"model"``, ``"loss"``, ...); used in error messages.
    config_key : str
        The NH config key whose value selects an entry (``"model"``, ``"loss"``, ``"xb_sampler"``).
    base_class : callable, optional
        Zero-argument callable returning the base class every entry must subclass. It is called lazily, at
        registration, so that importing this module does not import torch or NeuralHydrology.
    """

    def __init__(self, kind: str, config_key: str, base_class: Optional[Callable[[], type]] = None):
        self.kind = kind
        self.config_key = config_key
        self._base_class = base_class
        self._classes: Dict[str, type] = {}

    @property
    def plural(self) -> str:
        """``kind`` in the plural (``models``, ``losses``, ``samplers``), for messages."""
        return self.kind + ("es" if self.kind.endswith("s") else "s")

    def register(self, key: str, new_class: Type, overwrite: bool = False) -> None:
        """Add a class under ``key``.

        Parameters
        ----------
        key : str
            The value users write for :attr:`config_key` in their config (stored lower-case).
        new_class : type
            The class; must subclass the registry's base class. Its ``config_keys`` (if any) are declared too.
        overwrite : bool, optional
            Replace an existing entry of the same name instead of raising.

        Raises
        ------
        TypeError
            If ``new_class`` is not a subclass of the registry's base class.
        ValueError
            If ``key`` is empty or already taken and ``overwrite`` is False.
        """
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"A {self.kind} name must be a non-empty string, got {key!r}.")
        name = key.lower()
        if self._base_class is not None:
            base = self._base_class()
            if not (isinstance(new_class, type) and issubclass(new_class, base)):
                raise TypeError(f"{self.kind} '{key}': {new_class!r} is not a subclass of {base.__module__}."
                                f"{base.__qualname__}.")
        if name in self._classes and self._classes[name] is not new_class and not overwrite:
            raise ValueError(f"A {self.kind} named '{name}' is already registered ({self._classes[name]!r}); "
                             f"pass overwrite=True to replace it.")
        from nh_crossbasin.config_keys import register_config_key
        for config_key in getattr(new_class, "config_keys", ()):
            register_config_key(config_key, overwrite=overwrite)
        self._classes[name] = new_class

    def unregister(self, key: str) -> None:
        """Remove ``key`` if present."""
        self._classes.pop(key.lower(), None)

    def get(self, key: Optional[str]) -> Optional[type]:
        """Return the class registered under ``key`` (case-insensitive), or None."""
        if not isinstance(key, str):
            return None
        return self._classes.get(key.lower())

    def names(self) -> list[str]:
        """Sorted list of registered names."""
        return sorted(self._classes)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._classes)

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self.names()) or '-'})"


def _nh_base_model() -> type:
    from neuralhydrology.modelzoo.basemodel import BaseModel
    return BaseModel


def _nh_base_loss() -> type:
    from neuralhydrology.training.loss import BaseLoss
    return BaseLoss


def _base_sampler() -> type:
    from nh_crossbasin.nh.sampling import SamplingScheme
    return SamplingScheme


MODELS = Registry("model", "model", _nh_base_model)
LOSSES = Registry("loss", "loss", _nh_base_loss)
SAMPLERS = Registry("sampler", "xb_sampler", _base_sampler)


def _register(registry: Registry, key: str, new_class: Optional[Type], overwrite: bool):
    if new_class is not None:
        registry.register(key, new_class, overwrite=overwrite)
        return new_class

    def decorator(cls: Type) -> Type:
        registry.register(key, cls, overwrite=overwrite)
        return cls
    return decorator


def register_model(key: str, new_class: Optional[Type] = None, overwrite: bool = False):
    """Register a model class for ``model: <key>``; it is built as ``new_class(cfg=cfg)`` like NH's modelzoo.

    Use it as a call (``register_model("my_lstm", MyLSTM)``) or as a class decorator (``@register_model("my_lstm")``).
    """
    return _register(MODELS, key, new_class, overwrite)


def register_loss(key: str, new_class: Optional[Type] = None, overwrite: bool = False):
    """Register a loss class for ``loss: <key>``; it is built as ``new_class(cfg)`` like NH's losses (call or
    class decorator)."""
    return _register(LOSSES, key, new_class, overwrite)


def register_sampler(key: str, new_class: Optional[Type] = None, overwrite: bool = False):
    """Register a sampling scheme for ``xb_sampler: <key>`` (call or class decorator)."""
    return _register(SAMPLERS, key, new_class, overwrite)
