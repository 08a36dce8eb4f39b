"""``model: xb_ealstm`` against NH's ``ealstm``: same outputs and gradients, conversion, options, registration."""
from __future__ import annotations

import pytest
import torch
from neuralhydrology.modelzoo.ealstm import EALSTM
from neuralhydrology.utils.config import Config

from nh_crossbasin.core.ealstm_weights import nh_dynamic_gates_to_fused, nh_state_dict_to_fused
from nh_crossbasin.nh.models import fused_ealstm as fused_module
from nh_crossbasin.nh.models.fused_ealstm import CPU_FUSED_MAX_BATCH, FusedEALSTM, from_nh_ealstm, to_nh_ealstm

DYNAMIC = ["prcp", "tmean", "pet"]
STATIC = ["area", "aridity", "elev", "frac_snow"]
N_BASINS = 5

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device in this session")
# (device, dtype, relative tolerance): float64 on CPU is the exactness check, float32 runs the production kernels
# (oneDNN on CPU, cuDNN on CUDA)
BACKENDS = [pytest.param("cpu", torch.float64, 1e-5, id="cpu-float64"),
            pytest.param("cpu", torch.float32, 2e-4, id="cpu-float32-onednn"),
            pytest.param("cuda", torch.float32, 2e-4, id="cuda-float32-cudnn", marks=CUDA)]

VARIANTS = {
    "hidden1": dict(hidden_size=1),
    "hidden8": dict(hidden_size=8),
    "hidden32": dict(hidden_size=32),
    "predict_last_5": dict(predict_last_n=5),
    "statics_embedding": dict(statics_embedding={"type": "fc", "hiddens": [10, 6], "activation": "tanh",
                                                 "dropout": 0.0}),
    "dynamics_embedding": dict(dynamics_embedding={"type": "fc", "hiddens": [7], "activation": "tanh",
                                                   "dropout": 0.0}),
    "one_hot_basin_ids": dict(use_basin_id_encoding=True),
    "one_hot_only": dict(use_basin_id_encoding=True, static_attributes=[]),
    "relu_output": dict(output_activation="relu"),
    "softplus_output_two_targets": dict(output_activation="softplus", target_variables=["streamflow", "et"]),
    "gmm_head": dict(head="gmm", n_distributions=2),
    "cmal_head": dict(head="cmal", n_distributions=3),
    "no_forget_bias": dict(initial_forget_bias=None),
    "nan_input_replacing": dict(nan_handling_method="input_replacing"),
    "nan_masked_mean": dict(nan_handling_method="masked_mean", dynamic_inputs=[DYNAMIC[:2], DYNAMIC[1:]]),
}


def make_config(**overrides) -> Config:
    keys = {"model": "xb_ealstm", "head": "regression", "output_activation": "linear", "hidden_size": 12,
            "initial_forget_bias": 3, "output_dropout": 0.0, "seq_length": 25, "predict_last_n": 1,
            "dynamic_inputs": DYNAMIC, "static_attributes": STATIC, "target_variables": ["streamflow"],
            "number_of_basins": N_BASINS}
    keys.update(overrides)
    return Config(keys)


def make_batch(cfg: Config, batch_size: int = 6, dtype=torch.float64, device="cpu", seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    data = {"x_d": {k: torch.randn(batch_size, cfg.seq_length, 1, generator=generator, dtype=dtype).to(device)
                    for k in cfg.dynamic_inputs_flattened}}
    if cfg.nan_handling_method:  # missing forcing values, which NH's InputLayer fills or averages out
        data["x_d"][DYNAMIC[0]][:, ::4] = float("nan")
    if cfg.static_attributes:
        data["x_s"] = torch.randn(batch_size, len(cfg.static_attributes), generator=generator, dtype=dtype).to(device)
    if cfg.use_basin_id_encoding:
        ids = torch.randint(N_BASINS, (batch_size,), generator=generator)
        data["x_one_hot"] = torch.nn.functional.one_hot(ids, N_BASINS).to(dtype=dtype, device=device)
    return data


def paired_models(cfg: Config, dtype, device, seed: int = 0):
    """NH's EALSTM and the fused model with the NH model's weights."""
    torch.manual_seed(seed)
    nh_model = EALSTM(cfg).to(dtype=dtype, device=device)
    with torch.no_grad():  # move the gates away from their symmetric initial values
        for parameter in nh_model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    fused_model = from_nh_ealstm(nh_model)
    fused_model.cell_states = "sequence"
    return nh_model, fused_model


def loss_of(prediction: dict, cfg: Config) -> torch.Tensor:
    """A loss that reaches every output: the head output of the last predict_last_n steps, h_n and c_n."""
    head_output = sum(v[:, -cfg.predict_last_n:].pow(2).mean() for k, v in prediction.items()
                      if k not in ("h_n", "c_n") and torch.is_tensor(v) and v.dtype.is_floating_point)
    return head_output + prediction["h_n"].mean() + 0.1 * prediction["c_n"].pow(2).mean()


def assert_relatively_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str):
    scale = max(expected.abs().max().item(), 1e-30)
    difference = (actual - expected).abs().max().item()
    assert difference <= rtol * scale, f"{what}: max difference {difference:.3g} > {rtol} x {scale:.3g}"


# On the CPU, small batches run the fused kernel and larger ones the three-gate autograd node: both are checked
BATCH_SIZES = [pytest.param(6, id="batch6"), pytest.param(CPU_FUSED_MAX_BATCH + 8, id="batch40")]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("device, dtype, rtol", BACKENDS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_outputs_and_gradients_match_nh_ealstm(variant, device, dtype, rtol, batch_size):
    cfg = make_config(**VARIANTS[variant])
    nh_model, fused_model = paired_models(cfg, dtype, device)
    data = make_batch(cfg, batch_size=batch_size, dtype=dtype, device=device)

    nh_prediction = nh_model(data)
    fused_prediction = fused_model(data)
    assert set(fused_prediction) == set(nh_prediction)
    for key, value in nh_prediction.items():
        assert fused_prediction[key].shape == value.shape, key
        assert_relatively_close(fused_prediction[key], value, rtol, key)

    loss_of(nh_prediction, cfg).backward()
    loss_of(fused_prediction, cfg).backward()
    nh_grads = {name: p.grad for name, p in nh_model.named_parameters()}
    gate_keys = ["dynamic_gates.weight_ih", "dynamic_gates.weight_hh", "dynamic_gates.bias"]
    nh_grads.update(zip(gate_keys, nh_dynamic_gates_to_fused(*(nh_grads[k] for k in gate_keys))))
    fused_grads = dict(fused_model.named_parameters())
    assert set(fused_grads) == set(nh_grads)
    for name, grad in nh_grads.items():
        assert_relatively_close(fused_grads[name].grad, grad, rtol, f"gradient of {name}")


@pytest.mark.parametrize("predict_last_n", [1, 5])
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_same_dropout_masks_and_gradients_with_dropout_on(device, batch_size, predict_last_n):
    cfg = make_config(output_dropout=0.4, predict_last_n=predict_last_n)
    nh_model, fused_model = paired_models(cfg, torch.float64, device)
    data = make_batch(cfg, batch_size=batch_size, device=device)
    predictions = []
    for model in (nh_model, fused_model):
        torch.manual_seed(7)
        prediction = model.train()(data)
        predictions.append(prediction)
        loss_of(prediction, cfg).backward()
    assert_relatively_close(predictions[1]["y_hat"], predictions[0]["y_hat"], 1e-10, "y_hat with dropout")
    fused_parameters = dict(fused_model.named_parameters())
    for name in ("head.net.0.weight", "head.net.0.bias", "input_gate.weight"):
        nh_grad = dict(nh_model.named_parameters())[name].grad
        assert_relatively_close(fused_parameters[name].grad, nh_grad, 1e-10, f"gradient of {name} with dropout")
    with torch.no_grad():
        assert not torch.allclose(predictions[1]["y_hat"], fused_model.eval()(data)["y_hat"]), \
            "dropout should change the output"


@pytest.mark.parametrize("head, switch, uses_it", [("regression", True, True), ("gmm", True, False),
                                                   ("regression", False, False)])
def test_cpu_regression_head_runs_time_major(monkeypatch, head, switch, uses_it):
    """A regression head on the CPU goes through ``dropout_linear`` (other heads, or ``time_major_head = False``,
    through NH's modules), and ``y_hat`` keeps NH's sample-major layout."""
    cfg = make_config(head=head, n_distributions=2)
    calls = []
    original = fused_module.dropout_linear
    monkeypatch.setattr(fused_module, "dropout_linear", lambda *args: calls.append(1) or original(*args))
    _, model = paired_models(cfg, torch.float64, "cpu")
    model.time_major_head = switch
    prediction = model(make_batch(cfg, batch_size=CPU_FUSED_MAX_BATCH + 8))
    assert bool(calls) == uses_it
    if head == "regression":
        assert prediction["y_hat"].is_contiguous()


def test_same_seed_gives_nh_initial_weights():
    cfg = make_config(statics_embedding={"type": "fc", "hiddens": [6], "activation": "tanh", "dropout": 0.0})
    torch.manual_seed(11)
    nh_model = EALSTM(cfg)
    torch.manual_seed(11)
    fused_model = FusedEALSTM(cfg)
    fused_as_nh = fused_model.nh_state_dict()
    for key, value in nh_model.state_dict().items():
        assert torch.equal(fused_as_nh[key], value), key


def test_round_trip_and_loading_nh_weights_directly():
    cfg = make_config()
    nh_model, fused_model = paired_models(cfg, torch.float32, "cpu")
    back = to_nh_ealstm(fused_model)
    for key, value in nh_model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    # an NH ealstm state dict (e.g. a model_epochNNN.pt of an ealstm run) loads into xb_ealstm as it is
    direct = FusedEALSTM(cfg)
    direct.load_state_dict(nh_model.state_dict())
    for key, value in nh_state_dict_to_fused(nh_model.state_dict()).items():
        assert torch.equal(direct.state_dict()[key], value), key


def test_cell_state_modes():
    cfg = make_config()
    _, model = paired_models(cfg, torch.float64, "cpu")
    data = make_batch(cfg)
    sequence = model(data)["c_n"]
    assert sequence.shape == (6, cfg.seq_length, cfg.hidden_size)
    model.cell_states = "auto"
    assert model(data)["c_n"].shape == (6, 1, cfg.hidden_size)  # gradients on: as in training
    with torch.no_grad():
        evaluated = model(data)["c_n"]                            # gradients off: only what NH reads (issue 11)
    assert evaluated.shape == (6, 1, cfg.hidden_size)
    assert_relatively_close(evaluated[:, 0], sequence[:, -1].detach(), 1e-12, "last cell state")
    model.cell_states = "last"
    with torch.no_grad():
        last = model(data)["c_n"]
    assert_relatively_close(last[:, 0], sequence[:, -1].detach(), 1e-12, "last cell state")
    model.cell_states = "all"
    with pytest.raises(ValueError, match="cell_states"):
        model(data)


def test_cpu_routes_the_fused_kernel_and_the_sequence_node_and_both_agree(monkeypatch):
    """CPU: forward passes without gradients and batches of at most CPU_FUSED_MAX_BATCH samples take the fused kernel
    (oneDNN), larger training batches the three-gate autograd node; in float64 the routes agree to rounding."""
    calls = []
    for name in ("fused_ealstm", "ealstm_sequence"):
        original = getattr(fused_module, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)
        monkeypatch.setattr(fused_module, name, spy)
    cfg = make_config()
    _, model = paired_models(cfg, torch.float64, "cpu")
    model.cell_states = "auto"
    large = make_batch(cfg, batch_size=CPU_FUSED_MAX_BATCH + 1)
    small = {"x_d": {k: v[:CPU_FUSED_MAX_BATCH] for k, v in large["x_d"].items()},
             "x_s": large["x_s"][:CPU_FUSED_MAX_BATCH]}
    trained = model(large)
    assert calls == ["ealstm_sequence"] and trained["y_hat"].requires_grad
    with torch.no_grad():
        evaluated = model(large)
    assert calls[1:] == ["fused_ealstm"]
    small_prediction = model(small)
    assert calls[2:] == ["fused_ealstm"] and small_prediction["y_hat"].requires_grad
    for key in ("y_hat", "h_n", "c_n"):
        assert_relatively_close(evaluated[key], trained[key].detach(), 1e-12, key)
        assert_relatively_close(small_prediction[key].detach(), trained[key][:CPU_FUSED_MAX_BATCH].detach(), 1e-12,
                                key)


def test_module_parts_cover_all_parameters_and_missing_statics_fail():
    cfg = make_config(statics_embedding={"type": "fc", "hiddens": [6], "activation": "tanh", "dropout": 0.0})
    model = FusedEALSTM(cfg)
    assert model.module_parts == EALSTM.module_parts
    in_parts = {id(p) for part in model.module_parts for p in getattr(model, part).parameters()}
    assert in_parts == {id(p) for p in model.parameters()}
    assert len(list(model.embedding_net["statics_embedding"].parameters())) == 2  # NH's finetune dict access
    data = make_batch(cfg)
    del data["x_s"]
    with pytest.raises(ValueError, match="x_s or x_one_hot"):
        model(data)


def test_registered_and_built_by_nh():
    import nh_crossbasin
    nh_crossbasin.register()
    from neuralhydrology.modelzoo import get_model
    model = get_model(make_config())
    assert isinstance(model, FusedEALSTM)
    from nh_crossbasin.registry import MODELS
    assert MODELS.get("XB_EALSTM") is FusedEALSTM
