"""Analysis without trained models: paired statistics, k-means, silhouettes, variance reduction, influence records
and figures, each against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from nh_crossbasin import analysis as xa

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------- paired statistics
def test_paired_statistics_match_scipy_by_hand():
    a = np.array([0.50, 0.61, 0.12, -0.30, 0.75, 0.40, 0.66, np.nan])
    b = np.array([0.55, 0.60, 0.30, 0.10, 0.80, 0.40, 0.70, 0.90])
    result = xa.paired_statistics("NSE", a, b)
    a7, b7 = a[:7], b[:7]  # the NaN basin does not count
    d = b7 - a7
    assert result["n_basins"] == 7
    assert result["median_a"] == pytest.approx(np.median(a7)) and result["mean_b"] == pytest.approx(np.mean(b7))
    assert result["median_diff"] == pytest.approx(np.median(d))
    assert result["share_improved"] == pytest.approx(5 / 7)  # one tie, one worse
    assert result["le0_a"] == 1 and result["le0_b"] == 0
    assert result["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert result["cohens_d"] == pytest.approx(d.mean() / d.std(ddof=1))


def test_metrics_with_an_ideal_value_compare_distances_to_it():
    a = np.array([1.3, 0.8, 1.05, 0.5, 1.0])       # Alpha-NSE: ideal 1
    b = np.array([1.1, 0.7, 0.98, 0.9, 1.2])
    result = xa.paired_statistics("Alpha-NSE", a, b)
    d = np.abs(a - 1) - np.abs(b - 1)            # positive: B closer to 1
    assert result["share_improved"] == pytest.approx(3 / 5)
    assert result["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert result["cohens_d"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert result["median_diff"] == pytest.approx(np.median(b - a))
    assert math.isnan(result["le0_a"])
    fhv = xa.paired_statistics("FHV", [-20.0, 10.0], [5.0, -12.0])  # |bias| 20 -> 5 better, 10 -> 12 worse
    assert fhv["share_improved"] == 0.5


def test_paired_comparison_uses_common_basins_and_splits_by_region():
    rng = np.random.default_rng(0)
    basins = [f"b{i:02d}" for i in range(30)]
    a = pd.DataFrame({"NSE": rng.uniform(-0.2, 0.9, 30), "KGE": rng.uniform(-0.2, 0.9, 30)}, index=basins)
    b = a + rng.normal(0.05, 0.1, a.shape)
    b.loc["extra"] = [0.9, 0.9]                  # only in B: ignored
    regions = pd.Series(["east"] * 12 + ["west"] * 18, index=basins)
    table = xa.paired_comparison(a, b, ["NSE", "KGE"], regions=regions, names=("homogeneous", "weighted"))
    assert list(table["region"].unique()) == ["all", "east", "west"]
    west = table[(table["region"] == "west") & (table["metric"] == "KGE")].iloc[0]
    members = regions.index[regions == "west"]
    d = b.loc[members, "KGE"] - a.loc[members, "KGE"]
    assert west["n_basins"] == 18
    assert west["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert west["cohens_d"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert table.loc[0, "n_basins"] == 30
    text = xa.format_comparison(table)
    assert text.startswith("A = homogeneous, B = weighted") and "median B-A" in text and "west" in text


def test_paired_comparison_rejects_metrics_without_direction():
    table = pd.DataFrame({"my_score": [1.0, 2.0]}, index=["a", "b"])
    with pytest.raises(ValueError, match="No direction known"):
        xa.paired_comparison(table, table)


# ------------------------------------------------------------------------------------------- clustering
def blobs(seed=0, per_blob=15):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(0, 0.5, (per_blob, 2)) for c in centers])
    truth = np.repeat(np.arange(3), per_blob)
    order = rng.permutation(len(points))
    return points[order], truth[order]


def test_kmeans_recovers_separable_blobs_reproducibly():
    points, truth = blobs()
    result = xa.kmeans(points, 3, seed=4)
    assert pd.crosstab(result.labels, truth).gt(0).sum(axis=1).eq(1).all()  # each cluster is one blob
    expected_inertia = sum(((points[truth == c] - points[truth == c].mean(axis=0)) ** 2).sum() for c in range(3))
    assert result.inertia == pytest.approx(expected_inertia)
    again = xa.kmeans(points, 3, seed=4)
    assert np.array_equal(result.labels, again.labels) and result.labels[0] == 0
    assert xa.kmeans(points, len(points), seed=1).inertia == pytest.approx(0.0)


def test_silhouette_by_hand():
    points = np.array([[0.0], [1.0], [10.0], [11.0], [30.0]])
    labels = np.array([0, 0, 1, 1, 2])
    s = xa.silhouette_samples(points, labels)
    # point 0: a = 1, b = mean distance to cluster 1 = (10 + 11) / 2 = 10.5
    # point 2: a = 1, b = min(mean(10, 9) = 9.5, 20) = 9.5; point 4 is alone: s = 0
    expected = [(10.5 - 1) / 10.5, (9.5 - 1) / 9.5, (9.5 - 1) / 9.5, (10.5 - 1) / 10.5, 0.0]
    assert s == pytest.approx(expected)
    assert xa.silhouette_score(points, labels) == pytest.approx(np.mean(expected))
    with pytest.raises(ValueError):
        xa.silhouette_samples(points, np.zeros(5))


def test_cluster_scan_prefers_the_true_number_of_blobs():
    points, _ = blobs(seed=1)
    scan, labels = xa.cluster_scan(points, ks=range(2, 7), seed=0, n_init=5)
    assert list(scan["k"]) == [2, 3, 4, 5, 6]
    assert scan.loc[scan["mean_silhouette"].idxmax(), "k"] == 3
    assert (scan["min_silhouette"] <= scan["min_cluster_silhouette"] + 1e-12).all()
    assert labels.shape == (45, 5) and list(labels.columns) == [2, 3, 4, 5, 6]
    assert np.array_equal(labels[3], xa.kmeans(points, 3, seed=0, n_init=5).labels)


def test_variance_reduction_by_hand():
    values = np.array([1.0, 3.0, 10.0, 14.0, np.nan])
    labels = np.array([0, 0, 1, 1, 1])
    total = ((values[:4] - values[:4].mean()) ** 2).sum()
    within = (1 + 1) + (4 + 4)
    assert xa.variance_reduction(values, labels) == pytest.approx(1 - within / total)
    signatures = pd.DataFrame({"q_mean": values[:4], "bfi": [0.2, 0.2, 0.2, 0.2]}, index=list("abcd"))
    table = xa.signature_variance_reduction(signatures, {"two": dict(zip("abcd", labels[:4]))})
    assert table.loc["q_mean", "two"] == pytest.approx(1 - within / total)
    assert math.isnan(table.loc["bfi", "two"])  # no variance to reduce


# ---------------------------------------------------------------------------------------- influence records
def write_record(folder, epoch, influence, basins, prefix="influence_epoch"):
    weights = np.exp(influence) / np.exp(influence).sum(axis=1, keepdims=True)
    q = weights.mean(axis=0)
    record = xr.Dataset({"influence": (("target", "source"), influence),
                         "influence_raw": (("target", "source"), influence),
                         "weights": (("target", "source"), weights), "basin_weight": (("source",), q)},
                        coords={"target": basins, "source": basins},
                        attrs={"epoch": epoch, "measure": "cosine", "effective_sources": 1 / (q ** 2).sum(),
                               "weight_entropy": float(-(q * np.log(q)).sum())})
    folder.mkdir(exist_ok=True)
    record.to_netcdf(folder / f"{prefix}{epoch:03d}.nc")
    return record


@pytest.fixture
def influence_run(tmp_path):
    basins = ["a1", "a2", "a3", "b1", "b2", "b3"]
    groups = {b: b[0] for b in basins}
    same = np.array([[1.0 if groups[t] == groups[s] else -1.0 for s in basins] for t in basins])
    for epoch, strength in ((2, 0.5), (3, 1.0), (10, 2.0)):
        write_record(tmp_path / "influence", epoch, strength * same + 0.01 * np.arange(6), basins)
    write_record(tmp_path / "influence", 3, same, basins, prefix="offline_epoch")
    return tmp_path, basins, groups


def test_influence_records_history_and_top_sources(influence_run):
    run_dir, basins, groups = influence_run
    assert [p.name for p in xa.influence_files(run_dir)] == [
        "influence_epoch002.nc", "influence_epoch003.nc", "influence_epoch010.nc"]
    last = xa.load_influence(run_dir)
    assert last.attrs["epoch"] == 10 and list(last["source"].values) == basins
    assert xa.load_influence(run_dir, epoch=3, kind="offline").attrs["file"].endswith("offline_epoch003.nc")
    with pytest.raises(FileNotFoundError, match="epoch 7"):
        xa.load_influence(run_dir, epoch=7)
    history, summary = xa.weight_history(run_dir)
    assert list(history.index) == [2, 3, 10] and list(history.columns) == basins
    assert np.allclose(history.sum(axis=1), 1.0)
    assert np.allclose(summary["effective_sources"], 1 / (history ** 2).sum(axis=1))
    top = xa.top_sources(last, k=2, groups=groups)
    first = top[top["target"] == "a1"]
    assert list(first["source"]) == ["a3", "a2"]  # own group, highest first, itself excluded
    assert top["same_group"].all()
    assert xa.same_group_share(last, groups, k=3).eq(2 / 3).all()
    clusters = xa.cluster_influence_rows(last, k=2)
    assert pd.crosstab(clusters, pd.Series(groups)).gt(0).sum(axis=1).eq(1).all()
    assert xa.group_order(["b1", "a2", "x", "a1"], {"a1": "a", "a2": "a", "b1": "b"}) == ["a1", "a2", "b1", "x"]


def test_figures_are_returned_and_written_as_png(influence_run, tmp_path):
    run_dir, basins, groups = influence_run
    out = tmp_path / "figures"
    tables = {"A": pd.DataFrame({"NSE": [0.1, 0.5, 0.7], "KGE": [0.2, 0.4, -3.0]}, index=["x", "y", "z"]),
              "B": pd.DataFrame({"NSE": [0.3, 0.6, 0.8], "KGE": [0.3, 0.5, 0.1]}, index=["x", "y", "z"])}
    scan = pd.concat([xa.cluster_scan(blobs()[0], range(2, 5))[0].assign(space=s) for s in ("embedding", "raw")])
    sensitivity = xa.rank_sensitivity(pd.DataFrame({"aridity": [0.3, 0.5], "area": [0.01, 0.02]}))
    robustness = pd.DataFrame({"basin": ["x", "y"] * 2, "sigma": [0.0, 0.0, 0.5, 0.5], "repeat": 0,
                               "metric": "NSE", "value": [0.7, 0.6, 0.5, 0.2]})
    figures = {
        "cdf": xa.plot_metric_cdfs(tables, ["NSE", "KGE"], path=out / "cdf.png"),
        "heat": xa.plot_influence_heatmap(xa.load_influence(run_dir), groups, path=out / "heat.png"),
        "weights": xa.plot_influence_heatmap(xa.load_influence(run_dir), groups, variable="weights",
                                             path=out / "weights.png"),
        "history": xa.plot_weight_history(*xa.weight_history(run_dir), groups=groups, path=out / "history.png"),
        "map": xa.plot_basin_map({"x": 0.1, "y": -0.2, "z": 0.05}, {"x": 40, "y": 45, "z": 35},
                                 {"x": -100, "y": -90, "z": -80}, label="NSE B - A", path=out / "map.png"),
        "clusters": xa.plot_basin_map(groups, dict(zip(basins, range(6))), dict(zip(basins, range(6))),
                                      categorical=True, path=out / "clusters.png"),
        "scan": xa.plot_cluster_scan(scan, path=out / "scan.png"),
        "sensitivity": xa.plot_sensitivity_ranking(sensitivity, path=out / "sensitivity.png"),
        "robustness": xa.plot_robustness(robustness, path=out / "robustness.png"),
    }
    from matplotlib.figure import Figure
    for name, figure in figures.items():
        assert isinstance(figure, Figure), name
        assert (out / f"{name}.png").read_bytes()[:8] == PNG_MAGIC, name
    ax = figures["cdf"].axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["A (median 0.500)", "B (median 0.600)"]
    assert figures["cdf"].axes[1].get_xlim()[0] == pytest.approx(-1.0)  # KGE -3 is cut at the axis
