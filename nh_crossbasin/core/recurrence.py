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
from typing import Optional

import torch
import torch.nn.functional as F


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

    The CPU route of the batched probe gradients: no autograd graph (whose per-step nodes, ``cat`` and ``stack``
    dominate a Python-level recurrence), preallocated sample-major buffers (each sample's steps are contiguous, so
    that the per-basin weight products need no copies), one product for the input projections of all steps, and per
    step one recurrent product forward and one backward (large when many probes run at once). Its ``tanh`` are
    computed as ``2 σ(2x) − 1`` (:func:`tanh_by_sigmoid`).

    Build it with :meth:`lstm` (gate order i, f, g, o; ``nn.LSTM``'s parameters) or :meth:`ealstm` (dynamic gates
    f, g, o in the fused layout of :mod:`nh_crossbasin.core.ealstm_weights`; the input gate ``σ(W_i x_s + b_i)`` is
    constant in time). Zero initial states, as in NH. Inputs are time-major (NH's embedding output); the trace is
    sample-major (``[B, T, ·]``), so that each basin's samples are contiguous blocks for its weight products.

    As the training path of ``xb_ealstm`` (one autograd node whose backward is :meth:`backward`, the weight gradients
    one product over all steps) it was measured no faster than the autograd loop
    :func:`ealstm_loop` on 2 CPU cores (1.03× and 1.14× its time at batch 64 and 256), so training keeps the loop.

    Attributes
    ----------
    h : torch.Tensor
        Hidden states ``[B, T, H]``.
    act : torch.Tensor
        Activated gates ``[B, T, G·H]`` (σ or tanh of each block).
    c, tanh_c : torch.Tensor
        Cell states and their tanh, ``[B, T, H]``.
    input_gate : torch.Tensor or None
        EA-LSTM: ``σ(W_i x_s + b_i)``, ``[B, H]``.
    """

    def __init__(self, pre: torch.Tensor, weight_hh: torch.Tensor, order: str,
                 input_gate: Optional[torch.Tensor] = None):
        n_steps = pre.shape[1]
        hidden = weight_hh.shape[1]
        self.order, self.weight_hh, self.input_gate, self.act = order, weight_hh, input_gate, pre
        self.h, self.c, self.tanh_c = (pre.new_empty(*pre.shape[:2], hidden) for _ in range(3))
        recurrent = weight_hh.t()
        for t in range(n_steps):
            a = pre[:, t]
            if t:
                a.addmm_(self.h[:, t - 1], recurrent)
            blocks = self._blocks(a)
            blocks["g"].mul_(2)
            a.sigmoid_()                     # all gates at once; the cell update's tanh(x) = 2 σ(2x) − 1
            blocks["g"].mul_(2).sub_(1)
            gate_in = blocks["i"] if order == "ifgo" else input_gate
            c = self.c[:, t]
            if t:
                torch.mul(blocks["f"], self.c[:, t - 1], out=c)
                c.addcmul_(gate_in, blocks["g"])
            else:
                torch.mul(gate_in, blocks["g"], out=c)
            tanh_by_sigmoid(c, out=self.tanh_c[:, t])
            torch.mul(blocks["o"], self.tanh_c[:, t], out=self.h[:, t])

    @classmethod
    @torch.no_grad()
    def lstm(cls, x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor,
             bias_hh: torch.Tensor) -> "GateTrace":
        """One-layer LSTM on ``x`` ``[T, B, D]`` with ``nn.LSTM``'s ``weight_ih_l0``, ``weight_hh_l0``, biases."""
        return cls(F.linear(x.transpose(0, 1).contiguous(), weight_ih, bias_ih + bias_hh), weight_hh.detach(),
                   "ifgo")

    @classmethod
    @torch.no_grad()
    def ealstm(cls, x_d: torch.Tensor, x_s: torch.Tensor, input_gate_weight: torch.Tensor,
               input_gate_bias: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
               bias: torch.Tensor) -> "GateTrace":
        """EA-LSTM on dynamic inputs ``x_d`` ``[T, B, D]`` and statics ``x_s`` ``[B, S]`` (NH ``ealstm``'s maths)."""
        input_gate = torch.sigmoid(F.linear(x_s, input_gate_weight, input_gate_bias))
        return cls(F.linear(x_d.transpose(0, 1).contiguous(), weight_ih, bias), weight_hh.detach(), "fgo",
                   input_gate)

    def _blocks(self, gates: torch.Tensor) -> dict:
        hidden = self.weight_hh.shape[1]
        return {name: gates[:, k * hidden:(k + 1) * hidden] for k, name in enumerate(self.order)}

    @property
    def h_previous(self) -> torch.Tensor:
        """``h[t-1]`` ``[B, T, H]`` (zeros at t = 0)."""
        previous = torch.zeros_like(self.h)
        previous[:, 1:] = self.h[:, :-1]
        return previous

    @torch.no_grad()
    def backward(self, grad_h: torch.Tensor) -> tuple:
        """Gate deltas from the gradient of a loss with respect to every hidden state.

        Parameters
        ----------
        grad_h : torch.Tensor
            ``∂L/∂h`` ``[B, T, H]``, through the head only (the recurrence is added here).

        Returns
        -------
        tuple of torch.Tensor
            ``(δ [B, T, G·H], δ_input_gate [B, H] or None)``: the gradient with respect to the gate
            pre-activations, and (EA-LSTM) with respect to ``W_i x_s + b_i``.
        """
        sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input   # (grad, output, grad_input=out)
        tanh_backward = torch.ops.aten.tanh_backward
        delta = torch.empty_like(self.act)
        n_steps = delta.shape[1]
        dh, dc, tmp = (torch.zeros_like(self.c[:, 0]) for _ in range(3))
        d_input_gate = torch.zeros_like(dh) if self.input_gate is not None else None
        for t in range(n_steps - 1, -1, -1):
            gates, deltas = self._blocks(self.act[:, t]), self._blocks(delta[:, t])
            gate_in = gates["i"] if self.order == "ifgo" else self.input_gate
            tanh_c = self.tanh_c[:, t]
            dh.add_(grad_h[:, t])
            torch.mul(dh, tanh_c, out=tmp)
            sigmoid_backward(tmp, gates["o"], grad_input=deltas["o"])
            torch.mul(dh, gates["o"], out=tmp)
            dc.add_(tanh_backward(tmp, tanh_c))
            if t:
                torch.mul(dc, self.c[:, t - 1], out=tmp)
                sigmoid_backward(tmp, gates["f"], grad_input=deltas["f"])
            else:
                deltas["f"].zero_()
            torch.mul(dc, gate_in, out=tmp)
            tanh_backward.grad_input(tmp, gates["g"], grad_input=deltas["g"])
            if d_input_gate is None:
                torch.mul(dc, gates["g"], out=tmp)
                sigmoid_backward(tmp, gates["i"], grad_input=deltas["i"])
            else:
                d_input_gate.addcmul_(dc, gates["g"])
            dc.mul_(gates["f"])
            if t:
                torch.mm(delta[:, t], self.weight_hh, out=dh)
        if d_input_gate is not None:
            d_input_gate = torch.ops.aten.sigmoid_backward(d_input_gate, self.input_gate)
        return delta, d_input_gate


def tanh_by_sigmoid(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``tanh(x)`` as ``2 σ(2x) − 1`` into ``out`` (no autograd).

    The same function; in float32 it differs from ``torch.tanh`` by at most a few 1e-7 (absolute). PyTorch's CPU
    ``tanh`` was measured 5-9× slower than its ``sigmoid`` on an AVX-512 EPYC (``benchmarks/RESULTS.md``); there
    the four cheap passes cost less than one ``tanh``.
    """
    return torch.mul(x, 2, out=out).sigmoid_().mul_(2).sub_(1)


def _previous(h: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(h[:1]), h[:-1]], dim=0)


def weight_gradients(delta: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``Σ δᵀ inputs`` over the steps and samples given: ``[G, D]`` from ``[T, n, G]`` and ``[T, n, D]`` (or both
    sample-major, ``[n, T, ·]``)."""
    # (inputsᵀ δ)ᵀ: measured several times faster than δᵀ inputs on the CPU when inputs has few columns
    return (inputs.reshape(-1, inputs.shape[-1]).t() @ delta.reshape(-1, delta.shape[-1])).t()


def ealstm_loop(x_d: torch.Tensor, input_gate: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                bias: torch.Tensor) -> tuple:
    """The EA-LSTM recurrence on CPU: three gates per step (the input gate is given), time iterated with ``unbind``.

    Per step, ``gates = b + x[t] W_ihᵀ + h[t-1] W_hhᵀ`` (two ``addmm``), then the element-wise cell update: NH's
    ``ealstm`` op sequence without its four-gate bookkeeping. Measured alternatives that did not pay on 2 CPU cores
    (``benchmarks/RESULTS.md``): the input projections of all steps as one product, the recurrent weight gradient as
    one product over all steps, TorchScript, and oneDNN's four-gate fused kernel.

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
