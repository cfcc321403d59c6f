"""The analysis notebooks run top to bottom (nbclient, a real kernel) on a repository with
real tiny experiments, and are stored without outputs."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, build_experiments_repo

pytestmark = pytest.mark.e2e

NOTEBOOKS = ROOT / "notebooks"
NAMES = ["training_monitor", "performance_analysis", "error_analysis", "wandb_sweeps"]


@pytest.fixture(scope="session")
def exp_repo(tmp_path_factory, tiny_model) -> Path:
    # The same repository test_compare.py builds: built once per session, whichever runs first.
    return build_experiments_repo(tmp_path_factory.getbasetemp() / "experiments_repo", tiny_model)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs stored"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name, exp_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("SPELLTUNE_REPO", str(exp_repo))
    monkeypatch.setenv("SPELLTUNE_COMPARE_OUT", str(tmp_path / "compare"))
    monkeypatch.setenv("SPELLTUNE_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{name} drew no plot"
    text = "".join(o.get("text", "") for o in outputs)
    if name == "training_monitor":
        assert "100% done" in text  # the workspace's finished run
    if name == "performance_analysis":
        assert (tmp_path / "compare" / "compare.html").exists() and "vs base model" in text
    if name == "error_analysis":
        assert "experiment:" in text
    if name == "wandb_sweeps":  # offline: W&B's calls, a tracked pipeline run and a two-trial sweep, read back
        assert re.search(r"history: \[\(1, 2(\.0)?\), \(2, 1(\.0)?\)", text) and "summary: 0.42" in text, text
        assert re.search(r"'val/spelling_exact_match': 0(\.0)?[,}]", text) and "trials: 2" in text, text
        assert len(re.findall(r"val/spelling_exact_match 0(\.0)? group sweep-nb", text)) == 2, text
