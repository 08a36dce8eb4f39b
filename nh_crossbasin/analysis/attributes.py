"""Basin attributes for the analysis: region labels and gauge coordinates."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import pandas as pd

ID_COLUMNS = ("gauge_id", "basin_id", "basin")
COORDINATE_COLUMNS = (("gauge_lat", "gauge_lon"), ("lat", "lon"), ("latitude", "longitude"))


def load_attribute_table(path: Union[str, Path]) -> pd.DataFrame:
    """A basin attribute CSV, indexed by basin id as a string (leading zeros kept).

    The id column is ``gauge_id``, ``basin_id`` or ``basin`` if present, else the first column.
    """
    header = pd.read_csv(path, nrows=0).columns
    id_column = next((c for c in ID_COLUMNS if c in header), header[0])
    table = pd.read_csv(path, dtype={id_column: str}).set_index(id_column)
    table.index = table.index.astype(str)
    table.index.name = "basin"
    return table


def run_attributes(run_dir: Union[str, Path]) -> pd.DataFrame:
    """All attributes of the run's data set (every CSV in ``<data_dir>/attributes``, NH's generic loader).

    Raises
    ------
    NotImplementedError
        For datasets other than NH's ``generic`` layout.
    """
    from neuralhydrology.datasetzoo.genericdataset import load_attributes

    from nh_crossbasin.analysis.results import read_run_config

    cfg = read_run_config(run_dir)
    if cfg.dataset.lower() != "generic":
        raise NotImplementedError(f"Attributes are read from NH 'generic' datasets only (run uses '{cfg.dataset}'); "
                                  f"pass an attributes CSV instead.")
    table = load_attributes(Path(cfg.data_dir))
    table.index = table.index.astype(str)
    table.index.name = "basin"
    return table


def region_labels(attributes: pd.DataFrame, column: str) -> pd.Series:
    """The region label of each basin from ``column`` (whole-number floats such as ``3.0`` become ``3``).

    Raises
    ------
    KeyError
        If the column does not exist (the message lists similar columns).
    """
    if column not in attributes.columns:
        import difflib
        close = difflib.get_close_matches(column, [str(c) for c in attributes.columns], n=3)
        raise KeyError(f"No attribute column '{column}'" + (f"; did you mean {close}?" if close else "."))
    labels = attributes[column]
    if pd.api.types.is_float_dtype(labels) and (labels.dropna() % 1 == 0).all():
        labels = labels.astype("Int64")
    return labels.rename(column)


def coordinates(attributes: pd.DataFrame) -> Optional[Tuple[pd.Series, pd.Series]]:
    """``(latitude, longitude)`` per basin from the first known pair of columns, or None if there is none."""
    for lat, lon in COORDINATE_COLUMNS:
        if lat in attributes.columns and lon in attributes.columns:
            return attributes[lat].astype(float), attributes[lon].astype(float)
    return None
