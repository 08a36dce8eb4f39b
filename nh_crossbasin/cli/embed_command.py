"""``nh-xb embed``: write the EA-LSTM input-gate embedding of a trained run as netCDF into the run directory."""
from __future__ import annotations

import argparse

NAME = "embed"


def add_parser(subparsers) -> None:
    """Register the sub-command."""
    parser = subparsers.add_parser(NAME, help="static input-gate vector per basin of an EA-LSTM run (xb_ealstm or "
                                              "NH ealstm), written as netCDF into the run directory")
    parser.add_argument("--run-dir", required=True, help="the trained run directory")
    parser.add_argument("--epoch", type=int, default=None, help="epoch of the weights (default: the last saved)")
    parser.add_argument("--basins", default=None,
                        help="basin file (default: the run's training basins)")


def run(args: argparse.Namespace) -> None:
    """Compute the embedding, write it (never over an existing file) and print the file's path."""
    from pathlib import Path

    from nh_crossbasin.nh.embedding import write_input_gate_embedding
    if args.basins is not None and not Path(args.basins).is_file():
        raise FileNotFoundError(f"--basins: basin file {args.basins} not found")
    print(write_input_gate_embedding(args.run_dir, epoch=args.epoch, basins=args.basins))
