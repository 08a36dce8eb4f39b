"""Catchment similarity of an EA-LSTM run (Kratzert et al. 2019, sect. 3.5 and 4.4).

- :func:`embedding_and_attributes`: each basin's input-gate embedding ``sigmoid(W_i x_s + b_i)`` and its normalised
  static attributes as the model saw them;
- :func:`catchment_similarity`: k-means over a range of k on both, with mean and minimum silhouette scores;
- :func:`hydrological_signatures` (NH's signatures module) and :func:`signature_variance_reduction`: how much of the
  between-basin variance of each signature the clusters explain (``1 - SS_within / SS_total``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import xarray as xr
from tqdm import tqdm

from nh_crossbasin.analysis.clustering import cluster_scan, variance_reduction

PRECIPITATION_SIGNATURES = ("runoff_ratio", "stream_elas")


def attribute_names(cfg) -> List[str]:
    """Names of the static inputs in the order NH's dataset stacks them (static + HydroATLAS, alphabetical)."""
    return sorted(list(cfg.static_attributes) + list(cfg.hydroatlas_attributes))


def embedding_and_attributes(run_dir: Union[str, Path], epoch: Optional[int] = None,
                             basins: Optional[Sequence[str]] = None) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """The input-gate embedding and the normalised static attributes of each basin of an EA-LSTM run.

    Parameters
    ----------
    run_dir : str or Path
        A trained ``xb_ealstm`` or NH ``ealstm`` run.
    epoch : int, optional
        Weights (default: the last saved).
    basins : sequence of str, optional
        Basins (default: the run's training basins).

    Returns
    -------
    tuple of pandas.DataFrame
        ``(embedding, attributes)``: basin × cell gate values in (0, 1), and basin × attribute values normalised with
        the run's training scaler (one-hot basin ids, if used, are not attributes and are left out).
    """
    from neuralhydrology.datautils.utils import load_scaler

    from nh_crossbasin.analysis.results import read_run_config
    from nh_crossbasin.nh.embedding import input_gate_embedding
    from nh_crossbasin.nh_adapter import normalized_static_attributes

    run_dir = Path(run_dir)
    gate = input_gate_embedding(run_dir, epoch=epoch, basins=None if basins is None else list(basins))
    ids = [str(b) for b in gate["basin"].values]
    embedding = pd.DataFrame(gate.values, index=pd.Index(ids, name="basin"),
                             columns=[f"cell_{c}" for c in gate["cell"].values])
    cfg = read_run_config(run_dir)
    names = attribute_names(cfg)
    if not names:
        raise ValueError(f"{run_dir} uses no static attributes; there is nothing to compare the embedding with.")
    values = normalized_static_attributes(cfg, ids, load_scaler(run_dir))
    attributes = pd.DataFrame(np.stack([values[b].numpy() for b in ids]), index=embedding.index, columns=names)
    embedding.attrs.update(run_dir=str(run_dir), epoch=gate.attrs["epoch"])
    return embedding, attributes


def catchment_similarity(spaces: Mapping[str, pd.DataFrame], ks: Iterable[int] = range(3, 16), seed: int = 0,
                         n_init: int = 10) -> Tuple[pd.DataFrame, Dict[str, pd.DataFrame]]:
    """k-means and silhouettes for each k in each feature space (e.g. embedding vs raw attributes).

    Parameters
    ----------
    spaces : mapping of str to pandas.DataFrame
        ``{name: basin × feature table}``, e.g. ``{"embedding": emb, "attributes": attrs}``.
    ks : iterable of int
        Numbers of clusters.
    seed, n_init : int
        As in :func:`nh_crossbasin.analysis.clustering.kmeans`.

    Returns
    -------
    tuple
        ``(scan, labels)``: ``scan`` is tidy with ``space``, ``k``, ``mean_silhouette``, ``min_silhouette``,
        ``min_cluster_silhouette``, ``inertia``; ``labels`` is ``{space: basin × k table of cluster labels}``.
    """
    ks = list(ks)
    frames, labels = [], {}
    for name, table in spaces.items():
        scan, labels[name] = cluster_scan(table, ks, seed=seed, n_init=n_init)
        scan.insert(0, "space", name)
        frames.append(scan)
    return pd.concat(frames, ignore_index=True), labels


def hydrological_signatures(discharge: Mapping[str, xr.DataArray],
                            precipitation: Optional[Mapping[str, xr.DataArray]] = None,
                            signatures: Optional[Sequence[str]] = None, progress: bool = True) -> pd.DataFrame:
    """NH's hydrological signatures of each basin's discharge series.

    Parameters
    ----------
    discharge : mapping of str to xarray.DataArray
        Daily discharge per basin along a ``date`` or ``datetime`` coordinate (e.g. :func:`observed_discharge`).
    precipitation : mapping of str to xarray.DataArray, optional
        Daily precipitation on the same dates; needed for ``runoff_ratio`` and ``stream_elas``.
    signatures : sequence of str, optional
        NH signature names (default: all of NH's, without the precipitation ones when no precipitation is given).
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        basin × signature.
    """
    from neuralhydrology.evaluation.signatures import calculate_signatures, get_available_signatures

    if signatures is None:
        signatures = [s for s in get_available_signatures()
                      if precipitation is not None or s not in PRECIPITATION_SIGNATURES]
    missing_p = [s for s in signatures if s in PRECIPITATION_SIGNATURES and precipitation is None]
    if missing_p:
        raise ValueError(f"Signatures {missing_p} need precipitation.")
    rows = {}
    for basin, series in tqdm(discharge.items(), desc="signatures", disable=not progress, leave=False):
        prcp = None if precipitation is None else precipitation[basin]
        with np.errstate(all="ignore"):
            rows[str(basin)] = calculate_signatures(series, list(signatures), prcp=prcp)
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(signatures)).astype(float)
    table.index.name = "basin"
    return table


def observed_discharge(run, target: Optional[str] = None) -> Dict[str, xr.DataArray]:
    """Observed series of each basin from loaded results (:class:`nh_crossbasin.analysis.RunResults`)."""
    series = {}
    for basin in run.basins:
        obs, _ = run.observed_and_simulated(basin, target)
        series[basin] = obs.rename(datetime="date")
    return series


def run_time_series(run_dir: Union[str, Path], variables: Sequence[str], basins: Optional[Sequence[str]] = None,
                    period: str = "train") -> Dict[str, Dict[str, xr.DataArray]]:
    """Daily series of a ``generic``-dataset run for one of its periods, read with NH's ``load_timeseries``.

    Parameters
    ----------
    run_dir : str or Path
        The run directory (its ``data_dir``, basin files and period dates are used).
    variables : sequence of str
        Variables of the netCDF files, e.g. ``["streamflow", "precipitation"]``.
    basins : sequence of str, optional
        Default: the run's basin file of that period.
    period : str, optional
        ``train``, ``validation`` or ``test``: the series are cut to its dates (all its date ranges).

    Returns
    -------
    dict
        ``{variable: {basin: DataArray along 'date'}}``.
    """
    from neuralhydrology.datasetzoo.genericdataset import load_timeseries
    from neuralhydrology.datautils.utils import load_basin_file

    from nh_crossbasin.analysis.results import read_run_config

    cfg = read_run_config(run_dir)
    if cfg.dataset.lower() != "generic":
        raise NotImplementedError(f"run_time_series reads NH 'generic' datasets; this run uses '{cfg.dataset}'. "
                                  f"Use observed_discharge(load_run(...)) for discharge instead.")
    basins = list(basins) if basins is not None else load_basin_file(Path(getattr(cfg, f"{period}_basin_file")))
    starts, ends = (_as_list(getattr(cfg, f"{period}_{edge}_date")) for edge in ("start", "end"))
    out: Dict[str, Dict[str, xr.DataArray]] = {v: {} for v in variables}
    for basin in basins:
        frame = load_timeseries(Path(cfg.data_dir), basin)
        frame = pd.concat([frame.loc[start:end] for start, end in zip(starts, ends)])
        for variable in variables:
            out[variable][basin] = xr.DataArray(frame[variable].to_numpy(dtype=float), dims="date",
                                                coords={"date": frame.index.to_numpy()}, name=variable)
    return out


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def signature_variance_reduction(signatures: pd.DataFrame, clusterings: Mapping[str, Mapping[str, object]]
                                 ) -> pd.DataFrame:
    """Fractional reduction in variance of each signature within the clusters of each clustering.

    Parameters
    ----------
    signatures : pandas.DataFrame
        basin × signature (e.g. :func:`hydrological_signatures`).
    clusterings : mapping
        ``{name: basin -> cluster label}`` (e.g. ``{"embedding": labels_a, "attributes": labels_b}``); only basins
        with a label and a finite signature value count.

    Returns
    -------
    pandas.DataFrame
        signature × clustering, values ``1 - SS_within / SS_total``.
    """
    table = {}
    for name, labels in clusterings.items():
        labels = pd.Series(labels)
        labels.index = labels.index.astype(str)
        common = signatures.index.astype(str).intersection(labels.index)
        values = signatures.set_axis(signatures.index.astype(str)).loc[common]
        table[name] = {s: variance_reduction(values[s].to_numpy(), labels.loc[common].to_numpy())
                       for s in signatures.columns}
    result = pd.DataFrame(table)
    result.index.name = "signature"
    return result
