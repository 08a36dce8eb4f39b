"""LSTM and EA-LSTM recurrences that expose their gate deltas (pure torch, no NH).

Two routes give the per-step gate delta ``δ[t]`` of every sample (the gradient of a loss with respect to the gate
pre-activations): :class:`GateTrace` (the CPU route) runs the recurrence without autograd and back-propagates
through time by hand; :func:`lstm_recurrence` and :func:`ealstm_recurrence` (the GPU route) compute the input
projections of all time steps at once and hand them to the fused LSTM kernel (``torch.lstm``: cuDNN on GPU) as its
input, with identity input weights, so that the projection is an autograd leaf whose gradient is ``δ``. From ``δ``
the gradient of every recurrent weight of any subset of the samples is one matrix product over all steps:

``dW_ih = Σ_t δ[t]ᵀ x[t]``, ``dW_hh = Σ_t δ[t]ᵀ h[t-1]``, ``db = Σ_t δ[t]``.

Gate orders: the LSTM uses PyTorch's (i, f, g, o) and the same four parameters as ``nn.LSTM``; the EA-LSTM uses the
fused layout of :mod:`nh_crossbasin.core.ealstm_weights` (dynamic gates f, g, o; the input gate
``i = σ(W_i x_s + b_i)`` is constant in time).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from nh_crossbasin.core.step_inputs import StepInputs


@dataclass
class Recurrence:
    """What an explicit recurrence computed (time-major tensors)."""

    h: torch.Tensor                      # [T, B, H] hidden states
    h_previous: torch.Tensor             # [T, B, H] h[t-1] (zeros at t = 0)
    pre: torch.Tensor                    # [T, B, G·H] gate pre-activations before the recurrent product is added
    c_last: torch.Tensor                 # [B, H]
    input_gate_pre: Optional[torch.Tensor] = None  # [B, H] EA-LSTM: W_i x_s + b_i


def projected_lstm(pre: torch.Tensor, weight_hh: torch.Tensor) -> tuple:
    """``torch.lstm`` on given gate pre-activations: ``gates[t] = pre[t] + h[t-1] W_hhᵀ`` (gate order i, f, g, o).

    Returns
    -------
    tuple of torch.Tensor
        ``(h [T, B, H], c_last [B, H])``.
    """
    hidden_size = weight_hh.shape[1]
    identity = torch.eye(4 * hidden_size, dtype=pre.dtype, device=pre.device)
    zeros = pre.new_zeros(4 * hidden_size)
    state = pre.new_zeros(1, pre.shape[1], hidden_size)
    h, _, c_last = torch.lstm(pre, (state, state), [identity, weight_hh, zeros, zeros], True, 1, 0.0, True, False,
                              False)
    return h, c_last[0]


def lstm_recurrence(x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor,
                    bias_hh: torch.Tensor) -> Recurrence:
    """One-layer LSTM, exactly ``nn.LSTM``'s maths (zero initial states); ``pre`` is a leaf (weights detached).

    Parameters
    ----------
    x : torch.Tensor
        Inputs ``[T, B, D]``.
    weight_ih, weight_hh, bias_ih, bias_hh : torch.Tensor
        ``nn.LSTM``'s ``weight_ih_l0`` ``[4H, D]``, ``weight_hh_l0`` ``[4H, H]``, ``bias_ih_l0``, ``bias_hh_l0``.
    """
    with torch.no_grad():
        pre = F.linear(x, weight_ih, bias_ih + bias_hh)
    pre.requires_grad_(torch.is_grad_enabled())
    h, c_last = projected_lstm(pre, weight_hh.detach())
    return Recurrence(h=h, h_previous=_previous(h.detach()), pre=pre, c_last=c_last)


def ealstm_recurrence(x_d: torch.Tensor, x_s: torch.Tensor, input_gate_weight: torch.Tensor,
                      input_gate_bias: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                      bias: torch.Tensor) -> Recurrence:
    """EA-LSTM (Kratzert et al. 2019), exactly NH's ``ealstm`` maths (zero initial states); ``pre`` (dynamic gates
    f, g, o) and ``input_gate_pre`` (``W_i x_s + b_i``) are leaves (weights detached).

    Parameters
    ----------
    x_d : torch.Tensor
        Dynamic inputs ``[T, B, D]``.
    x_s : torch.Tensor
        Static inputs ``[B, S]``.
    input_gate_weight, input_gate_bias : torch.Tensor
        ``W_i`` ``[H, S]``, ``b_i`` ``[H]``.
    weight_ih, weight_hh, bias : torch.Tensor
        Dynamic gates, fused layout: ``[3H, D]``, ``[3H, H]``, ``[3H]``, gate rows (f, g, o).
    """
    hidden_size = weight_hh.shape[1]
    with torch.no_grad():
        input_gate_pre = F.linear(x_s, input_gate_weight, input_gate_bias)
        pre = F.linear(x_d, weight_ih, bias)
    grad = torch.is_grad_enabled()
    input_gate_pre.requires_grad_(grad)
    pre.requires_grad_(grad)
    four_gates = torch.cat([input_gate_pre.unsqueeze(0).expand(pre.shape[0], -1, -1), pre], dim=-1)
    recurrent = torch.cat([weight_hh.new_zeros(hidden_size, hidden_size), weight_hh.detach()], dim=0)
    h, c_last = projected_lstm(four_gates, recurrent)
    return Recurrence(h=h, h_previous=_previous(h.detach()), pre=pre, c_last=c_last, input_gate_pre=input_gate_pre)


class GateTrace:
    """A forward pass of an LSTM or EA-LSTM without autograd that keeps what its backward needs, and that backward
    written out (back-propagation through time by hand), returning the per-step gate deltas of every sample.

    The CPU route of the batched probe gradients, and the body of ``xb_ealstm``'s CPU training node
    (:class:`~nh_crossbasin.core.ealstm_sequence.EALSTMSequence`): no autograd graph (whose per-step nodes, ``cat``
    and ``stack`` dominate a Python-level recurrence), preallocated buffers, one product for the input projections of
    all steps, and per step one recurrent product forward and one backward (large when many probes run at once). Its
    ``tanh`` are computed as ``2 σ(2x) − 1`` (:func:`tanh_of_half`). Per step of an EA-LSTM with doubled g rows it
    runs 9 element-wise or matrix operations forward and 10 backward: it keeps the cell states doubled (``2c``, the
    argument of that sigmoid; exact in floating point) and ``∂h/∂c = o (1 − tanh² c)`` instead of ``tanh c``, and the
    backward adds ``∂L/∂h[t-1]`` in its recurrent product.

    Build it with :meth:`lstm` (gate order i, f, g, o; ``nn.LSTM``'s parameters) or :meth:`ealstm` (dynamic gates
    f, g, o in the fused layout of :mod:`nh_crossbasin.core.ealstm_weights`; the input gate ``σ(W_i x_s + b_i)`` is
    constant in time). Zero initial states, as in NH. Inputs are time-major (NH's embedding output); the trace built
    by these is sample-major (``[B, T, ·]``), so that each basin's samples are contiguous blocks for its weight
    products; on :class:`~nh_crossbasin.core.step_inputs.StepInputs` (:meth:`on_step_inputs`, the batched probe
    gradients) each step's pre-activations are one product of the rows ``[h[t-1], x[t], 1]`` inside the loop. Given
    ``pre`` as a ``[B, T, ·]`` view of time-major memory (``x.transpose(0, 1)``), the trace keeps that layout, in which
    each step's block is contiguous (what training wants); ``states`` can supply the buffers for ``h``, ``c2`` and
    ``dh_dc``.

    Parameters
    ----------
    pre : torch.Tensor
        Gate pre-activations before the recurrent product is added, ``[B, T, G·H]``; overwritten by :attr:`act`.
    weight_hh : torch.Tensor
        Recurrent weight ``[G·H, H]`` in the gate order ``order``.
    order : str
        ``"ifgo"`` (LSTM) or ``"fgo"`` (EA-LSTM).
    input_gate : torch.Tensor, optional
        EA-LSTM: ``σ(W_i x_s + b_i)``, ``[B, H]``.
    states : tuple of torch.Tensor, optional
        Buffers ``(h, c2, dh_dc)``, each ``[B, T, H]``.
    g_doubled : bool
        Whether the g block of ``pre`` already holds twice the pre-activation (made with :func:`double_g_rows` of
        the input weights): the forward then saves one pass per step.
    step_rows : tuple of torch.Tensor, optional
        ``(z [B, T, K], W [G·H, K])``: each step's pre-activations are ``z[:, t] Wᵀ``, computed in the loop (``pre``
        is then only the buffer the gates are written into, and ``W`` has its g rows doubled). ``z[:, t]`` must begin
        with ``h[t-1]`` (zero at ``t = 0``), as :class:`~nh_crossbasin.core.step_inputs.StepInputs` does.

    Attributes
    ----------
    h : torch.Tensor
        Hidden states ``[B, T, H]``.
    act : torch.Tensor
        Activated gates ``[B, T, G·H]`` (σ or tanh of each block); None once the backward overwrote them.
    c2 : torch.Tensor
        The cell states doubled, ``2c``, ``[B, T, H]``.
    dh_dc : torch.Tensor
        ``∂h/∂c = o (1 − tanh² c)``, ``[B, T, H]``.
    input_gate : torch.Tensor or None
        EA-LSTM: ``σ(W_i x_s + b_i)``, ``[B, H]``.
    input_weight_gradient : torch.Tensor or None
        After ``backward(..., inputs=z)``: ``Σ_t z[t]ᵀ δ[t]`` over all samples, ``[K, G·H]``.
    """

    def __init__(self, pre: torch.Tensor, weight_hh: torch.Tensor, order: str,
                 input_gate: Optional[torch.Tensor] = None, states: Optional[tuple] = None, g_doubled: bool = False,
                 step_rows: Optional[tuple] = None):
        n_samples, n_steps = pre.shape[:2]
        hidden = weight_hh.shape[1]
        self.order, self.weight_hh, self.input_gate, self.act = order, weight_hh, input_gate, pre
        time_major = n_steps > 1 and pre.stride(0) < pre.stride(1)
        if states is not None:            # caller's buffers for h, 2c, dh/dc
            self.h, self.c2, self.dh_dc = states
        elif time_major:                  # buffers in pre's layout: each step's block contiguous
            self.h, self.c2, self.dh_dc = (pre.new_empty(n_steps, n_samples, hidden).transpose(0, 1)
                                           for _ in range(3))
        else:
            self.h, self.c2, self.dh_dc = (pre.new_empty(n_samples, n_steps, hidden) for _ in range(3))
        # with g doubled in pre, its recurrent rows are doubled too (exact: a power of two)
        if step_rows is None:
            recurrent = (double_g_rows(weight_hh, order) if g_doubled else weight_hh).t()
        else:
            rows, row_weight = step_rows[0].unbind(1), step_rows[1].t()
        one, zero = pre.new_ones(()), pre.new_zeros(())
        # per-step views made once (unbind), not by indexing inside the loop
        acts, gates = pre.unbind(1), self._blocks(pre)
        hs, c2s, dh_dcs = self.h.unbind(1), self.c2.unbind(1), self.dh_dc.unbind(1)
        gate_in = gates["i"] if order == "ifgo" else [input_gate] * n_steps
        for t in range(n_steps):
            if step_rows is not None:       # [h[t-1], x[t], 1] [W_hh, W_ih, b]ᵀ
                torch.mm(rows[t], row_weight, out=acts[t])
            elif t:
                acts[t].addmm_(hs[t - 1], recurrent)
            g = gates["g"][t]
            if not g_doubled:
                g.mul_(2)
            acts[t].sigmoid_()               # all gates at once; tanh(x) = 2 σ(2x) − 1
            g.lerp_(one, -1.0)               # 2 σ − 1 in one pass
            if t:                            # 2c[t] = f 2c[t-1] + 2 i g
                torch.mul(gates["f"][t], c2s[t - 1], out=c2s[t])
                c2s[t].addcmul_(gate_in[t], g, value=2)
            else:
                torch.addcmul(zero, gate_in[t], g, value=2, out=c2s[t])
            tanh_c = tanh_of_half(c2s[t], dh_dcs[t], one)
            torch.mul(gates["o"][t], tanh_c, out=hs[t])
            torch.addcmul(gates["o"][t], hs[t], tanh_c, value=-1, out=dh_dcs[t])   # o − h tanh c

    @classmethod
    @torch.no_grad()
    def lstm(cls, x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor,
             bias_hh: torch.Tensor, inputs: Optional["StepInputs"] = None) -> "GateTrace":
        """One-layer LSTM on ``x`` ``[T, B, D]`` with ``nn.LSTM``'s ``weight_ih_l0``, ``weight_hh_l0``, biases;
        on ``x``'s :class:`~nh_crossbasin.core.step_inputs.StepInputs` where given (see :meth:`on_step_inputs`)."""
        if inputs is not None:
            return cls.on_step_inputs(inputs, weight_ih, weight_hh, bias_ih + bias_hh, "ifgo")
        pre = F.linear(x.transpose(0, 1).contiguous(), double_g_rows(weight_ih, "ifgo"),
                       double_g_rows(bias_ih + bias_hh, "ifgo"))
        return cls(pre, weight_hh.detach(), "ifgo", g_doubled=True)

    @classmethod
    @torch.no_grad()
    def ealstm(cls, x_d: torch.Tensor, x_s: torch.Tensor, input_gate_weight: torch.Tensor,
               input_gate_bias: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
               bias: torch.Tensor, inputs: Optional["StepInputs"] = None) -> "GateTrace":
        """EA-LSTM on dynamic inputs ``x_d`` ``[T, B, D]`` and statics ``x_s`` ``[B, S]`` (NH ``ealstm``'s maths);
        on ``x_d``'s :class:`~nh_crossbasin.core.step_inputs.StepInputs` where given."""
        input_gate = torch.sigmoid(F.linear(x_s, input_gate_weight, input_gate_bias))
        if inputs is not None:
            return cls.on_step_inputs(inputs, weight_ih, weight_hh, bias, "fgo", input_gate)
        pre = F.linear(x_d.transpose(0, 1).contiguous(), double_g_rows(weight_ih, "fgo"), double_g_rows(bias, "fgo"))
        return cls(pre, weight_hh.detach(), "fgo", input_gate, g_doubled=True)

    @classmethod
    @torch.no_grad()
    def on_step_inputs(cls, inputs: "StepInputs", weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                       bias: torch.Tensor, order: str, input_gate: Optional[torch.Tensor] = None) -> "GateTrace":
        """The trace on :class:`~nh_crossbasin.core.step_inputs.StepInputs` ``z = [h[t-1], x[t], 1]``: it writes
        its hidden states into ``inputs.h``, computes each step's pre-activations as one product
        ``z[:, t] [W_hh, W_ih, b]ᵀ`` (no projection of all steps beforehand, whose result would go to memory and
        back) and takes its buffers from ``inputs.buffer``."""
        n_samples, n_steps, hidden = inputs.h.shape
        weight = double_g_rows(torch.cat([weight_hh, weight_ih, bias[:, None]], dim=1), order)
        pre = inputs.buffer("gates", (n_samples, n_steps, weight.shape[0]))
        states = (inputs.h, inputs.buffer("c2", inputs.h.shape), inputs.buffer("dh_dc", inputs.h.shape))
        return cls(pre, weight_hh.detach(), order, input_gate, states, g_doubled=True, step_rows=(inputs.z, weight))

    def _blocks(self, gates: torch.Tensor) -> dict:
        """Each gate's per-step views ``[B, H]`` of ``gates`` ``[B, T, G·H]``, by gate name."""
        hidden = self.weight_hh.shape[1]
        return {name: gates[..., k * hidden:(k + 1) * hidden].unbind(1) for k, name in enumerate(self.order)}

    @torch.no_grad()
    def backward(self, grad_h: torch.Tensor, grad_c_last: Optional[torch.Tensor] = None,
                 overwrite: bool = False, inputs: Optional[torch.Tensor] = None) -> tuple:
        """Gate deltas from the gradient of a loss with respect to every hidden state.

        Parameters
        ----------
        grad_h : torch.Tensor
            ``∂L/∂h`` ``[B, T, H]``, through the head only (the recurrence is added here); or ``[B, T', H]``, that of
            the last ``T'`` steps, where the loss reads no earlier step (their gradient is zero).
        grad_c_last : torch.Tensor, optional
            ``∂L/∂c[T-1]`` ``[B, H]`` where the loss reads the last cell state.
        overwrite : bool
            Write each step's deltas over its activated gates (:attr:`act`, which the step no longer needs) instead
            of into a new buffer: no second buffer of the trace's largest size, whose first touch costs as much as
            the element-wise work. The trace can then not run backward again.
        inputs : torch.Tensor, optional
            Per-step inputs ``z`` ``[B, T, K]`` (e.g. ``[x, 1]``) whose weight gradient ``Σ_t z[t]ᵀ δ[t]`` is
            accumulated step by step, while each step's deltas are in cache, into :attr:`input_weight_gradient`:
            for few columns this is several times faster than one product over all steps afterwards.

        Returns
        -------
        tuple of torch.Tensor
            ``(δ [B, T, G·H], δ_input_gate [B, H] or None)``: the gradient with respect to the gate
            pre-activations, and (EA-LSTM) with respect to ``W_i x_s + b_i``.
        """
        if self.act is None:
            raise RuntimeError("This GateTrace's backward already ran with overwrite=True; its gates are gone.")
        sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input   # (grad, output, grad_input=out)
        tanh_backward = torch.ops.aten.tanh_backward.grad_input
        delta = self.act if overwrite else torch.empty_like(self.act)   # empty_like keeps act's layout
        n_steps = delta.shape[1]
        zero = delta.new_zeros(())
        # dh: ∂L/∂h[t] with the recurrence; e: ∂L/∂(2c[t])
        if not 1 <= grad_h.shape[1] <= n_steps:
            raise ValueError(f"grad_h covers {grad_h.shape[1]} steps; a trace of {n_steps} steps takes 1 to "
                             f"{n_steps} (the last ones).")
        grad_hs = (None,) * (n_steps - grad_h.shape[1]) + grad_h.unbind(1)    # None: no gradient through the head
        dh = grad_hs[-1].clone(memory_format=torch.contiguous_format)
        e, tmp, tmp2 = (torch.zeros_like(self.c2[:, 0]) for _ in range(3))
        if grad_c_last is not None:
            torch.mul(grad_c_last, 0.5, out=e)
        d_input_gate = torch.zeros_like(e) if self.input_gate is not None else None
        # Each gate block is read for the last time before its delta is written (same slot when overwriting).
        gates, deltas, delta_steps = self._blocks(self.act), self._blocks(delta), delta.unbind(1)
        gate_in = gates["i"] if self.order == "ifgo" else [self.input_gate] * n_steps
        hs, c2s, dh_dcs = self.h.unbind(1), self.c2.unbind(1), self.dh_dc.unbind(1)
        input_steps = inputs.unbind(1) if inputs is not None else None
        self.input_weight_gradient = delta.new_zeros(inputs.shape[2], delta.shape[2]) if inputs is not None else None
        for t in range(n_steps - 1, -1, -1):
            o, g, f = gates["o"][t], gates["g"][t], gates["f"][t]
            torch.mul(dh, hs[t], out=tmp)
            e.addcmul_(dh, dh_dcs[t], value=0.5)
            torch.addcmul(tmp, tmp, o, value=-1, out=deltas["o"][t])      # ∂L/∂h h (1 − o)
            torch.addcmul(zero, e, gate_in[t], value=2, out=tmp)           # ∂L/∂g = ∂L/∂(2c) 2i
            if d_input_gate is None:
                torch.addcmul(zero, e, g, value=2, out=tmp2)
                sigmoid_backward(tmp2, gate_in[t], grad_input=deltas["i"][t])
            else:
                d_input_gate.addcmul_(e, g)
            tanh_backward(tmp, g, grad_input=deltas["g"][t])
            if t:
                torch.mul(e, c2s[t - 1], out=tmp)
                e.mul_(f)
                sigmoid_backward(tmp, f, grad_input=deltas["f"][t])
                if grad_hs[t - 1] is None:
                    torch.mm(delta_steps[t], self.weight_hh, out=dh)
                else:
                    torch.addmm(grad_hs[t - 1], delta_steps[t], self.weight_hh, out=dh)
            else:
                deltas["f"][t].zero_()
            if input_steps is not None:
                self.input_weight_gradient.addmm_(input_steps[t].t(), delta_steps[t])
        if overwrite:
            self.act = None
        if d_input_gate is not None:     # ∂L/∂i = Σ ∂L/∂(2c) 2g
            d_input_gate = torch.ops.aten.sigmoid_backward(d_input_gate.mul_(2), self.input_gate)
        return delta, d_input_gate


def double_g_rows(weight: torch.Tensor, order: str) -> torch.Tensor:
    """A copy of a gate-stacked weight or bias (rows in the gate order ``order``) with the g block doubled, so that
    its products give ``2x`` for the cell update's ``tanh(x) = 2 σ(2x) − 1`` (exact: a power of two)."""
    hidden = weight.shape[0] // len(order)
    k = order.index("g")
    doubled = weight.detach().clone()
    doubled[k * hidden:(k + 1) * hidden] *= 2
    return doubled


def tanh_of_half(x2: torch.Tensor, out: torch.Tensor, one: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``tanh(x2 / 2)`` as ``2 σ(x2) − 1`` into ``out`` (no autograd): the ``tanh`` of :class:`GateTrace`, which
    keeps the doubled arguments (``2c``, and the g gate's ``2x`` from doubled weight rows).

    The same function; in float32 it differs from ``torch.tanh`` by at most a few 1e-7 (absolute). PyTorch's CPU
    ``tanh`` was measured 5-9× slower than its ``sigmoid`` on an AVX-512 EPYC (``benchmarks/RESULTS.md``); there
    two cheap passes (σ, then ``2s − 1`` as one ``lerp``) cost less than one ``tanh``. ``one`` is a 0-dim tensor 1
    of ``out``'s kind (made here if not given).
    """
    one = out.new_ones(()) if one is None else one
    return torch.sigmoid(x2, out=out).lerp_(one, -1.0)     # s + (-1)(1 - s) = 2s - 1


def _previous(h: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(h[:1]), h[:-1]], dim=0)


def weight_gradients(delta: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``Σ δᵀ inputs`` over the steps and samples given: ``[G, D]`` from ``[T, n, G]`` and ``[T, n, D]`` (or both
    sample-major, ``[n, T, ·]``)."""
    # (inputsᵀ δ)ᵀ: measured several times faster than δᵀ inputs on the CPU when inputs has few columns
    return (inputs.reshape(-1, inputs.shape[-1]).t() @ delta.reshape(-1, delta.shape[-1])).t()


def ealstm_loop(x_d: torch.Tensor, input_gate: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                bias: torch.Tensor) -> tuple:
    """The EA-LSTM recurrence as a plain autograd loop: three gates per step (the input gate is given), time iterated
    with ``unbind``.

    Per step, ``gates = b + x[t] W_ihᵀ + h[t-1] W_hhᵀ`` (two ``addmm``), then the element-wise cell update: NH's
    ``ealstm`` op sequence without its four-gate bookkeeping. ``xb_ealstm`` trained with it on the CPU until
    :func:`nh_crossbasin.core.ealstm_sequence.ealstm_sequence` replaced it (0.79-0.85× its time,
    ``benchmarks/RESULTS.md``); it stays as the autograd reference that node is tested and benchmarked against.

    Parameters
    ----------
    x_d : torch.Tensor
        Dynamic inputs ``[T, B, D]``.
    input_gate : torch.Tensor
        ``σ(W_i x_s + b_i)``, ``[B, H]``.
    weight_ih, weight_hh, bias : torch.Tensor
        Dynamic gates, fused layout: ``[3H, D]``, ``[3H, H]``, ``[3H]``, gate rows (f, g, o).

    Returns
    -------
    tuple of torch.Tensor
        ``(h [T, B, H], c_last [B, H])``.
    """
    input_weight, recurrent_weight = weight_ih.t(), weight_hh.t()
    h = x_d.new_zeros(x_d.shape[1], weight_hh.shape[1])
    c = torch.zeros_like(h)
    hs = []
    for x_t in x_d.unbind(0):
        f, g, o = torch.addmm(torch.addmm(bias, x_t, input_weight), h, recurrent_weight).chunk(3, dim=1)
        c = torch.sigmoid(f) * c + input_gate * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
    return torch.stack(hs, dim=0), c
