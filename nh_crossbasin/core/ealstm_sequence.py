"""The EA-LSTM recurrence as one autograd node for CPU training (pure torch, no NH).

:class:`EALSTMSequence` runs NH ``ealstm``'s recurrence (three dynamic gates per step, the input gate constant in
time) without recording a per-step autograd graph: the forward pass is :class:`~nh_crossbasin.core.recurrence.
GateTrace` on time-major buffers (each step's gates one contiguous block, ``tanh`` as ``2 σ(2x) − 1`` with the g
rows of the weights doubled), and the backward pass is its back-propagation through time written out, each step's
deltas written over its gates, with ``dW_hh`` as one matrix product over all steps (``dW_ih`` and ``db`` are
summed step by step, while each step's deltas are in cache):

``dW_ih = Σ_t δ[t]ᵀ x[t]``, ``dW_hh = Σ_{t≥1} δ[t]ᵀ h[t-1]``, ``db = Σ_t δ[t]``.

Its buffers come from a :class:`BufferPool`, which hands out the same memory again in the next training step: a
buffer of this size allocated afresh is page-faulted in on its first write, which on 2 CPU cores cost as much as
the element-wise work of the recurrence (``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch.autograd.function import once_differentiable

from nh_crossbasin.core.recurrence import GateTrace, double_g_rows, weight_gradients

_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)


def is_unshared(buffer: torch.Tensor) -> bool:
    """Whether no tensor but ``buffer`` itself references its storage (views, autograd's saved tensors, outputs a
    caller still holds). ``False`` where this torch cannot tell."""
    if _storage_use_count is None:
        return False
    # the count includes `buffer` and the temporary storage object made here
    return _storage_use_count(buffer.untyped_storage()._cdata) <= 2


def carve(storage: torch.Tensor, offset: int, shape: tuple) -> torch.Tensor:
    """A contiguous tensor of ``shape`` on ``storage``'s memory from element ``offset`` on.

    Not an autograd view of ``storage``: it has its own version counter, so that writing one block (the backward
    overwrites the gates) does not mark the others (the returned hidden states) as modified.
    """
    return storage.new_empty(0).set_(storage.untyped_storage(), storage.storage_offset() + offset, shape)


class BufferPool:
    """Flat buffers reused across forward passes, each handed out only while nothing else references it.

    A buffer is free when no tensor but the pool's own references its storage: a view a caller still holds (an
    earlier step's ``h_n``), or an autograd graph that has not been freed, keeps it busy, and the pool hands out
    another. Buffers are kept per role, so that what a caller holds (the hidden states) pins only its own small
    buffer: in NH's training loop, which holds the previous step's predictions while the next forward pass runs,
    two hidden-state buffers take turns and one trace buffer is reused. Not for concurrent use from several threads.

    Parameters
    ----------
    size : int
        Buffers kept at most per role; beyond it a request gets fresh memory that is not kept.
    """

    def __init__(self, size: int = 2):
        self.size = size
        self._buffers: Dict[str, List[torch.Tensor]] = {}

    def take(self, role: str, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A flat tensor of ``numel`` elements for ``role``, uninitialised (a free kept buffer, or new memory)."""
        kept = self._buffers.setdefault(role, [])
        free = [k for k, buffer in enumerate(kept) if is_unshared(buffer)]
        for k in free:
            if kept[k].dtype == dtype and kept[k].device == device and kept[k].numel() >= numel:
                return kept[k][:numel]
        fresh = torch.empty(numel, dtype=dtype, device=device)
        if free:               # replace a free buffer of the wrong kind or size
            kept[free[0]] = fresh
        elif len(kept) < self.size:
            kept.append(fresh)
        return fresh[:numel]      # a view: the caller's reference counts apart from the pool's

    def __len__(self) -> int:
        """The number of buffers kept."""
        return sum(len(kept) for kept in self._buffers.values())

    def clear(self) -> None:
        """Drop every kept buffer (tensors handed out stay valid)."""
        self._buffers = {}

    def __deepcopy__(self, memo) -> "BufferPool":
        return BufferPool(self.size)

    def __getstate__(self) -> dict:
        return {"size": self.size, "_buffers": {}}


class EALSTMSequence(torch.autograd.Function):
    """EA-LSTM over a whole sequence with a hand-written backward (zero initial states, NH ``ealstm``'s maths).

    Call it through :func:`ealstm_sequence`. Differentiable once, with one backward pass per forward pass (NH
    trains with first-order gradients; the backward overwrites the trace). An in-place change of the returned
    hidden states before the backward pass raises, as autograd's own saved tensors do.
    """

    @staticmethod
    def forward(ctx, x_d: torch.Tensor, input_gate_pre: torch.Tensor, weight_ih: torch.Tensor,
                weight_hh: torch.Tensor, bias: torch.Tensor, pool: Optional[BufferPool]) -> tuple:
        ctx.set_materialize_grads(False)
        n_steps, n_samples, n_inputs = x_d.shape
        n_gates, hidden = weight_hh.shape
        rows = n_steps * n_samples

        def buffer(role: str, numel: int) -> torch.Tensor:
            return pool.take(role, numel, x_d.dtype, x_d.device) if pool is not None else x_d.new_empty(numel)
        # time-major blocks: the trace's gates [T, B, 3H], 2c and dh/dc [T, B, H]; apart, what the caller gets
        trace_storage = buffer("trace", rows * (n_gates + 2 * hidden))
        act = carve(trace_storage, 0, (n_steps, n_samples, n_gates))
        c2, dh_dc = (carve(trace_storage, rows * (n_gates + k * hidden), (n_steps, n_samples, hidden))
                     for k in range(2))
        output_storage = buffer("output", (rows + n_samples) * hidden)
        h, c_last = carve(output_storage, 0, (n_steps, n_samples, hidden)), carve(output_storage, rows * hidden,
                                                                                  (n_samples, hidden))
        # [x, 1] [W_ih, b]ᵀ in one pass over the gates, the g rows doubled (GateTrace's tanh(x) = 2 σ(2x) − 1 then
        # needs no pass of its own); [x, 1] again gives dW_ih and db together in the backward
        x_ones = torch.cat([x_d, x_d.new_ones(n_steps, n_samples, 1)], dim=2)
        weight_bias = double_g_rows(torch.cat([weight_ih, bias[:, None]], dim=1), "fgo")
        torch.mm(x_ones.view(rows, n_inputs + 1), weight_bias.t(), out=act.view(rows, n_gates))
        # the trace writes h through a tensor of its own on the same memory, not a view of the returned h: a view
        # would keep h, and through h's grad_fn this node, alive from ctx, a cycle that no garbage collection
        # breaks when no backward pass runs (head-only gradients); every such forward pass leaked its buffers
        h_trace = carve(output_storage, 0, (n_steps, n_samples, hidden))
        ctx.trace = GateTrace(act.transpose(0, 1), weight_hh, "fgo", torch.sigmoid(input_gate_pre),
                              (h_trace.transpose(0, 1), c2.transpose(0, 1), dh_dc.transpose(0, 1)), g_doubled=True)
        torch.mul(c2[-1], 0.5, out=c_last)
        ctx.save_for_backward(x_ones, weight_ih, h)
        return h, c_last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: Optional[torch.Tensor], grad_c_last: Optional[torch.Tensor]) -> tuple:
        x_ones, weight_ih, h = ctx.saved_tensors
        trace, ctx.trace = ctx.trace, None
        if trace is None:
            raise RuntimeError("EALSTMSequence runs one backward pass per forward pass (retain_graph=True is not "
                               "supported for xb_ealstm's CPU training path).")
        if grad_h is None:
            grad_h = torch.zeros_like(h)
        wants_weight_ih = ctx.needs_input_grad[2] or ctx.needs_input_grad[4]
        delta, grad_input_gate_pre = trace.backward(grad_h.transpose(0, 1), grad_c_last, overwrite=True,
                                                    inputs=x_ones.transpose(0, 1) if wants_weight_ih else None)
        delta = delta.transpose(0, 1)                             # [T, B, 3H], contiguous
        grad_x = delta @ weight_ih if ctx.needs_input_grad[0] else None
        grad_weight_ih = grad_bias = None
        if wants_weight_ih:                                       # Σ_t [x, 1][t]ᵀ δ[t]: [D + 1, 3H]
            grad_weight_ih, grad_bias = trace.input_weight_gradient[:-1].t(), trace.input_weight_gradient[-1]
        grad_weight_hh = weight_gradients(delta[1:], h[:-1]) if ctx.needs_input_grad[3] else None
        return grad_x, grad_input_gate_pre, grad_weight_ih, grad_weight_hh, grad_bias, None


def ealstm_sequence(x_d: torch.Tensor, input_gate_pre: torch.Tensor, weight_ih: torch.Tensor,
                    weight_hh: torch.Tensor, bias: torch.Tensor, pool: Optional[BufferPool] = None) -> tuple:
    """The EA-LSTM recurrence as one autograd node (:class:`EALSTMSequence`).

    Parameters
    ----------
    x_d : torch.Tensor
        Dynamic inputs ``[T, B, D]``.
    input_gate_pre : torch.Tensor
        ``W_i x_s + b_i``, ``[B, H]`` (the input gate before its sigmoid).
    weight_ih, weight_hh, bias : torch.Tensor
        Dynamic gates, fused layout: ``[3H, D]``, ``[3H, H]``, ``[3H]``, gate rows (f, g, o).
    pool : BufferPool, optional
        Where the trace's buffers come from; without one they are allocated afresh.

    Returns
    -------
    tuple of torch.Tensor
        ``(h [T, B, H], c_last [B, H])``, in the pool's output buffer (kept apart from the trace's).
    """
    return EALSTMSequence.apply(x_d, input_gate_pre, weight_ih, weight_hh, bias, pool)
