"""``DropoutLinear``: NH's ``head(dropout(h_n))`` time-major, with a backward over the steps that have gradient."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nh_crossbasin.core.dropout_linear import dropout_linear, dropout_mask_like

T, B, H, O = 9, 5, 7, 2


def leaves(seed: int = 0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=generator, dtype=dtype).requires_grad_()  # noqa: E731
    return make(T, B, H), make(O, H), make(O)


def reference(h, weight, bias, p, training):
    """What NH's regression head computes: the linear layer on dropout of the sample-major view, time-major again."""
    return F.linear(F.dropout(h.transpose(0, 1), p, training), weight, bias).transpose(0, 1)


def grad_pattern(kind: str, dtype=torch.float64) -> torch.Tensor:
    grad = torch.randn(T, B, O, generator=torch.Generator().manual_seed(3), dtype=dtype)
    keep = {"last": [T - 1], "last_three": [T - 3, T - 2, T - 1], "step_3_and_last": [3, T - 1],
            "every": list(range(T)), "none": [], "nan_at_2": [2, T - 1]}[kind]
    sparse = torch.zeros_like(grad)
    sparse[keep] = grad[keep]
    if kind == "nan_at_2":
        sparse[2, 1, 0] = float("nan")
    return sparse


@pytest.mark.parametrize("p, training", [(0.4, True), (0.0, True), (0.4, False)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_same_values_and_random_numbers_as_dropout_then_linear(p, training, dtype):
    h, weight, bias = leaves(dtype=dtype)
    torch.manual_seed(9)
    expected = reference(h, weight, bias, p, training)
    state_after_reference = torch.get_rng_state()
    torch.manual_seed(9)
    actual = dropout_linear(h, p, training, weight, bias)
    assert torch.equal(torch.get_rng_state(), state_after_reference), "the same random numbers should be drawn"
    assert actual.shape == (T, B, O)
    assert torch.allclose(actual, expected, rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=0)
    # negative control: another seed's mask must give other outputs, so the assertion above can fail
    if training and p > 0:
        torch.manual_seed(10)
        assert not torch.allclose(dropout_linear(h, p, training, weight, bias), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind", ["last", "last_three", "step_3_and_last", "every", "none", "nan_at_2"])
@pytest.mark.parametrize("p", [0.4, 0.0])
@pytest.mark.parametrize("buffers", [False, True])
def test_gradients_equal_autograd_of_dropout_then_linear(kind, p, buffers):
    h, weight, bias = leaves()
    grad_y = grad_pattern(kind)
    torch.manual_seed(4)
    expected = torch.autograd.grad(reference(h, weight, bias, p, True), (h, weight, bias), grad_y)
    mask_buffer = torch.full((T * B * H + 3,), 7.0, dtype=h.dtype) if buffers else None
    grad_buffer = torch.full((T * B * H + 3,), 7.0, dtype=h.dtype) if buffers else None   # stale values
    torch.manual_seed(4)
    y = dropout_linear(h, p, True, weight, bias, mask_buffer, grad_buffer)
    actual = torch.autograd.grad(y, (h, weight, bias), grad_y)
    for name, got, want in zip(("h", "weight", "bias"), actual, expected):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-14, equal_nan=True), name
    if buffers:
        assert actual[0].data_ptr() == grad_buffer.data_ptr(), "the gradient should be returned in the buffer"
    if kind == "step_3_and_last":
        # the test can fail: a backward that only looked at the last step would miss a non-zero gradient at step 3
        assert expected[0][3].abs().max() > 0
        assert not torch.allclose(torch.cat([torch.zeros_like(expected[0][:-1]), expected[0][-1:]]), expected[0])
    if kind == "nan_at_2":
        assert actual[0][2].isnan().any() and not actual[0][1].isnan().any()


def test_mask_matches_dropout_on_the_transposed_view_and_checks_its_buffer():
    h = torch.randn(T, B, H, dtype=torch.float64)
    h_n = h.transpose(0, 1)
    torch.manual_seed(2)
    expected = F.dropout(torch.ones_like(h_n), 0.3, True)
    torch.manual_seed(2)
    assert torch.equal(dropout_mask_like(h_n, 0.3), expected)
    with pytest.raises(ValueError, match="sizes and strides"):
        dropout_mask_like(h_n, 0.3, out=torch.empty(B, T, H, dtype=torch.float64))   # sample-major: other order
    with pytest.raises(ValueError, match="0 < p < 1"):
        dropout_mask_like(h_n, 1.0)


def test_bad_input_is_named():
    h, weight, bias = leaves()
    with pytest.raises(ValueError, match="contiguous time-major"):
        dropout_linear(h.transpose(0, 1), 0.4, True, weight, bias)
    with pytest.raises(ValueError, match="0 <= p < 1"):
        dropout_linear(h, 1.0, True, weight, bias)
