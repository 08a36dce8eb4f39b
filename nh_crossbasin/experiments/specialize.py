"""Per-target specialisation of a pooled run (DESIGN.md §2; "optimise training for individual basins").

From a pooled run, one model per target basin -- or per cluster of targets whose influence rows are alike (k-means
on the rows of the pooled model's influence matrix) -- is fine-tuned with NH's own ``finetune`` on all training
basins, sampled by the heterogeneous weights of that target (or cluster): ``xb_sampler: influence`` with the
unit's targets as ``xb_influence_targets_file`` and no warm-up, so the weights are measured on the pooled model
before the first fine-tuning epoch (and refreshed every ``refresh_every`` epochs). Each unit is evaluated on its own
targets; the results are merged into ``OUT/specialized`` in NH's result format.

Three controls change only the weights (``sampler``), with the same fine-tune epochs and updates: ``uniform``
fine-tunes with NH's shuffle over all training basins (``xb_sampler: uniform``; the weights do not depend on the
targets, so one model serves every target), ``local`` fine-tunes on each unit's own basins
(``xb_sampler: targets_replacement``, NH's epoch length), and ``local_random`` does the same on a random partition
of the targets into units of the clusters' sizes (:func:`random_partition`, seeded by the pooled run's seed): it
tells whether ``local``'s clusters carry information, or any split of the basins would do as well.

Layout of ``OUT``: ``units/<unit>/{targets.txt, finetune.yml, runs/<NH run dir>}``, ``units.json`` (the
clusters), ``random_units.json`` (``local_random`` only), ``specialized/`` (merged results and
``specialization.json``), ``failures.json`` with the units that failed in the latest invocation. Re-running the same command resumes:
finished units are skipped.
"""
from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from ruamel.yaml import YAML

from nh_crossbasin.experiments.designs import safe_name
from nh_crossbasin.experiments.results import merge_results
from nh_crossbasin.experiments.runner import Task, run_tasks, write_failures
from nh_crossbasin.experiments.writer import write_basin_file
from nh_crossbasin.files import write_text_once

SUMMARY = "specialization.json"
SAMPLERS = {"influence": "influence", "uniform": "uniform", "local": "targets_replacement",
            "local_random": "targets_replacement"}


def cluster_targets(influence_rows: np.ndarray, targets: List[str], n_clusters: int, seed: int = 0) -> Dict[str, List[str]]:
    """Group targets whose influence rows are alike: k-means (:func:`nh_crossbasin.analysis.clustering.kmeans`,
    scikit-learn, k-means++, 10 seeded starts) on the rows ``I[t, :]`` (NaN entries as 0).

    Returns
    -------
    dict
        ``{"cluster_<k>": [targets]}`` for the non-empty clusters.
    """
    from nh_crossbasin.analysis.clustering import kmeans
    if not 1 <= n_clusters <= len(targets):
        raise ValueError(f"--clusters must be between 1 and the number of targets ({len(targets)}), got {n_clusters}")
    rows = np.nan_to_num(np.asarray(influence_rows, dtype=np.float64))
    labels = kmeans(rows, n_clusters, seed=seed).labels
    return {f"cluster_{k}": [t for t, label in zip(targets, labels) if label == k] for k in sorted(set(labels))}


def _fixed(path: Path, make: Callable[[], Dict[str, List[str]]]) -> Dict[str, List[str]]:
    """The units recorded in ``path``, or ``make()`` recorded there (so that a resumed run keeps its units)."""
    if path.exists():
        return json.loads(path.read_text())
    units = make()
    write_text_once(path, json.dumps(units, indent=1) + "\n")
    return units


def plan_units(pooled_run: Path, targets: List[str], clusters: Optional[int], seed: int,
               out: Path, epoch: Optional[int] = None) -> Dict[str, List[str]]:
    """Units to fine-tune: one per target, or one per cluster of targets.

    Clustering measures the pooled model's influence on the targets (``nh-xb influence``, with the weights of
    ``epoch``, default the last; the record is written to the pooled run's ``influence/`` folder as a new file) and
    is fixed in ``OUT/units.json`` for resumption.
    """
    if not clusters:
        return {safe_name(t): [t] for t in targets}

    def measure_and_cluster() -> Dict[str, List[str]]:
        from nh_crossbasin.nh.offline_influence import influence_for_run
        targets_file = write_basin_file(Path(out) / "targets.txt", targets)
        record, _ = influence_for_run(pooled_run, epoch,
                                      overrides={"xb_influence_targets_file": str(targets_file.resolve())})
        return cluster_targets(record["influence"].values, list(record["target"].values), clusters, seed)

    return _fixed(Path(out) / "units.json", measure_and_cluster)


def random_partition(units: Dict[str, List[str]], seed: int) -> Dict[str, List[str]]:
    """The units' targets dealt at random into units of the same names and sizes (a negative control).

    Parameters
    ----------
    units : dict
        ``{unit: [targets]}``, e.g. the influence clusters of :func:`plan_units`.
    seed : int
        Seed of the permutation (numpy's default generator).

    Returns
    -------
    dict
        ``{unit: [targets]}``: every target exactly once, each unit as large as before, members sorted.
    """
    names = sorted(units)
    targets = [t for name in names for t in units[name]]
    shuffled = [targets[i] for i in np.random.default_rng(seed).permutation(len(targets))]
    result, start = {}, 0
    for name in names:
        result[name] = sorted(shuffled[start:start + len(units[name])])
        start += len(units[name])
    return result


def finetune_config(pooled_run: Path, unit: str, targets_file: Path, run_parent: Path, module_parts: List[str],
                    epochs: int, refresh_every: int, learning_rate: Optional[float], sampler: str = "influence",
                    overrides: Optional[dict] = None, checkpoint: Optional[Path] = None) -> dict:
    """NH finetune config of one unit (``sampler``: a key of :data:`SAMPLERS`; ``checkpoint``: the pooled weights
    to start from, NH's ``checkpoint_path``, when they are not the pooled run's last)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"--sampler {sampler!r}: allowed: {', '.join(SAMPLERS)}")
    cfg = {"base_run_dir": str(Path(pooled_run).resolve()), "experiment_name": f"specialize_{unit}",
           "run_dir": str(run_parent.resolve()), "finetune_modules": list(module_parts), "epochs": int(epochs),
           "xb_sampler": SAMPLERS[sampler], "xb_influence_targets_file": str(targets_file.resolve()),
           "xb_influence_warmup_epochs": 0, "xb_influence_refresh_every": int(refresh_every),
           "test_basin_file": str(targets_file.resolve()), "validation_basin_file": str(targets_file.resolve()),
           "validate_n_random_basins": len(targets_file.read_text().split()), "validate_every": None,
           "save_weights_every": 1}
    if learning_rate is not None:
        cfg["learning_rate"] = float(learning_rate)
    if checkpoint is not None:
        cfg["checkpoint_path"] = str(Path(checkpoint).resolve())
    cfg.update(overrides or {})
    return cfg


def specialize(pooled_run: Path, targets_file: Path, out: Path, clusters: Optional[int] = None, epochs: int = 1,
               refresh_every: int = 1, learning_rate: Optional[float] = None, workers: int = 1,
               ray: Optional[str] = None, gpus: Optional[List[int]] = None, gpus_per_task: float = 0,
               threads_per_task: Optional[int] = None, log: Callable[[str], None] = print,
               sampler: str = "influence", overrides: Optional[dict] = None,
               periods: Sequence[str] = ("test",), pooled_epoch: Optional[int] = None) -> dict:
    """Fine-tune one model per target (or cluster), evaluate each on its targets, merge the results.

    Parameters
    ----------
    pooled_run : Path
        Trained NH run directory (plugin or plain NH).
    targets_file : Path
        Basin file of the targets; all must be training basins of the pooled run.
    out : Path
        Output folder (see the module docstring); re-using it resumes.
    clusters : int, optional
        Fine-tune per cluster of targets instead of per target.
    epochs, refresh_every, learning_rate
        Fine-tuning epochs, influence refresh interval, and learning rate (default: the pooled run's).
    sampler : {'influence', 'uniform', 'local', 'local_random'}
        The unit's weights: its heterogeneous influence weights, or a control (see the module docstring).
    overrides : dict, optional
        Further config keys of every fine-tune (e.g. ``xb_influence_temperature``).
    periods : sequence of str
        Periods each unit is evaluated on (each merged into ``OUT/specialized``).
    pooled_epoch : int, optional
        Start from the pooled run's weights of this epoch (default: its last); the clusters are measured on them
        too. With ``E`` pooled epochs, ``pooled_epoch = E - 1`` and ``epochs = 2`` make as many updates as the last
        epoch and ``epochs = 1``: fine-tune epochs ``F`` can be varied at a fixed total.
    workers, ray, gpus, gpus_per_task, threads_per_task
        Execution, see :func:`nh_crossbasin.experiments.runner.run_tasks`.

    Returns
    -------
    dict
        The summary also written to ``OUT/specialized/specialization.json``.
    """
    from neuralhydrology.datautils.utils import load_basin_file

    from nh_crossbasin.nh.run_dirs import load_trained_model, weight_file

    if sampler not in SAMPLERS:
        raise ValueError(f"--sampler {sampler!r}: allowed: {', '.join(SAMPLERS)}")
    if sampler == "local_random" and not clusters:
        raise ValueError("--sampler local_random needs --clusters: with one unit per target there is nothing to deal "
                         "at random")
    pooled_run, out = Path(pooled_run), Path(out)
    cfg, model, start_epoch = load_trained_model(pooled_run, pooled_epoch)
    checkpoint = weight_file(pooled_run, pooled_epoch)[0] if pooled_epoch is not None else None
    train_basins = set(load_basin_file(Path(cfg.train_basin_file)))
    targets = load_basin_file(Path(targets_file))
    missing = [t for t in targets if t not in train_basins]
    if missing or not targets:
        raise ValueError(f"--targets {targets_file}: {len(missing)} of {len(targets)} basins are not training basins "
                         f"of {pooled_run}, e.g. {missing[:5]}")
    units = plan_units(pooled_run, targets, clusters, int(cfg.seed or 0), out, pooled_epoch)
    if sampler == "local_random":
        units = _fixed(out / "random_units.json", lambda: random_partition(units, int(cfg.seed or 0)))
    # uniform weights do not depend on the targets: one fine-tuned model serves every unit
    run_units = {"all_targets": list(targets)} if sampler == "uniform" else units
    yaml, tasks = YAML(), []
    for unit, members in run_units.items():
        folder = out / "units" / unit
        unit_targets = write_basin_file(folder / "targets.txt", members)
        text = StringIO()
        yaml.dump(finetune_config(pooled_run, unit, unit_targets, folder / "runs", type(model).module_parts, epochs,
                                  refresh_every, learning_rate, sampler, overrides, checkpoint), text)
        write_text_once(folder / "finetune.yml", text.getvalue())
        tasks.append(Task(unit, "finetune", folder / "finetune.yml", folder / "runs", tuple(periods)))
    log(f"specialising {len(targets)} targets in {len(units)} units from {pooled_run} (epoch {start_epoch})")
    results = run_tasks(tasks, workers=workers, ray=ray, gpus=gpus, gpus_per_task=gpus_per_task,
                        threads_per_task=threads_per_task, log=log)
    finished = {r["name"]: r for r in results if r["status"] in ("done", "skipped")}
    write_failures(out, results)
    merged = None
    if finished:
        for period in periods:
            merged = merge_results({u: (Path(finished[u]["run_dir"]), run_units[u]) for u in finished},
                                   out / "specialized", epoch=epochs, period=period)
    summary = {"pooled_run": str(pooled_run), "pooled_epoch": start_epoch, "targets_file": str(targets_file),
               "epochs": epochs,
               "clusters": clusters, "sampler": sampler, "units": units, "run_units": run_units,
               "status": {r["name"]: r["status"] for r in results},
               "run_dirs": {r["name"]: r["run_dir"] for r in results}, "merged": str(merged) if merged else None}
    (out / "specialized").mkdir(parents=True, exist_ok=True)
    (out / "specialized" / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    return summary

