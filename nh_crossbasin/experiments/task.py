"""One experiment task in one process: NH's ``start_run`` (or ``finetune``), then ``eval_run`` on the periods asked
for (default: the test period); or, in mode ``evaluate``, ``eval_run`` of an existing run on the periods it lacks.

``python -m nh_crossbasin.experiments.task {train|finetune|evaluate} CONFIG RUN_PARENT [--periods P ...] [--gpu N]``
is what the runner starts for each task: the same NH functions ``nh-xb train|finetune`` and ``nh-xb evaluate`` call,
in one interpreter, so that torch, NH and the data are loaded once per task instead of twice.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> None:
    """Train or fine-tune, evaluate the new run directory, print its path (last line of stdout)."""
    parser = argparse.ArgumentParser(prog="python -m nh_crossbasin.experiments.task")
    parser.add_argument("mode", choices=["train", "finetune", "evaluate"])
    parser.add_argument("config", type=Path)
    parser.add_argument("run_parent", type=Path)
    parser.add_argument("--periods", nargs="+", default=["test"], choices=["train", "validation", "test"])
    parser.add_argument("--gpu", type=int, default=None)
    args = parser.parse_args(argv)

    import nh_crossbasin
    nh_crossbasin.register()
    from neuralhydrology.nh_run import eval_run, finetune, start_run

    from nh_crossbasin.experiments.runner import trained_run_dir

    args.run_parent.mkdir(parents=True, exist_ok=True)
    if args.mode == "evaluate":
        run_dir = trained_run_dir(args.run_parent)
        if run_dir is None:
            sys.exit(f"no trained run directory (with model weights) in {args.run_parent}")
    else:
        before = {p for p in args.run_parent.iterdir() if p.is_dir()}
        (start_run if args.mode == "train" else finetune)(config_file=args.config, gpu=args.gpu)
        created = sorted({p for p in args.run_parent.iterdir() if p.is_dir()} - before)
        if len(created) != 1:
            sys.exit(f"expected one new run directory in {args.run_parent} (the config's run_dir), found {created}")
        run_dir = created[0]
    for period in args.periods:
        if not list(run_dir.glob(f"{period}/model_epoch*/{period}_metrics.csv")):
            eval_run(run_dir=run_dir, period=period, gpu=args.gpu)
    print(run_dir)


if __name__ == "__main__":
    main()
