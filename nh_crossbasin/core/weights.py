"""From an influence matrix to per-target source weights and to basin sampling probabilities (DESIGN.md §2).

For target ``t``: ``w_t(s) = softmax_s(I[t, s] / (τ · scale_t))`` with ``scale_t`` a robust scale of row ``t``,
then ``w_t <- (1 - ε) w_t + ε / |S|`` and ``w_t(t) >= floor`` for the target's own basin. The basin weights of a
target set ``T`` are ``q(s) = mean_{t in T} w_t(s)``. (A DoGE-style alternative, one softmax of the target-mean
influence row, was measured on validation data and dropped: ``benchmarks/RESULTS.md``.) A sample of basin ``s`` is
then drawn with probability ``q(s) / n_s`` (basis ``basin``) or proportional to ``q(s)`` (basis
``samples``, NH's record-length weighting when ``q`` is uniform).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

MAD_TO_STD = 1.4826


def robust_scale(values: np.ndarray) -> float:
    """Scale of a row: 1.4826 × median absolute deviation; the std if that is 0; 1 if both are 0 or undefined."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 1.0
    mad = MAD_TO_STD * np.median(np.abs(values - np.median(values)))
    if mad > 0:
        return float(mad)
    std = float(np.std(values))
    return std if std > 0 else 1.0


def target_weights(influence: np.ndarray, temperature: float = 1.0, uniform_mix: float = 0.1,
                   self_floor: float = 0.0, self_source: Optional[Sequence[int]] = None,
                   valid_sources: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-target weights over sources.

    Parameters
    ----------
    influence : np.ndarray
        ``[n_targets, n_sources]``; NaN entries (no valid gradient) get no softmax weight.
    temperature : float
        Softmax temperature ``τ`` (> 0), in units of the row's robust scale.
    uniform_mix : float
        ``ε`` in [0, 1]: weight mixed in uniformly over the valid sources.
    self_floor : float
        Minimum weight of the target's own basin (when it is a source), in [0, 1).
    self_source : sequence of int, optional
        For each target, the column of its own basin, or -1.
    valid_sources : np.ndarray of bool, optional
        Sources that may be drawn at all (e.g. basins with training samples); default: all.

    Returns
    -------
    np.ndarray
        ``[n_targets, n_sources]``, rows summing to 1, zero on invalid sources. A row without any finite entry is
        uniform over the valid sources.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 <= uniform_mix <= 1 or not 0 <= self_floor < 1:
        raise ValueError("uniform_mix must be in [0, 1] and self_floor in [0, 1).")
    influence = np.asarray(influence, dtype=np.float64)
    n_targets, n_sources = influence.shape
    valid = np.ones(n_sources, bool) if valid_sources is None else np.asarray(valid_sources, bool)
    if not valid.any():
        raise ValueError("No valid source basin to weight.")
    uniform = valid / valid.sum()
    weights = np.empty_like(influence)
    for t in range(n_targets):
        row = influence[t]
        usable = valid & np.isfinite(row)
        if not usable.any():
            weights[t] = uniform
            continue
        logits = np.full(n_sources, -np.inf)
        logits[usable] = row[usable] / (temperature * robust_scale(row[usable]))
        soft = np.exp(logits - logits[usable].max())
        weights[t] = (1.0 - uniform_mix) * soft / soft.sum() + uniform_mix * uniform
        own = -1 if self_source is None else int(self_source[t])
        if own >= 0 and valid[own] and weights[t, own] < self_floor:
            others = weights[t].sum() - weights[t, own]
            weights[t] *= (1.0 - self_floor) / others if others > 0 else 0.0
            weights[t, own] = self_floor
    return weights


def basin_weights(weights: np.ndarray) -> np.ndarray:
    """``q(s) = mean_t w_t(s)``: the basin weights of the whole target set."""
    q = np.asarray(weights, dtype=np.float64).mean(axis=0)
    return q / q.sum()


def effective_number(q: np.ndarray) -> float:
    """Effective number of source basins ``1 / sum q^2``."""
    q = np.asarray(q, dtype=np.float64)
    return float(1.0 / np.sum(q ** 2))


def entropy(q: np.ndarray) -> float:
    """Shannon entropy of the basin weights (nats); ``log |S|`` for uniform weights."""
    q = np.asarray(q, dtype=np.float64)
    q = q[q > 0]
    return float(-np.sum(q * np.log(q)))


def basin_draw_probabilities(q: np.ndarray, samples_per_basin: np.ndarray, basis: str = "basin") -> np.ndarray:
    """Probability of drawing each basin for one sample; within a basin, samples are drawn uniformly.

    Parameters
    ----------
    q : np.ndarray
        Basin weights ``[n_basins]``.
    samples_per_basin : np.ndarray
        ``n_s``, number of training samples of each basin (basins with 0 are never drawn).
    basis : {'basin', 'samples'}
        ``basin``: basin ``s`` is drawn with probability ``q(s)``, so a sample with ``q(s) / n_s``.
        ``samples``: with probability ``∝ q(s) n_s``, so every sample with ``∝ q(s)``; uniform ``q`` then gives
        each sample ``1 / N``, NH's homogeneous distribution.
    """
    q = np.asarray(q, dtype=np.float64) * (np.asarray(samples_per_basin) > 0)
    if basis == "samples":
        q = q * np.asarray(samples_per_basin, dtype=np.float64)
    elif basis != "basin":
        raise ValueError(f"basis must be 'basin' or 'samples', got {basis!r}")
    if q.sum() <= 0:
        raise ValueError("All basin weights are zero: nothing to sample.")
    return q / q.sum()
