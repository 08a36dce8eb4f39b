"""Basin-to-basin gradient influence (DESIGN.md §2), from per-basin probe gradients.

``I[t, s] = <g_t, g_s>`` is the first-order decrease of target ``t``'s probe loss after a unit SGD step on source
``s``'s probe loss: ``L_t(θ - η g_s) ≈ L_t(θ) - η <g_t, g_s>``. The ``cosine`` variant divides by both gradient
norms; the exact look-ahead variant (TAG affinity) is computed by :mod:`nh_crossbasin.nh.probes` because it needs
model evaluations. Gradients may be sketched to ``d`` dimensions by a count sketch, whose inner products are
unbiased estimates of the full ones and which needs O(P) memory, not O(P d).
"""
from __future__ import annotations

from typing import Optional

import torch

MEASURES = ("dot", "cosine", "lookahead")


class CountSketch:
    """A seeded count sketch ``R^P -> R^d``: coordinate ``j`` is added, with sign ``σ_j``, to bucket ``h(j)``.

    ``E[<S a, S b>] = <a, b>`` for the random hash and signs, with variance ``O(|a|^2 |b|^2 / d)``.

    Parameters
    ----------
    n_inputs : int
        Dimension ``P`` of the vectors to sketch.
    n_outputs : int
        Sketch dimension ``d``.
    seed : int
        Seed of the hash and the signs.
    device : torch.device or str, optional
        Where the hash and signs live.
    """

    def __init__(self, n_inputs: int, n_outputs: int, seed: int, device="cpu"):
        if n_outputs < 1:
            raise ValueError(f"Sketch dimension must be >= 1, got {n_outputs}.")
        generator = torch.Generator().manual_seed(int(seed))
        self.n_inputs, self.n_outputs = int(n_inputs), int(n_outputs)
        self.bucket = torch.randint(0, n_outputs, (n_inputs,), generator=generator).to(device)
        self.sign = (torch.randint(0, 2, (n_inputs,), generator=generator) * 2 - 1).to(device)

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        """Sketch one vector of length ``P`` into length ``d``."""
        out = torch.zeros(self.n_outputs, dtype=vector.dtype, device=vector.device)
        return out.index_add_(0, self.bucket, vector * self.sign.to(vector.dtype))


def influence_from_gradients(target_grads: torch.Tensor, source_grads: torch.Tensor,
                             measure: str = "dot") -> torch.Tensor:
    """Influence matrix from gradients.

    Parameters
    ----------
    target_grads : torch.Tensor
        ``[n_targets, d]`` probe-loss gradients of the target basins.
    source_grads : torch.Tensor
        ``[n_sources, d]`` probe-loss gradients of the source basins.
    measure : {'dot', 'cosine'}
        ``dot``: ``<g_t, g_s>``; ``cosine``: ``<g_t, g_s> / (|g_t| |g_s|)``, 0 where a norm is 0.

    Returns
    -------
    torch.Tensor
        ``[n_targets, n_sources]``; rows or columns of non-finite gradients are NaN.
    """
    if measure not in ("dot", "cosine"):
        raise ValueError(f"measure must be 'dot' or 'cosine' here, got {measure!r} (lookahead needs the model).")
    finite_t = torch.isfinite(target_grads).all(dim=1)
    finite_s = torch.isfinite(source_grads).all(dim=1)
    gt = torch.where(finite_t[:, None], target_grads, torch.zeros_like(target_grads))
    gs = torch.where(finite_s[:, None], source_grads, torch.zeros_like(source_grads))
    if measure == "cosine":
        gt = gt / gt.norm(dim=1, keepdim=True).clamp_min(torch.finfo(gt.dtype).tiny)
        gs = gs / gs.norm(dim=1, keepdim=True).clamp_min(torch.finfo(gs.dtype).tiny)
    influence = gt @ gs.T
    influence[~finite_t] = float("nan")
    influence[:, ~finite_s] = float("nan")
    return influence


def lookahead_from_losses(base_losses: torch.Tensor, stepped_losses: torch.Tensor) -> torch.Tensor:
    """TAG look-ahead affinity ``Z[t, s] = 1 - L_t(θ - η g_s) / L_t(θ)``.

    Parameters
    ----------
    base_losses : torch.Tensor
        ``[n_targets]`` target probe losses at θ.
    stepped_losses : torch.Tensor
        ``[n_targets, n_sources]`` target probe losses after an SGD step of size η on each source.
    """
    return 1.0 - stepped_losses / base_losses[:, None]


def smooth(previous: Optional[torch.Tensor], current: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Exponential moving average across refreshes: ``smoothing * previous + (1 - smoothing) * current``.

    Entries that are NaN in one of the two take the other's value; with no ``previous`` (first refresh, or a
    different shape) the current matrix is returned.
    """
    if previous is None or smoothing <= 0 or previous.shape != current.shape:
        return current.clone()
    previous = previous.to(current)
    mixed = smoothing * previous + (1.0 - smoothing) * current
    mixed = torch.where(torch.isnan(previous), current, mixed)
    return torch.where(torch.isnan(current), previous, mixed)
