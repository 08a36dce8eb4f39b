"""The influence sampler on an NH model and NH datasets: known answers (finite differences, the look-ahead
definition, NH's sampling distribution, chi-square tests) and the fallbacks."""
from __future__ import annotations

import copy
import dataclasses
import logging

import numpy as np
import pytest
import torch
from scipy import stats

import nh_crossbasin
from conftest import synth_config
from nh_crossbasin.nh.probes import (draw_probes, lookahead_losses, measure_influence, nh_loss_fn, probe_batches,
                                     probe_gradients, select_parameters)


@pytest.fixture(scope="module")
def nh_setup(synth_data, tmp_path_factory):
    """cfg, training dataset (with basin_index), float64 cudalstm and NSE* loss on the synthetic basins."""
    nh_crossbasin.register()
    from neuralhydrology.datasetzoo import get_dataset
    from neuralhydrology.modelzoo import get_model
    from neuralhydrology.training import get_loss_obj
    from neuralhydrology.utils.config import Config
    run_dir = tmp_path_factory.mktemp("run")
    cfg = Config(synth_config(synth_data, run_dir, loss="xb_nse_star", xb_sampler="influence", hidden_size=6,
                              seq_length=20, xb_influence_probe_size=8))
    cfg.run_dir, cfg.train_dir = run_dir, run_dir / "train_data"
    dataset = get_dataset(cfg=cfg, is_train=True, period="train", scaler={})  # NH's default {} is shared
    torch.manual_seed(0)
    model = get_model(cfg).double()
    return cfg, dataset, model, get_loss_obj(cfg)


def _batches(setup, seed=(1, 2)):
    cfg, dataset, model, _ = setup
    probes = draw_probes(dataset.sample_basin_index, len(dataset.basins), 8, seed)
    return probe_batches(dataset, probes, torch.device("cpu"), dtype=torch.float64)


def _loss_after_step(setup, batch, step_grad, lr):
    _, _, model, loss_obj = setup
    stepped = copy.deepcopy(model)
    params = [p for p in stepped.parameters() if p.requires_grad]
    with torch.no_grad():
        offset = 0
        for p in params:
            p -= lr * step_grad[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
    stepped.train()
    for module in stepped.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        return float(nh_loss_fn(loss_obj)(stepped, batch))


def test_dot_influence_is_the_first_order_loss_decrease(nh_setup):
    _, _, model, loss_obj = nh_setup
    batches = _batches(nh_setup)
    params = select_parameters(model, None)
    grads = probe_gradients(model, nh_loss_fn(loss_obj), batches, params)
    influence, _ = measure_influence(model, nh_loss_fn(loss_obj), batches, range(len(batches)), "dot", params)
    eta = 1e-6
    for target, source in [(0, 1), (2, 7), (5, 5), (11, 3)]:
        decrease = float(grads.losses[target]) - _loss_after_step(nh_setup, batches[target], grads.grads[source], eta)
        assert decrease / eta == pytest.approx(float(influence[target, source]), rel=1e-3, abs=1e-9)


def test_lookahead_matches_its_definition_exactly(nh_setup):
    _, _, model, loss_obj = nh_setup
    batches = _batches(nh_setup, seed=(1, 3))
    params = select_parameters(model, None)
    before = [p.detach().clone() for _, p in params]
    targets = [0, 4]
    z, grads = measure_influence(model, nh_loss_fn(loss_obj), batches, targets, "lookahead", params,
                                 learning_rate=0.05)
    for row, target in enumerate(targets):
        for source in range(len(batches)):
            expected = 1 - _loss_after_step(nh_setup, batches[target], grads.grads[source], 0.05) / float(
                grads.losses[target])
            assert float(z[row, source]) == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert all(torch.equal(a, p) for a, (_, p) in zip(before, params)), "parameters not restored"
    stepped = lookahead_losses(model, nh_loss_fn(loss_obj), [batches[0]], grads.grads[:1] * float("nan"), params, 0.1)
    assert torch.isnan(stepped).all()


def test_parameter_subset_and_bad_names(nh_setup):
    _, _, model, _ = nh_setup
    assert [n for n, _ in select_parameters(model, ["head"])] == ["head.net.0.weight", "head.net.0.bias"]
    with pytest.raises(ValueError, match=r"'xb_influence_params': \['haed'\] match no.*'head'"):
        select_parameters(model, ["haed"])


def _sampler(setup, **opts):
    from nh_crossbasin.nh.influence_sampler import InfluenceSampler
    cfg, dataset, _, _ = setup
    cfg.update_config(opts)
    return InfluenceSampler(cfg, dataset)


def test_uniform_weights_reproduce_nh_sampling_distribution(nh_setup):
    _, dataset, _, _ = nh_setup
    sampler = _sampler(nh_setup, xb_influence_basis="samples")
    n_basins, n = len(dataset.basins), len(dataset)
    uniform = np.full((1, n_basins), 0.0)
    gradients = probe_gradients(nh_setup[2], nh_loss_fn(nh_setup[3]), _batches(nh_setup), select_parameters(
        nh_setup[2], ["head"]))
    sampler.update_weights(np.repeat(uniform, len(sampler.targets), axis=0), gradients, epoch=2)
    counts = np.bincount(dataset.sample_basin_index, minlength=n_basins)
    # exactly NH's distribution: basin drawn in proportion to its samples, each sample with probability 1/N
    assert sampler.draw_probabilities == pytest.approx(counts / n)
    draws = np.concatenate([_epoch(sampler, e) for e in range(2, 12)])
    assert len(draws) == 10 * n
    assert stats.chisquare(np.bincount(dataset.sample_basin_index[draws], minlength=n_basins),
                           counts / n * len(draws)).pvalue > 0.001
    per_sample = np.bincount(draws, minlength=n)
    assert stats.chisquare(per_sample).pvalue > 0.001


def _epoch(sampler, epoch):
    sampler.epoch = epoch
    return sampler.draw_epoch()


def test_drawn_basins_follow_q_chi_square(nh_setup):
    _, dataset, model, loss_obj = nh_setup
    sampler = _sampler(nh_setup, xb_influence_basis="basin")
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(len(dataset.basins)))
    sampler.draw_probabilities = q
    draws = np.concatenate([_epoch(sampler, e) for e in range(2, 6)])
    observed = np.bincount(dataset.sample_basin_index[draws], minlength=len(q))
    assert stats.chisquare(observed, q * len(draws)).pvalue > 0.001
    again = _epoch(sampler, 2)
    assert np.array_equal(again, _epoch(sampler, 2)) and not np.array_equal(again, _epoch(sampler, 3))


def test_nan_gradients_are_logged_fallbacks_and_all_nan_stops(nh_setup, caplog):
    _, dataset, model, loss_obj = nh_setup
    sampler = _sampler(nh_setup, xb_influence_basis="basin", xb_influence_uniform_mix=0.0)
    gradients = probe_gradients(model, nh_loss_fn(loss_obj), _batches(nh_setup), select_parameters(model, ["head"]))
    n = len(dataset.basins)
    raw = np.random.default_rng(1).normal(size=(n, n))
    raw[:, 3] = np.nan   # source 3: no finite gradient
    raw[5, :] = np.nan   # target 5 too
    with caplog.at_level(logging.WARNING):
        record = sampler.update_weights(raw, gradients, epoch=2)
    assert "no finite probe gradient and get no influence weight" in caplog.text
    assert "keep uniform weights" in caplog.text
    weights = record["weights"].values
    assert np.all(weights[:, 3] == 0) and np.allclose(weights.sum(axis=1), 1)
    assert np.allclose(weights[5][np.arange(n) != 3], 1 / (n - 1))
    with pytest.raises(RuntimeError, match="no source basin has a finite probe gradient"):
        sampler.update_weights(np.full((n, n), np.nan), gradients, epoch=3)


def test_zero_gradients_are_logged(nh_setup, caplog):
    _, dataset, model, loss_obj = nh_setup
    sampler = _sampler(nh_setup)
    gradients = probe_gradients(model, nh_loss_fn(loss_obj), _batches(nh_setup), select_parameters(model, ["head"]))
    gradients = dataclasses.replace(gradients, norms=gradients.norms.clone().index_fill_(0, torch.tensor([2]), 0.0))
    n = len(dataset.basins)
    raw = np.random.default_rng(1).normal(size=(n, n))
    raw[:, 2] = raw[2, :] = 0.0  # what the cosine measure gives a zero gradient
    with caplog.at_level(logging.WARNING):
        record = sampler.update_weights(raw, gradients, epoch=2)
    assert "1 basins have a zero probe gradient" in caplog.text and dataset.basins[2] in caplog.text
    assert np.allclose(record["weights"].values.sum(axis=1), 1)
