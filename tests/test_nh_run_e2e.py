"""End-to-end: NH's unmodified `nh-run` (and `nh-xb`, and the Python route) in subprocesses, on real and synthetic data.

These train tiny models for a handful of updates; each test takes seconds to a minute on 2 CPU cores.
"""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from conftest import caravan_config, run_cli, single_run_dir, synth_config, write_yaml

pytestmark = pytest.mark.slow


def _weights(run_dir, epoch=1):
    return torch.load(run_dir / f"model_epoch{epoch:03d}.pt", map_location="cpu")


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def _train(tmp_path, name, cfg, command=("nh-run", "train"), env=None):
    parent = tmp_path / name
    parent.mkdir()
    cfg = dict(cfg, run_dir=str(parent))
    config_file = write_yaml(tmp_path / f"{name}.yml", cfg)
    run_cli([*command, "--config-file", config_file], cwd=tmp_path, env=env)
    return single_run_dir(parent)


def test_real_data_train_evaluate_continue_and_finetune_with_plugin_loss(tmp_path):
    cfg = caravan_config(tmp_path, loss="xb_nse_star", xb_nse_eps=0.1)
    run_dir = _train(tmp_path, "real", cfg)
    assert (run_dir / "model_epoch001.pt").exists()
    assert "xb_nse_star" in (run_dir / "config.yml").read_text()

    run_cli(["nh-run", "evaluate", "--run-dir", run_dir], cwd=tmp_path)
    metrics = pd.read_csv(run_dir / "test" / "model_epoch001" / "test_metrics.csv", dtype={"basin": str})
    assert len(metrics) == 8 and metrics["NSE"].notna().all()

    run_cli(["nh-run", "continue_training", "--run-dir", run_dir], cwd=tmp_path)
    assert (run_dir / "continue_training_from_epoch001" / "model_epoch002.pt").exists()

    finetune_cfg = write_yaml(tmp_path / "finetune.yml", {
        "base_run_dir": str(run_dir), "finetune_modules": ["head"], "experiment_name": "real_finetune",
        "run_dir": str(tmp_path / "finetuned"), "epochs": 1, "learning_rate": 0.001})
    run_cli(["nh-run", "finetune", "--config-file", finetune_cfg], cwd=tmp_path)
    finetuned = single_run_dir(tmp_path / "finetuned")
    before, after = _weights(run_dir), _weights(finetuned)
    assert torch.equal(before["lstm.weight_ih_l0"], after["lstm.weight_ih_l0"])  # frozen
    assert not torch.equal(before["head.net.0.weight"], after["head.net.0.weight"])  # tuned


def test_synthetic_data_train_and_evaluate_with_plugin_loss(tmp_path, synth_data):
    run_dir = _train(tmp_path, "synth", synth_config(synth_data, tmp_path, loss="xb_nse_star"))
    run_cli(["nh-run", "evaluate", "--run-dir", run_dir], cwd=tmp_path)
    metrics = pd.read_csv(run_dir / "test" / "model_epoch001" / "test_metrics.csv", dtype={"basin": str})
    assert sorted(metrics["basin"]) == sorted(synth_data.basins)


def test_nh_xb_and_python_route_give_the_same_run_as_nh_run(tmp_path, synth_data):
    cfg = synth_config(synth_data, tmp_path, loss="xb_nse_star", xb_sampler="uniform")
    via_nh_run = _weights(_train(tmp_path, "nh_run", cfg))
    # explicit activation must work although the start-up hook is switched off
    off = {"NH_CROSSBASIN_DISABLE": "1"}
    via_nh_xb = _weights(_train(tmp_path, "nh_xb", cfg, command=("nh-xb", "train"), env=off))
    script = ("import sys; from pathlib import Path; import nh_crossbasin; nh_crossbasin.register(); "
              "from neuralhydrology.nh_run import start_run; start_run(config_file=Path(sys.argv[-1]))")
    via_python = _weights(_train(tmp_path, "python", cfg, command=("python", "-c", script), env=off))
    _assert_same_weights(via_nh_run, via_nh_xb)
    _assert_same_weights(via_nh_run, via_python)


def _logged_losses(run_dir):
    return [line.split("average loss:")[1] for line in (run_dir / "output.log").read_text().splitlines()
            if "average loss:" in line]


def test_plain_nh_config_trains_exactly_as_without_plugin(tmp_path):
    cfg = caravan_config(tmp_path, loss="NSE", model="cudalstm")
    with_plugin = _train(tmp_path, "with", cfg)
    without_plugin = _train(tmp_path, "without", cfg, env={"NH_CROSSBASIN_DISABLE": "1"})
    _assert_same_weights(_weights(with_plugin), _weights(without_plugin))
    assert _logged_losses(with_plugin) == _logged_losses(without_plugin) != []
    assert "xb_" not in (with_plugin / "config.yml").read_text()


def test_disabled_plugin_fails_with_instructions_and_leaves_no_run_dir(tmp_path, synth_data):
    parent = tmp_path / "runs"
    parent.mkdir()
    config_file = write_yaml(tmp_path / "xb.yml", synth_config(synth_data, parent, loss="xb_nse_star"))
    proc = run_cli(["nh-run", "train", "--config-file", config_file], cwd=tmp_path,
                   env={"NH_CROSSBASIN_DISABLE": "1"}, check=False)
    assert proc.returncode != 0
    assert "nh-crossbasin plugin, which is not active: NH_CROSSBASIN_DISABLE=1 is set" in proc.stderr
    assert "unsetting NH_CROSSBASIN_DISABLE" in proc.stderr
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize("bad, expected", [
    ({"xb_samplr": "uniform"}, r"'xb_samplr': did you mean 'xb_sampler'\?"),
    ({"xb_sampler": "unifrom"}, r"Config key 'xb_sampler': 'unifrom' is not allowed.*Allowed: one of"),
    ({"loss": "xb_nse_sta"}, r"'loss': 'xb_nse_sta' is not an nh-crossbasin loss.*xb_nse_star"),
])
def test_typo_in_plugin_key_or_value_names_it_and_leaves_no_run_dir(tmp_path, synth_data, bad, expected):
    parent = tmp_path / "runs"
    parent.mkdir()
    config_file = write_yaml(tmp_path / "typo.yml", synth_config(synth_data, parent, **bad))
    proc = run_cli(["nh-run", "train", "--config-file", config_file], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    import re
    assert re.search(expected, proc.stderr), proc.stderr[-2000:]
    assert list(parent.iterdir()) == []
