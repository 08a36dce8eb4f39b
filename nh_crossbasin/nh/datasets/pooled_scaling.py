"""Per-source normalisation for ``dataset: xb_pooled``, stored inside NH's own scaler.

NH's scaler (``train_data/train_data_scaler.yml``) is a dict of four entries; a pooled run keeps the entries and
their file format and stores per-source statistics inside them:

- ``xarray_feature_center`` / ``xarray_feature_scale`` (xarray Datasets): a variable that is a target is 0-d, as in
  NH, and holds the statistics of all training basins pooled; every other variable (dynamic inputs, evolving
  attributes, ...) has the dimension :data:`SOURCE_DIM` with one value per source prefix, computed by NH's own
  estimator (``nh_adapter.nh_feature_scaler``: mean, population std, NaN skipped, ``custom_normalization``) on that
  source's training basins only. A variable that is both an input and a target is normalised as a target.
- ``attribute_means`` / ``attribute_stds`` (pandas Series): indexed ``<prefix>__<attribute>``; pandas mean and std
  (``ddof=1``) over the source's training basins, as NH computes them for one dataset.

NH's ``load_scaler`` reads this file unchanged, so validation, ``nh-run evaluate``, finetuning (scaler of the base
run) and continue_training get exactly the training statistics.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import numpy as np
import pandas as pd
import xarray
from neuralhydrology.datautils.utils import attributes_sanity_check

from nh_crossbasin import nh_adapter
from nh_crossbasin.nh.datasets.pooled_sources import SEPARATOR

SOURCE_DIM = "xb_source"


def group_by_source(basins: Sequence[str], source_of: Callable[[str], str]) -> Dict[str, List[str]]:
    """``{prefix: basins}`` in order of first appearance."""
    groups: Dict[str, List[str]] = {}
    for basin in basins:
        groups.setdefault(source_of(basin), []).append(basin)
    return groups


def fit_feature_scaler(cfg, xr: xarray.Dataset, source_of: Callable[[str], str]) -> dict:
    """Center and scale of each time series variable: per source, targets pooled (see the module docstring).

    Parameters
    ----------
    cfg : neuralhydrology.utils.config.Config
        The pooled run's config (``target_variables``, ``custom_normalization``).
    xr : xarray.Dataset
        Raw training data of all basins (NH's data set before normalisation, common names, pooled basin ids).
    source_of : callable
        Pooled basin id -> source prefix.

    Returns
    -------
    dict
        ``{"xarray_feature_center": Dataset, "xarray_feature_scale": Dataset}``.
    """
    pooled = nh_adapter.nh_feature_scaler(cfg, xr)
    groups = group_by_source([str(b) for b in xr["basin"].values], source_of)
    per_source = {prefix: nh_adapter.nh_feature_scaler(cfg, xr.sel(basin=basins)) for prefix, basins in groups.items()}
    targets = set(cfg.target_variables)
    result = {}
    for index, key in enumerate(("xarray_feature_center", "xarray_feature_scale")):
        variables = {}
        for name in pooled[index].data_vars:
            if name in targets:
                variables[name] = pooled[index][name]
            else:
                values = np.array([per_source[p][index][name].values for p in groups], dtype=np.float32)
                variables[name] = xarray.DataArray(values, dims=SOURCE_DIM, coords={SOURCE_DIM: list(groups)})
        result[key] = xarray.Dataset(variables)
    return result


def _missing_sources_error(needed: Sequence[str], known: Sequence[str], what: str) -> ValueError:
    return ValueError(f"The run's scaler (train_data/train_data_scaler.yml) holds no {what} statistics for source(s) "
                      f"{sorted(needed)}, only for {list(known)}: every source needs training basins (each source "
                      f"is normalised with its own training statistics), and the scaler must come from a "
                      f"'dataset: xb_pooled' run with the same sources.")


def normalize_time_series(xr: xarray.Dataset, scaler: dict, source_of: Callable[[str], str]) -> xarray.Dataset:
    """``(xr - center) / scale`` with each basin's source statistics (targets: the pooled ones).

    The arithmetic is NH's (float32, elementwise), so a source's basins get bit-for-bit the values NH would give
    them in a run on that source alone.
    """
    center, scale = scaler["xarray_feature_center"], scaler["xarray_feature_scale"]
    basins = [str(b) for b in xr["basin"].values]
    labels = [source_of(b) for b in basins]
    known = [str(s) for s in center[SOURCE_DIM].values] if SOURCE_DIM in center.coords else []
    unknown = sorted(set(labels) - set(known))
    if unknown:
        raise _missing_sources_error(unknown, known, "time series")
    indexer = xarray.DataArray(labels, dims="basin", coords={"basin": xr["basin"].values})
    center = center.sel({SOURCE_DIM: indexer}).drop_vars(SOURCE_DIM)
    scale = scale.sel({SOURCE_DIM: indexer}).drop_vars(SOURCE_DIM)
    return (xr - center) / scale


def attribute_key(prefix: str, attribute: str) -> str:
    """Index of a source's attribute statistic in ``attribute_means``/``attribute_stds``."""
    return f"{prefix}{SEPARATOR}{attribute}"


def fit_attribute_scaler(frame: pd.DataFrame, source_of: Callable[[str], str]) -> dict:
    """Per-source attribute means and stds (pandas, ``ddof=1``, as NH), after NH's sanity check per source.

    Raises
    ------
    RuntimeError
        If an attribute is constant or NaN within a source (naming the source).
    """
    means, stds = {}, {}
    for prefix, basins in group_by_source(list(frame.index), source_of).items():
        part = frame.loc[basins]
        try:
            attributes_sanity_check(df=part)
        except RuntimeError as err:
            raise RuntimeError(f"Source '{prefix}' (its training basins only): {err}") from err
        for name, value in part.mean().items():
            means[attribute_key(prefix, name)] = value
        for name, value in part.std().items():
            stds[attribute_key(prefix, name)] = value
    return {"attribute_means": pd.Series(means), "attribute_stds": pd.Series(stds)}


def normalize_attributes(frame: pd.DataFrame, scaler: dict, source_of: Callable[[str], str]) -> pd.DataFrame:
    """``(frame - means) / stds`` with each basin's source statistics."""
    parts = []
    for prefix, basins in group_by_source(list(frame.index), source_of).items():
        keys = [attribute_key(prefix, name) for name in frame.columns]
        missing = [k for k in keys if k not in scaler["attribute_means"].index]
        if missing:
            known = sorted({k.split(SEPARATOR)[0] for k in scaler["attribute_means"].index})
            raise _missing_sources_error([prefix], known, f"static attribute ({missing[:3]} missing)")
        means = pd.Series(scaler["attribute_means"][keys].to_numpy(), index=frame.columns)
        stds = pd.Series(scaler["attribute_stds"][keys].to_numpy(), index=frame.columns)
        parts.append((frame.loc[basins] - means) / stds)
    return pd.concat(parts).loc[frame.index] if parts else frame
