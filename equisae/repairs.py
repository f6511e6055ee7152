"""One record of every cached artifact that failed verification and was recomputed.

Readers of caches (base models, orbit activations, runner artifacts) call :func:`report` when a
cache fails its manifest check and is about to be rebuilt. The record is logged as a warning,
kept in this process, and, while a run collects repairs (:func:`collecting`), appended as one
JSON line to the run's log file, whose path travels in ``$EQUISAE_REPAIRS`` to papermill
kernels and Dask workers. ``equisae reproduce`` and ``equisae sweep`` read the log back for
their terminal summary and their results (:func:`summary_lines`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from equisae.io import log

REPAIRS_ENV = "EQUISAE_REPAIRS"


@dataclass(frozen=True)
class Repair:
    """A cached artifact that failed verification: where, what failed, and what was done."""

    artifact: str  # the cache folder
    problem: str  # one line naming the file and what failed
    action: str  # what is done about it ("retraining cnn_augmented", "extracting again", ...)

    def line(self) -> str:
        """The line shown in a run's summary."""
        return f"{self.artifact}: {self.problem}; {self.action}"


_SEEN: list[Repair] = []


def report(artifact: str | os.PathLike, problem: str, action: str) -> Repair:
    """Record that ``artifact`` failed verification (``problem``) and is being ``action``."""
    repair = Repair(str(artifact), " ".join(str(problem).split()), action)
    log.warning("%s", repair.line())
    _SEEN.append(repair)
    target = os.environ.get(REPAIRS_ENV)
    if target:
        line = (json.dumps(asdict(repair), sort_keys=True) + "\n").encode()
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)  # one write of one line: appends do not interleave
            finally:
                os.close(fd)
        except OSError as exc:  # the repair itself must go on; the warning above stands
            log.warning("cannot record the repair in %s (%s)", target, exc.strerror or exc)
    return repair


def in_process() -> list[Repair]:
    """The repairs reported by this process so far."""
    return list(_SEEN)


def read_log(path: str | os.PathLike) -> list[Repair]:
    """The repairs in a JSON-lines log, in order, without duplicates; [] if there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    found: list[Repair] = []
    for text in path.read_text().splitlines():
        try:
            repair = Repair(**json.loads(text))
        except (ValueError, TypeError):
            continue  # a line cut by a killed writer
        if repair not in found:
            found.append(repair)
    return found


@contextlib.contextmanager
def collecting(log_path: str | os.PathLike) -> Iterator[Path]:
    """Collect the repairs of a run (this process and its children) in a fresh ``log_path``."""
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    previous = os.environ.get(REPAIRS_ENV)
    os.environ[REPAIRS_ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(REPAIRS_ENV, None)
        else:
            os.environ[REPAIRS_ENV] = previous


def summary_lines(repairs: list[Repair]) -> list[str]:
    """The lines a run prints about its repairs (none when every cache was intact)."""
    if not repairs:
        return []
    head = f"{len(repairs)} cached artifact(s) failed verification and were recomputed:"
    return [head, *(f"  {r.line()}" for r in repairs)]
