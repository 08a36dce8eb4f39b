"""Regime-dependent transfer functions and a vectorised HBV-like conceptual model.

Model parameters are derived from static basin attributes through transfer
functions ``theta = lower + (upper - lower) * sigmoid(intercept + w . z + noise)``
(in log space for strictly positive, skewed parameters), where ``z`` are
standardised attributes. The weights ``w`` of the soil and routing parameters
differ between hidden regimes: regime 0 uses the reference weights, regime 1
the negated reference weights, and any further regime random weights of the
same magnitude. Snow parameters are shared by all regimes.

The conceptual model loops over days and is vectorised over basins.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# attribute -> (centre, scale, use_log): z = (f(x) - centre) / scale
TRANSFER_ATTRIBUTES: dict[str, tuple[float, float, bool]] = {
    "soil_depth": (1.25, 0.6, False),
    "forest_frac": (0.5, 0.25, False),
    "slope_mean": (float(np.log(25.0)), 0.8, True),
}
KEY_ATTRIBUTE = "soil_depth"
PARAMETER_NOISE_STD = 0.25


@dataclass(frozen=True)
class TransferFunction:
    """Maps standardised attributes to one model parameter.

    Attributes
    ----------
    lower, upper : float
        Parameter range.
    log_scale : bool
        Interpolate between ``lower`` and ``upper`` in log space.
    weights : dict[str, float]
        Reference (regime 0) weight per transfer attribute on the logit scale.
    regime_specific : bool
        If True, the weights change between regimes; otherwise all regimes share them.
    intercept : float
        Logit-scale offset.
    noise_std : float
        Standard deviation of per-basin logit noise (heterogeneity not explained by attributes).
    """

    lower: float
    upper: float
    log_scale: bool
    weights: dict[str, float] = field(default_factory=dict)
    regime_specific: bool = True
    intercept: float = 0.0
    noise_std: float = PARAMETER_NOISE_STD

    def evaluate(self, logit: np.ndarray) -> np.ndarray:
        """Turn logit-scale values into parameter values within ``[lower, upper]``."""
        fraction = 1.0 / (1.0 + np.exp(-logit))
        if self.log_scale:
            return np.exp(np.log(self.lower) + fraction * (np.log(self.upper) - np.log(self.lower)))
        return self.lower + fraction * (self.upper - self.lower)


#: Reference transfer functions (regime 0). Regime 1 negates all regime-specific weights.
TRANSFER_FUNCTIONS: dict[str, TransferFunction] = {
    "snow_threshold_degc": TransferFunction(-1.0, 1.0, False, {}, regime_specific=False, noise_std=1.2),
    "degree_day_factor": TransferFunction(1.5, 5.0, False, {"forest_frac": -1.0}, regime_specific=False),
    "field_capacity_mm": TransferFunction(40.0, 450.0, True,
                                          {"soil_depth": 2.2, "forest_frac": 0.8, "slope_mean": -0.5}),
    "beta": TransferFunction(1.0, 5.0, True, {"soil_depth": 1.6, "forest_frac": 0.5}),
    "et_limit_fraction": TransferFunction(0.4, 0.95, False, {"forest_frac": 0.8, "soil_depth": 0.5}),
    "k_fast_per_day": TransferFunction(0.08, 0.7, True,
                                       {"slope_mean": 1.5, "forest_frac": -0.8, "soil_depth": -0.5}),
    "k_slow_per_day": TransferFunction(0.004, 0.12, True, {"slope_mean": 1.0, "soil_depth": -1.2}),
    "max_percolation_mm": TransferFunction(0.2, 5.0, True, {"soil_depth": 1.5, "slope_mean": -0.8}),
}
PARAMETER_NAMES: tuple[str, ...] = tuple(TRANSFER_FUNCTIONS)

#: Twin mode: logit offsets of regime 0 (a flashy response: small soil store, fast reservoirs, little
#: percolation); regime 1 takes the negated offsets (a damped, baseflow-dominated response). Both regimes share the
#: reference attribute weights, so the two basins of a twin pair (same attributes, same parameter noise) differ by
#: these offsets alone, whatever their attributes.
TWIN_REGIME_OFFSETS: dict[str, float] = {
    "field_capacity_mm": -1.2,
    "beta": -0.8,
    "k_fast_per_day": 1.2,
    "k_slow_per_day": 1.0,
    "max_percolation_mm": -1.0,
}
#: Twin mode: intercatchment groundwater exchange. Regime 0 basins gain water from beyond their topographic divide,
#: regime 1 basins lose it: streamflow is scaled by ``1 + TWIN_EXCHANGE`` (regime 0) or ``1 - TWIN_EXCHANGE``.
TWIN_EXCHANGE = 0.3


def standardize_transfer_attributes(attributes: pd.DataFrame) -> dict[str, np.ndarray]:
    """Standardise the attributes used by the transfer functions with fixed reference constants.

    Parameters
    ----------
    attributes : pandas.DataFrame
        Basin attributes; must contain the columns in ``TRANSFER_ATTRIBUTES``.

    Returns
    -------
    dict[str, numpy.ndarray]
        Attribute name -> standardised values (roughly within [-2, 2]).
    """
    standardized = {}
    for name, (centre, scale, use_log) in TRANSFER_ATTRIBUTES.items():
        values = attributes[name].to_numpy(dtype=float)
        standardized[name] = ((np.log(values) if use_log else values) - centre) / scale
    return standardized


def regime_transfer_weights(n_regimes: int, rng: np.random.Generator) -> list[dict[str, dict[str, float]]]:
    """Transfer-function weights for every regime.

    Regime 0 uses the reference weights, regime 1 their negation (strong
    conflict). Regimes >= 2 draw random weight directions with the same norm as
    the reference for each regime-specific parameter.

    Parameters
    ----------
    n_regimes : int
        Number of regimes (>= 1).
    rng : numpy.random.Generator
        Random generator for the weights of regimes >= 2.

    Returns
    -------
    list[dict[str, dict[str, float]]]
        ``weights[regime][parameter][attribute]``.
    """
    attribute_names = list(TRANSFER_ATTRIBUTES)
    all_weights = []
    for regime in range(n_regimes):
        regime_weights = {}
        for parameter, transfer in TRANSFER_FUNCTIONS.items():
            reference = np.array([transfer.weights.get(a, 0.0) for a in attribute_names])
            if not transfer.regime_specific or regime == 0:
                weights = reference
            elif regime == 1:
                weights = -reference
            else:
                direction = rng.standard_normal(len(attribute_names))
                weights = direction / np.linalg.norm(direction) * np.linalg.norm(reference)
            regime_weights[parameter] = {a: round(float(w), 6) for a, w in zip(attribute_names, weights)}
        all_weights.append(regime_weights)
    return all_weights


def parameters_from_attributes(attributes: pd.DataFrame, regimes: np.ndarray,
                               weights: list[dict[str, dict[str, float]]],
                               rng: np.random.Generator, noise_group: np.ndarray | None = None,
                               regime_offsets: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Evaluate the regime-dependent transfer functions for every basin.

    Parameters
    ----------
    attributes : pandas.DataFrame
        Basin attributes (rows in basin order).
    regimes : numpy.ndarray
        Integer regime of each basin, shape ``[n_basins]``.
    weights : list
        Output of :func:`regime_transfer_weights`.
    rng : numpy.random.Generator
        Random generator for per-basin parameter noise (heterogeneity not explained by attributes).
    noise_group : numpy.ndarray, optional
        Integer group of each basin (``[n_basins]``, groups ``0..G-1``): basins of one group share their parameter
        noise (twin pairs). Default: every basin draws its own.
    regime_offsets : dict[str, float], optional
        Logit offset per parameter added for regime 0 and subtracted for regime 1 (twin mode,
        :data:`TWIN_REGIME_OFFSETS`).

    Returns
    -------
    dict[str, numpy.ndarray]
        Parameter name -> values, shape ``[n_basins]``.
    """
    z = standardize_transfer_attributes(attributes)
    n_basins = len(regimes)
    group = np.arange(n_basins) if noise_group is None else np.asarray(noise_group)
    n_groups = int(group.max()) + 1
    sign = np.where(np.asarray(regimes) == 0, 1.0, -1.0)
    parameters = {}
    for name, transfer in TRANSFER_FUNCTIONS.items():
        logit = np.full(n_basins, transfer.intercept) + rng.normal(0.0, transfer.noise_std, n_groups)[group]
        for attribute in TRANSFER_ATTRIBUTES:
            basin_weights = np.array([weights[r][name][attribute] for r in regimes])
            logit += basin_weights * z[attribute]
        if regime_offsets:
            logit += sign * regime_offsets.get(name, 0.0)
        parameters[name] = transfer.evaluate(logit)
    return parameters


def simulate_streamflow(precipitation: np.ndarray, temperature: np.ndarray, pet: np.ndarray,
                        parameters: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the HBV-like conceptual model for all basins at once.

    Per day: rain/snow partition (linear over threshold +/- 1 degC), degree-day
    melt, soil-moisture bucket with nonlinear recharge ``(SM/FC)^beta`` and
    saturation excess, ET limited by soil moisture below ``LP * FC``,
    percolation-limited transfer from a fast to a slow linear reservoir.

    Parameters
    ----------
    precipitation, temperature, pet : numpy.ndarray
        Forcings, shape ``[n_days, n_basins]`` (mm/d, degC, mm/d).
    parameters : dict[str, numpy.ndarray]
        Model parameters (see ``PARAMETER_NAMES``), shape ``[n_basins]``.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``streamflow``, ``actual_et``, ``baseflow`` [mm/d] and ``snow_storage`` [mm],
        each ``[n_days, n_basins]``.
    """
    n_days, n_basins = precipitation.shape
    threshold = parameters["snow_threshold_degc"]
    degree_day = parameters["degree_day_factor"]
    capacity = parameters["field_capacity_mm"]
    beta = parameters["beta"]
    et_limit = parameters["et_limit_fraction"] * capacity
    k_fast = parameters["k_fast_per_day"]
    k_slow = parameters["k_slow_per_day"]
    max_percolation = parameters["max_percolation_mm"]

    snow = np.zeros(n_basins)
    soil = 0.5 * capacity
    upper = np.zeros(n_basins)
    lower = np.minimum(max_percolation, 0.3 * precipitation.mean(axis=0)) / k_slow  # near steady state

    snow_fraction = np.clip((threshold + 1.0 - temperature) / 2.0, 0.0, 1.0)
    potential_melt = degree_day * np.maximum(temperature - threshold, 0.0)
    outputs = {name: np.empty((n_days, n_basins)) for name in
               ("streamflow", "actual_et", "baseflow", "snow_storage")}
    for t in range(n_days):
        snowfall = precipitation[t] * snow_fraction[t]
        snow += snowfall
        melt = np.minimum(snow, potential_melt[t])
        snow -= melt
        inflow = precipitation[t] - snowfall + melt

        recharge = inflow * np.minimum(soil / capacity, 1.0) ** beta
        soil += inflow - recharge
        excess = np.maximum(soil - capacity, 0.0)
        soil -= excess
        recharge += excess
        actual_et = np.minimum(pet[t] * np.minimum(soil / et_limit, 1.0), soil)
        soil -= actual_et

        upper += recharge
        percolation = np.minimum(max_percolation, upper)
        upper -= percolation
        lower += percolation
        quickflow = k_fast * upper
        upper -= quickflow
        baseflow = k_slow * lower
        lower -= baseflow

        outputs["streamflow"][t] = quickflow + baseflow
        outputs["actual_et"][t] = actual_et
        outputs["baseflow"][t] = baseflow
        outputs["snow_storage"][t] = snow
    return outputs


def add_observation_errors(streamflow: np.ndarray, rng: np.random.Generator, relative_noise: float = 0.05,
                           gap_fraction: float = 0.005, max_gap_days: int = 5) -> np.ndarray:
    """Add mean-preserving multiplicative log-normal noise and short NaN gaps.

    Parameters
    ----------
    streamflow : numpy.ndarray
        Simulated flow, shape ``[n_days, n_basins]``, non-negative.
    rng : numpy.random.Generator
        Random generator for noise and gap positions.
    relative_noise : float
        Standard deviation of the log-normal noise (about the relative error).
    gap_fraction : float
        Approximate fraction of days set to NaN in each basin.
    max_gap_days : int
        Gap lengths are uniform in ``1..max_gap_days``.

    Returns
    -------
    numpy.ndarray
        Observed flow (non-negative or NaN), same shape.
    """
    n_days, n_basins = streamflow.shape
    noise = np.exp(relative_noise * rng.standard_normal((n_days, n_basins)) - 0.5 * relative_noise ** 2)
    observed = np.maximum(streamflow, 0.0) * noise
    mean_gap_days = 0.5 * (1 + max_gap_days)
    n_gaps = max(1, int(round(gap_fraction * n_days / mean_gap_days)))
    for basin in range(n_basins):
        starts = rng.integers(0, n_days, n_gaps)
        lengths = rng.integers(1, max_gap_days + 1, n_gaps)
        for start, length in zip(starts, lengths):
            observed[start:start + length, basin] = np.nan
    return observed
