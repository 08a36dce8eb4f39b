"""Shared fixtures: where the real data is, tiny synthetic data sets, NH configs and subprocess runners."""
from __future__ import annotations

import os

# Tests train tiny models, which run fastest on one thread and do not thrash when processes share the 2 cores.
# Set before torch is imported (here and, through the environment, in every nh-run subprocess).
os.environ["OMP_NUM_THREADS"] = os.environ.get("NH_XB_TEST_THREADS", "1")
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CARAVAN = SHARED_DATA / "camels_us_caravan"
BIN = Path(sys.executable).parent

def _package_digest(folder: Path) -> str:
    import hashlib
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def pytest_sessionstart(session):
    """Subprocess tests run the *installed* package: refuse to test a stale install (``NH_XB_TEST_NO_INSTALL_CHECK=1``
    skips the check where the tests import a checkout directly, e.g. the GPU check)."""
    if os.environ.get("NH_XB_TEST_NO_INSTALL_CHECK", "") not in ("", "0"):
        return
    import sysconfig
    installed = Path(sysconfig.get_paths()["purelib"]) / "nh_crossbasin"
    if not installed.is_dir() or _package_digest(installed) != _package_digest(REPO / "nh_crossbasin"):
        pytest.exit(f"the nh-crossbasin installed in {installed.parent} is missing or differs from the working tree;"
                    f" run `make install` (or `make test`, which installs first)", returncode=3)


# The longest modules first: `make test` spreads whole modules over two workers (pytest-xdist, --dist loadfile), so a
# long module collected last would run alone at the end. Order within a module is kept.
LONGEST_MODULES = ("test_twin_ground_truth", "test_experiment_runs", "test_influence_e2e", "test_nh_run_e2e",
                   "test_pooled_dataset")


def pytest_collection_modifyitems(session, config, items):
    """Put the longest modules first (a stable sort: every other test keeps its place)."""
    rank = {stem: i for i, stem in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(LONGEST_MODULES)))


CARAVAN_STATICS = ["p_mean", "pet_mean", "aridity", "frac_snow", "elev_mean", "area_gages2"]


def require_caravan() -> Path:
    """Skip the calling test when the shared CAMELS-US (Caravan layout) data is absent."""
    if not (CARAVAN / "time_series").is_dir():
        pytest.skip(f"real CAMELS-US data not found at {CARAVAN} (../shared/data next to the repo)")
    return CARAVAN


def write_yaml(path: Path, data: dict) -> Path:
    """Write ``data`` as YAML to ``path`` and return the path."""
    yaml = YAML()
    with open(path, "w") as fp:
        yaml.dump(data, fp)
    return path


def tiny_training_keys(run_dir: Path, seed: int = 1) -> dict:
    """Keys of a CPU run that takes seconds: small LSTM, short sequences, a handful of updates."""
    return {
        "run_dir": str(run_dir),
        "model": "cudalstm", "head": "regression", "output_activation": "linear",
        "hidden_size": 8, "initial_forget_bias": 3, "output_dropout": 0.0,
        "seq_length": 30, "predict_last_n": 1,
        "optimizer": "Adam", "learning_rate": 0.01, "batch_size": 32,
        "epochs": 1, "max_updates_per_epoch": 8, "num_workers": 0, "device": "cpu", "seed": seed,
        "log_interval": 1, "log_tensorboard": False, "save_weights_every": 1,
        "validate_every": None, "metrics": ["NSE", "KGE"], "verbose": 0,
    }


def caravan_config(run_dir: Path, **overrides) -> dict:
    """A tiny NH config on the 8 CI basins of the real CAMELS-US data."""
    data = require_caravan()
    cfg = {
        "experiment_name": "caravan_ci",
        "dataset": "generic", "data_dir": str(data),
        "train_basin_file": str(data / "basins_ci.txt"),
        "validation_basin_file": str(data / "basins_ci.txt"),
        "test_basin_file": str(data / "basins_ci.txt"),
        "train_start_date": "01/10/1999", "train_end_date": "30/09/2001",
        "validation_start_date": "01/10/1988", "validation_end_date": "30/09/1989",
        "test_start_date": "01/10/1989", "test_end_date": "31/03/1990",
        "dynamic_inputs": ["total_precipitation_sum", "temperature_2m_mean", "potential_evaporation_sum"],
        "target_variables": ["streamflow"], "clip_targets_to_zero": ["streamflow"],
        "static_attributes": CARAVAN_STATICS,
        "loss": "NSE",
    }
    cfg.update(tiny_training_keys(run_dir))
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> "object":
    """A small synthetic data set (12 basins, 2 regimes, 6 years), generated once per test session."""
    from nh_crossbasin.synth import generate_basins
    return generate_basins(tmp_path_factory.mktemp("synth") / "data", n_basins=12, n_regimes=2, years=6, seed=3)


def synth_config(summary, run_dir: Path, **overrides) -> dict:
    """A tiny NH config on a synthetic data set made by :func:`nh_crossbasin.synth.generate_basins`."""
    cfg = {"experiment_name": "synth"}
    cfg.update(summary.nh_config_entries())
    cfg.update(tiny_training_keys(run_dir))
    cfg["loss"] = "NSE"
    cfg.update(overrides)
    return cfg


def run_cli(args: list, cwd: Path, env: Optional[Dict[str, str]] = None, check: bool = True,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a console script of this venv (``nh-run``, ``nh-xb``) or ``python`` in a subprocess."""
    full_env = dict(os.environ)
    full_env.pop("NH_CROSSBASIN_DISABLE", None)
    full_env.update(env or {})
    exe = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    proc = subprocess.run([exe, *map(str, args[1:])], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


def single_run_dir(parent: Path) -> Path:
    """The one run directory NH created below ``parent``."""
    runs = [p for p in parent.iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run dir in {parent}, found {runs}"
    return runs[0]


def train_in_process(cfg: dict) -> Path:
    """Train one run with NH's Python API, plugin active, and return its run directory."""
    import nh_crossbasin
    from neuralhydrology.training.train import start_training
    from neuralhydrology.utils.config import Config

    with nh_crossbasin.activated():
        config = Config(cfg)
        start_training(config)
    return Path(config.run_dir)
