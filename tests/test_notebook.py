"""docs/examples/quickstart.ipynb runs top to bottom (nbclient) and shows its plots inline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "examples" / "quickstart.ipynb"


@pytest.mark.slow
def test_notebook__quickstart_executes_and_plots(monkeypatch):
    """About a minute with a warm kernel cache (the suite's earlier tests compile it); the timeout
    leaves room for a cold cache on a loaded machine."""
    monkeypatch.setenv("RESTOCK_PROGRESS", "plain")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel process: torch on one thread
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.perf_counter()
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    took = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 2, "the cost breakdown and the learning curve draw inline"
    text = "".join(o.get("text", "") for o in outputs)
    assert "base_stock" in text and "total_cost" in text and "tiny_run [store learned" in text
    print(f"quickstart notebook: {took:.1f} s")
