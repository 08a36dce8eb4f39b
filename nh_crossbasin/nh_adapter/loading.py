"""Loading glue for datasets NH builds: attribute tables without loading time series, NH's own normalisation
statistics, and NH 1.13's data pipeline with the normalisation replaced (for ``dataset: xb_pooled``).

These functions use NH's dataset classes and their documented extension points (``_load_basin_data``,
``_load_attributes``), and the private steps of ``BaseDataset`` that have no public equivalent in NH 1.13; each says
which. They are the only place outside :mod:`nh_crossbasin.nh_adapter.patches` that relies on NH internals.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch

from nh_crossbasin.nh_adapter.patches import nh_dataset_classes


def dataset_class(cfg) -> type:
    """The NH dataset class that ``cfg.dataset`` names, from NH's dataset registry (registered datasets included).

    Raises
    ------
    NotImplementedError
        If NH knows no dataset of that name.
    """
    dataset = nh_dataset_classes().get(cfg.dataset.lower())
    if dataset is None:
        raise NotImplementedError(f"No dataset class implemented for dataset {cfg.dataset}")
    return dataset


def unloaded_dataset(dataset_class: type, cfg, basins) -> Any:
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
    dataset = unloaded_dataset(dataset_class(cfg), cfg, basins)
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
    frame = unloaded_dataset(dataset_class(cfg), cfg, basins)._load_attributes()
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


def load_data_normalised_with(dataset, fit: Callable, normalize: Callable) -> None:
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
