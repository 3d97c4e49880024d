"""Execute notebooks/knn_vs_svm.ipynb top to bottom, as CI does, and check what it shows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, dataset_path

NOTEBOOK = ROOT / "notebooks" / "knn_vs_svm.ipynb"


@pytest.mark.dev
def test_notebook_is_committed_without_outputs() -> None:
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, "clear the notebook's outputs before committing it"
            assert cell.execution_count is None


def _kernel_dir(tmp_path: Path) -> Path:
    """A kernelspec folder whose "python3" kernel is this interpreter (the venv's python).

    Put first on JUPYTER_PATH, it wins over any "python3" kernel registered for the user or
    the system, which may run another Python without the package installed.
    """
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    kernel = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (exemplar-svm tests)",
        "language": "python",
    }
    (spec / "kernel.json").write_text(json.dumps(kernel), encoding="utf-8")
    return tmp_path / "jupyter"


@pytest.mark.slow
def test_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset_path("cranfield")  # skips, with a message, without the shared datasets
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_dir(tmp_path)))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [output for cell in code_cells for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 2, "expected the score-distribution and the metric-vs-C plots"
    markdown = "\n".join(output.get("data", {}).get("text/markdown", "") for output in outputs)
    text = "\n".join(output.get("text", "") for output in outputs)
    header = "| set | metric | knn | textbook svm | textbook hybrid | dense prf | default |"
    assert header in markdown
    assert "cranfield (test half)" in markdown
    assert "nDCG@10" in markdown
    assert "✓" in markdown, "the side-by-side tables mark the relevant documents"
    assert "cranfield: text queries" in text
    assert "best C is" in markdown
