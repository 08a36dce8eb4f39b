"""``nh-xb experiment``: write (and with ``--run``, run) one of the field's experiment designs."""
from __future__ import annotations

import argparse
from pathlib import Path

NAME = "experiment"


def add_parser(subparsers) -> None:
    """Register the sub-command."""
    from nh_crossbasin.experiments.designs import DESIGNS
    parser = subparsers.add_parser(NAME, help="write/run an experiment design (configs, basin files, manifest)")
    parser.add_argument("design", choices=DESIGNS)
    parser.add_argument("--config", required=True, help="base NH config (data, inputs, model, training)")
    parser.add_argument("--regions", help="region spec: 'COL[>COL...]' of the dataset's attributes or "
                                          "'file.csv:COL[>COL]' (needed except for single-vs-regional)")
    parser.add_argument("--out", required=True, help="output folder (re-using it resumes)")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds (ensemble members) per run")
    parser.add_argument("--level", type=int, default=0, help="region level for global-vs-local and "
                                                             "homogeneous-vs-heterogeneous (0 = coarsest)")
    parser.add_argument("--roi", nargs="*", help="regions of interest for similar-vs-dissimilar (finest level)")
    parser.add_argument("--no-size-control", action="store_true", help="skip the equal-size variants")
    parser.add_argument("--finetune-epochs", type=int, default=0,
                        help="homogeneous-vs-heterogeneous: add a pooled run of the base config's epochs E and the "
                             "fine-tune arms (specialize_clusters, finetune_uniform, finetune_local, "
                             "finetune_local_random) of this many "
                             "epochs F; the global arms then train E + F epochs (default 0: no fine-tune arms)")
    parser.add_argument("--clusters", type=int, default=2, help="clusters of the fine-tune arms (default 2)")
    parser.add_argument("--finetune-learning-rate", type=float,
                        help="learning rate of the fine-tune arms (default: the base schedule's last value)")
    parser.add_argument("--run", action="store_true", help="train and evaluate every run")
    parser.add_argument("--workers", type=int, default=1, help="concurrent runs (local processes)")
    parser.add_argument("--ray", help="'local', 'auto' or a Ray address: run on Ray instead")
    parser.add_argument("--gpus", type=int, nargs="*", help="local GPU ids, assigned round robin")
    parser.add_argument("--gpus-per-task", type=float, default=0, help="GPUs Ray reserves per run")


def run(args: argparse.Namespace) -> None:
    """Write the design; run it and print the summary when asked."""
    from nh_crossbasin.experiments.experiment import build_experiment, run_experiment
    out = Path(args.out)
    entries = build_experiment(args.design, Path(args.config), args.regions, out, args.seeds, level=args.level,
                               rois=args.roi, size_control=not args.no_size_control,
                               finetune_epochs=args.finetune_epochs, clusters=args.clusters,
                               finetune_learning_rate=args.finetune_learning_rate)
    print(f"wrote {len(entries)} configs of design '{args.design}' to {out} (manifest: {out / 'experiment.json'})")
    if args.run:
        summary = run_experiment(out, workers=args.workers, ray=args.ray, gpus=args.gpus,
                                 gpus_per_task=args.gpus_per_task)
        print(summary)
