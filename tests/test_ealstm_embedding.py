"""Input-gate embedding of trained EA-LSTM runs (``xb_ealstm`` and NH ``ealstm``) and ``nh-xb embed``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from conftest import train_in_process

BASINS = ["b001", "b002", "b003", "b004"]
ATTRIBUTES = ["area", "aridity", "elev", "frac_snow"]
DYNAMIC = ["prcp", "tmean", "pet"]


@pytest.fixture(scope="module")
def tiny_generic_data(tmp_path_factory) -> Path:
    """Four basins, three years of daily data, in NH's ``generic`` layout."""
    root = tmp_path_factory.mktemp("tiny_generic")
    (root / "time_series").mkdir()
    (root / "attributes").mkdir()
    rng = np.random.default_rng(0)
    dates = pd.date_range("2000-01-01", "2002-12-31", freq="D")
    for k, basin in enumerate(BASINS):
        prcp = rng.gamma(0.5, 4.0, len(dates))
        data = {"prcp": prcp, "tmean": 10 + 8 * np.sin(np.arange(len(dates)) / 58.1) + rng.normal(0, 2, len(dates)),
                "pet": rng.uniform(0.5, 4, len(dates)),
                "streamflow": np.convolve(prcp, np.exp(-np.arange(30) / (3 + k)), mode="full")[:len(dates)] / 5}
        xr.Dataset({name: ("date", values.astype(np.float32)) for name, values in data.items()},
                   coords={"date": dates}).to_netcdf(root / "time_series" / f"{basin}.nc")
    attributes = pd.DataFrame(rng.normal(size=(len(BASINS), len(ATTRIBUTES) + 1)) * [100, 1, 500, 0.2, 3],
                              index=pd.Index(BASINS, name="gauge_id"), columns=ATTRIBUTES + ["unused"])
    attributes.to_csv(root / "attributes" / "attributes.csv")
    (root / "basins.txt").write_text("\n".join(BASINS) + "\n")
    return root


def train_tiny_run(data_dir: Path, run_root: Path, name: str, **overrides) -> Path:
    """Train a tiny run in-process (plugin active) and return its run directory."""
    keys = {"experiment_name": name, "run_dir": str(run_root), "data_dir": str(data_dir), "dataset": "generic",
            "train_basin_file": str(data_dir / "basins.txt"), "validation_basin_file": str(data_dir / "basins.txt"),
            "test_basin_file": str(data_dir / "basins.txt"),
            "train_start_date": "01/01/2000", "train_end_date": "31/12/2001",
            "validation_start_date": "01/01/2002", "validation_end_date": "31/12/2002",
            "test_start_date": "01/01/2002", "test_end_date": "31/12/2002",
            "dynamic_inputs": DYNAMIC, "target_variables": ["streamflow"], "static_attributes": ATTRIBUTES,
            "model": "xb_ealstm", "head": "regression", "output_activation": "linear", "hidden_size": 8,
            "initial_forget_bias": 3, "output_dropout": 0.0, "seq_length": 20, "predict_last_n": 1,
            "loss": "NSE", "optimizer": "Adam", "learning_rate": 0.01, "batch_size": 16, "epochs": 1,
            "max_updates_per_epoch": 4, "num_workers": 0, "device": "cpu", "seed": 3, "log_interval": 1,
            "log_tensorboard": False, "save_weights_every": 1, "validate_every": None, "metrics": ["NSE"],
            "verbose": 0}
    keys.update(overrides)
    return train_in_process(keys)


@pytest.fixture(scope="module")
def trained_runs(tiny_generic_data, tmp_path_factory) -> dict:
    run_root = tmp_path_factory.mktemp("runs")
    return {
        "xb_ealstm": train_tiny_run(tiny_generic_data, run_root, "xb", use_basin_id_encoding=True,
                                    statics_embedding={"type": "fc", "hiddens": [6], "activation": "tanh",
                                                       "dropout": 0.0}),
        "ealstm": train_tiny_run(tiny_generic_data, run_root, "nh", model="ealstm"),
    }


def nh_static_inputs_and_gates(run_dir: Path):
    """x_s (with one-hot ids) and the input gate per basin, taken from NH's own dataset and InputLayer."""
    import nh_crossbasin
    from neuralhydrology.datasetzoo.genericdataset import GenericDataset
    from neuralhydrology.datautils.utils import load_scaler
    from neuralhydrology.evaluation.utils import load_basin_id_encoding
    from nh_crossbasin.nh.run_dirs import load_trained_model

    cfg, model, _ = load_trained_model(run_dir)
    id_to_int = load_basin_id_encoding(run_dir) if cfg.use_basin_id_encoding else {}
    with nh_crossbasin.activated():
        dataset = GenericDataset(cfg=cfg, is_train=False, period="test", scaler=load_scaler(run_dir),
                                 id_to_int=id_to_int)
    first_sample = {}
    for index, (basin, _) in dataset.lookup_table.items():
        first_sample.setdefault(basin, index)
    batch = dataset.collate_fn([dataset[first_sample[b]] for b in BASINS])
    x_s = torch.cat([batch[k] for k in ("x_s", "x_one_hot") if k in batch], dim=-1)
    with torch.no_grad():
        _, statics = model.embedding_net(batch, concatenate_output=False)
        gates = torch.sigmoid(model.input_gate(statics))
    return cfg, x_s, gates


@pytest.mark.parametrize("model_name", ["xb_ealstm", "ealstm"])
def test_embedding_matches_nh_dataset_batch(trained_runs, model_name):
    from nh_crossbasin.nh.embedding import input_gate_embedding, static_inputs

    run_dir = trained_runs[model_name]
    cfg, nh_x_s, nh_gates = nh_static_inputs_and_gates(run_dir)
    assert cfg.model == model_name
    # the fast route (NH's attribute loading, no time series) gives NH's x_s bit for bit
    assert torch.equal(static_inputs(run_dir, cfg, BASINS), nh_x_s)

    embedding = input_gate_embedding(run_dir)
    assert embedding.dims == ("basin", "cell")
    assert embedding.shape == (len(BASINS), 8)
    assert list(embedding["basin"].values) == BASINS
    assert embedding.attrs["epoch"] == 1 and embedding.attrs["model"] == model_name
    np.testing.assert_allclose(embedding.values, nh_gates.numpy(), rtol=1e-6, atol=1e-7)
    assert float(embedding.min()) > 0 and float(embedding.max()) < 1
    if model_name == "xb_ealstm":  # one-hot ids: every basin has its own vector
        assert len({tuple(np.round(row, 6)) for row in embedding.values}) == len(BASINS)

    subset = input_gate_embedding(run_dir, epoch=1, basins=["b003", "b001"])
    # a batch of 2 basins instead of 4: the GEMM may round the last bit differently; other basins differ by >> 1e-6
    np.testing.assert_allclose(subset.values, embedding.sel(basin=["b003", "b001"]).values, rtol=1e-6, atol=1e-7)


def test_attribute_route_reads_no_time_series(trained_runs, monkeypatch):
    from neuralhydrology.datasetzoo.genericdataset import GenericDataset
    from nh_crossbasin.nh.embedding import input_gate_embedding

    def forbidden(self, basin):
        raise AssertionError("time series were loaded")

    monkeypatch.setattr(GenericDataset, "_load_basin_data", forbidden)
    assert input_gate_embedding(trained_runs["ealstm"]).shape == (len(BASINS), 8)


def test_embed_command_writes_netcdf_and_never_overwrites(trained_runs, capsys):
    from nh_crossbasin.cli.main import main

    run_dir = trained_runs["xb_ealstm"]
    main(["embed", "--run-dir", str(run_dir)])
    first = Path(capsys.readouterr().out.strip())
    assert first == run_dir / "input_gate_embedding_epoch001.nc" and first.is_file()
    written = xr.open_dataarray(first)
    assert written.dims == ("basin", "cell") and list(written["basin"].values) == BASINS
    written.close()
    content = first.read_bytes()

    main(["embed", "--run-dir", str(run_dir), "--epoch", "1"])
    second = Path(capsys.readouterr().out.strip())
    assert second == run_dir / "input_gate_embedding_epoch001_2.nc" and second.is_file()  # as every record: _2, _3
    assert first.read_bytes() == content

    with pytest.raises(SystemExit) as exit_info:  # a missing epoch is bad input: one line naming it, status 2
        main(["embed", "--run-dir", str(run_dir), "--epoch", "7"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("nh-xb embed: error:") and "epoch 7" in message and "\n" not in message


def test_evolving_attributes_have_no_static_embedding(trained_runs):
    from nh_crossbasin.nh.embedding import static_inputs
    from nh_crossbasin.nh.run_dirs import load_trained_model

    cfg, _, _ = load_trained_model(trained_runs["ealstm"])
    cfg.update_config({"evolving_attributes": ["pet"]}, dev_mode=True)
    with pytest.raises(ValueError, match="evolving_attributes"):
        static_inputs(trained_runs["ealstm"], cfg, BASINS)
