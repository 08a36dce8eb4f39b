"""The one module that touches NeuralHydrology internals.

NH 1.13 resolves models (``modelzoo.get_model``), losses (``training.get_loss_obj``), datasets
(``datasetzoo.get_dataset``) and the trainer (``training.train.BaseTrainer``) through module-level names, several of
them imported *by name* into ``training.basetrainer`` and ``evaluation.tester``; ``Config._check_cfg_keys`` rejects
unknown keys. :func:`install` rebinds each of those names to a thin wrapper that consults the plugin's registries
first and otherwise calls NH's original, so that training, validation during training, ``nh-run evaluate``,
``continue_training`` and ``finetune`` all see registered names. Configs that use nothing of the plugin go through
NH's original code paths unchanged.

:func:`install` is idempotent, :func:`uninstall` restores every original object, and :func:`activated` is a context
manager for tests. An NH version outside the tested range is refused unless ``NH_CROSSBASIN_ALLOW_UNTESTED_NH=1``.
"""
from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch

from nh_crossbasin import config_keys
from nh_crossbasin.registry import LOSSES, MODELS

TESTED_NH_VERSIONS = ((1, 13), (1, 14))  # [inclusive lower, exclusive upper) on (major, minor)
ALLOW_UNTESTED_ENV = "NH_CROSSBASIN_ALLOW_UNTESTED_NH"
DISABLE_ENV = "NH_CROSSBASIN_DISABLE"
BASIN_INDEX_KEY = "basin_index"


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
    is_train = kwargs["is_train"] if "is_train" in kwargs else (len(args) > 1 and bool(args[1]))
    if not is_train:
        return BasinIndexedDataset(dataset)
    from nh_crossbasin.nh.degenerate import find_degenerate_basins, report_degenerate_basins
    degenerate = find_degenerate_basins(dataset.basins, *sample_targets(dataset))
    report_degenerate_basins(degenerate, config_keys.options(cfg)["xb_degenerate_basins"], cfg.run_dir)
    return BasinIndexedDataset(dataset, exclude=set(degenerate.index))


def sample_targets(dataset) -> Tuple[np.ndarray, np.ndarray]:
    """``(basin of every sample, its last target value(s))`` of an NH dataset (``lookup_table`` and the loaded,
    normalised targets of NH 1.13's ``BaseDataset``)."""
    lookup = dataset.lookup_table
    freq = dataset.frequencies[0]
    basins = np.array([lookup[i][0] for i in range(len(lookup))], dtype=object)
    ends = np.fromiter((lookup[i][1][0] for i in range(len(lookup))), dtype=np.int64, count=len(lookup))
    targets = np.full((len(lookup), len(dataset.cfg.target_variables)), np.nan)
    for basin in np.unique(basins) if len(basins) else []:
        rows = basins == basin
        targets[rows] = dataset._y[basin][freq].numpy()[ends[rows]]
    return basins, targets


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


# ------------------------------------------------------------------------------------------ basin index glue
class BasinIndexedDataset(torch.utils.data.Dataset):
    """An NH dataset whose samples also carry ``basin_index``, the position of the sample's basin in the dataset's
    basin list (for the training dataset: the order of ``train_basin_file``).

    Everything else is delegated to the wrapped dataset (``scaler``, ``collate_fn``, ``basins``, ...).

    Parameters
    ----------
    dataset : neuralhydrology.datasetzoo.basedataset.BaseDataset
        The dataset NH built.
    exclude : set of str, optional
        Basins whose samples are left out (degenerate training basins); they stay in ``basins`` with no samples.
    """

    def __init__(self, dataset, exclude: Optional[set] = None):
        self.dataset = dataset
        self.basin_to_index = {basin: i for i, basin in enumerate(dataset.basins)}
        lookup = dataset.lookup_table
        basin_index = np.fromiter((self.basin_to_index[lookup[i][0]] for i in range(len(dataset))),
                                  dtype=np.int64, count=len(dataset))
        keep = np.ones(len(dataset), dtype=bool)
        for basin in exclude or ():
            keep &= basin_index != self.basin_to_index[basin]
        self._items = np.flatnonzero(keep)
        self.sample_basin_index = basin_index[self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, item: int) -> dict:
        sample = self.dataset[int(self._items[item])]
        sample[BASIN_INDEX_KEY] = torch.tensor(self.sample_basin_index[item])
        return sample

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


# ------------------------------------------------------------------------------------------- install / remove
_CALL_SITES: Tuple[Tuple[str, str, Callable], ...] = (
    ("neuralhydrology.modelzoo", "get_model", _get_model),
    ("neuralhydrology.training.basetrainer", "get_model", _get_model),
    ("neuralhydrology.evaluation.tester", "get_model", _get_model),
    ("neuralhydrology.training", "get_loss_obj", _get_loss_obj),
    ("neuralhydrology.training.basetrainer", "get_loss_obj", _get_loss_obj),
    ("neuralhydrology.evaluation.tester", "get_loss_obj", _get_loss_obj),
    ("neuralhydrology.datasetzoo", "get_dataset", _get_dataset),
    ("neuralhydrology.training.basetrainer", "get_dataset", _get_dataset),
    ("neuralhydrology.evaluation.tester", "get_dataset", _get_dataset),
    ("neuralhydrology.training.train", "BaseTrainer", _make_trainer),
)


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


def install() -> None:
    """Wire the plugin's registries into NH's call sites (idempotent).

    Raises
    ------
    RuntimeError
        If the installed NH version is outside the tested range (see :data:`ALLOW_UNTESTED_ENV`).
    """
    if _PLUGIN:
        return
    check_nh_version()
    for module_name, _, _ in _CALL_SITES:  # import all first: modules that import a name bind NH's original
        importlib.import_module(module_name)
    _HINT.restore()
    _PLUGIN.set(_config_class(), "_check_cfg_keys", staticmethod(_check_cfg_keys))
    for module_name, attribute, replacement in _CALL_SITES:
        _PLUGIN.set(module_name, attribute, replacement)


def uninstall() -> None:
    """Restore every NH object :func:`install` replaced (no-op when not installed)."""
    _PLUGIN.restore()


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


# ---- NH dataset objects without loaded data (embedding, experiment designs, pooled dataset)
def dataset_class(cfg) -> type:
    """The NH dataset class that ``cfg.dataset`` names, from NH's dataset registry (registered datasets included).

    Raises
    ------
    NotImplementedError
        If NH knows no dataset of that name.
    """
    from neuralhydrology import datasetzoo
    classes = getattr(getattr(datasetzoo, "_datasetZooRegistry", None), "_DatasetRegistry__dataset_class", None)
    if classes is None:
        raise RuntimeError(f"NH {nh_version()}'s dataset registry has an unknown layout; cannot look up dataset "
                           f"classes.")
    dataset = classes.get(cfg.dataset.lower())
    if dataset is None:
        raise NotImplementedError(f"No dataset class implemented for dataset {cfg.dataset}")
    return dataset


def dataset_view(dataset_class: type, cfg, basins) -> Any:
    """An instance of an NH dataset class that serves only its loading hooks, with nothing loaded.

    ``_load_basin_data`` and ``_load_attributes`` (NH's documented extension points) read ``self.cfg`` and
    ``self.basins``; ``BaseDataset.__init__`` would load every basin's time series, so it is skipped.

    Parameters
    ----------
    dataset_class : type
        A subclass of NH's ``BaseDataset`` whose hooks need no state from ``__init__`` (all of NH's daily datasets).
    cfg : object
        What the hooks see as ``self.cfg`` (a Config, or a view of one).
    basins : sequence of str
        What ``_load_attributes`` sees as ``self.basins``.
    """
    view = dataset_class.__new__(dataset_class)
    view.cfg = cfg
    view.basins = [str(b) for b in basins]
    return view


def normalized_static_attributes(cfg, basins, scaler) -> Dict[str, torch.Tensor]:
    """Each basin's static and HydroATLAS attributes, normalised exactly as NH's dataset feeds them to the model.

    Runs NH's own attribute loading (``BaseDataset._load_combined_attributes``: the dataset class's
    ``_load_attributes``, column selection and order, normalisation with the training scaler) on a dataset object
    whose time series are never loaded, so it takes milliseconds per basin instead of reading every time series.

    Parameters
    ----------
    cfg : neuralhydrology.utils.config.Config
        The run's configuration.
    basins : sequence of str
        Basin ids.
    scaler : dict
        The training scaler (``neuralhydrology.datautils.utils.load_scaler(run_dir)``).

    Returns
    -------
    dict of str to torch.Tensor
        ``{basin: float32 tensor [n_attributes]}``; empty when the run uses no static or HydroATLAS attributes.
    """
    dataset = dataset_view(dataset_class(cfg), cfg, basins)
    dataset.is_train = False
    dataset.period = "train"
    dataset.scaler = dict(scaler)
    dataset.id_to_int = {}
    dataset.additional_features = []
    dataset._compute_scaler = False
    dataset._attributes = {}
    dataset._load_combined_attributes()
    return dict(dataset._attributes)


def raw_attributes(cfg, basins) -> "pandas.DataFrame":
    """All static attributes the dataset class of ``cfg`` provides for ``basins``, unnormalised (basin-indexed);
    e.g. region columns such as ``huc_02`` for the experiment designs."""
    frame = dataset_view(dataset_class(cfg), cfg, basins)._load_attributes()
    frame.index = frame.index.astype(str)
    return frame


# ---- pooled dataset support
# `dataset: xb_pooled` (nh_crossbasin.nh.datasets.pooled) keeps NH 1.13's data pipeline and replaces only the
# normalisation steps; the functions below are the parts of that which rely on NH's private methods/attributes.
def nh_feature_scaler(cfg, xr) -> Tuple[Any, Any]:
    """NH's own center and scale of every variable of ``xr`` (``BaseDataset._setup_normalization`` of NH 1.13).

    Mean and population std (``ddof=0``) with NaN skipped, then ``cfg.custom_normalization`` applied.

    Returns
    -------
    tuple of xarray.Dataset
        ``(center, scale)``, one 0-d variable per variable of ``xr``.
    """
    from neuralhydrology.datasetzoo.basedataset import BaseDataset
    shell = BaseDataset.__new__(BaseDataset)
    shell.cfg = cfg
    shell.scaler = {}
    BaseDataset._setup_normalization(shell, xr)
    return shell.scaler["xarray_feature_center"], shell.scaler["xarray_feature_scale"]


def fits_scaler(dataset) -> bool:
    """Whether an NH dataset computes its scaler (training, not finetuning) rather than using a given one."""
    return bool(dataset._compute_scaler)


def load_attributes_with(dataset, normalize: Callable) -> None:
    """Stands in for ``BaseDataset._load_combined_attributes`` (NH 1.13) with the normalisation replaced.

    Loads ``dataset._load_attributes()``, keeps ``cfg.static_attributes`` in NH's (alphabetical) column order, calls
    ``normalize(frame, fit)`` (``fit``: whether the dataset computes its scaler) and stores each basin's row as the
    float32 tensor NH feeds to the model.

    Raises
    ------
    ValueError
        If ``hydroatlas_attributes`` are set (they are read from the one ``data_dir`` NH knows) or a static attribute
        is missing.
    """
    cfg = dataset.cfg
    if cfg.hydroatlas_attributes:
        raise ValueError(f"Config key 'hydroatlas_attributes' is not supported by dataset '{cfg.dataset}'; list the "
                         f"HydroATLAS attributes under 'static_attributes' instead (per source, from its attribute "
                         f"files).")
    dataset._attributes = {}
    if not cfg.static_attributes:
        return
    frame = dataset._load_attributes()
    missing = [a for a in cfg.static_attributes if a not in frame.columns]
    if missing:
        raise ValueError(f"Static attributes {missing} are missing.")
    frame = normalize(frame[cfg.static_attributes].sort_index(axis=1), fits_scaler(dataset))
    for basin in dataset.basins:
        values = frame.loc[frame.index == basin].values.flatten()
        dataset._attributes[basin] = torch.from_numpy(values.astype(np.float32))


def load_data_with(dataset, fit: Callable, normalize: Callable) -> None:
    """Stands in for ``BaseDataset._load_data`` (NH 1.13) with the feature normalisation replaced.

    Same steps and order as NH: attributes, the xarray of all basins (NH's ``_load_or_create_xarray_dataset``, which
    calls the dataset's ``_load_basin_data``), per-basin target stds for (weighted) NSE on the raw data, then
    ``fit(xr)`` (only when the dataset computes its scaler; returns the entries to add to ``dataset.scaler``) and
    ``normalize(xr)`` in place of NH's ``(xr - center) / scale``, then NH's lookup table.
    """
    dataset._load_combined_attributes()
    xr = dataset._load_or_create_xarray_dataset()
    if dataset.cfg.loss.lower() in ["nse", "weightednse"]:
        dataset._calculate_per_basin_std(xr)
    if fits_scaler(dataset):
        dataset.scaler.update(fit(xr))
    dataset._create_lookup_table(normalize(xr))
