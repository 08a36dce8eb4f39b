"""Per-basin probe gradients of an NH model, and the influence measures computed from them (DESIGN.md §2).

A probe of basin ``b`` is a batch of ``k`` of its training samples, drawn with a seed that depends on the refresh.
Its loss is the run's own training loss (NSE* with ``loss: xb_nse_star``); its gradient ``g_b`` is taken over all
trainable parameters or a named subset, optionally count-sketched. Probes run in train mode (cuDNN's RNN backward
requires it) with every dropout probability set to 0, so that gradients are deterministic.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from nh_crossbasin.core.influence import CountSketch, influence_from_gradients, lookahead_from_losses

LOGGER = logging.getLogger(__name__)


@contextmanager
def probe_mode(model: nn.Module) -> Iterator[None]:
    """Train mode with all dropout switched off inside the block; the model's state is restored afterwards."""
    was_training = model.training
    dropouts = [(m, m.p) for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    rnns = [(m, m.dropout) for m in model.modules() if isinstance(m, nn.RNNBase)]
    model.train()
    for module, _ in dropouts:
        module.p = 0.0
    for module, _ in rnns:
        module.dropout = 0.0
    try:
        yield
    finally:
        for module, p in dropouts:
            module.p = p
        for module, p in rnns:
            module.dropout = p
        model.train(was_training)


def select_parameters(model: nn.Module, names: Optional[Sequence[str]]) -> List[Tuple[str, nn.Parameter]]:
    """The trainable parameters whose gradients count.

    Parameters
    ----------
    model : nn.Module
        The model.
    names : sequence of str or None
        None (or ``['all']``): every trainable parameter. Otherwise module or parameter names (e.g. ``head``,
        ``input_gate``, ``lstm.weight_hh_l0``): a parameter counts if its name equals one or starts with one + '.'.

    Raises
    ------
    ValueError
        If a name matches no trainable parameter (the message lists the model's top-level modules).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if names is None or list(names) == ["all"]:
        return named
    chosen, unmatched = [], []
    for prefix in names:
        hits = [(n, p) for n, p in named if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            unmatched.append(prefix)
        chosen.extend(h for h in hits if h not in chosen)
    if unmatched:
        top = sorted({n.split(".")[0] for n, _ in named})
        raise ValueError(f"Config key 'xb_influence_params': {unmatched} match no trainable parameter of "
                         f"{type(model).__name__}; allowed: 'all' or names among {top} (or full parameter names).")
    return chosen


def draw_probes(sample_basin_index: np.ndarray, n_basins: int, probe_size: int, seed: Sequence[int]) -> List[np.ndarray]:
    """Sample indices of each basin's probe: ``probe_size`` of its samples without replacement (all if fewer).

    Parameters
    ----------
    sample_basin_index : np.ndarray
        Basin index of every training sample.
    n_basins : int
        Number of training basins (basins without samples get an empty probe).
    probe_size : int
        ``k``.
    seed : sequence of int
        Entropy for ``numpy.random.default_rng`` (e.g. ``(run seed, epoch)``).
    """
    rng = np.random.default_rng(list(seed))
    order = np.argsort(sample_basin_index, kind="stable")
    bounds = np.searchsorted(sample_basin_index[order], np.arange(n_basins + 1))
    probes = []
    for b in range(n_basins):
        members = order[bounds[b]:bounds[b + 1]]
        take = min(probe_size, len(members))
        probes.append(np.sort(rng.choice(members, size=take, replace=False)) if take else members)
    return probes


def batch_to_device(batch: Dict, device: torch.device, dtype: Optional[torch.dtype] = None) -> Dict:
    """Move a collated NH batch to ``device`` as NH's trainer does (dates stay numpy); optionally cast floats."""
    def move(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device)
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t
    out = {}
    for key, value in batch.items():
        if key.startswith("x_d"):
            out[key] = {k: move(v) for k, v in value.items()}
        elif key.startswith("date"):
            out[key] = value
        else:
            out[key] = move(value)
    return out


def nh_loss_fn(loss_obj: nn.Module) -> Callable[[nn.Module, Dict], torch.Tensor]:
    """The training loss of a batch as NH's trainer computes it (pre-model hook, forward, loss object)."""
    def loss_fn(model: nn.Module, batch: Dict) -> torch.Tensor:
        data = model.pre_model_hook(batch, is_train=True)
        loss, _ = loss_obj(model(data), data)
        return loss
    return loss_fn


@dataclass
class ProbeGradients:
    """Result of :func:`probe_gradients` (one row per training basin)."""

    grads: torch.Tensor          # [n_basins, d] (sketched if a sketch was given); NaN rows: no probe / bad gradient
    losses: torch.Tensor         # [n_basins] probe losses (NaN without probe)
    norms: torch.Tensor          # [n_basins] norm of the unsketched gradient
    probe_sizes: np.ndarray      # [n_basins] samples in each probe


def probe_batches(dataset, probes: Sequence[np.ndarray], device, dtype=None) -> List[Optional[Dict]]:
    """Collated, device-resident probe batches (None for basins without samples)."""
    return [batch_to_device(dataset.collate_fn([dataset[int(i)] for i in idx]), device, dtype) if len(idx) else None
            for idx in probes]


def probe_gradients(model: nn.Module, loss_fn: Callable, batches: Sequence[Optional[Dict]],
                    params: Sequence[Tuple[str, nn.Parameter]], sketch: Optional[CountSketch] = None) -> ProbeGradients:
    """One forward and backward per basin probe; gradients are flattened (and sketched) into rows.

    Memory is ``n_basins × d`` (``d`` = number of selected parameters, or the sketch dimension).
    """
    tensors = [p for _, p in params]
    n_params = sum(p.numel() for p in tensors)
    device, dtype = tensors[0].device, tensors[0].dtype
    width = sketch.n_outputs if sketch is not None else n_params
    grads = torch.full((len(batches), width), float("nan"), device=device, dtype=dtype)
    losses = torch.full((len(batches),), float("nan"), device=device, dtype=dtype)
    norms = torch.full((len(batches),), float("nan"), device=device, dtype=dtype)
    with probe_mode(model):
        for b, batch in enumerate(batches):
            if batch is None:
                continue
            loss = loss_fn(model, batch)
            parts = torch.autograd.grad(loss, tensors, allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                              for g, p in zip(parts, tensors)])
            norms[b] = flat.norm()
            grads[b] = sketch(flat) if sketch is not None else flat
            losses[b] = loss.detach()
    sizes = np.array([0 if batch is None else len(batch["basin_index"]) for batch in batches])
    return ProbeGradients(grads=grads, losses=losses, norms=norms, probe_sizes=sizes)


def lookahead_losses(model: nn.Module, loss_fn: Callable, target_batches: Sequence[Dict],
                     source_grads: torch.Tensor, params: Sequence[Tuple[str, nn.Parameter]],
                     learning_rate: float) -> torch.Tensor:
    """``L_t(θ - η g_s)`` for every target batch ``t`` and source gradient row ``s`` (unsketched gradients).

    The parameters are set to ``θ - η g_s`` in place and restored exactly (from a copy) afterwards. Sources whose
    gradient is not finite give NaN columns. Costs one forward per (target, source) pair.
    """
    tensors = [p for _, p in params]
    saved = [p.detach().clone() for p in tensors]
    sizes = [p.numel() for p in tensors]
    stepped = torch.full((len(target_batches), source_grads.shape[0]), float("nan"),
                         device=source_grads.device, dtype=source_grads.dtype)
    try:
        with probe_mode(model), torch.no_grad():
            for s in range(source_grads.shape[0]):
                if not torch.isfinite(source_grads[s]).all():
                    continue
                for p, original, step in zip(tensors, saved, torch.split(source_grads[s], sizes)):
                    p.copy_(original - learning_rate * step.view_as(p))
                for t, batch in enumerate(target_batches):
                    stepped[t, s] = loss_fn(model, batch)
    finally:
        with torch.no_grad():
            for p, original in zip(tensors, saved):
                p.copy_(original)
    return stepped


def measure_influence(model: nn.Module, loss_fn: Callable, batches: Sequence[Optional[Dict]],
                      targets: Sequence[int], measure: str, params: Sequence[Tuple[str, nn.Parameter]],
                      projection_dim: Optional[int] = None, sketch_seed: int = 0,
                      learning_rate: Optional[float] = None) -> Tuple[torch.Tensor, ProbeGradients]:
    """Influence of every source basin (all rows of ``batches``) on each target (indices into them).

    Returns
    -------
    influence : torch.Tensor
        ``[len(targets), n_basins]``.
    gradients : ProbeGradients
        The probe gradients, losses and norms of all basins.
    """
    targets = list(targets)
    if measure == "lookahead":
        if learning_rate is None:
            raise ValueError("The lookahead measure needs a learning rate.")
        gradients = probe_gradients(model, loss_fn, batches, params)
        target_batches = [batches[t] for t in targets]
        stepped = lookahead_losses(model, loss_fn, target_batches, gradients.grads, params, learning_rate)
        return lookahead_from_losses(gradients.losses[targets], stepped), gradients
    sketch = None
    if projection_dim:
        n_params = sum(p.numel() for _, p in params)
        sketch = CountSketch(n_params, projection_dim, seed=sketch_seed, device=params[0][1].device)
    gradients = probe_gradients(model, loss_fn, batches, params, sketch)
    return influence_from_gradients(gradients.grads[targets], gradients.grads, measure), gradients
