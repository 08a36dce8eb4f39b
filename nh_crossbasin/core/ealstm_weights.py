"""EA-LSTM as a standard fused LSTM: weight layouts, conversion to and from NH's ``ealstm``, and the fused call.

The Entity-Aware LSTM (Kratzert et al. 2019, eqs. 7-12) computes the input gate from the static inputs only,

    i = sigmoid(W_i x_s + b_i),

and the forget gate ``f``, cell update ``g`` and output gate ``o`` from the dynamic inputs ``x_d[t]`` and
``h[t-1]`` exactly as an LSTM does. This module runs it as one *standard* LSTM whose input at every time step is
``[x_d[t], x_s]`` and whose weights are assembled on every forward pass from learnable blocks and fixed zero blocks
(PyTorch gate order ``i, f, g, o``; ``D`` dynamic and ``S`` static input features, hidden size ``H``)::

              x_d (D)   x_s (S)          h (H)         b_ih      b_hh
    i  rows [   0    |   W_i   ]      [   0    ]      [ b_i ]   [ 0 ]
    f  rows [  W_f   |    0    ]      [  U_f   ]      [ b_f ]   [ 0 ]
    g  rows [  W_g   |    0    ]      [  U_g   ]      [ b_g ]   [ 0 ]
    o  rows [  W_o   |    0    ]      [  U_o   ]      [ b_o ]   [ 0 ]

so that the time loop runs inside one fused recurrent kernel (cuDNN on CUDA, oneDNN or ATen's C++ loop on CPU)
instead of a Python loop, with exactly the EA-LSTM's maths. Gradients reach only the learnable blocks.

Layouts
-------
NH's ``ealstm`` (``neuralhydrology.modelzoo.ealstm``) stores ``dynamic_gates.weight_ih`` ``[D, 3H]``,
``dynamic_gates.weight_hh`` ``[H, 3H]`` and ``dynamic_gates.bias`` ``[3H]`` with the gate blocks in the order
(f, o, g), and ``input_gate`` as an ``nn.Linear(S, H)``. The fused layout stores the dynamic gates as PyTorch does,
``weight_ih`` ``[3H, D]``, ``weight_hh`` ``[3H, H]``, ``bias`` ``[3H]``, gate blocks in the order (f, g, o) (PyTorch's
order without ``i``), so that assembling the LSTM weights needs no reordering on every forward pass. ``input_gate``
is the same ``nn.Linear`` in both. This module imports torch only.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

NH_GATE_ORDER = ("forget", "output", "cell")
FUSED_GATE_ORDER = ("forget", "cell", "output")
DYNAMIC_GATE_KEYS = ("dynamic_gates.weight_ih", "dynamic_gates.weight_hh", "dynamic_gates.bias")
_CUDNN_COMPACTION_WARNING = ".*not part of single contiguous chunk of memory.*"


# ------------------------------------------------------------------------------------------------- gate order
def reorder_gate_blocks(tensor: torch.Tensor, dim: int, source_order: Sequence[str],
                        target_order: Sequence[str]) -> torch.Tensor:
    """Permute the equally sized gate blocks of ``tensor`` along ``dim``.

    Parameters
    ----------
    tensor : torch.Tensor
        Tensor whose size along ``dim`` is ``len(source_order) * H``.
    dim : int
        Dimension that holds the gate blocks.
    source_order, target_order : sequence of str
        Gate names in the order they have in ``tensor`` and in the order wanted.

    Returns
    -------
    torch.Tensor
        A new tensor with the blocks in ``target_order``.
    """
    blocks = dict(zip(source_order, tensor.chunk(len(source_order), dim=dim)))
    return torch.cat([blocks[name] for name in target_order], dim=dim)


def nh_dynamic_gates_to_fused(weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                              bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Convert NH ``ealstm`` dynamic-gate tensors to the fused layout.

    Parameters
    ----------
    weight_ih : torch.Tensor
        NH ``dynamic_gates.weight_ih``, shape ``[D, 3H]``, gate columns (f, o, g).
    weight_hh : torch.Tensor
        NH ``dynamic_gates.weight_hh``, shape ``[H, 3H]``, gate columns (f, o, g).
    bias : torch.Tensor
        NH ``dynamic_gates.bias``, shape ``[3H]``, gate order (f, o, g).

    Returns
    -------
    tuple of torch.Tensor
        ``(weight_ih [3H, D], weight_hh [3H, H], bias [3H])``, gate rows (f, g, o), contiguous.
    """
    hidden_size = weight_hh.shape[0]
    if weight_hh.shape != (hidden_size, 3 * hidden_size) or weight_ih.shape[1] != 3 * hidden_size:
        raise ValueError(f"Not NH ealstm dynamic-gate shapes: weight_ih {tuple(weight_ih.shape)}, weight_hh "
                         f"{tuple(weight_hh.shape)} (expected [D, 3H] and [H, 3H]).")
    return (reorder_gate_blocks(weight_ih.t(), 0, NH_GATE_ORDER, FUSED_GATE_ORDER).contiguous(),
            reorder_gate_blocks(weight_hh.t(), 0, NH_GATE_ORDER, FUSED_GATE_ORDER).contiguous(),
            reorder_gate_blocks(bias, 0, NH_GATE_ORDER, FUSED_GATE_ORDER).contiguous())


def fused_dynamic_gates_to_nh(weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                              bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Convert fused dynamic-gate tensors to NH ``ealstm``'s layout (inverse of :func:`nh_dynamic_gates_to_fused`).

    Parameters
    ----------
    weight_ih : torch.Tensor
        Fused ``weight_ih``, shape ``[3H, D]``, gate rows (f, g, o).
    weight_hh : torch.Tensor
        Fused ``weight_hh``, shape ``[3H, H]``, gate rows (f, g, o).
    bias : torch.Tensor
        Fused ``bias``, shape ``[3H]``, gate order (f, g, o).

    Returns
    -------
    tuple of torch.Tensor
        ``(weight_ih [D, 3H], weight_hh [H, 3H], bias [3H])``, gate order (f, o, g), contiguous.
    """
    hidden_size = weight_hh.shape[1]
    if weight_hh.shape != (3 * hidden_size, hidden_size) or weight_ih.shape[0] != 3 * hidden_size:
        raise ValueError(f"Not fused dynamic-gate shapes: weight_ih {tuple(weight_ih.shape)}, weight_hh "
                         f"{tuple(weight_hh.shape)} (expected [3H, D] and [3H, H]).")
    return (reorder_gate_blocks(weight_ih, 0, FUSED_GATE_ORDER, NH_GATE_ORDER).t().contiguous(),
            reorder_gate_blocks(weight_hh, 0, FUSED_GATE_ORDER, NH_GATE_ORDER).t().contiguous(),
            reorder_gate_blocks(bias, 0, FUSED_GATE_ORDER, NH_GATE_ORDER).contiguous())


def _convert_state_dict(state_dict: Mapping[str, torch.Tensor], convert, prefix: str) -> "OrderedDict":
    keys = [prefix + key for key in DYNAMIC_GATE_KEYS]
    missing = [key for key in keys if key not in state_dict]
    if missing:
        raise KeyError(f"State dict has no {missing}; is it an EA-LSTM state dict?")
    converted = convert(*(state_dict[key] for key in keys))
    result = OrderedDict((key, value) for key, value in state_dict.items())
    result.update(zip(keys, converted))
    return result


def nh_state_dict_to_fused(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> "OrderedDict":
    """A state dict of NH's ``ealstm`` in the fused model's layout (other entries are passed through).

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        ``EALSTM.state_dict()`` of NH (or a saved ``model_epochNNN.pt``).
    prefix : str, optional
        Prefix of the model's keys inside ``state_dict`` (e.g. ``"model."``).

    Returns
    -------
    collections.OrderedDict
        The same keys; ``dynamic_gates.*`` converted by :func:`nh_dynamic_gates_to_fused`.
    """
    return _convert_state_dict(state_dict, nh_dynamic_gates_to_fused, prefix)


def fused_state_dict_to_nh(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> "OrderedDict":
    """A state dict of the fused EA-LSTM in NH ``ealstm``'s layout (inverse of :func:`nh_state_dict_to_fused`)."""
    return _convert_state_dict(state_dict, fused_dynamic_gates_to_nh, prefix)


# ------------------------------------------------------------------------------------------ initialisation
def nh_like_initial_dynamic_gates(input_size: int, hidden_size: int, initial_forget_bias: Optional[float],
                                  dtype: torch.dtype = torch.float32
                                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Initial dynamic-gate tensors (fused layout) drawn exactly as NH's ``ealstm`` draws them.

    NH initialises ``weight_ih`` ``[D, 3H]`` orthogonally, ``weight_hh`` as three identity blocks, the bias as zero
    and the forget-gate bias as ``initial_forget_bias``. The orthogonal draw is made on a float32 tensor of NH's
    shape and then converted, so the same random state gives the same weights as NH's ``ealstm``.

    Parameters
    ----------
    input_size : int
        Number of dynamic inputs ``D`` (after the dynamics embedding).
    hidden_size : int
        ``H``.
    initial_forget_bias : float, optional
        Value of the forget-gate bias (None: zero).
    dtype : torch.dtype, optional
        dtype of the returned tensors.

    Returns
    -------
    tuple of torch.Tensor
        ``(weight_ih [3H, D], weight_hh [3H, H], bias [3H])`` in the fused layout.
    """
    weight_ih = torch.empty(input_size, 3 * hidden_size, dtype=torch.float32)
    torch.nn.init.orthogonal_(weight_ih)
    weight_hh = torch.eye(hidden_size).repeat(1, 3)
    bias = torch.zeros(3 * hidden_size)
    if initial_forget_bias is not None:
        bias[:hidden_size] = initial_forget_bias
    return tuple(t.to(dtype) for t in nh_dynamic_gates_to_fused(weight_ih, weight_hh, bias))


# --------------------------------------------------------------------------------------------- fused call
def assemble_lstm_weights(input_gate_weight: torch.Tensor, input_gate_bias: torch.Tensor, weight_ih: torch.Tensor,
                          weight_hh: torch.Tensor, bias: torch.Tensor) -> List[torch.Tensor]:
    """The four weights of a standard one-layer LSTM that computes the EA-LSTM (see the module docstring).

    All four are views into one contiguous buffer in cuDNN's order (``w_ih, w_hh, b_ih, b_hh``), so that cuDNN can
    use them as its packed weight buffer. ``b_hh`` is fixed at zero: the single bias lives in ``b_ih``.

    Parameters
    ----------
    input_gate_weight : torch.Tensor
        ``W_i``, shape ``[H, S]``.
    input_gate_bias : torch.Tensor
        ``b_i``, shape ``[H]``.
    weight_ih, weight_hh, bias : torch.Tensor
        Dynamic gates in the fused layout: ``[3H, D]``, ``[3H, H]``, ``[3H]``, gate rows (f, g, o).

    Returns
    -------
    list of torch.Tensor
        ``[w_ih [4H, D+S], w_hh [4H, H], b_ih [4H], b_hh [4H]]``, PyTorch gate order (i, f, g, o).
    """
    hidden_size, n_static = input_gate_weight.shape
    n_dynamic = weight_ih.shape[1]
    lstm_weight_ih = torch.cat([F.pad(input_gate_weight, (n_dynamic, 0)), F.pad(weight_ih, (0, n_static))], dim=0)
    flat = torch.cat([lstm_weight_ih.reshape(-1), weight_hh.new_zeros(hidden_size * hidden_size),
                      weight_hh.reshape(-1), input_gate_bias, bias, bias.new_zeros(4 * hidden_size)])
    sizes = [lstm_weight_ih.numel(), 4 * hidden_size * hidden_size, 4 * hidden_size, 4 * hidden_size]
    w_ih, w_hh, b_ih, b_hh = flat.split(sizes)
    return [w_ih.view(4 * hidden_size, n_dynamic + n_static), w_hh.view(4 * hidden_size, hidden_size), b_ih, b_hh]


def fused_ealstm(x_d: torch.Tensor, x_s: torch.Tensor, input_gate_weight: torch.Tensor,
                 input_gate_bias: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                 bias: torch.Tensor, train: bool = True) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the EA-LSTM over a sequence in one fused LSTM call (zero initial states).

    Calls ``torch.lstm``, the ATen op behind ``nn.LSTM``: cuDNN on CUDA, oneDNN (float32/bfloat16) or ATen's C++
    loop (float64) on CPU. The static inputs are appended to every time step -- or, when there are more of them than
    cells, the input gate's pre-activation ``W_i x_s + b_i``, computed once per batch.

    Parameters
    ----------
    x_d : torch.Tensor
        Dynamic inputs, ``[T, B, D]`` (time-major, as NH's ``InputLayer`` returns them).
    x_s : torch.Tensor
        Static inputs, ``[B, S]``.
    input_gate_weight, input_gate_bias, weight_ih, weight_hh, bias : torch.Tensor
        See :func:`assemble_lstm_weights`.
    train : bool, optional
        Passed to the op (only matters for inter-layer dropout, which a one-layer LSTM does not have).

    Returns
    -------
    tuple of torch.Tensor
        ``(h [T, B, H], h_last [1, B, H], c_last [1, B, H])``.
    """
    seq_length, batch_size, _ = x_d.shape
    hidden_size = weight_hh.shape[1]
    if x_s.shape[1] > hidden_size:
        # more static inputs than cells (e.g. a one-hot basin id over hundreds of basins): compute the input gate's
        # pre-activation once and append it (H values per step, identity weights) instead of the S static inputs
        x_s = F.linear(x_s, input_gate_weight, input_gate_bias)
        input_gate_weight = torch.eye(hidden_size, dtype=x_s.dtype, device=x_s.device)
        input_gate_bias = x_s.new_zeros(hidden_size)
    lstm_input = torch.cat([x_d, x_s.unsqueeze(0).expand(seq_length, -1, -1)], dim=-1)
    weights = assemble_lstm_weights(input_gate_weight, input_gate_bias, weight_ih, weight_hh, bias)
    zeros = x_d.new_zeros(1, batch_size, hidden_size)
    if not x_d.is_cuda:
        return torch.lstm(lstm_input, (zeros, zeros), weights, True, 1, 0.0, train, False, False)
    with warnings.catch_warnings():
        # Should cuDNN not accept the packed buffer, it copies the weights into one (correct, ~1 MB) and warns.
        warnings.filterwarnings("ignore", message=_CUDNN_COMPACTION_WARNING)
        return torch.lstm(lstm_input, (zeros, zeros), weights, True, 1, 0.0, train, False, False)


def ealstm_cell_states(x_d: torch.Tensor, h: torch.Tensor, input_gate: torch.Tensor, weight_ih: torch.Tensor,
                       weight_hh: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The EA-LSTM's cell state at every time step, recomputed from the hidden states of a fused run.

    The fused kernel returns the final cell state only. Given ``h[t-1]`` for all ``t``, the forget gate and cell
    update of all time steps come from one matrix product each, and ``c[t] = f[t] * c[t-1] + i * g[t]`` is an
    element-wise recurrence (no matrix product inside the loop).

    Parameters
    ----------
    x_d : torch.Tensor
        Dynamic inputs, ``[T, B, D]``.
    h : torch.Tensor
        Hidden states of the run, ``[T, B, H]``.
    input_gate : torch.Tensor
        ``sigmoid(W_i x_s + b_i)``, ``[B, H]``.
    weight_ih, weight_hh, bias : torch.Tensor
        Dynamic gates in the fused layout (gate rows f, g, o).

    Returns
    -------
    torch.Tensor
        Cell states ``[T, B, H]``.
    """
    hidden_size = weight_hh.shape[1]
    h_previous = torch.cat([h.new_zeros(1, *h.shape[1:]), h[:-1]], dim=0)
    forget_and_cell = (F.linear(x_d, weight_ih[:2 * hidden_size], bias[:2 * hidden_size])
                       + F.linear(h_previous, weight_hh[:2 * hidden_size]))
    forget = torch.sigmoid(forget_and_cell[..., :hidden_size])
    update = input_gate * torch.tanh(forget_and_cell[..., hidden_size:])
    cell_states = []
    c = torch.zeros_like(input_gate)
    for update_t, forget_t in zip(update.unbind(0), forget.unbind(0)):  # unbind: indexing would make the
        c = torch.addcmul(update_t, forget_t, c)                         # backward quadratic in T
        cell_states.append(c)
    return torch.stack(cell_states, dim=0)
