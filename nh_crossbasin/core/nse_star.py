"""Basin-averaged NSE* (Kratzert et al. 2019, eq. 13), with optional per-basin weights.

For a batch of sequences from several basins, the loss of basin ``b`` is the mean over its valid (non-NaN) targets
of ``(y_hat - y)**2 / (s_b + eps)**2``, where ``s_b`` is the standard deviation of ``b``'s discharge in the training
period. The batch loss is the (weighted) mean of these per-basin losses over the basins present in the batch, so
that every basin counts the same however many valid targets it contributes; NH's ``loss: NSE`` instead averages
over all valid targets, which equals NSE* only when every basin has the same number of them.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def per_basin_nse_star(y_hat: torch.Tensor, y: torch.Tensor, target_std: torch.Tensor, basin_index: torch.Tensor,
                       eps: float = 0.1) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NSE* of every basin present in a batch.

    Parameters
    ----------
    y_hat, y : torch.Tensor
        Predictions and observations, shape ``[batch, time, 1]`` (or any shape whose first axis is the sample);
        NaN observations are ignored.
    target_std : torch.Tensor
        Per-sample standard deviation of the basin's training discharge, broadcastable to ``y``
        (e.g. ``[batch, 1, 1]``).
    basin_index : torch.Tensor
        Integer id of each sample's basin, shape ``[batch]``.
    eps : float, optional
        Constant added to the standard deviation (0.1 in Kratzert et al. 2019).

    Returns
    -------
    basins : torch.Tensor
        The distinct basin ids that have at least one valid target, shape ``[n]``.
    losses : torch.Tensor
        NSE* of each of those basins, shape ``[n]``.
    counts : torch.Tensor
        Number of valid targets of each of those basins, shape ``[n]``.
    """
    valid = ~torch.isnan(y)
    # fill NaN targets before squaring so that masked entries cannot leak NaN into the gradient
    y_filled = torch.where(valid, y, torch.zeros_like(y))
    scaled = (y_hat - y_filled) ** 2 / (target_std + eps) ** 2
    scaled = torch.where(valid, scaled, torch.zeros_like(scaled))
    sample_sum = scaled.reshape(scaled.shape[0], -1).sum(dim=1)
    sample_count = valid.reshape(valid.shape[0], -1).sum(dim=1).to(sample_sum.dtype)

    basins, group = torch.unique(basin_index.reshape(-1), return_inverse=True)
    sums = torch.zeros(len(basins), dtype=sample_sum.dtype, device=sample_sum.device).index_add(0, group, sample_sum)
    counts = torch.zeros_like(sums).index_add(0, group, sample_count)
    present = counts > 0
    return basins[present], sums[present] / counts[present], counts[present]


def nse_star(y_hat: torch.Tensor, y: torch.Tensor, target_std: torch.Tensor, basin_index: torch.Tensor,
             eps: float = 0.1, basin_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Basin-averaged NSE* loss of a batch.

    Parameters
    ----------
    y_hat, y, target_std, basin_index, eps
        As in :func:`per_basin_nse_star`.
    basin_weights : torch.Tensor, optional
        Non-negative weight per basin id (indexed by ``basin_index``, shape ``[n_basins]``). The loss is then
        ``sum_b w_b L_b / sum_b w_b`` over the basins present; without weights it is the plain mean of ``L_b``.

    Returns
    -------
    torch.Tensor
        Scalar loss; NaN when no sample of the batch has a valid target (or all present basins weigh zero), which
        NH's trainer treats as a skipped step.
    """
    basins, losses, _ = per_basin_nse_star(y_hat, y, target_std, basin_index, eps)
    if len(basins) == 0:
        return (y_hat * float("nan")).sum()
    if basin_weights is None:
        return losses.mean()
    weights = basin_weights.to(device=losses.device, dtype=losses.dtype)[basins]
    return (weights * losses).sum() / weights.sum()
