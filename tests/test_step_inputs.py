"""StepInputs and GateTrace on it (pure core): the rows ``[h[t-1], x[t], 1]``, the recurrence that writes into them,
and per-basin weight gradients from one product, against autograd (float64)."""
from __future__ import annotations

import pytest
import torch

from nh_crossbasin.core.ealstm_sequence import BufferPool
from nh_crossbasin.core.recurrence import GateTrace
from nh_crossbasin.core.step_inputs import StepInputs
from test_ealstm_weights import random_parameters, reference_ealstm

T, B, D, S, H = 7, 6, 3, 4, 5
ROWS = slice(1, 4)            # one "basin": samples 1, 2, 3


def _data(seed=1):
    generator = torch.Generator().manual_seed(seed)
    x_d = torch.randn(T, B, D, generator=generator, dtype=torch.float64)
    x_s = torch.randn(B, S, generator=generator, dtype=torch.float64)
    grad_h = torch.randn(B, T, H, generator=generator, dtype=torch.float64)
    return x_d, x_s, grad_h


def _autograd_ealstm(x_d, x_s, params, grad_h, rows):
    """Gradients of Σ grad_h · h over the samples ``rows`` (autograd through the reference loop)."""
    h, _ = reference_ealstm(x_d, x_s, *params)
    loss = (grad_h[rows] * h.transpose(0, 1)[rows]).sum()
    return torch.autograd.grad(loss, params), h.detach().transpose(0, 1)


def _nan_buffers():
    pool = BufferPool(size=1)

    def buffers(role, numel):
        return pool.take(role, numel, torch.float64, torch.device("cpu")).fill_(float("nan"))
    return buffers


@pytest.mark.parametrize("buffers", [None, "nan"], ids=["new-memory", "stale-nan-buffers"])
def test_ealstm_on_step_inputs_equals_autograd(buffers):
    params = random_parameters(n_dynamic=D, n_static=S, hidden=H)
    x_d, x_s, grad_h = _data()
    expected, h_ref = _autograd_ealstm(x_d, x_s, params, grad_h, ROWS)
    inputs = StepInputs(x_d, H, _nan_buffers() if buffers == "nan" else None)
    detached = [p.detach() for p in params]
    run = GateTrace.ealstm(x_d, x_s, *detached, inputs=inputs)
    assert run.h.data_ptr() == inputs.h.data_ptr()                   # the hidden states are written into the rows
    assert torch.allclose(run.h, h_ref, rtol=0, atol=1e-12)
    delta, d_gate = run.backward(grad_h * torch.isin(torch.arange(B), torch.arange(B)[ROWS])[:, None, None],
                                 overwrite=True)
    inputs.seal()
    d_hh, d_ih, d_b = inputs.weight_gradients(delta, ROWS)
    for got, want in zip((d_ih, d_hh, d_b), expected[2:]):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    assert torch.allclose(d_gate.t() @ x_s, expected[0], rtol=1e-10, atol=1e-12)    # the static input gate


def test_the_rows_hold_previous_states_inputs_and_ones_after_seal():
    params = [p.detach() for p in random_parameters(n_dynamic=D, n_static=S, hidden=H)]
    x_d, x_s, grad_h = _data()
    inputs = StepInputs(x_d, H)
    run = GateTrace.ealstm(x_d, x_s, *params, inputs=inputs)
    h = run.h.clone()
    # before seal, each sample's first row holds the previous sample's last state
    assert torch.equal(inputs.z[1:, 0, :H], h[:-1, -1])
    run.backward(grad_h)
    inputs.seal()
    assert torch.equal(inputs.z[:, 1:, :H], h[:, :-1])
    assert torch.equal(inputs.z[:, 0, :H], torch.zeros(B, H, dtype=torch.float64))
    assert torch.equal(inputs.z[..., H:-1], x_d.transpose(0, 1))
    assert torch.equal(inputs.z[..., -1], torch.ones(B, T, dtype=torch.float64))


def test_a_negative_control_without_seal_the_gradients_are_wrong():
    """The first rows must be zeroed after the backward: unsealed rows are refused, and rows left holding the
    previous sample's state (the check bypassed) give another recurrent gradient."""
    params = random_parameters(n_dynamic=D, n_static=S, hidden=H)
    x_d, x_s, grad_h = _data()
    expected, _ = _autograd_ealstm(x_d, x_s, params, grad_h, ROWS)
    inputs = StepInputs(x_d, H)
    run = GateTrace.ealstm(x_d, x_s, *[p.detach() for p in params], inputs=inputs)
    mask = torch.isin(torch.arange(B), torch.arange(B)[ROWS])[:, None, None]
    delta, _ = run.backward(grad_h * mask, overwrite=True)
    with pytest.raises(RuntimeError, match="seal"):
        inputs.weight_gradients(delta, ROWS)
    inputs.sealed = True
    d_hh, _, _ = inputs.weight_gradients(delta, ROWS)
    assert not torch.allclose(d_hh, expected[3], rtol=1e-6, atol=1e-8)


def test_lstm_on_step_inputs_equals_nn_lstm():
    torch.manual_seed(3)
    lstm = torch.nn.LSTM(D, H).double()
    x_d, _, grad_h = _data(seed=4)
    h, _ = lstm(x_d)
    mask = torch.isin(torch.arange(B), torch.arange(B)[ROWS])[:, None, None]
    expected = torch.autograd.grad((grad_h * mask * h.transpose(0, 1)).sum(), list(lstm.parameters()))
    inputs = StepInputs(x_d, H, _nan_buffers())
    weights = [p.detach() for p in (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)]
    run = GateTrace.lstm(x_d, *weights, inputs=inputs)
    assert torch.allclose(run.h, h.detach().transpose(0, 1), rtol=0, atol=1e-12)
    delta, _ = run.backward(grad_h * mask, overwrite=True)
    inputs.seal()
    d_hh, d_ih, d_b = inputs.weight_gradients(delta, ROWS)
    for got, want in zip((d_ih, d_hh, d_b, d_b), expected):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_backward_from_the_last_steps_only():
    """``grad_h`` of the last T' steps equals the full gradient with zeros before; T' outside 1..T is refused."""
    params = [p.detach() for p in random_parameters(n_dynamic=D, n_static=S, hidden=H)]
    x_d, x_s, grad_h = _data()
    full = grad_h.clone()
    full[:, :-2] = 0
    want = GateTrace.ealstm(x_d, x_s, *params).backward(full)
    got = GateTrace.ealstm(x_d, x_s, *params).backward(grad_h[:, -2:])
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)
    other = GateTrace.ealstm(x_d, x_s, *params).backward(grad_h[:, -3:])       # a third step: other numbers
    assert not torch.allclose(other[0], want[0])
    for bad in (grad_h[:, :0], torch.zeros(B, T + 1, H, dtype=torch.float64)):
        with pytest.raises(ValueError, match="grad_h covers"):
            GateTrace.ealstm(x_d, x_s, *params).backward(bad)


def test_a_wrong_buffer_is_refused():
    x_d, _, _ = _data()
    with pytest.raises(ValueError, match="step_inputs"):
        StepInputs(x_d, H, lambda role, numel: torch.empty(numel, dtype=torch.float32))
    with pytest.raises(ValueError, match="step_inputs"):
        StepInputs(x_d, H, lambda role, numel: torch.empty(numel - 1, dtype=torch.float64))
