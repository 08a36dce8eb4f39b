"""The influence sampler on an NH model and NH datasets: known answers (finite differences, the look-ahead
definition, disjoint probes, NH's sampling distribution, chi-square tests) and the fallbacks."""
from __future__ import annotations

import copy
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
    """(source batches, target batches) of every basin."""
    cfg, dataset, model, _ = setup
    probes = draw_probes(dataset.sample_basin_index, len(dataset.basins), 8, seed)
    return tuple(probe_batches(dataset, which, torch.device("cpu"), dtype=torch.float64)
                 for which in (probes.source, probes.target))


def test_probes_are_disjoint_seeded_and_halved_for_small_basins():
    index = np.repeat(np.arange(4), [40, 10, 1, 0])   # basin 0: plenty; 1: < 2k; 2: one sample; 3: none
    draw = draw_probes(index, 4, 8, seed=(1, 2))
    assert [len(p) for p in draw.source] == [8, 5, 1, 0] and [len(p) for p in draw.target] == [8, 5, 0, 0]
    for b in range(4):
        assert not set(draw.source[b]) & set(draw.target[b])
        assert (index[draw.source[b]] == b).all() and (index[draw.target[b]] == b).all()
    assert draw.halved == [1, 2] and draw.no_target == [2]
    again, other = draw_probes(index, 4, 8, seed=(1, 2)), draw_probes(index, 4, 8, seed=(1, 3))
    assert all(np.array_equal(a, b) for a, b in zip(draw.source + draw.target, again.source + again.target))
    assert not np.array_equal(draw.source[0], other.source[0])


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


def test_dot_influence_is_the_first_order_decrease_of_the_target_probe_loss(nh_setup):
    _, _, model, loss_obj = nh_setup
    sources, targets = _batches(nh_setup)
    params = select_parameters(model, None)
    result = measure_influence(model, nh_loss_fn(loss_obj), sources, targets, "dot", params)
    source_grads = probe_gradients(model, nh_loss_fn(loss_obj), sources, params)
    assert torch.equal(result.source.grads, source_grads.grads)
    eta = 1e-6
    for target, source in [(0, 1), (2, 7), (5, 5), (11, 3)]:
        decrease = float(result.target.losses[target]) - _loss_after_step(nh_setup, targets[target],
                                                                           source_grads.grads[source], eta)
        assert decrease / eta == pytest.approx(float(result.influence[target, source]), rel=1e-3, abs=1e-9)


def test_cosine_diagonal_is_an_honest_estimate_not_one(nh_setup):
    """The diagonal compares a basin's target probe with its own disjoint source probe: below 1, and exactly the
    cosine of those two gradients. A probe compared with itself (the old definition) gives 1 and fails this test."""
    _, _, model, loss_obj = nh_setup
    sources, targets = _batches(nh_setup)
    params = select_parameters(model, None)
    result = measure_influence(model, nh_loss_fn(loss_obj), sources, targets, "cosine", params)
    diagonal = torch.diagonal(result.influence)
    assert (diagonal < 1 - 1e-6).all(), diagonal
    g_t, g_s = result.target.grads[3], result.source.grads[3]
    assert float(diagonal[3]) == pytest.approx(float(g_t @ g_s / (g_t.norm() * g_s.norm())), rel=1e-12)
    self_compared = measure_influence(model, nh_loss_fn(loss_obj), sources, sources, "cosine", params)
    assert torch.allclose(torch.diagonal(self_compared.influence), torch.ones(len(sources), dtype=torch.float64))


def test_lookahead_matches_its_definition_exactly(nh_setup):
    _, _, model, loss_obj = nh_setup
    sources, targets = _batches(nh_setup, seed=(1, 3))
    params = select_parameters(model, None)
    before = [p.detach().clone() for _, p in params]
    chosen = [0, 4]
    result = measure_influence(model, nh_loss_fn(loss_obj), sources, [targets[t] for t in chosen], "lookahead",
                               params, learning_rate=0.05)
    for row, target in enumerate(chosen):
        base = _loss_after_step(nh_setup, targets[target], result.source.grads[0] * 0, 0.0)
        for source in range(len(sources)):
            expected = 1 - _loss_after_step(nh_setup, targets[target], result.source.grads[source], 0.05) / base
            assert float(result.influence[row, source]) == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert all(torch.equal(a, p) for a, (_, p) in zip(before, params)), "parameters not restored"
    stepped = lookahead_losses(model, nh_loss_fn(loss_obj), [targets[0], None], result.source.grads[:1] * float("nan"),
                               params, 0.1)
    assert torch.isnan(stepped).all()


def test_parameter_subset_and_bad_names(nh_setup):
    _, _, model, _ = nh_setup
    assert [n for n, _ in select_parameters(model, ["head"])] == ["head.net.0.weight", "head.net.0.bias"]
    with pytest.raises(ValueError, match=r"'xb_influence_params': \['haed'\] match no.*'head'"):
        select_parameters(model, ["haed"])


def _sampler(setup, **opts):
    from nh_crossbasin.nh.influence_draw import InfluenceWeightedDraw
    cfg, dataset, _, _ = setup
    cfg.update_config(opts)
    return InfluenceWeightedDraw(cfg, dataset)


def test_uniform_weights_reproduce_nh_sampling_distribution(nh_setup):
    _, dataset, _, _ = nh_setup
    sampler = _sampler(nh_setup, xb_influence_basis="samples")
    n_basins, n = len(dataset.basins), len(dataset)
    uniform = np.full((len(sampler.targets), n_basins), 0.0)
    sampler.update_weights(_record(nh_setup, sampler, uniform))
    counts = np.bincount(dataset.sample_basin_index, minlength=n_basins)
    # exactly NH's distribution: basin drawn in proportion to its samples, each sample with probability 1/N
    assert sampler.draw_probabilities == pytest.approx(counts / n)
    draws = np.concatenate([_epoch(sampler, e) for e in range(2, 12)])
    assert len(draws) == 10 * n
    assert stats.chisquare(np.bincount(dataset.sample_basin_index[draws], minlength=n_basins),
                           counts / n * len(draws)).pvalue > 0.001
    per_sample = np.bincount(draws, minlength=n)
    assert stats.chisquare(per_sample).pvalue > 0.001


def _record(setup, sampler, raw):
    """A real influence record of the setup's model (head gradients), with its matrix replaced by ``raw``."""
    _, _, model, loss_obj = setup
    sampler.meter.opts["xb_influence_params"] = ["head"]
    record = sampler.meter.measure(model, loss_obj, torch.device("cpu"), epoch=2)
    return record.assign(influence_raw=(("target", "source"), raw))


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
    n = len(dataset.basins)
    raw = np.random.default_rng(1).normal(size=(n, n))
    raw[:, 3] = np.nan   # source 3: no finite gradient
    raw[5, :] = np.nan   # target 5 too
    with caplog.at_level(logging.WARNING):
        record = sampler.update_weights(_record(nh_setup, sampler, raw))
    assert "no finite probe gradient and get no influence weight" in caplog.text
    assert "keep uniform weights" in caplog.text
    weights = record["weights"].values
    assert np.all(weights[:, 3] == 0) and np.allclose(weights.sum(axis=1), 1)
    assert np.allclose(weights[5][np.arange(n) != 3], 1 / (n - 1))
    with pytest.raises(RuntimeError, match="no source basin has a finite probe gradient"):
        sampler.update_weights(_record(nh_setup, sampler, np.full((n, n), np.nan)))


def test_zero_gradients_are_logged(nh_setup, caplog):
    _, dataset, model, loss_obj = nh_setup
    sampler = _sampler(nh_setup)
    n = len(dataset.basins)
    raw = np.random.default_rng(1).normal(size=(n, n))
    raw[:, 2] = raw[2, :] = 0.0  # what the cosine measure gives a zero gradient
    record = _record(nh_setup, sampler, raw)
    norms = record["source_grad_norm"].values.copy()
    norms[2] = 0.0
    with caplog.at_level(logging.WARNING):
        record = sampler.update_weights(record.assign(source_grad_norm=(("source",), norms)))
    assert "1 basins have a zero probe gradient" in caplog.text and dataset.basins[2] in caplog.text
    assert np.allclose(record["weights"].values.sum(axis=1), 1)


def _fixed(setup, kind, **opts):
    from nh_crossbasin.nh.weighted_draw import TargetsReplacementDraw, UniformReplacementDraw
    cfg, dataset, _, _ = setup
    cfg.update_config({"xb_influence_basis": "basin", "xb_influence_apply": "draw", "xb_influence_warmup_epochs": 1,
                       **opts})
    return (UniformReplacementDraw if kind == "uniform" else TargetsReplacementDraw)(cfg, dataset)


class _Trainer:
    loss_obj = None


def test_uniform_replacement_draws_every_basin_equally_after_warmup(nh_setup):
    _, dataset, _, _ = nh_setup
    sampler = _fixed(nh_setup, "uniform")
    sampler.on_epoch_start(_Trainer(), 1)
    assert sampler.draw_probabilities is None  # warm-up: NH's shuffle
    sampler.on_epoch_start(_Trainer(), 2)
    n_basins = len(dataset.basins)
    assert sampler.draw_probabilities == pytest.approx(np.full(n_basins, 1 / n_basins))
    draws = np.concatenate([_epoch(sampler, e) for e in range(2, 6)])
    counts = np.bincount(dataset.sample_basin_index[draws], minlength=n_basins)
    assert stats.chisquare(counts).pvalue > 0.001


def test_targets_replacement_draws_only_the_targets(nh_setup, tmp_path):
    _, dataset, _, _ = nh_setup
    targets = tmp_path / "targets.txt"
    targets.write_text("\n".join(dataset.basins[:3]) + "\n")
    sampler = _fixed(nh_setup, "targets", xb_influence_targets_file=str(targets))
    sampler.on_epoch_start(_Trainer(), 2)
    draws = _epoch(sampler, 2)
    assert len(draws) == len(dataset)  # NH's epoch length
    assert set(np.unique(dataset.sample_basin_index[draws])) == {0, 1, 2}
    cfg = nh_setup[0]
    cfg.update_config({"xb_influence_targets_file": None})
    from nh_crossbasin.nh.weighted_draw import TargetsReplacementDraw
    with pytest.raises(ValueError, match="'xb_influence_targets_file'.*targets_replacement"):
        TargetsReplacementDraw.check_config(cfg)


def test_weights_in_the_loss_are_importance_weights_with_mean_one(nh_setup):
    """xb_influence_apply: loss keeps NH's shuffle and puts q(s) / p_NH(s) into the loss: the expected weighted loss
    under NH's draw equals the expected loss under the weighted draw."""
    _, dataset, _, _ = nh_setup
    sampler = _fixed(nh_setup, "uniform", xb_influence_apply="loss")
    from nh_crossbasin.nh.losses import NSEStarLoss

    class Trainer:
        loss_obj = NSEStarLoss(nh_setup[0])

    trainer = Trainer()
    sampler.on_epoch_start(trainer, 2)
    weights = trainer.loss_obj._basin_weights.double().numpy()
    counts = np.bincount(dataset.sample_basin_index, minlength=len(dataset.basins))
    assert np.sum(counts / counts.sum() * weights) == pytest.approx(1.0)           # mean 1 under NH's draw
    assert counts / counts.sum() * weights == pytest.approx(np.full(len(counts), 1 / len(counts)))  # = q(s)
    order = list(iter(sampler.data_loader().sampler))
    assert sorted(order) == list(range(len(dataset)))  # still NH's shuffle: every sample once
    cfg = nh_setup[0]
    cfg.update_config({"loss": "NSE"})
    try:
        with pytest.raises(ValueError, match="'xb_influence_apply'.*xb_nse_star"):
            sampler.check_config(cfg)
    finally:
        cfg.update_config({"loss": "xb_nse_star", "xb_influence_apply": "draw"})
