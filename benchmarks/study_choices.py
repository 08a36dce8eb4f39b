"""Choices on the validation period for the accuracy study (``heterogeneous_vs_homogeneous.py``).

- :func:`choose`: per family of arms, the candidate variant (τ, ε, K, F) with the best median validation NSE;
- :func:`final_configurations`: what the test stage evaluates, once: the fixed arms, the chosen variants and their
  chains of controls;
- :func:`adopt_learning_rate`: a study run again at the schedule an earlier study chose takes over that choice;
- :func:`choose_learning_rate`: the learning-rate schedule, chosen for the baseline on validation: the homogeneous
  arm (NH's shuffle, ``E + F`` epochs) is trained at every candidate schedule, and the schedule with the best median
  validation NSE is the study's. The learning rate is a property of training that every arm shares, so it is tuned
  for the baseline (the arm every other one is compared with) and not per arm; a study trained at another schedule
  than the chosen one is not a final configuration, and the script's test stage refuses to evaluate it.
"""
from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import pandas as pd
from ruamel.yaml import YAML

from nh_crossbasin.experiments.designs import arm_family, with_controls
from nh_crossbasin.files import write_text_once

FIXED_ARMS = ["homogeneous", "uniform_replacement", "pooled", "finetune_uniform"]
FAMILIES = ("influence_global", "influence_loss", "specialize_clusters", "finetune_local")
RULE = ("the highest median validation NSE of the seed-ensemble mean prediction (per-seed NSE when there is one "
        "seed)")
LEARNING_RATE_CHOICE = "choices_learning_rate.json"


def validation_table(design: Path, seeds: int) -> pd.DataFrame:
    """The validation results of a design folder: seed-ensemble means with several seeds, else per seed."""
    import nh_crossbasin.experiments.experiment as ex
    return ex.collect_ensembles(design, "validation") if seeds > 1 else ex.collect_results(design, "validation")


def choose(out: Path, table: pd.DataFrame) -> dict:
    """Per family, the variant with the best median validation NSE; written to ``OUT/choices.json``."""
    choices = {"rule": f"per family, the variant with {RULE}", "families": {}}
    for family in FAMILIES:
        members = table[table["variant"].map(arm_family) == family]
        medians = members.groupby("variant")["NSE"].median().sort_values(ascending=False)
        if medians.empty:
            continue
        choices["families"][family] = {"chosen": medians.index[0], "validation_median_NSE": medians.round(4).to_dict()}
    (out / "choices.json").write_text(json.dumps(choices, indent=1) + "\n")
    return choices


def final_configurations(choices: dict, controls: dict) -> List[str]:
    """The fixed arms, the chosen variants and, recursively, their controls."""
    return with_controls(FIXED_ARMS + [family["chosen"] for family in choices["families"].values()], controls)


def schedule_name(first: float, last: float) -> str:
    """Folder name of a learning-rate candidate, e.g. ``lr0.003_0.001``."""
    return f"lr{first:g}_{last:g}"


def choose_learning_rate(out: Path, base: dict, study: Tuple[float, float], candidates: Sequence[Tuple[float, float]],
                         schedule: Callable[[float, float], dict], build: Callable[[Path, Path], None], seeds: int,
                         workers: int) -> dict:
    """Train the homogeneous arm at every candidate schedule, evaluate it on validation, choose.

    Parameters
    ----------
    out : Path
        The study folder: the study's own schedule uses its homogeneous runs (``OUT/design``); every other
        candidate gets ``OUT/learning_rate/<schedule_name>/`` (its base config and design; only ``homogeneous``
        is trained). Finished runs are skipped.
    base : dict
        The study's base config; a candidate changes only ``learning_rate``.
    study, candidates : (first, last)
        The study's schedule and further candidates.
    schedule : callable
        ``(first, last) -> NH learning_rate`` (the study's epoch of the drop).
    build : callable
        ``(base_config_file, design_folder)``: builds the study's design there (if it is not built yet).

    Returns
    -------
    dict
        The record written to ``OUT/choices_learning_rate.json``: the rule, each candidate's median validation
        NSE, the chosen schedule and whether it is the study's.
    """
    from nh_crossbasin.experiments.runner import run_tasks
    from nh_crossbasin.experiments.writer import MANIFEST, tasks_of
    designs = {}
    for first, last in [tuple(study)] + [tuple(c) for c in candidates if tuple(c) != tuple(study)]:
        name = schedule_name(first, last)
        if (first, last) == tuple(study):
            designs[name] = out / "design"
            continue
        folder = out / "learning_rate" / name
        folder.mkdir(parents=True, exist_ok=True)
        text = StringIO()
        YAML().dump(dict(base, learning_rate=schedule(first, last)), text)
        write_text_once(folder / "base.yml", text.getvalue())
        designs[name] = folder / "design"
        build(folder / "base.yml", designs[name])
    # every candidate's homogeneous runs in one pool of workers (finished ones are skipped or only evaluated)
    entries = [e for design in designs.values() for e in json.loads((design / MANIFEST).read_text())["runs"]
               if e["variant"] == "homogeneous"]
    failed = [r for r in run_tasks(tasks_of(entries, ("validation",)), workers=workers) if r["status"] == "failed"]
    if failed:
        raise SystemExit(f"learning-rate stage: {len(failed)} runs failed, e.g. {failed[0]['name']}: "
                         f"{failed[0]['error'][-500:]}; run the stage again to retry them")
    tables = {name: _homogeneous(validation_table(design, seeds)) for name, design in designs.items()}
    medians = {name: round(float(table.median()), 4) for name, table in tables.items()}
    chosen = max(medians, key=medians.get)
    record = {"rule": f"the schedule whose homogeneous arm has {RULE}", "validation_median_NSE": medians,
              "chosen": chosen, "study": schedule_name(*study), "study_is_chosen": chosen == schedule_name(*study),
              "paired_vs_chosen": {name: _paired(tables[chosen], table) for name, table in tables.items()
                                   if name != chosen}}
    if seeds > 1:
        record["per_seed_median_NSE"] = {name: _homogeneous(validation_table(design, 1), by_seed=True)
                                         .groupby(level="seed").median().round(4).tolist()
                                         for name, design in designs.items()}
    (out / LEARNING_RATE_CHOICE).write_text(json.dumps(record, indent=1) + "\n")
    return record


def _homogeneous(table: pd.DataFrame, by_seed: bool = False) -> pd.Series:
    """The homogeneous arm's validation NSE, indexed by basin (by seed and basin with ``by_seed``)."""
    rows = table[table["variant"] == "homogeneous"]
    return rows.set_index(["seed", "basin"] if by_seed else "basin")["NSE"]


def _paired(chosen: pd.Series, other: pd.Series) -> dict:
    """Paired validation NSE over the common basins: the chosen schedule's minus the other's (median, share of
    basins where the chosen one is better, Wilcoxon p)."""
    from nh_crossbasin.analysis.paired import paired_statistics
    both = pd.concat({"other": other, "chosen": chosen}, axis=1).dropna()
    stats = paired_statistics("NSE", both["other"], both["chosen"])
    return {"basins": stats["n_basins"], "median_difference": round(stats["median_diff"], 4),
            "share_better": round(stats["share_improved"], 3), "p_wilcoxon": float(f"{stats['p_wilcoxon']:.3g}")}


def adopt_learning_rate(out: Path, study: Tuple[float, float], other: Path) -> dict:
    """Take the learning-rate choice made by another study (``other``: its folder) of the same configuration.

    A study run again at the schedule that an earlier one chose need not train the candidates again. The other
    study's base config must equal this one's in everything but ``learning_rate`` and the folders NH writes to (basin
    files are compared by their basins). Its record is copied to ``OUT/choices_learning_rate.json`` with
    ``chosen_in``, and with ``study`` and ``study_is_chosen`` for this study's schedule; a resumed study must already
    hold the same record.
    """
    record_path, base_path = other / LEARNING_RATE_CHOICE, other / "base.yml"
    for path in (record_path, base_path):
        if not path.exists():
            raise SystemExit(f"--lr-chosen-in {other}: {path} does not exist (run its --stage learning-rate first)")
    ignore = {"learning_rate", "run_dir", "experiment_name"}
    theirs, base = (_comparable(path) for path in (base_path, out / "base.yml"))
    differ = sorted(k for k in set(theirs) | set(base) if k not in ignore and theirs.get(k) != base.get(k))
    if differ:
        raise SystemExit(f"--lr-chosen-in {other}: its base config differs from this study's in {differ}; a "
                         f"learning rate chosen there does not carry over")
    record = json.loads(record_path.read_text())
    name = schedule_name(*study)
    record.update(chosen_in=str(other), study=name, study_is_chosen=record["chosen"] == name)
    target = out / LEARNING_RATE_CHOICE
    if target.exists():  # a resumed study: the record it holds must be this one (the other study's path aside)
        held = json.loads(target.read_text())
        if {k: v for k, v in held.items() if k != "chosen_in"} != {k: v for k, v in record.items() if k != "chosen_in"}:
            raise SystemExit(f"--lr-chosen-in {other}: {target} already holds another learning-rate choice than "
                             f"{record_path} (compare the two); nothing was overwritten")
        return held
    target.write_text(json.dumps(record, indent=1) + "\n")
    return record


def _comparable(base_config: Path) -> dict:
    """A base config with its basin files replaced by their basins (two studies keep their own copies)."""
    config = YAML(typ="safe").load(base_config.read_text())
    return {k: sorted(Path(v).read_text().split()) if k.endswith("_basin_file") else v for k, v in config.items()}


def check_learning_rate(out: Path) -> None:
    """Refuse the test stage of a study whose schedule is not the one chosen on validation (when one was chosen)."""
    path = out / LEARNING_RATE_CHOICE
    if path.exists():
        record = json.loads(path.read_text())
        if not record["study_is_chosen"]:
            raise SystemExit(f"{path}: the validation period chose {record['chosen']}, but this study trains at "
                             f"{record['study']}; its arms are not final configurations. Run the study at the "
                             f"chosen schedule (--lr) in a new --out.")
