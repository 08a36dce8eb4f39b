"""One test per row of the README table "What happens when ...": every bad input gets a clear error that names the
key, file or basin (before any run directory exists wherever the config and data tell), or a documented, logged
fallback; nothing existing is overwritten."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import nh_crossbasin
from conftest import run_cli, single_run_dir, synth_config, write_yaml

TINY = {"loss": "xb_nse_star", "epochs": 1, "max_updates_per_epoch": 4}


def _train_fails_before_run_dir(tmp_path, cfg, *expected):
    parent = tmp_path / "runs"
    parent.mkdir(exist_ok=True)
    config = write_yaml(tmp_path / "bad.yml", dict(cfg, run_dir=str(parent)))
    proc = run_cli(["nh-run", "train", "--config-file", config], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    for text in expected:
        assert text in proc.stderr, proc.stderr[-3000:]
    assert list(parent.iterdir()) == [], "a run directory was created"


# ------------------------------------------------------------------------------------ checked before the run dir
@pytest.mark.slow
def test_bad_influence_params_are_named_before_the_run_directory(tmp_path, synth_data):
    cfg = synth_config(synth_data, tmp_path, **TINY, xb_sampler="influence", xb_influence_params=["haed"])
    _train_fails_before_run_dir(tmp_path, cfg, "'xb_influence_params'", "haed", "'head'")


@pytest.mark.slow
def test_ealstm_without_static_inputs_is_named_before_the_run_directory(tmp_path, synth_data):
    cfg = synth_config(synth_data, tmp_path, **TINY, model="xb_ealstm", static_attributes=[])
    _train_fails_before_run_dir(tmp_path, cfg, "xb_ealstm", "'static_attributes'")


@pytest.mark.slow
@pytest.mark.parametrize("content, expected", [(None, "is a folder"), ("", "lists no basin"),
                                               ("nope\n", "not training basins")])
def test_bad_targets_file_fails_with_any_sampler(tmp_path, synth_data, content, expected):
    target = tmp_path / "targets"
    if content is None:
        target.mkdir()
    else:
        target.write_text(content)
    cfg = synth_config(synth_data, tmp_path, **TINY, xb_sampler="uniform", xb_influence_targets_file=str(target))
    _train_fails_before_run_dir(tmp_path, cfg, "'xb_influence_targets_file'", expected)


def test_infinite_temperature_and_loss_weights_without_nse_star_are_refused():
    nh_crossbasin.register()
    from neuralhydrology.utils.config import Config
    with pytest.raises(ValueError, match="'xb_influence_temperature'.*finite"):
        Config({"xb_influence_temperature": float("inf")})
    from nh_crossbasin.nh.weighted_draw import WeightedDraw
    with pytest.raises(ValueError, match="'xb_influence_apply'.*xb_nse_star"):
        WeightedDraw.check_config(Config({"loss": "NSE", "xb_influence_apply": "loss"}))


# ------------------------------------------------------------------------------------------- degenerate basins
def test_degenerate_basins_are_found_with_their_reason():
    from nh_crossbasin.nh.degenerate import find_degenerate_basins
    rng = np.random.default_rng(0)
    basins = np.repeat(["ok1", "ok2", "flat", "almost", "single", "empty"], [50, 50, 50, 50, 1, 3])
    targets = rng.normal(size=(len(basins), 1))
    targets[basins == "flat"] = 1.5
    targets[basins == "almost"] = 2.0 + 1e-6 * rng.normal(size=(50, 1))
    targets[basins == "empty"] = np.nan
    table = find_degenerate_basins(["ok1", "ok2", "flat", "almost", "single", "empty", "absent"], basins, targets)
    assert table.loc["flat", "reason"] == "zero target variance"
    assert table.loc["almost", "reason"].startswith("near-zero target variance")
    assert table.loc["single", "reason"].startswith("fewer than 2")
    assert table.loc["empty", "reason"] == table.loc["absent", "reason"] == "no valid training target"
    assert "ok1" not in table.index and "ok2" not in table.index
    # negative control: the same basins with ordinary variance are not flagged
    assert find_degenerate_basins(["ok1", "ok2"], basins[:100], targets[:100]).empty


@pytest.fixture
def flat_basin_data(synth_data, tmp_path):
    """A copy of the synthetic data whose first basin's streamflow is constant (a stuck gauge)."""
    import shutil
    data = tmp_path / "data"
    shutil.copytree(synth_data.out_dir, data)
    flat = synth_data.basins[0]
    path = data / "time_series" / f"{flat}.nc"
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    ds["streamflow"][:] = 2.0
    path.unlink()
    ds.to_netcdf(path)
    return data, flat


@pytest.mark.slow
def test_constant_streamflow_basin_is_excluded_with_one_warning_even_with_eps_zero(tmp_path, synth_data,
                                                                                  flat_basin_data):
    data, flat = flat_basin_data
    cfg = synth_config(synth_data, tmp_path, **TINY, data_dir=str(data), xb_nse_eps=0.0)
    parent = tmp_path / "runs"
    parent.mkdir()
    config = write_yaml(tmp_path / "flat.yml", dict(cfg, run_dir=str(parent)))
    run_cli(["nh-run", "train", "--config-file", config], cwd=tmp_path)
    run_dir = single_run_dir(parent)
    log = (run_dir / "output.log").read_text()
    assert log.count("degenerate training basins are excluded") == 1 and flat in log
    assert (run_dir / "model_epoch001.pt").exists()
    assert pd.read_csv(run_dir / "degenerate_basins.csv", index_col=0).loc[flat, "reason"] == "zero target variance"
    cfg["xb_degenerate_basins"] = "error"
    config = write_yaml(tmp_path / "flat_error.yml", dict(cfg, run_dir=str(tmp_path / "runs_error")))
    proc = run_cli(["nh-run", "train", "--config-file", config], cwd=tmp_path, check=False)
    output = proc.stdout + proc.stderr  # NH logs the error to its console handler (stdout)
    assert proc.returncode != 0 and "'xb_degenerate_basins: error'" in output and flat in output


# --------------------------------------------------------------------------------------- files are never lost
def test_experiment_results_are_never_overwritten(tmp_path):
    from nh_crossbasin.experiments.experiment import write_table
    path = tmp_path / "results.csv"
    path.write_text("my,own\n1,2\n")
    write_table(pd.DataFrame({"a": [1]}), path)
    write_table(pd.DataFrame({"a": [1]}), path)             # same content: nothing to keep
    write_table(pd.DataFrame({"a": [2]}), path)
    assert (tmp_path / "results.previous_1.csv").read_text() == "my,own\n1,2\n"
    assert (tmp_path / "results.previous_2.csv").read_text() == "a\n1\n"
    assert path.read_text() == "a\n2\n"


def test_reconfiguring_an_experiment_folder_writes_nothing(tmp_path, synth_data):
    from nh_crossbasin.experiments.experiment import build_experiment
    base = write_yaml(tmp_path / "base.yml", synth_config(synth_data, tmp_path, **TINY))
    out = tmp_path / "design"
    build_experiment("homogeneous-vs-heterogeneous", base, None, out, n_seeds=1)
    before = {p: p.read_text() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="nothing was written"):
        build_experiment("homogeneous-vs-heterogeneous", base, None, out, n_seeds=3)
    assert {p: p.read_text() for p in out.rglob("*") if p.is_file()} == before


def test_new_records_get_the_next_free_name(tmp_path):
    from nh_crossbasin.files import next_free_path
    first = next_free_path(tmp_path / "x.nc")
    first.write_text("1")
    second = next_free_path(tmp_path / "x.nc")
    assert first.name == "x.nc" and second.name == "x_2.nc"


# ---------------------------------------------------------------------------------------------- messages
def test_cli_prints_one_clean_line_and_exit_codes(tmp_path):
    bad = run_cli(["nh-xb", "influence", "--run-dir", tmp_path / "no_run"], cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("nh-xb influence: error:") and len(bad.stderr.strip().splitlines()) == 1
    debug = run_cli(["nh-xb", "--debug", "influence", "--run-dir", tmp_path / "no_run"], cwd=tmp_path, check=False)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    usage = run_cli(["nh-xb", "influence"], cwd=tmp_path, check=False)
    assert usage.returncode == 2 and "--run-dir" in usage.stderr


def test_plural_of_loss_in_messages():
    nh_crossbasin.register()
    from neuralhydrology.utils.config import Config
    with pytest.raises(ValueError, match="Plugin losses: xb_nse_star"):
        Config({"loss": "xb_nse_sta"})


# ---------------------------------------------------------------------------- probes and NaN augmentation
def test_probes_do_not_touch_nhs_nan_augmentation_rng(synth_data, tmp_path):
    nh_crossbasin.register()
    from neuralhydrology.datasetzoo import get_dataset
    from neuralhydrology.utils.config import Config

    from nh_crossbasin.nh.probes import draw_probes, probe_batches
    cfg = Config(synth_config(synth_data, tmp_path, **TINY, xb_sampler="influence", nan_step_probability=0.3,
                              nan_sequence_probability=0.1,
                              dynamic_inputs=[["precipitation", "temperature", "pet"]]))
    cfg.run_dir, cfg.train_dir = tmp_path, tmp_path / "train_data"
    dataset = get_dataset(cfg=cfg, is_train=True, period="train", scaler={})
    probes = draw_probes(dataset.sample_basin_index, len(dataset.basins), 4, seed=(1, 2))
    np.random.seed(5)
    state = np.random.get_state()[1].copy()
    first = probe_batches(dataset, probes.source, torch.device("cpu"))
    assert np.array_equal(np.random.get_state()[1], state), "probes drew from numpy's global RNG"
    second = probe_batches(dataset, probes.source, torch.device("cpu"))
    assert all(torch.equal(a["x_d"][k], b["x_d"][k]) for a, b in zip(first, second) for k in a["x_d"])
    assert not any(torch.isnan(b["x_d"][k]).any() for b in first for k in b["x_d"])
    assert dataset.dataset.is_train  # the augmentation is back on for training
