"""Atomic file and folder writes, verified artifacts, results files and configuration hashing.

Every cache folder (base models, activations, sweep artifacts) is written with
:func:`atomic_folder` (a temporary sibling, fsynced, renamed into place; removed on error) and
carries a ``manifest.json`` of the sha256 of its files (:func:`write_manifest`), checked on load
with :func:`verify_manifest`, so a truncated or altered file is detected, reported and
recomputed. Artifacts get the permissions of the umask (folders 0755, files 0644 under the usual
umask 022), so cluster workers of another user of the same group can read them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from equisae.modes import check_mode

RESULTS_ENV = "EQUISAE_RESULTS"
ARTIFACTS_ENV = "EQUISAE_ARTIFACTS"
MANIFEST_FILE = "manifest.json"
TMP_PREFIX = ".tmp-"
_UMASK = os.umask(0)
os.umask(_UMASK)
#: Permissions of artifact folders and files under the process umask (0755 / 0644 under 022).
DIR_MODE = 0o777 & ~_UMASK
FILE_MODE = 0o666 & ~_UMASK

log = logging.getLogger("equisae")


_FULL = (errno.ENOSPC, errno.EDQUOT)


def _disk_full(exc: BaseException, path: Path) -> BaseException:
    """``exc``, or for a full disk or quota an OSError naming ``path`` and the fix."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return OSError(
            exc.errno,
            f"no space left to write {path} ({os.strerror(exc.errno)}); free disk space or "
            f"point {ARTIFACTS_ENV} / {RESULTS_ENV} at a larger disk, then rerun",
        )
    return exc


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp creates 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        named = _disk_full(exc, path)
        if named is not exc:
            raise named from exc
        raise
    return path


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - some filesystems refuse to open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - fsync of a folder is not supported everywhere
        pass
    finally:
        os.close(fd)


def _finish_tree(folder: Path) -> None:
    """Give every file and folder under ``folder`` the umask permissions and fsync it."""
    for sub in (folder, *folder.rglob("*")):
        if sub.is_symlink():
            continue
        os.chmod(sub, DIR_MODE if sub.is_dir() else FILE_MODE)
        _fsync(sub)


#: a temporary folder's name: ``.tmp-<name>~<host>.<pid>-<8 hex>`` (``.old`` when discarded)
_TMP_OWNER = re.compile(r"~(?P<host>[^~/]+)\.(?P<pid>\d+)-[0-9a-f]{8}(?:\.old)?$")


def _tmp_name(name: str, suffix: str = "") -> str:
    """A temporary sibling's name that says which process on which host writes it."""
    owner = f"{socket.gethostname()}.{os.getpid()}"
    return f"{TMP_PREFIX}{name}~{owner}-{uuid.uuid4().hex[:8]}{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to another user
        return True
    return True


def _newest_mtime(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for sub in folder.rglob("*"):
        with contextlib.suppress(OSError):
            times.append(sub.lstat().st_mtime)
    return max(times)


def is_stale_tmp(folder: Path, max_age_s: float = 3600.0) -> bool:
    """True if ``folder`` is a temporary folder nobody writes any more: its writer (a process
    of this host) has exited, or nothing in it changed for ``max_age_s`` seconds."""
    if not folder.name.startswith(TMP_PREFIX) or not folder.is_dir() or folder.is_symlink():
        return False
    match = _TMP_OWNER.search(folder.name)
    if match and match["host"] == socket.gethostname() and not _pid_alive(int(match["pid"])):
        return True
    try:
        return time.time() - _newest_mtime(folder) >= max_age_s
    except OSError:
        return False


def remove_stale_tmp(root: str | os.PathLike, max_age_s: float = 3600.0) -> list[Path]:
    """Remove the temporary folders interrupted writers left in ``root`` and its subfolders
    (two levels: ``artifacts/models/.tmp-*``, ``artifacts/<kind>/.tmp-*``); returns them."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for folder in sorted({*root.glob(f"{TMP_PREFIX}*"), *root.glob(f"*/{TMP_PREFIX}*")}):
        if is_stale_tmp(folder, max_age_s):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed


def _discard(folder: Path) -> None:
    """Remove ``folder`` by renaming it aside first, so readers never see it half-deleted."""
    trash = folder.parent / _tmp_name(folder.name, ".old")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(
    path: str | os.PathLike, keep: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Write a folder atomically: yield a temporary sibling, then rename it to ``path``.

    Files written into the yielded folder are fsynced and given the umask permissions before
    the rename. If the block raises, the temporary folder is removed and ``path`` is untouched.
    If ``path`` already exists it is replaced, unless ``keep(path)`` is true (another process
    finished the same artifact first), in which case the new folder is discarded.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / _tmp_name(path.name)
    tmp.mkdir()
    os.chmod(tmp, DIR_MODE)
    try:
        yield tmp
        _finish_tree(tmp)
        if path.exists():
            if keep is not None and keep(path):
                shutil.rmtree(tmp, ignore_errors=True)
                return
            _discard(path)
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path.exists() and (keep is None or keep(path))):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # lost a race to an equivalent writer
            return
        _fsync(path.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        named = _disk_full(exc, path)
        if named is not exc:
            raise named from exc
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE
    )


def write_manifest(folder: str | os.PathLike) -> Path:
    """Write ``folder/manifest.json``: ``{"files": {relative path: sha256}}`` of every file."""
    folder = Path(folder)
    files = {name: sha256_file(folder / name) for name in _manifest_files(folder)}
    return write_json_atomic(folder / MANIFEST_FILE, {"files": files})


def verify_manifest(folder: str | os.PathLike, required: tuple[str, ...] = ()) -> str | None:
    """Check ``folder`` against its manifest: None if intact, else one line naming the problem.

    Detects a missing or unreadable manifest, a missing, altered or truncated file, a file not
    in the manifest, and a ``required`` file the manifest does not list.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} does not exist"
    try:
        files = read_json(folder / MANIFEST_FILE)["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        return f"{folder / MANIFEST_FILE}: unreadable manifest ({exc})".replace("\n", " ")
    missing = [name for name in required if name not in files]
    if missing:
        return f"{folder / MANIFEST_FILE} does not list {missing}"
    present = set(_manifest_files(folder))
    for name, digest in files.items():
        if name not in present:
            return f"{folder / name} is listed in the manifest but missing"
        try:
            actual = sha256_file(folder / name)
        except OSError as exc:
            return f"{folder / name} is unreadable ({exc})"
        if actual != digest:
            return f"{folder / name} does not match its checksum (altered or truncated)"
    extra = present - set(files)
    if extra:
        return f"{folder}: files not in the manifest: {sorted(extra)}"
    return None


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
    check_mode(mode)
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
