"""``xb_ealstm``'s CPU training node at an earlier commit against the installed package, in one process.

Loads ``nh_crossbasin/core/recurrence.py`` and ``ealstm_sequence.py`` as they were at ``--base`` (``git show``) next
to the installed ones and times ``ealstm_sequence`` (forward, then backward of a fixed gradient of ``h``, each with
its own buffer pool) for both, taking turns, so that machine drift affects both alike. Prints the median ms of each
pass, the ratio new / base, and the largest relative difference of ``h`` between the two (they compute the same
recurrence). Run it from the repository, with the package installed from the working tree.

Examples
--------
::

    OMP_NUM_THREADS=2 python benchmarks/ealstm_node_ab.py --base 6bc5561 --batch-sizes 64 256 --repeats 12
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import torch

REPOSITORY = Path(__file__).resolve().parents[1]
MODULES = ("recurrence", "ealstm_sequence")


def load_base(commit: str, directory: Path):
    """The ``ealstm_sequence`` module as it was at ``commit``, importable as ``xb_base.ealstm_sequence``."""
    package = directory / "xb_base"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in MODULES:
        result = subprocess.run(["git", "show", f"{commit}:nh_crossbasin/core/{name}.py"], cwd=REPOSITORY,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"--base {commit}: git show could not read nh_crossbasin/core/{name}.py there "
                             f"({result.stderr.strip()}); the node exists from commit 15a8b97 on.")
        source = result.stdout.replace("from nh_crossbasin.core.recurrence import", "from xb_base.recurrence import")
        (package / f"{name}.py").write_text(source)
    sys.path.insert(0, str(directory))
    return importlib.import_module("xb_base.ealstm_sequence")


def inputs(batch: int, args: argparse.Namespace) -> tuple:
    """Inputs, weights (leaves) and a gradient of ``h`` at the given sizes, from a fixed seed."""
    generator = torch.Generator().manual_seed(0)
    n_steps, hidden, n_inputs = args.seq, args.hidden, args.inputs

    def leaf(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=generator)).requires_grad_()
    weights = [leaf(batch, hidden), leaf(3 * hidden, n_inputs, scale=0.1),
               leaf(3 * hidden, hidden, scale=hidden ** -0.5), leaf(3 * hidden, scale=0.1)]
    return torch.randn(n_steps, batch, n_inputs, generator=generator), weights, torch.randn(
        n_steps, batch, hidden, generator=generator)


def compare(base, new, batch: int, args: argparse.Namespace) -> dict:
    """Median forward and backward ms of both modules, and the largest relative difference of their ``h``."""
    x, weights, grad_h = inputs(batch, args)
    runs = {"base": (base.ealstm_sequence, base.BufferPool()), "new": (new.ealstm_sequence, new.BufferPool())}
    times = {(name, part): [] for name in runs for part in ("forward", "backward")}
    outputs = {}
    for repeat in range(args.warmup + args.repeats):
        for name, (function, pool) in runs.items():
            start = time.perf_counter()
            h, _ = function(x, *weights, pool)
            middle = time.perf_counter()
            torch.autograd.backward([h], [grad_h])
            end = time.perf_counter()
            if repeat >= args.warmup:
                times[(name, "forward")].append(1000 * (middle - start))
                times[(name, "backward")].append(1000 * (end - middle))
            outputs[name] = h.detach().clone()
            del h
    result = {key: statistics.median(values) for key, values in times.items()}
    result["max_rel_diff"] = float((outputs["new"] - outputs["base"]).abs().max() / outputs["base"].abs().max())
    return result


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="HEAD", help="the git commit to compare with (default: HEAD)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--seq", type=int, default=270)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--inputs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    return parser.parse_args(argv)


def main(argv: List[str] = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from nh_crossbasin.core import ealstm_sequence as new
    with tempfile.TemporaryDirectory() as directory:
        base = load_base(args.base, Path(directory))
        try:
            rows = {batch: compare(base, new, batch, args) for batch in args.batch_sizes}
        finally:
            sys.path.remove(directory)
            for name in [m for m in sys.modules if m == "xb_base" or m.startswith("xb_base.")]:
                del sys.modules[name]
    print(f"ealstm_sequence, {args.base} (base) vs installed (new): seq {args.seq}, hidden {args.hidden}, "
          f"{args.inputs} inputs, {args.repeats} repeats after {args.warmup}, {torch.get_num_threads()} threads")
    print("| batch | forward base ms | forward new ms | new / base | backward base ms | backward new ms | new / base "
          "| max rel. diff of h |")
    print("|---|---|---|---|---|---|---|---|")
    for batch, r in rows.items():
        print(f"| {batch} | {r[('base', 'forward')]:.1f} | {r[('new', 'forward')]:.1f} | "
              f"{r[('new', 'forward')] / r[('base', 'forward')]:.3f} | {r[('base', 'backward')]:.1f} | "
              f"{r[('new', 'backward')]:.1f} | {r[('new', 'backward')] / r[('base', 'backward')]:.3f} | "
              f"{r['max_rel_diff']:.1e} |")


if __name__ == "__main__":
    main()
