"""Wall-clock records of cached work: when, in which process and on what a result was computed.

A record is a small JSON file, ``timing.json``, written into the artifact folder it describes
(before its manifest, so it is checked like every other file): the ``phase`` (``"base models"``,
``"activations"``, ...), ``started`` and ``ended`` (seconds since the epoch), the process id and
host, and ``parts`` (seconds of named parts of the work, such as ``data`` and ``train``). The
runner's own ``run.json`` carries the same ``started``/``ended``/``pid`` for every job.
:mod:`equisae.profile` reads both. A record never enters a cache hash or a results file.

Work a notebook's kernel does without caching it (the fits of notebook 03, the image-source
study of notebook 07) has no folder to hold a record: :func:`logged` (or the decorator
:func:`timed`) appends its record to the run's work log, ``$EQUISAE_WORKLOG`` (JSON lines),
which ``equisae reproduce`` sets to ``results/<mode>/run/work.jsonl`` (:func:`collecting`).
Without a log set they do nothing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from equisae import io

__all__ = [
    "SAE_EVALUATION",
    "TIMING_FILE",
    "WORKLOG_ENV",
    "WORKLOG_FILE",
    "Stopwatch",
    "collecting",
    "log_work",
    "logged",
    "read_timing",
    "read_worklog",
    "timed",
    "write_timing",
]

#: the name of the record inside an artifact folder
TIMING_FILE = "timing.json"
#: the phase of an SAE's evaluation on held-out orbits (with the pose inference it needs)
SAE_EVALUATION = "SAE evaluation and pose inference"
#: environment variable naming the run's work log (JSON lines) of uncached work
WORKLOG_ENV = "EQUISAE_WORKLOG"
#: the name of a run's work log in ``results/<mode>/run/``
WORKLOG_FILE = "work.jsonl"


@dataclass
class Stopwatch:
    """Times one piece of cached work from its creation to :meth:`stop`; :meth:`part` times
    a named part of it (parts may repeat: their seconds add up)."""

    phase: str
    started: float = field(default_factory=time.time)
    parts: dict[str, float] = field(default_factory=dict)
    ended: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.phase, str) or not self.phase.strip():
            raise ValueError(f"Stopwatch phase must be a non-empty string, got {self.phase!r}")

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to part ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - start

    def stop(self) -> dict[str, Any]:
        """Freeze the end time (on the first call) and return the record."""
        if self.ended is None:
            self.ended = time.time()
        return {
            "phase": self.phase,
            "started": self.started,
            "ended": self.ended,
            "seconds": self.ended - self.started,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "parts": dict(self.parts),
        }


def write_timing(folder: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``record`` (from :meth:`Stopwatch.stop`) as ``folder/timing.json``, atomically."""
    return io.write_json_atomic(Path(folder) / TIMING_FILE, record)


def read_timing(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The record in ``folder`` (None when there is none or it is not a JSON object)."""
    path = Path(folder) / TIMING_FILE
    if not path.is_file():
        return None
    try:
        record = io.read_json(path)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def log_work(record: dict[str, Any]) -> None:
    """Append ``record`` to the run's work log (``$EQUISAE_WORKLOG``); nothing when unset."""
    target = os.environ.get(WORKLOG_ENV)
    if not target:
        return
    line = (json.dumps(io.to_jsonable(record), sort_keys=True) + "\n").encode()
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)  # one write of one line: lines of concurrent processes stay whole
    finally:
        os.close(fd)


@contextlib.contextmanager
def logged(phase: str) -> Iterator[Stopwatch]:
    """Time the ``with`` block as ``phase`` and append its record to the work log (only when
    the block finishes)."""
    watch = Stopwatch(phase)
    yield watch
    log_work(watch.stop())


def timed(phase: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: every call of the function is :func:`logged` as ``phase``."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with logged(phase):
                return func(*args, **kwargs)

        return wrapper

    return decorate


@contextlib.contextmanager
def collecting(path: str | os.PathLike) -> Iterator[Path]:
    """Point ``$EQUISAE_WORKLOG`` at ``path`` for the ``with`` block (kernels and workers
    started in it inherit it), then restore the previous value."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get(WORKLOG_ENV)
    os.environ[WORKLOG_ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(WORKLOG_ENV, None)
        else:
            os.environ[WORKLOG_ENV] = previous


def read_worklog(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a work log (none when it does not exist; unreadable lines skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
