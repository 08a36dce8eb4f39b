"""Example configs stay true: NH reads them (plugin keys included), their data paths exist, dates match the data."""
from __future__ import annotations

from pathlib import Path

import pytest

import nh_crossbasin
from conftest import REPO, SHARED_DATA

CONFIGS = sorted((REPO / "example_configs").glob("*.yml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_is_valid_and_marks_plugin_keys(path, monkeypatch):
    nh_crossbasin.register()
    from neuralhydrology.utils.config import Config
    monkeypatch.chdir(REPO)
    cfg = Config(path)
    text = path.read_text()
    for line in text.splitlines():
        if line.startswith("xb_") or line.startswith("loss: xb_") or line.startswith("model: xb_"):
            assert "[nh-crossbasin]" in line, f"{path.name}: plugin key not marked: {line}"
    if str(cfg.data_dir).startswith("../shared"):
        if not SHARED_DATA.is_dir():
            pytest.skip(f"{SHARED_DATA} absent")
        for key in ("data_dir", "train_basin_file", "validation_basin_file", "test_basin_file"):
            assert (REPO / cfg.as_dict()[key]).exists(), f"{path.name}: {key} does not exist"


def test_synthetic_example_dates_match_the_documented_generator_call(tmp_path):
    from nh_crossbasin.demo import SYNTH_ARGS
    from nh_crossbasin.synth import generate_basins
    nh_crossbasin.register()
    from neuralhydrology.utils.config import Config
    from nh_crossbasin.cli.main import build_parser
    args = build_parser().parse_args(["synth", *SYNTH_ARGS])
    documented = f"nh-xb synth {' '.join(SYNTH_ARGS)}"
    summary = generate_basins(tmp_path / "data", n_basins=args.basins, n_regimes=args.regimes, years=args.years,
                              seed=args.seed, twins=args.twins)
    expected = summary.nh_config_entries()
    for path in CONFIGS:
        if "synthetic" not in path.name:
            continue
        assert documented in path.read_text(), f"{path.name} does not document `{documented}`"
        cfg = Config(path).as_dict()
        for key in ("train_start_date", "train_end_date", "validation_start_date", "validation_end_date",
                    "test_start_date", "test_end_date"):
            assert cfg[key].strftime("%d/%m/%Y") == expected[key], f"{path.name}: {key}"
        assert cfg["static_attributes"] == expected["static_attributes"]
        assert cfg["dynamic_inputs"] == expected["dynamic_inputs"]
        assert Path(cfg["data_dir"]) == Path(args.out)
