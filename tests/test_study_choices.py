"""The accuracy study's learning-rate choice (``benchmarks/study_choices.py``): the paired figures it records, and
taking a choice over from another study of the same configuration."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import study_choices as sc  # noqa: E402

BASE = ("batch_size: 256\nhidden_size: 64\nlearning_rate:\n  0: {first}\n  3: {last}\nrun_dir: {run_dir}\n"
        "train_basin_file: {basins}\n")


def _study(folder: Path, first: float, last: float, chosen: str = None, basins: str = "01013500\n01022500\n") -> Path:
    folder.mkdir(parents=True)
    (folder / "basins.txt").write_text(basins)  # each study its own copy of the basin file
    (folder / "base.yml").write_text(BASE.format(first=first, last=last, run_dir=folder / "runs",
                                                 basins=folder / "basins.txt"))
    if chosen:
        record = {"rule": "r", "validation_median_NSE": {"lr0.003_0.001": 0.45, "lr0.01_0.003": 0.47},
                  "chosen": chosen, "study": sc.schedule_name(first, last),
                  "study_is_chosen": chosen == sc.schedule_name(first, last)}
        (folder / sc.LEARNING_RATE_CHOICE).write_text(json.dumps(record))
    return folder


def test_paired_figures_are_those_of_scipy_and_signed_for_the_chosen_schedule():
    rng = np.random.default_rng(0)
    basins = [f"{i:08d}" for i in range(30)]
    other = pd.Series(rng.normal(0.4, 0.2, 30), index=basins)
    chosen = other + rng.normal(0.05, 0.03, 30)
    figures = sc._paired(chosen.iloc[::-1], other)  # aligned by basin, not by position
    diff = (chosen - other).to_numpy()
    assert figures["basins"] == 30
    assert figures["median_difference"] == round(float(np.median(diff)), 4) > 0
    assert figures["share_better"] == round(float((diff > 0).mean()), 3)
    assert figures["p_wilcoxon"] == pytest.approx(stats.wilcoxon(diff).pvalue, rel=1e-2)
    # negative control: the schedules swapped give the opposite sign
    assert sc._paired(other, chosen)["median_difference"] == -figures["median_difference"]


def test_a_choice_made_by_a_study_of_the_same_configuration_is_taken_over(tmp_path):
    first = _study(tmp_path / "first", 3e-3, 1e-3, chosen="lr0.01_0.003")
    again = _study(tmp_path / "again", 1e-2, 3e-3)
    record = sc.adopt_learning_rate(again, (1e-2, 3e-3), first)
    assert record["chosen"] == record["study"] == "lr0.01_0.003" and record["study_is_chosen"]
    assert record["chosen_in"] == str(first)
    assert json.loads((again / sc.LEARNING_RATE_CHOICE).read_text()) == record
    sc.check_learning_rate(again)  # the test stage may run
    assert sc.adopt_learning_rate(again, (1e-2, 3e-3), first) == record  # a resumed study: nothing changes
    assert sc.adopt_learning_rate(again, (1e-2, 3e-3), tmp_path / ".." / tmp_path.name / "first") == record


def test_a_study_at_another_schedule_than_the_adopted_choice_may_not_be_tested(tmp_path):
    first = _study(tmp_path / "first", 3e-3, 1e-3, chosen="lr0.01_0.003")
    other = _study(tmp_path / "other", 3e-2, 1e-2)
    assert not sc.adopt_learning_rate(other, (3e-2, 1e-2), first)["study_is_chosen"]
    with pytest.raises(SystemExit, match="chose lr0.01_0.003, but this study trains at lr0.03_0.01"):
        sc.check_learning_rate(other)


def test_a_choice_is_not_taken_from_another_configuration_or_a_study_without_one(tmp_path):
    first = _study(tmp_path / "first", 3e-3, 1e-3, chosen="lr0.01_0.003")
    bigger = _study(tmp_path / "bigger", 1e-2, 3e-3)
    (bigger / "base.yml").write_text((bigger / "base.yml").read_text().replace("hidden_size: 64", "hidden_size: 256"))
    with pytest.raises(SystemExit, match=r"differs from this study's in \['hidden_size'\]"):
        sc.adopt_learning_rate(bigger, (1e-2, 3e-3), first)
    assert not (bigger / sc.LEARNING_RATE_CHOICE).exists()
    elsewhere = _study(tmp_path / "elsewhere", 1e-2, 3e-3, basins="01013500\n01030500\n")
    with pytest.raises(SystemExit, match=r"differs from this study's in \['train_basin_file'\]"):
        sc.adopt_learning_rate(elsewhere, (1e-2, 3e-3), first)
    unchosen = _study(tmp_path / "unchosen", 3e-3, 1e-3)
    with pytest.raises(SystemExit, match="choices_learning_rate.json does not exist"):
        sc.adopt_learning_rate(bigger, (1e-2, 3e-3), unchosen)


def test_a_record_the_study_already_has_is_never_overwritten(tmp_path):
    first = _study(tmp_path / "first", 3e-3, 1e-3, chosen="lr0.01_0.003")
    again = _study(tmp_path / "again", 1e-2, 3e-3)
    (again / sc.LEARNING_RATE_CHOICE).write_text('{"chosen": "mine"}')
    with pytest.raises(SystemExit, match="already holds another learning-rate choice"):
        sc.adopt_learning_rate(again, (1e-2, 3e-3), first)
    assert (again / sc.LEARNING_RATE_CHOICE).read_text() == '{"chosen": "mine"}'
