"""NSE* loss: hand-computed values, equivalence with NH's NSE loss, masking, gradients, predict_last_n."""
from __future__ import annotations

import math

import pytest
import torch

import nh_crossbasin
from nh_crossbasin.core.nse_star import nse_star, per_basin_nse_star


def _batch(y_hat, y, std, basin):
    as3 = lambda v: torch.tensor(v, dtype=torch.float64).reshape(len(v), -1, 1)  # noqa: E731
    return as3(y_hat), as3(y), torch.tensor(std, dtype=torch.float64).reshape(-1, 1, 1), torch.tensor(basin)


def test_hand_computed_value_is_the_mean_of_scaled_errors():
    # basin 0: std 0.9 -> (s + eps)^2 = 1; errors 1, 2 -> scaled 1, 4
    # basin 1: std 1.9 -> (s + eps)^2 = 4; error 2 -> scaled 1
    y_hat, y, std, basin = _batch([1.0, 3.0, 2.0], [0.0, 1.0, 0.0], [0.9, 0.9, 1.9], [0, 0, 1])
    assert nse_star(y_hat, y, std, basin, eps=0.1).item() == pytest.approx(2.0)  # (1 + 4 + 1) / 3
    assert nse_star(y_hat, y, std, basin, eps=0.0).item() == pytest.approx((1 / .81 + 4 / .81 + 4 / 3.61) / 3)
    basins, losses, counts = per_basin_nse_star(y_hat, y, std, basin, eps=0.1)  # the per-basin diagnostic
    assert basins.tolist() == [0, 1] and losses.tolist() == pytest.approx([2.5, 1.0]) and counts.tolist() == [2, 1]


def test_basin_weights_multiply_each_samples_error():
    y_hat, y, std, basin = _batch([1.0, 3.0, 2.0], [0.0, 1.0, 0.0], [0.9, 0.9, 1.9], [0, 0, 1])
    weights = torch.tensor([1.0, 3.0, 100.0])  # basin 2 is absent from the batch and must not count
    assert nse_star(y_hat, y, std, basin, 0.1, weights).item() == pytest.approx((1 + 4 + 3 * 1.0) / 3)
    with pytest.raises(ValueError, match="basin_index"):
        nse_star(y_hat, y, std, None, 0.1, weights)


def test_expectation_does_not_move_with_batch_size():
    """Two basins drawn 90/10: the expected minibatch loss is the 90/10 mixture at every batch size.

    The old basin-first average (mean within each basin of the batch, then over the basins present) gives 1.20 at
    batch 1 and 2.00 at batch 256 on the same toy; it must fail the same assertion (negative control)."""
    from scipy.stats import binom
    e0, e1 = 1.0, 3.0                                   # scaled squared errors of basin 0 and basin 1
    expected = 0.9 * e0 + 0.1 * e1                      # 1.20

    def basin_first(y_hat, y, std, basin):
        _, losses, _ = per_basin_nse_star(y_hat, y, std, basin, eps=0.0)
        return losses.mean()

    for loss_fn, must_hold in ((lambda *a: nse_star(*a, eps=0.0), True), (basin_first, False)):
        means = []
        for n in (1, 2, 16, 256):
            value = 0.0
            for k in range(n + 1):  # k samples of basin 0, n - k of basin 1; exact expectation over the draw
                y_hat, y, std, basin = _batch([e0 ** 0.5] * k + [e1 ** 0.5] * (n - k), [0.0] * n, [1.0] * n,
                                              [0] * k + [1] * (n - k))
                value += binom.pmf(k, n, 0.9) * loss_fn(y_hat, y, std, basin).item()
            means.append(value)
        holds = all(abs(m - expected) < 1e-9 for m in means)
        assert holds == must_hold, (means, must_hold)
    assert means[0] == pytest.approx(1.20) and means[-1] == pytest.approx(2.00)


def test_nan_targets_are_masked():
    y_hat, y, std, basin = _batch([1.0, 3.0, 2.0, 7.0], [0.0, float("nan"), 0.0, float("nan")],
                                  [0.9, 0.9, 1.9, 1.9], [0, 0, 1, 1])
    # valid: sample 0 (scaled 1.0) and sample 2 (scaled 1.0)
    assert nse_star(y_hat, y, std, basin, eps=0.1).item() == pytest.approx(1.0)


def test_all_nan_batch_is_nan_and_nan_targets_do_not_count():
    y_hat, y, std, basin = _batch([1.0, 2.0], [float("nan"), float("nan")], [1.0, 1.0], [0, 1])
    assert math.isnan(nse_star(y_hat, y, std, basin).item())
    y_hat, y, std, basin = _batch([1.0, 2.0], [0.0, float("nan")], [0.9, 1.0], [0, 1])
    assert nse_star(y_hat, y, std, basin, eps=0.1).item() == pytest.approx(1.0)


def test_gradients_finite_with_nan_targets_and_match_finite_differences():
    torch.manual_seed(0)
    y = torch.randn(6, 4, 1, dtype=torch.float64)
    y[0, 1, 0] = float("nan")
    y[3, :, 0] = float("nan")
    std = torch.rand(6, 1, 1, dtype=torch.float64) + 0.5
    basin = torch.tensor([0, 0, 1, 1, 2, 2])
    y_hat = torch.randn(6, 4, 1, dtype=torch.float64, requires_grad=True)
    loss = nse_star(y_hat, y, std, basin)
    loss.backward()
    assert torch.isfinite(y_hat.grad).all()
    assert (y_hat.grad[0, 1] == 0).all() and (y_hat.grad[3] == 0).all()
    assert torch.autograd.gradcheck(lambda p: nse_star(p, y, std, basin), (y_hat.detach().requires_grad_(),))


def _nh_config(loss: str, predict_last_n: int = 1, targets=("q",), target_loss_weights=None):
    from neuralhydrology.utils.config import Config
    cfg = {"loss": loss, "predict_last_n": predict_last_n, "target_variables": list(targets),
           "dynamic_inputs": ["p"], "xb_nse_eps": 0.1}
    if target_loss_weights is not None:
        cfg["target_loss_weights"] = target_loss_weights
    return Config(cfg)


@pytest.fixture
def plugin():
    with nh_crossbasin.activated():
        yield


def _loss_inputs(counts_equal: bool, seq: int = 5, n_targets: int = 1):
    torch.manual_seed(1)
    basin = torch.tensor([0, 0, 1, 1, 2, 2])
    y = torch.randn(6, seq, n_targets)
    if not counts_equal:
        y[0, -1, :] = float("nan")
    stds = torch.rand(6, 1, n_targets) + 0.3
    stds[1], stds[3], stds[5] = stds[0], stds[2], stds[4]  # one std per basin, as in NH's datasets
    pred = {"y_hat": torch.randn(6, seq, n_targets, requires_grad=True)}
    data = {"y": y, "per_basin_target_stds": stds, "basin_index": basin}
    return pred, data


@pytest.mark.parametrize("counts_equal", [True, False])
def test_equals_nh_nse_exactly_with_unit_weights(plugin, counts_equal):
    from neuralhydrology.training.loss import MaskedNSELoss
    from nh_crossbasin.nh.losses import NSEStarLoss
    pred, data = _loss_inputs(counts_equal=counts_equal)
    ours, _ = NSEStarLoss(_nh_config("xb_nse_star"))(pred, data)
    nh, _ = MaskedNSELoss(_nh_config("NSE"))(pred, data)
    assert ours.item() == nh.item()
    grad_ours, = torch.autograd.grad(ours, pred["y_hat"])
    grad_nh, = torch.autograd.grad(nh, pred["y_hat"])
    assert torch.equal(grad_ours, grad_nh)


def test_eps_key_changes_the_loss(plugin):
    from neuralhydrology.training.loss import MaskedNSELoss
    from nh_crossbasin.nh.losses import NSEStarLoss
    pred, data = _loss_inputs(counts_equal=True)
    cfg = _nh_config("xb_nse_star")
    cfg.update_config({"xb_nse_eps": 0.5})
    ours, _ = NSEStarLoss(cfg)(pred, data)
    nh, _ = MaskedNSELoss(_nh_config("NSE"))(pred, data)
    assert abs(ours.item() - nh.item()) > 1e-3


def test_predict_last_n_uses_last_steps_only(plugin):
    from nh_crossbasin.nh.losses import NSEStarLoss
    pred, data = _loss_inputs(counts_equal=False, seq=5)
    data["y"][2, 0, 0] = 1e6   # outside the last 3 steps: must not matter
    loss, _ = NSEStarLoss(_nh_config("xb_nse_star", predict_last_n=3))(pred, data)
    expected = nse_star(pred["y_hat"][:, -3:], data["y"][:, -3:], data["per_basin_target_stds"], data["basin_index"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(pred["y_hat"].grad).all()
    assert (pred["y_hat"].grad[:, :2] == 0).all()


def test_multiple_targets_follow_target_loss_weights(plugin):
    from nh_crossbasin.nh.losses import NSEStarLoss
    pred, data = _loss_inputs(counts_equal=True, n_targets=2)
    loss, _ = NSEStarLoss(_nh_config("xb_nse_star", targets=("q", "et"), target_loss_weights=[0.25, 0.75]))(pred, data)
    parts = [nse_star(pred["y_hat"][:, -1:, k:k + 1], data["y"][:, -1:, k:k + 1],
                      data["per_basin_target_stds"][:, :, k:k + 1], data["basin_index"]) for k in range(2)]
    assert loss.item() == pytest.approx(0.25 * parts[0].item() + 0.75 * parts[1].item(), rel=1e-6)


def test_set_basin_weights_and_missing_basin_index(plugin):
    from nh_crossbasin.nh.losses import NSEStarLoss
    loss_obj = NSEStarLoss(_nh_config("xb_nse_star"))
    pred, data = _loss_inputs(counts_equal=True)
    loss_obj.set_basin_weights(torch.tensor([1.0, 0.0, 0.0]))
    only_basin0, _ = loss_obj(pred, data)
    basin0 = nse_star(pred["y_hat"][:2, -1:], data["y"][:2, -1:], data["per_basin_target_stds"][:2])
    assert only_basin0.item() == pytest.approx(basin0.item() * 2 / 6, rel=1e-6)  # 2 of the batch's 6 targets
    with pytest.raises(ValueError, match="non-negative"):
        loss_obj.set_basin_weights(torch.tensor([1.0, -1.0]))
    del data["basin_index"]
    with pytest.raises(KeyError, match="basin_index"):
        loss_obj(pred, data)
