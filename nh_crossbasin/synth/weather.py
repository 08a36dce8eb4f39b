"""Stochastic daily weather generator for synthetic basins.

All functions are vectorised over basins: per-basin parameters are arrays of
shape ``[n_basins]`` and generated series are arrays of shape
``[n_days, n_basins]``. Only the wet/dry Markov chain and the AR(1)
temperature anomalies loop over time.

Units: precipitation and PET in mm/d, temperature in degC, latitude in
degrees north, elevation in m above sea level.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DAYS_PER_YEAR = 365.25
LAPSE_RATE_K_PER_M = 0.0065
SOLAR_CONSTANT_MJ_M2_MIN = 0.0820
LATENT_HEAT_MJ_PER_KG = 2.45
TEMPERATURE_PEAK_DOY = 200.0
WET_DAY_COOLING_K = 0.8


@dataclass(frozen=True)
class WeatherParameters:
    """Per-basin parameters of the weather generator (arrays of shape ``[n_basins]``).

    Attributes
    ----------
    latitude_deg : numpy.ndarray
        Latitude in degrees north; drives the radiation used for PET.
    temp_mean_degc : numpy.ndarray
        Long-term mean air temperature.
    temp_amplitude_degc : numpy.ndarray
        Half the annual range of the seasonal temperature cycle.
    temp_anomaly_autocorr : numpy.ndarray
        Lag-1 autocorrelation of daily temperature anomalies.
    temp_anomaly_std_degc : numpy.ndarray
        Stationary standard deviation of daily temperature anomalies.
    wet_day_fraction : numpy.ndarray
        Long-term fraction of wet days.
    wet_day_persistence : numpy.ndarray
        ``P(wet | wet) - P(wet | dry)`` of the occurrence Markov chain.
    wet_amount_shape : numpy.ndarray
        Shape parameter of the gamma distribution of wet-day amounts (< 1: skewed).
    precip_mean_mm : numpy.ndarray
        Target long-term mean precipitation.
    precip_seasonal_amplitude : numpy.ndarray
        Relative amplitude (0..1) of the seasonal precipitation cycle.
    precip_peak_doy : numpy.ndarray
        Day of year with the highest precipitation.
    """

    latitude_deg: np.ndarray
    temp_mean_degc: np.ndarray
    temp_amplitude_degc: np.ndarray
    temp_anomaly_autocorr: np.ndarray
    temp_anomaly_std_degc: np.ndarray
    wet_day_fraction: np.ndarray
    wet_day_persistence: np.ndarray
    wet_amount_shape: np.ndarray
    precip_mean_mm: np.ndarray
    precip_seasonal_amplitude: np.ndarray
    precip_peak_doy: np.ndarray


def extraterrestrial_radiation(latitude_deg: np.ndarray, day_of_year: np.ndarray) -> np.ndarray:
    """Daily extraterrestrial radiation (FAO-56, eq. 21), which encodes day length.

    Parameters
    ----------
    latitude_deg : numpy.ndarray
        Latitudes, shape ``[n_basins]``.
    day_of_year : numpy.ndarray
        Day of year (1..366), shape ``[n_days]``.

    Returns
    -------
    numpy.ndarray
        Radiation in MJ m-2 d-1, shape ``[n_days, n_basins]``.
    """
    lat = np.deg2rad(np.asarray(latitude_deg, dtype=float))[None, :]
    doy = np.asarray(day_of_year, dtype=float)[:, None]
    inverse_distance = 1.0 + 0.033 * np.cos(2.0 * np.pi * doy / 365.0)
    declination = 0.409 * np.sin(2.0 * np.pi * doy / 365.0 - 1.39)
    sunset_angle = np.arccos(np.clip(-np.tan(lat) * np.tan(declination), -1.0, 1.0))
    return (24.0 * 60.0 / np.pi * SOLAR_CONSTANT_MJ_M2_MIN * inverse_distance
            * (sunset_angle * np.sin(lat) * np.sin(declination)
               + np.cos(lat) * np.cos(declination) * np.sin(sunset_angle)))


def oudin_pet(temperature_degc: np.ndarray, radiation_mj: np.ndarray) -> np.ndarray:
    """Potential evapotranspiration after Oudin et al. (2005).

    Parameters
    ----------
    temperature_degc : numpy.ndarray
        Daily mean air temperature.
    radiation_mj : numpy.ndarray
        Extraterrestrial radiation in MJ m-2 d-1 (same shape as temperature).

    Returns
    -------
    numpy.ndarray
        PET in mm/d (zero where ``T <= -5 degC``).
    """
    return np.maximum(radiation_mj / LATENT_HEAT_MJ_PER_KG * (temperature_degc + 5.0) / 100.0, 0.0)


def seasonal_cycle(day_of_year: np.ndarray, peak_doy: np.ndarray) -> np.ndarray:
    """Unit-amplitude cosine that peaks at ``peak_doy``; shape ``[n_days, n_basins]``."""
    doy = np.asarray(day_of_year, dtype=float)[:, None]
    return np.cos(2.0 * np.pi * (doy - np.asarray(peak_doy, dtype=float)[None, :]) / DAYS_PER_YEAR)


def sample_weather_parameters(rng: np.random.Generator, latitude_deg: np.ndarray,
                              elevation_m: np.ndarray, spread: float = 1.0) -> WeatherParameters:
    """Draw weather-generator parameters for basins at given latitudes and elevations.

    Mean temperature decreases with latitude and elevation (lapse rate), the
    temperature amplitude grows with latitude. Mean precipitation is set from
    the climatological PET and a random aridity index so that basins range
    from humid to semi-arid.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator used for all draws.
    latitude_deg, elevation_m : numpy.ndarray
        Basin latitude and mean elevation, shape ``[n_basins]``.
    spread : float
        Factor on the spread of the aridity index in log space (< 1: one climatic region).

    Returns
    -------
    WeatherParameters
    """
    n_basins = len(latitude_deg)
    temp_mean = np.clip(21.0 - 0.8 * (latitude_deg - 30.0) - LAPSE_RATE_K_PER_M * elevation_m
                        + rng.normal(0.0, 1.0, n_basins), -6.0, 24.0)
    temp_amplitude = np.clip(7.0 + 0.35 * (latitude_deg - 30.0) + rng.normal(0.0, 1.0, n_basins), 5.0, 16.0)

    # climatological PET from the noise-free seasonal temperature cycle
    day_of_year = np.arange(1, 366)
    clim_temp = temp_mean + temp_amplitude * seasonal_cycle(day_of_year, np.full(n_basins, TEMPERATURE_PEAK_DOY))
    clim_pet = oudin_pet(clim_temp, extraterrestrial_radiation(latitude_deg, day_of_year)).mean(axis=0)
    aridity_target = np.clip(np.exp(rng.normal(np.log(0.8), 0.35 * spread, n_basins)), 0.3, 1.45)
    precip_mean = np.clip(clim_pet / aridity_target, 0.8, 9.0)

    return WeatherParameters(
        latitude_deg=np.asarray(latitude_deg, dtype=float),
        temp_mean_degc=temp_mean,
        temp_amplitude_degc=temp_amplitude,
        temp_anomaly_autocorr=rng.uniform(0.6, 0.85, n_basins),
        temp_anomaly_std_degc=rng.uniform(2.0, 3.5, n_basins),
        wet_day_fraction=np.clip(0.22 + 0.05 * precip_mean + rng.normal(0.0, 0.05, n_basins), 0.15, 0.65),
        wet_day_persistence=rng.uniform(0.15, 0.45, n_basins),
        wet_amount_shape=rng.uniform(0.6, 0.95, n_basins),
        precip_mean_mm=precip_mean,
        precip_seasonal_amplitude=rng.uniform(0.0, 0.8, n_basins),
        precip_peak_doy=rng.uniform(0.0, DAYS_PER_YEAR, n_basins),
    )


def generate_weather(params: WeatherParameters, dates: pd.DatetimeIndex,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Simulate daily precipitation, temperature and PET for all basins.

    Precipitation occurrence follows a two-state (wet/dry) Markov chain whose
    wet-day probability varies seasonally; wet-day amounts are gamma
    distributed with a seasonally varying mean. Temperature is a sinusoid plus
    AR(1) anomalies, slightly cooler on wet days. PET follows Oudin's formula.

    Parameters
    ----------
    params : WeatherParameters
        Per-basin generator parameters.
    dates : pandas.DatetimeIndex
        Consecutive days to simulate.
    rng : numpy.random.Generator
        Random generator used for all draws.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``precipitation``, ``temperature`` and ``pet``, each ``[n_days, n_basins]`` float64.
    """
    n_days, n_basins = len(dates), len(params.latitude_deg)
    day_of_year = dates.day_of_year.to_numpy()

    # --- precipitation occurrence: seasonal two-state Markov chain
    precip_season = seasonal_cycle(day_of_year, params.precip_peak_doy)
    half_amplitude = 0.5 * params.precip_seasonal_amplitude
    wet_fraction = np.clip(params.wet_day_fraction * (1.0 + half_amplitude * precip_season), 0.02, 0.95)
    persistence = params.wet_day_persistence[None, :]
    prob_wet_after_dry = wet_fraction * (1.0 - persistence)
    prob_wet_after_wet = np.minimum(prob_wet_after_dry + persistence, 0.98)
    uniforms = rng.random((n_days, n_basins))
    wet = np.empty((n_days, n_basins), dtype=bool)
    wet[0] = uniforms[0] < wet_fraction[0]
    for t in range(1, n_days):
        wet[t] = uniforms[t] < np.where(wet[t - 1], prob_wet_after_wet[t], prob_wet_after_dry[t])

    # --- wet-day amounts: gamma with seasonal mean; occurrence and amount cycles are in phase, so the
    # long-term mean is inflated by (1 + a^2 / 2), which the normalisation removes
    mean_wet_amount = ((params.precip_mean_mm / params.wet_day_fraction / (1.0 + 0.5 * half_amplitude ** 2))[None, :]
                       * (1.0 + half_amplitude * precip_season))
    shape = params.wet_amount_shape[None, :]
    amounts = rng.gamma(np.broadcast_to(shape, (n_days, n_basins)), mean_wet_amount / shape)
    precipitation = np.where(wet, amounts, 0.0)

    # --- temperature: seasonal sinusoid + AR(1) anomalies + wet-day cooling
    autocorr = params.temp_anomaly_autocorr
    innovations = rng.standard_normal((n_days, n_basins)) * (params.temp_anomaly_std_degc
                                                             * np.sqrt(1.0 - autocorr ** 2))
    anomalies = np.empty((n_days, n_basins))
    anomalies[0] = innovations[0] / np.sqrt(1.0 - autocorr ** 2)
    for t in range(1, n_days):
        anomalies[t] = autocorr * anomalies[t - 1] + innovations[t]
    temp_season = seasonal_cycle(day_of_year, np.full(n_basins, TEMPERATURE_PEAK_DOY))
    temperature = (params.temp_mean_degc + params.temp_amplitude_degc * temp_season + anomalies
                   - WET_DAY_COOLING_K * (wet - wet_fraction))

    pet = oudin_pet(temperature, extraterrestrial_radiation(params.latitude_deg, day_of_year))
    return {"precipitation": precipitation, "temperature": temperature, "pet": pet}


def climate_attributes(precipitation: np.ndarray, temperature: np.ndarray, pet: np.ndarray,
                       dates: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    """CAMELS-style climate indices computed from generated forcings.

    Parameters
    ----------
    precipitation, temperature, pet : numpy.ndarray
        Daily series, shape ``[n_days, n_basins]``.
    dates : pandas.DatetimeIndex
        Dates of the rows.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``p_mean`` and ``pet_mean`` [mm/d], ``aridity`` (pet_mean / p_mean),
        ``p_seasonality`` (Woods 2009; > 0: precipitation peaks in summer),
        ``frac_snow`` (fraction of precipitation on days below 0 degC),
        ``high_prec_freq`` (days per year with >= 5 times mean daily precipitation)
        and ``t_mean`` [degC], each of shape ``[n_basins]``.
    """
    p_mean = precipitation.mean(axis=0)
    pet_mean = pet.mean(axis=0)
    n_years = len(dates) / DAYS_PER_YEAR

    # Woods (2009) seasonality index from first-harmonic fits of P and T
    phase = 2.0 * np.pi * dates.day_of_year.to_numpy() / DAYS_PER_YEAR
    design = np.column_stack([np.ones_like(phase), np.sin(phase), np.cos(phase)])
    p_coef = np.linalg.lstsq(design, precipitation, rcond=None)[0]
    t_coef = np.linalg.lstsq(design, temperature, rcond=None)[0]
    p_relative_amplitude = np.hypot(p_coef[1], p_coef[2]) / np.maximum(p_mean, 1e-9)
    phase_difference = np.arctan2(p_coef[2], p_coef[1]) - np.arctan2(t_coef[2], t_coef[1])
    p_seasonality = p_relative_amplitude * np.cos(phase_difference)

    total_precip = precipitation.sum(axis=0)
    snow_precip = np.where(temperature < 0.0, precipitation, 0.0).sum(axis=0)
    return {
        "p_mean": p_mean,
        "pet_mean": pet_mean,
        "aridity": pet_mean / np.maximum(p_mean, 1e-9),
        "p_seasonality": p_seasonality,
        "frac_snow": snow_precip / np.maximum(total_precip, 1e-9),
        "high_prec_freq": (precipitation >= 5.0 * p_mean).sum(axis=0) / n_years,
        "t_mean": temperature.mean(axis=0),
    }
