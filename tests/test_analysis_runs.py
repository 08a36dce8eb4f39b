"""Analysis of trained run directories: NH's results and metrics, evaluation of missing results, seed ensembles,
tidy tables and ``nh-xb compare``."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli, synth_config, train_in_process
from nh_crossbasin import analysis as xa

METRICS = ["NSE", "KGE", "Alpha-NSE", "Beta-NSE", "FHV", "FMS", "FLV"]



@pytest.fixture(scope="module")
def runs(synth_data, tmp_path_factory) -> dict:
    """Three tiny runs on the synthetic basins: plain NH (seeds 1 and 2) and the plugin's NSE* loss (seed 1)."""
    root = tmp_path_factory.mktemp("analysis_runs")
    keys = {"metrics": METRICS, "epochs": 2, "max_updates_per_epoch": 6, "clip_targets_to_zero": ["streamflow"]}
    return {
        "nh_seed1": train_in_process(synth_config(synth_data, root, experiment_name="nh_seed1", seed=1, **keys)),
        "nh_seed2": train_in_process(synth_config(synth_data, root, experiment_name="nh_seed2", seed=2, **keys)),
        "nse_star": train_in_process(synth_config(synth_data, root, experiment_name="nse_star", seed=1,
                                                  loss="xb_nse_star", xb_sampler="uniform", **keys)),
    }


def test_missing_results_are_evaluated_with_nh(runs):
    run_dir = runs["nse_star"]
    shutil.rmtree(run_dir / "test", ignore_errors=True)
    assert xa.results_file(run_dir) is None
    with pytest.raises(FileNotFoundError, match="nh-run evaluate"):
        xa.load_run(run_dir, evaluate_missing=False)
    loaded = xa.load_run(run_dir)
    assert xa.results_file(run_dir) == run_dir / "test" / "model_epoch002" / "test_results.p"
    assert loaded.epoch == 2 and loaded.period == "test" and loaded.name == run_dir.name
    assert sorted(loaded.basins) == [f"synth_{i:03d}" for i in range(12)]
    assert (run_dir / "test" / "model_epoch002" / "test_metrics.csv").is_file()  # NH's own evaluation wrote it
    with pytest.raises(FileNotFoundError, match="config.yml"):
        xa.load_run(run_dir / "test")


def test_metrics_equal_nh_and_a_hand_computed_nse(runs):
    run = xa.load_run(runs["nh_seed1"])
    table = xa.basin_metrics(run, METRICS, progress=False)
    nh = pd.read_csv(runs["nh_seed1"] / "test" / "model_epoch002" / "test_metrics.csv",
                     dtype={"basin": str}).set_index("basin")
    assert table.attrs == {"run": run.name, "period": "test", "epoch": 2}
    pd.testing.assert_frame_equal(table.sort_index(), nh[METRICS].sort_index(), check_names=False, rtol=1e-6)  # the CSV holds float32 values
    with open(xa.results_file(runs["nh_seed1"]), "rb") as fp:
        data = pickle.load(fp)["synth_004"]["1D"]["xr"]
    obs = data["streamflow_obs"].values[:, -1]
    sim = np.clip(data["streamflow_sim"].values[:, -1], 0, None)  # clip_targets_to_zero: streamflow
    keep = np.isfinite(obs) & np.isfinite(sim)
    nse = 1 - ((sim[keep] - obs[keep]) ** 2).sum() / ((obs[keep] - obs[keep].mean()) ** 2).sum()
    assert table.loc["synth_004", "NSE"] == pytest.approx(nse, rel=1e-6)


def test_ensemble_is_the_mean_prediction_not_the_mean_of_metrics(runs):
    from neuralhydrology.utils.nh_results_ensemble import create_results_ensemble

    members = [runs["nh_seed1"], runs["nh_seed2"]]
    ensemble = xa.ensemble_results(members, name="two seeds")
    table = xa.basin_metrics(ensemble, ["NSE", "KGE"], progress=False)
    sims = []
    for run_dir in members:
        with open(xa.results_file(run_dir), "rb") as fp:
            sims.append(pickle.load(fp)["synth_007"]["1D"]["xr"])
    obs = sims[0]["streamflow_obs"].values[:, -1]
    mean_sim = np.clip((sims[0]["streamflow_sim"].values + sims[1]["streamflow_sim"].values)[:, -1] / 2, 0, None)
    keep = np.isfinite(obs)
    nse = 1 - ((mean_sim[keep] - obs[keep]) ** 2).sum() / ((obs[keep] - obs[keep].mean()) ** 2).sum()
    assert table.loc["synth_007", "NSE"] == pytest.approx(nse, rel=1e-6)
    assert ensemble.name == "two seeds" and ensemble.epoch == 2 and ensemble.run_dirs == members
    nh_ensemble = create_results_ensemble(members, metrics=["NSE", "KGE"])
    for basin in table.index:
        assert table.loc[basin, "NSE"] == pytest.approx(nh_ensemble[basin]["1D"]["NSE"], rel=1e-9)
        assert table.loc[basin, "KGE"] == pytest.approx(nh_ensemble[basin]["1D"]["KGE"], rel=1e-9)
    single = [xa.basin_metrics(m, ["NSE"], progress=False)["NSE"] for m in members]
    assert not np.allclose(table["NSE"], (single[0] + single[1]) / 2)


def test_tidy_metrics_table_and_its_views(runs):
    tidy = xa.metrics_table({"A": runs["nh_seed1"], "B": runs["nse_star"]}, ["NSE", "kge"], progress=False)
    assert list(tidy.columns) == ["run", "basin", "metric", "value"]
    assert len(tidy) == 2 * 12 * 2 and set(tidy["metric"]) == {"NSE", "KGE"}
    wide = xa.wide_metric(tidy, "NSE")
    assert list(wide.columns) == ["A", "B"] and wide.shape == (12, 2)
    tables = xa.run_tables(tidy)
    comparison = xa.paired_comparison(tables["A"], tables["B"], ["NSE", "KGE"])
    assert comparison.loc[0, "n_basins"] == 12
    with pytest.raises(ValueError, match="Unknown metrics"):
        xa.basin_metrics(runs["nh_seed1"], ["NSE", "not-a-metric"])


def test_compare_command_prints_the_table_and_writes_figures(runs, synth_data, tmp_path, capsys):
    from nh_crossbasin.cli.main import main

    truth = pd.read_csv(synth_data.out_dir / "ground_truth.csv", dtype={"basin_id": str})
    attributes = truth[["basin_id", "regime", "latitude"]].assign(longitude=np.linspace(-120, -70, len(truth)))
    attributes.to_csv(tmp_path / "attributes.csv", index=False)
    a, b, c = runs["nh_seed1"], runs["nse_star"], runs["nh_seed2"]
    out = tmp_path / "compare"
    args = ["nh-xb", "compare", a, b, f"{a},{c}", "--names", "NSE", "NSE*", "NSE seeds", "--out", out,
            "--attributes", tmp_path / "attributes.csv", "--region-column", "regime", "--metrics", "NSE", "KGE"]
    main([str(arg) for arg in args[1:]])  # in-process; test_analysis_realdata runs the console script
    stdout = capsys.readouterr().out
    assert "NSE* (B) vs NSE (A), test period, 12 common basins" in stdout
    assert "NSE seeds (B) vs NSE (A)" in stdout and "A = NSE, B = NSE seeds" in stdout
    for name in ("cdf.png", "metrics_per_basin.csv", "comparison.csv", "map_NSE_NSE_vs_NSE.png",
                 "map_NSE_NSE_seeds_vs_NSE.png"):
        assert (out / name).is_file(), name
    comparison = pd.read_csv(out / "comparison.csv")
    assert set(comparison["region"].astype(str)) == {"all", "0", "1"}
    tables = {n: xa.basin_metrics(r, ["NSE", "KGE"], progress=False) for n, r in (("A", a), ("B", b))}
    regimes = truth.set_index("basin_id")["regime"]
    expected = xa.paired_comparison(tables["A"], tables["B"], regions=regimes)
    written = comparison[comparison["b"] == "NSE*"].reset_index(drop=True)
    np.testing.assert_allclose(written["p_wilcoxon"], expected["p_wilcoxon"], rtol=1e-9)
    np.testing.assert_allclose(written["cohens_d"], expected["cohens_d"], rtol=1e-9)
    with pytest.raises(SystemExit) as refused:  # a second compare into the same folder is refused
        main([str(arg) for arg in args[1:]])
    assert refused.value.code == 2 and "--overwrite" in capsys.readouterr().err


def test_compare_console_script_help_and_usage_errors(runs, tmp_path):
    usage = run_cli(["nh-xb", "compare", "--help"], cwd=tmp_path)
    assert "seed ensemble" in usage.stdout and "--region-column" in usage.stdout
    alone = run_cli(["nh-xb", "compare", runs["nh_seed1"]], cwd=tmp_path, check=False)
    assert alone.returncode == 2 and "at least two runs" in alone.stderr
    missing = run_cli(["nh-xb", "compare", runs["nh_seed1"], tmp_path / "nothing"], cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "names no NH run directory" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
