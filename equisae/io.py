"""Atomic file writes, the results files notebooks publish, and configuration hashing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS_ENV = "EQUISAE_RESULTS"
ARTIFACTS_ENV = "EQUISAE_ARTIFACTS"
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, arrays, numpy scalars, dataclasses and paths into plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        if np.iscomplexobj(obj):
            return {"real": obj.real.tolist(), "imag": obj.imag.tolist()}
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Serialise ``obj`` (see :func:`to_jsonable`) to pretty JSON and write it atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    return atomic_write_bytes(path, (text + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with an error that names the file when it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSON file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def project_root() -> Path:
    """The folder results and artifacts are written under: the nearest parent with _config.yml."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_config.yml").is_file() and (folder / "equisae").is_dir():
            return folder
    return here


def results_dir(mode: str) -> Path:
    """``results/<mode>/`` under the project root (or under ``$EQUISAE_RESULTS``)."""
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")
    base = Path(os.environ.get(RESULTS_ENV, project_root() / "results"))
    return base / mode


def artifacts_dir() -> Path:
    """Where cached trained models and activations live (``$EQUISAE_ARTIFACTS`` or ./artifacts)."""
    return Path(os.environ.get(ARTIFACTS_ENV, project_root() / "artifacts"))


def save_results(mode: str, stem: str, results: Mapping[str, Any]) -> Path:
    """Write a notebook's headline numbers to ``results/<mode>/<stem>.json`` atomically."""
    return write_json_atomic(results_dir(mode) / f"{stem}.json", dict(results))


def load_results(mode: str, stem: str) -> dict[str, Any]:
    """Read back what :func:`save_results` wrote."""
    return read_json(results_dir(mode) / f"{stem}.json")


def config_hash(config: Any, length: int = 16) -> str:
    """A stable content hash of a configuration (dataclass, mapping or JSON-able value)."""
    text = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and numpy globally and return a torch generator seeded with ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    return torch.Generator().manual_seed(seed)
