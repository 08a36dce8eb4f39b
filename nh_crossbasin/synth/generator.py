"""Generate a NeuralHydrology ``generic`` dataset of synthetic basins with hidden regimes.

Layout written to ``out_dir``::

    time_series/<basin_id>.nc      daily forcings + streamflow (netCDF3, coordinate ``date``)
    attributes/attributes.csv      static attributes, first column ``basin_id``
    basins_all.txt                 all basin ids
    basins_regime_<k>.txt          basin ids of regime k
    ground_truth.csv               regime and true model parameters (never give this to a model)
    synth_meta.json                generator arguments, period split, variable names, file list
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from . import hydrology, weather

SYNTH_VERSION = "1.0.0"
SPINUP_YEARS = 3
HYDROLOGICAL_YEAR_START_MONTH = 10
PERIOD_FRACTIONS = {"train": 0.6, "validation": 0.2, "test": 0.2}
DYNAMIC_INPUTS = ("precipitation", "temperature", "pet")
TARGET_VARIABLE = "streamflow"
VARIABLE_UNITS = {"precipitation": "mm/d", "temperature": "degC", "pet": "mm/d", "streamflow": "mm/d"}
STATIC_ATTRIBUTES = ("p_mean", "pet_mean", "aridity", "p_seasonality", "frac_snow", "high_prec_freq", "t_mean",
                     "elev_mean", "slope_mean", "soil_depth", "forest_frac", "area")
META_FILE = "synth_meta.json"
DATE_FORMAT = "%d/%m/%Y"
TWIN_CLIMATE_SPREAD = 0.3  # twin mode: one climatic region (latitude, elevation and aridity spreads × 0.3)
RNG_STREAMS = ("landscape", "weather_parameters", "weather", "forest", "regimes", "transfer_weights",
               "parameter_noise", "observation_errors")


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_basins` wrote.

    Attributes
    ----------
    out_dir : pathlib.Path
        Dataset root (use as NeuralHydrology ``data_dir``).
    basins : list[str]
        All basin ids.
    regimes : dict[str, int]
        Hidden regime of each basin.
    train_start_date, train_end_date, validation_start_date, validation_end_date, test_start_date, test_end_date : str
        Period boundaries (inclusive) as ``DD/MM/YYYY``, as expected by a NeuralHydrology config.
    dynamic_inputs : list[str]
        Forcing variable names in the netCDF files.
    target_variables : list[str]
        Target variable names (``["streamflow"]``).
    static_attributes : list[str]
        Attribute columns of ``attributes/attributes.csv``.
    elapsed_s : float
        Wall-clock time of the generation.
    """

    out_dir: Path
    basins: list[str]
    regimes: dict[str, int]
    train_start_date: str
    train_end_date: str
    validation_start_date: str
    validation_end_date: str
    test_start_date: str
    test_end_date: str
    dynamic_inputs: list[str] = field(default_factory=lambda: list(DYNAMIC_INPUTS))
    target_variables: list[str] = field(default_factory=lambda: [TARGET_VARIABLE])
    static_attributes: list[str] = field(default_factory=lambda: list(STATIC_ATTRIBUTES))
    elapsed_s: float = 0.0

    @property
    def n_regimes(self) -> int:
        """Number of regimes."""
        return max(self.regimes.values()) + 1 if self.regimes else 0

    def basins_of_regime(self, regime: int) -> list[str]:
        """Basin ids of one regime, in id order."""
        return [b for b in self.basins if self.regimes[b] == regime]

    def basin_file(self, regime: int | None = None) -> Path:
        """Path of the basin list of one regime, or of all basins if ``regime`` is None."""
        return self.out_dir / ("basins_all.txt" if regime is None else f"basins_regime_{regime}.txt")

    def nh_config_entries(self, regime: int | None = None) -> dict:
        """Config entries for a NeuralHydrology run on all basins or on one regime."""
        basin_file = str(self.basin_file(regime))
        entries = {"dataset": "generic", "data_dir": str(self.out_dir), "train_basin_file": basin_file,
                   "validation_basin_file": basin_file, "test_basin_file": basin_file,
                   "dynamic_inputs": list(self.dynamic_inputs), "target_variables": list(self.target_variables),
                   "static_attributes": list(self.static_attributes)}
        for period in PERIOD_FRACTIONS:
            entries[f"{period}_start_date"] = getattr(self, f"{period}_start_date")
            entries[f"{period}_end_date"] = getattr(self, f"{period}_end_date")
        return entries


def basin_ids(n_basins: int) -> list[str]:
    """Zero-padded basin ids ``synth_000`` ... (at least three digits)."""
    width = max(3, len(str(n_basins - 1)))
    return [f"synth_{i:0{width}d}" for i in range(n_basins)]


def assign_regimes(n_basins: int, n_regimes: int, rng: np.random.Generator) -> np.ndarray:
    """Balanced random regime labels, independent of any attribute (sizes differ by at most one)."""
    return rng.permutation(np.arange(n_basins) % n_regimes)


def split_periods(first_day: pd.Timestamp, last_day: pd.Timestamp) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """Split a record into train / validation / test (about 60 / 20 / 20 %).

    Split points are moved to the nearest start of a hydrological year
    (1 October) when one lies within half a year of the exact fraction;
    otherwise the exact day is used.

    Parameters
    ----------
    first_day, last_day : pandas.Timestamp
        First and last day of the record (inclusive).

    Returns
    -------
    dict[str, tuple[pandas.Timestamp, pandas.Timestamp]]
        Period name -> (first day, last day), contiguous and non-overlapping.
    """
    n_days = (last_day - first_day).days + 1
    year_starts = pd.date_range(first_day, last_day, freq="D")
    year_starts = year_starts[(year_starts.month == HYDROLOGICAL_YEAR_START_MONTH) & (year_starts.day == 1)]
    boundaries, cumulative = [first_day], 0.0
    for fraction in list(PERIOD_FRACTIONS.values())[:-1]:
        cumulative += fraction
        exact = first_day + pd.Timedelta(days=int(round(cumulative * n_days)))
        candidates = [d for d in year_starts if boundaries[-1] < d < last_day and abs((d - exact).days) <= 183]
        boundaries.append(min(candidates, key=lambda d: abs((d - exact).days)) if candidates else exact)
    boundaries.append(last_day + pd.Timedelta(days=1))
    return {name: (boundaries[i], boundaries[i + 1] - pd.Timedelta(days=1))
            for i, name in enumerate(PERIOD_FRACTIONS)}


def sample_landscape(rng: np.random.Generator, n_basins: int, spread: float = 1.0) -> pd.DataFrame:
    """Draw hidden latitude and physiographic attributes (elevation, slope, soil depth, area).

    Slope grows with elevation and soil depth shrinks with slope, so the
    attributes are correlated as in real data sets; area is a pure distractor.
    ``spread`` < 1 narrows latitude (around 40 °N) and elevation (around 450 m, in log space): one climatic region.
    """
    elevation = np.clip(np.exp(rng.normal(np.log(450.0), 0.9, n_basins)), 10.0, 3200.0)
    if spread != 1.0:
        elevation = np.exp(np.log(450.0) + spread * (np.log(elevation) - np.log(450.0)))
    slope = np.clip(np.exp(rng.normal(np.log(25.0) + 0.5 * np.log(elevation / 450.0), 0.6)), 1.0, 250.0)
    slope_z = (np.log(slope) - np.log(25.0)) / 0.8
    soil_depth = np.clip(1.25 - 0.25 * slope_z + rng.normal(0.0, 0.5, n_basins), 0.3, 2.5)
    latitude = rng.uniform(30.0, 50.0, n_basins)
    if spread != 1.0:
        latitude = 40.0 + spread * (latitude - 40.0)
    return pd.DataFrame({
        "latitude": latitude,
        "elev_mean": elevation,
        "slope_mean": slope,
        "soil_depth": soil_depth,
        "area": np.clip(np.exp(rng.normal(np.log(300.0), 1.0, n_basins)), 5.0, 5000.0),
    })


def sample_forest_fraction(rng: np.random.Generator, aridity: np.ndarray) -> np.ndarray:
    """Forest cover fraction, higher in humid basins."""
    logit = 0.6 - 1.5 * (aridity - 1.0) + rng.normal(0.0, 1.0, len(aridity))
    return 1.0 / (1.0 + np.exp(-logit))


def _check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless ``overwrite``; then remove only files a previous run listed."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"Output folder {out_dir} exists and is not empty; pass overwrite=True to replace "
                              f"the files written by generate_basins.")
    meta_path = out_dir / META_FILE
    if meta_path.is_file():
        previous_files = json.loads(meta_path.read_text()).get("files", [])
        root = out_dir.resolve()
        for relative in previous_files + [META_FILE]:
            path = (out_dir / relative).resolve()
            if path.is_file() and root in path.parents:
                path.unlink()


def _write_time_series(path: Path, basin: str, dates: pd.DatetimeIndex, series: dict[str, np.ndarray]) -> None:
    """Write one basin's daily series as a deterministic netCDF3 file."""
    data_vars = {name: ("date", values.astype(np.float32), {"units": VARIABLE_UNITS[name]})
                 for name, values in series.items()}
    dataset = xr.Dataset(data_vars, coords={"date": dates.values.astype("datetime64[ns]")},
                         attrs={"basin_id": basin, "source": f"nh_crossbasin.synth {SYNTH_VERSION}"})
    encoding = {name: {"dtype": "float32", "_FillValue": np.float32(np.nan)} for name in series}
    encoding["date"] = {"units": f"days since {dates[0]:%Y-%m-%d}", "calendar": "proleptic_gregorian",
                        "dtype": "int32"}
    dataset.to_netcdf(path, engine="scipy", format="NETCDF3_64BIT", encoding=encoding)


def twin_layout(n_basins: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pair index and regime of each basin in twin mode: basins ``2k`` and ``2k+1`` form pair ``k`` and get opposite
    regimes, which of the two is regime 0 drawn at random per pair."""
    pair = np.arange(n_basins) // 2
    first = rng.integers(0, 2, n_basins // 2)
    regimes = np.where(np.arange(n_basins) % 2 == 0, first[pair], 1 - first[pair])
    return pair, regimes


def generate_basins(out_dir, n_basins: int = 100, n_regimes: int = 2, years: int = 20, seed: int = 0,
                    start_date: str = "1990-01-01", overwrite: bool = False, twins: bool = False,
                    twin_contrast: float = 1.0) -> SynthSummary:
    """Generate synthetic CAMELS-like basins whose attribute-to-parameter mapping depends on a hidden regime.

    Classic mode: each basin has its own attributes and climate; regime 1 negates regime 0's attribute weights, so
    the regimes conflict, but an LSTM that sees the attributes can still tell every training basin apart.

    Twin mode (``twins=True``): the basins of one climatic region (latitude, elevation and aridity spreads narrowed
    by :data:`TWIN_CLIMATE_SPREAD`) come in pairs (``synth_000``/``synth_001``, ...) that share *identical* static
    attributes, climate parameters and parameter noise, each with its own independent weather, and belong to
    opposite regimes set by hidden geology: regime 0 flashy and gaining groundwater from beyond its divide, regime 1
    damped and losing it (:data:`hydrology.TWIN_REGIME_OFFSETS`, :data:`hydrology.TWIN_EXCHANGE`). No model input
    tells the twins' regimes apart, so one pooled model must average two responses for the same inputs: pooling
    truly hurts, and regime-wise training is the ground truth an influence method can find.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Target folder (created if missing).
    n_basins : int
        Number of basins.
    n_regimes : int
        Number of hidden regimes (>= 1); regime 0 and 1 have opposed transfer functions.
    years : int
        Record length in calendar years (a spin-up before ``start_date`` is simulated but not written).
    seed : int
        Seed; identical arguments give byte-identical files.
    start_date : str
        First day of the record (ISO format).
    overwrite : bool
        Allow a non-empty ``out_dir``; only files written by this generator are replaced.
    twins : bool
        Twin mode (see above); needs an even ``n_basins`` and ``n_regimes == 2``.
    twin_contrast : float
        Twin mode: factor on the regime offsets (0: the twins' regimes behave alike; 1: the reference contrast).

    Returns
    -------
    SynthSummary

    Raises
    ------
    FileExistsError
        If ``out_dir`` is non-empty and ``overwrite`` is False.
    ValueError
        For invalid sizes.
    """
    started = time.perf_counter()
    if n_basins < 1 or n_regimes < 1 or years < 1 or n_regimes > n_basins:
        raise ValueError(f"Need n_basins >= n_regimes >= 1 and years >= 1, got {n_basins=}, {n_regimes=}, {years=}")
    if twins and (n_regimes != 2 or n_basins % 2):
        raise ValueError(f"Twin mode needs an even number of basins and exactly 2 regimes, got {n_basins=}, "
                         f"{n_regimes=}")
    out_dir = Path(out_dir)
    _check_output_dir(out_dir, overwrite)
    rngs = dict(zip(RNG_STREAMS, (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(
        len(RNG_STREAMS)))))

    first_day = pd.Timestamp(start_date)
    last_day = first_day + pd.DateOffset(years=years) - pd.Timedelta(days=1)
    all_dates = pd.date_range(first_day - pd.DateOffset(years=SPINUP_YEARS), last_day, freq="D")
    record = all_dates >= first_day
    dates = all_dates[record]

    basins = basin_ids(n_basins)
    if twins:
        pair, regimes = twin_layout(n_basins, rngs["regimes"])
        n_draws = n_basins // 2
    else:
        pair, n_draws = np.arange(n_basins), n_basins
    first = np.unique(pair, return_index=True)[1]  # the first basin of each pair (every basin in classic mode)
    spread = TWIN_CLIMATE_SPREAD if twins else 1.0
    landscape = sample_landscape(rngs["landscape"], n_draws, spread).iloc[pair].reset_index(drop=True)
    drawn_weather = weather.sample_weather_parameters(rngs["weather_parameters"],
                                                      landscape["latitude"].to_numpy()[first],
                                                      landscape["elev_mean"].to_numpy()[first], spread)
    weather_params = weather.WeatherParameters(**{k: np.asarray(v)[pair] for k, v in vars(drawn_weather).items()})
    forcings = weather.generate_weather(weather_params, all_dates, rngs["weather"])
    climate = weather.climate_attributes(*(forcings[name][record] for name in DYNAMIC_INPUTS), dates)
    if twins:  # the twins' attributes are identical: the climate indices of the pair's two weather series, averaged
        climate = {k: pd.Series(v).groupby(pair).transform("mean").to_numpy() for k, v in climate.items()}
    landscape["forest_frac"] = sample_forest_fraction(rngs["forest"], climate["aridity"][first])[pair]
    physiography = {name: landscape[name].to_numpy() for name in landscape.columns if name != "latitude"}
    attributes = pd.DataFrame({**climate, **physiography}, index=pd.Index(basins, name="basin_id"))
    attributes = attributes[list(STATIC_ATTRIBUTES)]

    if twins:
        weights = hydrology.regime_transfer_weights(1, rngs["transfer_weights"]) * 2  # shared attribute weights
        parameters = hydrology.parameters_from_attributes(attributes, regimes, weights, rngs["parameter_noise"],
                                                          noise_group=pair,
                                                          regime_offsets={k: v * twin_contrast for k, v in
                                                                          hydrology.TWIN_REGIME_OFFSETS.items()})
    else:
        regimes = assign_regimes(n_basins, n_regimes, rngs["regimes"])
        weights = hydrology.regime_transfer_weights(n_regimes, rngs["transfer_weights"])
        parameters = hydrology.parameters_from_attributes(attributes, regimes, weights, rngs["parameter_noise"])
    simulated = hydrology.simulate_streamflow(*(forcings[name] for name in DYNAMIC_INPUTS), parameters)
    streamflow = simulated["streamflow"][record]
    if twins:  # intercatchment groundwater exchange: regime 0 gains, regime 1 loses
        streamflow = streamflow * (1.0 + twin_contrast * hydrology.TWIN_EXCHANGE * np.where(regimes == 0, 1.0, -1.0))
    observed = hydrology.add_observation_errors(streamflow, rngs["observation_errors"])

    # ----- write files
    (out_dir / "time_series").mkdir(parents=True, exist_ok=True)
    (out_dir / "attributes").mkdir(parents=True, exist_ok=True)
    written = []
    for i, basin in enumerate(basins):
        series = {name: forcings[name][record, i] for name in DYNAMIC_INPUTS}
        series[TARGET_VARIABLE] = observed[:, i]
        _write_time_series(out_dir / "time_series" / f"{basin}.nc", basin, dates, series)
        written.append(f"time_series/{basin}.nc")

    attributes.to_csv(out_dir / "attributes" / "attributes.csv", float_format="%.6g", lineterminator="\n")
    (out_dir / "basins_all.txt").write_text("\n".join(basins) + "\n")
    written += ["attributes/attributes.csv", "basins_all.txt"]
    for regime in range(n_regimes):
        (out_dir / f"basins_regime_{regime}.txt").write_text(
            "".join(f"{b}\n" for b, r in zip(basins, regimes) if r == regime))
        written.append(f"basins_regime_{regime}.txt")

    truth = pd.DataFrame({"regime": regimes, **({"pair": pair} if twins else {}),
                          "latitude": landscape["latitude"].to_numpy(),
                          **{name: parameters[name] for name in hydrology.PARAMETER_NAMES}},
                         index=pd.Index(basins, name="basin_id"))
    truth.to_csv(out_dir / "ground_truth.csv", float_format="%.6g", lineterminator="\n")
    written.append("ground_truth.csv")

    periods = split_periods(first_day, last_day)
    period_strings = {f"{name}_{edge}_date": day.strftime(DATE_FORMAT)
                      for name, bounds in periods.items() for edge, day in zip(("start", "end"), bounds)}
    meta = {
        "generator": "nh_crossbasin.synth", "version": SYNTH_VERSION,
        "arguments": {"n_basins": n_basins, "n_regimes": n_regimes, "years": years, "seed": seed,
                      "start_date": first_day.strftime("%Y-%m-%d"), "twins": bool(twins),
                      **({"twin_contrast": float(twin_contrast)} if twins else {})},
        "periods": {name: [a.strftime("%Y-%m-%d"), b.strftime("%Y-%m-%d")] for name, (a, b) in periods.items()},
        "nh_period_dates": period_strings,
        "dynamic_inputs": list(DYNAMIC_INPUTS), "target_variables": [TARGET_VARIABLE],
        "static_attributes": list(STATIC_ATTRIBUTES), "units": VARIABLE_UNITS,
        "regime_sizes": {str(k): int((regimes == k).sum()) for k in range(n_regimes)},
        "key_attribute": hydrology.KEY_ATTRIBUTE,
        "transfer_attributes": {k: list(v) for k, v in hydrology.TRANSFER_ATTRIBUTES.items()},
        "transfer_weights": weights, "spinup_years": SPINUP_YEARS,
        "twin_regime_offsets": {k: v * twin_contrast for k, v in hydrology.TWIN_REGIME_OFFSETS.items()}
        if twins else None,
        "files": written,
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    return SynthSummary(out_dir=out_dir, basins=basins, regimes=dict(zip(basins, (int(r) for r in regimes))),
                        **period_strings, elapsed_s=time.perf_counter() - started)
