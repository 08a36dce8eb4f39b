"""Accuracy: homogeneous pooling vs influence-weighted sampling, same model and same number of updates.

Every run is NH's unmodified ``nh-run train`` + ``nh-run evaluate`` in a subprocess; the script only writes the
configs and reads NH's ``test_metrics.csv``. Variants:

- ``homogeneous``: ``xb_sampler: uniform`` (NH's shuffle);
- ``influence_global``: ``xb_sampler: influence``, all training basins are targets;
- ``influence_roi``: one run per region of interest (a regime of the synthetic data, or a group of real basins,
  e.g. a HUC-02 region), each evaluated on its own region's basins; together they cover every basin once.

Pairs are (basin, seed); the paired Wilcoxon signed-rank test (two-sided) compares each variant with
``homogeneous`` on test NSE. Results go to ``OUT/results.csv`` and a markdown table is printed.

Examples
--------
::

    python benchmarks/heterogeneous_vs_homogeneous.py synthetic --out bench_runs/hvh_synth --seeds 1 2 3
    python benchmarks/heterogeneous_vs_homogeneous.py real --out bench_runs/hvh_dev --seeds 1 \\
        --device cuda:0 --epochs 10 --hidden 256 --seq 270
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from ruamel.yaml import YAML
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CARAVAN = REPO.parent / "shared" / "data" / "camels_us_caravan"
REAL_STATICS = ["p_mean", "pet_mean", "aridity", "p_seasonality", "frac_snow", "high_prec_freq", "high_prec_dur",
                "low_prec_freq", "low_prec_dur", "elev_mean", "slope_mean", "area_gages2", "frac_forest", "lai_max",
                "lai_diff", "gvf_max", "gvf_diff", "soil_depth_pelletier", "soil_depth_statsgo", "soil_porosity",
                "soil_conductivity", "max_water_content", "sand_frac", "silt_frac", "clay_frac",
                "carbonate_rocks_frac", "geol_permeability"]


def _run(args: list) -> None:
    subprocess.run([str(BIN / args[0]), *map(str, args[1:])], check=True, stdout=subprocess.DEVNULL)


def train_and_test(cfg: dict, name: str, out: Path) -> pd.DataFrame:
    """Train and evaluate one config with nh-run; return NH's per-basin test metrics."""
    parent = out / "runs" / name
    done = list(parent.glob("*/test/model_epoch*/test_metrics.csv")) if parent.exists() else []
    if not done:  # resumable: a finished variant is not trained again
        parent.mkdir(parents=True, exist_ok=True)
        config = out / "configs" / f"{name}.yml"
        config.parent.mkdir(parents=True, exist_ok=True)
        YAML().dump(dict(cfg, run_dir=str(parent), experiment_name=name), config.open("w"))
        start = time.perf_counter()
        _run(["nh-run", "train", "--config-file", config])
        run_dir = next(p for p in parent.iterdir() if p.is_dir())
        _run(["nh-run", "evaluate", "--run-dir", run_dir])
        print(f"  {name}: {time.perf_counter() - start:.0f} s", flush=True)
        done = list(parent.glob("*/test/model_epoch*/test_metrics.csv"))
    return pd.read_csv(sorted(done)[-1], dtype={"basin": str})


def run_design(base: dict, regions: dict, seeds: list, out: Path) -> pd.DataFrame:
    """All variants for all seeds; ``regions`` maps a region name to its basin file."""
    rows = []
    for seed in seeds:
        print(f"seed {seed}", flush=True)
        variants = {"homogeneous": (dict(base, seed=seed, xb_sampler="uniform"), None),
                    "influence_global": (dict(base, seed=seed, xb_sampler="influence"), None)}
        for region, basin_file in regions.items():
            variants[f"influence_roi_{region}"] = (dict(base, seed=seed, xb_sampler="influence",
                                                        xb_influence_targets_file=str(basin_file)), basin_file)
        for name, (cfg, roi_file) in variants.items():
            metrics = train_and_test(cfg, f"{name}_seed{seed}", out)
            if roi_file is not None:
                roi = set(Path(roi_file).read_text().split())
                metrics = metrics[metrics["basin"].isin(roi)]
                name = "influence_roi"
            rows.append(metrics.assign(variant=name, seed=seed)[["variant", "seed", "basin", "NSE", "KGE"]])
    table = pd.concat(rows, ignore_index=True)
    table.to_csv(out / "results.csv", index=False)
    return table


def summarise(table: pd.DataFrame) -> str:
    """Markdown table: median/mean NSE and KGE per variant, and the paired test against homogeneous."""
    wide = table.pivot_table(index=["seed", "basin"], columns="variant", values="NSE")
    lines = ["| variant | median NSE | mean NSE | median KGE | basins NSE<=0 | median ΔNSE vs homog. | share improved "
             "| Wilcoxon p | pairs |", "|---|---|---|---|---|---|---|---|---|"]
    for variant, group in table.groupby("variant", sort=False):
        diff = (wide[variant] - wide["homogeneous"]).dropna()
        p = stats.wilcoxon(diff).pvalue if variant != "homogeneous" and (diff != 0).any() else float("nan")
        lines.append(f"| {variant} | {group['NSE'].median():.3f} | {group['NSE'].mean():.3f} | "
                     f"{group['KGE'].median():.3f} | {(group['NSE'] <= 0).sum()} | {diff.median():+.4f} | "
                     f"{(diff > 0).mean():.2f} | {p:.2g} | {len(diff)} |")
    return "\n".join(lines)


def synthetic(args) -> tuple:
    from nh_crossbasin.synth import generate_basins
    summary = generate_basins(args.out / "data", n_basins=args.basins, n_regimes=args.regimes, years=args.years,
                              seed=0, overwrite=True)
    base = dict(summary.nh_config_entries(), clip_targets_to_zero=["streamflow"], model=args.model,
                head="regression", output_activation="linear", hidden_size=args.hidden, initial_forget_bias=3,
                output_dropout=0.0, seq_length=args.seq, predict_last_n=1, loss="xb_nse_star", optimizer="Adam",
                learning_rate={0: 5e-3, max(args.epochs - 2, 1): 1e-3}, batch_size=256, epochs=args.epochs,
                num_workers=0, device=args.device, validate_every=None, log_tensorboard=False, metrics=["NSE", "KGE"],
                verbose=0, xb_influence_warmup_epochs=args.warmup)
    regions = {f"regime{k}": summary.basin_file(k) for k in range(args.regimes)}
    return base, regions


def real(args) -> tuple:
    data = Path(args.data)
    basin_file = data / args.basin_file
    base = {"dataset": "generic", "data_dir": str(data), "train_basin_file": str(basin_file),
            "validation_basin_file": str(basin_file), "test_basin_file": str(basin_file),
            "train_start_date": "01/10/1999", "train_end_date": "30/09/2008",
            "validation_start_date": "01/10/1981", "validation_end_date": "30/09/1989",
            "test_start_date": "01/10/1989", "test_end_date": "30/09/1999",
            "dynamic_inputs": ["total_precipitation_sum", "temperature_2m_mean", "potential_evaporation_sum"],
            "target_variables": ["streamflow"], "clip_targets_to_zero": ["streamflow"],
            "static_attributes": REAL_STATICS, "model": args.model, "head": "regression",
            "output_activation": "linear", "hidden_size": args.hidden, "initial_forget_bias": 3,
            "output_dropout": 0.4, "seq_length": args.seq, "predict_last_n": 1, "loss": "xb_nse_star",
            "optimizer": "Adam", "learning_rate": {0: 1e-3, 10: 5e-4}, "batch_size": 256, "epochs": args.epochs,
            "num_workers": args.workers, "device": args.device, "validate_every": None, "log_tensorboard": False,
            "metrics": ["NSE", "KGE"], "verbose": 0, "xb_influence_warmup_epochs": args.warmup}
    regions = {}
    if args.roi_column:
        attributes = pd.read_csv(data / "attributes" / "camels_attributes_v2.csv", dtype={"gauge_id": str,
                                                                                           args.roi_column: str})
        basins = set(basin_file.read_text().split())
        for region in args.roi_regions:
            members = attributes.loc[attributes[args.roi_column] == region, "gauge_id"]
            members = [b for b in members if b in basins]
            path = args.out / f"roi_{args.roi_column}_{region}.txt"
            path.write_text("\n".join(members) + "\n")
            regions[f"{args.roi_column}{region}"] = path
    return base, regions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="data_kind", required=True)
    for name in ("synthetic", "real"):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
        p.add_argument("--device", default="cpu")
        p.add_argument("--model", default="xb_ealstm")
        p.add_argument("--warmup", type=int, default=1)
    syn = sub.choices["synthetic"]
    syn.add_argument("--basins", type=int, default=24)
    syn.add_argument("--regimes", type=int, default=2)
    syn.add_argument("--years", type=int, default=12)
    syn.add_argument("--hidden", type=int, default=32)
    syn.add_argument("--seq", type=int, default=90)
    syn.add_argument("--epochs", type=int, default=6)
    rea = sub.choices["real"]
    rea.add_argument("--data", default=str(CARAVAN))
    rea.add_argument("--basin-file", default="basins_dev.txt")
    rea.add_argument("--hidden", type=int, default=256)
    rea.add_argument("--seq", type=int, default=270)
    rea.add_argument("--epochs", type=int, default=10)
    rea.add_argument("--workers", type=int, default=4)
    rea.add_argument("--roi-column", default=None, help="attribute column defining regions, e.g. huc_02")
    rea.add_argument("--roi-regions", nargs="*", default=[], help="values of --roi-column to use as ROIs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base, regions = synthetic(args) if args.data_kind == "synthetic" else real(args)
    table = run_design(base, regions, args.seeds, args.out)
    print(summarise(table))


if __name__ == "__main__":
    main()
