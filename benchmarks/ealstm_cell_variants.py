"""A/B of the EA-LSTM CPU recurrence's element-wise step: the plain loop against two fused variants (issue 11).

``loop``: :func:`nh_crossbasin.core.recurrence.ealstm_loop` (what ``xb_ealstm`` trained with on the CPU before
:func:`nh_crossbasin.core.ealstm_sequence.ealstm_sequence`).
``compiled``: the same loop whose element-wise cell update is ``torch.compile``-d (inductor fuses the σ/tanh and
products of forward and backward). ``autograd_fn``: the cell update as a custom ``torch.autograd.Function`` with a
hand-written backward. The two recurrent ``addmm`` per step are the same in all three. The variants take turns in
one run; the script prints the largest relative gradient difference to ``loop`` and the median time of forward +
backward with its ratio to ``loop``. Results: ``benchmarks/RESULTS.md`` (neither variant paid; the loop stays).

Example
-------
::

    OMP_NUM_THREADS=2 python benchmarks/ealstm_cell_variants.py --batch 64 --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nh_crossbasin.core.recurrence import ealstm_loop  # noqa: E402


def cell(gates, c, input_gate):
    """The element-wise EA-LSTM step (gate rows f, g, o), as in ``ealstm_loop``."""
    f, g, o = gates.chunk(3, dim=1)
    c = torch.sigmoid(f) * c + input_gate * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class CellFunction(torch.autograd.Function):
    """:func:`cell` with a hand-written backward that saves five tensors."""

    @staticmethod
    def forward(ctx, gates, c_previous, input_gate):
        f, g, o = gates.chunk(3, dim=1)
        sf, tg, so = torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = torch.addcmul(sf * c_previous, input_gate, tg)
        tc = torch.tanh(c)
        ctx.save_for_backward(sf, tg, so, tc, c_previous, input_gate)
        return so * tc, c

    @staticmethod
    def backward(ctx, dh, dc_next):
        sf, tg, so, tc, c_previous, input_gate = ctx.saved_tensors
        dc = dh * so * (1 - tc * tc)
        if dc_next is not None:
            dc = dc + dc_next
        gates = torch.cat([dc * c_previous * sf * (1 - sf), dc * input_gate * (1 - tg * tg),
                           dh * tc * so * (1 - so)], 1)
        return gates, dc * sf, dc * tg


def loop_with(step_fn, x_d, input_gate, weight_ih, weight_hh, bias):
    """``ealstm_loop`` with another element-wise step."""
    h = x_d.new_zeros(x_d.shape[1], weight_hh.shape[1])
    c, hs = torch.zeros_like(h), []
    for x_t in x_d.unbind(0):
        h, c = step_fn(torch.addmm(torch.addmm(bias, x_t, weight_ih.t()), h, weight_hh.t()), c, input_gate)
        hs.append(h)
    return torch.stack(hs, 0), c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=270)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--inputs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    hidden = args.hidden
    x = torch.randn(args.seq, args.batch, args.inputs)
    params = [torch.sigmoid(torch.randn(args.batch, hidden)), torch.randn(3 * hidden, args.inputs) * 0.1,
              torch.randn(3 * hidden, hidden) * 0.05, torch.zeros(3 * hidden)]
    params = [p.requires_grad_() for p in params]
    compiled = torch.compile(cell, dynamic=False)
    variants = {"loop": lambda: ealstm_loop(x, *params),
                "compiled": lambda: loop_with(compiled, x, *params),
                "autograd_fn": lambda: loop_with(CellFunction.apply, x, *params)}

    def step(fn):
        for p in params:
            p.grad = None
        h, _ = fn()
        (h[-1].sum() + (h ** 2).mean()).backward()
        return [p.grad.clone() for p in params]

    start = time.perf_counter()
    step(variants["compiled"])
    print(f"torch.compile and first step: {time.perf_counter() - start:.1f} s")
    grads = {name: step(fn) for name, fn in variants.items()}
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            step(fn)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["loop"])
    print(f"batch {args.batch}, seq {args.seq}, hidden {hidden}, threads {torch.get_num_threads()}")
    for name in variants:
        diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(grads[name], grads["loop"]))
        median = statistics.median(times[name])
        print(f"{name:12s} median {median * 1e3:8.1f} ms  ratio {median / base:.2f}  max rel. grad diff {diff:.1e}")


if __name__ == "__main__":
    main()
