"""The notebooks follow the pipeline's conventions; after a quick run, they executed cleanly."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from equisae.io import read_json

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REQUIRED_STEMS = [
    "01_data",
    "02_base_models",
    "03_linear_representation",
    "04_planted_features",
    "05_frontier",
    "06_probing",
]
# notebooks added after the first six (real images, C4 against D4): checked when present
OPTIONAL_STEMS = ["07_digits", "08_dihedral", "09_gallery"]
EXPECTED_STEMS = [p.stem for p in NOTEBOOKS] or REQUIRED_STEMS


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_all_findings_are_present() -> None:
    stems = _ids(NOTEBOOKS)
    assert stems[: len(REQUIRED_STEMS)] == REQUIRED_STEMS
    unknown = set(stems) - set(REQUIRED_STEMS) - set(OPTIONAL_STEMS)
    assert not unknown, f"notebooks not known to the tests (add them to OPTIONAL_STEMS): {unknown}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_conventions(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# ")
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert "mode = " in params[0].source and "seed = " in params[0].source
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "sys.path" not in code, "notebooks import the installed package"
    assert "save_results(" in code, "headline numbers go through equisae.io.save_results"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, "source notebooks are committed without outputs"


@pytest.mark.notebooks
@pytest.mark.parametrize("stem", EXPECTED_STEMS)
def test_quick_run_executed_cleanly_and_wrote_results(stem: str) -> None:
    executed = ROOT / "book" / "notebooks" / f"{stem}.ipynb"
    assert executed.is_file(), f"run `equisae reproduce --mode quick` first ({executed})"
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and all("remove-cell" in c.metadata["tags"] for c in injected)
    assert "quick" in injected[0].source
    results = read_json(ROOT / "results" / "quick" / f"{stem}.json")
    assert results, f"{stem} wrote an empty results file"


LOCAL_PATH = re.compile(r"(?<![\w.~])/(?:work|tmp|root|home)/[\w.-]|PosixPath\(")


def _output_text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    data = output.get("data", {})
    return "".join("".join(data.get(kind, "")) for kind in ("text/plain", "text/markdown"))


@pytest.mark.notebooks
@pytest.mark.parametrize("stem", EXPECTED_STEMS)
def test_executed_outputs_are_what_a_reader_should_see(stem: str) -> None:
    """No stderr or progress bars, no local paths, every figure glued for a captioned figure."""
    executed = ROOT / "book" / "notebooks" / f"{stem}.ipynb"
    if not executed.is_file():
        pytest.skip(f"run `equisae reproduce --mode quick` first ({executed})")
    nb = nbformat.read(executed, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if "remove-cell" in cell.metadata.get("tags", []):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                problems.append(f"cell {i}: stderr output {_output_text(output)[:80]!r}")
            match = LOCAL_PATH.search(_output_text(output))
            if match:
                problems.append(f"cell {i}: local path in output near {match.group(0)!r}")
            glued = "scrapbook" in output.get("metadata", {})
            if "image/png" in output.get("data", {}) and not glued:
                problems.append(
                    f"cell {i}: a bare figure (plt.show); use equisae.display.glue_figure"
                )
    assert not problems, "\n".join(problems)
