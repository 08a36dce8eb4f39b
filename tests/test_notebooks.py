"""Every notebook in notebooks/ runs top to bottom (tiny size), is committed without outputs, and writes only into
its work folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.slow


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart_synthetic.ipynb", "02_influence.ipynb",
                                           "03_ealstm_embedding.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    import nbformat
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("NH_XB_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("NH_XB_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("NH_CROSSBASIN_DISABLE", raising=False)
    before = sorted(p.relative_to(REPO) for p in (REPO / "notebooks").rglob("*"))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure was displayed"
    assert sorted(p.relative_to(REPO) for p in (REPO / "notebooks").rglob("*")) == before
    assert any((tmp_path / "work").rglob("model_epoch*.pt"))
    assert os.environ["NH_XB_NOTEBOOK_SMALL"] == "1"
    assert Path(tmp_path / "work").is_dir()
