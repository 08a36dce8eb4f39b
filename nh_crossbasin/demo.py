"""``python -m nh_crossbasin.demo`` (``make demo``): the plugin end to end on freshly generated synthetic basins.

1. ``nh-xb synth`` writes the synthetic basins to ``data/synthetic`` (only files the generator owns are replaced);
2. ``nh-run train`` (NH's unmodified command line) trains each example config listed in :data:`DEMO_CONFIGS`;
3. ``nh-run evaluate`` evaluates each run on the test period;
4. the median test NSE/KGE of each run is printed, and the influence-weighted run is compared with the homogeneous
   one basin by basin (overall and per hidden regime of the synthetic data: median difference, share of basins
   improved, Wilcoxon p, Cohen's d).

Run from the repository root; every run goes to a new run directory under ``runs/``.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

SYNTH_ARGS = ["--out", "data/synthetic", "--basins", "24", "--regimes", "2", "--years", "12", "--seed", "0"]
DEMO_CONFIGS = ["example_configs/synthetic_homogeneous.yml", "example_configs/synthetic_influence.yml"]


def _run(command: list) -> None:
    print("$ " + " ".join(shlex.quote(str(c)) for c in command), flush=True)
    subprocess.run([str(Path(sys.executable).parent / command[0]), *map(str, command[1:])], check=True)


def _new_run_dir(before: set, runs: Path) -> Path:
    created = [p for p in runs.iterdir() if p.is_dir() and p not in before]
    if len(created) != 1:
        raise RuntimeError(f"expected exactly one new run directory in {runs}, found {created}")
    return created[0]


def main() -> None:
    """Run the demo and print a results table."""
    start = time.perf_counter()
    runs = Path("runs")
    runs.mkdir(exist_ok=True)
    _run(["nh-xb", "synth", *SYNTH_ARGS, "--overwrite"])
    rows, tables = [], {}
    for config in DEMO_CONFIGS:
        before = set(runs.iterdir())
        _run(["nh-run", "train", "--config-file", config])
        run_dir = _new_run_dir(before, runs)
        _run(["nh-run", "evaluate", "--run-dir", run_dir])
        metrics = sorted(run_dir.glob("test/model_epoch*/test_metrics.csv"))[-1]
        table = pd.read_csv(metrics, dtype={"basin": str})
        tables[Path(config).stem] = table.set_index("basin")
        rows.append({"config": Path(config).stem, "median NSE": table["NSE"].median(),
                     "median KGE": table["KGE"].median(), "basins": len(table), "run dir": str(run_dir)})
    print("\nTest period, synthetic basins:")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    from nh_crossbasin.analysis import format_comparison, paired_comparison
    regimes = pd.read_csv(Path(SYNTH_ARGS[1]) / "ground_truth.csv", dtype={"basin_id": str}).set_index("basin_id")
    (a, table_a), (b, table_b) = tables.items()
    print("\nPer basin (regions: the hidden regimes of the synthetic data):")
    print(format_comparison(paired_comparison(table_a, table_b, metrics=["NSE", "KGE"], names=(a, b),
                                              regions=regimes["regime"])))
    print(f"demo finished in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
