"""``xb_ealstm`` on real CAMELS-US basins (../shared/data/camels_us_caravan, ``basins_ci.txt``).

Skipped when the shared data folder is absent.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from ruamel.yaml import YAML

from nh_crossbasin.nh.models.fused_ealstm import CPU_FUSED_MAX_BATCH

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CARAVAN = SHARED_DATA / "camels_us_caravan"
STATIC_ATTRIBUTES = [
    "p_mean", "pet_mean", "aridity", "p_seasonality", "frac_snow", "high_prec_freq", "high_prec_dur", "low_prec_freq",
    "low_prec_dur", "elev_mean", "slope_mean", "area_gages2", "frac_forest", "lai_max", "lai_diff", "gvf_max",
    "gvf_diff", "soil_depth_pelletier", "soil_depth_statsgo", "soil_porosity", "soil_conductivity",
    "max_water_content", "sand_frac", "silt_frac", "clay_frac", "carbonate_rocks_frac", "geol_permeability"]

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (CARAVAN / "time_series").is_dir() or not (CARAVAN / "basins_ci.txt").is_file(),
                       reason=f"real CAMELS-US data not found at {CARAVAN} (../shared/data next to the repository)"),
]


def caravan_keys(run_dir: Path, **overrides) -> dict:
    basins = str(CARAVAN / "basins_ci.txt")
    keys = {"experiment_name": "xb_ealstm_ci", "run_dir": str(run_dir), "data_dir": str(CARAVAN),
            "dataset": "generic", "train_basin_file": basins, "validation_basin_file": basins,
            "test_basin_file": basins,
            "train_start_date": "01/10/1999", "train_end_date": "30/09/2001",
            "validation_start_date": "01/10/1989", "validation_end_date": "30/09/1990",
            "test_start_date": "01/10/1989", "test_end_date": "30/09/1990",
            "dynamic_inputs": ["total_precipitation_sum", "temperature_2m_mean", "potential_evaporation_sum"],
            "target_variables": ["streamflow"], "clip_targets_to_zero": ["streamflow"],
            "static_attributes": STATIC_ATTRIBUTES,
            "model": "ealstm", "head": "regression", "output_activation": "linear", "hidden_size": 32,
            "initial_forget_bias": 3, "output_dropout": 0.0, "seq_length": 60, "predict_last_n": 1,
            "loss": "NSE", "optimizer": "Adam", "learning_rate": 1e-3, "batch_size": 32, "epochs": 1,
            "num_workers": 0, "device": "cpu", "seed": 1, "log_interval": 1, "log_tensorboard": False,
            "save_weights_every": 1, "validate_every": None, "metrics": ["NSE", "KGE"], "verbose": 0}
    keys.update(overrides)
    return keys


def to_double(batch: dict) -> dict:
    return {k: ({n: t.double() for n, t in v.items()} if isinstance(v, dict)
                else v.double() if torch.is_tensor(v) and v.dtype.is_floating_point else v)
            for k, v in batch.items()}


def train(model, batches, loss_obj) -> list:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for data in batches:
        optimizer.zero_grad()
        loss, _ = loss_obj(model(data), data)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("batch_size, dropout", [(CPU_FUSED_MAX_BATCH, 0.0), (CPU_FUSED_MAX_BATCH + 16, 0.0),
                                                 (CPU_FUSED_MAX_BATCH + 16, 0.4)],
                         ids=["fused-route", "sequence-route", "sequence-route-dropout"])
def test_training_loss_curve_matches_nh_ealstm(tmp_path, batch_size, dropout):
    """NH ealstm and xb_ealstm from the same initial weights, trained on identical NH batches with Adam (on the CPU,
    batches of CPU_FUSED_MAX_BATCH take the fused kernel, larger ones the three-gate autograd node). With output
    dropout, both start from the same random state, and must draw the same masks in all 8 updates."""
    from neuralhydrology.datasetzoo.genericdataset import GenericDataset
    from neuralhydrology.modelzoo.ealstm import EALSTM
    from neuralhydrology.training import get_loss_obj
    from neuralhydrology.utils.config import Config

    from nh_crossbasin.core.ealstm_weights import nh_state_dict_to_fused
    from nh_crossbasin.nh.models.fused_ealstm import from_nh_ealstm
    from nh_crossbasin.nh_adapter import normalized_static_attributes

    cfg = Config(caravan_keys(tmp_path, output_dropout=dropout))
    cfg.train_dir = tmp_path / "train_data"
    dataset = GenericDataset(cfg=cfg, is_train=True, period="train", scaler={})  # NH's default {} is shared
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=dataset.collate_fn,
                                         generator=torch.Generator().manual_seed(0))
    batches = []
    for batch in loader:
        batches.append(to_double(batch))
        if len(batches) == 8:
            break

    torch.manual_seed(cfg.seed)
    nh_model = EALSTM(cfg).double()
    fused_model = from_nh_ealstm(nh_model)
    loss_obj = get_loss_obj(cfg)
    torch.manual_seed(2)
    nh_losses = train(nh_model, batches, loss_obj)
    torch.manual_seed(2)
    fused_losses = train(fused_model, batches, loss_obj)

    assert nh_losses[0] != nh_losses[-1]
    for step, (nh_loss, fused_loss) in enumerate(zip(nh_losses, fused_losses)):
        assert fused_loss == pytest.approx(nh_loss, rel=1e-5), f"update {step}"
    nh_weights = nh_state_dict_to_fused(nh_model.state_dict())
    for key, value in fused_model.state_dict().items():
        torch.testing.assert_close(value, nh_weights[key], rtol=1e-6, atol=1e-9)

    # NH's attribute loading without time series reproduces the dataset's x_s (27 attributes, two csv files)
    attributes = normalized_static_attributes(cfg, dataset.basins, dataset.scaler)
    for basin, _ in list(dataset.lookup_table.values())[::500]:
        first = next(i for i, (b, _) in dataset.lookup_table.items() if b == basin)
        assert torch.equal(attributes[basin], dataset[first]["x_s"])


@pytest.mark.slow
def test_nh_run_train_and_evaluate_xb_ealstm(tmp_path):
    """Unmodified ``nh-run`` trains and evaluates ``model: xb_ealstm`` (plugin activated by the start-up hook); its
    batches, larger than CPU_FUSED_MAX_BATCH, take the CPU training node, whose buffers NH's training loop reuses."""
    keys = caravan_keys(tmp_path, model="xb_ealstm", hidden_size=16, seq_length=30, max_updates_per_epoch=10,
                        batch_size=CPU_FUSED_MAX_BATCH + 16)
    config_file = tmp_path / "xb_ealstm.yml"
    with config_file.open("w") as fp:
        YAML().dump(keys, fp)
    nh_run = Path(sys.executable).parent / "nh-run"
    subprocess.run([str(nh_run), "train", "--config-file", str(config_file)], check=True, cwd=tmp_path,
                   capture_output=True, text=True, timeout=300)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith("xb_ealstm_ci_")]
    assert (run_dir / "model_epoch001.pt").is_file()
    subprocess.run([str(nh_run), "evaluate", "--run-dir", str(run_dir)], check=True, cwd=tmp_path,
                   capture_output=True, text=True, timeout=300)
    metrics = pd.read_csv(run_dir / "test" / "model_epoch001" / "test_metrics.csv", dtype={"basin": str})
    basins = (CARAVAN / "basins_ci.txt").read_text().split()
    assert sorted(metrics["basin"]) == sorted(basins)
    assert {"NSE", "KGE"} <= set(metrics.columns)
    assert metrics["NSE"].notna().all()
