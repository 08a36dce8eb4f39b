"""Tests for the synthetic basin generator ``nh_crossbasin.synth``."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from nh_crossbasin.synth import (DYNAMIC_INPUTS, STATIC_ATTRIBUTES, TARGET_VARIABLE, SynthSummary, generate_basins,
                                 split_periods)

N_BASINS = 80
N_YEARS = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> SynthSummary:
    """A moderately sized two-regime dataset shared by the read-only tests."""
    return generate_basins(tmp_path_factory.mktemp("synth") / "data", n_basins=N_BASINS, n_regimes=2,
                           years=N_YEARS, seed=3)


@pytest.fixture(scope="module")
def basin_frames(dataset) -> dict[str, pd.DataFrame]:
    """Time series of every basin, read the way NeuralHydrology reads them."""
    frames = {}
    for basin in dataset.basins:
        with xr.open_dataset(dataset.out_dir / "time_series" / f"{basin}.nc") as ds:
            frames[basin] = ds.to_dataframe()
    return frames


@pytest.fixture(scope="module")
def attributes(dataset) -> pd.DataFrame:
    return pd.read_csv(dataset.out_dir / "attributes" / "attributes.csv", dtype={"basin_id": str},
                       index_col="basin_id")


@pytest.fixture(scope="module")
def signatures(dataset, basin_frames) -> pd.DataFrame:
    """Runoff ratio and baseflow index (Lyne-Hollick filter) of every basin."""
    flow = np.column_stack([basin_frames[b][TARGET_VARIABLE].interpolate(limit_direction="both").to_numpy()
                            for b in dataset.basins])
    precip = np.column_stack([basin_frames[b]["precipitation"].to_numpy() for b in dataset.basins])
    quickflow = np.zeros_like(flow)
    alpha = 0.925
    for t in range(1, len(flow)):
        quickflow[t] = np.clip(alpha * quickflow[t - 1] + 0.5 * (1 + alpha) * (flow[t] - flow[t - 1]), 0.0, flow[t])
    return pd.DataFrame({"runoff_ratio": flow.mean(axis=0) / precip.mean(axis=0),
                         "baseflow_index": 1.0 - quickflow.sum(axis=0) / flow.sum(axis=0)},
                        index=pd.Index(dataset.basins, name="basin_id"))


def _file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _ols(features: pd.DataFrame, target: pd.Series) -> tuple[pd.Series, float]:
    """Least-squares coefficients (with intercept) and R^2."""
    design = np.column_stack([np.ones(len(features)), features.to_numpy()])
    coef, *_ = np.linalg.lstsq(design, target.to_numpy(), rcond=None)
    residual = target.to_numpy() - design @ coef
    return pd.Series(coef[1:], index=features.columns), 1.0 - residual.var() / target.to_numpy().var()


def test_layout_and_file_contents(dataset, attributes, basin_frames):
    out = dataset.out_dir
    assert dataset.basins == [f"synth_{i:03d}" for i in range(N_BASINS)]
    assert (out / "basins_all.txt").read_text().split() == dataset.basins
    assert sorted((out / "time_series").iterdir()) == [out / "time_series" / f"{b}.nc" for b in dataset.basins]

    header = (out / "attributes" / "attributes.csv").read_text().splitlines()[0].split(",")
    assert header == ["basin_id", *STATIC_ATTRIBUTES]
    assert list(attributes.index) == dataset.basins
    assert attributes.notna().all().all()
    assert attributes["forest_frac"].between(0, 1).all() and attributes["frac_snow"].between(0, 1).all()
    assert (attributes[["p_mean", "pet_mean", "aridity", "soil_depth", "slope_mean", "area"]] > 0).all().all()

    expected_days = pd.date_range("1990-01-01", f"{1990 + N_YEARS - 1}-12-31", freq="D", name="date")
    with xr.open_dataset(out / "time_series" / "synth_000.nc") as ds:
        assert list(ds.coords) == ["date"] and np.issubdtype(ds["date"].dtype, np.datetime64)
        assert set(ds.data_vars) == {*DYNAMIC_INPUTS, TARGET_VARIABLE}
        assert all(ds[v].dtype == np.float32 for v in ds.data_vars)
    for frame in basin_frames.values():
        assert frame.index.equals(expected_days) and frame.index.name == "date"
        assert frame[list(DYNAMIC_INPUTS)].notna().all().all()
        assert (frame["precipitation"] >= 0).all() and (frame["pet"] >= 0).all()
        assert frame["temperature"].between(-45, 45).all()
        flow = frame[TARGET_VARIABLE]
        assert (flow.dropna() >= 0).all()
        assert 0.0 < flow.isna().mean() < 0.02
    all_precip = pd.concat([f["precipitation"] for f in basin_frames.values()])
    assert 0.5 < all_precip.mean() < 8 and 0.15 < (all_precip > 0).mean() < 0.7

    truth = pd.read_csv(out / "ground_truth.csv", dtype={"basin_id": str}, index_col="basin_id")
    assert list(truth.index) == dataset.basins
    assert truth["regime"].to_dict() == dataset.regimes
    assert {"field_capacity_mm", "beta", "k_fast_per_day", "k_slow_per_day"} <= set(truth.columns)

    meta = json.loads((out / "synth_meta.json").read_text())
    assert meta["arguments"] == {"n_basins": N_BASINS, "n_regimes": 2, "years": N_YEARS, "seed": 3,
                                 "start_date": "1990-01-01", "twins": False}
    assert meta["dynamic_inputs"] == list(DYNAMIC_INPUTS) and meta["target_variables"] == [TARGET_VARIABLE]
    assert meta["nh_period_dates"]["train_start_date"] == dataset.train_start_date
    assert set(meta["periods"]) == {"train", "validation", "test"}
    assert all((out / f).is_file() for f in meta["files"])
    assert dataset.elapsed_s > 0


def test_period_split_on_hydrological_years():
    periods = split_periods(pd.Timestamp("1990-01-01"), pd.Timestamp("2009-12-31"))
    assert periods["train"] == (pd.Timestamp("1990-01-01"), pd.Timestamp("2001-09-30"))
    assert periods["validation"] == (pd.Timestamp("2001-10-01"), pd.Timestamp("2005-09-30"))
    assert periods["test"] == (pd.Timestamp("2005-10-01"), pd.Timestamp("2009-12-31"))

    short = split_periods(pd.Timestamp("2000-01-01"), pd.Timestamp("2000-12-31"))
    starts = [short[p][0] for p in ("train", "validation", "test")]
    ends = [short[p][1] for p in ("train", "validation", "test")]
    assert starts[0] == pd.Timestamp("2000-01-01") and ends[-1] == pd.Timestamp("2000-12-31")
    assert all(ends[i] + pd.Timedelta(days=1) == starts[i + 1] for i in range(2))
    assert starts[0] < starts[1] < starts[2]


def test_summary_periods_are_contiguous(dataset):
    fmt = "%d/%m/%Y"
    bounds = [(pd.to_datetime(getattr(dataset, f"{p}_start_date"), format=fmt),
               pd.to_datetime(getattr(dataset, f"{p}_end_date"), format=fmt)) for p in ("train", "validation", "test")]
    assert bounds[0][0] == pd.Timestamp("1990-01-01")
    assert bounds[-1][1] == pd.Timestamp(f"{1990 + N_YEARS - 1}-12-31")
    assert all(bounds[i][1] + pd.Timedelta(days=1) == bounds[i + 1][0] for i in range(2))
    lengths = np.array([(b - a).days + 1 for a, b in bounds]) / sum((b - a).days + 1 for a, b in bounds)
    assert np.allclose(lengths, [0.6, 0.2, 0.2], atol=0.1)


def test_neuralhydrology_generic_dataset_loads(dataset, tmp_path):
    from neuralhydrology.datasetzoo.genericdataset import GenericDataset
    from neuralhydrology.utils.config import Config

    basin_file = tmp_path / "basins.txt"
    basin_file.write_text("\n".join(dataset.basins[:3]) + "\n")
    entries = dataset.nh_config_entries()
    entries.update(train_basin_file=str(basin_file), validation_basin_file=str(basin_file),
                   test_basin_file=str(basin_file))
    cfg = Config({**entries, "experiment_name": "synth_test", "run_dir": str(tmp_path / "run"), "seq_length": 30,
                  "predict_last_n": 1, "model": "cudalstm", "hidden_size": 4, "head": "regression",
                  "output_activation": "linear", "loss": "NSE", "optimizer": "Adam", "learning_rate": 1e-3,
                  "batch_size": 8, "epochs": 1, "device": "cpu", "metrics": ["NSE"]})
    cfg.train_dir = tmp_path / "run" / "train_data"
    cfg.train_dir.mkdir(parents=True)
    train_data = GenericDataset(cfg, is_train=True, period="train", scaler={})  # NH's default {} is shared
    assert len(train_data) > 3 * 300
    sample = train_data[0]
    assert tuple(sample["x_d"]["precipitation"].shape) == (30, 1)
    assert tuple(sample["x_s"].shape) == (len(STATIC_ATTRIBUTES),)
    assert tuple(sample["y"].shape) == (30, 1)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    kwargs = dict(n_basins=6, n_regimes=2, years=3)
    first = generate_basins(tmp_path / "a", seed=11, **kwargs)
    second = generate_basins(tmp_path / "b", seed=11, **kwargs)
    other = generate_basins(tmp_path / "c", seed=12, **kwargs)
    hashes_a, hashes_b, hashes_c = (_file_hashes(s.out_dir) for s in (first, second, other))
    assert len(hashes_a) == 6 + 6 and hashes_a == hashes_b
    assert first.regimes == second.regimes
    for name, digest in hashes_a.items():
        if name.startswith("time_series/") or name in ("attributes/attributes.csv", "ground_truth.csv"):
            assert hashes_c[name] != digest, name


@pytest.mark.parametrize("n_basins, n_regimes, expected_sizes", [(24, 2, [12, 12]), (10, 3, [4, 3, 3]),
                                                                 (5, 1, [5])])
def test_regimes_are_balanced_and_listed(tmp_path, n_basins, n_regimes, expected_sizes):
    summary = generate_basins(tmp_path / "data", n_basins=n_basins, n_regimes=n_regimes, years=1, seed=5)
    sizes = [len(summary.basins_of_regime(k)) for k in range(n_regimes)]
    assert sorted(sizes, reverse=True) == expected_sizes
    assert summary.n_regimes == n_regimes
    listed = [(summary.out_dir / f"basins_regime_{k}.txt").read_text().split() for k in range(n_regimes)]
    assert listed == [summary.basins_of_regime(k) for k in range(n_regimes)]
    assert sorted(sum(listed, [])) == summary.basins


def test_regime_is_hidden_from_attributes(dataset, attributes):
    assert not any("regime" in column.lower() for column in attributes.columns)
    regimes = np.array([dataset.regimes[b] for b in attributes.index])
    assert regimes.sum() == N_BASINS // 2
    for column in attributes.columns:
        # rank-based AUC of separating regime 1 from regime 0 with this single attribute
        ranks = attributes[column].rank().to_numpy()
        n1, n0 = regimes.sum(), (1 - regimes).sum()
        auc = (ranks[regimes == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
        assert abs(auc - 0.5) < 0.3, column


def test_overwrite_protection(tmp_path):
    out = tmp_path / "data"
    generate_basins(out, n_basins=6, years=1, seed=1)
    with pytest.raises(FileExistsError, match=str(out)):
        generate_basins(out, n_basins=6, years=1, seed=1)

    user_dir = tmp_path / "user"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="user"):
        generate_basins(user_dir, n_basins=2, years=1)
    assert (user_dir / "notes.txt").read_text() == "keep me"

    (out / "notes.txt").write_text("keep me")
    summary = generate_basins(out, n_basins=3, n_regimes=1, years=1, seed=2, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (out / "time_series").iterdir()) == [f"{b}.nc" for b in summary.basins]
    assert not (out / "basins_regime_1.txt").exists()
    assert json.loads((out / "synth_meta.json").read_text())["arguments"]["n_basins"] == 3


def test_invalid_arguments_raise(tmp_path):
    with pytest.raises(ValueError):
        generate_basins(tmp_path / "x", n_basins=2, n_regimes=3, years=1)
    with pytest.raises(ValueError):
        generate_basins(tmp_path / "y", n_basins=4, n_regimes=0, years=1)


def test_water_balance(dataset, basin_frames, signatures):
    for basin, frame in basin_frames.items():
        valid = frame[TARGET_VARIABLE].notna()
        assert frame.loc[valid, TARGET_VARIABLE].mean() <= frame.loc[valid, "precipitation"].mean(), basin
    assert signatures["runoff_ratio"].between(0.05, 0.95).all()
    assert signatures["baseflow_index"].between(0.05, 0.99).all()


def test_true_parameters_follow_opposed_transfer_functions(dataset, attributes):
    truth = pd.read_csv(dataset.out_dir / "ground_truth.csv", dtype={"basin_id": str}, index_col="basin_id")
    for parameter in ("field_capacity_mm", "k_slow_per_day"):
        correlations = [np.corrcoef(attributes.loc[truth.regime == k, "soil_depth"],
                                    np.log(truth.loc[truth.regime == k, parameter]))[0, 1] for k in (0, 1)]
        assert correlations[0] * correlations[1] < 0 and min(abs(c) for c in correlations) > 0.4, parameter


@pytest.mark.parametrize("signature", ["runoff_ratio", "baseflow_index"])
def test_regimes_conflict_in_flow_signatures(dataset, attributes, signatures, signature):
    """Per-regime regressions of a flow signature on attributes disagree on the sign of the soil-depth effect."""
    features = (attributes - attributes.mean()) / attributes.std()
    features = features[["soil_depth", "slope_mean", "forest_frac", "aridity", "frac_snow", "p_mean"]]
    target = signatures[signature]
    regimes = pd.Series(dataset.regimes)
    fits = {k: _ols(features[regimes == k], target[regimes == k]) for k in (0, 1)}
    pooled_coef, pooled_r2 = _ols(features, target)

    soil = [fits[k][0]["soil_depth"] for k in (0, 1)]
    assert soil[0] * soil[1] < 0
    assert min(abs(s) for s in soil) > 0.2 * target.std()
    assert abs(pooled_coef["soil_depth"]) < 0.5 * min(abs(s) for s in soil)
    assert pooled_r2 < min(fits[k][1] for k in (0, 1)) - 0.1


# ------------------------------------------------------------------------------------------------ twin mode
@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> SynthSummary:
    return generate_basins(tmp_path_factory.mktemp("twins") / "data", n_basins=16, n_regimes=2, years=4, seed=5,
                           twins=True)


def test_twins_share_every_input_but_not_their_regime_or_streamflow(twins):
    attributes = pd.read_csv(twins.out_dir / "attributes" / "attributes.csv", index_col="basin_id")
    truth = pd.read_csv(twins.out_dir / "ground_truth.csv", index_col="basin_id")
    assert list(truth["pair"]) == [i // 2 for i in range(16)]
    for pair, members in truth.groupby("pair"):
        a, b = members.index
        assert attributes.loc[a].equals(attributes.loc[b]), "twins must have identical static attributes"
        assert sorted(members["regime"]) == [0, 1], "twins must be in opposite regimes"
        with xr.open_dataset(twins.out_dir / "time_series" / f"{a}.nc") as ta, \
                xr.open_dataset(twins.out_dir / "time_series" / f"{b}.nc") as tb:
            assert not np.array_equal(ta["precipitation"].values, tb["precipitation"].values)  # own weather
            flashy, damped = (ta, tb) if members.loc[a, "regime"] == 0 else (tb, ta)
            # regime 0 is flashy and gaining: higher runoff ratio and a more variable flow than its damped twin
            assert np.nanmean(flashy["streamflow"]) > np.nanmean(damped["streamflow"])
            assert np.nanstd(np.diff(flashy["streamflow"])) > np.nanstd(np.diff(damped["streamflow"]))
    assert (truth["regime"] == 0).sum() == 8
    assert json.loads((twins.out_dir / "synth_meta.json").read_text())["arguments"]["twins"] is True


def test_twin_attributes_do_not_reveal_the_regime(twins):
    """No attribute separates the regimes: every attribute has exactly the same values in both regimes."""
    attributes = pd.read_csv(twins.out_dir / "attributes" / "attributes.csv", index_col="basin_id")
    regime = pd.Series(twins.regimes)
    for column in attributes:
        assert sorted(attributes.loc[regime[regime == 0].index, column]) == sorted(
            attributes.loc[regime[regime == 1].index, column])


def test_twin_mode_rejects_odd_sizes_and_other_regime_counts(tmp_path):
    with pytest.raises(ValueError, match="even number of basins and exactly 2 regimes"):
        generate_basins(tmp_path / "a", n_basins=15, n_regimes=2, years=2, twins=True)
    with pytest.raises(ValueError, match="even number of basins and exactly 2 regimes"):
        generate_basins(tmp_path / "b", n_basins=16, n_regimes=3, years=2, twins=True)


def test_classic_mode_is_unchanged_by_the_twin_option(tmp_path):
    """The default mode draws exactly what it drew before twin mode existed (pinned attribute values)."""
    summary = generate_basins(tmp_path / "c", n_basins=12, n_regimes=2, years=4, seed=1)
    attributes = pd.read_csv(summary.out_dir / "attributes" / "attributes.csv", index_col="basin_id")
    assert attributes.loc["synth_000", "p_mean"] == pytest.approx(3.5568)
    assert attributes.loc["synth_003", "slope_mean"] == pytest.approx(63.6948)
    assert "pair" not in pd.read_csv(summary.out_dir / "ground_truth.csv").columns
