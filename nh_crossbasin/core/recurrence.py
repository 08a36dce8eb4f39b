"""LSTM and EA-LSTM recurrences that expose their gate pre-activations (pure torch, no NH).

Both compute the input projections of all time steps at once (one large matrix product) and hand them to the fused
LSTM kernel (``torch.lstm``: cuDNN on GPU, oneDNN or ATen's C++ loop on CPU) as its input, with identity input
weights, so that the recurrence runs in the kernel and the projection is a separate tensor. That tensor is a leaf of
the autograd graph: the gradient of any loss with respect to it is the per-step gate delta ``δ[t]`` of every
sample, from which the gradient of every recurrent weight of any subset of the samples is one matrix product over all
steps:

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


def _previous(h: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(h[:1]), h[:-1]], dim=0)


def weight_gradients(delta: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``Σ_t δ[t]ᵀ inputs[t]`` over the steps and samples given: ``[G, D]`` from ``[T, n, G]`` and ``[T, n, D]``."""
    return delta.reshape(-1, delta.shape[-1]).t() @ inputs.reshape(-1, inputs.shape[-1])


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
