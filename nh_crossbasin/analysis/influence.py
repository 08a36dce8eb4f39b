"""Read the influence records of a run and ask which basins help which.

The influence sampler writes ``<run>/influence/influence_epochNNN.nc`` at every refresh and ``nh-xb influence``
writes ``offline_epochNNN.nc``: datasets with dims ``(target, source)`` holding ``influence`` (used, possibly smoothed),
``influence_raw``, ``weights`` (rows sum to 1) and ``basin_weight`` q (per source), with attributes such as
``epoch`` and ``effective_sources``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Mapping, Optional, Tuple, Union

import numpy as np
import pandas as pd
import xarray as xr

from nh_crossbasin.analysis.clustering import kmeans

INFLUENCE_DIR = "influence"
KINDS = {"training": "influence_epoch", "offline": "offline_epoch"}
_EPOCH = re.compile(r"epoch(\d+)(?:_(\d+))?\.nc$")


def basin_labels(groups: Optional[Mapping[str, object]]) -> dict:
    """``{basin id as str: label}`` from a mapping or Series of labels (empty for None); missing labels dropped."""
    if groups is None:
        return {}
    items = groups.items() if hasattr(groups, "items") else dict(groups).items()
    return {str(b): g for b, g in items if not (isinstance(g, float) and np.isnan(g)) and g is not None}


def influence_files(run_dir: Union[str, Path], kind: str = "training") -> List[Path]:
    """The run's influence records of one kind (``training`` refreshes or ``offline``), ordered by epoch."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    files = Path(run_dir, INFLUENCE_DIR).glob(f"{KINDS[kind]}*.nc")
    return sorted(files, key=lambda p: tuple(int(g or 0) for g in _EPOCH.search(p.name).groups()))


def load_influence(source: Union[str, Path], epoch: Optional[int] = None, kind: str = "training") -> xr.Dataset:
    """One influence record, loaded into memory (the file is closed).

    Parameters
    ----------
    source : str or Path
        A record file, or a run directory.
    epoch : int, optional
        For a run directory: the refresh of this epoch (default: the last record).
    kind : str, optional
        For a run directory: ``training`` or ``offline`` records.

    Raises
    ------
    FileNotFoundError
        If the run has no (such) record.
    """
    path = Path(source)
    if path.is_dir():
        files = influence_files(path, kind)
        if epoch is not None:
            files = [f for f in files if int(_EPOCH.search(f.name).group(1)) == epoch]
        if not files:
            raise FileNotFoundError(f"No {kind} influence record{'' if epoch is None else f' of epoch {epoch}'} in "
                                    f"{path / INFLUENCE_DIR} (train with xb_sampler: influence, or run "
                                    f"`nh-xb influence --run-dir {path}`).")
        path = files[-1]
    with xr.open_dataset(path) as record:
        record = record.load()
    for dim in ("target", "source"):
        record = record.assign_coords({dim: record[dim].values.astype(str)})
    record.attrs["file"] = str(path)
    return record


def weight_history(run_dir: Union[str, Path], kind: str = "training") -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Basin weights q of every refresh and a summary of each refresh.

    Returns
    -------
    tuple of pandas.DataFrame
        ``(weights, summary)``: ``weights`` has one row per record (index ``epoch``) and one column per source
        basin; ``summary`` has the same index and columns ``effective_sources`` and ``weight_entropy``.
    """
    rows, effective, entropy = {}, {}, {}
    for path in influence_files(run_dir, kind):
        record = load_influence(path)
        epoch = int(record.attrs["epoch"])
        rows[epoch] = pd.Series(record["basin_weight"].values, index=record["source"].values)
        effective[epoch] = float(record.attrs.get("effective_sources", np.nan))
        entropy[epoch] = float(record.attrs.get("weight_entropy", np.nan))
    if not rows:
        raise FileNotFoundError(f"No {kind} influence records in {Path(run_dir) / INFLUENCE_DIR}.")
    table = pd.DataFrame(rows).T.sort_index()
    table.index.name = "epoch"
    summary = pd.DataFrame({"effective_sources": pd.Series(effective), "weight_entropy": pd.Series(entropy)})
    summary = summary.sort_index()
    summary.index.name = "epoch"
    return table, summary


def top_sources(record: xr.Dataset, k: int = 5, variable: str = "influence", include_self: bool = False,
                groups: Optional[Mapping[str, object]] = None) -> pd.DataFrame:
    """For each target, the k sources with the highest ``variable`` (which basins help it most).

    Parameters
    ----------
    record : xarray.Dataset
        An influence record.
    k : int
        Sources per target.
    variable : str
        ``influence``, ``influence_raw`` or ``weights``.
    include_self : bool
        Whether a target may list its own basin.
    groups : mapping, optional
        Group (region, regime, cluster) per basin; adds ``target_group``, ``source_group`` and ``same_group``.

    Returns
    -------
    pandas.DataFrame
        Tidy: ``target``, ``rank`` (1 = most helpful), ``source``, ``value`` [, group columns].
    """
    values = record[variable].transpose("target", "source")
    sources = values["source"].values
    rows = []
    for target, row in zip(values["target"].values, values.values):
        row = np.where(np.isfinite(row), row, -np.inf)
        if not include_self:
            row = np.where(sources == target, -np.inf, row)
        order = np.argsort(-row, kind="stable")[:k]
        rows += [{"target": str(target), "rank": r + 1, "source": str(sources[i]), "value": float(row[i])}
                 for r, i in enumerate(order) if np.isfinite(row[i])]
    table = pd.DataFrame(rows, columns=["target", "rank", "source", "value"])
    if groups is not None:
        labels = basin_labels(groups)
        table["target_group"] = table["target"].map(labels)
        table["source_group"] = table["source"].map(labels)
        table["same_group"] = table["target_group"] == table["source_group"]
    return table


def same_group_share(record: xr.Dataset, groups: Mapping[str, object], k: int = 5,
                     variable: str = "influence") -> pd.Series:
    """Per target, the share of its top-k sources (itself excluded) that belong to its own group."""
    table = top_sources(record, k=k, variable=variable, groups=groups)
    return table.groupby("target")["same_group"].mean()


def group_order(basins, groups: Optional[Mapping[str, object]] = None) -> List[str]:
    """Basins sorted by group, then by id (by id only without groups); basins without a group come last."""
    labels = basin_labels(groups)
    missing = object()

    def key(basin):
        group = labels.get(str(basin), missing)
        return (group is missing, str(group) if group is not missing else "", str(basin))

    return sorted((str(b) for b in basins), key=key)


def cluster_influence_rows(record: xr.Dataset, k: int, variable: str = "influence", seed: int = 0,
                           n_init: int = 10) -> pd.Series:
    """Cluster targets whose influence rows are alike (k-means on the rows, each row standardised).

    Returns
    -------
    pandas.Series
        Cluster label per target basin.
    """
    rows = record[variable].transpose("target", "source").values.astype(float)
    rows = np.where(np.isfinite(rows), rows, 0.0)
    scale = rows.std(axis=1, keepdims=True)
    rows = (rows - rows.mean(axis=1, keepdims=True)) / np.where(scale > 0, scale, 1.0)
    labels = kmeans(rows, k, seed=seed, n_init=n_init).labels
    return pd.Series(labels, index=pd.Index(record["target"].values.astype(str), name="basin"), name="cluster")
