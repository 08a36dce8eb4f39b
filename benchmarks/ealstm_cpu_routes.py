"""The CPU routes of ``xb_ealstm``'s recurrence, timed against each other: oneDNN's fused kernel, the three-gate
autograd node and the plain autograd loop.

``fused``: :func:`nh_crossbasin.core.ealstm_weights.fused_ealstm` (``torch.lstm`` on the assembled four-gate
weights; oneDNN in float32). ``sequence``: :func:`nh_crossbasin.core.ealstm_sequence.ealstm_sequence` (one autograd
node, backward through time written out, buffers reused from a pool, as the model runs it). ``loop``:
:func:`nh_crossbasin.core.recurrence.ealstm_loop` (the autograd loop the node replaced, the reference). The
recurrence alone (input gate included), with gradients (forward + backward of all weights) and without (forward
under ``torch.no_grad``); the routes take turns in one run. The table gives the median times, the ratios and the
largest relative output difference to the loop. ``xb_ealstm`` takes the fused route on the CPU without gradients
and for batches of at most ``CPU_FUSED_MAX_BATCH``, the sequence node otherwise
(:mod:`nh_crossbasin.nh.models.fused_ealstm`); results: ``benchmarks/RESULTS.md``.

Example
-------
::

    OMP_NUM_THREADS=2 python benchmarks/ealstm_cpu_routes.py --batch-sizes 8 16 32 64 256 --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from nh_crossbasin.core.ealstm_sequence import BufferPool, ealstm_sequence
from nh_crossbasin.core.ealstm_weights import fused_ealstm
from nh_crossbasin.core.recurrence import ealstm_loop

ROUTES = ("loop", "sequence", "fused")


def routes(batch: int, args: argparse.Namespace) -> dict:
    """``{name: (function returning h, parameters)}`` for one batch of random inputs."""
    generator = torch.Generator().manual_seed(0)
    hidden = args.hidden
    x_d = torch.randn(args.seq, batch, args.dynamic, generator=generator)
    x_s = torch.randn(batch, args.static, generator=generator)
    params = [0.1 * torch.randn(hidden, args.static, generator=generator), torch.zeros(hidden),
              0.1 * torch.randn(3 * hidden, args.dynamic, generator=generator),
              0.05 * torch.randn(3 * hidden, hidden, generator=generator), torch.zeros(3 * hidden)]
    params = [p.requires_grad_() for p in params]

    def loop():
        return ealstm_loop(x_d, torch.sigmoid(x_s @ params[0].t() + params[1]), *params[2:])[0]

    pool = BufferPool()

    def sequence():
        return ealstm_sequence(x_d, x_s @ params[0].t() + params[1], *params[2:], pool=pool)[0]

    def fused():
        return fused_ealstm(x_d, x_s, *params)[0]
    return {"loop": loop, "sequence": sequence, "fused": fused}, params


def run(fn, params, with_gradients: bool) -> torch.Tensor:
    """One pass of a route; with gradients, also the backward of a loss that reaches every step."""
    if not with_gradients:
        with torch.no_grad():
            return fn()
    h = fn()
    torch.autograd.grad(h[-1].pow(2).sum() + h.mean(), params)
    return h.detach()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64, 256])
    parser.add_argument("--seq", type=int, default=270)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dynamic", type=int, default=5)
    parser.add_argument("--static", type=int, default=27)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"seq {args.seq}, hidden {args.hidden}, {args.dynamic} dynamic + {args.static} static inputs, "
          f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| batch | gradients | loop ms | sequence ms | fused ms | sequence / loop | fused / sequence "
          "| max rel. diff |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in args.batch_sizes:
        functions, params = routes(batch, args)
        for with_gradients in (True, False):
            outputs = {name: run(fn, params, with_gradients) for name, fn in functions.items()}   # warm-up
            diff = max(float((outputs[name] - outputs["loop"]).abs().max() / outputs["loop"].abs().max())
                       for name in ("sequence", "fused"))
            times = {name: [] for name in functions}
            for _ in range(args.repeats):
                for name, fn in functions.items():
                    start = time.perf_counter()
                    run(fn, params, with_gradients)
                    times[name].append(1e3 * (time.perf_counter() - start))
            loop, sequence, fused = (statistics.median(times[name]) for name in ROUTES)
            print(f"| {batch} | {'yes' if with_gradients else 'no'} | {loop:.1f} | {sequence:.1f} | {fused:.1f} | "
                  f"{sequence / loop:.2f} | {fused / sequence:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
