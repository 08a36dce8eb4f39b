"""Running designs and specialisation for real (tiny NH runs in subprocesses): results, resume after a kill,
failure isolation, and Ray equal to a serial run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli, single_run_dir, synth_config, write_yaml
from nh_crossbasin.experiments.runner import Task, execute, run_tasks, write_failures

pytestmark = pytest.mark.slow
TINY = {"hidden_size": 4, "seq_length": 20, "max_updates_per_epoch": 4, "batch_size": 16}


@pytest.fixture(scope="module")
def pooled(synth_data, tmp_path_factory):
    """A tiny pooled run (2 epochs) on the synthetic basins and a 2-target file."""
    root = tmp_path_factory.mktemp("pooled")
    config = write_yaml(root / "pooled.yml", synth_config(synth_data, root / "runs", loss="xb_nse_star", epochs=2,
                                                          **TINY))
    run_cli(["nh-run", "train", "--config-file", config], cwd=root)
    targets = root / "targets.txt"
    targets.write_text("\n".join(sorted(synth_data.basins)[:2]) + "\n")
    return single_run_dir(root / "runs"), targets, root


def test_two_designs_end_to_end(tmp_path, synth_data):
    base = write_yaml(tmp_path / "base.yml", synth_config(synth_data, tmp_path, loss="xb_nse_star",
                                                          xb_influence_warmup_epochs=0, **TINY))
    regions = f"{synth_data.out_dir / 'ground_truth.csv'}:regime"
    for design, spec in (("global-vs-local", ["--regions", regions]),
                         ("homogeneous-vs-heterogeneous", ["--seeds", "2"])):
        out = tmp_path / design
        proc = run_cli(["nh-xb", "experiment", design, "--config", base, *spec, "--out", out, "--run",
                        "--workers", "2"], cwd=tmp_path)
        results = pd.read_csv(out / "results.csv", dtype={"basin": str})
        assert "median NSE" in proc.stdout
        if design == "global-vs-local":
            assert set(results["variant"]) == {"global", "local"}
            # every basin has exactly one global and one local prediction
            assert (results.groupby(["basin", "variant"]).size() == 1).all()
            assert set(results["basin"]) == set(synth_data.basins)
        else:
            assert set(results["variant"]) == {"homogeneous", "uniform_replacement", "influence_global"}
            assert (results.groupby(["variant", "seed"]).size() == len(synth_data.basins)).all()
            ensembles = pd.read_csv(out / "results_ensemble.csv", dtype={"basin": str})
            assert (ensembles["members"] == 2).all() and (ensembles.groupby("variant").size() == 12).all()
            assert "uniform_replacement" in proc.stdout and "vs control" in proc.stdout
            assert "seed ensembles (mean prediction of 2 seeds)" in proc.stdout
            assert len(list((out / "runs" / "influence_global_seed1").glob("*/influence/influence_epoch001.nc"))) == 1
    # running again skips everything
    again = run_cli(["nh-xb", "experiment", "global-vs-local", "--config", base, "--regions", regions, "--out",
                     tmp_path / "global-vs-local", "--run"], cwd=tmp_path)
    assert again.stdout.count("skipped") == 3


def test_runner_reports_a_failing_task_and_finishes_the_others(tmp_path, synth_data):
    good = write_yaml(tmp_path / "good.yml", synth_config(synth_data, tmp_path / "good", loss="xb_nse_star", **TINY))
    bad = write_yaml(tmp_path / "bad.yml", synth_config(synth_data, tmp_path / "bad", **TINY,
                                                        static_attributes=["no_such_attribute"]))
    results = run_tasks([Task("bad", "train", bad, tmp_path / "bad"), Task("good", "train", good, tmp_path / "good")],
                        workers=2, log=lambda line: None)
    assert [r["status"] for r in results] == ["failed", "done"]
    assert "no_such_attribute" in results[0]["error"]
    assert execute(Task("good", "train", good, tmp_path / "good"))["status"] == "skipped"

    assert write_failures(tmp_path, results) == [results[0]]
    assert "no_such_attribute" in json.loads((tmp_path / "failures.json").read_text())["bad"]
    write_failures(tmp_path, [dict(results[0], status="done"), results[1]])  # retried and finished
    assert not (tmp_path / "failures.json").exists()


def test_specialize_resumes_after_a_killed_run(tmp_path, pooled):
    run_dir, targets, _ = pooled
    out = tmp_path / "spec"
    command = [str(Path(sys.executable).parent / "nh-xb"), "specialize", "--run-dir", str(run_dir), "--targets",
               str(targets), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 300
    while not list(out.glob("units/*/runs/*/test/model_epoch*/test_metrics.csv")):
        assert proc.poll() is None and time.time() < deadline, "specialize ended before the first unit finished"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first_done = {p.parts[-6] for p in out.glob("units/*/runs/*/test/model_epoch*/test_metrics.csv")}
    resumed = run_cli(["nh-xb", "specialize", "--run-dir", run_dir, "--targets", targets, "--out", out], cwd=tmp_path)
    for unit in first_done:
        assert f"skipped  {unit}" in resumed.stdout
    summary = json.loads((out / "specialized" / "specialization.json").read_text())
    assert set(summary["status"].values()) <= {"done", "skipped"} and len(summary["units"]) == 2
    merged = pd.read_csv(out / "specialized" / "test" / "model_epoch001" / "test_metrics.csv", dtype={"basin": str})
    assert sorted(merged["basin"]) == targets.read_text().split()
    for unit in summary["units"]:  # each unit sampled by its own target's weights, measured before epoch 1
        finished = [p for p in (out / "units" / unit / "runs").iterdir() if (p / "test").exists()]
        assert len(finished) == 1 and (finished[0] / "influence" / "influence_epoch001.nc").exists()
    # the merged results are one run for the analysis: `nh-xb compare POOLED OUT/specialized` works
    compared = run_cli(["nh-xb", "compare", run_dir, out / "specialized", "--out", tmp_path / "compare",
                        "--metrics", "NSE"], cwd=tmp_path)
    assert "(B) vs" in compared.stdout and (tmp_path / "compare" / "comparison.csv").is_file()


def test_specialize_from_an_earlier_pooled_epoch_starts_from_its_weights(tmp_path, pooled):
    """At learning rate 0 the fine-tuned weights are the start's: those of --pooled-epoch 1, not the last epoch's."""
    import torch
    run_dir, targets, _ = pooled
    pooled_weights = {e: torch.load(run_dir / f"model_epoch00{e}.pt", weights_only=True) for e in (1, 2)}
    assert any(not torch.equal(pooled_weights[1][k], pooled_weights[2][k]) for k in pooled_weights[1])
    started = {}
    for name, extra in (("epoch1", ["--pooled-epoch", "1"]), ("last", [])):
        out = tmp_path / name
        run_cli(["nh-xb", "specialize", "--run-dir", run_dir, "--targets", targets, "--out", out, "--sampler",
                 "uniform", "--learning-rate", "0", *extra], cwd=tmp_path)
        unit_run = single_run_dir(out / "units" / "all_targets" / "runs")
        started[name] = torch.load(unit_run / "model_epoch001.pt", weights_only=True)
        summary = json.loads((out / "specialized" / "specialization.json").read_text())
        assert summary["pooled_epoch"] == (1 if extra else 2)
    for name, epoch in (("epoch1", 1), ("last", 2)):
        assert all(torch.equal(started[name][k], pooled_weights[epoch][k]) for k in pooled_weights[epoch]), name
    # the negative control of the same assertion: the earlier start is not the last epoch's weights
    assert not all(torch.equal(started["epoch1"][k], pooled_weights[2][k]) for k in pooled_weights[2])


def test_ray_with_two_workers_equals_a_serial_run(tmp_path, pooled):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'nh-crossbasin[ray]'")
    run_dir, targets, _ = pooled
    metrics = {}
    for name, extra in (("serial", ["--workers", "1"]), ("ray", ["--ray", "local", "--workers", "2"])):
        out = tmp_path / name
        run_cli(["nh-xb", "specialize", "--run-dir", run_dir, "--targets", targets, "--out", out,
                 "--threads-per-task", "1", *extra], cwd=tmp_path, env={"RAY_AUTH_MODE": "disabled"})
        metrics[name] = pd.read_csv(out / "specialized" / "test" / "model_epoch001" / "test_metrics.csv",
                                    dtype={"basin": str}).set_index("basin").sort_index()
    pd.testing.assert_frame_equal(metrics["serial"], metrics["ray"], check_exact=True)
    with open(tmp_path / "ray" / "units" / metrics["ray"].index[0] / "finetune.yml") as fp:
        assert "xb_influence_targets_file" in fp.read()
