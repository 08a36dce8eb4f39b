"""Pure core of the fused EA-LSTM: layouts, conversion, assembled weights, the fused call and cell states."""
from __future__ import annotations

import math

import pytest
import torch

from nh_crossbasin.core.ealstm_weights import (FUSED_GATE_ORDER, NH_GATE_ORDER, assemble_lstm_weights,
                                               ealstm_cell_states, fused_dynamic_gates_to_nh, fused_ealstm,
                                               fused_state_dict_to_nh, nh_dynamic_gates_to_fused,
                                               nh_like_initial_dynamic_gates, nh_state_dict_to_fused,
                                               reorder_gate_blocks)


def reference_ealstm(x_d, x_s, w_i, b_i, weight_ih, weight_hh, bias):
    """Kratzert et al. (2019) eqs. 7-12 as an explicit loop, with the fused layout (gate rows f, g, o)."""
    hidden = weight_hh.shape[1]
    i = torch.sigmoid(x_s @ w_i.t() + b_i)
    h = x_d.new_zeros(x_d.shape[1], hidden)
    c = x_d.new_zeros(x_d.shape[1], hidden)
    hs, cs = [], []
    for x_t in x_d:
        gates = x_t @ weight_ih.t() + h @ weight_hh.t() + bias
        f, g, o = gates.split(hidden, dim=-1)
        c = torch.sigmoid(f) * c + i * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
        cs.append(c)
    return torch.stack(hs), torch.stack(cs)


def random_parameters(n_dynamic=3, n_static=4, hidden=5, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return (0.5 * torch.randn(*shape, generator=generator, dtype=dtype)).requires_grad_()

    return (draw(hidden, n_static), draw(hidden), draw(3 * hidden, n_dynamic), draw(3 * hidden, hidden),
            draw(3 * hidden))


def test_hand_computed_two_steps():
    # H = D = S = 1: every gate is a scalar, so the recursion can be written out by hand.
    w_i, b_i = torch.tensor([[0.5]], dtype=torch.float64), torch.tensor([0.1], dtype=torch.float64)
    w_f, w_g, w_o = 0.3, -0.2, 0.7           # dynamic input weights
    u_f, u_g, u_o = 0.4, 0.6, -0.5           # recurrent weights
    b_f, b_g, b_o = 1.0, 0.0, -0.3
    weight_ih = torch.tensor([[w_f], [w_g], [w_o]], dtype=torch.float64)
    weight_hh = torch.tensor([[u_f], [u_g], [u_o]], dtype=torch.float64)
    bias = torch.tensor([b_f, b_g, b_o], dtype=torch.float64)
    x_d = torch.tensor([[[2.0]], [[-1.0]]], dtype=torch.float64)       # [T=2, B=1, D=1]
    x_s = torch.tensor([[1.5]], dtype=torch.float64)

    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    i = sig(0.5 * 1.5 + 0.1)
    c1 = i * math.tanh(w_g * 2.0 + b_g)                                  # c0 = h0 = 0
    h1 = sig(w_o * 2.0 + b_o) * math.tanh(c1)
    c2 = sig(w_f * -1.0 + u_f * h1 + b_f) * c1 + i * math.tanh(w_g * -1.0 + u_g * h1 + b_g)
    h2 = sig(w_o * -1.0 + u_o * h1 + b_o) * math.tanh(c2)

    h, h_last, c_last = fused_ealstm(x_d, x_s, w_i, b_i, weight_ih, weight_hh, bias)
    assert h[:, 0, 0].tolist() == pytest.approx([h1, h2], rel=1e-12)
    assert h_last.item() == pytest.approx(h2, rel=1e-12)
    assert c_last.item() == pytest.approx(c2, rel=1e-12)
    c = ealstm_cell_states(x_d, h, torch.sigmoid(x_s @ w_i.t() + b_i), weight_ih, weight_hh, bias)
    assert c[:, 0, 0].tolist() == pytest.approx([c1, c2], rel=1e-12)


def test_assembled_weights_have_zero_blocks_and_share_one_buffer():
    w_i, b_i, weight_ih, weight_hh, bias = random_parameters(n_dynamic=3, n_static=4, hidden=5)
    w_ih, w_hh, b_ih, b_hh = assemble_lstm_weights(w_i, b_i, weight_ih, weight_hh, bias)
    hidden = 5
    assert w_ih.shape == (20, 7) and w_hh.shape == (20, 5) and b_ih.shape == (20,) and b_hh.shape == (20,)
    # input gate rows (PyTorch's first block): static columns only, no recurrence
    assert torch.equal(w_ih[:hidden, :3], torch.zeros(hidden, 3))
    assert torch.equal(w_ih[:hidden, 3:], w_i)
    assert torch.equal(w_hh[:hidden], torch.zeros(hidden, hidden))
    # forget, cell, output rows: dynamic columns and recurrence only
    assert torch.equal(w_ih[hidden:, 3:], torch.zeros(3 * hidden, 4))
    assert torch.equal(w_ih[hidden:, :3], weight_ih)
    assert torch.equal(w_hh[hidden:], weight_hh)
    assert torch.equal(b_ih, torch.cat([b_i, bias])) and torch.equal(b_hh, torch.zeros(20, dtype=b_hh.dtype))
    # one contiguous buffer in the order w_ih, w_hh, b_ih, b_hh (cuDNN's packed layout)
    offsets = [t.storage_offset() for t in (w_ih, w_hh, b_ih, b_hh)]
    assert offsets == [0, 140, 240, 260]
    assert len({t.untyped_storage().data_ptr() for t in (w_ih, w_hh, b_ih, b_hh)}) == 1


@pytest.mark.parametrize("dtype, tolerance, n_static", [(torch.float64, 1e-10, 4), (torch.float32, 1e-4, 4),
                                                        (torch.float64, 1e-10, 11)])
def test_fused_call_matches_explicit_loop_with_gradients(dtype, tolerance, n_static):
    """n_static 11 > hidden 6: the input gate's pre-activation is computed once and appended instead of x_s."""
    parameters = random_parameters(n_dynamic=3, n_static=n_static, hidden=6, dtype=dtype, seed=1)
    generator = torch.Generator().manual_seed(2)
    x_d = torch.randn(40, 7, 3, generator=generator, dtype=dtype)
    x_s = torch.randn(7, n_static, generator=generator, dtype=dtype)

    h_ref, c_ref = reference_ealstm(x_d, x_s, *parameters)
    (h_ref.pow(2).sum() + c_ref.sum()).backward()
    grads_ref = [p.grad.clone() for p in parameters]
    for p in parameters:
        p.grad = None

    h, h_last, c_last = fused_ealstm(x_d, x_s, *parameters)
    i = torch.sigmoid(x_s @ parameters[0].t() + parameters[1])
    c = ealstm_cell_states(x_d, h, i, *parameters[2:])
    (h.pow(2).sum() + c.sum()).backward()

    torch.testing.assert_close(h, h_ref, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(c, c_ref, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(h_last[0], h_ref[-1], rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(c_last[0], c_ref[-1], rtol=tolerance, atol=tolerance)
    for p, grad_ref in zip(parameters, grads_ref):
        scale = grad_ref.abs().max().item()
        torch.testing.assert_close(p.grad, grad_ref, rtol=tolerance, atol=tolerance * scale)


def test_gate_conversion_round_trip_and_layout():
    hidden, n_dynamic = 4, 3
    generator = torch.Generator().manual_seed(3)
    nh = (torch.randn(n_dynamic, 3 * hidden, generator=generator), torch.randn(hidden, 3 * hidden,
                                                                                generator=generator),
          torch.randn(3 * hidden, generator=generator))
    fused = nh_dynamic_gates_to_fused(*nh)
    assert [tuple(t.shape) for t in fused] == [(12, 3), (12, 4), (12,)]
    # NH's column block k of gate `name` is the fused row block of the same gate
    for name in NH_GATE_ORDER:
        nh_block = slice(NH_GATE_ORDER.index(name) * hidden, (NH_GATE_ORDER.index(name) + 1) * hidden)
        fused_block = slice(FUSED_GATE_ORDER.index(name) * hidden, (FUSED_GATE_ORDER.index(name) + 1) * hidden)
        assert torch.equal(fused[0][fused_block], nh[0][:, nh_block].t())
        assert torch.equal(fused[1][fused_block], nh[1][:, nh_block].t())
        assert torch.equal(fused[2][fused_block], nh[2][nh_block])
    for original, back in zip(nh, fused_dynamic_gates_to_nh(*fused)):
        assert torch.equal(original, back)
    with pytest.raises(ValueError, match="NH ealstm"):
        nh_dynamic_gates_to_fused(*fused)
    with pytest.raises(ValueError, match="fused"):
        fused_dynamic_gates_to_nh(*nh)


def test_state_dict_conversion_round_trip_keeps_other_entries():
    hidden = 3
    state = {"input_gate.weight": torch.randn(hidden, 2), "input_gate.bias": torch.randn(hidden),
             "dynamic_gates.weight_ih": torch.randn(4, 3 * hidden),
             "dynamic_gates.weight_hh": torch.randn(hidden, 3 * hidden),
             "dynamic_gates.bias": torch.randn(3 * hidden), "head.net.0.weight": torch.randn(1, hidden)}
    fused = nh_state_dict_to_fused(state)
    assert list(fused) == list(state)
    assert fused["dynamic_gates.weight_hh"].shape == (3 * hidden, hidden)
    assert fused["input_gate.weight"] is state["input_gate.weight"]
    back = fused_state_dict_to_nh(fused)
    assert all(torch.equal(back[k], v) for k, v in state.items())
    with pytest.raises(KeyError, match="EA-LSTM"):
        nh_state_dict_to_fused({"lstm.weight_ih_l0": torch.zeros(1)})


def test_reorder_gate_blocks():
    t = torch.arange(6.)
    assert reorder_gate_blocks(t, 0, ("a", "b", "c"), ("c", "a", "b")).tolist() == [4, 5, 0, 1, 2, 3]


def test_initial_dynamic_gates_follow_nh():
    torch.manual_seed(0)
    weight_ih, weight_hh, bias = nh_like_initial_dynamic_gates(input_size=5, hidden_size=8, initial_forget_bias=3.0)
    nh_weight_ih, nh_weight_hh, nh_bias = fused_dynamic_gates_to_nh(weight_ih, weight_hh, bias)
    # NH: orthogonal weight_ih [D, 3H] (orthonormal rows since D < 3H), three identity blocks, forget bias
    torch.testing.assert_close(nh_weight_ih @ nh_weight_ih.t(), torch.eye(5), atol=1e-5, rtol=0)
    assert torch.equal(nh_weight_hh, torch.eye(8).repeat(1, 3))
    assert torch.equal(weight_hh, torch.eye(8).repeat(3, 1))
    assert torch.equal(bias[:8], torch.full((8,), 3.0)) and torch.equal(bias[8:], torch.zeros(16))
    # same draw as NH's nn.init.orthogonal_ on a [D, 3H] float32 tensor
    torch.manual_seed(0)
    expected = torch.nn.init.orthogonal_(torch.empty(5, 24))
    assert torch.equal(nh_weight_ih, expected)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-15), (torch.float32, 5e-7)])
def test_tanh_of_half_is_tanh(dtype, tolerance):
    """``GateTrace``'s tanh (``2 σ(2x) − 1`` of the doubled argument) against ``torch.tanh``, over and beyond the
    range of cell states."""
    from nh_crossbasin.core.recurrence import tanh_of_half
    x = torch.linspace(-30, 30, 4001, dtype=dtype)
    out = torch.empty_like(x)
    assert tanh_of_half(2 * x, out=out) is out
    torch.testing.assert_close(out, torch.tanh(x), rtol=0, atol=tolerance)
    # negative control: given x itself instead of 2x, it is a different function
    assert (tanh_of_half(x, torch.empty_like(x)) - torch.tanh(x)).abs().max() > 0.1
