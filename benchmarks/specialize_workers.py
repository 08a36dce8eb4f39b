"""Wall time of per-target specialisation with 1 vs 2 (or more) local workers.

Generates synthetic basins, trains a small pooled model with ``nh-run``, then runs ``nh-xb specialize`` for the same
targets into fresh output folders once per worker count, timing each, and checks that the merged results agree.

Example: ``python benchmarks/specialize_workers.py --targets 4 --workers 1 2``
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from ruamel.yaml import YAML

BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--basins", type=int, default=12)
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    from nh_crossbasin.synth import generate_basins
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        summary = generate_basins(root / "data", n_basins=args.basins, n_regimes=2, years=6, seed=0)
        cfg = dict(summary.nh_config_entries(), experiment_name="pooled", run_dir=str(root / "runs"),
                   model="cudalstm", head="regression", hidden_size=32, initial_forget_bias=3, output_dropout=0.0,
                   seq_length=90, predict_last_n=1, loss="xb_nse_star", optimizer="Adam", learning_rate=1e-3,
                   batch_size=128, epochs=1, max_updates_per_epoch=50, num_workers=0, device="cpu", seed=1,
                   validate_every=None, log_tensorboard=False, metrics=["NSE"], verbose=0)
        with open(root / "pooled.yml", "w") as fp:
            YAML().dump(cfg, fp)
        subprocess.run([str(BIN / "nh-run"), "train", "--config-file", str(root / "pooled.yml")], check=True,
                       capture_output=True)
        pooled = next((root / "runs").iterdir())
        targets = root / "targets.txt"
        targets.write_text("\n".join(summary.basins[:args.targets]) + "\n")
        print(f"specialising {args.targets} targets ({args.epochs} epoch(s) of <= 50 updates each, hidden 32, "
              f"seq 90, {args.basins} basins), CPU")
        merged = {}
        for workers in args.workers:
            out = root / f"spec_{workers}"
            start = time.perf_counter()
            subprocess.run([str(BIN / "nh-xb"), "specialize", "--run-dir", str(pooled), "--targets", str(targets),
                            "--out", str(out), "--epochs", str(args.epochs), "--workers", str(workers)],
                           check=True, capture_output=True)
            seconds = time.perf_counter() - start
            merged[workers] = pd.read_csv(next(out.glob("specialized/test/model_epoch*/test_metrics.csv")))
            print(f"workers {workers}: {seconds:.1f} s wall")
        first = merged[args.workers[0]]
        same = all(first.equals(table) for table in merged.values())
        print(f"merged results identical across worker counts: {same}")


if __name__ == "__main__":
    main()
