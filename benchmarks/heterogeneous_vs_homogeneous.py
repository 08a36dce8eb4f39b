"""Accuracy: homogeneous pooling vs heterogeneous (influence) weighting, each against the control that changes only
the weights; choices on the validation period, the test period evaluated once per final configuration.

The study is the plugin's ``homogeneous-vs-heterogeneous`` experiment design (every run is NH's own training and
evaluation through the plugin's experiment runner), with fine-tune arms:

- ``homogeneous``: NH's shuffle, ``E + F`` epochs;
- ``uniform_replacement``: the influence sampler's draw with uniform weights (control of ``influence_global``);
- ``influence_global`` (+ variants): the influence sampler, all training basins as targets;
- ``influence_loss`` (+ variants, with ``--apply-loss``): the same weights as importance weights in the NSE* loss
  under NH's shuffle (``xb_influence_apply: loss``); its control is ``homogeneous``;
- ``pooled``: NH's shuffle, ``E`` epochs, the start of the fine-tune arms (``F`` epochs each):
  ``specialize_clusters`` (+ variants; one model per cluster of targets, k-means on the pooled model's influence rows,
  fine-tuned with that cluster's influence weights), ``finetune_uniform`` (the same fine-tune with NH's shuffle: the
  control), ``finetune_local`` (the same fine-tune on each cluster's own basins only) and ``finetune_local_random``
  (on the basins of a random partition of the clusters' sizes: the control of ``finetune_local``).

On twin data (``synthetic --twins``) a ``global-vs-local`` design over the hidden regimes adds the ground truth:
one pooled model vs one model per regime.

Variants of a family are the grid ``--temperatures`` × ``--uniform-mixes`` (τ and ε of the influence weights) and,
for the clustered fine-tune arms, the candidate numbers of clusters ``--clusters K [K ...]`` (each further K adds
``specialize_clusters_k<K>``, ``finetune_local_k<K>`` and the latter's control ``finetune_local_random_k<K>``) and of
fine-tune epochs ``--finetune-epochs F [F ...]`` (each further F adds ``<arm>_f<F>`` of every fine-tune arm, started
from the pooled run's checkpoint of epoch ``E + F_first - F``, so that the total of updates stays ``E + F_first``
epochs; NH's ``checkpoint_path``). The grid is τ × ε at the first K and F, then K and F one at a time at the
defaults; the validation stage chooses among them. The families are ``influence_global``, ``influence_loss``,
``specialize_clusters`` and ``finetune_local``. The learning rate is one per study, chosen for the baseline (stage
``learning-rate``). Candidates added to a study already begun (a further K, F, τ or ε of the fine-tune arms) join its
manifest (the older one is kept as ``experiment.previous_N.json``), and so do further global variants (τ, ε).

Stages (``--stage``; ``all`` runs validation and test, and every stage resumes: finished runs are never redone or
overwritten):

0. ``learning-rate`` (real data; never part of ``all``): the learning-rate schedule, chosen for the baseline: the
   ``homogeneous`` arm is trained at the study's ``--lr`` and at every ``--lr-candidates FIRST:LAST`` (in
   ``OUT/learning_rate/<schedule>/``) and evaluated on validation; ``OUT/choices_learning_rate.json`` records the
   figures and the choice (``study_choices.py``). If the chosen schedule is not the study's, the test stage refuses
   to run: the study's arms are then not final configurations. A study run again at the chosen schedule takes the
   choice over with ``--lr-chosen-in OTHER_OUT`` (the base configs must agree in all but the learning rate);
1. ``validation``: the candidates of each family (``influence_global*``, ``influence_loss*``,
   ``specialize_clusters*``, ``finetune_local*``; and the pooled runs they start from) and the fixed arms
   (``homogeneous``, ``uniform_replacement``, ``pooled``, ``finetune_uniform``: the baseline and the controls at the
   default K and F, so that the validation tables compare the candidates with them) are trained and evaluated on
   the validation period; per family the variant with the best median validation NSE of the seed-ensemble mean
   prediction is chosen (the fixed arms choose nothing); ``OUT/choices.json`` records the candidates' validation
   figures and the choice;
2. ``test``: the fixed arms, the chosen variants and their controls (at the chosen K and F; trained now where the
   validation stage did not) are evaluated on the test period, once;
3. ``export`` (never part of ``all``; trains nothing): the tidy per-basin tables of every finished run (collected
   as the runner collects them), rounded and without run paths, plus ``choices*.json``, to ``--export-dir``
   (default ``benchmarks/results/<--out name>``) for committing;
4. ``report`` (never part of ``all``; trains nothing): prints the test-period tables of the results the test
   stage wrote (paired differences in NSE and in KGE), of the final configurations only (the fixed arms, the chosen
   variants and their controls), and writes them to ``OUT/summary.md``.

Pairs are (basin, seed), and basins for the seed-ensemble tables; two-sided paired Wilcoxon tests.

Examples
--------
::

    python benchmarks/heterogeneous_vs_homogeneous.py synthetic --twins --out bench_runs/hvh_twins --seeds 3 --workers 2
    python benchmarks/heterogeneous_vs_homogeneous.py real --out bench_runs/hvh_dev60 --seeds 3 --workers 2 \\
        --basin-file basins_dev.txt --subset 60 --hidden 64 --seq 90 --epochs 4 --max-updates 500 --dropout 0.2 \\
        --lr 3e-3 1e-3 --temperatures 1 0.3 --probe 64 --clusters 4
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from io import StringIO
from pathlib import Path

import pandas as pd
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's package, as in the runs it starts (run the script from REPO)
from nh_crossbasin.experiments.designs import arm_family  # noqa: E402
from study_choices import (FAMILIES, FIXED_ARMS, adopt_learning_rate, check_learning_rate, choose,  # noqa: E402
                           choose_learning_rate, final_configurations)
from study_report import export, report, tables  # noqa: E402
CARAVAN = REPO.parent / "shared" / "data" / "camels_us_caravan"
REAL_STATICS = ["p_mean", "pet_mean", "aridity", "p_seasonality", "frac_snow", "high_prec_freq", "high_prec_dur",
                "low_prec_freq", "low_prec_dur", "elev_mean", "slope_mean", "area_gages2", "frac_forest", "lai_max",
                "lai_diff", "gvf_max", "gvf_diff", "soil_depth_pelletier", "soil_depth_statsgo", "soil_porosity",
                "soil_conductivity", "max_water_content", "sand_frac", "silt_frac", "clay_frac",
                "carbonate_rocks_frac", "geol_permeability"]
DEFAULT_MIX = 0.1  # xb_influence_uniform_mix's default


def training_keys(args) -> dict:
    """Model and training keys shared by every run."""
    keys = {"model": args.model, "head": "regression", "output_activation": "linear", "hidden_size": args.hidden,
            "initial_forget_bias": 3, "output_dropout": args.dropout, "seq_length": args.seq, "predict_last_n": 1,
            "loss": "xb_nse_star", "optimizer": "Adam", "learning_rate": args.learning_rate,
            "batch_size": args.batch, "epochs": args.epochs, "num_workers": 0, "device": args.device,
            "validate_every": None, "log_tensorboard": False, "metrics": ["NSE", "KGE"], "verbose": 0,
            "clip_targets_to_zero": ["streamflow"], "save_weights_every": 1, "seed": 1, "experiment_name": "hvh",
            "xb_influence_warmup_epochs": args.warmup, "xb_influence_probe_size": args.probe}
    if args.max_updates:
        keys["max_updates_per_epoch"] = args.max_updates
    return keys


def synthetic(args) -> tuple:
    """Base config and the hidden-regime spec of freshly generated synthetic basins."""
    from nh_crossbasin.synth import generate_basins
    data = args.out / "data"
    if not (data / "synth_meta.json").exists():
        generate_basins(data, n_basins=args.basins, n_regimes=2, years=args.years, seed=0, twins=args.twins)
    from nh_crossbasin.synth.generator import META_FILE
    meta = json.loads((data / META_FILE).read_text())
    wanted = {"n_basins": args.basins, "years": args.years, "twins": args.twins}
    if any(meta["arguments"].get(k) != v for k, v in wanted.items()):
        raise SystemExit(f"{data} holds other synthetic data ({meta['arguments']}); use a new --out for {wanted}")
    basins = str(data / "basins_all.txt")
    base = {"dataset": "generic", "data_dir": str(data), "train_basin_file": basins, "validation_basin_file": basins,
            "test_basin_file": basins, **{k: v for k, v in meta["nh_period_dates"].items()},
            "dynamic_inputs": meta["dynamic_inputs"], "target_variables": meta["target_variables"],
            "static_attributes": meta["static_attributes"]}
    return dict(base, **training_keys(args)), f"{data / 'ground_truth.csv'}:regime"


def stratified_subset(data: Path, basin_file: Path, size: int, out: Path, seed: int = 0) -> Path:
    """A region-stratified random subset of a basin file: every HUC-02 region keeps a share of its basins in
    proportion to its size (at least one), drawn with ``seed``; written to ``out`` (never overwritten)."""
    import numpy as np
    basins = basin_file.read_text().split()
    regions = pd.read_csv(data / "attributes" / "camels_attributes_v2.csv", dtype={"gauge_id": str, "huc_02": str},
                          usecols=["gauge_id", "huc_02"]).set_index("gauge_id")["huc_02"].loc[basins]
    rng = np.random.default_rng(seed)
    chosen = []
    for region, members in regions.groupby(regions, sort=True):
        n = max(1, int(round(size * len(members) / len(basins))))
        chosen += list(rng.choice(sorted(members.index), size=min(n, len(members)), replace=False))
    write_once(out, "\n".join(sorted(chosen)) + "\n")
    return out


def real(args) -> tuple:
    """Base config of the real CAMELS-US basins (Kratzert et al. 2019 periods)."""
    data = Path(args.data)
    basin_file = str(Path(args.data) / args.basin_file)
    if args.subset:
        basin_file = str(stratified_subset(data, Path(basin_file), args.subset,
                                           args.out / f"basins_subset{args.subset}.txt").resolve())
    base = {"dataset": "generic", "data_dir": str(data), "train_basin_file": basin_file,
            "validation_basin_file": basin_file, "test_basin_file": basin_file,
            "train_start_date": "01/10/1999", "train_end_date": "30/09/2008",
            "validation_start_date": "01/10/1981", "validation_end_date": "30/09/1989",
            "test_start_date": "01/10/1989", "test_end_date": "30/09/1999",
            "dynamic_inputs": ["total_precipitation_sum", "temperature_2m_mean", "potential_evaporation_sum"],
            "target_variables": ["streamflow"], "static_attributes": REAL_STATICS}
    return dict(base, **training_keys(args)), None


def variants(args) -> tuple:
    """Candidate settings: extra influence_global variants and extra specialisation variants (beyond defaults).

    The grid of ``--temperatures`` × ``--uniform-mixes``; a variant's name carries the settings that differ from the
    defaults (τ = 1, ε = 0.1), e.g. ``influence_global_tau0.3`` or ``specialize_clusters_tau0.3_mix0.3``.
    """
    influence, finetune = {}, {}
    for tau in args.temperatures:
        for mix in args.uniform_mixes:
            suffix = (f"_tau{tau:g}" if tau != 1.0 else "") + (f"_mix{mix:g}" if mix != DEFAULT_MIX else "")
            keys = {"xb_influence_temperature": tau, **({"xb_influence_uniform_mix": mix} if mix != DEFAULT_MIX
                                                        else {})}
            if suffix:  # the defaults are influence_global and specialize_clusters themselves
                influence[f"influence_global{suffix}"] = dict(keys)
                if not args.no_finetune_variants:
                    finetune[f"specialize_clusters{suffix}"] = dict(keys)
            if args.apply_loss:  # the same weights in the loss (importance weights) instead of the draw: own family
                influence[f"influence_loss{suffix}"] = dict(keys, xb_influence_apply="loss")
    return influence, finetune


def write_once(path: Path, text: str) -> None:
    from nh_crossbasin.files import write_text_once
    try:
        write_text_once(path, text)
    except FileExistsError:
        raise SystemExit(f"{path} exists with other settings; this --out folder belongs to another study "
                         f"configuration (use a new --out, or the original flags to resume)")


def learning_rate_schedule(args, first: float, last: float) -> dict:
    """NH's learning_rate of the real study: ``first``, then ``last`` from epoch ``E - 1`` on."""
    return {0: first, max(1, args.epochs - 1): last}


def join_candidates(design: Path, args, extra: dict, extra_finetune: dict) -> None:
    """Bring a study begun before some of its candidates (or fine-tune arms) were asked for up to date: they join
    its manifest (:func:`nh_crossbasin.experiments.experiment.add_global_variants` and ``add_finetune_arms``)."""
    import nh_crossbasin.experiments.experiment as ex
    from nh_crossbasin.experiments.designs import finetune_arms
    added = ex.add_global_variants(design, extra)
    if added:
        print(f"added the global variants {added} to {design / 'experiment.json'}")
    manifest = json.loads((design / "experiment.json").read_text())
    if not manifest.get("finetune"):
        return
    study_k, study_f = int(manifest["finetune"]["clusters"]), int(manifest["finetune"]["epochs"])
    if (args.clusters[0], args.finetune_epochs[0]) != (study_k, study_f):
        raise SystemExit(f"{design} was built with --clusters {study_k} and --finetune-epochs {study_f} first (the "
                         f"default arms' K and F); give them first")
    arms, controls = finetune_arms(extra_finetune, args.clusters, args.finetune_epochs, study_k, args.epochs, study_f)
    added = ex.add_finetune_arms(design, arms, controls)
    if added:
        print(f"added the fine-tune arms {added} to {design / 'experiment.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="data_kind", required=True)
    for name in ("synthetic", "real"):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--stage", choices=["learning-rate", "validation", "test", "all", "export", "report"],
                       default="all")
        p.add_argument("--export-dir", type=Path, default=None,
                       help="--stage export: target folder (default benchmarks/results/<--out name>)")
        p.add_argument("--seeds", type=int, default=3, help="number of seeds (1, 2, ...)")
        p.add_argument("--device", default="cpu")
        p.add_argument("--model", default="cudalstm")
        p.add_argument("--warmup", type=int, default=1)
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--finetune-epochs", type=int, nargs="+", default=[1],
                       help="F (0: no fine-tune arms), and further candidate F (chosen on validation; each starts "
                            "from the pooled run's epoch E + F_first - F, at the same total of updates)")
        p.add_argument("--clusters", type=int, nargs="+", default=[2],
                       help="K of the per-cluster arms, and further candidate K (chosen on validation)")
        p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.3])
        p.add_argument("--uniform-mixes", type=float, nargs="+", default=[DEFAULT_MIX],
                       help="candidate uniform shares ε (xb_influence_uniform_mix), crossed with --temperatures")
        p.add_argument("--max-updates", type=int, default=None, help="NH's max_updates_per_epoch")
        p.add_argument("--apply-loss", action="store_true",
                       help="also the global sampler's weights applied in the loss (xb_influence_apply: loss)")
        p.add_argument("--no-ground-truth", action="store_true",
                       help="twins: skip the global-vs-local ground-truth design (measured by another study)")
        p.add_argument("--no-finetune-variants", action="store_true",
                       help="specialisation at the default temperature only")
    syn = sub.choices["synthetic"]
    syn.add_argument("--basins", type=int, default=24)
    syn.add_argument("--years", type=int, default=10)
    syn.add_argument("--twins", action="store_true", help="twin basins (identical inputs, opposite regimes)")
    syn.add_argument("--hidden", type=int, default=32)
    syn.add_argument("--seq", type=int, default=60)
    syn.add_argument("--batch", type=int, default=128)
    syn.add_argument("--epochs", type=int, default=6, help="E")
    syn.add_argument("--probe", type=int, default=128)
    syn.set_defaults(dropout=0.0, learning_rate={0: 5e-3, 4: 1e-3})
    rea = sub.choices["real"]
    rea.add_argument("--data", default=str(CARAVAN))
    rea.add_argument("--basin-file", default="basins_dev.txt")
    rea.add_argument("--subset", type=int, default=None,
                     help="a HUC-02-stratified random subset of about this many basins of --basin-file")
    rea.add_argument("--hidden", type=int, default=64)
    rea.add_argument("--seq", type=int, default=180)
    rea.add_argument("--batch", type=int, default=256)
    rea.add_argument("--epochs", type=int, default=6, help="E")
    rea.add_argument("--probe", type=int, default=64)
    rea.add_argument("--dropout", type=float, default=0.4)
    rea.add_argument("--lr-candidates", nargs="+", default=[], metavar="FIRST:LAST",
                     help="--stage learning-rate: further schedules, e.g. 1e-3:3e-4 1e-2:3e-3")
    rea.add_argument("--lr", type=float, nargs=2, default=[1e-3, 5e-4], metavar=("FIRST", "LAST"),
                     help="learning rate, and its value from epoch E - 1 on")
    rea.add_argument("--lr-chosen-in", type=Path, help="the folder (--out) of a study of the same configuration "
                     "whose --stage learning-rate chose this study's --lr")
    args = parser.parse_args()
    if args.stage == "export":
        export(args.out, args.export_dir or REPO / "benchmarks" / "results" / args.out.name)
        return
    if args.stage == "report":
        report(args.out)
        return
    if args.data_kind == "real":
        args.learning_rate = learning_rate_schedule(args, *args.lr)
    args.out.mkdir(parents=True, exist_ok=True)
    base, regimes = synthetic(args) if args.data_kind == "synthetic" else real(args)
    text = StringIO()
    YAML().dump(base, text)
    write_once(args.out / "base.yml", text.getvalue())
    extra, extra_finetune = variants(args)

    import nh_crossbasin.experiments.experiment as ex
    design = args.out / "design"

    def build(base_config: Path, folder: Path) -> None:
        if not (folder / "experiment.json").exists():
            ex.build_experiment("homogeneous-vs-heterogeneous", base_config, None, folder, n_seeds=args.seeds,
                                finetune_epochs=args.finetune_epochs[0], clusters=args.clusters[0],
                                extra_variants=extra, extra_finetune_variants=extra_finetune,
                                cluster_counts=args.clusters, finetune_epoch_counts=args.finetune_epochs)
    build(args.out / "base.yml", design)
    if getattr(args, "lr_chosen_in", None):
        adopt_learning_rate(args.out, tuple(args.lr), args.lr_chosen_in)
    join_candidates(design, args, extra, extra_finetune)
    if args.stage == "learning-rate":
        if args.data_kind != "real":
            raise SystemExit("--stage learning-rate: the synthetic study keeps its fixed schedule")
        candidates = [tuple(float(v) for v in c.split(":")) for c in args.lr_candidates]
        if any(len(c) != 2 for c in candidates):
            raise SystemExit(f"--lr-candidates {args.lr_candidates}: each must be FIRST:LAST, e.g. 1e-3:3e-4")
        record = choose_learning_rate(args.out, base, tuple(args.lr), candidates,
                                      lambda first, last: learning_rate_schedule(args, first, last), build,
                                      args.seeds, args.workers)
        print(json.dumps(record, indent=1))
        return
    controls = json.loads((design / "experiment.json").read_text())["controls"]
    ground_truth = args.out / "regimes"
    if regimes and args.twins and not args.no_ground_truth and not (ground_truth / "experiment.json").exists():
        ex.build_experiment("global-vs-local", args.out / "base.yml", regimes, ground_truth, n_seeds=args.seeds)
    start = time.perf_counter()
    if args.stage in ("validation", "all"):
        manifest = json.loads((design / "experiment.json").read_text())
        arms = (manifest.get("finetune") or {}).get("arms", {})
        candidates = sorted(v for v in {e["variant"] for e in manifest["runs"]} | set(arms)
                            if arm_family(v) in FAMILIES)
        ex.run_experiment(design, workers=args.workers, periods=("validation",), variants=candidates + FIXED_ARMS)
        choices = choose(args.out, pd.read_csv(design / ("results_validation_ensemble.csv" if args.seeds > 1 else
                                                          "results_validation.csv"), dtype={"basin": str}))
        print(f"validation stage finished ({time.perf_counter() - start:.0f} s); choices: "
              f"{ {f: c['chosen'] for f, c in choices['families'].items()} }")
        print(tables(design, "validation", controls, "all candidates and the fixed arms"))
    if args.stage in ("test", "all"):
        check_learning_rate(args.out)
        choices = json.loads((args.out / "choices.json").read_text())
        chosen = final_configurations(choices, controls)
        ex.run_experiment(design, workers=args.workers, periods=("test",), variants=chosen)
        if (ground_truth / "experiment.json").exists():
            ex.run_experiment(ground_truth, workers=args.workers)
        print(f"test stage finished ({time.perf_counter() - start:.0f} s)")
        report(args.out)


if __name__ == "__main__":
    main()
