"""All basins' probe gradients from batched forward/backward passes (exact), for NH ``cudalstm`` and ``xb_ealstm``.

Where it is used (:func:`use_batched`): always when only head parameters count (one forward of the model, then the
head's per-basin gradients), for recurrent parameters on a GPU, and on the CPU for ``xb_ealstm`` and for
``cudalstm`` with probes of more than :data:`CPU_LOOP_MAX_PROBE` sequences. For ``cudalstm``'s smaller probes the
per-basin loop stays: oneDNN's fused LSTM runs a probe of 16 sequences fast enough that the batched pass, whose
recurrence runs step by step in Python, does not catch up (``benchmarks/RESULTS.md``).

The per-basin loop of :func:`nh_crossbasin.nh.probes.probe_gradients` runs one forward and one backward per basin.
Here the probes of many basins run as one batch through an explicit recurrence (:mod:`nh_crossbasin.core.recurrence`):
on the CPU :class:`~nh_crossbasin.core.recurrence.GateTrace`, with its backward through time written out, on
:class:`~nh_crossbasin.core.step_inputs.StepInputs` (rows ``[h[t-1], x[t], 1]`` in buffers reused from chunk to
chunk); on a GPU the fused kernel with the gate pre-activations as autograd leaves. One backward of the sum of the
basins' probe losses gives every sample's per-step gate deltas -- samples are independent, so a sample's deltas are
those of its own basin's loss -- and each basin's recurrent-weight gradients are then matrix products over its
samples and steps (on the CPU one product gives the recurrent weight, input weight and bias gradients together). The
head runs on the steps the loss reads (NH's ``predict_last_n``), and its gradients are the per-basin gradients of the
head alone on the (detached) hidden states: one forward of the recurrence when only head parameters count
(``xb_influence_params: [head]``). Chunks of at most ``max_sequences`` probe sequences bound the memory.

Other models, and selections that include parameters of an embedding network, use the per-basin loop.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from nh_crossbasin.core.ealstm_sequence import BufferPool
from nh_crossbasin.core.influence import CountSketch
from nh_crossbasin.core.recurrence import GateTrace, ealstm_recurrence, lstm_recurrence, weight_gradients
from nh_crossbasin.core.step_inputs import StepInputs

LSTM_PARAMS = ("lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0")
# cudalstm on the CPU: probes of at most this many sequences (mean) keep the per-basin loop. Batched / loop speed at
# hidden 256, seq 270 (benchmarks/RESULTS.md): 0.92x at 16 sequences, 1.18x at 32, 1.17x at 64.
CPU_LOOP_MAX_PROBE = 16
EALSTM_PARAMS = ("input_gate.weight", "input_gate.bias", "dynamic_gates.weight_ih", "dynamic_gates.weight_hh",
                 "dynamic_gates.bias")


def model_family(model: nn.Module) -> Optional[str]:
    """``"lstm"`` for NH's ``cudalstm``, ``"ealstm"`` for ``xb_ealstm``, None for models of the per-basin loop."""
    name = f"{type(model).__module__}.{type(model).__name__}"
    if name == "neuralhydrology.modelzoo.cudalstm.CudaLSTM":
        return "lstm"
    if name == "nh_crossbasin.nh.models.fused_ealstm.FusedEALSTM":
        return "ealstm"
    return None


def supports(model: nn.Module, params: Sequence[Tuple[str, nn.Parameter]]) -> bool:
    """Whether the batched pass computes the gradients of ``params`` of ``model`` (else: the per-basin loop)."""
    family = model_family(model)
    if family is None:
        return False
    known = set(LSTM_PARAMS if family == "lstm" else EALSTM_PARAMS)
    return all(name in known or name.startswith("head.") for name, _ in params)


def use_batched(model: nn.Module, params: Sequence[Tuple[str, nn.Parameter]], probe_size: float = 0.0) -> bool:
    """Whether :func:`~nh_crossbasin.nh.probes.probe_gradients` takes the batched path: supported, and only head
    parameters count, or the model is on a GPU, or it is ``xb_ealstm``, or it is ``cudalstm`` with probes of more
    than :data:`CPU_LOOP_MAX_PROBE` sequences (``probe_size``: their mean)."""
    if not supports(model, params):
        return False
    head_only = all(name.startswith("head.") for name, _ in params)
    on_gpu = next(model.parameters()).is_cuda
    return head_only or on_gpu or model_family(model) == "ealstm" or probe_size > CPU_LOOP_MAX_PROBE


def concatenate(batches: Sequence[Dict]) -> Dict:
    """Collated NH batches joined along the sample axis (tensors, numpy arrays, nested dicts)."""
    first = batches[0]
    out = {}
    for key, value in first.items():
        parts = [b[key] for b in batches]
        if isinstance(value, dict):
            out[key] = concatenate(parts)
        elif isinstance(value, torch.Tensor):
            out[key] = torch.cat(parts, dim=0)
        else:
            out[key] = np.concatenate(parts, axis=0)
    return out


def take(batch: Dict, rows: slice) -> Dict:
    """The samples ``rows`` of a batch (or of a prediction dict)."""
    return {k: take(v, rows) if isinstance(v, dict) else v[rows] for k, v in batch.items()}


def batched_probe_gradients(model: nn.Module, loss_obj: nn.Module, batches: Sequence[Optional[Dict]],
                            params: Sequence[Tuple[str, nn.Parameter]], sketch: Optional[CountSketch] = None,
                            max_sequences: int = 256):
    """Per-basin probe gradients (rows in the order of ``batches``; NaN rows for None), as
    :func:`~nh_crossbasin.nh.probes.probe_gradients` computes them one basin at a time.

    Parameters
    ----------
    model : nn.Module
        NH ``cudalstm`` or ``xb_ealstm`` (see :func:`supports`), in probe mode (train mode, dropout off).
    loss_obj : nn.Module
        The run's NH loss object.
    batches : sequence of dict or None
        One collated, device-resident probe batch per basin.
    params : sequence of (name, parameter)
        The parameters whose gradients count, in the order of the gradient rows.
    sketch : CountSketch, optional
        Count-sketch each basin's gradient.
    max_sequences : int
        Probe sequences per batched pass (bounds the memory).

    Returns
    -------
    nh_crossbasin.nh.probes.ProbeGradients
    """
    from nh_crossbasin.nh.probes import ProbeGradients
    result = ProbeGradients.allocate(batches, params, sketch)
    pool = BufferPool(size=1)   # the CPU trace's buffers, written afresh by every chunk but allocated once
    for chunk in _chunks(batches, max_sequences):
        chunk_batches = [batches[b] for b in chunk]
        for b, (loss, flat) in zip(chunk, _chunk_gradients(model, loss_obj, chunk_batches, params, pool)):
            result.store(b, loss, flat, sketch)
    return result


def _chunks(batches: Sequence[Optional[Dict]], max_sequences: int) -> List[List[int]]:
    chunks, current, size = [], [], 0
    for b, batch in enumerate(batches):
        if batch is None:
            continue
        n = len(batch["basin_index"])
        if current and size + n > max_sequences:
            chunks.append(current)
            current, size = [], 0
        current.append(b)
        size += n
    return chunks + ([current] if current else [])


def loss_steps(model: nn.Module, n_steps: int) -> int:
    """The number of last time steps whose predictions the loss reads: NH's ``predict_last_n`` (one frequency,
    no regularization term), else all ``n_steps``. Heads run on these steps only."""
    cfg = getattr(model, "cfg", None)
    last_n = getattr(cfg, "predict_last_n", None)
    if isinstance(last_n, dict) and len(last_n) == 1:
        last_n = next(iter(last_n.values()))
    if not isinstance(last_n, int) or last_n < 1 or getattr(cfg, "regularization", None):
        return n_steps
    return min(last_n, n_steps)


def _chunk_gradients(model: nn.Module, loss_obj: nn.Module, batches: List[Dict],
                     params: Sequence[Tuple[str, nn.Parameter]],
                     pool: Optional[BufferPool] = None) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``(loss, flat gradient)`` of every basin of one chunk."""
    family = model_family(model)
    names = [name for name, _ in params]
    recurrent = [n for n in names if not n.startswith("head.")]
    head_params = [(n, p) for n, p in params if n.startswith("head.")]
    sizes = [len(batch["basin_index"]) for batch in batches]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    rows = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    data = model.pre_model_hook(concatenate(batches), is_train=True)
    per_name: Dict[str, List[torch.Tensor]] = {}
    if not recurrent:  # head only: one forward of the model itself, without gradients
        with torch.no_grad():
            output = model(data)
        hidden = output["lstm_output" if family == "lstm" else "h_n"]
        features = hidden[:, -loss_steps(model, hidden.shape[1]):]
    elif next(model.parameters()).is_cuda:
        features = _recurrent_gradients_gpu(model, loss_obj, data, rows, recurrent, per_name)
    else:
        features = _recurrent_gradients_cpu(model, loss_obj, data, rows, recurrent, per_name,
                                            pool if pool is not None else BufferPool())
    detached = features.detach()
    per_name = {name: [g.detach() for g in values] for name, values in per_name.items()}
    results = []
    for i, r in enumerate(rows):
        with torch.set_grad_enabled(bool(head_params)):
            loss, _ = loss_obj(model.head(model.dropout(detached[r])), take(data, r))
        head_grads = dict(zip([n for n, _ in head_params], torch.autograd.grad(
            loss, [p for _, p in head_params], allow_unused=True))) if head_params else {}
        parts = []
        for name, p in params:
            g = per_name[name][i] if name in per_name else head_grads.get(name)
            parts.append((g if g is not None else torch.zeros_like(p)).reshape(-1))
        results.append((loss.detach(), torch.cat(parts).detach()))
    return results


def _inputs(model: nn.Module, data: Dict):
    """The recurrence's inputs and weights: ``(x [T, B, D], x_s or None, weights)`` (inputs detached)."""
    if model_family(model) == "lstm":
        lstm = model.lstm
        return (model.embedding_net(data).detach(), None,
                (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0))
    x_d, x_s = model.embedding_net(data, concatenate_output=False)
    if x_s is None:
        raise ValueError("Need x_s or x_one_hot in forward pass.")
    gates = model.dynamic_gates
    return (x_d.detach(), x_s.detach(),
            (model.input_gate.weight, model.input_gate.bias, gates.weight_ih, gates.weight_hh, gates.bias))


def _head_loss(model: nn.Module, loss_obj: nn.Module, data: Dict, rows: List[slice], hidden: torch.Tensor):
    """The sum of the basins' probe losses of the head on ``hidden`` ``[B, T', H]`` (the last steps)."""
    prediction = model.head(model.dropout(hidden))
    return sum(loss_obj(take(prediction, r), take(data, r))[0] for r in rows)


def _recurrent_gradients_cpu(model: nn.Module, loss_obj: nn.Module, data: Dict, rows: List[slice],
                             recurrent: List[str], per_name: Dict[str, List[torch.Tensor]],
                             pool: BufferPool) -> torch.Tensor:
    """CPU: :class:`GateTrace`'s hand-written backward through time, its hidden states written into
    :class:`StepInputs`, whose rows ``[h[t-1], x[t], 1]`` give each basin's weight and bias gradients in one product.
    Fills ``per_name``; returns the head's features ``[B, T', H]`` (the steps the loss reads)."""
    family = model_family(model)
    x, x_s, weights = _inputs(model, data)
    hidden_size = weights[-2 if family == "ealstm" else 1].shape[1]

    inputs = StepInputs(x, hidden_size, lambda role, numel: pool.take(role, numel, x.dtype, x.device))
    if family == "lstm":
        run = GateTrace.lstm(x, *weights, inputs=inputs)
    else:
        run = GateTrace.ealstm(x, x_s, *weights, inputs=inputs)
    # a copy: seal() below overwrites the last hidden states in the shared buffer
    tail = run.h[:, -loss_steps(model, run.h.shape[1]):].clone().requires_grad_()
    total = _head_loss(model, loss_obj, data, rows, tail)
    delta, d_input_gate = run.backward(torch.autograd.grad(total, [tail])[0], overwrite=True)
    inputs.seal()
    wants_input_gate = _wants_input_gate(family, recurrent)
    for r in rows:
        d_hh, d_ih, d_bias = inputs.weight_gradients(delta, r)
        values = _named_gradients(family, d_ih, d_hh, d_bias, *((d_input_gate[r], x_s[r]) if wants_input_gate else ()))
        for name in recurrent:
            per_name.setdefault(name, []).append(values[name])
    return tail


def _recurrent_gradients_gpu(model: nn.Module, loss_obj: nn.Module, data: Dict, rows: List[slice],
                             recurrent: List[str], per_name: Dict[str, List[torch.Tensor]]) -> torch.Tensor:
    """GPU: the fused kernel (cuDNN) with its gate pre-activations as autograd leaves. Fills ``per_name``; returns
    the head's features ``[B, T', H]``."""
    family = model_family(model)
    x, x_s, weights = _inputs(model, data)
    run = lstm_recurrence(x, *weights) if family == "lstm" else ealstm_recurrence(x, x_s, *weights)
    features = run.h.transpose(0, 1)[:, -loss_steps(model, run.h.shape[0]):]
    total = _head_loss(model, loss_obj, data, rows, features)
    wants_input_gate = _wants_input_gate(family, recurrent)
    deltas = torch.autograd.grad(total, [run.pre] + ([run.input_gate_pre] if wants_input_gate else []))
    # sample-major gate deltas and h[t-1]: each basin's samples are contiguous [n, T, ·] blocks
    delta, previous = (t.detach().transpose(0, 1).contiguous() for t in (deltas[0], run.h_previous))
    inputs = x.transpose(0, 1)
    bias_per_sample = delta.sum(dim=1)
    for r in rows:
        d = delta[r]
        values = _named_gradients(family, weight_gradients(d, inputs[r]), weight_gradients(d, previous[r]),
                                  bias_per_sample[r].sum(dim=0), *((deltas[1][r], x_s[r]) if wants_input_gate else ()))
        for name in recurrent:
            per_name.setdefault(name, []).append(values[name])
    return features


def _wants_input_gate(family: str, recurrent: List[str]) -> bool:
    return family == "ealstm" and any(n.startswith("input_gate.") for n in recurrent)


def _named_gradients(family: str, d_ih: torch.Tensor, d_hh: torch.Tensor, d_bias: torch.Tensor,
                     d_input_gate: Optional[torch.Tensor] = None,
                     x_s: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """One basin's recurrent gradients by parameter name; ``d_input_gate`` ``[n, H]`` (EA-LSTM, where asked for):
    each sample's delta of the input gate's pre-activation ``W_i x_s + b_i``, with its statics ``x_s`` ``[n, S]``."""
    if family == "lstm":
        return {"lstm.weight_ih_l0": d_ih, "lstm.weight_hh_l0": d_hh, "lstm.bias_ih_l0": d_bias,
                "lstm.bias_hh_l0": d_bias}
    values = {"dynamic_gates.weight_ih": d_ih, "dynamic_gates.weight_hh": d_hh, "dynamic_gates.bias": d_bias}
    if d_input_gate is not None:
        values.update({"input_gate.weight": d_input_gate.t() @ x_s, "input_gate.bias": d_input_gate.sum(dim=0)})
    return values
