"""Dropout then a linear layer over a time-major sequence, with a backward that skips steps without gradient
(pure torch, no NH).

NH's models apply ``head(dropout(h_n))`` to the hidden states of every time step, ``h_n = h.transpose(0, 1)`` of a
time-major ``h [T, B, H]``, although in training the loss reads only the last ``predict_last_n`` steps. On the
CPU, autograd then spends, per training step, a copy of the dropped-out states into sample-major order (the
linear layer's input), an outer product ``∂L/∂y · W`` over all ``T × B`` positions and a multiplication by the
dropout mask, all on ``[B, T, H]`` blocks whose gradient is zero at every step the loss does not read.
:class:`DropoutLinear` computes the same values in time-major order, and in its backward only the steps whose
output gradient has a non-zero (or NaN) entry get arithmetic; the others get exact zeros.

The mask is drawn by the same call as ``torch.nn.functional.dropout`` on ``h_n`` (``empty_like(h_n).bernoulli_(1
- p)``, on a tensor of ``h_n``'s sizes and strides), so that it consumes the same random numbers in the same
order, on every CPU vendor's kernel, and is scaled by ``1 / (1 - p)`` as torch scales it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.autograd.function import once_differentiable


def dropout_mask_like(h_n: torch.Tensor, p: float, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The mask ``torch.nn.functional.dropout(h_n, p, training=True)`` multiplies ``h_n`` by, scaled.

    Parameters
    ----------
    h_n : torch.Tensor
        The tensor dropout is applied to (its sizes and strides decide the order of the random numbers).
    p : float
        Dropout probability, ``0 < p < 1``.
    out : torch.Tensor, optional
        A tensor of ``h_n``'s sizes and strides to draw into (e.g. a reused buffer); default a new one.

    Returns
    -------
    torch.Tensor
        ``bernoulli(1 - p) / (1 - p)``, with ``h_n``'s sizes and strides.
    """
    if not 0 < p < 1:
        raise ValueError(f"dropout_mask_like needs 0 < p < 1, got p={p}.")
    if out is None:
        out = torch.empty_like(h_n)
    elif out.shape != h_n.shape or out.stride() != h_n.stride():
        raise ValueError(f"out must have h_n's sizes and strides {tuple(h_n.shape)}, {h_n.stride()}; got "
                         f"{tuple(out.shape)}, {out.stride()}.")
    return out.bernoulli_(1 - p).div_(1 - p)


class DropoutLinear(torch.autograd.Function):
    """``y = (h ⊙ mask) Wᵀ + b`` over a time-major sequence, its backward restricted to steps with gradient.

    Call it through :func:`dropout_linear`. The backward finds the time steps ``t`` at which ``∂L/∂y[t]`` has an
    entry that is not zero (NaN counts as not zero) and computes ``∂L/∂h[t] = (∂L/∂y[t] W) ⊙ mask[t]`` and
    ``∂L/∂W = Σ_t ∂L/∂y[t]ᵀ (h ⊙ mask)[t]`` over those steps only; ``∂L/∂h`` is exactly zero elsewhere, as the full
    computation gives it.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, mask: Optional[torch.Tensor], weight: torch.Tensor, bias: Optional[torch.Tensor],
                grad_buffer: Optional[torch.Tensor]) -> torch.Tensor:
        n_steps, n_samples, hidden = h.shape
        features = h if mask is None else torch.mul(h, mask)
        flat = features.view(n_steps * n_samples, hidden)
        y = torch.addmm(bias, flat, weight.t()) if bias is not None else flat @ weight.t()
        ctx.save_for_backward(features, mask, weight)
        ctx.has_bias = bias is not None
        ctx.grad_buffer = grad_buffer
        return y.view(n_steps, n_samples, -1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor) -> tuple:
        features, mask, weight = ctx.saved_tensors
        grad_buffer, ctx.grad_buffer = ctx.grad_buffer, None
        n_steps, n_samples, hidden = features.shape
        active = grad_y.ne(0).flatten(1).any(dim=1)
        steps = active.nonzero().flatten()
        every_step = len(steps) == n_steps
        grad_y_active = grad_y if every_step else grad_y.index_select(0, steps)
        grad_h = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_h = (grad_buffer.view(n_steps, n_samples, hidden) if grad_buffer is not None
                      else features.new_empty(n_steps, n_samples, hidden))
            if every_step:
                torch.matmul(grad_y, weight, out=grad_h)
                if mask is not None:
                    grad_h.mul_(mask)
            else:
                grad_features = torch.matmul(grad_y_active, weight)
                if mask is not None:
                    grad_features.mul_(mask.index_select(0, steps))
                grad_h.zero_()
                grad_h.index_copy_(0, steps, grad_features)
        if ctx.needs_input_grad[2]:
            n_out = grad_y.shape[-1]
            features_active = features if every_step else features.index_select(0, steps)
            grad_weight = grad_y_active.reshape(-1, n_out).t() @ features_active.reshape(-1, hidden)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = grad_y.sum(dim=(0, 1))
        return grad_h, None, grad_weight, grad_bias, None


def dropout_linear(h: torch.Tensor, p: float, training: bool, weight: torch.Tensor, bias: Optional[torch.Tensor],
                   mask_buffer: Optional[torch.Tensor] = None, grad_buffer: Optional[torch.Tensor] = None
                   ) -> torch.Tensor:
    """``linear(dropout(h.transpose(0, 1), p, training), weight, bias)``, time-major (:class:`DropoutLinear`).

    Parameters
    ----------
    h : torch.Tensor
        Time-major hidden states ``[T, B, H]``, contiguous.
    p : float
        Dropout probability, ``0 <= p < 1``.
    training : bool
        Whether dropout is active (as ``nn.Dropout.training``).
    weight, bias : torch.Tensor
        The linear layer's ``[O, H]`` weight and ``[O]`` bias (or ``None``).
    mask_buffer, grad_buffer : torch.Tensor, optional
        Flat buffers of at least ``T·B·H`` elements to draw the mask into and to return ``∂L/∂h`` in (reused
        memory); default new tensors.

    Returns
    -------
    torch.Tensor
        ``y`` ``[T, B, O]``: position ``(t, b)`` equals ``head(dropout(h_n))[b, t]`` with the random numbers
        ``nn.Dropout`` would draw in this state of the generator.
    """
    if h.dim() != 3 or not h.is_contiguous():
        raise ValueError(f"dropout_linear needs contiguous time-major hidden states [T, B, H], got shape "
                         f"{tuple(h.shape)} and strides {h.stride()}.")
    if not 0 <= p < 1:
        raise ValueError(f"dropout_linear needs 0 <= p < 1, got p={p}.")
    n_steps, n_samples, hidden = h.shape
    mask = None
    if training and p > 0:
        out = None
        if mask_buffer is not None:
            out = mask_buffer[:h.numel()].view(n_steps, n_samples, hidden).transpose(0, 1)
        mask = dropout_mask_like(h.transpose(0, 1), p, out=out).transpose(0, 1)   # [T, B, H], contiguous
    if grad_buffer is not None:
        grad_buffer = grad_buffer[:h.numel()]
    return DropoutLinear.apply(h, mask, weight, bias, grad_buffer)
