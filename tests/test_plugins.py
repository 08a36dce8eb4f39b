"""Third-party entries reach the unmodified ``nh-run`` by being installed: real entry-point metadata (a
``.dist-info`` folder with ``entry_points.txt`` on the path, which ``importlib.metadata`` reads exactly as for a
pip-installed package), a model with its own config key, and a broken package that is named and skipped."""
from __future__ import annotations

import textwrap

import pytest

from conftest import run_cli, single_run_dir, synth_config, write_yaml

pytestmark = pytest.mark.slow

TINY_PLUGIN = '''
import torch
from neuralhydrology.modelzoo.basemodel import BaseModel

from nh_crossbasin import register_model
from nh_crossbasin.config_keys import ConfigKey


@register_model("tiny_linear")
class TinyLinear(BaseModel):
    """A linear map of the dynamic inputs: the smallest NH model there is."""

    module_parts = ["linear"]
    config_keys = (ConfigKey("xb_tiny_scale", 1.0, "output scale of tiny_linear", types=(float,)),)

    def __init__(self, cfg):
        super().__init__(cfg=cfg)
        self.scale = float(cfg.as_dict().get("xb_tiny_scale", 1.0))
        self.linear = torch.nn.Linear(len(cfg.dynamic_inputs), self.output_size)

    def forward(self, data):
        x = torch.cat([data["x_d"][name] for name in self.cfg.dynamic_inputs], dim=-1)
        return {"y_hat": self.scale * self.linear(x)}
'''


def _distribution(site, name, entry_points):
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nh_crossbasin.plugins]\n" + entry_points + "\n")


def test_an_installed_package_adds_a_model_and_a_broken_one_is_named_and_skipped(tmp_path, synth_data):
    site = tmp_path / "site"
    (site / "tiny_xb_plugin").mkdir(parents=True)
    (site / "tiny_xb_plugin" / "__init__.py").write_text(textwrap.dedent(TINY_PLUGIN))
    _distribution(site, "tiny-xb-plugin", "tiny = tiny_xb_plugin")
    _distribution(site, "broken-xb-plugin", "broken = no_such_module_for_nh_crossbasin")
    parent = tmp_path / "runs"
    parent.mkdir()
    config = write_yaml(tmp_path / "tiny.yml", synth_config(
        synth_data, parent, model="tiny_linear", xb_tiny_scale=2.0, loss="xb_nse_star", epochs=1,
        max_updates_per_epoch=3, static_attributes=[]))
    proc = run_cli(["nh-run", "train", "--config-file", config], cwd=tmp_path, env={"PYTHONPATH": str(site)})
    run_dir = single_run_dir(parent)
    assert (run_dir / "model_epoch001.pt").exists()
    assert "xb_tiny_scale: 2.0" in (run_dir / "config.yml").read_text()
    assert "broken-xb-plugin" in proc.stderr and "'broken'" in proc.stderr and "skipped" in proc.stderr
    # without the package on the path, the same config names the unknown key (nothing registered it)
    other = tmp_path / "runs_without"
    other.mkdir()
    config = write_yaml(tmp_path / "tiny2.yml", synth_config(
        synth_data, other, model="tiny_linear", xb_tiny_scale=2.0, loss="xb_nse_star", epochs=1,
        max_updates_per_epoch=3, static_attributes=[]))
    failed = run_cli(["nh-run", "train", "--config-file", config], cwd=tmp_path, check=False)
    assert failed.returncode != 0 and "xb_tiny_scale" in failed.stderr and list(other.iterdir()) == []
