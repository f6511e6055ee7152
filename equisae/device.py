"""Where the tensors live: ``auto``, ``cpu``, ``cuda`` or ``mps``, resolved in one place.

:func:`resolve_device` turns a name into a :class:`torch.device` (``auto``: CUDA when
``torch.cuda.is_available()``, else MPS when available, else the CPU) and raises a clear error
for a device this torch cannot use. The device of a run travels as ``$EQUISAE_DEVICE``
(:func:`use_device` sets it), so notebook kernels and Dask worker processes started from the
``equisae`` command see the same choice; library code reads it with :func:`current_device`,
which is the CPU when the variable is unset (the library's default, bit-identical to a run
without any device option).

Caches: a run on the CPU hashes exactly as before; on any other device
:func:`device_config` adds ``{"device": "cuda"}`` (or ``"mps"``) to the hashed configuration,
so GPU results (different floating-point order) get their own cache entries and never mix
with the CPU ones.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

__all__ = [
    "DEVICES",
    "DEVICE_ENV",
    "current_device",
    "device_config",
    "device_name",
    "resolve_device",
    "set_device",
    "use_device",
]

#: the names ``--device`` accepts
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
#: the environment variable carrying the run's device to kernels and workers
DEVICE_ENV = "EQUISAE_DEVICE"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The :class:`torch.device` for ``device`` (``auto``/None: cuda, else mps, else cpu).

    Accepts the names of :data:`DEVICES`, an indexed CUDA device (``"cuda:1"``) or a
    ``torch.device``. Raises ValueError for another name and RuntimeError when the device is
    not available to this torch (naming it and how to choose another)."""
    if device is None:
        device = "auto"
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r} is not a valid torch device: {exc}") from None
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {device!r} was asked for but torch.cuda.is_available() is False "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                "use --device cpu or --device auto"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {device!r} was asked for but only {torch.cuda.device_count()} "
                "CUDA device(s) are visible"
            )
    if kind == "mps" and not _mps_available():
        raise RuntimeError(
            f"device {device!r} was asked for but torch.backends.mps.is_available() is False; "
            "use --device cpu or --device auto"
        )
    return resolved


def current_device() -> torch.device:
    """The run's device: ``$EQUISAE_DEVICE`` resolved, the CPU when it is unset or empty."""
    return resolve_device(os.environ.get(DEVICE_ENV) or "cpu")


def device_name(device: str | torch.device | None = None) -> str:
    """The device type as recorded in results (``"cpu"``, ``"cuda"``, ``"mps"``); the run's
    device when ``device`` is None."""
    resolved = current_device() if device is None else resolve_device(device)
    return resolved.type


def device_config(device: str | torch.device | None = None) -> dict[str, Any]:
    """The hashed configuration entry of a device: ``{}`` on the CPU (caches unchanged),
    ``{"device": type}`` elsewhere. The run's device when ``device`` is None."""
    name = device_name(device)
    return {} if name == "cpu" else {"device": name}


def set_device(device: str | torch.device | None) -> torch.device:
    """Resolve ``device`` and make it the run's device from now on (``$EQUISAE_DEVICE``): what
    a notebook's ``device`` parameter is for when the notebook is run by hand."""
    resolved = resolve_device(device)
    os.environ[DEVICE_ENV] = str(resolved)
    return resolved


@contextlib.contextmanager
def use_device(device: str | torch.device | None) -> Iterator[torch.device]:
    """Resolve ``device`` and set ``$EQUISAE_DEVICE`` to it while the block runs (processes
    started inside inherit it); the previous value is restored afterwards."""
    resolved = resolve_device(device)
    previous = os.environ.get(DEVICE_ENV)
    os.environ[DEVICE_ENV] = str(resolved)
    try:
        yield resolved
    finally:
        if previous is None:
            os.environ.pop(DEVICE_ENV, None)
        else:
            os.environ[DEVICE_ENV] = previous
