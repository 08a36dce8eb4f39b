"""Accuracy: homogeneous pooling vs influence-weighted sampling, same model and same number of updates.

The script writes a base config and runs the plugin's ``homogeneous-vs-heterogeneous`` experiment design (every
run is NH's own training and evaluation, see :mod:`nh_crossbasin.experiments`):

- ``homogeneous``: ``xb_sampler: uniform`` (NH's shuffle);
- ``influence_global``: ``xb_sampler: influence``, all training basins are targets;
- ``influence_roi``: one run per region of interest (a regime of the synthetic data, or a region of the real data,
  e.g. a HUC-02 region), each evaluated on its region's basins; together they cover every basin once.

Pairs are (basin, seed); the paired Wilcoxon signed-rank test (two-sided) compares each variant with
``homogeneous`` on test NSE. The design folder is resumable; results are in ``OUT/design/results.csv``.

Examples
--------
::

    python benchmarks/heterogeneous_vs_homogeneous.py synthetic --out bench_runs/hvh_synth --seeds 3
    python benchmarks/heterogeneous_vs_homogeneous.py real --out bench_runs/hvh_dev --seeds 1 --device cuda:0 \\
        --epochs 10 --hidden 256 --seq 270 [--regions huc_02]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from ruamel.yaml import YAML
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
CARAVAN = REPO.parent / "shared" / "data" / "camels_us_caravan"
REAL_STATICS = ["p_mean", "pet_mean", "aridity", "p_seasonality", "frac_snow", "high_prec_freq", "high_prec_dur",
                "low_prec_freq", "low_prec_dur", "elev_mean", "slope_mean", "area_gages2", "frac_forest", "lai_max",
                "lai_diff", "gvf_max", "gvf_diff", "soil_depth_pelletier", "soil_depth_statsgo", "soil_porosity",
                "soil_conductivity", "max_water_content", "sand_frac", "silt_frac", "clay_frac",
                "carbonate_rocks_frac", "geol_permeability"]


def training_keys(args) -> dict:
    """Model and training keys shared by every run."""
    return {"model": args.model, "head": "regression", "output_activation": "linear", "hidden_size": args.hidden,
            "initial_forget_bias": 3, "output_dropout": args.dropout, "seq_length": args.seq, "predict_last_n": 1,
            "loss": "xb_nse_star", "optimizer": "Adam", "learning_rate": args.learning_rate, "batch_size": 256,
            "epochs": args.epochs, "num_workers": 0, "device": args.device, "validate_every": None,
            "log_tensorboard": False, "metrics": ["NSE", "KGE"], "verbose": 0, "clip_targets_to_zero": ["streamflow"],
            "xb_influence_warmup_epochs": args.warmup, "seed": 1, "experiment_name": "hvh"}


def synthetic(args) -> tuple:
    """Base config and region spec (the hidden regimes) of freshly generated synthetic basins."""
    from nh_crossbasin.synth import generate_basins
    summary = generate_basins(args.out / "data", n_basins=args.basins, n_regimes=args.regimes, years=args.years,
                              seed=0, overwrite=True)
    regions = f"{summary.out_dir / 'ground_truth.csv'}:regime" if args.roi == "regimes" else None
    return dict(summary.nh_config_entries(), **training_keys(args)), regions


def real(args) -> tuple:
    """Base config of the real CAMELS-US basins (Kratzert et al. 2019 periods) and the optional region spec."""
    data, basin_file = Path(args.data), str(Path(args.data) / args.basin_file)
    base = {"dataset": "generic", "data_dir": str(data), "train_basin_file": basin_file,
            "validation_basin_file": basin_file, "test_basin_file": basin_file,
            "train_start_date": "01/10/1999", "train_end_date": "30/09/2008",
            "validation_start_date": "01/10/1981", "validation_end_date": "30/09/1989",
            "test_start_date": "01/10/1989", "test_end_date": "30/09/1999",
            "dynamic_inputs": ["total_precipitation_sum", "temperature_2m_mean", "potential_evaporation_sum"],
            "target_variables": ["streamflow"], "static_attributes": REAL_STATICS}
    return dict(base, **training_keys(args)), args.regions


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
    per_seed = table.groupby(["variant", "seed"])["NSE"].median().unstack()
    return "\n".join(lines) + "\n\nmedian test NSE per seed:\n" + per_seed.round(3).to_string()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="data_kind", required=True)
    for name in ("synthetic", "real"):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--seeds", type=int, default=3, help="number of seeds (1, 2, ...)")
        p.add_argument("--device", default="cpu")
        p.add_argument("--model", default="cudalstm")
        p.add_argument("--warmup", type=int, default=1)
        p.add_argument("--workers", type=int, default=1)
    syn = sub.choices["synthetic"]
    syn.add_argument("--basins", type=int, default=24)
    syn.add_argument("--regimes", type=int, default=2)
    syn.add_argument("--years", type=int, default=12)
    syn.add_argument("--hidden", type=int, default=64)
    syn.add_argument("--seq", type=int, default=120)
    syn.add_argument("--epochs", type=int, default=6)
    syn.add_argument("--roi", choices=["regimes", "none"], default="regimes",
                     help="'regimes': one ROI run per hidden regime; 'none': homogeneous and global runs only")
    syn.set_defaults(dropout=0.0, learning_rate={0: 5e-3, 4: 1e-3})
    rea = sub.choices["real"]
    rea.add_argument("--data", default=str(CARAVAN))
    rea.add_argument("--basin-file", default="basins_dev.txt")
    rea.add_argument("--hidden", type=int, default=256)
    rea.add_argument("--seq", type=int, default=270)
    rea.add_argument("--epochs", type=int, default=10)
    rea.add_argument("--regions", default=None, help="region spec for ROI runs, e.g. huc_02 (default: none)")
    rea.set_defaults(dropout=0.4, learning_rate={0: 1e-3, 10: 5e-4})
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base, regions = synthetic(args) if args.data_kind == "synthetic" else real(args)
    base_file = args.out / "base.yml"
    with open(base_file, "w") as fp:
        YAML().dump(base, fp)

    from nh_crossbasin.experiments.experiment import build_experiment, collect_results, run_experiment
    build_experiment("homogeneous-vs-heterogeneous", base_file, regions, args.out / "design", n_seeds=args.seeds)
    start = time.perf_counter()
    run_experiment(args.out / "design", workers=args.workers)
    print(f"runs finished in {time.perf_counter() - start:.0f} s")
    print(summarise(collect_results(args.out / "design")))


if __name__ == "__main__":
    main()
