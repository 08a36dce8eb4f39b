"""Pure influence and weighting maths against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nh_crossbasin.core.influence import CountSketch, influence_from_gradients, lookahead_from_losses, smooth
from nh_crossbasin.core.weights import (basin_draw_probabilities, basin_weights, effective_number, entropy,
                                        robust_scale, target_weights)


def test_dot_and_cosine_influence_by_hand():
    g = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    dot = influence_from_gradients(g[:2], g, "dot")
    assert dot.tolist() == [[1.0, 3.0, 0.0], [3.0, 25.0, 0.0]]
    cos = influence_from_gradients(g[:2], g, "cosine")
    assert np.allclose(cos.numpy(), [[1.0, 0.6, 0.0], [0.6, 1.0, 0.0]])  # zero gradient: cosine 0


def test_non_finite_gradient_rows_give_nan_rows_and_columns():
    g = torch.tensor([[1.0, 2.0], [float("nan"), 1.0], [2.0, 0.0]])
    influence = influence_from_gradients(g, g, "dot")
    assert torch.isnan(influence[1]).all() and torch.isnan(influence[:, 1]).all()
    assert influence[0, 2].item() == 2.0


def test_lookahead_and_smoothing_by_hand():
    z = lookahead_from_losses(torch.tensor([2.0, 4.0]), torch.tensor([[1.0, 3.0], [4.0, 5.0]]))
    assert z.tolist() == [[0.5, -0.5], [0.0, -0.25]]
    prev = torch.tensor([[1.0, float("nan")], [3.0, 5.0]])
    cur = torch.tensor([[3.0, 2.0], [float("nan"), 1.0]])
    assert smooth(prev, cur, 0.25).tolist() == [[2.5, 2.0], [3.0, 2.0]]
    assert smooth(None, cur, 0.5).tolist()[0] == [3.0, 2.0]


def test_count_sketch_is_linear_and_unbiased():
    torch.manual_seed(0)
    a, b = torch.randn(500, dtype=torch.float64), torch.randn(500, dtype=torch.float64)
    sketch = CountSketch(500, 64, seed=1)
    assert torch.allclose(sketch(2 * a + b), 2 * sketch(a) + sketch(b))
    estimates = [float(CountSketch(500, 64, seed=s)(a) @ CountSketch(500, 64, seed=s)(b)) for s in range(400)]
    exact = float(a @ b)
    standard_error = np.std(estimates) / math.sqrt(len(estimates))
    assert abs(np.mean(estimates) - exact) < 4 * standard_error
    # norms are preserved in expectation, too
    assert np.mean([float(CountSketch(500, 64, seed=s)(a).norm() ** 2) for s in range(200)]) == \
        pytest.approx(float(a.norm() ** 2), rel=0.05)


def test_robust_scale_by_hand():
    assert robust_scale(np.array([0.0, 1.0, 2.0])) == pytest.approx(1.4826)
    assert robust_scale(np.array([1.0, 1.0, 1.0, 5.0])) == pytest.approx(np.std([1, 1, 1, 5]))  # MAD 0 -> std
    assert robust_scale(np.array([2.0, 2.0])) == 1.0


def test_target_weights_by_hand():
    row = np.array([[0.0, 1.0, 2.0]])
    logits = row[0] / 1.4826
    soft = np.exp(logits) / np.exp(logits).sum()
    assert target_weights(row, temperature=1.0, uniform_mix=0.0)[0] == pytest.approx(soft)
    mixed = target_weights(row, temperature=1.0, uniform_mix=0.3)[0]
    assert mixed == pytest.approx(0.7 * soft + 0.1)
    hot = target_weights(row, temperature=0.5, uniform_mix=0.0)[0]
    assert hot[2] > soft[2]
    floored = target_weights(row, 1.0, 0.0, self_floor=0.5, self_source=[0])[0]
    assert floored[0] == pytest.approx(0.5) and floored.sum() == pytest.approx(1.0)
    assert floored[1] / floored[2] == pytest.approx(soft[1] / soft[2])


def test_target_weights_handle_invalid_sources_and_empty_rows():
    influence = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, np.nan]])
    weights = target_weights(influence, uniform_mix=0.2, valid_sources=np.array([True, True, False]))
    assert weights[0, 2] == 0.0 and weights[0].sum() == pytest.approx(1.0)
    assert weights[0, 1] == pytest.approx(0.1)       # NaN influence: only the uniform share
    assert weights[1].tolist() == [0.5, 0.5, 0.0]   # no information: uniform over valid sources
    with pytest.raises(ValueError, match="temperature"):
        target_weights(influence, temperature=0.0)


def test_basin_weights_draw_probabilities_entropy():
    weights = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    q = basin_weights(weights)
    assert q.tolist() == [0.25, 0.5, 0.25]
    assert effective_number(q) == pytest.approx(1 / (0.0625 * 2 + 0.25))
    assert effective_number(np.full(4, 0.25)) == pytest.approx(4) and entropy(np.full(4, 0.25)) == pytest.approx(
        math.log(4))
    n = np.array([10, 30, 0])
    assert basin_draw_probabilities(q, n, "basin").tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    # 'samples' with uniform q: each basin drawn in proportion to its samples, i.e. 1/N per sample, as NH does
    assert basin_draw_probabilities(np.full(3, 1 / 3), n, "samples").tolist() == pytest.approx([0.25, 0.75, 0.0])
    with pytest.raises(ValueError, match="basis"):
        basin_draw_probabilities(q, n, "records")
