"""Writing an experiment design to disk: NH configs, basin files and a manifest (``experiment.json``)."""
from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import List, Sequence, Tuple

from ruamel.yaml import YAML

from nh_crossbasin.experiments.designs import RunSpec
from nh_crossbasin.experiments.runner import Task
from nh_crossbasin.files import write_text_once

MANIFEST = "experiment.json"
PATH_SUFFIXES = ("_dir", "_file", "_files", "_path")


def read_config(path: Path) -> dict:
    """A YAML config as a plain dict, with relative paths made absolute (relative to the working directory)."""
    with open(path) as fp:
        cfg = dict(YAML(typ="safe").load(fp))
    for key, value in cfg.items():
        if key.endswith(PATH_SUFFIXES) and value not in (None, "None"):
            cfg[key] = [str(Path(v).resolve()) for v in value] if isinstance(value, list) else str(
                Path(value).resolve())
    return cfg


def write_basin_file(path: Path, basins: Sequence[str]) -> Path:
    """An NH basin file (one id per line)."""
    write_text_once(path, "\n".join(basins) + "\n")
    return path


def write_experiment(design: str, runs: List[RunSpec], base_config: Path, out: Path, seeds: Sequence[int],
                     extra: dict = None) -> List[dict]:
    """Write one NH config per run and seed, their basin files and the manifest -- all of them or none.

    Every file is planned first; if any of them already exists with other content (the folder holds another design
    or other seeds), nothing is written and ``FileExistsError`` names the conflicts. Validation uses the evaluation
    basins (all of them: ``validate_n_random_basins``, unless the base config sets it), so that choices made on the
    validation period concern the basins the design evaluates.

    Returns
    -------
    list of dict
        The manifest's run entries (name, seed, variant, group, config, run_parent, train/eval basin files).
    """
    out = Path(out)
    entries, planned = plan_runs(runs, base_config, out, seeds)
    manifest = {"design": design, "base_config": str(Path(base_config).resolve()), "seeds": list(map(int, seeds)),
                "runs": entries, **(extra or {})}
    planned[out / MANIFEST] = json.dumps(manifest, indent=1) + "\n"
    write_planned(planned, out)
    return entries


def plan_runs(runs: List[RunSpec], base_config: Path, out: Path, seeds: Sequence[int]) -> Tuple[List[dict], dict]:
    """The manifest entries of ``runs`` and the files they need, ``{path: text}`` (nothing is written)."""
    base = read_config(Path(base_config))
    yaml = YAML()
    entries, planned = [], {}
    for run in runs:
        train_file = out / "basins" / f"{run.name}_train.txt"
        eval_file = out / "basins" / f"{run.name}_eval.txt"
        planned[train_file] = "\n".join(run.train_basins) + "\n"
        planned[eval_file] = "\n".join(run.eval_basins) + "\n"
        for seed in seeds:
            name = f"{run.name}_seed{seed}"
            cfg = dict(base)
            cfg.update(run.overrides)
            cfg.update(experiment_name=name, run_dir=str((out / "runs" / name).resolve()), seed=int(seed),
                       train_basin_file=str(train_file.resolve()), validation_basin_file=str(eval_file.resolve()),
                       test_basin_file=str(eval_file.resolve()))
            # NH evaluates the validation period on validate_n_random_basins basins only (default: none)
            cfg.setdefault("validate_n_random_basins", len(run.eval_basins))
            config_path = out / "configs" / f"{name}.yml"
            text = StringIO()
            yaml.dump(cfg, text)
            planned[config_path] = text.getvalue()
            entries.append({"name": name, "run": run.name, "seed": int(seed), "variant": run.variant,
                            "group": run.group, "config": str(config_path), "run_parent": str(out / "runs" / name),
                            "train_basin_file": str(train_file), "eval_basin_file": str(eval_file)})
    return entries, planned


def write_planned(planned: dict, out: Path) -> None:
    """Write planned files, all or none: refused (``FileExistsError``) if any exists with other content."""
    conflicts = [str(p) for p, text in planned.items() if p.exists() and p.read_text() != text]
    if conflicts:
        raise FileExistsError(f"{out} already holds another experiment ({len(conflicts)} files differ, e.g. "
                              f"{conflicts[:3]}); nothing was written: choose a new --out folder, or repeat the "
                              f"original command to resume.")
    for path, text in planned.items():
        write_text_once(path, text)


def tasks_of(entries: List[dict], periods: Sequence[str] = ("test",)) -> List[Task]:
    """Runner tasks of manifest entries (all NH ``train`` runs, evaluated on ``periods``)."""
    return [Task(e["name"], "train", Path(e["config"]), Path(e["run_parent"]), tuple(periods)) for e in entries]
