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


def test_hand_computed_value_differs_from_pooled_mean():
    # basin 0: std 0.9 -> (s + eps)^2 = 1; errors 1, 2 -> scaled 1, 4 -> mean 2.5
    # basin 1: std 1.9 -> (s + eps)^2 = 4; error 2 -> scaled 1
    y_hat, y, std, basin = _batch([1.0, 3.0, 2.0], [0.0, 1.0, 0.0], [0.9, 0.9, 1.9], [0, 0, 1])
    assert nse_star(y_hat, y, std, basin, eps=0.1).item() == pytest.approx(1.75)
    pooled = ((y_hat - y) ** 2 / (std + 0.1) ** 2).mean().item()  # NH's NSE: mean over all targets
    assert pooled == pytest.approx(2.0)
    basins, losses, counts = per_basin_nse_star(y_hat, y, std, basin, eps=0.1)
    assert basins.tolist() == [0, 1]
    assert losses.tolist() == pytest.approx([2.5, 1.0])
    assert counts.tolist() == [2, 1]


def test_basin_weights_give_weighted_mean_of_basins():
    y_hat, y, std, basin = _batch([1.0, 3.0, 2.0], [0.0, 1.0, 0.0], [0.9, 0.9, 1.9], [0, 0, 1])
    weights = torch.tensor([1.0, 3.0, 100.0])  # basin 2 is absent from the batch and must not count
    assert nse_star(y_hat, y, std, basin, 0.1, weights).item() == pytest.approx((2.5 + 3 * 1.0) / 4)


def test_nan_targets_are_masked():
    y_hat, y, std, basin = _batch([1.0, 3.0, 2.0, 7.0], [0.0, float("nan"), 0.0, float("nan")],
                                  [0.9, 0.9, 1.9, 1.9], [0, 0, 1, 1])
    # basin 0 keeps only the first sample (1.0), basin 1 only the third (1.0)
    assert nse_star(y_hat, y, std, basin, eps=0.1).item() == pytest.approx(1.0)


def test_all_nan_batch_is_nan_and_basin_without_valid_target_is_ignored():
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


def test_equals_nh_nse_when_basins_have_equal_valid_counts(plugin):
    from neuralhydrology.training.loss import MaskedNSELoss
    from nh_crossbasin.nh.losses import NSEStarLoss
    pred, data = _loss_inputs(counts_equal=True)
    ours, _ = NSEStarLoss(_nh_config("xb_nse_star"))(pred, data)
    nh, _ = MaskedNSELoss(_nh_config("NSE"))(pred, data)
    assert ours.item() == pytest.approx(nh.item(), rel=1e-6)


def test_differs_from_nh_nse_when_counts_differ(plugin):
    from neuralhydrology.training.loss import MaskedNSELoss
    from nh_crossbasin.nh.losses import NSEStarLoss
    pred, data = _loss_inputs(counts_equal=False)
    data["y"][:, :-1] = float("nan")          # predict_last_n = 1 only sees the last step anyway
    ours, _ = NSEStarLoss(_nh_config("xb_nse_star"))(pred, data)
    nh, _ = MaskedNSELoss(_nh_config("NSE"))(pred, data)
    se = ((pred["y_hat"][:, -1, 0] - data["y"][:, -1, 0]) ** 2 / (data["per_basin_target_stds"][:, 0, 0] + 0.1) ** 2)
    expected = (se[1] + (se[2] + se[3]) / 2 + (se[4] + se[5]) / 2) / 3   # basin 0 has one valid target left
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)
    assert abs(ours.item() - nh.item()) > 1e-4


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
    expected = nse_star(pred["y_hat"][:2, -1:], data["y"][:2, -1:], data["per_basin_target_stds"][:2],
                        data["basin_index"][:2])
    assert only_basin0.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="non-negative"):
        loss_obj.set_basin_weights(torch.tensor([1.0, -1.0]))
    del data["basin_index"]
    with pytest.raises(KeyError, match="basin_index"):
        loss_obj(pred, data)
