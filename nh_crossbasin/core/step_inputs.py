"""The per-step inputs ``z[b, t] = [h[b, t-1], x[b, t], 1]`` of an LSTM-type recurrence in one sample-major buffer
(pure torch, no NH).

A basin's gradients of the recurrent weight, the input weight and the bias are sums over its samples and steps of
the gate deltas times ``h[t-1]``, ``x[t]`` and 1 (:mod:`nh_crossbasin.core.recurrence`). With the three side by side
in one row per sample and step, one matrix product per basin gives all three, and reads the basin's deltas once
instead of three times.

The recurrence writes its hidden states straight into this buffer, so that ``h[t-1]`` is not copied: in a flat
``[B·T + 1, K]`` buffer (``K = H + D + 1``), ``h[b, t]`` is row ``b·T + t + 1``, which is the row of ``z[b, t+1]``.
The rows of ``z[b, 0]`` (zero before the recurrence, ``h[-1] = 0``) then hold ``h[b-1, T-1]``, the previous sample's
last state, from the last step on, until :meth:`StepInputs.seal` zeroes them again, once the backward through time
has read them. :meth:`~nh_crossbasin.core.recurrence.GateTrace.on_step_inputs` runs the recurrence on these rows:
each step's pre-activations are one product ``z[:, t] [W_hh, W_ih, b]ᵀ``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch


class StepInputs:
    """Sample-major ``[h[t-1], x[t], 1]`` rows of every sample and step, and the hidden states ``h`` inside them.

    Parameters
    ----------
    x : torch.Tensor
        Time-major inputs ``[T, B, D]`` of the recurrence.
    hidden_size : int
        ``H``.
    buffers : callable, optional
        ``buffers(role, numel)``: flat, uninitialised memory of ``x``'s dtype and device for this buffer
        (``"step_inputs"``) and those of the recurrence (:meth:`buffer`), e.g. a
        :class:`~nh_crossbasin.core.ealstm_sequence.BufferPool`'s, reused across calls: memory allocated afresh is
        page-faulted in on its first write, which at these sizes costs more than the arithmetic. Default: new memory.

    Attributes
    ----------
    h : torch.Tensor
        ``[B, T, H]`` view where the recurrence writes its hidden states (rows of stride ``T·K``).
    z : torch.Tensor
        ``[B, T, K]`` view of the rows ``[h[t-1], x[t], 1]``; ``h[-1] = 0`` holds before the recurrence and again
        after :meth:`seal`.
    """

    def __init__(self, x: torch.Tensor, hidden_size: int,
                 buffers: Optional[Callable[[str, int], torch.Tensor]] = None):
        n_steps, n_samples, n_inputs = x.shape
        self.hidden_size, self._buffers, self._like = hidden_size, buffers, x
        width = hidden_size + n_inputs + 1
        flat = self.buffer("step_inputs", (n_samples * n_steps + 1, width))
        self.h = flat[1:].view(n_samples, n_steps, width)[..., :hidden_size]
        self.z = flat[:-1].view(n_samples, n_steps, width)
        self.z[:, 0, :hidden_size].zero_()
        self.z[..., hidden_size:-1].copy_(x.transpose(0, 1))
        self.z[..., -1].fill_(1)
        self.sealed = False

    def buffer(self, role: str, shape: Tuple[int, ...]) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape`` for ``role``, from ``buffers`` where given."""
        numel = math.prod(shape)
        if self._buffers is None:
            return self._like.new_empty(shape)
        flat = self._buffers(role, numel)
        if flat.numel() < numel or flat.dtype != self._like.dtype or flat.device != self._like.device:
            raise ValueError(f"buffers({role!r}, {numel}) gave {flat.numel()} elements of {flat.dtype} on "
                             f"{flat.device}; StepInputs needs {numel} of {self._like.dtype} on {self._like.device}.")
        return flat[:numel].view(shape)

    def seal(self) -> None:
        """Zero ``h[t-1]`` at ``t = 0`` (where the previous sample's last state is kept until now): call it after
        the backward through time, which still reads the last hidden states."""
        self.z[:, 0, :self.hidden_size].zero_()
        self.sealed = True

    def weight_gradients(self, delta: torch.Tensor, rows: slice) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Σ δ[b, t]ᵀ z[b, t]`` over the samples ``rows`` and all steps, split into the parts of the three
        parameters.

        Parameters
        ----------
        delta : torch.Tensor
            Gate deltas ``[B, T, G]`` (contiguous, sample-major).
        rows : slice
            The samples of one basin.

        Returns
        -------
        tuple of torch.Tensor
            ``(dW_hh [G, H], dW_ih [G, D], db [G])``.
        """
        if not self.sealed:
            raise RuntimeError("StepInputs.weight_gradients before seal(): the rows of t = 0 still hold the previous "
                               "sample's last hidden state.")
        z = self.z[rows]
        total = (z.reshape(-1, z.shape[-1]).t() @ delta[rows].reshape(-1, delta.shape[-1])).t()   # [G, K]
        hidden = self.hidden_size
        return total[:, :hidden], total[:, hidden:-1], total[:, -1]
