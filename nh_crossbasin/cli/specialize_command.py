"""``nh-xb specialize``: one fine-tuned model per target basin (or per cluster of targets) from a pooled run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "specialize"


def add_parser(subparsers) -> None:
    """Register the sub-command."""
    parser = subparsers.add_parser(NAME, help="per-target specialisation of a pooled run")
    parser.add_argument("--run-dir", required=True, help="pooled (trained) NH run directory")
    parser.add_argument("--targets", required=True, help="basin file of the target basins")
    parser.add_argument("--out", help="output folder (default: RUN_DIR/specialized_<targets file stem>[_<sampler>]); "
                                      "re-using it resumes")
    parser.add_argument("--clusters", type=int, help="fine-tune per cluster of targets (k-means on influence rows)")
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (default 1)")
    parser.add_argument("--pooled-epoch", type=int,
                        help="start from the pooled run's weights of this epoch (default: its last saved one)")
    parser.add_argument("--sampler", choices=["influence", "uniform", "local", "local_random"], default="influence",
                        help="each unit's weights: its influence weights (default), or a control with the same "
                             "updates: 'uniform' (NH's shuffle over all training basins), 'local' (the unit's own "
                             "basins only) or 'local_random' (with --clusters: the basins of a random partition of "
                             "the targets into units of the clusters' sizes)")
    parser.add_argument("--refresh-every", type=int, default=1, help="influence refresh interval in epochs")
    parser.add_argument("--learning-rate", type=float, help="fine-tuning learning rate (default: the pooled run's)")
    parser.add_argument("--workers", type=int, default=1, help="concurrent fine-tuning runs (local processes)")
    parser.add_argument("--ray", help="'local', 'auto' or a Ray address: run on Ray instead")
    parser.add_argument("--gpus", type=int, nargs="*", help="local GPU ids, assigned round robin")
    parser.add_argument("--gpus-per-task", type=float, default=0, help="GPUs Ray reserves per run")
    parser.add_argument("--threads-per-task", type=int, help="torch CPU threads per run")


def run(args: argparse.Namespace) -> None:
    """Specialise, print the summary; exit with status 1 if a unit failed (the others are kept and merged)."""
    from nh_crossbasin.experiments.specialize import specialize
    run_dir = Path(args.run_dir)
    suffix = "" if args.sampler == "influence" else f"_{args.sampler}"
    out = Path(args.out) if args.out else run_dir / f"specialized_{Path(args.targets).stem}{suffix}"
    summary = specialize(run_dir, Path(args.targets), out, clusters=args.clusters, epochs=args.epochs,
                         refresh_every=args.refresh_every, learning_rate=args.learning_rate, workers=args.workers,
                         ray=args.ray, gpus=args.gpus, gpus_per_task=args.gpus_per_task,
                         threads_per_task=args.threads_per_task, sampler=args.sampler,
                         pooled_epoch=args.pooled_epoch)
    failed = [u for u, s in summary["status"].items() if s == "failed"]
    print(f"{len(summary['units']) - len(failed)} of {len(summary['units'])} units finished; merged results: "
          f"{summary['merged']}")
    if failed:
        print(f"failed units: {failed} (errors in {out / 'failures.json'}); re-run the same command to retry them")
        sys.exit(1)
