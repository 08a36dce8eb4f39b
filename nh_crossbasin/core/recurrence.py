"""Explicit LSTM and EA-LSTM recurrences that expose their gate pre-activations (pure torch, no NH).

Both compute the input projections of all time steps at once (one large matrix product) and iterate time with
``unbind`` (indexing a tensor inside a recorded loop would make the backward quadratic in the sequence length). The
pre-activation tensor they return is a node of the autograd graph: the gradient of any loss with respect to it is the
per-step gate delta ``δ[t]`` of every sample, from which the gradient of every recurrent weight of any subset of the
samples is one matrix product over all steps:

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


def lstm_recurrence(x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor,
                    bias_hh: torch.Tensor) -> Recurrence:
    """One-layer LSTM, exactly ``nn.LSTM``'s maths (zero initial states).

    Parameters
    ----------
    x : torch.Tensor
        Inputs ``[T, B, D]``.
    weight_ih, weight_hh, bias_ih, bias_hh : torch.Tensor
        ``nn.LSTM``'s ``weight_ih_l0`` ``[4H, D]``, ``weight_hh_l0`` ``[4H, H]``, ``bias_ih_l0``, ``bias_hh_l0``.
    """
    hidden_size = weight_hh.shape[1]
    pre = F.linear(x, weight_ih, bias_ih + bias_hh)
    h = x.new_zeros(x.shape[1], hidden_size)
    c = torch.zeros_like(h)
    hs = []
    for pre_t in pre.unbind(0):
        gates = torch.addmm(pre_t, h, weight_hh.t())
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
    h_all = torch.stack(hs, dim=0)
    return Recurrence(h=h_all, h_previous=_previous(h_all), pre=pre, c_last=c)


def ealstm_recurrence(x_d: torch.Tensor, x_s: torch.Tensor, input_gate_weight: torch.Tensor,
                      input_gate_bias: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                      bias: torch.Tensor) -> Recurrence:
    """EA-LSTM (Kratzert et al. 2019), exactly NH's ``ealstm`` maths (zero initial states).

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
    input_gate_pre = F.linear(x_s, input_gate_weight, input_gate_bias)
    input_gate = torch.sigmoid(input_gate_pre)
    pre = F.linear(x_d, weight_ih, bias)
    h = x_d.new_zeros(x_d.shape[1], hidden_size)
    c = torch.zeros_like(h)
    hs = []
    for pre_t in pre.unbind(0):
        gates = torch.addmm(pre_t, h, weight_hh.t())
        f, g, o = gates.chunk(3, dim=1)
        c = torch.sigmoid(f) * c + input_gate * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
    h_all = torch.stack(hs, dim=0)
    return Recurrence(h=h_all, h_previous=_previous(h_all), pre=pre, c_last=c, input_gate_pre=input_gate_pre)


def _previous(h: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(h[:1]), h[:-1]], dim=0)


def weight_gradients(delta: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``Σ_t δ[t]ᵀ inputs[t]`` over the steps and samples given: ``[G, D]`` from ``[T, n, G]`` and ``[T, n, D]``."""
    return delta.reshape(-1, delta.shape[-1]).t() @ inputs.reshape(-1, inputs.shape[-1])
