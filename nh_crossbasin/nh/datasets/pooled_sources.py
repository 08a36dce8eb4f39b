"""The sources of a pooled dataset: the ``xb_pooled_sources`` config key, prefixed basin ids and name mapping.

A source is one NH dataset (its NH dataset name, ``data_dir`` and, for CAMELS-US-style datasets, ``forcings``) plus
two rename maps, ``{source name: common name}``, one for time series variables (dynamic inputs and targets) and one
for static attributes. The pooled config's ``dynamic_inputs``, ``target_variables`` and ``static_attributes`` use the
common names. A basin of source ``us`` with id ``01022500`` is ``us__01022500`` in the pooled basin files
(:data:`SEPARATOR` is ``__``: safe in file names, in NH's basin files and next to NH's ``_period`` suffixes).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from nh_crossbasin.config_keys import ConfigKey

SEPARATOR = "__"
POOLED_DATASET = "xb_pooled"
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*$")
REQUIRED_FIELDS = ("prefix", "dataset", "data_dir")
OPTIONAL_FIELDS = ("forcings", "rename", "rename_attributes")
UNSUPPORTED_SOURCE_DATASETS = {
    POOLED_DATASET: "pooled datasets do not nest",
    "hourly_camels_us": "its loader needs state from its own constructor; convert it to NH's generic layout",
}
KEY_NAME = "xb_pooled_sources"


@dataclass(frozen=True)
class Source:
    """One source dataset of ``dataset: xb_pooled``.

    Attributes
    ----------
    prefix : str
        Tells the source's basins apart in the pooled basin files (``<prefix>__<basin id>``).
    dataset : str
        NH dataset name of the source (``generic``, ``camels_us``, ``camels_de``, ...).
    data_dir : pathlib.Path
        The source's data directory (relative paths are relative to the working directory, as in NH).
    forcings : tuple of str
        NH's ``forcings`` for this source (CAMELS-US-style datasets); empty otherwise.
    rename : dict
        ``{source variable: common name}`` for time series variables.
    rename_attributes : dict
        ``{source attribute: common name}`` for static attributes.
    """

    prefix: str
    dataset: str
    data_dir: Path
    forcings: Tuple[str, ...] = ()
    rename: Dict[str, str] = field(default_factory=dict)
    rename_attributes: Dict[str, str] = field(default_factory=dict)

    def pooled_id(self, basin: str) -> str:
        """The pooled id of one of this source's basins."""
        return f"{self.prefix}{SEPARATOR}{basin}"

    def describe(self) -> str:
        """``source 'us' (dataset 'generic', data_dir ...)``, for messages."""
        return f"source '{self.prefix}' (dataset '{self.dataset}', data_dir {self.data_dir})"


def _mapping_problem(name: str, value: Any) -> Optional[str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return f"'{name}' must map source names to common names (strings to strings)"
    targets = list(value.values())
    doubles = sorted({t for t in targets if targets.count(t) > 1})
    if doubles:
        return f"'{name}' maps several source names onto {doubles}"
    return None


def _source_problem(index: int, spec: Any) -> Optional[str]:
    where = f"source #{index + 1}"
    if not isinstance(spec, Mapping):
        return f"{where} must be a mapping with keys {list(REQUIRED_FIELDS)} and optionally {list(OPTIONAL_FIELDS)}"
    unknown = [k for k in spec if k not in REQUIRED_FIELDS + OPTIONAL_FIELDS]
    missing = [k for k in REQUIRED_FIELDS if spec.get(k) in (None, "")]
    if unknown or missing:
        return (f"{where}: unknown keys {unknown}, missing keys {missing}; allowed keys: {list(REQUIRED_FIELDS)} "
                f"(required) and {list(OPTIONAL_FIELDS)}")
    if not all(isinstance(spec[k], str) for k in REQUIRED_FIELDS):
        return f"{where}: 'prefix', 'dataset' and 'data_dir' must be strings"
    if not PREFIX_PATTERN.match(spec["prefix"]):
        return (f"{where}: prefix '{spec['prefix']}' must be letters and digits, optionally joined by single '-' "
                f"or '_' (it must not contain '{SEPARATOR}')")
    reason = UNSUPPORTED_SOURCE_DATASETS.get(spec["dataset"].lower())
    if reason:
        return f"{where}: dataset '{spec['dataset']}' cannot be a source ({reason})"
    forcings = spec.get("forcings")
    if forcings is not None and not (isinstance(forcings, str) or (
            isinstance(forcings, list) and forcings and all(isinstance(f, str) for f in forcings))):
        return f"{where}: 'forcings' must be a string or a non-empty list of strings"
    for name in ("rename", "rename_attributes"):
        if spec.get(name) is not None:
            problem = _mapping_problem(name, spec[name])
            if problem:
                return f"{where}: {problem}"
    return None


def sources_problem(value: Any) -> Optional[str]:
    """Why ``value`` is not a valid ``xb_pooled_sources`` list, or None (the ``ConfigKey`` check)."""
    if not isinstance(value, list) or len(value) < 1:
        return "must be a list with one mapping per source dataset"
    for index, spec in enumerate(value):
        problem = _source_problem(index, spec)
        if problem:
            return problem
    prefixes = [spec["prefix"] for spec in value]
    doubles = sorted({p for p in prefixes if prefixes.count(p) > 1})
    return f"prefixes must be unique, {doubles} occur more than once" if doubles else None


POOLED_KEYS = (
    ConfigKey(KEY_NAME, None, "sources of `dataset: xb_pooled`, one mapping each: `prefix` (pooled basin ids are "
              "`<prefix>__<source basin id>`), `dataset` (NH dataset name), `data_dir`, optional `forcings` "
              "(camels_us-style sources), `rename` and `rename_attributes` (`{source name: common name}` for time "
              "series and static attributes; the config's variable lists use the common names). Inputs are "
              "normalised per source with its own training statistics, targets with those of all sources",
              types=(list,), nullable=True, check=sources_problem,
              allowed="a list of source mappings, or null (required for dataset xb_pooled)"),
)


def parse_sources(cfg) -> Dict[str, Source]:
    """The sources of a pooled config, by prefix (in config order).

    Raises
    ------
    ValueError
        If ``xb_pooled_sources`` is missing or invalid.
    """
    value = cfg.as_dict().get(KEY_NAME) if hasattr(cfg, "as_dict") else cfg.get(KEY_NAME)
    if value is None:
        raise ValueError(f"Config key '{KEY_NAME}' is required for 'dataset: {POOLED_DATASET}': list the source "
                         f"datasets, e.g. [{{prefix: us, dataset: generic, data_dir: /data/camels_us}}, "
                         f"{{prefix: de, dataset: camels_de, data_dir: /data/CAMELS_DE, rename: {{...}}}}].")
    POOLED_KEYS[0].validate(value)
    sources = {}
    for spec in value:
        forcings = spec.get("forcings") or ()
        sources[spec["prefix"]] = Source(
            prefix=spec["prefix"], dataset=spec["dataset"].lower(), data_dir=Path(spec["data_dir"]),
            forcings=(forcings,) if isinstance(forcings, str) else tuple(forcings),
            rename=dict(spec.get("rename") or {}), rename_attributes=dict(spec.get("rename_attributes") or {}))
    return sources


def split_basin_id(basin: str, sources: Mapping[str, Source]) -> Tuple[Source, str]:
    """``(source, source basin id)`` of a pooled basin id.

    Raises
    ------
    ValueError
        If the id has no known prefix.
    """
    prefix, separator, source_basin = str(basin).partition(SEPARATOR)
    if not separator or not source_basin or prefix not in sources:
        raise ValueError(f"Basin '{basin}' belongs to no source of config key '{KEY_NAME}': pooled basin ids are "
                         f"'<prefix>{SEPARATOR}<basin id of the source>' with prefix one of {list(sources)} (write "
                         f"the basin files with nh_crossbasin.nh.datasets.pooled_sources.write_pooled_basin_file).")
    return sources[prefix], source_basin


def write_pooled_basin_file(path, source_basin_files: Mapping[str, Any]) -> List[str]:
    """Write a pooled basin file from one NH basin file per source.

    Parameters
    ----------
    path : str or pathlib.Path
        The file to write (parent folders are created).
    source_basin_files : mapping
        ``{prefix: basin file of that source}``, the basin files holding the sources' own basin ids.

    Returns
    -------
    list of str
        The pooled ids written, sorted (NH sorts basin files when it reads them).
    """
    ids = []
    for prefix, basin_file in source_basin_files.items():
        if not PREFIX_PATTERN.match(prefix):
            raise ValueError(f"Prefix '{prefix}' must be letters and digits, optionally joined by single '-' or '_'.")
        ids += [f"{prefix}{SEPARATOR}{line.strip()}" for line in Path(basin_file).read_text().splitlines()
                if line.strip()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{basin}\n" for basin in sorted(ids)))
    return sorted(ids)


class SourceConfigView:
    """What a source's NH dataset class sees as ``self.cfg``: the source's ``dataset``, ``data_dir`` and
    ``forcings``; every other key is the pooled config's."""

    def __init__(self, cfg, source: Source):
        self._cfg = cfg
        self._source = source

    @property
    def dataset(self) -> str:
        return self._source.dataset

    @property
    def data_dir(self) -> Path:
        return self._source.data_dir

    @property
    def forcings(self) -> List[str]:
        return list(self._source.forcings)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_cfg", "_source"):
            raise AttributeError(name)
        return getattr(self._cfg, name)


def required_variables(cfg, is_train: bool, provided: Sequence[str] = ()) -> List[str]:
    """Time series variables (common names) every basin must provide before NH adds its derived columns.

    NH itself creates lagged (``<name>_shift<n>``) and duplicated (``<name>_copy<n>``) features and reads
    ``additional_feature_files`` (``provided``); targets may be absent outside training (NH fills them with NaN).
    """
    dynamic = cfg.dynamic_inputs
    names = [i for group in dynamic.values() for i in group] if isinstance(dynamic, dict) else \
        list(cfg.dynamic_inputs_flattened)
    names += cfg.evolving_attributes + cfg.mass_inputs + cfg.dynamic_conceptual_inputs
    if is_train:
        names += cfg.target_variables
    derived = set(cfg.autoregressive_inputs)
    for feature, shifts in cfg.lagged_features.items():
        derived |= {f"{feature}_shift{s}" for s in (shifts if isinstance(shifts, list) else [shifts])}
    for feature, copies in cfg.duplicate_features.items():
        derived |= {f"{feature}_copy{n}" for n in range(1, copies + 1)}
    names += list(cfg.lagged_features) + list(cfg.duplicate_features)
    return sorted({n for n in names if n not in derived and n not in set(provided)})


def to_common_names(frame, mapping: Mapping[str, str], required: Sequence[str], source: Source, what: str,
                    key: str, where: str = ""):
    """Rename a source's columns to the common names and check that every required common name is there.

    Parameters
    ----------
    frame : pandas.DataFrame
        The source's data, columns in source names.
    mapping : mapping
        ``{source name: common name}``.
    required : sequence of str
        Common names that must be present afterwards.
    source : Source
        For messages.
    what, key : str
        ``"variable"``/``"attribute"`` and the rename key (``"rename"``/``"rename_attributes"``), for messages.
    where : str, optional
        Extra context for messages (e.g. the basin).

    Raises
    ------
    ValueError
        If a required name is missing (naming the source, the variable and the available variables) or two
        columns end up with the same name.
    """
    renamed = frame.rename(columns=dict(mapping))
    doubles = sorted(set(renamed.columns[renamed.columns.duplicated()]))
    if doubles:
        raise ValueError(f"{source.describe()}{where}: after '{key}' several {what}s are named {doubles}; the "
                         f"source already has a {what} of that name; rename that one too.")
    missing = [name for name in required if name not in renamed.columns]
    if missing:
        inverse = {common: own for own, common in mapping.items()}
        looked_for = [f"'{n}'" + (f" (source name '{inverse[n]}')" if n in inverse else "") for n in missing]
        raise ValueError(f"{source.describe()}{where}: {what}(s) {', '.join(looked_for)} not found. Available "
                         f"{what}s of this source: {list(map(str, frame.columns))}. Map source names onto the "
                         f"config's names with '{key}' of this source in config key '{KEY_NAME}'.")
    return renamed
