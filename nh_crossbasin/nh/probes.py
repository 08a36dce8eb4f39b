"""Per-basin probe gradients of an NH model, and the influence measures computed from them (DESIGN.md §2).

Each refresh draws, for every training basin ``b``, two *disjoint* probe batches of ``k`` of its training samples,
seeded by the run seed and the epoch: a source probe ``S_b`` and a target probe ``T_b``. ``I[t, s]`` compares the
target probe's gradient of ``t`` with the source probe's gradient of ``s`` for every pair, ``t = s`` included, so a
probe is never compared with itself and the diagonal is an honest estimate like every other entry. A probe's loss is
the run's own training loss (NSE* with ``loss: xb_nse_star``); its gradient is taken over all trainable parameters
or a named subset, optionally count-sketched. Probes run in train mode (cuDNN's RNN backward requires it) with every
dropout probability set to 0 and without NH's random NaN augmentation, so that they are a function of (seed, epoch).

Fallbacks (logged by the caller): a basin with fewer than ``2k`` training samples gets two disjoint halves of its
samples; a basin with a single sample has a source probe but no target probe (as a target it keeps uniform weights);
a basin without samples has neither.
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
_LOOP_LOGGED: set = set()


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


@dataclass
class ProbeDraw:
    """The probes of one refresh: sample indices per basin (empty arrays where a basin has none)."""

    source: List[np.ndarray]     # S_b, one per training basin
    target: List[np.ndarray]     # T_b, disjoint from S_b
    halved: List[int]            # basins with fewer than 2k samples: S_b and T_b are halves of their samples
    no_target: List[int]         # basins with exactly one sample: a source probe only


def draw_probes(sample_basin_index: np.ndarray, n_basins: int, probe_size: int, seed: Sequence[int]) -> ProbeDraw:
    """Disjoint source and target probes of every basin: ``2k`` of its samples without replacement, the first ``k``
    the source probe, the others the target probe (halves of its samples when it has fewer than ``2k``).

    Parameters
    ----------
    sample_basin_index : np.ndarray
        Basin index of every training sample.
    n_basins : int
        Number of training basins (basins without samples get empty probes).
    probe_size : int
        ``k``.
    seed : sequence of int
        Entropy for ``numpy.random.default_rng`` (e.g. ``(run seed, epoch)``).
    """
    rng = np.random.default_rng(list(seed))
    order = np.argsort(sample_basin_index, kind="stable")
    bounds = np.searchsorted(sample_basin_index[order], np.arange(n_basins + 1))
    draw = ProbeDraw([], [], [], [])
    for b in range(n_basins):
        members = order[bounds[b]:bounds[b + 1]]
        take = min(2 * probe_size, len(members))
        chosen = rng.choice(members, size=take, replace=False) if take else members
        n_source = probe_size if take == 2 * probe_size else take - take // 2
        draw.source.append(np.sort(chosen[:n_source]))
        draw.target.append(np.sort(chosen[n_source:]))
        if 0 < len(members) < 2 * probe_size:
            draw.halved.append(b)
        if len(members) == 1:
            draw.no_target.append(b)
    return draw


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
    """The training loss of a batch as NH's trainer computes it (pre-model hook, forward, loss object); the loss
    object is kept as ``loss_fn.loss_obj`` (the batched gradients need it)."""
    def loss_fn(model: nn.Module, batch: Dict) -> torch.Tensor:
        data = model.pre_model_hook(batch, is_train=True)
        loss, _ = loss_obj(model(data), data)
        return loss
    loss_fn.loss_obj = loss_obj
    return loss_fn


@contextmanager
def unweighted(loss_obj: nn.Module) -> Iterator[None]:
    """The loss without per-basin weights inside the block (``xb_influence_apply: loss`` weights the training loss;
    probes measure the unweighted one)."""
    weights = getattr(loss_obj, "_basin_weights", None)
    if weights is not None:
        loss_obj.set_basin_weights(None)
    try:
        yield
    finally:
        if weights is not None:
            loss_obj.set_basin_weights(weights)


@dataclass
class ProbeGradients:
    """Result of :func:`probe_gradients` (one row per probe batch)."""

    grads: torch.Tensor          # [n_basins, d] (sketched if a sketch was given); NaN rows: no probe / bad gradient
    losses: torch.Tensor         # [n_basins] probe losses (NaN without probe)
    norms: torch.Tensor          # [n_basins] norm of the unsketched gradient
    probe_sizes: np.ndarray      # [n_basins] samples in each probe

    @classmethod
    def allocate(cls, batches: Sequence[Optional[Dict]], params: Sequence[Tuple[str, nn.Parameter]],
                 sketch: Optional[CountSketch] = None) -> "ProbeGradients":
        """NaN rows for every probe batch, to be filled with :meth:`store`."""
        tensors = [p for _, p in params]
        device, dtype = tensors[0].device, tensors[0].dtype
        width = sketch.n_outputs if sketch is not None else sum(p.numel() for p in tensors)
        nan = float("nan")
        return cls(grads=torch.full((len(batches), width), nan, device=device, dtype=dtype),
                   losses=torch.full((len(batches),), nan, device=device, dtype=dtype),
                   norms=torch.full((len(batches),), nan, device=device, dtype=dtype),
                   probe_sizes=probe_sizes(batches))

    def store(self, row: int, loss: torch.Tensor, flat: torch.Tensor, sketch: Optional[CountSketch] = None) -> None:
        """The loss and the (sketched) flat gradient of one probe."""
        self.norms[row] = flat.norm()
        self.grads[row] = sketch(flat) if sketch is not None else flat
        self.losses[row] = loss.detach()


@contextmanager
def without_augmentation(dataset) -> Iterator[None]:
    """NH's random NaN augmentation (``nan_step_probability``, ``nan_sequence_probability``) off inside the block:
    NH applies it only to training datasets and draws it from numpy's global RNG, which probes must not touch."""
    inner = getattr(dataset, "dataset", dataset)
    was_train = getattr(inner, "is_train", False)
    inner.is_train = False
    try:
        yield
    finally:
        inner.is_train = was_train


def probe_batches(dataset, probes: Sequence[np.ndarray], device, dtype=None) -> List[Optional[Dict]]:
    """Collated, device-resident probe batches (None for basins without samples), without NaN augmentation."""
    with without_augmentation(dataset):
        return [batch_to_device(dataset.collate_fn([dataset[int(i)] for i in idx]), device, dtype) if len(idx)
                else None for idx in probes]


def probe_gradients(model: nn.Module, loss_fn: Callable, batches: Sequence[Optional[Dict]],
                    params: Sequence[Tuple[str, nn.Parameter]], sketch: Optional[CountSketch] = None,
                    batched: bool = True) -> ProbeGradients:
    """The probe gradient of every basin, flattened (and sketched) into rows.

    With ``batched``, all probes run in batched passes (:mod:`nh_crossbasin.nh.batched_gradients`) for
    ``xb_ealstm``, and for NH ``cudalstm`` when only head parameters count, the model is on a GPU or the probes hold
    more than 16 sequences (see :func:`~nh_crossbasin.nh.batched_gradients.use_batched`); otherwise one forward and
    backward per basin probe (logged once per model class). Memory is ``n_basins × d`` (``d`` = number
    of selected parameters, or the sketch dimension).
    """
    from nh_crossbasin.nh import batched_gradients
    loss_obj = getattr(loss_fn, "loss_obj", None)
    live = [len(batch["basin_index"]) for batch in batches if batch is not None]
    probe_size = sum(live) / len(live) if live else 0.0
    if batched and loss_obj is not None and batched_gradients.use_batched(model, params, probe_size):
        with probe_mode(model):
            return batched_gradients.batched_probe_gradients(model, loss_obj, batches, params, sketch)
    if batched and type(model).__name__ not in _LOOP_LOGGED:
        _LOOP_LOGGED.add(type(model).__name__)
        LOGGER.info(f"Probe gradients of {type(model).__name__} with these parameters come from one backward pass per "
                    f"basin (batched passes: xb_ealstm, and NH cudalstm for head-only gradients, on a GPU or with "
                    f"probes of more than {batched_gradients.CPU_LOOP_MAX_PROBE} sequences; without "
                    f"embedding-network parameters).")
    tensors = [p for _, p in params]
    result = ProbeGradients.allocate(batches, params, sketch)
    with probe_mode(model):
        for b, batch in enumerate(batches):
            if batch is None:
                continue
            loss = loss_fn(model, batch)
            parts = torch.autograd.grad(loss, tensors, allow_unused=True)
            result.store(b, loss, torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                             for g, p in zip(parts, tensors)]), sketch)
    return result


def probe_losses(model: nn.Module, loss_fn: Callable, batches: Sequence[Optional[Dict]]) -> torch.Tensor:
    """The loss of every probe batch (NaN for None), without gradients."""
    losses = []
    with probe_mode(model), torch.no_grad():
        for batch in batches:
            losses.append(float("nan") if batch is None else float(loss_fn(model, batch)))
    reference = next(model.parameters())
    return torch.tensor(losses, dtype=reference.dtype, device=reference.device)


def lookahead_losses(model: nn.Module, loss_fn: Callable, target_batches: Sequence[Optional[Dict]],
                     source_grads: torch.Tensor, params: Sequence[Tuple[str, nn.Parameter]],
                     learning_rate: float) -> torch.Tensor:
    """``L_t(θ - η g_s)`` for every target batch ``t`` and source gradient row ``s`` (unsketched gradients).

    The parameters are set to ``θ - η g_s`` in place and restored exactly (from a copy) afterwards. Sources whose
    gradient is not finite give NaN columns, targets without a batch NaN rows. Costs one forward per (target,
    source) pair.
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
                    if batch is not None:
                        stepped[t, s] = loss_fn(model, batch)
    finally:
        with torch.no_grad():
            for p, original in zip(tensors, saved):
                p.copy_(original)
    return stepped


@dataclass
class InfluenceMeasurement:
    """Result of :func:`measure_influence`."""

    influence: torch.Tensor      # [n_targets, n_sources]: target probe of t vs source probe of s
    source: ProbeGradients       # source probes of all basins
    target: ProbeGradients       # target probes of the target basins (gradient rows empty for ``lookahead``)


def measure_influence(model: nn.Module, loss_fn: Callable, source_batches: Sequence[Optional[Dict]],
                      target_batches: Sequence[Optional[Dict]], measure: str,
                      params: Sequence[Tuple[str, nn.Parameter]], projection_dim: Optional[int] = None,
                      sketch_seed: int = 0, learning_rate: Optional[float] = None) -> InfluenceMeasurement:
    """Influence of every source basin's source probe on each target basin's target probe.

    Parameters
    ----------
    model, loss_fn
        The model and :func:`nh_loss_fn` of the run's loss.
    source_batches : sequence of dict or None
        The source probe batch of every training basin (None: the basin has no samples).
    target_batches : sequence of dict or None
        The target probe batch of every target basin (None: no target probe; that row is NaN).
    measure : {'dot', 'cosine', 'lookahead'}
        See :mod:`nh_crossbasin.core.influence`.
    params : sequence of (name, parameter)
        The parameters whose gradients count (:func:`select_parameters`).
    projection_dim : int, optional
        Count-sketch dimension (``dot`` and ``cosine``).
    sketch_seed : int
        Seed of the count sketch.
    learning_rate : float, optional
        Step size η of ``lookahead``.
    """
    if measure == "lookahead":
        if learning_rate is None:
            raise ValueError("The lookahead measure needs a learning rate.")
        source = probe_gradients(model, loss_fn, source_batches, params)
        base = probe_losses(model, loss_fn, target_batches)
        stepped = lookahead_losses(model, loss_fn, target_batches, source.grads, params, learning_rate)
        target = ProbeGradients(grads=base[:, None] * float("nan"), losses=base, norms=base * float("nan"),
                                probe_sizes=probe_sizes(target_batches))
        return InfluenceMeasurement(lookahead_from_losses(base, stepped), source, target)
    sketch = None
    if projection_dim:
        n_params = sum(p.numel() for _, p in params)
        sketch = CountSketch(n_params, projection_dim, seed=sketch_seed, device=params[0][1].device)
    source = probe_gradients(model, loss_fn, source_batches, params, sketch)
    target = probe_gradients(model, loss_fn, target_batches, params, sketch)
    return InfluenceMeasurement(influence_from_gradients(target.grads, source.grads, measure), source, target)


def probe_sizes(batches: Sequence[Optional[Dict]]) -> np.ndarray:
    """Samples in each probe batch (0 for None)."""
    return np.array([0 if batch is None else len(batch["basin_index"]) for batch in batches])
