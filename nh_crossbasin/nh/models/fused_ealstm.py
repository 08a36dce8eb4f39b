"""``model: xb_ealstm``: NH's Entity-Aware LSTM, its time loop in one fused kernel (cuDNN on a GPU, oneDNN on the CPU
for forward passes without gradients and small batches; for larger CPU training batches a three-gate recurrence
that is one autograd node with a hand-written backward)."""
from __future__ import annotations

import logging
from typing import Dict, Optional

import torch
import torch.nn as nn
from neuralhydrology.modelzoo.basemodel import BaseModel
from neuralhydrology.modelzoo.head import Regression, get_head
from neuralhydrology.modelzoo.inputlayer import InputLayer
from neuralhydrology.utils.config import Config

from nh_crossbasin.core.dropout_linear import dropout_linear
from nh_crossbasin.core.ealstm_sequence import BufferPool, ealstm_sequence
from nh_crossbasin.registry import register_model
from nh_crossbasin.core.ealstm_weights import (ealstm_cell_states, fused_ealstm, fused_state_dict_to_nh,
                                               nh_dynamic_gates_to_fused, nh_like_initial_dynamic_gates,
                                               nh_state_dict_to_fused)

LOGGER = logging.getLogger(__name__)

CELL_STATE_MODES = ("auto", "sequence", "last")
#: On the CPU, batches of at most this many samples take the fused kernel (oneDNN) also when gradients are
#: recorded (probes of the influence sampler); larger ones take the three-gate recurrence ``ealstm_sequence``. On a
#: 2-core AVX-512 EPYC the two cross between 28 and 30 samples (``benchmarks/RESULTS.md``).
CPU_FUSED_MAX_BATCH = 28


@register_model("xb_ealstm")
class FusedEALSTM(BaseModel):
    """Entity-Aware LSTM (Kratzert et al. 2019) with the maths of NH's ``ealstm``.

    The input gate depends on the static inputs only, ``i = sigmoid(W_i x_s + b_i)``; the forget gate, cell update
    and output gate on the dynamic inputs and ``h[t-1]``. On a GPU, instead of NH's Python loop over time steps, the
    sequence runs through one standard LSTM kernel (cuDNN) whose weights are assembled on every forward pass from the
    learnable blocks below and fixed zero blocks, with the static inputs (or, when they outnumber the cells, the input
    gate's pre-activation) appended to every time step (:mod:`nh_crossbasin.core.ealstm_weights`). On the CPU the
    same kernel (oneDNN) runs every forward pass without gradients (NH's validation and test) and batches of at most
    :data:`CPU_FUSED_MAX_BATCH` samples (the influence sampler's probes); larger training batches, where the
    kernel's fourth gate can cost more than NH's loop, run the three gates as one autograd node with its backward
    through time written out (:func:`nh_crossbasin.core.ealstm_sequence.ealstm_sequence`; its buffers are reused
    from one training step to the next and released by ``eval()``). On the CPU a regression head, with the output
    dropout before it, runs on the time-major hidden states (:func:`nh_crossbasin.core.dropout_linear.
    dropout_linear`): the same values and the same dropout mask as ``head(dropout(h_n))``, without a copy into
    sample-major order, and its backward does arithmetic only at the steps the loss reads (set
    :attr:`time_major_head` to ``False`` to run NH's modules instead, e.g. to compare the two).

    Accepts what NH's ``ealstm`` accepts: static, evolving and HydroATLAS attributes, one-hot basin ids
    (``use_basin_id_encoding``), ``statics_embedding`` / ``dynamics_embedding``, NH's NaN-handling input options,
    every head of ``get_head``, ``initial_forget_bias``, ``output_dropout`` and sequence-to-sequence output
    (``predict_last_n``). Parameters and ``module_parts`` carry NH's names: ``embedding_net`` (NH's ``InputLayer``),
    ``input_gate`` (``nn.Linear(S, H)``, identical to NH's), ``dynamic_gates`` (``weight_ih [3H, D]``,
    ``weight_hh [3H, H]``, ``bias [3H]``, gate rows forget, cell, output: NH's tensors transposed and reordered)
    and ``head``. Weights of NH's ``ealstm`` (a state dict or a ``model_epochNNN.pt``) load directly: they are
    converted on ``load_state_dict``. With the same random state, the initial weights equal NH's ``ealstm``'s.

    Output keys as NH's ``ealstm``: ``y_hat`` (and the head's other keys), ``h_n`` ``[B, T, H]`` and ``c_n``.
    The fused kernel and the three-gate recurrence (the static input gate computed once per batch) both return only the
    last cell state; the full cell-state sequence costs one more matrix product over the sequence and is computed
    according to :attr:`cell_states`:

    - ``"auto"`` (default) and ``"last"``: ``c_n`` is the last state ``[B, 1, H]`` (as NH's ``cudalstm``); NH never
      reads ``c_n`` in training, validation or test, so forward passes compute only what NH reads;
    - ``"sequence"``: always ``[B, T, H]`` (differentiable), as NH's ``ealstm`` returns it (for analyses of the
      cell states).

    Parameters
    ----------
    cfg : Config
        The run configuration.
    """

    module_parts = ['embedding_net', 'input_gate', 'dynamic_gates', 'head']

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Reject, before NH creates the run directory, a config that gives the input gate no static input."""
        if not (cfg.static_attributes or cfg.hydroatlas_attributes or cfg.evolving_attributes
                or cfg.use_basin_id_encoding):
            raise ValueError("model: xb_ealstm computes its input gate from static inputs only, and this config has "
                             "none: set 'static_attributes' (or 'hydroatlas_attributes', 'evolving_attributes', or "
                             "'use_basin_id_encoding: True').")

    def __init__(self, cfg: Config):
        super().__init__(cfg=cfg)
        self._hidden_size = cfg.hidden_size
        self.cell_states = "auto"
        self.time_major_head = True
        # the same modules, created in the same order (and drawing the same random numbers) as NH's EALSTM
        self.embedding_net = InputLayer(cfg)
        self.input_gate = nn.Linear(self.embedding_net.statics_output_size, cfg.hidden_size)
        self.dynamic_gates = FusedDynamicGates(cfg, input_size=self.embedding_net.dynamics_output_size)
        self.dropout = nn.Dropout(p=cfg.output_dropout)
        self.head = get_head(cfg=cfg, n_in=cfg.hidden_size, n_out=self.output_size)
        self._buffer_pool = BufferPool()

    def train(self, mode: bool = True) -> "FusedEALSTM":
        """Set training mode; ``eval()`` also releases the CPU training path's reused buffers."""
        if not mode:
            self._buffer_pool.clear()
        return super().train(mode)

    def _wants_cell_state_sequence(self) -> bool:
        if self.cell_states not in CELL_STATE_MODES:
            raise ValueError(f"cell_states must be one of {CELL_STATE_MODES}, got {self.cell_states!r}.")
        return self.cell_states == "sequence"

    def forward(self, data: Dict[str, torch.Tensor | Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """Perform a forward pass.

        Parameters
        ----------
        data : dict
            NH batch: ``x_d`` (dict of ``[B, T, 1]`` tensors), ``x_s`` and/or ``x_one_hot`` (``[B, S]``).

        Returns
        -------
        dict of torch.Tensor
            ``y_hat`` ``[B, T, n_targets]`` (plus the head's other outputs), ``h_n`` ``[B, T, H]`` and ``c_n``
            (``[B, T, H]`` or ``[B, 1, H]``, see :attr:`cell_states`).
        """
        x_d, x_s = self.embedding_net(data, concatenate_output=False)
        if x_s is None:
            raise ValueError('Need x_s or x_one_hot in forward pass.')
        gates = self.dynamic_gates
        input_gate_pre = None
        if x_d.is_cuda or not torch.is_grad_enabled() or x_d.shape[1] <= CPU_FUSED_MAX_BATCH:
            h, _, c_last = fused_ealstm(x_d, x_s, self.input_gate.weight, self.input_gate.bias, gates.weight_ih,
                                        gates.weight_hh, gates.bias, train=self.training)
        else:
            input_gate_pre = self.input_gate(x_s)
            h, c_last = ealstm_sequence(x_d, input_gate_pre, gates.weight_ih, gates.weight_hh, gates.bias,
                                        self._buffer_pool)
            c_last = c_last.unsqueeze(0)
        if self._wants_cell_state_sequence():
            if input_gate_pre is None:
                input_gate_pre = self.input_gate(x_s)
            c = ealstm_cell_states(x_d, h, torch.sigmoid(input_gate_pre), gates.weight_ih, gates.weight_hh,
                                   gates.bias)
        else:
            c = c_last
        pred = {'h_n': h.transpose(0, 1), 'c_n': c.transpose(0, 1)}
        pred.update(self._head_outputs(h))
        return pred

    def _head_outputs(self, h: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``head(dropout(h_n))``; on the CPU, a regression head runs time-major (:mod:`~nh_crossbasin.core.
        dropout_linear`: the same values and dropout mask, no copy into sample-major order, and a backward only over
        the steps the loss reads)."""
        head, dropout = self.head, self.dropout
        if (not getattr(self, "time_major_head", True) or h.device.type != "cpu" or type(head) is not Regression
                or type(dropout) is not nn.Dropout or not 0 <= dropout.p < 1 or not h.is_contiguous()):
            return head(dropout(h.transpose(0, 1)))
        linear, *activations = head.net
        mask_buffer = grad_buffer = None
        if self.training and torch.is_grad_enabled():       # reused memory in training (eval() releases it)
            if dropout.training and dropout.p > 0:
                mask_buffer = self._buffer_pool.take("dropout_mask", h.numel(), h.dtype, h.device)
            grad_buffer = self._buffer_pool.take("head_input_gradient", h.numel(), h.dtype, h.device)
        y = dropout_linear(h, dropout.p, dropout.training, linear.weight, linear.bias, mask_buffer, grad_buffer)
        for activation in activations:
            y = activation(y)
        return {'y_hat': y.transpose(0, 1).contiguous()}

    def nh_state_dict(self) -> Dict[str, torch.Tensor]:
        """This model's weights as a state dict for NH's ``ealstm`` (same keys, NH's dynamic-gate layout)."""
        return fused_state_dict_to_nh(self.state_dict())


class FusedDynamicGates(nn.Module):
    """Learnable blocks of the forget gate, cell update and output gate (fused layout, gate rows f, g, o).

    Initialised as NH's ``ealstm`` initialises its ``_DynamicGates``. A state dict in NH's layout
    (``weight_hh`` of shape ``[H, 3H]``) is converted when loaded.

    Parameters
    ----------
    cfg : Config
        The run configuration (``hidden_size``, ``initial_forget_bias``).
    input_size : int
        Number of dynamic inputs ``D`` after the dynamics embedding.
    """

    def __init__(self, cfg: Config, input_size: int):
        super().__init__()
        weight_ih, weight_hh, bias = nh_like_initial_dynamic_gates(input_size, cfg.hidden_size,
                                                                   cfg.initial_forget_bias,
                                                                   dtype=torch.get_default_dtype())
        self.weight_ih = nn.Parameter(weight_ih)
        self.weight_hh = nn.Parameter(weight_hh)
        self.bias = nn.Parameter(bias)
        self.register_load_state_dict_pre_hook(_convert_nh_layout_on_load)

    def extra_repr(self) -> str:
        three_h, input_size = self.weight_ih.shape
        return f"input_size={input_size}, hidden_size={three_h // 3}, gate_order=(forget, cell, output)"


def _convert_nh_layout_on_load(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook: convert NH ``ealstm`` dynamic gates to the fused layout in place."""
    key_hh = prefix + "weight_hh"
    weight_hh = state_dict.get(key_hh)
    hidden_size = module.weight_hh.shape[1]
    if weight_hh is None or tuple(weight_hh.shape) != (hidden_size, 3 * hidden_size):
        return
    keys = [prefix + name for name in ("weight_ih", "weight_hh", "bias")]
    if all(key in state_dict for key in keys):
        LOGGER.debug("Converting NH ealstm dynamic gates to the fused layout on load.")
        converted = nh_dynamic_gates_to_fused(*(state_dict[key] for key in keys))
        state_dict.update(zip(keys, converted))


def from_nh_ealstm(nh_model: nn.Module, cfg: Optional[Config] = None) -> FusedEALSTM:
    """A :class:`FusedEALSTM` with the weights of an NH ``ealstm`` model (same dtype and device).

    Parameters
    ----------
    nh_model : neuralhydrology.modelzoo.ealstm.EALSTM
        The NH model.
    cfg : Config, optional
        Config for the new model (default: the NH model's).

    Returns
    -------
    FusedEALSTM
    """
    reference = next(nh_model.parameters())
    model = FusedEALSTM(cfg if cfg is not None else nh_model.cfg).to(dtype=reference.dtype, device=reference.device)
    model.load_state_dict(nh_state_dict_to_fused(nh_model.state_dict()))
    return model


def to_nh_ealstm(model: FusedEALSTM, cfg: Optional[Config] = None) -> nn.Module:
    """An NH ``ealstm`` model with the weights of a :class:`FusedEALSTM` (same dtype and device).

    Parameters
    ----------
    model : FusedEALSTM
        The fused model.
    cfg : Config, optional
        Config for the NH model (default: the fused model's).

    Returns
    -------
    neuralhydrology.modelzoo.ealstm.EALSTM
    """
    from neuralhydrology.modelzoo.ealstm import EALSTM
    reference = next(model.parameters())
    nh_model = EALSTM(cfg if cfg is not None else model.cfg).to(dtype=reference.dtype, device=reference.device)
    nh_model.load_state_dict(model.nh_state_dict())
    return nh_model
