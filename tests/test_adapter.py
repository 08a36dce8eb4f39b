"""The NH adapter: idempotent, reversible install; config key checks; version refusal; registries."""
from __future__ import annotations

import pytest
import torch

import nh_crossbasin
from nh_crossbasin import nh_adapter
from nh_crossbasin.registry import LOSSES, MODELS, Registry


def _nh_call_sites():
    import neuralhydrology.datasetzoo as datasetzoo
    import neuralhydrology.evaluation.tester as tester
    import neuralhydrology.modelzoo as modelzoo
    import neuralhydrology.training as training
    import neuralhydrology.training.basetrainer as basetrainer
    import neuralhydrology.training.train as train
    from neuralhydrology.utils.config import Config
    return {
        "modelzoo.get_model": modelzoo.get_model, "basetrainer.get_model": basetrainer.get_model,
        "tester.get_model": tester.get_model, "training.get_loss_obj": training.get_loss_obj,
        "basetrainer.get_loss_obj": basetrainer.get_loss_obj, "tester.get_loss_obj": tester.get_loss_obj,
        "datasetzoo.get_dataset": datasetzoo.get_dataset, "basetrainer.get_dataset": basetrainer.get_dataset,
        "tester.get_dataset": tester.get_dataset, "train.BaseTrainer": train.BaseTrainer,
        "Config._check_cfg_keys": Config.__dict__["_check_cfg_keys"],
    }


@pytest.fixture
def pristine_nh():
    """NH with the plugin uninstalled for the test (the start-up hook installed it); re-installed afterwards."""
    _nh_call_sites()  # importing NH lets the start-up hook act first
    was = nh_adapter.is_installed()
    nh_adapter.uninstall()
    nh_adapter.patches._HINT.restore()
    yield _nh_call_sites()
    nh_adapter.uninstall()
    if was:
        nh_crossbasin.register()


def test_install_is_idempotent_and_uninstall_restores_every_call_site(pristine_nh):
    nh_crossbasin.register()
    patched = _nh_call_sites()
    assert all(patched[k] is not pristine_nh[k] for k in pristine_nh)
    nh_crossbasin.register()
    assert _nh_call_sites() == patched
    nh_crossbasin.unregister()
    assert _nh_call_sites() == pristine_nh


def test_a_missing_call_site_is_named_and_nothing_is_patched(pristine_nh, monkeypatch):
    """A simulated NH release that renamed a call site: install() refuses, names it, and changes nothing."""
    import neuralhydrology.evaluation.tester as tester
    monkeypatch.delattr(tester, "get_model")
    with pytest.raises(RuntimeError, match=r"call site neuralhydrology\.evaluation\.tester\.get_model does not exist"):
        nh_crossbasin.register()
    assert not nh_adapter.is_installed()
    monkeypatch.undo()
    assert _nh_call_sites() == pristine_nh


def test_a_call_site_patched_by_someone_else_is_refused(pristine_nh, monkeypatch):
    import neuralhydrology.training.basetrainer as basetrainer
    monkeypatch.setattr(basetrainer, "get_loss_obj", lambda cfg: None)
    with pytest.raises(RuntimeError, match=r"basetrainer\.get_loss_obj does not hold NH's original"):
        nh_crossbasin.register()
    monkeypatch.undo()
    assert _nh_call_sites() == pristine_nh and not nh_adapter.is_installed()


def test_a_failing_patch_undoes_every_earlier_one(pristine_nh, monkeypatch):
    """All-or-nothing: the 5th patch fails; the 4 before it are undone and the error names the failing site."""
    real_set, calls = nh_adapter.patches._Patches.set, []

    def failing_set(self, target, attribute, value):
        calls.append(attribute)
        if len(calls) == 5:
            raise AttributeError("read-only")
        return real_set(self, target, attribute, value)

    monkeypatch.setattr(nh_adapter.patches._Patches, "set", failing_set)
    with pytest.raises(RuntimeError, match=r"could not patch NH's call site neuralhydrology\.training\.get_loss_obj"):
        nh_crossbasin.register()
    monkeypatch.undo()
    assert _nh_call_sites() == pristine_nh and not nh_adapter.is_installed()


def test_uninstall_restores_nhs_dataset_registry(pristine_nh):
    classes = nh_adapter.patches.nh_dataset_classes()
    before = dict(classes)
    nh_crossbasin.register()
    assert "xb_pooled" in classes
    nh_crossbasin.unregister()
    assert classes == before and "xb_pooled" not in classes


def test_context_manager_restores_prior_state(pristine_nh):
    with nh_crossbasin.activated():
        assert nh_adapter.is_installed()
        assert _nh_call_sites()["modelzoo.get_model"] is not pristine_nh["modelzoo.get_model"]
    assert _nh_call_sites() == pristine_nh
    nh_crossbasin.register()
    with nh_crossbasin.activated():
        pass
    assert nh_adapter.is_installed()


def test_refuses_untested_nh_version(pristine_nh, monkeypatch):
    monkeypatch.setattr(nh_adapter.patches, "nh_version", lambda: "2.0.0")
    monkeypatch.delenv(nh_adapter.ALLOW_UNTESTED_ENV, raising=False)
    with pytest.raises(RuntimeError, match=r"tested with neuralhydrology >= 1\.13, < 1\.14.*2\.0\.0.*"
                                           + nh_adapter.ALLOW_UNTESTED_ENV):
        nh_crossbasin.register()
    assert _nh_call_sites() == pristine_nh
    monkeypatch.setenv(nh_adapter.ALLOW_UNTESTED_ENV, "1")
    nh_crossbasin.register()
    assert nh_adapter.is_installed()


def _config(**keys):
    from neuralhydrology.utils.config import Config
    base = {"loss": "NSE", "target_variables": ["q"], "dynamic_inputs": ["p"], "predict_last_n": 1}
    base.update(keys)
    return Config(base)


def test_config_accepts_plugin_keys_and_rejects_unknown_ones_listing_plugin_keys():
    nh_crossbasin.register()
    assert _config(xb_nse_eps=0.2, xb_sampler="uniform").as_dict()["xb_nse_eps"] == 0.2
    with pytest.raises(ValueError) as err:
        _config(xb_samplr="uniform")
    text = str(err.value)
    assert "xb_samplr" in text and "did you mean 'xb_sampler'" in text and "xb_nse_eps" in text
    with pytest.raises(ValueError, match=r"\['not_a_key'\] are not recognized"):
        _config(not_a_key=1)


def test_plugin_value_errors_name_key_and_allowed_values():
    nh_crossbasin.register()
    with pytest.raises(ValueError, match=r"'xb_sampler': 'unifrom' is not allowed.*Allowed: one of .*'uniform'"
                                         r".*Did you mean 'uniform'"):
        _config(xb_sampler="unifrom")
    with pytest.raises(ValueError, match=r"'xb_nse_eps': -1 is not allowed \(must be >= 0"):
        _config(xb_nse_eps=-1)
    with pytest.raises(ValueError, match=r"'xb_nse_eps': 'big' is not allowed"):
        _config(xb_nse_eps="big")
    with pytest.raises(ValueError, match=r"'loss': 'xb_nse_str' is not an nh-crossbasin loss.*xb_nse_star"):
        _config(loss="xb_nse_str")


def test_nh_configs_without_plugin_names_use_nh_objects():
    nh_crossbasin.register()
    from neuralhydrology.modelzoo import get_model
    from neuralhydrology.modelzoo.cudalstm import CudaLSTM
    from neuralhydrology.training import get_loss_obj
    from neuralhydrology.training.loss import MaskedNSELoss
    cfg = _config(model="cudalstm", hidden_size=4, head="regression", initial_forget_bias=3, output_dropout=0.0)
    assert type(get_model(cfg)) is CudaLSTM
    assert type(get_loss_obj(cfg)) is MaskedNSELoss


def test_third_party_registration_is_resolved_by_nh():
    nh_crossbasin.register()
    from neuralhydrology.modelzoo import get_model
    from neuralhydrology.modelzoo.cudalstm import CudaLSTM

    class TinyLSTM(CudaLSTM):
        pass

    nh_crossbasin.register_model("my_tiny_lstm", TinyLSTM)
    try:
        cfg = _config(model="My_Tiny_LSTM", hidden_size=4, head="regression", initial_forget_bias=3,
                      output_dropout=0.0)
        assert type(get_model(cfg)) is TinyLSTM
    finally:
        MODELS.unregister("my_tiny_lstm")


def test_registry_rejects_wrong_base_class_and_duplicates():
    with pytest.raises(TypeError, match="not a subclass"):
        nh_crossbasin.register_loss("bad", torch.nn.Module)
    registry = Registry("thing", "xb_thing")
    registry.register("A", int)
    assert "a" in registry and registry.get("A") is int and registry.names() == ["a"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", float)
    registry.register("a", float, overwrite=True)
    assert registry.get("a") is float
    assert "xb_nse_star" in LOSSES


def test_readme_key_table_is_current():
    from pathlib import Path
    from nh_crossbasin import builtins, config_keys
    builtins.register_builtins()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert config_keys.markdown_table() in readme, "README key table is stale: paste config_keys.markdown_table()"
