"""Batched per-basin probe gradients equal the per-basin loop (float64, 1e-10 relative) for NH ``cudalstm`` and
``xb_ealstm``: all parameters, a named subset, count-sketched; NaN targets, predict_last_n > 1, probes of different
sizes, a basin without a probe; and the recurrences equal NH's models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import nh_crossbasin
from conftest import synth_config
from nh_crossbasin.core.ealstm_sequence import BufferPool
from nh_crossbasin.core.influence import CountSketch
from nh_crossbasin.core.step_inputs import StepInputs
from nh_crossbasin.nh import batched_gradients
from nh_crossbasin.nh.probes import draw_probes, nh_loss_fn, probe_batches, probe_gradients, select_parameters


@pytest.fixture(scope="module", params=["cudalstm", "xb_ealstm"])
def setup(request, synth_data, tmp_path_factory):
    nh_crossbasin.register()
    from neuralhydrology.datasetzoo import get_dataset
    from neuralhydrology.modelzoo import get_model
    from neuralhydrology.training import get_loss_obj
    from neuralhydrology.utils.config import Config
    run_dir = tmp_path_factory.mktemp("batched")
    cfg = Config(synth_config(synth_data, run_dir, loss="xb_nse_star", model=request.param, hidden_size=5,
                              seq_length=12, predict_last_n=3))
    cfg.run_dir, cfg.train_dir = run_dir, run_dir / "train_data"
    dataset = get_dataset(cfg=cfg, is_train=True, period="train", scaler={})
    torch.manual_seed(0)
    model = get_model(cfg).double()
    probes = draw_probes(dataset.sample_basin_index, len(dataset.basins), 6, seed=(1, 2))
    batches = probe_batches(dataset, probes.source, torch.device("cpu"), dtype=torch.float64)
    batches[4] = None                                     # a basin without samples
    batches[5] = {k: (v if not isinstance(v, torch.Tensor) else v[:3]) if not isinstance(v, dict) else
                  {kk: vv[:3] for kk, vv in v.items()} for k, v in batches[5].items()}   # a halved probe
    batches[5]["date"] = batches[5]["date"][:3]
    for batch in batches[:3]:                            # NaN targets inside the predicted window
        batch["y"][0, -1, 0] = float("nan")
        batch["y"][1, -2:, 0] = float("nan")
    return model, get_loss_obj(cfg), batches


def _assert_equal(a, b):
    both = torch.isfinite(a.grads).all(dim=1)
    assert torch.equal(both, torch.isfinite(b.grads).all(dim=1))
    scale = b.grads[both].abs().max()
    assert (a.grads[both] - b.grads[both]).abs().max() <= 1e-10 * scale
    assert torch.allclose(a.losses[both], b.losses[both], rtol=1e-12, atol=0)
    assert torch.allclose(a.norms[both], b.norms[both], rtol=1e-10, atol=0)
    assert np.array_equal(a.probe_sizes, b.probe_sizes)


@pytest.mark.parametrize("names", [None, ["head"], ["head", "recurrent"]], ids=["all", "head", "subset"])
def test_batched_equals_the_per_basin_loop(setup, names):
    model, loss_obj, batches = setup
    if names == ["head", "recurrent"]:
        names = ["head", "lstm.weight_hh_l0" if batched_gradients.model_family(model) == "lstm"
                 else "dynamic_gates.weight_hh", "input_gate" if batched_gradients.model_family(model) == "ealstm"
                 else "lstm.bias_ih_l0"]
    params = select_parameters(model, names)
    assert batched_gradients.supports(model, params)
    loss_fn = nh_loss_fn(loss_obj)
    loop = probe_gradients(model, loss_fn, batches, params, batched=False)
    fast = batched_gradients.batched_probe_gradients(model, loss_obj, batches, params)
    _assert_equal(fast, loop)
    # probe_gradients takes the batched path for head-only gradients and for xb_ealstm; on the CPU, cudalstm's
    # recurrent gradients come from the loop for probes of at most 16 sequences (these hold 6)
    family = batched_gradients.model_family(model)
    assert batched_gradients.use_batched(model, params, 6.0) == (names == ["head"] or family == "ealstm")
    assert batched_gradients.use_batched(model, params, 6.0) == batched_gradients.use_batched(model, params, 16.0)
    assert batched_gradients.use_batched(model, params, 32.0)
    _assert_equal(probe_gradients(model, loss_fn, batches, params), loop)
    assert torch.isnan(fast.grads[4]).all() and fast.probe_sizes[5] == 3
    small = batched_gradients.batched_probe_gradients(model, loss_obj, batches, params, max_sequences=7)
    _assert_equal(small, loop)  # chunks of at most 7 sequences: the same numbers


def test_batched_sketch_equals_the_sketched_loop(setup):
    model, loss_obj, batches = setup
    params = select_parameters(model, None)
    sketch = CountSketch(sum(p.numel() for _, p in params), 16, seed=3)
    loss_fn = nh_loss_fn(loss_obj)
    _assert_equal(batched_gradients.batched_probe_gradients(model, loss_obj, batches, params, sketch),
                  probe_gradients(model, loss_fn, batches, params, sketch, batched=False))


def test_a_negative_control_a_wrong_delta_is_caught(setup, monkeypatch):
    """The comparison can fail: per-basin weight products scaled by 1.001 (a wrong backward) must not pass."""
    model, loss_obj, batches = setup
    params = select_parameters(model, None)
    real_cpu, real_gpu = StepInputs.weight_gradients, batched_gradients.weight_gradients
    monkeypatch.setattr(StepInputs, "weight_gradients",
                        lambda self, d, r: tuple(1.001 * g for g in real_cpu(self, d, r)))
    monkeypatch.setattr(batched_gradients, "weight_gradients", lambda d, x: 1.001 * real_gpu(d, x))
    fast = batched_gradients.batched_probe_gradients(model, loss_obj, batches, params)
    loop = probe_gradients(model, nh_loss_fn(loss_obj), batches, params, batched=False)
    with pytest.raises(AssertionError):
        _assert_equal(fast, loop)


def test_the_head_reads_the_steps_the_loss_reads(setup, monkeypatch):
    """The head runs on the last predict_last_n (3) steps only (the equality tests above show that this gives the
    loop's numbers); the negative control, a head on the last step only, cannot go unnoticed: the loss refuses it."""
    model, loss_obj, batches = setup
    assert batched_gradients.loss_steps(model, 12) == 3
    monkeypatch.setattr(batched_gradients, "loss_steps", lambda model, n_steps: 1)
    for names in (None, ["head"]):
        with pytest.raises(IndexError, match="mask"):
            batched_gradients.batched_probe_gradients(model, loss_obj, batches, select_parameters(model, names))


def test_reused_buffers_with_stale_contents_give_the_same_gradients(setup):
    """The chunks share their trace buffers: buffers that hold NaN from an earlier use are fully overwritten."""
    model, loss_obj, batches = setup
    params = select_parameters(model, None)
    live = [b for b in batches if b is not None]
    empty = BufferPool(size=1)
    batched_gradients._chunk_gradients(model, loss_obj, live, params, empty)
    assert len(empty) == 4       # an empty pool (falsy: no buffers yet) is filled, not replaced
    pool = BufferPool(size=1)
    for role in ("step_inputs", "gates", "c2", "dh_dc"):
        pool.take(role, 10 ** 5, torch.float64, torch.device("cpu")).fill_(float("nan"))
    assert len(pool) == 4
    stale = [pool._buffers[role][0].data_ptr() for role in ("step_inputs", "gates", "c2", "dh_dc")]
    fast = batched_gradients._chunk_gradients(model, loss_obj, live, params, pool)
    assert [pool._buffers[role][0].data_ptr() for role in ("step_inputs", "gates", "c2", "dh_dc")] == stale
    loop = probe_gradients(model, nh_loss_fn(loss_obj), live, params, batched=False)
    for (loss, flat), k in zip(fast, range(len(live))):
        assert torch.isfinite(flat).all()
        assert (flat - loop.grads[k]).abs().max() <= 1e-10 * loop.grads.abs().max()
        assert torch.allclose(loss, loop.losses[k], rtol=1e-12, atol=0)


def test_loss_steps_reads_predict_last_n():
    class Cfg:
        regularization = []

    class Model(torch.nn.Module):
        def __init__(self, last_n, regularization=()):
            super().__init__()
            self.cfg = Cfg()
            self.cfg.predict_last_n, self.cfg.regularization = last_n, list(regularization)

    assert batched_gradients.loss_steps(Model(5), 30) == 5
    assert batched_gradients.loss_steps(Model({"1D": 4}), 30) == 4
    assert batched_gradients.loss_steps(Model(50), 30) == 30
    assert batched_gradients.loss_steps(Model({"1D": 4, "1h": 24}), 30) == 30      # several frequencies: all
    assert batched_gradients.loss_steps(Model(5, ["tie_frequencies"]), 30) == 30    # a regularization term: all
    assert batched_gradients.loss_steps(torch.nn.Linear(1, 1), 30) == 30             # no NH config: all


def test_the_gpu_route_equals_the_loop_on_the_cpu(setup, monkeypatch):
    """The GPU route's maths (``torch.lstm`` with the gate pre-activations as autograd leaves, the head on the last
    steps) run on the CPU too: there they equal the loop, so that only the device is left untested here."""
    model, loss_obj, batches = setup
    gpu_route = batched_gradients._recurrent_gradients_gpu
    monkeypatch.setattr(batched_gradients, "_recurrent_gradients_cpu", lambda *args: gpu_route(*args[:-1]))
    for names in (None, ["head", "input_gate" if batched_gradients.model_family(model) == "ealstm" else "lstm"]):
        params = select_parameters(model, names)
        _assert_equal(batched_gradients.batched_probe_gradients(model, loss_obj, batches, params),
                      probe_gradients(model, nh_loss_fn(loss_obj), batches, params, batched=False))


def test_models_without_a_batched_pass_use_the_loop():
    class Other(torch.nn.Module):
        pass
    assert batched_gradients.model_family(Other()) is None
    assert not batched_gradients.supports(Other(), [])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by benchmarks/gpu_check.sh)")
def test_batched_on_cuda_equals_the_loop(setup):
    """On a GPU the batched path is the one used for recurrent parameters: cuDNN, float64, against the loop."""
    model, loss_obj, batches = setup
    device = torch.device("cuda:0")
    from nh_crossbasin.nh.probes import batch_to_device
    model, loss_obj = model.to(device), loss_obj.to(device)
    gpu_batches = [None if b is None else batch_to_device(b, device) for b in batches]
    params = select_parameters(model, None)
    assert batched_gradients.use_batched(model, params)
    try:
        _assert_equal(probe_gradients(model, nh_loss_fn(loss_obj), gpu_batches, params),
                      probe_gradients(model, nh_loss_fn(loss_obj), gpu_batches, params, batched=False))
    finally:
        model.cpu(), loss_obj.cpu()
