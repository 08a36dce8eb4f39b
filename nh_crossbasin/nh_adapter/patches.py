"""The patch table: where the plugin meets NH's call sites, and how it installs and removes itself.

NH 1.13 resolves models (``modelzoo.get_model``), losses (``training.get_loss_obj``), datasets
(``datasetzoo.get_dataset``) and the trainer (``training.train.BaseTrainer``) through module-level names, several of
them imported *by name* into ``training.basetrainer`` and ``evaluation.tester``; ``Config._check_cfg_keys`` rejects
unknown keys. :func:`install` rebinds each of those names to a thin wrapper that consults the plugin's registries
first and otherwise calls NH's original, so that training, validation during training, ``nh-run evaluate``,
``continue_training`` and ``finetune`` all see registered names. Configs that use nothing of the plugin go through
NH's original code paths unchanged.

:func:`install` is idempotent and all-or-nothing: it first checks that every call site still holds NH's original
object (a stronger guard than the version string), then patches; if any step fails, every original is put back and
the error names the call site. :func:`uninstall` restores NH exactly, its dataset registry included, and
:func:`activated` is a context manager for tests. An NH version outside the tested range is refused unless
``NH_CROSSBASIN_ALLOW_UNTESTED_NH=1``.
"""
from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Tuple

from nh_crossbasin import config_keys
from nh_crossbasin.registry import LOSSES, MODELS

TESTED_NH_VERSIONS = ((1, 13), (1, 14))  # [inclusive lower, exclusive upper) on (major, minor)
ALLOW_UNTESTED_ENV = "NH_CROSSBASIN_ALLOW_UNTESTED_NH"
DISABLE_ENV = "NH_CROSSBASIN_DISABLE"


class _Patches:
    """Rebinds attributes of modules or classes and remembers the originals so that they can be restored exactly."""

    def __init__(self):
        self.originals: Dict[Tuple[int, str], Tuple[Any, Any]] = {}

    def set(self, target: Any, attribute: str, value: Any) -> None:
        """Set ``target.attribute = value``; ``target`` is a module, a module name or a class."""
        if isinstance(target, str):
            target = importlib.import_module(target)
        key = (id(target), attribute)
        if key not in self.originals:
            self.originals[key] = (target, target.__dict__[attribute])
        setattr(target, attribute, value)

    def original(self, target: Any, attribute: str) -> Any:
        """The object ``target.attribute`` held before it was patched (as stored, e.g. a staticmethod)."""
        if isinstance(target, str):
            target = importlib.import_module(target)
        stored = self.originals.get((id(target), attribute))
        return stored[1] if stored else target.__dict__[attribute]

    def restore(self) -> None:
        """Put every original back."""
        for (_, attribute), (target, value) in self.originals.items():
            setattr(target, attribute, value)
        self.originals.clear()

    def __bool__(self) -> bool:
        return bool(self.originals)


_PLUGIN = _Patches()
_HINT = _Patches()


# --------------------------------------------------------------------------------------------------- version check
def nh_version() -> str:
    """The installed NeuralHydrology version string."""
    from neuralhydrology.__about__ import __version__
    return __version__


def check_nh_version() -> None:
    """Raise RuntimeError if the installed NH is outside the tested range (unless overridden by the env var)."""
    version = nh_version()
    try:
        major_minor = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        major_minor = (0, 0)
    low, high = TESTED_NH_VERSIONS
    if not (low <= major_minor < high) and os.environ.get(ALLOW_UNTESTED_ENV, "") in ("", "0"):
        raise RuntimeError(
            f"nh-crossbasin was tested with neuralhydrology >= {'.'.join(map(str, low))}, < "
            f"{'.'.join(map(str, high))}, but {version} is installed. It patches NH call sites that may have changed; "
            f"install a tested NH version, or set {ALLOW_UNTESTED_ENV}=1 to try anyway.")


# ---------------------------------------------------------------------------------------------------- wrappers
def _get_model(cfg):
    model_class = MODELS.get(cfg.model)
    if model_class is None:
        return _PLUGIN.original("neuralhydrology.modelzoo", "get_model")(cfg)
    if len(cfg.use_frequencies) > 1 and not getattr(model_class, "supports_multiple_frequencies", False):
        raise ValueError(f"Model {cfg.model} does not support multiple frequencies.")
    if cfg.autoregressive_inputs and not getattr(model_class, "supports_autoregression", False):
        raise ValueError(f"Model {cfg.model} does not support autoregression.")
    if cfg.mass_inputs:
        raise ValueError(f"The use of 'mass_inputs' with {cfg.model} is not supported.")
    return model_class(cfg=cfg)


def _get_loss_obj(cfg):
    loss_class = LOSSES.get(cfg.loss)
    if loss_class is None:
        return _PLUGIN.original("neuralhydrology.training", "get_loss_obj")(cfg)
    return loss_class(cfg)


def _get_dataset(*args, **kwargs):
    cfg = kwargs["cfg"] if "cfg" in kwargs else args[0]
    get_dataset = _PLUGIN.original("neuralhydrology.datasetzoo", "get_dataset")
    if not config_keys.uses_plugin(cfg.as_dict()):
        return get_dataset(*args, **kwargs)
    loss_class = LOSSES.get(cfg.loss)
    if getattr(loss_class, "needs_basin_target_stds", False):
        # NH's BaseDataset computes the per-basin target stds only when `cfg.loss` is 'NSE'; present it as such
        # while the dataset is built so that the stds are NH's own, then put the plugin's loss name back.
        plugin_loss = cfg.as_dict()["loss"]
        cfg.as_dict()["loss"] = "NSE"
        try:
            dataset = get_dataset(*args, **kwargs)
        finally:
            cfg.as_dict()["loss"] = plugin_loss
    else:
        dataset = get_dataset(*args, **kwargs)
    from nh_crossbasin.nh_adapter.dataset import wrap_dataset
    is_train = kwargs["is_train"] if "is_train" in kwargs else (len(args) > 1 and bool(args[1]))
    return wrap_dataset(dataset, cfg, is_train)


def _make_trainer(cfg):
    """Stands in for ``BaseTrainer`` in ``training.train``: picks the plugin's trainer for plugin configs."""
    if config_keys.uses_plugin(cfg.as_dict()):
        from nh_crossbasin.nh.trainer import CrossBasinTrainer
        return CrossBasinTrainer(cfg=cfg)
    return _PLUGIN.original("neuralhydrology.training.train", "BaseTrainer")(cfg=cfg)


def _unknown_nh_keys(cfg: dict) -> list:
    from neuralhydrology.utils.config import Config
    known = set(Config._deprecated_keys) | set(Config._metadata_keys)
    return [k for k in cfg if k not in known and not isinstance(getattr(Config, k, None), property)]


def _check_cfg_keys(cfg: dict):
    nh_only = {k: v for k, v in cfg.items() if k not in config_keys.CONFIG_KEYS}
    try:
        _nh_check_cfg_keys()(nh_only)
    except ValueError as err:
        raise ValueError(config_keys.unknown_key_message(_unknown_nh_keys(nh_only))) from err
    config_keys.validate(cfg)


# ------------------------------------------------------------------------------------------- install / remove
#: (module, name, replacement, (home module, home name)): the home holds NH's original object, which the call site
#: must hold too before the plugin patches it
_CALL_SITES: Tuple[Tuple[str, str, Callable, Tuple[str, str]], ...] = (
    ("neuralhydrology.modelzoo", "get_model", _get_model, ("neuralhydrology.modelzoo", "get_model")),
    ("neuralhydrology.training.basetrainer", "get_model", _get_model, ("neuralhydrology.modelzoo", "get_model")),
    ("neuralhydrology.evaluation.tester", "get_model", _get_model, ("neuralhydrology.modelzoo", "get_model")),
    ("neuralhydrology.training", "get_loss_obj", _get_loss_obj, ("neuralhydrology.training", "get_loss_obj")),
    ("neuralhydrology.training.basetrainer", "get_loss_obj", _get_loss_obj,
     ("neuralhydrology.training", "get_loss_obj")),
    ("neuralhydrology.evaluation.tester", "get_loss_obj", _get_loss_obj,
     ("neuralhydrology.training", "get_loss_obj")),
    ("neuralhydrology.datasetzoo", "get_dataset", _get_dataset, ("neuralhydrology.datasetzoo", "get_dataset")),
    ("neuralhydrology.training.basetrainer", "get_dataset", _get_dataset,
     ("neuralhydrology.datasetzoo", "get_dataset")),
    ("neuralhydrology.evaluation.tester", "get_dataset", _get_dataset, ("neuralhydrology.datasetzoo", "get_dataset")),
    ("neuralhydrology.training.train", "BaseTrainer", _make_trainer,
     ("neuralhydrology.training.basetrainer", "BaseTrainer")),
)
_ADDED_DATASETS: Dict[str, type] = {}


def _config_class() -> type:
    from neuralhydrology.utils.config import Config
    return Config


def _nh_check_cfg_keys() -> Callable:
    """NH's own ``Config._check_cfg_keys``, whichever patch is in place."""
    config = _config_class()
    for patches in (_PLUGIN, _HINT):
        if patches:
            return patches.original(config, "_check_cfg_keys").__func__
    return config.__dict__["_check_cfg_keys"].__func__


def is_installed() -> bool:
    """Whether the plugin's registries are currently wired into NH."""
    return bool(_PLUGIN)


def check_call_sites() -> None:
    """Check, before patching, that every call site exists and holds NH's original object.

    Raises
    ------
    RuntimeError
        Naming the first call site that is missing or holds something else (NH renamed it, or another tool patched
        it).
    """
    for module_name, attribute, _, (home_module, home_name) in _CALL_SITES:
        site = f"{module_name}.{attribute}"
        module = importlib.import_module(module_name)
        original = getattr(importlib.import_module(home_module), home_name, None)
        if attribute not in module.__dict__ or original is None:
            raise RuntimeError(f"nh-crossbasin cannot activate: NH's call site {site} does not exist in "
                               f"neuralhydrology {nh_version()} (tested: 1.13); NH is left unchanged.")
        if module.__dict__[attribute] is not original or not str(getattr(original, "__module__", "")).startswith(
                "neuralhydrology"):
            raise RuntimeError(f"nh-crossbasin cannot activate: NH's call site {site} does not hold NH's original "
                               f"{home_module}.{home_name} (it holds {module.__dict__[attribute]!r}); NH is left "
                               f"unchanged.")
    check = _config_class().__dict__.get("_check_cfg_keys")
    if not isinstance(check, staticmethod) or not check.__func__.__module__.startswith("neuralhydrology"):
        raise RuntimeError("nh-crossbasin cannot activate: NH's call site neuralhydrology.utils.config.Config."
                           "_check_cfg_keys is missing or not NH's own; NH is left unchanged.")


def install() -> None:
    """Wire the plugin's registries into NH's call sites and its dataset registry (idempotent, all-or-nothing).

    Raises
    ------
    RuntimeError
        If the installed NH version is outside the tested range (see :data:`ALLOW_UNTESTED_ENV`), or a call site is
        missing, holds something other than NH's original, or cannot be patched; NH is then left unchanged.
    """
    if _PLUGIN:
        return
    check_nh_version()
    for module_name, _, _, _ in _CALL_SITES:  # import all first: modules that import a name bind NH's original
        importlib.import_module(module_name)
    _HINT.restore()
    check_call_sites()
    site = "neuralhydrology.utils.config.Config._check_cfg_keys"
    try:
        _PLUGIN.set(_config_class(), "_check_cfg_keys", staticmethod(_check_cfg_keys))
        for module_name, attribute, replacement, _ in _CALL_SITES:
            site = f"{module_name}.{attribute}"
            _PLUGIN.set(module_name, attribute, replacement)
        site = "neuralhydrology.datasetzoo.register_dataset"
        _register_plugin_datasets()
    except Exception as err:
        uninstall()
        raise RuntimeError(f"nh-crossbasin could not patch NH's call site {site}: {type(err).__name__}: {err}; "
                           f"every patch was undone, NH is unchanged.") from err


def _register_plugin_datasets() -> None:
    """Add the plugin's datasets to NH's dataset registry (with NH's public ``register_dataset``)."""
    from neuralhydrology.datasetzoo import register_dataset

    from nh_crossbasin.nh.datasets.pooled import PooledDataset
    from nh_crossbasin.nh.datasets.pooled_sources import POOLED_DATASET
    if POOLED_DATASET not in nh_dataset_classes():
        register_dataset(POOLED_DATASET, PooledDataset)
        _ADDED_DATASETS[POOLED_DATASET] = PooledDataset


def nh_dataset_classes() -> dict:
    """NH 1.13's dataset registry (``_datasetZooRegistry``), which has no public way to remove an entry."""
    from neuralhydrology import datasetzoo
    classes = getattr(getattr(datasetzoo, "_datasetZooRegistry", None), "_DatasetRegistry__dataset_class", None)
    if classes is None:
        raise RuntimeError(f"NH {nh_version()}'s dataset registry has an unknown layout.")
    return classes


def uninstall() -> None:
    """Restore NH exactly: every object :func:`install` replaced, and its dataset registry (no-op when not
    installed)."""
    _PLUGIN.restore()
    if _ADDED_DATASETS:
        classes = nh_dataset_classes()
        for key, cls in list(_ADDED_DATASETS.items()):
            if classes.get(key) is cls:
                del classes[key]
            del _ADDED_DATASETS[key]


@contextmanager
def activated() -> Iterator[None]:
    """Context manager: the plugin is wired into NH inside the block and restored to the prior state after it."""
    was_installed = is_installed()
    install()
    try:
        yield
    finally:
        if not was_installed:
            uninstall()


# ----------------------------------------------------------------------------------------- switched-off hint
def install_disabled_hint(reason: str) -> None:
    """Make NH's config check explain how to enable the plugin when a config uses plugin keys or names.

    Used instead of :func:`install` when the plugin is switched off or could not be activated: configs without
    ``xb_`` keys or names are checked exactly as by NH; configs with them fail with a message saying why the plugin
    is off and how to switch it on.

    Parameters
    ----------
    reason : str
        Why the plugin is not active (e.g. ``"NH_CROSSBASIN_DISABLE=1 is set"``).
    """
    if _PLUGIN or _HINT:
        return

    def check_with_hint(cfg: dict):
        plugin_like = [k for k in cfg if str(k).startswith(config_keys.PREFIX)]
        plugin_like += [f"{k}: {cfg[k]}" for k in ("model", "loss")
                        if str(cfg.get(k, "")).lower().startswith(config_keys.PREFIX)]
        if plugin_like:
            raise ValueError(
                f"{plugin_like} belong to the nh-crossbasin plugin, which is not active: {reason}. Enable it by "
                f"unsetting {DISABLE_ENV} (plain `nh-run` then activates it), or run `nh-xb train|evaluate|... "
                f"--config-file ...`, or call `nh_crossbasin.register()` in Python before NH reads the config.")
        nh_check(cfg)

    nh_check = _nh_check_cfg_keys()
    _HINT.set(_config_class(), "_check_cfg_keys", staticmethod(check_with_hint))


