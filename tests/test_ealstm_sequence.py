"""``ealstm_sequence`` (xb_ealstm's CPU training path: one autograd node, hand-written backward, reused buffers)
against the autograd loop and NH's ``ealstm``; the buffer pool never hands out memory that is still in use."""
from __future__ import annotations

import copy
import io

import pytest
import torch

from nh_crossbasin.core import ealstm_sequence as sequence_module
from nh_crossbasin.core.ealstm_sequence import BufferPool, ealstm_sequence
from nh_crossbasin.core.recurrence import GateTrace, ealstm_loop
from nh_crossbasin.nh.models.fused_ealstm import CPU_FUSED_MAX_BATCH

from test_ealstm_model import assert_relatively_close, make_batch, make_config, paired_models

T, B, D, H = 17, 5, 4, 6


def random_inputs(seed: int = 0, n_steps: int = T, n_samples: int = B):
    generator = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()
    return [leaf(n_steps, n_samples, D), leaf(n_samples, H), leaf(3 * H, D),
            0.5 * leaf(3 * H, H).detach().requires_grad_(), leaf(3 * H)]


def gradients(run, inputs, uses_h: bool, uses_c: bool):
    h, c_last = run(*inputs)
    loss = 0
    if uses_h:
        loss = loss + (h.sin() * torch.linspace(0, 1, h.shape[0], dtype=h.dtype)[:, None, None]).sum()
    if uses_c:
        loss = loss + (c_last ** 2).sum()
    grads = torch.autograd.grad(loss, inputs)
    return [h.detach(), c_last.detach(), *grads]


def reference(x_d, input_gate_pre, weight_ih, weight_hh, bias):
    return ealstm_loop(x_d, torch.sigmoid(input_gate_pre), weight_ih, weight_hh, bias)


@pytest.mark.parametrize("uses_h, uses_c", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("pooled", [False, True])
def test_outputs_and_every_gradient_match_the_autograd_loop(uses_h, uses_c, pooled):
    """float64, 1e-10 relative: h, c_last and the gradients of the inputs, the input gate and the three weights,
    whether the loss reads the hidden states, the last cell state or both."""
    inputs = random_inputs()
    pool = BufferPool() if pooled else None
    expected = gradients(reference, inputs, uses_h, uses_c)
    for _ in range(2):   # the second call reuses the pool's buffer
        actual = gradients(lambda *a: ealstm_sequence(*a, pool=pool), inputs, uses_h, uses_c)
        for what, a, e in zip(["h", "c_last", "x_d", "input gate", "W_ih", "W_hh", "bias"], actual, expected):
            assert_relatively_close(a, e, 1e-10, what)


@pytest.mark.parametrize("n_steps, n_samples", [(1, 3), (2, 1)])
def test_one_step_and_one_sample_match_the_autograd_loop(n_steps, n_samples):
    inputs = random_inputs(5, n_steps, n_samples)
    expected = gradients(reference, inputs, True, True)
    for a, e in zip(gradients(lambda *a: ealstm_sequence(*a, pool=BufferPool()), inputs, True, True), expected):
        assert_relatively_close(a, e, 1e-10, "edge shapes")


def test_a_wrong_backward_fails_the_comparison(monkeypatch):
    """Negative control: dropping the last cell state's gradient must break the comparison above."""
    original = GateTrace.backward
    monkeypatch.setattr(GateTrace, "backward", lambda self, grad_h, grad_c_last=None, **options:
                        original(self, grad_h, None, **options))
    inputs = random_inputs()
    actual = gradients(ealstm_sequence, inputs, True, True)
    expected = gradients(reference, inputs, True, True)
    assert (actual[5] - expected[5]).abs().max() > 1e-6 * expected[5].abs().max()


@pytest.mark.parametrize("order", ["ifgo", "fgo"])
def test_gate_trace_overwriting_its_gates_gives_the_same_deltas(order):
    generator = torch.Generator().manual_seed(3)
    n_gates = len(order)
    pre = torch.randn(T, B, n_gates * H, generator=generator, dtype=torch.float64)
    weight_hh = 0.5 * torch.randn(n_gates * H, H, generator=generator, dtype=torch.float64)
    input_gate = torch.rand(B, H, generator=generator, dtype=torch.float64) if order == "fgo" else None
    grad_h = torch.randn(B, T, H, generator=generator, dtype=torch.float64)
    traces = [GateTrace(pre.clone().transpose(0, 1), weight_hh, order, input_gate) for _ in range(2)]
    inputs = torch.randn(B, T, 3, generator=generator, dtype=torch.float64)
    kept = traces[0].backward(grad_h, inputs=inputs)
    overwritten = traces[1].backward(grad_h, overwrite=True)
    for a, e in zip(overwritten, kept):
        if e is not None:
            assert torch.equal(a, e)
    # the inputs' weight gradient, summed step by step, is Σ z[t]ᵀ δ[t] of the returned deltas
    expected = torch.einsum("btk,btg->kg", inputs, kept[0])
    assert_relatively_close(traces[0].input_weight_gradient, expected, 1e-12, "input weight gradient")
    assert traces[1].input_weight_gradient is None
    with pytest.raises(RuntimeError, match="overwrite=True"):
        traces[1].backward(grad_h)


def direct_recurrence(pre, weight_hh, order, input_gate):
    """Plain per-step LSTM/EA-LSTM maths (torch.tanh, no trace): h, c and o of every step, sample-major."""
    hidden = weight_hh.shape[1]
    h = pre.new_zeros(pre.shape[1], hidden)
    c = torch.zeros_like(h)
    hs, cs, os = [], [], []
    for pre_t in pre.unbind(0):
        gates = dict(zip(order, (pre_t + h @ weight_hh.t()).split(hidden, dim=1)))
        i = torch.sigmoid(gates["i"]) if order == "ifgo" else input_gate
        o = torch.sigmoid(gates["o"])
        c = torch.sigmoid(gates["f"]) * c + i * torch.tanh(gates["g"])
        h = o * torch.tanh(c)
        hs.append(h), cs.append(c), os.append(o)
    return [torch.stack(x, dim=1) for x in (hs, cs, os)]


@pytest.mark.parametrize("order", ["ifgo", "fgo"])
def test_gate_trace_keeps_doubled_cell_states_and_dh_dc(order):
    """The trace's states against the plain recurrence (float64, 1e-12): ``c2 = 2c``, ``dh_dc = o (1 − tanh² c)``;
    a ``pre`` whose g rows were doubled (``g_doubled``) gives bit-identical states, an undoubled one does not."""
    from nh_crossbasin.core.recurrence import double_g_rows
    generator = torch.Generator().manual_seed(4)
    n_gates = len(order)
    x = torch.randn(T, B, D, generator=generator, dtype=torch.float64)
    weight_ih = torch.randn(n_gates * H, D, generator=generator, dtype=torch.float64)
    weight_hh = 0.5 * torch.randn(n_gates * H, H, generator=generator, dtype=torch.float64)
    input_gate = torch.rand(B, H, generator=generator, dtype=torch.float64) if order == "fgo" else None
    pre = x @ weight_ih.t()
    h, c, o = direct_recurrence(pre, weight_hh, order, input_gate)
    trace = GateTrace(pre.clone().transpose(0, 1), weight_hh, order, input_gate)
    for what, actual, expected in [("h", trace.h, h), ("c2", trace.c2, 2 * c),
                                   ("dh_dc", trace.dh_dc, o * (1 - torch.tanh(c) ** 2))]:
        assert_relatively_close(actual, expected, 1e-12, what)
    doubled = GateTrace((x @ double_g_rows(weight_ih, order).t()).transpose(0, 1), weight_hh, order, input_gate,
                        g_doubled=True)
    for name in ("h", "c2", "dh_dc", "act"):
        assert torch.equal(getattr(doubled, name), getattr(trace, name)), name
    undoubled = GateTrace(pre.clone().transpose(0, 1), weight_hh, order, input_gate, g_doubled=True)
    assert (undoubled.h - trace.h).abs().max() > 1e-3


def test_one_backward_per_forward_and_in_place_changes_are_caught():
    inputs = random_inputs()
    h, _ = ealstm_sequence(*inputs)
    h.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass per forward pass"):
        h.sum().backward()
    h, _ = ealstm_sequence(*inputs)
    loss = h.pow(2).sum()
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_a_forward_pass_without_a_backward_through_the_node_frees_its_buffers():
    """Gradients of something after the recurrence only (a head's weights, as the per-basin probe loop asks for
    ``xb_influence_params: [head]``): the node's backward never runs, and dropping the outputs must still free the
    trace and output buffers for the next pass. Before the fix the trace held a view of the returned hidden states,
    a cycle through the node that no garbage collection broke: every such pass leaked its buffers, and the pool
    handed out fresh memory from the third pass on."""
    inputs = random_inputs()
    weight = torch.randn(H, dtype=torch.float64, requires_grad=True)
    pool = BufferPool(size=2)
    for _ in range(4):
        h, c_last = ealstm_sequence(*inputs, pool=pool)
        torch.autograd.grad((h[-1] @ weight).sum(), [weight])
        del h, c_last
    assert len(pool) == 2, "one trace and one output buffer, reused by every pass"
    assert all(sequence_module.is_unshared(buffer) for kept in pool._buffers.values() for buffer in kept)


def test_pool_reuses_free_memory_only():
    pool = BufferPool(size=2)
    cpu = torch.device("cpu")
    first = pool.take("a", 100, torch.float64, cpu)
    address = first.data_ptr()
    second = pool.take("a", 100, torch.float64, cpu)
    assert second.data_ptr() != address, "a buffer still referenced was handed out again"
    assert pool.take("b", 10, torch.float64, cpu).data_ptr() not in (address, second.data_ptr())
    del first
    assert pool.take("a", 80, torch.float64, cpu).data_ptr() == address
    assert pool.take("a", 100, torch.float32, cpu).data_ptr() != address
    assert len(pool) == 3
    pool.clear()
    assert len(pool) == 0


def train_step(model, data):
    prediction = model(data)
    (prediction["y_hat"] ** 2).mean().backward()
    return prediction


def test_model_reuses_its_buffers_but_never_overwrites_outputs_a_caller_holds(monkeypatch):
    """The CPU training path reuses its trace buffer after each backward and takes turns between two output buffers
    while the caller holds the last predictions (as NH's training loop does); a prediction kept for longer is never
    overwritten. Negative control: a pool that ignores
    references overwrites it."""
    cfg = make_config()
    _, model = paired_models(cfg, torch.float64, "cpu")
    model.cell_states = "auto"
    batches = [make_batch(cfg, batch_size=CPU_FUSED_MAX_BATCH + 8, seed=seed) for seed in range(4)]
    kept = train_step(model, batches[0])
    kept_h = kept["h_n"].detach().clone()
    addresses = []
    prediction = None
    for data in batches[1:]:
        prediction = train_step(model, data)     # the previous prediction is dropped after this call, as in NH
        addresses.append(prediction["h_n"].data_ptr())
    assert torch.equal(kept["h_n"], kept_h)
    assert addresses[2] == addresses[0] != addresses[1], "two output buffers should take turns"
    assert len(model._buffer_pool) == 4, ("one trace buffer and one for the head's input gradient, each reused after "
                                          "each backward, and two output buffers")

    monkeypatch.setattr(sequence_module, "is_unshared", lambda buffer: True)
    model.eval().train()
    kept = train_step(model, batches[0])
    kept_h = kept["h_n"].detach().clone()
    train_step(model, batches[1])
    assert not torch.equal(kept["h_n"], kept_h), "the negative control should overwrite the kept output"


def test_eval_copy_and_pickle_drop_the_buffers():
    cfg = make_config()
    _, model = paired_models(cfg, torch.float64, "cpu")
    train_step(model, make_batch(cfg, batch_size=CPU_FUSED_MAX_BATCH + 8))
    assert len(model._buffer_pool) == 3       # one trace buffer, one for the outputs, one for the head's gradient
    assert len(copy.deepcopy(model)._buffer_pool) == 0
    stream = io.BytesIO()
    torch.save(model, stream)
    stream.seek(0)
    assert len(torch.load(stream, weights_only=False)._buffer_pool) == 0
    model.eval()
    assert len(model._buffer_pool) == 0


def test_without_storage_counts_the_pool_never_reuses(monkeypatch):
    monkeypatch.setattr(sequence_module, "_storage_use_count", None)
    pool = BufferPool()
    first = pool.take("a", 10, torch.float64, torch.device("cpu")).data_ptr()
    assert pool.take("a", 10, torch.float64, torch.device("cpu")).data_ptr() != first
    inputs = random_inputs()
    expected = gradients(reference, inputs, True, True)
    for a, e in zip(gradients(lambda *a: ealstm_sequence(*a, pool=pool), inputs, True, True), expected):
        assert_relatively_close(a, e, 1e-10, "without storage counts")
