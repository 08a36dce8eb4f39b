"""NSE* (Kratzert et al. 2019, eq. 13) as a minibatch loss, with optional per-basin weights.

Eq. 13 is ``(1/B) Σ_b (1/N_b) Σ_n (ŷ_n − y_n)² / (s_b + ε)²`` with ``s_b`` the standard deviation of basin ``b``'s
training-period discharge and ε = 0.1, so that small arid basins are not drowned by large humid ones. As a
minibatch loss it is the mean over the batch's valid (non-NaN) targets of the per-sample scaled squared error
``(ŷ − y)² / (s_b + ε)²`` -- exactly NH's ``NSE`` maths. That mean is an unbiased estimate of the expected scaled error
under the training draw, and its expectation does not move with the batch size. (Averaging within each basin of a
batch first, then over the basins present, does not have that property: with two basins drawn 90/10 its expectation
goes from the 90/10 mixture at batch size 1 towards the 50/50 one for large batches.)

Optional per-basin weights ``w_b`` multiply each sample's scaled error: the loss is then an unbiased estimate of
``E[w_b(i) · e_i]``. Weights that average 1 under the draw keep the learning rate's meaning; with unit weights the
loss equals NH's ``NSE`` exactly.
"""
from __future__ import annotations

from typing import Optional

import torch


def scaled_squared_errors(y_hat: torch.Tensor, y: torch.Tensor, target_std: torch.Tensor,
                          eps: float = 0.1) -> torch.Tensor:
    """``(ŷ − y)² / (s_b + ε)²`` of every valid target, in NH's order of operations (masked entries dropped).

    Parameters
    ----------
    y_hat, y : torch.Tensor
        Predictions and observations, ``[batch, time, 1]``; NaN observations are dropped.
    target_std : torch.Tensor
        Per-sample standard deviation of the basin's training discharge, expandable to ``y_hat`` (``[batch, 1, 1]``).
    eps : float
        Constant added to the standard deviation.

    Returns
    -------
    torch.Tensor
        1-d, one entry per valid target.
    """
    mask = ~torch.isnan(y)
    stds = target_std.expand_as(y_hat)[mask]
    return 1 / (stds + eps) ** 2 * (y_hat[mask] - y[mask]) ** 2


def nse_star(y_hat: torch.Tensor, y: torch.Tensor, target_std: torch.Tensor, basin_index: Optional[torch.Tensor] = None,
             eps: float = 0.1, basin_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """NSE* of a minibatch: the mean over valid targets of the (optionally basin-weighted) scaled squared errors.

    Parameters
    ----------
    y_hat, y, target_std, eps
        As in :func:`scaled_squared_errors`.
    basin_index : torch.Tensor, optional
        Integer basin id of each sample, ``[batch]``; needed only with ``basin_weights``.
    basin_weights : torch.Tensor, optional
        Non-negative weight per basin id, ``[n_basins]``; each sample's scaled errors are multiplied by its basin's
        weight (not renormalised: the loss estimates ``E[w_b e]``).

    Returns
    -------
    torch.Tensor
        Scalar loss; NaN when no target of the batch is valid, which NH's trainer treats as a skipped step.
    """
    scaled = scaled_squared_errors(y_hat, y, target_std, eps)
    if basin_weights is not None:
        if basin_index is None:
            raise ValueError("basin_weights need basin_index (the basin of every sample).")
        mask = ~torch.isnan(y)
        per_sample = basin_weights.to(device=y_hat.device, dtype=y_hat.dtype)[basin_index]
        per_sample = per_sample.reshape(-1, *([1] * (y_hat.dim() - 1))).expand_as(y_hat)
        scaled = scaled * per_sample[mask]
    return torch.mean(scaled)


def per_basin_nse_star(y_hat: torch.Tensor, y: torch.Tensor, target_std: torch.Tensor, basin_index: torch.Tensor,
                       eps: float = 0.1):
    """Mean scaled squared error of each basin present in a batch (a diagnostic, e.g. probe losses per basin).

    Returns
    -------
    basins, losses, counts : torch.Tensor
        The basin ids with at least one valid target, their mean scaled squared error, their number of valid targets.
    """
    valid = ~torch.isnan(y)
    y_filled = torch.where(valid, y, torch.zeros_like(y))
    scaled = torch.where(valid, (y_hat - y_filled) ** 2 / (target_std + eps) ** 2, torch.zeros_like(y_hat))
    sample_sum = scaled.reshape(scaled.shape[0], -1).sum(dim=1)
    sample_count = valid.reshape(valid.shape[0], -1).sum(dim=1).to(sample_sum.dtype)
    basins, group = torch.unique(basin_index.reshape(-1), return_inverse=True)
    sums = torch.zeros(len(basins), dtype=sample_sum.dtype, device=sample_sum.device).index_add(0, group, sample_sum)
    counts = torch.zeros_like(sums).index_add(0, group, sample_count)
    present = counts > 0
    return basins[present], sums[present] / counts[present], counts[present]
