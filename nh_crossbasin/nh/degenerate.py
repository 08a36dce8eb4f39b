"""Degenerate training basins: detected once, when the training dataset is built, and reported by id in one place.

Real gauges include stuck or filled records. A basin whose training targets are all missing, whose target variance is
zero or near zero relative to the other basins, or which has fewer than two training samples (too few for the
influence sampler's two disjoint probes) would otherwise dominate the NSE* loss (``(y_hat - y)^2 / (s_b + eps)^2``
with ``s_b`` ~ 0), stop training with a NaN loss (``xb_nse_eps: 0``), or silently change a probe.

``xb_degenerate_basins: exclude`` (the default) drops their samples from training -- from the loss and from every
draw -- with one warning that lists them; ``error`` stops before the first epoch with the same list. The list is also
written to ``degenerate_basins.csv`` in the run directory. Validation and test datasets are never changed.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from nh_crossbasin.config_keys import ConfigKey

LOGGER = logging.getLogger(__name__)
RELATIVE_STD = 1e-3  # a basin's target std below this fraction of the median basin's counts as near zero
MIN_SAMPLES = 2
REPORT_FILE = "degenerate_basins.csv"

DEGENERATE_KEY = ConfigKey(
    "xb_degenerate_basins", "exclude", "treatment of degenerate training basins (all targets missing, zero or "
    f"near-zero target variance (< {RELATIVE_STD:g} x the median basin's std), fewer than {MIN_SAMPLES} samples): "
    "'exclude' drops their samples from the loss and the draw with a warning, 'error' stops before training",
    choices=("exclude", "error"))


def find_degenerate_basins(basins, sample_basins: np.ndarray, sample_targets: np.ndarray) -> pd.DataFrame:
    """The degenerate basins of a training dataset and why.

    Parameters
    ----------
    basins : sequence of str
        The training basins.
    sample_basins : np.ndarray
        The basin id of every training sample, ``[n_samples]``.
    sample_targets : np.ndarray
        The targets each training sample is trained on (NaN where missing), ``[n_samples, n_values]``.

    Returns
    -------
    pd.DataFrame
        Indexed by basin: ``reason``, ``samples``, ``target_std`` (in the units given); empty when none is
        degenerate.
    """
    sample_basins = np.asarray(sample_basins)
    targets = np.asarray(sample_targets, dtype=np.float64).reshape(len(sample_basins), -1)
    rows = {}
    stds = {}
    for basin in basins:
        values = targets[sample_basins == basin]
        finite = values[np.isfinite(values)]
        stds[basin] = float(np.std(finite)) if finite.size > 1 else np.nan
        if len(values) == 0 or finite.size == 0:
            rows[basin] = ("no valid training target", len(values))
        elif len(values) < MIN_SAMPLES:
            rows[basin] = (f"fewer than {MIN_SAMPLES} training samples", len(values))
    positive = [s for s in stds.values() if np.isfinite(s) and s > 0]
    reference = float(np.median(positive)) if positive else 0.0
    for basin, std in stds.items():
        if basin not in rows and np.isfinite(std) and std <= RELATIVE_STD * reference:
            rows[basin] = ("zero target variance" if std == 0 else
                           f"near-zero target variance ({std / reference:.1e} x the median basin's std)",
                           int((sample_basins == basin).sum()))
    table = pd.DataFrame([(b, r, n, stds.get(b, np.nan)) for b, (r, n) in rows.items()],
                         columns=["basin", "reason", "samples", "target_std"]).set_index("basin")
    return table


def report_degenerate_basins(table: pd.DataFrame, treatment: str, run_dir: Optional[Path]) -> None:
    """Log the degenerate basins once (and write them to ``run_dir/degenerate_basins.csv``); raise for ``error``.

    Raises
    ------
    ValueError
        With ``treatment == 'error'``, naming every degenerate basin, its reason and the config key.
    """
    if table.empty:
        return
    listing = "; ".join(f"{basin}: {row.reason} ({row.samples} samples)" for basin, row in table.iterrows())
    if run_dir is not None and Path(run_dir).is_dir() and not (Path(run_dir) / REPORT_FILE).exists():
        table.to_csv(Path(run_dir) / REPORT_FILE)
    if treatment == "error":
        raise ValueError(f"{len(table)} degenerate training basins (config key 'xb_degenerate_basins: error'): "
                         f"{listing}. Remove them from the train_basin_file, or set 'xb_degenerate_basins: exclude' "
                         f"to train without their samples.")
    LOGGER.warning(f"{len(table)} degenerate training basins are excluded from the loss and the draw "
                   f"('xb_degenerate_basins: exclude'): {listing}")
