"""The papermill pipeline behind `equisae reproduce`, on throwaway notebooks."""

from __future__ import annotations

import nbformat
import pytest

from equisae import cli
from equisae.reproduce import (
    NotebookFailed,
    find_notebooks,
    hide_injected_parameters,
    reproduce,
)


def _notebook(path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('mode = "full"\nseed = 0')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setenv("EQUISAE_RESULTS", str(tmp_path / "results"))
    return tmp_path


def test_find_notebooks_orders_and_filters(project) -> None:
    for name in ("02_b", "01_a", "10_c"):
        _notebook(project / "notebooks" / f"{name}.ipynb", "pass")
    assert [p.stem for p in find_notebooks(project)] == ["01_a", "02_b", "10_c"]
    assert [p.stem for p in find_notebooks(project, ["2", "10"])] == ["02_b", "10_c"]
    with pytest.raises(ValueError, match="07"):
        find_notebooks(project, ["07"])


def test_missing_notebooks_folder_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="notebooks"):
        find_notebooks(tmp_path)


@pytest.mark.slow
def test_reproduce_injects_mode_hides_parameters_and_stops_on_failure(project) -> None:
    _notebook(project / "notebooks" / "01_ok.ipynb", "assert mode == 'quick'")
    _notebook(project / "notebooks" / "02_bad.ipynb", "raise RuntimeError('boom in cell')")
    _notebook(project / "notebooks" / "03_never.ipynb", "pass")
    with pytest.raises(NotebookFailed, match=r"02_bad(.|\n)*boom in cell"):
        reproduce("quick", book=False, root=project)
    executed = project / "book" / "notebooks"
    assert (executed / "01_ok.ipynb").is_file()
    assert not (executed / "03_never.ipynb").exists()
    nb = nbformat.read(executed / "01_ok.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    assert "quick" in injected[0].source


def test_hide_injected_parameters_is_idempotent(tmp_path) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("mode = 'quick'")
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells = [cell]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    hide_injected_parameters(path)
    hide_injected_parameters(path)
    tags = nbformat.read(path, as_version=4).cells[0].metadata["tags"]
    assert tags == ["injected-parameters", "remove-cell"]


def test_cli_rejects_unknown_mode(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--mode", "medium"])
    assert "invalid choice" in capsys.readouterr().err
