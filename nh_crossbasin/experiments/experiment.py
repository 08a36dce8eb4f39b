"""``nh-xb experiment``: build a design from a base config and a region scheme, write it, run it, summarise it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import pandas as pd

from nh_crossbasin.experiments.designs import (CONTROLS, DESIGNS, finetune_arms, global_vs_local,
                                               homogeneous_vs_heterogeneous, safe_name, similar_vs_dissimilar,
                                               single_vs_regional, variant_control)
from nh_crossbasin.experiments.regions import region_scheme
from nh_crossbasin.experiments.results import run_metrics
from nh_crossbasin.experiments.runner import FAILURES, finished_run_dir, run_tasks, write_failures
from nh_crossbasin.experiments.writer import MANIFEST, read_config, tasks_of, write_experiment

BASELINE = {"global-vs-local": "global", "similar-vs-dissimilar": "local", "single-vs-regional": "regional",
            "homogeneous-vs-heterogeneous": "homogeneous"}


def build_experiment(design: str, base_config: Path, regions: Optional[str], out: Path, n_seeds: int = 1,
                     level: int = 0, rois: Optional[Sequence[str]] = None, size_control: bool = True,
                     finetune_epochs: int = 0, clusters: int = 2, finetune_learning_rate: Optional[float] = None,
                     finetune_overrides: Optional[dict] = None,
                     extra_variants: Optional[dict] = None,
                     extra_finetune_variants: Optional[dict] = None,
                     cluster_counts: Sequence[int] = (), finetune_epoch_counts: Sequence[int] = ()) -> List[dict]:
    """Write the configs, basin files and manifest of ``design`` to ``out`` and return the manifest's runs.

    Parameters
    ----------
    finetune_epochs, clusters, finetune_learning_rate, finetune_overrides
        ``homogeneous-vs-heterogeneous`` only: fine-tune epochs ``F`` of the fine-tune arms (0: none), their number
        of clusters, learning rate (default: the base schedule's value at its last epoch) and further config keys
        of every fine-tune; ``extra_variants``: further global influence-sampler variants, ``{variant: overrides}``;
        ``extra_finetune_variants``: further per-cluster specialisation variants, ``{variant: overrides}``;
        ``cluster_counts``, ``finetune_epoch_counts``: further numbers of clusters K and of fine-tune epochs F, each
        adding the fine-tune arms at that K or F (:func:`nh_crossbasin.experiments.designs.candidate_arms`).

    Raises
    ------
    ValueError
        For an unknown design, a missing or malformed region spec, or regions the design cannot use.
    """
    import nh_crossbasin
    nh_crossbasin.register()
    from neuralhydrology.datautils.utils import load_basin_file
    from neuralhydrology.utils.config import Config

    from nh_crossbasin.nh_adapter import raw_attributes

    if design not in DESIGNS:
        raise ValueError(f"design {design!r} is not one of {DESIGNS}")
    cfg = Config(read_config(base_config))
    basins = load_basin_file(Path(cfg.train_basin_file))
    needs_regions = design != "single-vs-regional"
    if needs_regions and not regions and design != "homogeneous-vs-heterogeneous":
        raise ValueError(f"design {design} needs --regions (e.g. 'huc_02' or 'clz_cl_smj>tbi_cl_smj').")
    attributes = raw_attributes(cfg, basins) if (regions or design == "similar-vs-dissimilar") else None
    scheme = region_scheme(regions, basins, attributes) if regions else None
    if scheme is not None and not 0 <= level < len(scheme.levels):
        raise ValueError(f"--level {level}: the region spec has levels 0..{len(scheme.levels) - 1}")
    first_seed = int(cfg.seed) if cfg.seed is not None else 1
    seeds = [first_seed + i for i in range(n_seeds)]
    if design == "global-vs-local":
        runs = global_vs_local(scheme, level)
    elif design == "single-vs-regional":
        runs = single_vs_regional(basins)
    elif design == "similar-vs-dissimilar":
        runs = similar_vs_dissimilar(scheme, attributes, cfg.static_attributes, rois, size_control, seed=first_seed)
    else:
        targets = None
        if scheme is not None:
            targets = {r: (out / "basins" / f"influence_roi_{safe_name(r)}_eval.txt").resolve()
                       for r in scheme.regions(level)}
        runs = homogeneous_vs_heterogeneous(scheme, basins, level, targets, int(cfg.epochs), finetune_epochs,
                                            extra_variants)
    extra = {"regions": regions, "level": level,
             "controls": dict(CONTROLS, **{v: variant_control(o) for v, o in (extra_variants or {}).items()},
                              **{v: "finetune_uniform" for v in (extra_finetune_variants or {})})}
    if finetune_epochs:
        if design != "homogeneous-vs-heterogeneous":
            raise ValueError(f"--finetune-epochs applies to homogeneous-vs-heterogeneous only, not {design}.")
        schedule = cfg.learning_rate if isinstance(cfg.learning_rate, dict) else {0: cfg.learning_rate}
        last_lr = float(schedule[max(e for e in schedule if e <= int(cfg.epochs))])
        arms, arm_controls = finetune_arms(extra_finetune_variants, cluster_counts, finetune_epoch_counts,
                                           int(clusters), int(cfg.epochs), int(finetune_epochs))
        extra["controls"].update(arm_controls)
        extra["finetune"] = {"epochs": int(finetune_epochs), "clusters": int(clusters),
                             "learning_rate": float(finetune_learning_rate or last_lr),
                             "overrides": dict(finetune_overrides or {}), "arms": arms}
    return write_experiment(design, runs, base_config, out, seeds, extra=extra)


def collect_results(out: Path, period: str = "test") -> pd.DataFrame:
    """Tidy table of the finished runs' metrics on their evaluation basins (one row per run, seed, basin), the
    merged results of the fine-tune arms included."""
    rows = []
    for entry, run_dir in _finished_runs(out, period):
        eval_basins = Path(entry["eval_basin_file"]).read_text().split()
        metrics = run_metrics(run_dir, eval_basins, period)
        rows.append(metrics.assign(run=entry["run"], seed=entry["seed"], variant=entry["variant"],
                                   group=entry["group"], run_dir=str(run_dir)))
    return _tidy(rows)


def collect_ensembles(out: Path, period: str = "test") -> pd.DataFrame:
    """Seed ensembles: per run, the mean prediction over its seeds (Kratzert et al. 2019), then NH's metrics on the
    run's evaluation basins (one row per run and basin; ``seed`` is ``"ensemble"``)."""
    from nh_crossbasin.analysis.results import basin_metrics, ensemble_results
    members: dict = {}
    for entry, run_dir in _finished_runs(out, period):
        members.setdefault(entry["run"], (entry, []))[1].append(run_dir)
    rows = []
    for run, (entry, run_dirs) in members.items():
        eval_basins = set(Path(entry["eval_basin_file"]).read_text().split())
        metrics = basin_metrics(ensemble_results(run_dirs, period=period, evaluate_missing=False),
                                metrics=["NSE", "KGE"], progress=False)
        metrics = metrics[metrics.index.isin(eval_basins)].reset_index()
        rows.append(metrics.assign(run=run, seed="ensemble", variant=entry["variant"], group=entry["group"],
                                   members=len(run_dirs)))
    return _tidy(rows)


def _finished_runs(out: Path, period: str = "test"):
    """``(manifest entry, run directory)`` of every run of the manifest, and of every fine-tune arm, that has
    results of ``period`` (a fine-tune arm's "run directory" is its merged ``specialized`` folder)."""
    manifest = json.loads((Path(out) / MANIFEST).read_text())
    for entry in manifest["runs"]:
        run_dir = finished_run_dir(Path(entry["run_parent"]), period)
        if run_dir is not None:
            yield entry, run_dir
    for entry in finetune_entries(out, manifest):
        merged = Path(entry["run_parent"]) / "specialized"
        if list(merged.glob(f"{period}/model_epoch*/{period}_metrics.csv")):
            yield entry, merged


def finetune_entries(out: Path, manifest: dict) -> List[dict]:
    """Manifest-like entries of the fine-tune arms: one per arm and seed, starting from that seed's pooled run."""
    if not manifest.get("finetune"):
        return []
    arms = manifest["finetune"]["arms"]
    chosen = manifest.get("finetune_arms", list(arms))
    entries = []
    for pooled in (e for e in manifest["runs"] if e["variant"] == "pooled"):
        for arm in (a for a in arms if a in chosen):
            entries.append(dict(pooled, name=f"{arm}_seed{pooled['seed']}", run=arm, variant=arm,
                                run_parent=str(Path(out) / "finetune" / f"{arm}_seed{pooled['seed']}"),
                                pooled_run_parent=pooled["run_parent"], sampler=arms[arm]["sampler"],
                                clusters=arms[arm].get("clusters", manifest["finetune"]["clusters"]),
                                epochs=arms[arm].get("epochs", manifest["finetune"]["epochs"]),
                                pooled_epoch=arms[arm].get("pooled_epoch"),
                                overrides=arms[arm]["overrides"]))
    return entries


def _tidy(rows: List[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-run metric tables, identifying columns first."""
    if not rows:
        return pd.DataFrame()
    table = pd.concat(rows, ignore_index=True)
    first = ["run", "variant", "group", "seed", "basin"]
    return table[first + [c for c in table.columns if c not in first]]


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write a results table; a different table it would replace (from an earlier invocation, or edited by hand) is
    kept as ``<name>.previous_N.csv``, so that a re-run never loses what the folder held."""
    from nh_crossbasin.files import replace_keeping_previous
    replace_keeping_previous(Path(path), table.to_csv(index=False))


def summarise(table: pd.DataFrame, design: str, controls: Optional[dict] = None) -> str:
    """Per variant: median and mean NSE and KGE, and the paired difference in NSE (over basin and seed) to the
    design's baseline and to the variant's control (:func:`~nh_crossbasin.experiments.summary.format_arm_table`)."""
    from nh_crossbasin.experiments.summary import arm_table, format_arm_table
    if table.empty:
        return "no finished runs"
    return format_arm_table(arm_table(table, BASELINE[design], controls or CONTROLS, metrics=("NSE", "KGE")))


def add_finetune_arms(out: Path, arms: dict, controls: dict) -> List[str]:
    """Add fine-tune arms to the manifest of a design begun without them (a resumed study given a new arm or a new
    candidate K); the older manifest is kept as ``experiment.previous_N.json``. Nothing trained is touched.

    Parameters
    ----------
    arms : dict
        ``{arm: {"sampler": ..., "overrides": {...}[, "clusters": K][, "epochs": F, "pooled_epoch": e]}}``; arms
        already in the manifest are kept as they are, and must have the same specification.
    controls : dict
        ``{arm: control}`` of the arms.

    Returns
    -------
    list of str
        The arms added.

    Raises
    ------
    ValueError
        When the design has no fine-tune arms, or an arm of the manifest has another specification.
    """
    from nh_crossbasin.files import replace_keeping_previous
    path = Path(out) / MANIFEST
    manifest = json.loads(path.read_text())
    if not manifest.get("finetune"):
        raise ValueError(f"{path} has no fine-tune arms (it was built without --finetune-epochs): nothing to add to")
    present = manifest["finetune"]["arms"]
    clash = [a for a in arms if a in present and arms[a] != present[a]]
    if clash:
        raise ValueError(f"{path}: the arms {clash} exist with another specification; use a new --out")
    added = [a for a in arms if a not in present]
    if added:
        present.update({a: arms[a] for a in added})
        manifest["controls"].update({a: controls[a] for a in added})
        replace_keeping_previous(path, json.dumps(manifest, indent=1) + "\n")
    return added


def add_global_variants(out: Path, extra_variants: dict) -> List[str]:
    """Add global influence-sampler variants to a ``homogeneous-vs-heterogeneous`` design begun without them (a
    resumed study given a new candidate τ or ε): their configs, written from the design's base config with the
    epochs of its other global arms, their manifest entries for every seed of the design and their controls. The
    older manifest is kept as ``experiment.previous_N.json``; nothing else is changed.

    Parameters
    ----------
    extra_variants : dict
        ``{variant: config overrides}``, as in :func:`build_experiment`; variants already there are skipped.

    Returns
    -------
    list of str
        The variants added.
    """
    from neuralhydrology.datautils.utils import load_basin_file

    from nh_crossbasin.experiments.writer import plan_runs, write_planned
    from nh_crossbasin.files import replace_keeping_previous
    path = Path(out) / MANIFEST
    manifest = json.loads(path.read_text())
    if manifest["design"] != "homogeneous-vs-heterogeneous":
        raise ValueError(f"{path}: global influence variants belong to homogeneous-vs-heterogeneous, not "
                         f"{manifest['design']}")
    present = {e["variant"] for e in manifest["runs"]}
    missing = {safe_name(v): dict(o) for v, o in extra_variants.items() if safe_name(v) not in present}
    if not missing:
        return []
    base = read_config(Path(manifest["base_config"]))
    basins = load_basin_file(Path(base["train_basin_file"]))
    finetune_epochs = int((manifest.get("finetune") or {}).get("epochs", 0))
    runs = [r for r in homogeneous_vs_heterogeneous(None, basins, base_epochs=int(base["epochs"]),
                                                    finetune_epochs=finetune_epochs, extra_variants=missing)
            if r.variant in missing]
    entries, planned = plan_runs(runs, Path(manifest["base_config"]), Path(out), manifest["seeds"])
    write_planned(planned, Path(out))
    manifest["runs"] += entries
    manifest["controls"].update({v: variant_control(o) for v, o in missing.items()})
    replace_keeping_previous(path, json.dumps(manifest, indent=1) + "\n")
    return list(missing)


def run_finetune_arms(out: Path, manifest: dict, periods: Sequence[str] = ("test",), **execution) -> List[dict]:
    """The fine-tune arms of every seed whose pooled run finished (``nh-xb specialize`` with each arm's sampler);
    finished arms are skipped. Returns one runner-style result per arm and seed."""
    from nh_crossbasin.experiments.specialize import specialize
    options = manifest.get("finetune") or {}
    results = []
    for entry in finetune_entries(out, manifest):
        pooled = finished_run_dir(Path(entry["pooled_run_parent"]), periods)
        if pooled is None:
            results.append({"name": entry["name"], "status": "failed", "run_dir": None, "seconds": 0.0,
                            "error": f"its pooled run {entry['pooled_run_parent']} did not finish"})
            continue
        try:
            summary = specialize(pooled, Path(entry["eval_basin_file"]), Path(entry["run_parent"]),
                                 clusters=entry["clusters"], epochs=entry["epochs"],
                                 pooled_epoch=entry["pooled_epoch"],
                                 learning_rate=options["learning_rate"], sampler=entry["sampler"],
                                 overrides=dict(options.get("overrides") or {}, **entry["overrides"]),
                                 periods=periods, log=lambda line: None,
                                 **execution)
            bad = {u: s for u, s in summary["status"].items() if s == "failed"}
            status = "failed" if bad else "done"
            error = f"units failed: {sorted(bad)} (see {Path(entry['run_parent']) / FAILURES})" if bad else ""
        except Exception as err:  # one arm failing must not stop the others
            status, error = "failed", f"{type(err).__name__}: {err}"
        results.append({"name": entry["name"], "status": status, "run_dir": entry["run_parent"], "seconds": 0.0,
                        "error": error})
        print(f"{status:>7s}  {entry['name']}")
    return results


def run_experiment(out: Path, workers: int = 1, ray: Optional[str] = None, gpus=None, gpus_per_task: float = 0,
                   threads_per_task: Optional[int] = None, periods: Sequence[str] = ("test",),
                   variants: Optional[Sequence[str]] = None) -> str:
    """Run every run of the manifest (finished ones are skipped), write the results tables, return the summary.

    Parameters
    ----------
    periods : sequence of str
        Periods every run is evaluated on (runs trained before are only evaluated on the periods they lack). The
        tables are of the last period: ``results.csv`` (and ``results_ensemble.csv`` with several seeds) for
        ``test``, ``results_<period>.csv`` otherwise.
    variants : sequence of str, optional
        Run only these variants (e.g. the configurations chosen on validation, to evaluate them on the test period).
    """
    out = Path(out)
    manifest = json.loads((out / MANIFEST).read_text())
    finetune_arms = list((manifest.get("finetune") or {}).get("arms", {}))
    chosen = [e for e in manifest["runs"] if variants is None or e["variant"] in variants
              or (e["variant"] == "pooled" and set(variants) & set(finetune_arms))]
    results = run_tasks(tasks_of(chosen, periods), workers=workers, ray=ray, gpus=gpus,
                        gpus_per_task=gpus_per_task, threads_per_task=threads_per_task)
    arms = dict(manifest, runs=chosen)
    if variants is not None:
        arms["finetune_arms"] = [v for v in variants if v in finetune_arms]
    results += run_finetune_arms(out, arms, periods, workers=workers, ray=ray, gpus=gpus,
                                 gpus_per_task=gpus_per_task, threads_per_task=threads_per_task)
    failed = write_failures(out, results)
    period = periods[-1]
    suffix = "" if period == "test" else f"_{period}"
    table = collect_results(out, period)
    write_table(table, out / f"results{suffix}.csv")
    text = summarise(table, manifest["design"], manifest.get("controls"))
    if len(manifest["seeds"]) > 1:
        ensembles = collect_ensembles(out, period)
        write_table(ensembles, out / f"results{suffix}_ensemble.csv")
        text += f"\n\nseed ensembles (mean prediction of {len(manifest['seeds'])} seeds):\n"
        text += summarise(ensembles, manifest["design"], manifest.get("controls"))
    if failed:
        text += f"\n{len(failed)} runs failed: {[r['name'] for r in failed]} (see {out / FAILURES})"
    return text
