"""The host adapter: the only package that touches NeuralHydrology's internals, one job per module.

- :mod:`~nh_crossbasin.nh_adapter.patches`: the patch table -- NH's call sites the plugin's registries are wired
  into, :func:`install` (all-or-nothing, after checking every call site), :func:`uninstall` (restores NH exactly),
  :func:`activated`, and the hint shown when the plugin is switched off;
- :mod:`~nh_crossbasin.nh_adapter.dataset`: the dataset wrapper that gives every sample its basin index and leaves
  degenerate training basins out;
- :mod:`~nh_crossbasin.nh_adapter.loading`: attribute tables and normalisation statistics without loading time series,
  and NH's data pipeline with the normalisation replaced (``dataset: xb_pooled``).
"""
from nh_crossbasin.nh_adapter.dataset import BASIN_INDEX_KEY, BasinIndexedDataset, sample_targets, wrap_dataset
from nh_crossbasin.nh_adapter.loading import (dataset_class, fits_scaler, load_attributes_with,
                                              load_data_normalised_with, nh_feature_scaler,
                                              normalized_static_attributes, raw_attributes, unloaded_dataset)
from nh_crossbasin.nh_adapter.patches import (ALLOW_UNTESTED_ENV, DISABLE_ENV, TESTED_NH_VERSIONS, activated,
                                              check_call_sites, check_nh_version, install, install_disabled_hint,
                                              is_installed, nh_version, uninstall)

__all__ = ["BASIN_INDEX_KEY", "BasinIndexedDataset", "sample_targets", "wrap_dataset", "dataset_class",
           "fits_scaler", "load_attributes_with", "load_data_normalised_with", "nh_feature_scaler",
           "normalized_static_attributes", "raw_attributes", "unloaded_dataset", "ALLOW_UNTESTED_ENV", "DISABLE_ENV",
           "TESTED_NH_VERSIONS", "activated", "check_call_sites", "check_nh_version", "install",
           "install_disabled_hint", "is_installed", "nh_version", "uninstall"]
