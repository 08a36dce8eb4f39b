"""Kratzert et al. (2019) analyses of a trained EA-LSTM run: gradients against finite differences, Morris
sensitivity, robustness to noise on the static inputs, embedding clusters and signatures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import synth_config, train_in_process
from nh_crossbasin import analysis as xa

BASIN = "synth_005"



@pytest.fixture(scope="module")
def ealstm_run(synth_data, tmp_path_factory) -> Path:
    """A tiny xb_ealstm run on the synthetic basins, evaluated on the test period by NH."""
    root = tmp_path_factory.mktemp("ealstm_runs")
    run_dir = train_in_process(synth_config(synth_data, root, experiment_name="xb", model="xb_ealstm",
                                            hidden_size=8, epochs=2, max_updates_per_epoch=6,
                                            clip_targets_to_zero=["streamflow"]))
    xa.evaluate_run(run_dir)
    return run_dir


def one_basin_batches(run_dir: Path, basin: str = BASIN):
    from nh_crossbasin.analysis.results import read_run_config
    from nh_crossbasin.analysis.sensitivity import basin_batches
    cfg = read_run_config(run_dir)
    return next(basin_batches(run_dir, cfg, [basin], "test", progress=False))[1]


class LinearStatics(torch.nn.Module):
    """y_hat[:, t, 0] = x_s @ w + sum of the dynamic inputs: d y / d x_s = w for every sample."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float64))

    def pre_model_hook(self, data, is_train):
        return data

    def forward(self, data):
        y = data["x_s"] @ self.w + data["x_d"].sum(dim=(1, 2))
        return {"y_hat": y[:, None, None].expand(-1, 3, 1)}


def test_gradient_of_a_linear_model_is_its_weights():
    w = [0.5, -2.0, 3.0]
    data = {"x_s": torch.randn(4, 3, dtype=torch.float64), "x_d": torch.randn(4, 3, 2, dtype=torch.float64)}
    gradient = xa.static_input_gradients(LinearStatics(w), data)
    assert torch.allclose(gradient, torch.tensor([w] * 4, dtype=torch.float64))
    assert not data["x_s"].requires_grad  # the caller's batch is untouched


def test_gradients_equal_finite_differences(ealstm_run):
    from nh_crossbasin.nh.run_dirs import load_trained_model
    _, model, _ = load_trained_model(ealstm_run)
    model = model.double()
    batch = one_basin_batches(ealstm_run)[0]
    def first_six(value):
        if isinstance(value, dict):
            return {k: first_six(v) for k, v in value.items()}
        return value[:6].double() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
    batch = {k: first_six(v) for k, v in batch.items()}
    gradient = xa.static_input_gradients(model, batch)
    step = 1e-6
    for j in range(batch["x_s"].shape[1]):
        outputs = []
        for sign in (1, -1):
            shifted = dict(batch, x_s=batch["x_s"].clone())
            shifted["x_s"][:, j] += sign * step
            with torch.no_grad():
                outputs.append(model(shifted)["y_hat"][:, -1, 0])
        finite_difference = (outputs[0] - outputs[1]) / (2 * step)
        assert torch.allclose(gradient[:, j], finite_difference, rtol=1e-5, atol=1e-9), j


def test_morris_sensitivity_is_the_mean_absolute_gradient(ealstm_run, synth_data):
    from nh_crossbasin.nh.run_dirs import load_trained_model
    table = xa.morris_sensitivity(ealstm_run, basins=[BASIN, "synth_001"], progress=False)
    assert list(table.index) == [BASIN, "synth_001"]
    assert list(table.columns) == sorted(synth_data.static_attributes)
    _, model, _ = load_trained_model(ealstm_run)
    gradients = torch.cat([xa.static_input_gradients(model, b) for b in one_basin_batches(ealstm_run)])
    np.testing.assert_allclose(table.loc[BASIN].to_numpy(), gradients.abs().mean(dim=0).numpy(), rtol=1e-5)
    thinned = xa.morris_sensitivity(ealstm_run, basins=[BASIN], max_samples=50, progress=False)
    assert thinned.shape == (1, len(synth_data.static_attributes))
    ranking = xa.rank_sensitivity(table)
    assert list(ranking["rank"]) == list(range(1, 13)) and ranking["mean"].is_monotonic_decreasing
    assert ranking.loc[ranking.index[0], "mean"] == pytest.approx(table[ranking.index[0]].mean())


def test_robustness_without_noise_reproduces_nh_and_noise_is_constant_per_basin(ealstm_run):
    from neuralhydrology.evaluation.metrics import nse

    table = xa.noise_robustness(ealstm_run, sigmas=(0.0, 0.5), metrics=["NSE", "KGE"], repeats=2, seed=7,
                                progress=False)
    assert len(table) == 12 * 2 * 2 * 2
    clean = table[(table["sigma"] == 0) & (table["repeat"] == 0)].pivot(index="basin", columns="metric",
                                                                            values="value")
    nh = xa.basin_metrics(ealstm_run, ["NSE", "KGE"], progress=False)
    pd.testing.assert_frame_equal(clean.sort_index()[["NSE", "KGE"]], nh.sort_index(), check_names=False,
                                  rtol=1e-5)
    noisy = table[(table["sigma"] == 0.5) & (table["metric"] == "NSE")].pivot(index="basin", columns="repeat",
                                                                               values="value")
    assert not np.allclose(noisy[0], noisy[1]) and not np.allclose(noisy[0], clean["NSE"].loc[noisy.index])
    # by hand: one draw z per (seed, repeat, basin position), the same for all time steps, scaled by sigma
    from nh_crossbasin.analysis.results import read_run_config
    from nh_crossbasin.nh.run_dirs import load_trained_model
    from neuralhydrology.datautils.utils import load_basin_file, load_scaler
    cfg, model, _ = load_trained_model(ealstm_run)
    position = load_basin_file(Path(read_run_config(ealstm_run).test_basin_file)).index(BASIN)
    z = np.random.default_rng([7, 1, position]).standard_normal(12)
    scaler = load_scaler(ealstm_run)
    scale, center = (float(scaler[k]["streamflow"]) for k in ("xarray_feature_scale", "xarray_feature_center"))
    batches = one_basin_batches(ealstm_run)
    with torch.no_grad():
        sim = torch.cat([model(dict(b, x_s=b["x_s"] + torch.tensor(0.5 * z, dtype=torch.float32)))["y_hat"][:, -1, 0]
                         for b in batches]).numpy() * scale + center
    obs = torch.cat([b["y"][:, -1, 0] for b in batches]).numpy() * scale + center
    import xarray as xr
    expected = nse(xr.DataArray(obs), xr.DataArray(np.clip(sim, 0, None)))
    assert noisy.loc[BASIN, 1] == pytest.approx(expected, rel=1e-5)
    summary = xa.robustness_summary(table)
    assert summary.loc[0.0, "NSE change"] == 0 and list(summary.index) == [0.0, 0.5]


def test_embedding_clusters_and_signature_variance(ealstm_run, synth_data):
    from neuralhydrology.datautils.utils import load_scaler
    embedding, attributes = xa.embedding_and_attributes(ealstm_run)
    assert embedding.shape == (12, 8) and ((embedding > 0) & (embedding < 1)).all().all()
    raw = pd.read_csv(synth_data.out_dir / "attributes" / "attributes.csv", dtype={"basin_id": str})
    raw = raw.set_index("basin_id")[attributes.columns].loc[attributes.index]
    scaler = load_scaler(ealstm_run)
    by_hand = (raw - scaler["attribute_means"][attributes.columns]) / scaler["attribute_stds"][attributes.columns]
    np.testing.assert_allclose(attributes.to_numpy(), by_hand.to_numpy(), rtol=1e-5, atol=1e-6)
    scan, labels = xa.catchment_similarity({"embedding": embedding, "attributes": attributes}, ks=range(2, 5),
                                           n_init=3)
    assert list(scan["space"]) == ["embedding"] * 3 + ["attributes"] * 3
    assert set(labels) == {"embedding", "attributes"} and labels["embedding"].shape == (12, 3)
    assert scan.loc[0, "mean_silhouette"] == pytest.approx(
        xa.silhouette_score(embedding.to_numpy(), labels["embedding"][2].to_numpy()))
    series = xa.run_time_series(ealstm_run, ["streamflow", "precipitation"], period="train")
    signatures = xa.hydrological_signatures(series["streamflow"], series["precipitation"],
                                            signatures=["q_mean", "q95", "runoff_ratio"], progress=False)
    q = series["streamflow"][BASIN]
    assert signatures.loc[BASIN, "q_mean"] == pytest.approx(float(q.mean()))
    assert signatures.loc[BASIN, "q95"] == pytest.approx(float(q.quantile(0.95)))
    reduction = xa.signature_variance_reduction(signatures, {"embedding": labels["embedding"][2]})
    by_hand = xa.variance_reduction(signatures["q_mean"].to_numpy(),
                                    labels["embedding"][2].loc[signatures.index].to_numpy())
    assert reduction.loc["q_mean", "embedding"] == pytest.approx(by_hand)
    observed = xa.observed_discharge(xa.load_run(ealstm_run))
    assert set(observed) == set(synth_data.basins) and observed[BASIN].dims == ("date",)
