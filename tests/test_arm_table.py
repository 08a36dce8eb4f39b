"""Known answers for the arm tables of the studies (``nh_crossbasin.experiments.summary``)."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nh_crossbasin.experiments.summary import arm_table, format_arm_table

BASINS = ["b1", "b2", "b3", "b4"]
SEEDS = ["1", "2"]
BASE = np.array([0.1, 0.5, -0.2, 0.7, 0.3, 0.6, 0.0, 0.4])          # (basin, seed) in row order
GAIN = np.array([0.05, 0.02, 0.30, -0.01, 0.04, 0.00, 0.10, 0.03])   # arm minus baseline, hand-chosen


CONTROL = BASE + 0.01                                                # a control that is not the baseline


def _table(arm_nse):
    rows = []
    for name, values in (("homogeneous", BASE), ("arm", arm_nse), ("control", CONTROL)):
        for k, (basin, seed) in enumerate((b, s) for b in BASINS for s in SEEDS):
            rows.append({"variant": name, "basin": basin, "seed": seed, "NSE": values[k], "KGE": 2 * values[k]})
    return pd.DataFrame(rows)


def test_arm_table_pairs_by_basin_and_seed_with_hand_computed_statistics():
    arms = arm_table(_table(BASE + GAIN), "homogeneous", {"arm": "control"}).set_index("variant")
    row = arms.loc["arm"]
    assert row["median_NSE"] == pytest.approx(np.median(BASE + GAIN))
    assert row["mean_KGE"] == pytest.approx(2 * np.mean(BASE + GAIN))
    assert row["nse_le_0"] == 0 and arms.loc["homogeneous", "nse_le_0"] == 2
    assert row["vs_base_median_diff"] == pytest.approx(0.035)            # median of the sorted gains 0.03, 0.04
    assert row["vs_base_improved"] == pytest.approx(6 / 8)                # one loss, one tie
    assert row["vs_base_d"] == pytest.approx(GAIN.mean() / GAIN.std(ddof=1))
    assert row["vs_base_p"] == pytest.approx(stats.wilcoxon(GAIN).pvalue)
    assert row["vs_control"] == "control"                                # its own control, not the baseline
    assert row["vs_control_median_diff"] == pytest.approx(0.025)
    assert row["vs_control_p"] == pytest.approx(stats.wilcoxon(GAIN - 0.01).pvalue)
    assert np.isnan(arms.loc["homogeneous", "vs_base_median_diff"])


def test_pairing_matters_negative_control():
    """The same arm values attached to the wrong basins give other paired differences (a broken implementation that
    compared sorted or pooled values would not see the difference)."""
    shuffled = np.roll(BASE + GAIN, 3)
    row = arm_table(_table(shuffled), "homogeneous").set_index("variant").loc["arm"]
    assert row["median_NSE"] == pytest.approx(np.median(BASE + GAIN))  # same distribution ...
    assert row["vs_base_median_diff"] != pytest.approx(0.035)         # ... other pairs
    assert row["vs_base_improved"] != pytest.approx(6 / 8)


def test_format_names_the_compared_metric_and_shows_both_metrics():
    table = _table(BASE + GAIN)
    text = format_arm_table(arm_table(table, "homogeneous", metrics=("KGE", "NSE")))
    header, rule, first, arm, _ = text.splitlines()
    assert "median ΔKGE" in header and "median ΔNSE" not in header
    assert header.count("|") == rule.count("|")
    for label in ("median NSE", "mean NSE", "median KGE", "mean KGE"):
        assert label in header
    cells = [c.strip() for c in arm.split("|")[1:-1]]
    assert cells[0] == "arm" and cells[6] == "+0.070"                  # KGE = 2 NSE: the median gain doubles
    assert float(cells[4]) == pytest.approx(2 * np.mean(BASE + GAIN), abs=5e-4)
