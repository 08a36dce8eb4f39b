"""The influence sampler through NH's unmodified `nh-run`: determinism, warm-up, resume, logging, bad input,
and the known truth of the synthetic regimes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from conftest import run_cli, single_run_dir, synth_config, write_yaml

pytestmark = pytest.mark.slow

INFLUENCE = {"loss": "xb_nse_star", "xb_sampler": "influence", "xb_influence_warmup_epochs": 1, "epochs": 2,
             "xb_influence_probe_size": 8}


def _train(tmp_path, name, cfg, command=("nh-run", "train")):
    parent = tmp_path / name
    parent.mkdir()
    config_file = write_yaml(tmp_path / f"{name}.yml", dict(cfg, run_dir=str(parent)))
    run_cli([*command, "--config-file", config_file], cwd=tmp_path)
    return single_run_dir(parent)


def _state(run_dir, epoch):
    return torch.load(run_dir / f"model_epoch{epoch:03d}.pt", map_location="cpu")


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_warmup_is_nh_sampling_and_same_seed_gives_same_weights_and_samples(tmp_path, synth_data):
    uniform = _train(tmp_path, "uniform", synth_config(synth_data, tmp_path, loss="xb_nse_star", epochs=1))
    first = _train(tmp_path, "first", synth_config(synth_data, tmp_path, **INFLUENCE))
    second = _train(tmp_path, "second", synth_config(synth_data, tmp_path, **INFLUENCE))
    assert _same_state(_state(uniform, 1), _state(first, 1)), "warm-up epoch differs from NH's sampling"
    assert _same_state(_state(first, 2), _state(second, 2)), "same seed, different training"
    with xr.open_dataset(first / "influence" / "influence_epoch002.nc") as a, \
            xr.open_dataset(second / "influence" / "influence_epoch002.nc") as b:
        assert np.array_equal(a["weights"].values, b["weights"].values)
        assert list(a["source"].values) == sorted(synth_data.basins)
        assert a.attrs["measure"] == "cosine" and a.sizes == {"target": 12, "source": 12}
        assert np.allclose(a["weights"].sum("source"), 1)
    assert not _same_state(_state(uniform, 1), _state(first, 2))


def test_continue_training_resumes_with_last_weights_and_tensorboard_logs(tmp_path, synth_data):
    cfg = synth_config(synth_data, tmp_path, **INFLUENCE, log_tensorboard=True, xb_influence_refresh_every=5)
    run_dir = _train(tmp_path, "resume", cfg)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir)).Reload()
    assert {"influence/weight_entropy", "influence/effective_sources"} <= set(events.Tags()["scalars"])
    assert events.Scalars("influence/effective_sources")[0].step == 2
    run_cli(["nh-run", "continue_training", "--run-dir", run_dir], cwd=tmp_path)
    continued = run_dir / "continue_training_from_epoch002"
    log = (continued / "output.log").read_text()
    assert "continue_training: sampling with the influence weights of" in log and "influence_epoch002.nc" in log
    assert (continued / "model_epoch004.pt").exists()
    assert not (continued / "influence").exists()  # epochs 3-4 are no refresh epochs (refresh_every 5)


def test_targets_file_with_unknown_basins_fails_before_run_dir(tmp_path, synth_data):
    roi = tmp_path / "roi.txt"
    roi.write_text("synth_000\nnot_a_basin\n")
    parent = tmp_path / "runs"
    parent.mkdir()
    config = write_yaml(tmp_path / "roi.yml", synth_config(synth_data, parent, **INFLUENCE,
                                                           xb_influence_targets_file=str(roi)))
    proc = run_cli(["nh-run", "train", "--config-file", config], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "'xb_influence_targets_file': 1 of the 2 basins" in proc.stderr and "not_a_basin" in proc.stderr
    assert list(parent.iterdir()) == []


def test_offline_influence_of_a_trained_run_and_a_region_of_interest(tmp_path, synth_data):
    """`nh-xb influence` on a trained run: a well-formed record with disjoint probes of the configured size and an
    honest diagonal, never overwritten; a targets file restricts the targets. (That influence finds hidden regimes
    is the known answer of tests/test_twin_ground_truth.py, on data where no input reveals them.)"""
    cfg = synth_config(synth_data, tmp_path, loss="xb_nse_star", hidden_size=16, batch_size=64, epochs=2,
                       max_updates_per_epoch=30, learning_rate=0.01, xb_influence_probe_size=8)
    run_dir = _train(tmp_path, "pooled", cfg)
    proc = run_cli(["nh-xb", "influence", "--run-dir", run_dir], cwd=tmp_path)
    assert "written to" in proc.stdout
    with xr.open_dataset(run_dir / "influence" / "offline_epoch002.nc") as record:
        assert list(record["target"].values) == list(record["source"].values) == sorted(synth_data.basins)
        assert (record["source_probe_size"].values == 8).all() and (record["target_probe_size"].values == 8).all()
        assert np.isfinite(record["influence"].values).all()
        assert (np.abs(np.diag(record["influence"].values)) < 1 - 1e-6).all()
        assert np.allclose(record["weights"].values.sum(axis=1), 1)
        assert record.attrs["probe_size"] == "8" and "disjoint probes" in record.attrs["definition"]
    roi = synth_data.basin_file(0)
    run_cli(["nh-xb", "influence", "--run-dir", run_dir, "--targets", roi], cwd=tmp_path)
    with xr.open_dataset(run_dir / "influence" / "offline_epoch002_2.nc") as record:
        assert set(record["target"].values) == set(synth_data.basins_of_regime(0))
        assert record.sizes["source"] == len(synth_data.basins)
        assert record["basin_weight"].sum() == pytest.approx(1.0)


def test_influence_sampler_with_fused_ealstm_and_lookahead(tmp_path, synth_data):
    cfg = synth_config(synth_data, tmp_path, **INFLUENCE, model="xb_ealstm", xb_influence_measure="lookahead",
                       xb_influence_params=["head", "input_gate"], xb_influence_targets_file=str(
                           synth_data.basin_file(1)))
    run_dir = _train(tmp_path, "ealstm", cfg)
    with xr.open_dataset(run_dir / "influence" / "influence_epoch002.nc") as record:
        assert record.attrs["measure"] == "lookahead" and record.sizes["target"] == 6
        assert np.isfinite(record["influence"].values).all()


def test_continued_twice_equals_straight_and_finds_the_record_through_the_chain(tmp_path, synth_data):
    """4 epochs straight == 2 + 1 + 1 with continue_training (dropout 0, CPU): bit-identical weights, the same
    influence record, and the continue of a continue resumes with the first run's record (refresh every 3 epochs
    after 1 warm-up epoch: refreshes before epochs 2 and 5 only)."""
    cfg = synth_config(synth_data, tmp_path, **dict(INFLUENCE, epochs=4), xb_influence_refresh_every=3)
    straight = _train(tmp_path, "straight", cfg)
    first = _train(tmp_path, "first", dict(cfg, epochs=2))
    one_more = write_yaml(tmp_path / "one_more.yml", {"epochs": 1})
    run_cli(["nh-run", "continue_training", "--run-dir", first, "--config-file", one_more], cwd=tmp_path)
    second = first / "continue_training_from_epoch002"
    run_cli(["nh-run", "continue_training", "--run-dir", second, "--config-file", one_more], cwd=tmp_path)
    third = second / "continue_training_from_epoch003"
    log = (third / "output.log").read_text()
    assert f"sampling with the influence weights of {first / 'influence' / 'influence_epoch002.nc'}" in log
    assert not (second / "influence").exists() and not (third / "influence").exists()  # no off-schedule refresh
    assert _same_state(_state(straight, 4), _state(third, 4)), "2 + 1 + 1 epochs differ from 4 straight"
    with xr.open_dataset(straight / "influence" / "influence_epoch002.nc") as a, \
            xr.open_dataset(first / "influence" / "influence_epoch002.nc") as b:
        assert np.array_equal(a["weights"].values, b["weights"].values)
