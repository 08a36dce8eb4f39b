"""Region schemes: which basin belongs to which region, on one or more hierarchical levels.

A region spec names attribute columns, coarse to fine, separated by ``>``: ``huc_02`` or
``clz_cl_smj>tbi_cl_smj`` (HydroATLAS climate zone, then terrestrial biome), read from the dataset's own attributes
through NH's attribute loading; or a CSV file with the basin id in the first column: ``regions.csv:coarse>fine``.
On finer levels a region is identified by its whole path (``11/4``), so that equal codes under different parents
stay apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import pandas as pd

SEPARATOR = "/"


@dataclass(frozen=True)
class RegionScheme:
    """Region membership of basins.

    Attributes
    ----------
    levels : tuple of str
        Column names, coarse to fine.
    table : pd.DataFrame
        Indexed by basin id; one string column per level holding the region path at that level.
    """

    levels: tuple
    table: pd.DataFrame

    def regions(self, level: int = 0) -> List[str]:
        """Region ids at ``level`` (0 = coarsest), sorted."""
        return sorted(self.table.iloc[:, level].unique())

    def members(self, region: str, level: int = 0) -> List[str]:
        """Basins of ``region`` at ``level``, in the scheme's basin order."""
        column = self.table.iloc[:, level]
        return list(column.index[column == region])

    @staticmethod
    def parent(region: str) -> str:
        """The region one level up that contains ``region`` (its path without the last part)."""
        return region.rsplit(SEPARATOR, 1)[0]


def parse_spec(spec: str) -> tuple:
    """Split a spec into ``(csv_path or None, [columns])``."""
    path, columns = None, spec
    if ":" in spec and spec.split(":", 1)[0].endswith(".csv"):
        path, columns = spec.split(":", 1)
    levels = [c.strip() for c in columns.split(">") if c.strip()]
    if not levels:
        raise ValueError(f"--regions {spec!r}: name at least one column, e.g. 'huc_02' or 'file.csv:coarse>fine'.")
    return (Path(path) if path else None), levels


def region_scheme(spec: str, basins: Sequence[str], attributes: pd.DataFrame = None) -> RegionScheme:
    """Build the scheme of ``basins`` from a spec.

    Parameters
    ----------
    spec : str
        See the module docstring.
    basins : sequence of str
        The basins to place (all must have every level).
    attributes : pd.DataFrame, optional
        Basin-indexed attributes to take the columns from when the spec names no CSV file.

    Raises
    ------
    ValueError
        If a column is missing (the message lists the available ones) or a basin has no region.
    """
    path, levels = parse_spec(spec)
    if path is not None:
        if not path.is_file():
            raise ValueError(f"--regions: region file {path} does not exist.")
        source = pd.read_csv(path, dtype=str)
        source = source.set_index(source.columns[0])
        where = str(path)
    else:
        if attributes is None:
            raise ValueError("--regions names attribute columns but no attributes were given.")
        source, where = attributes, "the dataset's attributes"
    missing = [c for c in levels if c not in source.columns]
    if missing:
        raise ValueError(f"--regions: columns {missing} are not in {where}; available: {sorted(source.columns)[:60]}")
    table = pd.DataFrame(index=pd.Index([str(b) for b in basins], name="basin"))
    path_so_far = None
    for column in levels:
        values = source[column].reindex(table.index)
        if values.isna().any():
            raise ValueError(f"--regions: basins without a value in column '{column}' of {where}: "
                             f"{list(values.index[values.isna()][:10])}")
        values = values.map(_code)
        path_so_far = values if path_so_far is None else path_so_far + SEPARATOR + values
        table[column] = path_so_far
    return RegionScheme(levels=tuple(levels), table=table)


def _code(value) -> str:
    """Region codes as clean strings (``11.0`` -> ``11``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().replace(SEPARATOR, "-")


def region_centroids(scheme: RegionScheme, attributes: pd.DataFrame, columns: Sequence[str],
                     level: int) -> pd.DataFrame:
    """Mean of the standardised ``columns`` over each region's basins (rows: regions at ``level``)."""
    values = attributes.loc[scheme.table.index, list(columns)].astype(float)
    standardised = (values - values.mean()) / values.std(ddof=0).replace(0, 1)
    return standardised.groupby(scheme.table.iloc[:, level].values).mean()

