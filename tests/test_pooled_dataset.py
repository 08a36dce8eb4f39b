"""`dataset: xb_pooled`: two NH datasets in one run, each normalised with its own training statistics.

Source ``a`` and ``b`` are synthetic generic folders made with different seeds and the same basin ids
(``synth_000``...); ``b`` names precipitation ``prcp`` and area ``area_km2``, so the rename maps matter. The real-data
tests split CAMELS-US (../shared/data/camels_us_caravan) into two generic folders, and pool it with NH's 4-basin
CAMELS-US set in the original layout (dataset ``camels_us``, Daymet forcing).
"""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import xarray

import nh_crossbasin
from conftest import CARAVAN, require_caravan, run_cli, single_run_dir, tiny_training_keys, write_yaml

RENAME_B = {"prcp": "precipitation"}
RENAME_ATTRIBUTES_B = {"area_km2": "area"}


@pytest.fixture(scope="module", autouse=True)
def plugin():
    with nh_crossbasin.activated():
        yield


def _rename_source_b(folder: Path) -> None:
    for path in (folder / "time_series").glob("*.nc"):
        data = xarray.load_dataset(path).rename({own: own_b for own_b, own in RENAME_B.items()})
        data.to_netcdf(path)
    table = folder / "attributes" / "attributes.csv"
    frame = pd.read_csv(table, dtype={0: str})
    frame.rename(columns={own: own_b for own_b, own in RENAME_ATTRIBUTES_B.items()}).to_csv(table, index=False)


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """Two synthetic generic folders and a pooled basin file listing ``a__...`` and ``b__...`` ids."""
    from nh_crossbasin.nh.datasets.pooled_sources import write_pooled_basin_file
    from nh_crossbasin.synth import generate_basins
    root = tmp_path_factory.mktemp("pooled")
    a = generate_basins(root / "a", n_basins=4, n_regimes=2, years=6, seed=1)
    b = generate_basins(root / "b", n_basins=3, n_regimes=1, years=6, seed=2)
    _rename_source_b(root / "b")
    basin_file = root / "pooled_basins.txt"
    ids = write_pooled_basin_file(basin_file, {"a": a.basin_file(), "b": b.basin_file()})
    sources = [{"prefix": "a", "dataset": "generic", "data_dir": str(root / "a")},
               {"prefix": "b", "dataset": "generic", "data_dir": str(root / "b"), "rename": dict(RENAME_B),
                "rename_attributes": dict(RENAME_ATTRIBUTES_B)}]
    return SimpleNamespace(root=root, a=a, b=b, basin_file=basin_file, ids=ids, sources=sources)


def pooled_config(data, run_dir: Path, **overrides) -> dict:
    """A tiny NH config on the pooled synthetic sources (common names: source ``a``'s)."""
    cfg = {key: value for key, value in data.a.nh_config_entries().items() if key != "data_dir"}
    cfg.update(tiny_training_keys(run_dir), experiment_name="pooled", loss="NSE", dataset="xb_pooled",
               data_dir=str(data.root), train_basin_file=str(data.basin_file),
               validation_basin_file=str(data.basin_file), test_basin_file=str(data.basin_file),
               xb_pooled_sources=data.sources, clip_targets_to_zero=["streamflow"])
    cfg.update(overrides)
    return cfg


def nh_config(cfg: dict, run_dir: Path):
    """An NH Config whose run and train dirs exist (as NH's trainer would create them)."""
    from neuralhydrology.utils.config import Config
    config = Config(dict(cfg, run_dir=str(run_dir)))
    config.train_dir = Path(run_dir) / "train_data"
    return config


def build(cfg: dict, run_dir: Path, **kwargs):
    """The training dataset NH builds for ``cfg`` (through the plugin, as the trainer does)."""
    from neuralhydrology.datasetzoo import get_dataset
    kwargs.setdefault("scaler", {})  # NH's default {} is one shared dict that its datasets fill
    return get_dataset(nh_config(cfg, run_dir), is_train=kwargs.pop("is_train", True),
                       period=kwargs.pop("period", "train"), **kwargs)


def source_alone_config(data, prefix: str, run_dir: Path) -> dict:
    """NH's plain generic config for one source alone, in that source's own variable names."""
    summary = getattr(data, prefix)
    entries = summary.nh_config_entries()
    if prefix == "b":
        back = {common: own for own, common in {**RENAME_B, **RENAME_ATTRIBUTES_B}.items()}
        entries["dynamic_inputs"] = [back.get(n, n) for n in entries["dynamic_inputs"]]
        entries["static_attributes"] = [back.get(n, n) for n in entries["static_attributes"]]
    return dict(entries, **tiny_training_keys(run_dir), loss="NSE", experiment_name=f"alone_{prefix}")


def source_value(scaler: dict, key: str, variable: str, prefix: str):
    """One source's statistic of a variable in a pooled scaler (targets: the pooled value)."""
    entry = scaler[key][variable]
    return entry.sel(xb_source=prefix).values if "xb_source" in entry.dims else entry.values


def samples_by_position(dataset) -> dict:
    """``{(basin, index of the sequence end): sample number}``."""
    return {(basin, int(indices[0])): i for i, (basin, indices) in dataset.lookup_table.items()}


# ---------------------------------------------------------------------------------------------------- config key
def test_config_key_is_declared_documented_and_validated(two_sources):
    from nh_crossbasin.config_keys import CONFIG_KEYS, markdown_table
    key = CONFIG_KEYS["xb_pooled_sources"]
    assert "| `xb_pooled_sources` |" in markdown_table() and "<prefix>__<source basin id>" in key.help
    key.validate(two_sources.sources)
    good = {"prefix": "us", "dataset": "generic", "data_dir": "/x"}
    for bad, message in [
        ([], "one mapping per source"),
        ([good, dict(good)], r"prefixes must be unique, \['us'\]"),
        ([dict(good, prefix="u__s")], "must not contain '__'"),
        ([dict(good, data=1)], r"unknown keys \['data'\]"),
        ([{"prefix": "us", "dataset": "generic"}], r"missing keys \['data_dir'\]"),
        ([dict(good, dataset="xb_pooled")], "do not nest"),
        ([dict(good, rename={"a": "x", "b": "x"})], r"maps several source names onto \['x'\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            key.validate(bad)


def test_config_without_sources_or_with_unprefixed_basin_ids_fails_clearly(two_sources, tmp_path):
    cfg = pooled_config(two_sources, tmp_path)
    with pytest.raises(ValueError, match="'xb_pooled_sources' is required for 'dataset: xb_pooled'"):
        build({k: v for k, v in cfg.items() if k != "xb_pooled_sources"}, tmp_path)
    plain = tmp_path / "plain.txt"
    plain.write_text("synth_000\n")
    with pytest.raises(ValueError, match=r"Basin 'synth_000' belongs to no source.*one of \['a', 'b'\]"):
        build(dict(cfg, train_basin_file=str(plain)), tmp_path)


# ------------------------------------------------------------------------------------ ids and normalisation
def test_each_source_is_normalised_exactly_as_nh_on_that_source_alone(two_sources, tmp_path):
    from neuralhydrology.datasetzoo.genericdataset import GenericDataset
    pooled = build(pooled_config(two_sources, tmp_path / "pooled"), tmp_path / "pooled")
    assert sorted(pooled.basins) == two_sources.ids
    assert {b.split("__")[1] for b in pooled.basins if b.startswith("a__")} & \
        {b.split("__")[1] for b in pooled.basins if b.startswith("b__")}  # same source ids, kept apart
    positions = samples_by_position(pooled)
    targets = pooled.scaler["xarray_feature_center"]["streamflow"]
    assert targets.dims == ()  # targets share one (pooled) center and scale
    for prefix in ("a", "b"):
        run_dir = tmp_path / prefix
        alone = GenericDataset(nh_config(source_alone_config(two_sources, prefix, run_dir), run_dir),
                               is_train=True, period="train", scaler={})
        common = {own: RENAME_B.get(own, own) for own in alone.cfg.dynamic_inputs} if prefix == "b" else \
            {own: own for own in alone.cfg.dynamic_inputs}
        for key in ("xarray_feature_center", "xarray_feature_scale"):
            for own, name in common.items():
                assert alone.scaler[key][own].values == source_value(pooled.scaler, key, name, prefix), (key, own)
        for key in ("attribute_means", "attribute_stds"):
            for own, value in alone.scaler[key].items():
                assert value == pooled.scaler[key][f"{prefix}__{RENAME_ATTRIBUTES_B.get(own, own)}"], (key, own)
        # every sample of the source: same sequences and bit-identical inputs as NH on the source alone
        alone_positions = samples_by_position(alone)
        assert len(alone_positions) == sum(1 for basin, _ in positions if basin.startswith(f"{prefix}__"))
        for (basin, index), i in list(alone_positions.items())[::97]:
            mine, theirs = pooled[positions[(f"{prefix}__{basin}", index)]], alone[i]
            for own, name in common.items():
                torch.testing.assert_close(mine["x_d"][name], theirs["x_d"][own], rtol=0, atol=0, equal_nan=True)
            torch.testing.assert_close(mine["x_s"], theirs["x_s"], rtol=0, atol=0)
            raw = theirs["y"] * alone.scaler["xarray_feature_scale"]["streamflow"].item() + \
                alone.scaler["xarray_feature_center"]["streamflow"].item()
            torch.testing.assert_close(mine["y"] * pooled.scaler["xarray_feature_scale"]["streamflow"].item()
                                       + targets.item(), raw, equal_nan=True)


def test_evaluation_and_continued_training_use_the_training_scaler(two_sources, tmp_path, monkeypatch):
    from neuralhydrology.datautils.utils import load_scaler
    from nh_crossbasin.nh.datasets import pooled_scaling
    cfg = pooled_config(two_sources, tmp_path)
    trained = build(cfg, tmp_path)
    stored = load_scaler(tmp_path)
    for key in ("xarray_feature_center", "xarray_feature_scale"):
        assert stored[key].identical(trained.scaler[key]), key
    for key in ("attribute_means", "attribute_stds"):
        pd.testing.assert_series_equal(stored[key], trained.scaler[key], check_exact=True)
    basin = "b__synth_001"
    from_memory = build(cfg, tmp_path, is_train=False, period="test", basin=basin, scaler=trained.scaler)
    from_file = build(cfg, tmp_path, is_train=False, period="test", basin=basin, scaler=stored)
    for i in range(0, len(from_file), 50):
        for name, values in from_file[i]["x_d"].items():
            torch.testing.assert_close(values, from_memory[i]["x_d"][name], rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(from_file[i]["x_s"], from_memory[i]["x_s"], rtol=0, atol=0)
    only_a = {key: trained.scaler[key].sel(xb_source=["a"]) for key in ("xarray_feature_center",
                                                                           "xarray_feature_scale")}
    only_a.update({key: trained.scaler[key].filter(like="a__", axis=0) for key in ("attribute_means",
                                                                                   "attribute_stds")})
    with pytest.raises(ValueError, match=r"holds no .*statistics for source\(s\) \['b'\], only for \['a'\]"):
        build(cfg, tmp_path, is_train=False, period="test", basin=basin, scaler=only_a)

    def refit(*args):
        raise AssertionError("continue_training recomputed the scaler")
    monkeypatch.setattr(pooled_scaling, "fit_feature_scaler", refit)
    continued = nh_config(cfg, tmp_path / "continue")
    continued.is_continue_training, continued.base_run_dir = True, tmp_path
    from neuralhydrology.datasetzoo import get_dataset
    again = get_dataset(continued, is_train=True, period="train", scaler={})
    assert again.scaler["xarray_feature_scale"].identical(trained.scaler["xarray_feature_scale"])


# --------------------------------------------------------------------------------------------- clear errors
def test_missing_variable_names_source_variable_and_available_variables(two_sources, tmp_path):
    cfg = pooled_config(two_sources, tmp_path, dynamic_inputs=["precipitation", "temperature", "swe"])
    with pytest.raises(ValueError) as err:
        build(cfg, tmp_path)
    text = str(err.value)
    assert "source 'a'" in text and "'swe' not found" in text and "Available variables" in text
    assert "'precipitation'" in text and "'rename' of this source in config key 'xb_pooled_sources'" in text
    sources = [two_sources.sources[0], dict(two_sources.sources[1], rename={})]
    with pytest.raises(ValueError, match=r"source 'b'.*'precipitation' not found.*'prcp'"):
        build(pooled_config(two_sources, tmp_path, xb_pooled_sources=sources), tmp_path)
    sources = [two_sources.sources[0], dict(two_sources.sources[1], rename_attributes={})]
    with pytest.raises(ValueError, match=r"source 'b'.*attribute\(s\) 'area' not found.*'area_km2'"):
        build(pooled_config(two_sources, tmp_path, xb_pooled_sources=sources), tmp_path)


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_nh_run_train_evaluate_continue_finetune_metrics_in_physical_units(two_sources, tmp_path):
    data = SimpleNamespace(**{**vars(two_sources), "root": tmp_path / "data"})
    shutil.copytree(two_sources.root, data.root)
    data.sources = [dict(s, data_dir=str(data.root / s["prefix"])) for s in two_sources.sources]
    metrics = ["NSE", "KGE", "RMSE", "Beta-NSE"]
    cfg = pooled_config(data, tmp_path / "runs", max_updates_per_epoch=10, metrics=metrics)
    (tmp_path / "runs").mkdir()
    run_cli(["nh-run", "train", "--config-file", write_yaml(tmp_path / "pooled.yml", cfg)], cwd=tmp_path)
    run_dir = single_run_dir(tmp_path / "runs")
    run_cli(["nh-run", "evaluate", "--run-dir", run_dir], cwd=tmp_path)

    from neuralhydrology.evaluation.metrics import calculate_metrics
    table = pd.read_csv(run_dir / "test" / "model_epoch001" / "test_metrics.csv", index_col="basin")
    with open(run_dir / "test" / "model_epoch001" / "test_results.p", "rb") as fp:
        results = pickle.load(fp)
    assert sorted(table.index) == two_sources.ids
    for basin in two_sources.ids:
        prefix, own = basin.split("__")
        result = results[basin]["1D"]["xr"].isel(time_step=-1)
        raw = xarray.load_dataset(data.root / prefix / "time_series" / f"{own}.nc")["streamflow"]
        raw = raw.sel(date=result["date"].values)
        np.testing.assert_allclose(result["streamflow_obs"].values, raw.values, rtol=1e-5, atol=1e-6)
        sim = result["streamflow_sim"].clip(min=0)
        independent = calculate_metrics(raw, sim, metrics=metrics, resolution="1D")
        for name in metrics:
            np.testing.assert_allclose(table.loc[basin, name], independent[name], rtol=1e-4, atol=1e-5)

    trained_scaler = (run_dir / "train_data" / "train_data_scaler.yml").read_text()
    assert "xb_source" in trained_scaler and "b__area" in trained_scaler
    for path in (data.root / "a" / "time_series").glob("*.nc"):  # changed data must not change the scaler
        changed = xarray.load_dataset(path)
        changed["precipitation"] = changed["precipitation"] * 2
        changed.to_netcdf(path)
    run_cli(["nh-run", "continue_training", "--run-dir", run_dir], cwd=tmp_path)
    continued = run_dir / "continue_training_from_epoch001"
    assert (continued / "train_data" / "train_data_scaler.yml").read_text() == trained_scaler
    finetune = write_yaml(tmp_path / "finetune.yml", {
        "base_run_dir": str(run_dir), "finetune_modules": ["head"], "experiment_name": "pooled_finetune",
        "run_dir": str(tmp_path / "finetuned"), "epochs": 1, "learning_rate": 0.001})
    run_cli(["nh-run", "finetune", "--config-file", finetune], cwd=tmp_path)
    finetuned = single_run_dir(tmp_path / "finetuned")
    assert (finetuned / "train_data" / "train_data_scaler.yml").read_text() == trained_scaler


# ----------------------------------------------------------------------------------------------- real data
CARAVAN_DYNAMIC = ["total_precipitation_sum", "temperature_2m_mean", "potential_evaporation_sum"]
CARAVAN_STATIC = ["p_mean", "aridity", "frac_snow", "elev_mean", "area_gages2"]


def _generic_folder(folder: Path, basins: list, rename_attributes: dict) -> Path:
    """A generic folder with a few real basins: symlinked time series, a written attribute table."""
    (folder / "time_series").mkdir(parents=True)
    (folder / "attributes").mkdir()
    for basin in basins:
        (folder / "time_series" / f"{basin}.nc").symlink_to(CARAVAN / "time_series" / f"{basin}.nc")
    table = pd.read_csv(CARAVAN / "attributes" / "camels_attributes_v2.csv", dtype={"gauge_id": str})
    table = table.set_index("gauge_id").loc[basins, CARAVAN_STATIC].rename(columns=rename_attributes)
    table.to_csv(folder / "attributes" / "attributes.csv")
    (folder / "basins.txt").write_text("".join(f"{b}\n" for b in basins))
    return folder


def test_real_camels_us_split_into_two_generic_folders(tmp_path):
    require_caravan()
    from neuralhydrology.datasetzoo.genericdataset import GenericDataset
    from nh_crossbasin.nh.datasets.pooled_sources import write_pooled_basin_file
    basins = (CARAVAN / "basins_ci.txt").read_text().split()
    east = _generic_folder(tmp_path / "east", basins[:4], {})
    west = _generic_folder(tmp_path / "west", basins[4:], {"area_gages2": "area"})
    pooled_file = tmp_path / "pooled.txt"
    write_pooled_basin_file(pooled_file, {"east": east / "basins.txt", "west": west / "basins.txt"})
    dates = {"train_start_date": "01/10/1999", "train_end_date": "30/09/2001", "validation_start_date": "01/10/1988",
             "validation_end_date": "30/09/1989", "test_start_date": "01/10/1989", "test_end_date": "31/03/1990"}
    common = dict(dates, **tiny_training_keys(tmp_path), loss="NSE", dynamic_inputs=CARAVAN_DYNAMIC,
                  target_variables=["streamflow"], experiment_name="real")
    pooled = build(dict(common, dataset="xb_pooled", data_dir=str(tmp_path), static_attributes=CARAVAN_STATIC,
                        train_basin_file=str(pooled_file), validation_basin_file=str(pooled_file),
                        test_basin_file=str(pooled_file), xb_pooled_sources=[
                            {"prefix": "east", "dataset": "generic", "data_dir": str(east)},
                            {"prefix": "west", "dataset": "generic", "data_dir": str(west),
                             "rename_attributes": {"area": "area_gages2"}}]), tmp_path / "pooled")
    assert sorted(pooled.basins) == sorted([f"east__{b}" for b in basins[:4]] + [f"west__{b}" for b in basins[4:]])
    for prefix, folder, area in (("east", east, "area_gages2"), ("west", west, "area")):
        statics = [area if s == "area_gages2" else s for s in CARAVAN_STATIC]
        run_dir = tmp_path / prefix / "run"
        alone = GenericDataset(nh_config(dict(common, dataset="generic", data_dir=str(folder),
                                              static_attributes=statics, train_basin_file=str(folder / "basins.txt"),
                                              validation_basin_file=str(folder / "basins.txt"),
                                              test_basin_file=str(folder / "basins.txt")), run_dir),
                               is_train=True, period="train", scaler={})
        for key in ("xarray_feature_center", "xarray_feature_scale"):
            for name in CARAVAN_DYNAMIC:
                assert alone.scaler[key][name].values == source_value(pooled.scaler, key, name, prefix), (key, name)
        for key in ("attribute_means", "attribute_stds"):
            for own, value in alone.scaler[key].items():
                assert value == pooled.scaler[key][f"{prefix}__{'area_gages2' if own == 'area' else own}"]
    assert source_value(pooled.scaler, "xarray_feature_center", "total_precipitation_sum", "east") != \
        source_value(pooled.scaler, "xarray_feature_center", "total_precipitation_sum", "west")


def test_generic_and_camels_us_layout_sources_pool_with_their_own_statistics(tmp_path):
    nh4 = CARAVAN.parent / "camels_us_nh4"
    if not (nh4 / "basin_mean_forcing").is_dir():
        pytest.skip(f"NH's 4-basin CAMELS-US set not found at {nh4}")
    require_caravan()
    from neuralhydrology.datasetzoo.camelsus import CamelsUS
    from nh_crossbasin.nh.datasets.pooled_sources import write_pooled_basin_file
    (tmp_path / "caravan.txt").write_text("01022500\n01031500\n")
    pooled_file = tmp_path / "pooled.txt"
    write_pooled_basin_file(pooled_file, {"caravan": tmp_path / "caravan.txt", "daymet": nh4 / "4_basins.txt"})
    dates = {"train_start_date": "01/10/2000", "train_end_date": "30/09/2001", "validation_start_date": "01/10/2001",
             "validation_end_date": "31/12/2001", "test_start_date": "01/10/2001", "test_end_date": "31/12/2001"}
    common = dict(dates, **tiny_training_keys(tmp_path), loss="NSE", experiment_name="layouts",
                  static_attributes=["p_mean", "aridity", "area_gages2"])
    pooled = build(dict(common, dataset="xb_pooled", data_dir=str(tmp_path), train_basin_file=str(pooled_file),
                        validation_basin_file=str(pooled_file), test_basin_file=str(pooled_file),
                        dynamic_inputs=["total_precipitation_sum"], target_variables=["streamflow"],
                        xb_pooled_sources=[
                            {"prefix": "caravan", "dataset": "generic", "data_dir": str(CARAVAN)},
                            {"prefix": "daymet", "dataset": "camels_us", "data_dir": str(nh4), "forcings": "daymet",
                             "rename": {"prcp(mm/day)": "total_precipitation_sum", "QObs(mm/d)": "streamflow"}}]),
                   tmp_path / "pooled")
    assert sorted(pooled.basins)[:3] == ["caravan__01022500", "caravan__01031500", "daymet__01022500"]
    basin_file = str(nh4 / "4_basins.txt")
    alone = CamelsUS(nh_config(dict(common, dataset="camels_us", data_dir=str(nh4), forcings=["daymet"],
                                    dynamic_inputs=["prcp(mm/day)"], target_variables=["QObs(mm/d)"],
                                    train_basin_file=basin_file, validation_basin_file=basin_file,
                                    test_basin_file=basin_file), tmp_path / "alone"),
                     is_train=True, period="train", scaler={})
    for key in ("xarray_feature_center", "xarray_feature_scale"):
        assert alone.scaler[key]["prcp(mm/day)"].values == \
            source_value(pooled.scaler, key, "total_precipitation_sum", "daymet")
    for key in ("attribute_means", "attribute_stds"):
        for name, value in alone.scaler[key].items():
            assert value == pooled.scaler[key][f"daymet__{name}"], (key, name)
