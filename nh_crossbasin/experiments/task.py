"""One experiment task in one process: NH's ``start_run`` (or ``finetune``), then ``eval_run`` on the test period.

``python -m nh_crossbasin.experiments.task {train|finetune} CONFIG RUN_PARENT [--gpu N]`` is what the runner starts
for each task: the same NH functions ``nh-xb train|finetune`` and ``nh-xb evaluate`` call, in one interpreter, so
that torch, NH and the data are loaded once per task instead of twice.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> None:
    """Train or fine-tune, evaluate the new run directory, print its path (last line of stdout)."""
    parser = argparse.ArgumentParser(prog="python -m nh_crossbasin.experiments.task")
    parser.add_argument("mode", choices=["train", "finetune"])
    parser.add_argument("config", type=Path)
    parser.add_argument("run_parent", type=Path)
    parser.add_argument("--gpu", type=int, default=None)
    args = parser.parse_args(argv)

    import nh_crossbasin
    nh_crossbasin.register()
    from neuralhydrology.nh_run import eval_run, finetune, start_run

    args.run_parent.mkdir(parents=True, exist_ok=True)
    before = {p for p in args.run_parent.iterdir() if p.is_dir()}
    (start_run if args.mode == "train" else finetune)(config_file=args.config, gpu=args.gpu)
    created = sorted({p for p in args.run_parent.iterdir() if p.is_dir()} - before)
    if len(created) != 1:
        sys.exit(f"expected one new run directory in {args.run_parent} (the config's run_dir), found {created}")
    eval_run(run_dir=created[0], period="test", gpu=args.gpu)
    print(created[0])


if __name__ == "__main__":
    main()
