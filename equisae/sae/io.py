"""Save and load SAEs as a folder with ``cfg.json`` and ``sae_weights.safetensors``.

The layout and names follow SAELens: tensors ``W_enc`` (d_in, d_sae), ``b_enc``, ``W_dec``
(d_sae, d_in), ``b_dec``; cfg fields ``architecture``, ``d_in``, ``d_sae``, ``dtype``,
``device``, ``apply_b_dec_to_input``, ``normalize_activations`` (and ``k`` for TopK), so a
TopK SAE saved here can be read by SAELens' ``SAE.load_from_disk``. Our own fields (seed,
aux settings, ``equisae_architecture`` for architectures whose SAELens name differs) ride
along; any extra tensors in ``state_dict()`` (e.g. an equivariant SAE's ``M``) are saved too.
The folder is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import equisae
from equisae.io import (
    MANIFEST_FILE,
    atomic_folder,
    read_json,
    to_jsonable,
    verify_manifest,
    write_json_atomic,
    write_manifest,
)
from equisae.sae.base import SparseAutoencoder, get_architecture

__all__ = ["CFG_FILENAME", "WEIGHTS_FILENAME", "load_sae", "save_sae", "verify_loaded"]

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
#: our architecture name -> the SAELens name of the same inference architecture
SAELENS_ARCHITECTURE = {"relu": "standard", "topk": "topk"}


def _saelens_config(sae: SparseAutoencoder, metadata: dict[str, Any] | None) -> dict[str, Any]:
    cfg = dict(sae.config())
    ours = cfg["architecture"]
    cfg["equisae_architecture"] = ours
    cfg["architecture"] = SAELENS_ARCHITECTURE.get(ours, ours)
    cfg["device"] = "cpu"
    cfg.setdefault("apply_b_dec_to_input", True)
    cfg.setdefault("normalize_activations", "none")
    cfg.setdefault("reshape_activations", "none")
    if ours == "topk":
        cfg.setdefault("rescale_acts_by_decoder_norm", False)
    cfg.setdefault("metadata", {})
    if metadata:
        cfg["metadata"] = {**cfg["metadata"], **to_jsonable(dict(metadata))}
    cfg["equisae_version"] = equisae.__version__
    return cfg


def save_sae(
    sae: SparseAutoencoder, folder: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``sae`` to ``folder`` (replaced atomically if it exists); returns the folder.

    ``metadata`` (JSON values: the provenance, e.g. model, layer, group, data hash) is stored
    in ``cfg.json["metadata"]`` and read back by :func:`load_config`."""
    if not isinstance(sae, SparseAutoencoder):
        raise ValueError(f"sae must be a SparseAutoencoder, got {type(sae).__name__}")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: t.detach().to("cpu").contiguous().clone() for name, t in sae.state_dict().items()
    }
    with atomic_folder(folder) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILENAME), metadata={"format": "pt"})
        write_json_atomic(tmp / CFG_FILENAME, _saelens_config(sae, metadata))
        write_manifest(tmp)
    return folder


def load_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``cfg.json`` of a saved SAE, with ``architecture`` set to our registry name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"SAE folder not found: {folder}")
    cfg = read_json(folder / CFG_FILENAME)
    if not isinstance(cfg, dict) or "architecture" not in cfg:
        raise ValueError(f"{folder / CFG_FILENAME} has no 'architecture' field")
    cfg = dict(cfg)
    cfg["architecture"] = cfg.pop("equisae_architecture", cfg["architecture"])
    return cfg


def load_sae(
    folder: str | os.PathLike, device: str | torch.device = "cpu", *, trust: bool = False
) -> SparseAutoencoder:
    """Rebuild a saved SAE of any registered architecture, in eval mode.

    The folder must pass its ``manifest.json`` check (a folder without one, e.g. written by
    another tool, is loaded only with ``trust=True``); a file that cannot be read is named in
    the error; and the loaded SAE passes the constructor's checks (:func:`verify_loaded`).
    """
    folder = Path(folder)
    cfg = load_config(folder)
    weights = folder / WEIGHTS_FILENAME
    if not weights.is_file():
        raise FileNotFoundError(f"SAE weights not found: {weights}")
    if (folder / MANIFEST_FILE).is_file():
        problem = verify_manifest(folder)
        if problem is not None:
            raise ValueError(f"damaged SAE folder: {problem}; delete {folder} and retrain it")
    elif not trust:
        raise ValueError(
            f"SAE folder {folder} has no {MANIFEST_FILE}, so its files cannot be verified; "
            "load it with load_sae(folder, trust=True) if you trust where it came from"
        )
    cls = get_architecture(cfg["architecture"])
    try:
        sae = cls.from_config(cfg)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{folder / CFG_FILENAME} does not build a {cls.__name__}: {exc}") from exc
    try:
        state = load_file(str(weights))
    except Exception as exc:  # SafetensorError, OSError: a truncated or garbled file
        raise ValueError(f"cannot read SAE weights {weights}: {exc}") from exc
    missing = sorted(set(sae.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(sae.state_dict()))
    if missing or unexpected:
        raise ValueError(
            f"{weights} does not match architecture {cfg['architecture']!r}: "
            f"missing {missing}, unexpected {unexpected}"
        )
    try:
        sae.load_state_dict(state)
        verify_loaded(sae)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{weights} is not a valid {cls.__name__}: {exc}") from exc
    return sae.to(device).eval()


def verify_loaded(sae: SparseAutoencoder) -> None:
    """The constructor's checks on a loaded SAE: every tensor finite and, for an equivariant
    SAE with a fixed representation, every generator of the shape, conditioning and scale the
    constructor accepts (ValueError naming the tensor otherwise)."""
    for name, tensor in sae.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"tensor {name!r} contains non-finite values")
    check = getattr(sae, "_checked_generator", None)
    generators = getattr(sae, "generators", None)
    if check is not None and generators is not None:
        for name, mat in generators().items():
            check(name, mat)
