"""Entry point of ``nh-xb``.

``nh-xb train|continue_training|finetune|evaluate`` take exactly ``nh-run``'s flags and run NH's own functions with
the plugin explicitly activated (also when ``NH_CROSSBASIN_DISABLE`` is set). The other sub-commands are the
plugin's own tools; each lives in its own module of this package and contributes ``add_parser`` and ``run``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from nh_crossbasin.cli import (compare_command, embed_command, experiment_command, influence_command,
                               specialize_command, synth_command)

NH_MODES = ("train", "continue_training", "finetune", "evaluate")
DEBUG_ENV = "NH_XB_DEBUG"
#: errors in what the user gave (arguments, config values, files): one line, exit status 2; anything else: status 1
INPUT_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)
PLUGIN_COMMANDS = (synth_command, embed_command, influence_command, compare_command, experiment_command,
                   specialize_command)


def _add_nh_mode_parsers(subparsers) -> None:
    for mode in NH_MODES:
        parser = subparsers.add_parser(mode, help=f"nh-run {mode}, with nh-crossbasin active")
        parser.add_argument("--config-file", type=str)
        parser.add_argument("--run-dir", type=str)
        parser.add_argument("--epoch", type=int, help="Epoch, of which the model should be evaluated")
        parser.add_argument("--period", type=str, choices=["train", "validation", "test"], default="test")
        parser.add_argument("--gpu", type=int,
                            help="GPU id to use. Overrides config argument 'device'. Use a value < 0 for CPU.")


def build_parser() -> argparse.ArgumentParser:
    """The ``nh-xb`` argument parser."""
    parser = argparse.ArgumentParser(prog="nh-xb", description="NeuralHydrology with nh-crossbasin active, and the "
                                                               "plugin's tools.")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_nh_mode_parsers(subparsers)
    for command in PLUGIN_COMMANDS:
        command.add_parser(subparsers)
    return parser


def run_nh_mode(args: argparse.Namespace) -> None:
    """Run one of NH's modes exactly as ``nh-run`` does, with the plugin registered first."""
    import nh_crossbasin
    nh_crossbasin.register()
    from neuralhydrology.nh_run import continue_run, eval_run, finetune, start_run
    from neuralhydrology.utils.logging_utils import setup_logging

    mode = args.command
    if mode in ("train", "finetune") and args.config_file is None:
        raise ValueError("missing --config-file")
    if mode in ("continue_training", "evaluate") and args.run_dir is None:
        raise ValueError("missing --run-dir")
    config_file = Path(args.config_file) if args.config_file is not None else None
    if mode == "train":
        start_run(config_file=config_file, gpu=args.gpu)
    elif mode == "continue_training":
        continue_run(run_dir=Path(args.run_dir), config_file=config_file, gpu=args.gpu)
    elif mode == "finetune":
        finetune(config_file=config_file, gpu=args.gpu)
    else:
        setup_logging(str(Path(args.run_dir) / "output.log"))
        eval_run(run_dir=Path(args.run_dir), period=args.period, epoch=args.epoch, gpu=args.gpu)


def main(argv: Optional[List[str]] = None) -> None:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command.

    Bad arguments (argparse) exit with status 2. An error raised by the command prints one line,
    ``nh-xb COMMAND: error: ...``, and exits with status 2 for bad input (arguments, config values, files) or 1 for
    any other failure; ``--debug`` or ``NH_XB_DEBUG=1`` shows the traceback instead.
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command in NH_MODES:
            run_nh_mode(args)
            return
        for command in PLUGIN_COMMANDS:
            if args.command == command.NAME:
                command.run(args)
                return
    except Exception as err:  # noqa: BLE001 - the CLI's one place that turns errors into a line and a status
        if args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        print(f"nh-xb {args.command}: error: {message or type(err).__name__} (--debug shows the traceback)",
              file=sys.stderr)
        sys.exit(2 if isinstance(err, INPUT_ERRORS) else 1)


if __name__ == "__main__":
    main()
