"""Wall-clock records of cached work: when, in which process and on what a result was computed.

A record is a small JSON file, ``timing.json``, written into the artifact folder it describes
(before its manifest, so it is checked like every other file): the ``phase`` (``"base models"``,
``"activations"``, ...), ``started`` and ``ended`` (seconds since the epoch), the process id and
host, and ``parts`` (seconds of named parts of the work, such as ``data`` and ``train``). The
runner's own ``run.json`` carries the same ``started``/``ended``/``pid`` for every job.
:mod:`equisae.profile` reads both. A record never enters a cache hash or a results file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from equisae import io

__all__ = ["TIMING_FILE", "Stopwatch", "read_timing", "write_timing"]

#: the name of the record inside an artifact folder
TIMING_FILE = "timing.json"


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
