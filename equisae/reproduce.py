"""Run the notebooks in order with papermill, then build the Jupyter Book.

Each notebook executes into ``_build/executing/`` and is moved into ``book/notebooks/`` only when
it finished, with papermill's injected-parameters cell hidden and stderr/progress-bar outputs
stripped; a failed run is kept in ``_build/failed/`` for inspection. The book's notebooks are
those ``_toc.yml`` lists: a listed notebook without a source in ``notebooks/`` is an error, and
executed copies without a source are removed. After a run ``book/notebooks/build_info.json``
records the mode, commit, date, versions and injected parameters (read by the book's banner).

Provenance is kept per notebook: each executed copy carries, in its metadata under
``equisae``, the mode, commit, date and source hash (:func:`source_hash`) it ran from, and
``results/<mode>/run/notebooks.json`` records the same for every notebook whose last run of that
mode finished. A notebook whose source changed since it ran is stale: the book is not built
while one is, and the claims ledger's ``notebooks_run`` lists only notebooks that finished from
the current source. Cached artifacts that failed verification during the run are listed at the
end of the run, in ``build_info.json`` and in ``results/<mode>/run/repairs.jsonl``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from equisae import repairs, timing
from equisae.device import resolve_device, use_device
from equisae.io import (
    artifacts_dir,
    atomic_write_bytes,
    project_root,
    read_json,
    remove_stale_tmp,
    results_dir,
    write_json_atomic,
)
from equisae.modes import check_mode

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
EXECUTED_DIR = Path("book") / "notebooks"
EXECUTING_DIR = Path("_build") / "executing"
FAILED_DIR = Path("_build") / "failed"
TOC_FILE = "_toc.yml"
BUILD_INFO = "build_info.json"
HIDDEN_TAG = "remove-cell"
PROVENANCE_KEY = "equisae"  # the executed notebook's metadata entry of its provenance
RUN_DIR = "run"  # results/<mode>/run/: provenance and repairs of the runs of that mode
PROVENANCE_FILE = "notebooks.json"
REPAIRS_FILE = "repairs.jsonl"
TIMINGS_DIR = "timings"  # results/<mode>/timings/: wall times of the last runs
TIMINGS_FILE = "notebooks.json"  # seconds per notebook
BOOK_TIMING = "book.json"  # seconds of the last book build
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class NotebookFailed(RuntimeError):
    """A notebook raised while papermill executed it (the message is one line; ``detail`` holds
    the failing cell)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class BookBuildFailed(RuntimeError):
    """``jupyter-book build`` failed or could not be started."""


@dataclass(frozen=True)
class NotebookRun:
    """The outcome of one executed notebook."""

    name: str
    seconds: float


def source_notebooks(root: Path) -> list[Path]:
    """Every numbered notebook under ``root/notebooks``, in order."""
    folder = root / "notebooks"
    if not folder.is_dir():
        raise FileNotFoundError(f"no notebooks folder at {folder}")
    return sorted(folder.glob(NOTEBOOK_GLOB))


def find_notebooks(root: Path, only: Sequence[str] = ()) -> list[Path]:
    """The ordered notebooks under ``root/notebooks``, restricted to the prefixes in ``only``."""
    notebooks = source_notebooks(root)
    if not notebooks:
        raise FileNotFoundError(f"no notebooks matching {NOTEBOOK_GLOB} in {root / 'notebooks'}")
    if not only:
        return notebooks
    blank = [o for o in only if not str(o).strip()]
    if blank:
        raise ValueError("--only got an empty name; give a notebook number such as --only 03")
    wanted = [str(o).strip().zfill(2) if str(o).strip().isdigit() else str(o) for o in only]
    chosen = [nb for nb in notebooks if any(nb.stem.startswith(w) for w in wanted)]
    unknown = [w for w in wanted if not any(nb.stem.startswith(w) for nb in notebooks)]
    if unknown:
        known = ", ".join(nb.stem for nb in notebooks)
        raise ValueError(f"--only {', '.join(unknown)} matches no notebook; known: {known}")
    return chosen


def _toc_files(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("file"), str):
            yield node["file"]
        for value in node.values():
            yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def toc_notebooks(root: Path) -> list[str]:
    """Stems of the executed notebooks ``_toc.yml`` puts in the book (``book/notebooks/NN_x``)."""
    import yaml

    path = root / TOC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {TOC_FILE} at {path}; the book needs its table of contents")
    try:
        toc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from exc
    prefix = EXECUTED_DIR.as_posix() + "/"
    stems = []
    for entry in _toc_files(toc):
        if entry.startswith(prefix):
            stems.append(Path(entry[len(prefix) :]).with_suffix("").as_posix())
    return stems


def check_toc_sources(root: Path) -> list[str]:
    """The notebook stems of the book; FileNotFoundError if one has no source notebook."""
    stems = toc_notebooks(root)
    missing = [s for s in stems if not (root / "notebooks" / f"{s}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{TOC_FILE} lists book/notebooks/{missing[0]} but notebooks/{missing[0]}.ipynb "
            f"does not exist; restore the notebook or remove its entry from {TOC_FILE}"
        )
    return stems


def remove_stale_copies(root: Path) -> list[Path]:
    """Delete executed notebooks in ``book/notebooks`` whose source notebook no longer exists."""
    folder = root / EXECUTED_DIR
    sources = {p.name for p in source_notebooks(root)}
    stale = [p for p in sorted(folder.glob("*.ipynb")) if p.name not in sources]
    for path in stale:
        print(f"removing {path.relative_to(root)}: its source notebook is gone", flush=True)
        path.unlink()
    return stale


def hide_injected_parameters(path: Path) -> None:
    """Tag papermill's injected-parameters cell so the book does not render it."""
    nb = nbformat.read(path, as_version=4)
    if _hide_injected(nb):
        nbformat.write(nb, path)


def _hide_injected(nb: Any) -> bool:
    changed = False
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and HIDDEN_TAG not in tags:
            cell.setdefault("metadata", {})["tags"] = [*tags, HIDDEN_TAG]
            changed = True
    return changed


def _is_noise(output: Any) -> bool:
    """stderr streams (warnings, progress bars) and Jupyter widget outputs (tqdm bars)."""
    if output.get("output_type") == "stream":
        return output.get("name") == "stderr"
    return WIDGET_MIME in output.get("data", {})


def strip_noise(nb: Any) -> int:
    """Remove stderr stream outputs and widget outputs from a notebook; returns how many."""
    removed = 0
    for cell in nb.cells:
        outputs = cell.get("outputs")
        if not outputs:
            continue
        kept = [o for o in outputs if not _is_noise(o)]
        removed += len(outputs) - len(kept)
        cell["outputs"] = kept
    nb.metadata.pop("widgets", None)
    return removed


def failing_cell(path: Path) -> tuple[str, str]:
    """``(error line, failing cell source)`` of an executed notebook."""
    if not path.is_file():
        return "no executed notebook was written", ""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                source = cell.get("source", "")
                head = source if len(source) < 400 else source[:400] + " ..."
                evalue = str(output.get("evalue", "")).replace("\n", " ")
                return f"{output.get('ename')}: {evalue}", head
    return "no error output found", ""


def failing_cell_error(path: Path) -> str:
    """The error output of the first failing cell of an executed notebook, as plain text."""
    error, source = failing_cell(path)
    return f"in cell:\n{source}\n{error}" if source else f"({error})"


def source_hash(path: Path) -> str:
    """sha256 of a notebook's cell types and sources (not outputs or metadata)."""
    nb = nbformat.read(path, as_version=4)
    cells = [[cell.get("cell_type", ""), cell.get("source", "")] for cell in nb.cells]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def provenance(source: Path, mode: str, commit: str) -> dict[str, str]:
    """What a notebook runs from: mode, commit, date (UTC) and the hash of its source."""
    return {
        "mode": mode,
        "commit": commit,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source_sha256": source_hash(source),
    }


def executed_provenance(path: Path) -> dict[str, Any]:
    """The provenance an executed notebook carries ({} if none or unreadable)."""
    try:
        meta = json.loads(path.read_text()).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return {}
    found = meta.get(PROVENANCE_KEY) if isinstance(meta, dict) else None
    return dict(found) if isinstance(found, dict) else {}


def notebook_state(root: Path, stem: str) -> str:
    """``"current"`` (executed from today's source), ``"stale"`` (the source changed since,
    or the copy carries no provenance) or ``"missing"`` (never executed)."""
    executed = root / EXECUTED_DIR / f"{stem}.ipynb"
    if not executed.is_file():
        return "missing"
    source = root / "notebooks" / f"{stem}.ipynb"
    recorded = executed_provenance(executed).get("source_sha256")
    return "current" if source.is_file() and recorded == source_hash(source) else "stale"


def run_notebook(
    source: Path,
    target: Path,
    mode: str,
    cwd: Path,
    stamp: dict[str, str] | None = None,
    device: str = "cpu",
) -> NotebookRun:
    """Execute one notebook with papermill and move it to ``target`` only if it finished.

    ``stamp`` (see :func:`provenance`) is stored in the executed copy's metadata. ``device``
    (a resolved device type, see :mod:`equisae.device`) is injected as the notebook's
    ``device`` parameter; the kernel reads the run's device from ``$EQUISAE_DEVICE``.
    Raises NotebookFailed (one line: the notebook, the error, where the failed copy is) when a
    cell raises; ``target`` is then left as it was.
    """
    import papermill

    executing = cwd / EXECUTING_DIR / mode / source.name  # a quick and a full run may overlap
    executing.parent.mkdir(parents=True, exist_ok=True)
    executing.unlink(missing_ok=True)
    # Nobody watches progress bars inside papermill's kernels: keep them out of the book.
    os.environ.setdefault("TQDM_DISABLE", "1")
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(executing),
            parameters={"mode": mode, "device": device},
            kernel_name="python3",
            cwd=str(cwd),
            progress_bar=False,
        )
    except papermill.PapermillExecutionError as exc:
        failed = cwd / FAILED_DIR / source.name
        failed.parent.mkdir(parents=True, exist_ok=True)
        os.replace(executing, failed)
        error, cell = failing_cell(failed)
        full = any(text in error for text in ("No space left", "no space left", "Errno 28"))
        fix = "free disk space" if full else "fix the cell"
        raise NotebookFailed(
            f"notebook {source.name} failed ({mode} mode): {error}; the executed copy is "
            f"{failed}; {fix} and rerun with --only {source.stem[:2]}",
            detail=cell,
        ) from exc
    except BaseException:
        executing.unlink(missing_ok=True)
        raise
    nb = nbformat.read(executing, as_version=4)
    if stamp is not None:
        nb.metadata[PROVENANCE_KEY] = dict(stamp)
    _hide_injected(nb)
    strip_noise(nb)
    atomic_write_bytes(target, nbformat.writes(nb).encode())
    executing.unlink(missing_ok=True)
    return NotebookRun(source.stem, time.perf_counter() - start)


def build_book(root: Path) -> None:
    """Build the HTML book strictly (warnings are errors); BookBuildFailed if it fails."""
    exe = Path(sys.executable).with_name("jupyter-book")
    command = [str(exe) if exe.exists() else "jupyter-book", "build", str(root)]
    command += ["-W", "-n", "--keep-going", "--all"]
    print("building the book:", " ".join(command), flush=True)
    try:
        subprocess.run(command, check=True, cwd=root)
    except FileNotFoundError as exc:
        raise BookBuildFailed(
            f"cannot start {command[0]} ({exc.strerror}); install the environment "
            "(pip install -e .) or skip the book with --no-book"
        ) from None
    except subprocess.CalledProcessError as exc:
        raise BookBuildFailed(
            f"the book build failed (jupyter-book exit code {exc.returncode}); fix the "
            "warnings printed above, then rerun (or skip the book with --no-book)"
        ) from None


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def write_build_info(
    root: Path,
    mode: str,
    parameters: dict[str, Any],
    found_repairs: Sequence[repairs.Repair] = (),
) -> Path:
    """Write ``book/notebooks/build_info.json``: how and from what the book's notebooks ran.

    The top-level mode, commit and date are those of this run; ``notebooks`` holds each
    executed notebook's own provenance and state (current or stale); ``repairs`` lists the
    cached artifacts this run found damaged and recomputed.
    """
    import torch

    import equisae

    pages = {}
    for path in sorted((root / EXECUTED_DIR).glob("*.ipynb")):
        pages[path.stem] = {
            **executed_provenance(path),
            "state": notebook_state(root, path.stem),
        }
    info = {
        "mode": mode,
        "commit": _git_commit(root),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "equisae": equisae.__version__,
        "parameters": dict(parameters),
        "notebooks": pages,
        "repairs": [dataclasses.asdict(r) for r in found_repairs],
    }
    return write_json_atomic(root / EXECUTED_DIR / BUILD_INFO, info)


def _provenance_path(mode: str) -> Path:
    return results_dir(mode) / RUN_DIR / PROVENANCE_FILE


def read_run_provenance(mode: str) -> dict[str, dict[str, Any]]:
    """``results/<mode>/run/notebooks.json``: the provenance of each notebook's last finished
    run of ``mode`` ({} when missing or garbled)."""
    try:
        found = read_json(_provenance_path(mode))
    except (FileNotFoundError, ValueError):
        return {}
    return (
        {k: v for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}
    )


def _record_run(mode: str, stem: str, stamp: dict[str, str] | None) -> None:
    """Record that ``stem`` finished from ``stamp`` (or, with None, that its last run failed)."""
    known = read_run_provenance(mode)
    if stamp is None:
        known.pop(stem, None)
    else:
        known[stem] = dict(stamp)
    write_json_atomic(_provenance_path(mode), known)


def current_notebooks(root: Path, mode: str) -> list[str]:
    """The notebooks whose last run of ``mode`` finished from their current source."""
    out = []
    for stem, stamp in sorted(read_run_provenance(mode).items()):
        source = root / "notebooks" / f"{stem}.ipynb"
        if source.is_file() and stamp.get("source_sha256") == source_hash(source):
            out.append(stem)
    return out


def _read_timings(path: Path) -> dict[str, Any]:
    """Previous timings, or {} (with a one-line note) when the file is missing or garbled."""
    if not path.is_file():
        return {}
    try:
        previous = read_json(path)
    except (ValueError, OSError) as exc:
        print(f"warning: {exc}".replace("\n", " ") + "; replacing it", flush=True)
        return {}
    if not isinstance(previous, dict):
        print(f"warning: {path} does not hold a JSON object; replacing it", flush=True)
        return {}
    return previous


def _record_timing(mode: str, stem: str, seconds: float) -> None:
    """Add a finished notebook's wall time to ``results/<mode>/timings/notebooks.json`` (after
    each notebook, so that a run stopped part-way keeps the times of what finished)."""
    path = results_dir(mode) / TIMINGS_DIR / TIMINGS_FILE
    timings = _read_timings(path)
    timings[stem] = round(seconds, 1)
    write_json_atomic(path, timings)


def write_claims(mode: str, root: Path | None = None) -> Path | None:
    """The claims ledger of this run: ``results/<mode>/claims.json`` (:mod:`equisae.ledger`).

    Its ``notebooks_run`` lists only the notebooks whose last run finished from their current
    source (:func:`current_notebooks`), not every notebook that left a results file.
    """
    from equisae.ledger import LedgerSchemaError, build_ledger

    path = results_dir(mode) / "claims.json"
    try:
        ledger = build_ledger(results_dir(mode))
    except (LedgerSchemaError, FileNotFoundError, KeyError, TypeError, ValueError) as exc:
        # the notebooks ran and their results are saved: a ledger problem must not fail the run
        print(f"warning: no claims ledger written: {exc}", flush=True)
        return None
    current = set(current_notebooks(root or project_root(), mode))
    ledger["notebooks_run"] = [s for s in ledger["notebooks_run"] if s in current]
    write_json_atomic(path, ledger)
    print(f"claims ledger: {path}", flush=True)
    return path


def reproduce(
    mode: str,
    only: Sequence[str] = (),
    book: bool = True,
    root: Path | None = None,
    device: str = "auto",
) -> list[NotebookRun]:
    """Run the notebooks of ``mode`` in order, record their wall times, and build the book.

    ``device`` (``auto``, ``cpu``, ``cuda``, ``mps``; :func:`equisae.device.resolve_device`):
    where the kernels (and the Dask workers they start) train and evaluate; recorded in each
    notebook's provenance (``results/<mode>/run/notebooks.json``) and in ``build_info.json``."""
    check_mode(mode)
    where = resolve_device(device)  # a clear error before any notebook runs
    root = root or project_root()
    notebooks = find_notebooks(root, only)
    book_stems = check_toc_sources(root) if book else []
    remove_stale_copies(root)
    for folder in (artifacts_dir(), results_dir(mode)):
        for gone in remove_stale_tmp(folder):
            print(f"removed {gone}: left by an interrupted run", flush=True)
    parameters = {"mode": mode, "device": where.type}
    commit = _git_commit(root)
    runs: list[NotebookRun] = []
    worklog = results_dir(mode) / RUN_DIR / timing.WORKLOG_FILE
    if not only:  # a whole run starts a fresh log; --only adds to the last one
        worklog.unlink(missing_ok=True)
    with (
        use_device(where),
        repairs.collecting(results_dir(mode) / RUN_DIR / REPAIRS_FILE) as log_path,
        timing.collecting(worklog),
    ):
        try:
            for i, source in enumerate(notebooks, 1):
                print(f"[{i}/{len(notebooks)}] {source.stem} ({mode}) ...", flush=True)
                stamp = {**provenance(source, mode, commit), "device": where.type}
                try:
                    run = run_notebook(
                        source, root / EXECUTED_DIR / source.name, mode, root, stamp, where.type
                    )
                except NotebookFailed:
                    _record_run(mode, source.stem, None)
                    raise
                _record_run(mode, source.stem, stamp)
                _record_timing(mode, run.name, run.seconds)
                print(
                    f"[{i}/{len(notebooks)}] {source.stem} done in {run.seconds:.1f} s", flush=True
                )
                runs.append(run)
        finally:
            found = repairs.read_log(log_path)
            for line in repairs.summary_lines(found):
                print(line, flush=True)
    write_build_info(root, mode, parameters, found)
    write_claims(mode, root)
    if book:
        states = {stem: notebook_state(root, stem) for stem in book_stems}
        missing = [s for s, state in states.items() if state == "missing"]
        stale = [s for s, state in states.items() if state == "stale"]
        if missing or stale:
            reasons = []
            if missing:
                reasons.append(f"not yet executed: {', '.join(missing)}")
            if stale:
                reasons.append(f"stale (not executed from the current source): {', '.join(stale)}")
            print(f"not building the book: {'; '.join(reasons)}", flush=True)
        else:
            shutil.rmtree(root / "_build" / ".doctrees", ignore_errors=True)
            started = time.time()
            build_book(root)
            write_json_atomic(
                results_dir(mode) / TIMINGS_DIR / BOOK_TIMING,
                {"seconds": round(time.time() - started, 1), "started": started},
            )
    return runs
