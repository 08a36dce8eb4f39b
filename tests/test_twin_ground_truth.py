"""A synthetic ground truth where pooling truly hurts (``nh-xb synth --twins``), and what influence finds in it.

Twin basins share every model input and belong to opposite hidden regimes. Known answers, each able to fail:

1. regime-wise training (one model per regime) beats one pooled model (paired Wilcoxon over (basin, seed), p < 0.01);
2. in the pooled model's influence matrix, the off-diagonal within-regime mean exceeds the cross-regime mean, and
   k-means on its standardised rows recovers the regimes (ARI >= 0.8); the same assertions fail on a randomly
   permuted matrix;
3. per-cluster specialisation (``nh-xb specialize --clusters 2``) beats the pooled model *and* the same fine-tune
   with NH's shuffle (``--sampler uniform``, the same updates), p < 0.01;
4. on the classic (non-twin) data the influence structure is reported, without asserting a gain.

Everything runs through NH's own training and evaluation (the plugin's experiment runner and ``specialize``).
The larger version, with every arm and control, is ``benchmarks/heterogeneous_vs_homogeneous.py synthetic --twins``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats
from sklearn.metrics import adjusted_rand_score

from conftest import write_yaml

pytestmark = pytest.mark.slow

SEEDS = (1, 2)
MODEL = {"model": "cudalstm", "head": "regression", "output_activation": "linear", "hidden_size": 32,
         "initial_forget_bias": 3, "output_dropout": 0.0, "seq_length": 60, "predict_last_n": 1,
         "loss": "xb_nse_star", "optimizer": "Adam", "learning_rate": {0: 5e-3, 4: 1e-3}, "batch_size": 128,
         "epochs": 6, "num_workers": 0, "device": "cpu", "validate_every": None, "log_tensorboard": False,
         "metrics": ["NSE", "KGE"], "verbose": 0, "clip_targets_to_zero": ["streamflow"], "save_weights_every": 1,
         "xb_influence_probe_size": 128}


def _config(summary, root, name, regime=None, seed=1):
    cfg = dict(summary.nh_config_entries(regime), **MODEL, experiment_name=name, seed=seed,
               run_dir=str(root / "runs" / name))
    return write_yaml(root / f"{name}.yml", cfg)


def _metrics(run_dir, arm, seed):
    from nh_crossbasin.experiments.results import run_metrics
    return run_metrics(run_dir).assign(arm=arm, seed=seed)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Twin data; per seed a pooled and two regime-wise models, the pooled model's influence record, and the
    per-cluster fine-tunes with influence weights and with NH's shuffle."""
    from nh_crossbasin.experiments.runner import Task, finished_run_dir, run_tasks
    from nh_crossbasin.experiments.specialize import specialize
    from nh_crossbasin.nh.offline_influence import influence_for_run
    from nh_crossbasin.synth import generate_basins

    root = tmp_path_factory.mktemp("twins")
    summary = generate_basins(root / "data", n_basins=24, n_regimes=2, years=10, seed=0, twins=True)
    tasks = []
    for seed in SEEDS:
        for name, regime in ((f"pooled_s{seed}", None), (f"regime0_s{seed}", 0), (f"regime1_s{seed}", 1)):
            tasks.append(Task(name, "train", _config(summary, root, name, regime, seed), root / "runs" / name))
    results = run_tasks(tasks, workers=2, log=lambda line: None)
    assert all(r["status"] == "done" for r in results), [r["error"][-2000:] for r in results]
    tables, records = [], {}
    for seed in SEEDS:
        pooled = finished_run_dir(root / "runs" / f"pooled_s{seed}")
        tables.append(_metrics(pooled, "pooled", seed))
        for regime in (0, 1):
            tables.append(_metrics(finished_run_dir(root / "runs" / f"regime{regime}_s{seed}"), "regimewise", seed))
        records[seed], _ = influence_for_run(pooled, write=False)
        for sampler in ("influence", "uniform"):
            out = root / f"specialize_{sampler}_s{seed}"
            done = specialize(pooled, summary.basin_file(), out, clusters=2, epochs=1, learning_rate=1e-3,
                              workers=2, sampler=sampler, log=lambda line: None)
            assert set(done["status"].values()) == {"done"}, done
            tables.append(_metrics(out / "specialized", sampler, seed))
    table = pd.concat(tables, ignore_index=True)
    return summary, table.pivot_table(index=["basin", "seed"], columns="arm", values="NSE"), records


def _paired(wide, better, worse):
    diff = (wide[better] - wide[worse]).dropna()
    return diff, stats.wilcoxon(diff).pvalue


def test_regime_wise_training_beats_pooling(study):
    _, wide, _ = study
    diff, p = _paired(wide, "regimewise", "pooled")
    print(f"regime-wise vs pooled: median test NSE {wide['regimewise'].median():.3f} vs {wide['pooled'].median():.3f}, "
          f"median difference {diff.median():+.3f}, improved {(diff > 0).mean():.2f}, p = {p:.2g}, pairs {len(diff)}")
    assert len(diff) == 24 * len(SEEDS)
    assert wide["regimewise"].median() > wide["pooled"].median() and diff.median() > 0 and p < 0.01


def regime_structure(influence: np.ndarray, regimes: np.ndarray, seed: int = 0) -> tuple:
    """(off-diagonal within-regime mean, cross-regime mean, ARI of the analysis module's clustering of the rows
    (k = 2, each row standardised)).

    The standardised rows group targets by which sources help them, not by how strongly they respond overall.
    k-means on the raw rows (what ``nh-xb specialize`` clusters, :func:`raw_row_ari`), asserted before, was fragile:
    on an AVX-512 CPU, where the same seeds train to models that differ at rounding level, it gave ARI 0.54 for
    seed 1 (standardised 0.83) although the within-regime mean (+0.175) stayed far above the cross-regime mean
    (-0.115). It is printed, not asserted.
    """
    from nh_crossbasin.analysis.influence import cluster_influence_rows
    same = regimes[:, None] == regimes[None, :]
    off_diagonal = ~np.eye(len(regimes), dtype=bool)
    names = [f"b{i}" for i in range(len(regimes))]
    record = xr.Dataset({"influence": (("target", "source"), influence)}, coords={"target": names, "source": names})
    labels = cluster_influence_rows(record, 2, seed=seed).loc[names].to_numpy()
    return (float(np.nanmean(influence[same & off_diagonal])), float(np.nanmean(influence[~same])),
            float(adjusted_rand_score(regimes, labels)))


def raw_row_ari(influence: np.ndarray, regimes: np.ndarray) -> float:
    """ARI of the clusters ``nh-xb specialize --clusters 2`` forms (k-means on the raw rows) against the regimes."""
    from nh_crossbasin.experiments.specialize import cluster_targets
    names = [f"b{i}" for i in range(len(regimes))]
    label = {name: k for k, members in enumerate(cluster_targets(influence, names, 2).values()) for name in members}
    return float(adjusted_rand_score(regimes, [label[name] for name in names]))


@pytest.mark.parametrize("seed", SEEDS)
def test_influence_recovers_the_hidden_regimes_and_a_permuted_matrix_does_not(study, seed):
    summary, _, records = study
    record = records[seed]
    assert list(record["target"].values) == list(record["source"].values)
    regimes = pd.Series(summary.regimes).loc[record["source"].values].to_numpy()
    influence = record["influence"].values
    within, across, ari = regime_structure(influence, regimes)
    print(f"seed {seed}: within-regime {within:+.3f}, cross-regime {across:+.3f}, ARI {ari:.2f} (raw rows "
          f"{raw_row_ari(influence, regimes):.2f}), diagonal mean {np.diag(influence).mean():.3f}")
    assert within > across and ari >= 0.8
    assert (np.diag(influence) < 1).all()  # honest diagonal: never a probe compared with itself
    # negative control: the same matrix with rows and columns permuted at random must fail the same assertions
    rng = np.random.default_rng(seed)
    failures = 0
    for _ in range(20):
        order = rng.permutation(len(regimes))
        p_within, p_across, p_ari = regime_structure(influence[np.ix_(order, order)], regimes)
        failures += not (p_within > p_across and p_ari >= 0.8)
    assert failures >= 19, f"a permuted matrix passed {20 - failures} of 20 times"


def test_per_cluster_specialisation_beats_pooled_and_the_uniform_fine_tune(study):
    _, wide, _ = study
    for control in ("pooled", "uniform"):
        diff, p = _paired(wide, "influence", control)
        print(f"specialised vs {control}: median difference {diff.median():+.3f}, improved {(diff > 0).mean():.2f}, "
              f"p = {p:.2g}")
        assert diff.median() > 0 and p < 0.01


def test_classic_data_reports_its_influence_structure(tmp_path):
    """On the classic (non-twin) data the attributes tell basins apart; the test reports the regime structure it
    measures and asserts only that the measurement is well formed (no gain is claimed)."""
    from nh_crossbasin.experiments.runner import Task, finished_run_dir, run_tasks
    from nh_crossbasin.nh.offline_influence import influence_for_run
    from nh_crossbasin.synth import generate_basins

    summary = generate_basins(tmp_path / "data", n_basins=16, n_regimes=2, years=6, seed=0)
    config = write_yaml(tmp_path / "classic.yml", dict(summary.nh_config_entries(), **dict(
        MODEL, epochs=2, xb_influence_probe_size=32), experiment_name="classic", seed=1,
        run_dir=str(tmp_path / "runs" / "classic")))
    assert run_tasks([Task("classic", "train", config, tmp_path / "runs" / "classic")],
                     log=lambda line: None)[0]["status"] == "done"
    record, _ = influence_for_run(finished_run_dir(tmp_path / "runs" / "classic"), write=False)
    regimes = pd.Series(summary.regimes).loc[record["source"].values].to_numpy()
    within, across, ari = regime_structure(record["influence"].values, regimes)
    raw_ari = raw_row_ari(record["influence"].values, regimes)
    print(f"classic data: within-regime {within:+.3f}, cross-regime {across:+.3f}, ARI {ari:.2f} (raw rows "
          f"{raw_ari:.2f}; reported only)")
    assert np.isfinite([within, across, ari, raw_ari]).all() and -1 <= ari <= 1 and -1 <= raw_ari <= 1
