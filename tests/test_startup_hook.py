"""The start-up hook: lazy in processes that never import NH, active when NH is imported, off with the env var."""
from __future__ import annotations

import sysconfig
from pathlib import Path

from conftest import run_cli

HEAVY = ("torch", "neuralhydrology", "nh_crossbasin", "numpy", "pandas")


def _python(code: str, tmp_path: Path, env=None, check=True):
    return run_cli(["python", "-c", code], cwd=tmp_path, env=env, check=check)


def test_process_without_nh_imports_nothing_heavy(tmp_path):
    out = _python("import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in "
                  f"{HEAVY!r})); print('_nh_crossbasin_startup' in sys.modules)", tmp_path).stdout.split("\n")
    assert out[0] == "[]", f"start-up imported {out[0]}"
    assert out[1] == "True", "the start-up hook did not run: is the package installed (pip install .)?"
    importtime = run_cli(["python", "-X", "importtime", "-c", "pass"], cwd=tmp_path).stderr
    hook_lines = [line for line in importtime.splitlines() if "_nh_crossbasin_startup" in line]
    assert hook_lines and not any(name in importtime for name in ("torch", "neuralhydrology"))


def test_importing_nh_activates_plugin(tmp_path):
    out = _python("import neuralhydrology.training as t; from nh_crossbasin import nh_adapter; "
                  "print(nh_adapter.is_installed(), t.get_loss_obj.__module__)", tmp_path).stdout.split()
    assert out == ["True", "nh_crossbasin.nh_adapter.patches"]


def test_disable_env_switches_plugin_off_with_a_helpful_message(tmp_path):
    code = ("from neuralhydrology.utils.config import Config\n"
            "from nh_crossbasin import nh_adapter\n"
            "print(nh_adapter.is_installed())\n"
            "Config({'loss': 'NSE', 'target_variables': ['q'], 'dynamic_inputs': ['p']})\n"
            "print('plain NH config ok')\n"
            "Config({'loss': 'xb_nse_star', 'target_variables': ['q'], 'dynamic_inputs': ['p']})\n")
    proc = _python(code, tmp_path, env={"NH_CROSSBASIN_DISABLE": "1"}, check=False)
    assert proc.returncode != 0
    assert proc.stdout.split("\n")[:2] == ["False", "plain NH config ok"]
    assert "NH_CROSSBASIN_DISABLE=1 is set" in proc.stderr
    assert "unsetting NH_CROSSBASIN_DISABLE" in proc.stderr and "nh_crossbasin.register()" in proc.stderr


def test_start_files_name_the_hook_entry_point():
    purelib = Path(sysconfig.get_paths()["purelib"])
    assert (purelib / "nh_crossbasin.pth").read_text().strip() == \
        "import _nh_crossbasin_startup; _nh_crossbasin_startup.install()"
    module, _, func = (purelib / "nh_crossbasin.start").read_text().strip().partition(":")
    import importlib
    assert callable(getattr(importlib.import_module(module), func))


def test_any_import_order_activates_cleanly(tmp_path):
    for code in ("import nh_crossbasin; nh_crossbasin.register()",
                 "from nh_crossbasin.nh.losses import NSEStarLoss",
                 "import neuralhydrology.nh_run"):
        proc = _python(code + "; from nh_crossbasin import nh_adapter; "
                       "print(nh_adapter.is_installed(), bool(nh_adapter.patches._HINT))", tmp_path)
        assert proc.stdout.split() == ["True", "False"], code
        assert "nh-crossbasin" not in proc.stderr, f"{code}: {proc.stderr}"
