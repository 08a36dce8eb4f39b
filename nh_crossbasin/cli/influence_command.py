"""``nh-xb influence``: the basin-to-basin influence matrix of a trained run, computed offline."""
from __future__ import annotations

import argparse
from pathlib import Path

NAME = "influence"


def add_parser(subparsers) -> None:
    """Register the sub-command."""
    parser = subparsers.add_parser(NAME, help="influence matrix (target x source) of a trained run")
    parser.add_argument("--run-dir", required=True, help="trained NH run directory")
    parser.add_argument("--epoch", type=int, help="weights of this epoch (default: the last saved)")
    parser.add_argument("--targets", help="basin file of target basins (default: the run's, or all training basins)")
    parser.add_argument("--measure", choices=["dot", "cosine", "lookahead"], help="override xb_influence_measure")
    parser.add_argument("--probe-size", type=int, help="override xb_influence_probe_size")
    parser.add_argument("--gpu", type=int, help="GPU id; default or < 0: CPU")


def run(args: argparse.Namespace) -> None:
    """Compute the matrix, write it into the run directory and print a summary."""
    from nh_crossbasin.nh.offline_influence import influence_for_run
    overrides = {}
    if args.targets:
        overrides["xb_influence_targets_file"] = args.targets
    if args.measure:
        overrides["xb_influence_measure"] = args.measure
    if args.probe_size:
        overrides["xb_influence_probe_size"] = args.probe_size
    device = f"cuda:{args.gpu}" if args.gpu is not None and args.gpu >= 0 else "cpu"
    record, path = influence_for_run(Path(args.run_dir), args.epoch, overrides, device=device)
    print(f"influence of {record.sizes['source']} sources on {record.sizes['target']} targets "
          f"(epoch {record.attrs['epoch']}, {record.attrs['measure']}): effective sources "
          f"{record.attrs['effective_sources']:.1f}; written to {path}")
