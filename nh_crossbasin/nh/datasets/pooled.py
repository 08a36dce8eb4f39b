"""``dataset: xb_pooled``: two or more NH datasets in one run (e.g. CAMELS-US + CAMELS-DE, Yoon et al. 2026).

Each source is read by its own NH dataset class (``generic``, ``camels_us``, ``camels_de``, ...) and mapped onto
common variable names (:mod:`.pooled_sources`); basin ids carry the source prefix (``us__01022500``,
``de__DE110010``), so sources never mix even when they share basin ids. Everything else is NH's pipeline: periods,
warm-up, NaN handling, lookup table, samples.

Normalisation and rescaling
---------------------------
- **Inputs** (dynamic inputs, evolving attributes, static attributes): each source is normalised with the
  statistics of its *own* training basins, computed with NH's estimators (mean/std with NaN skipped and
  ``custom_normalization`` for time series; pandas mean/std for static attributes), so a source's inputs are exactly
  what a run of NH on that source alone would feed the model.
- **Targets** are normalised with *one* center/scale computed NH's way over the training basins of all sources
  pooled (targets must share their physical unit across sources, e.g. mm/d). This is what makes evaluation correct
  with NH's unchanged tester: it rescales ``y_hat`` and ``y`` with the scaler's 0-d target entries,
  ``y * scale[target] + center[target]``, which are exactly the statistics the targets were normalised with, so
  predictions, observations and all metrics come out in physical units for every source. (Per-source target
  statistics could not be undone by NH's tester, which applies one center/scale to every basin.) Per-basin target
  stds for NH's NSE loss are computed on the raw data, as in NH.
- **Storage**: all statistics live in NH's own scaler file, ``train_data/train_data_scaler.yml`` (format described
  in :mod:`.pooled_scaling`). NH loads it for validation and ``nh-run evaluate`` and from ``base_run_dir`` when
  finetuning; ``continue_training`` reuses the base run's scaler too (NH would recompute it from the data), so every
  evaluation and every continued run sees the training statistics unchanged.
"""
from __future__ import annotations

from functools import cached_property
from typing import Callable, Dict, List, Union

import pandas as pd
import xarray
from neuralhydrology.datasetzoo.basedataset import BaseDataset
from neuralhydrology.datautils.utils import load_scaler

from nh_crossbasin import nh_adapter
from nh_crossbasin.nh.datasets import pooled_scaling
from nh_crossbasin.nh.datasets.pooled_sources import (Source, SourceConfigView, parse_sources, required_variables,
                                                      split_basin_id, to_common_names)


class PooledDataset(BaseDataset):
    """NH dataset pooling the sources listed in ``xb_pooled_sources`` (see the module docstring).

    Parameters are NH's (``BaseDataset``): ``cfg``, ``is_train``, ``period``, ``basin``, ``additional_features``,
    ``id_to_int``, ``scaler``. Basin files list pooled ids ``<prefix>__<source basin id>``.

    Raises
    ------
    ValueError
        If ``xb_pooled_sources`` is missing or invalid, a basin id has no known prefix, a source lacks a variable
        or attribute (the message names the source, the variable and the source's variables), or the scaler lacks
        a source.
    """

    def __init__(self, cfg, is_train: bool, period: str, basin: str = None,
                 additional_features: List[Dict[str, pd.DataFrame]] = [], id_to_int: Dict[str, int] = {},
                 scaler: Dict[str, Union[pd.Series, xarray.Dataset]] = {}):
        self.cfg = cfg
        for source in self.sources.values():  # fail on a bad source list before anything is loaded
            self._loader(source, [])
        if is_train and not scaler and cfg.is_continue_training:
            scaler = load_scaler(cfg.base_run_dir)
        scaler = scaler or {}  # never fill NH's shared default dict
        super().__init__(cfg=cfg, is_train=is_train, period=period, basin=basin,
                         additional_features=additional_features, id_to_int=id_to_int, scaler=scaler)

    # ------------------------------------------------------------------------------------------------ sources
    @cached_property
    def sources(self) -> Dict[str, Source]:
        """The sources of the run, by prefix (from ``xb_pooled_sources``)."""
        return parse_sources(self.cfg)

    def source_of(self, basin: str) -> Source:
        """The source of a pooled basin id."""
        return split_basin_id(basin, self.sources)[0]

    def _prefix_of(self, basin: str) -> str:
        return self.source_of(basin).prefix

    def _loader(self, source: Source, basins: List[str]):
        """An instance of the source's NH dataset class that serves its loading hooks (nothing loaded)."""
        view = SourceConfigView(self.cfg, source)
        try:
            cls = nh_adapter.dataset_class(view)
        except NotImplementedError as err:
            raise ValueError(f"Config key 'xb_pooled_sources': {source.describe()} names a dataset NH does not know "
                             f"({err}); use an NH dataset name such as generic, camels_us, camels_de.") from err
        return nh_adapter.unloaded_dataset(cls, view, basins)

    @staticmethod
    def _from_source(source: Source, load: Callable, *args):
        """Call a source loader; its errors name the source."""
        try:
            return load(*args)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            if source.describe() in str(err):
                raise
            try:
                named = type(err)(f"{source.describe()}: {err}")
            except Exception:  # an exception type that takes other arguments: keep it as it is
                raise err
            raise named from err

    # ------------------------------------------------------------------------ NH's extension points (loading)
    def _load_basin_data(self, basin: str) -> pd.DataFrame:
        """The source's time series of one basin, columns renamed to the common names."""
        source, source_basin = split_basin_id(basin, self.sources)
        frame = self._from_source(source, self._loader(source, [source_basin])._load_basin_data, source_basin)
        provided = [c for extra in getattr(self, "additional_features", []) if basin in extra
                    for c in extra[basin].columns]
        required = required_variables(self.cfg, getattr(self, "is_train", False), provided)
        return to_common_names(frame, source.rename, required, source, "variable", "rename",
                               where=f", basin '{source_basin}'")

    def _load_attributes(self) -> pd.DataFrame:
        """Static attributes of all basins (unnormalised), common names, indexed by pooled id."""
        frames = []
        for prefix, basins in pooled_scaling.group_by_source(self.basins, self._prefix_of).items():
            source = self.sources[prefix]
            own_ids = [split_basin_id(b, self.sources)[1] for b in basins]
            frame = self._from_source(source, self._loader(source, own_ids)._load_attributes)
            frame = to_common_names(frame, source.rename_attributes, self.cfg.static_attributes, source,
                                    "attribute", "rename_attributes")[self.cfg.static_attributes]
            frame.index = [source.pooled_id(str(b)) for b in frame.index]
            frames.append(frame)
        return pd.concat(frames) if frames else pd.DataFrame(columns=self.cfg.static_attributes)

    # -------------------------------------------------------------------- normalisation (NH's steps, per source)
    # NH 1.13 calls these two from BaseDataset.__init__; nh_adapter runs NH's own steps with the per-source
    # normalisation below in place of NH's pooled one (that module is the plugin's only contact with NH internals).
    def _load_combined_attributes(self):
        """Static attributes, normalised per source (``nh_adapter.load_attributes_with``)."""
        nh_adapter.load_attributes_with(self, self._normalized_attributes)

    def _load_data(self):
        """NH's data pipeline, normalised per source (``nh_adapter.load_data_normalised_with``)."""
        nh_adapter.load_data_normalised_with(self, fit=self._fit_time_series_scaler, normalize=self._normalized_time_series)

    def _normalized_attributes(self, frame: pd.DataFrame, fit: bool) -> pd.DataFrame:
        if fit:
            self.scaler.update(pooled_scaling.fit_attribute_scaler(frame, self._prefix_of))
        return pooled_scaling.normalize_attributes(frame, self.scaler, self._prefix_of)

    def _fit_time_series_scaler(self, xr: xarray.Dataset) -> dict:
        return pooled_scaling.fit_feature_scaler(self.cfg, xr, self._prefix_of)

    def _normalized_time_series(self, xr: xarray.Dataset) -> xarray.Dataset:
        return pooled_scaling.normalize_time_series(xr, self.scaler, self._prefix_of)
