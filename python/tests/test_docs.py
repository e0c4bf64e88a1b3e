"""The Python the project documents runs as written: the README's Python blocks and
examples/fleet-capacity.ipynb (executed headless, so that neither can rot)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
NOTEBOOK = ROOT / "examples" / "fleet-capacity.ipynb"


@pytest.fixture(autouse=True)
def _no_display(monkeypatch, tmp_path):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)


@pytest.mark.skipif(not README.is_file(), reason="run from a clone of the repository")
def test_the_readme_python_blocks_run():
    # The blocks of the package; the others read what the README's shell commands wrote.
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if "import infersim" in b]
    assert blocks, "the README has a Python example"
    pytest.importorskip("matplotlib")
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})


@pytest.mark.skipif(not NOTEBOOK.is_file(), reason="run from a clone of the repository")
def test_the_fleet_capacity_notebook_runs():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": os.getcwd()}}).execute()
    printed = "".join(
        out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert re.search(r"capacity: \d+ requests/s", printed), printed
