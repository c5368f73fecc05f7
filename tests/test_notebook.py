"""The notebook runs top to bottom, headless, with the tiny config."""
from __future__ import annotations


import nbformat
import pytest
from nbclient import NotebookClient

from captionlab.paths import ROOT
from conftest import TINY

pytestmark = pytest.mark.slow


def test_cnn_gru_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTIONLAB_CONFIG", str(TINY))
    monkeypatch.setenv("CAPTIONLAB_OVERRIDES", f"train.output_dir={tmp_path / 'runs'} data.path={tmp_path / 'data'} "
                                               "data.synthetic_n=60 train.epochs=1")
    nb = nbformat.read(ROOT / "code" / "01_cnn_gru.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "CIDEr" in text and "METEOR" in text
    assert (tmp_path / "runs" / "tiny_cnn_gru" / "eval_test_beam3" / "metrics.json").is_file()
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # data grid, curves, captions under images
