"""Run the notebooks in order with papermill, then build the Jupyter Book."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

from equisae.io import project_root, read_json, results_dir, write_json_atomic

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
EXECUTED_DIR = Path("book") / "notebooks"
HIDDEN_TAG = "remove-cell"


class NotebookFailed(RuntimeError):
    """A notebook raised while papermill executed it."""


@dataclass(frozen=True)
class NotebookRun:
    """The outcome of one executed notebook."""

    name: str
    seconds: float


def find_notebooks(root: Path, only: Sequence[str] = ()) -> list[Path]:
    """The ordered notebooks under ``root/notebooks``, restricted to the prefixes in ``only``."""
    folder = root / "notebooks"
    if not folder.is_dir():
        raise FileNotFoundError(f"no notebooks folder at {folder}")
    notebooks = sorted(folder.glob(NOTEBOOK_GLOB))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks matching {NOTEBOOK_GLOB} in {folder}")
    if not only:
        return notebooks
    wanted = [str(o).zfill(2) if str(o).isdigit() else str(o) for o in only]
    chosen = [nb for nb in notebooks if any(nb.stem.startswith(w) for w in wanted)]
    unknown = [w for w in wanted if not any(nb.stem.startswith(w) for nb in notebooks)]
    if unknown:
        known = ", ".join(nb.stem for nb in notebooks)
        raise ValueError(f"--only {', '.join(unknown)} matches no notebook; known: {known}")
    return chosen


def hide_injected_parameters(path: Path) -> None:
    """Tag papermill's injected-parameters cell so the book does not render it."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and HIDDEN_TAG not in tags:
            cell.setdefault("metadata", {})["tags"] = [*tags, HIDDEN_TAG]
            changed = True
    if changed:
        nbformat.write(nb, path)


def failing_cell_error(path: Path) -> str:
    """The error output of the first failing cell of an executed notebook, as plain text."""
    if not path.is_file():
        return "(no executed notebook was written)"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                source = cell.get("source", "")
                head = source if len(source) < 400 else source[:400] + " ..."
                return f"in cell:\n{head}\n{output.get('ename')}: {output.get('evalue')}"
    return "(no error output found)"


def run_notebook(source: Path, target: Path, mode: str, cwd: Path) -> NotebookRun:
    """Execute one notebook with papermill into ``target``; raise NotebookFailed on an error."""
    import papermill

    target.parent.mkdir(parents=True, exist_ok=True)
    # Nobody watches progress bars inside papermill's kernels: keep them out of the book.
    os.environ.setdefault("TQDM_DISABLE", "1")
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters={"mode": mode},
            kernel_name="python3",
            cwd=str(cwd),
            progress_bar=False,
        )
    except papermill.PapermillExecutionError as exc:
        raise NotebookFailed(
            f"notebook {source.name} failed ({mode} mode):\n{failing_cell_error(target)}"
        ) from exc
    hide_injected_parameters(target)
    return NotebookRun(source.stem, time.perf_counter() - start)


def build_book(root: Path) -> None:
    """Build the HTML book strictly (warnings are errors)."""
    exe = Path(sys.executable).with_name("jupyter-book")
    command = [str(exe) if exe.exists() else "jupyter-book", "build", str(root)]
    command += ["-W", "-n", "--keep-going", "--all"]
    print("building the book:", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=root)


def reproduce(
    mode: str, only: Sequence[str] = (), book: bool = True, root: Path | None = None
) -> list[NotebookRun]:
    """Run the notebooks of ``mode`` in order, record their wall times, and build the book."""
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")
    root = root or project_root()
    notebooks = find_notebooks(root, only)
    runs: list[NotebookRun] = []
    for i, source in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {source.stem} ({mode}) ...", flush=True)
        run = run_notebook(source, root / EXECUTED_DIR / source.name, mode, root)
        print(f"[{i}/{len(notebooks)}] {source.stem} done in {run.seconds:.1f} s", flush=True)
        runs.append(run)
    timings_path = results_dir(mode) / "timings" / "notebooks.json"
    previous = read_json(timings_path) if timings_path.is_file() else {}
    previous.update({run.name: round(run.seconds, 1) for run in runs})
    write_json_atomic(timings_path, previous)
    executed = [root / EXECUTED_DIR / nb.name for nb in find_notebooks(root)]
    if book:
        missing = [p.name for p in executed if not p.is_file()]
        if missing:
            print(f"not building the book: not yet executed: {', '.join(missing)}", flush=True)
        else:
            shutil.rmtree(root / "_build" / ".doctrees", ignore_errors=True)
            build_book(root)
    return runs
