"""The tour notebook runs top to bottom (its cells assert what they show) and stays clean."""

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "mixgen_tour.ipynb"


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code_cells) >= 10
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code_cells)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the kernel's sockets at shutdown
def test_notebook_runs_top_to_bottom_in_this_python():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # one more cell tells which interpreter ran the notebook
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    # jupyter_client runs a "python3" kernel spec whose argv starts with "python" under
    # sys.executable, so the kernel is this test's own environment.
    client = NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    printed = notebook.cells[-1].outputs[0]["text"].strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve()
    images = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 8  # every gallery was drawn
