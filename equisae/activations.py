"""Activations at named layers of any ``torch.nn.Module``, and their store over group orbits.

Layers are addressed by the names of :meth:`torch.nn.Module.named_modules` (e.g. ``"encoder.3"``).
A forward hook records the module's output, flattened per example. When a module returns a
tuple or list (attention blocks, RNNs), the *first tensor* in it is taken. When a module is called
several times in one forward pass, its *first* call is recorded. Once every requested layer has
been recorded the rest of the forward pass is skipped (the hook stops it), so extracting an
encoder layer of an autoencoder does not pay for the decoder.

:class:`OrbitActivations` holds the activations of a dataset's whole orbit under a group as one
tensor of shape ``(N, |G|, d)``, with the factor labels of every pose; it saves to a folder
(``activations.safetensors`` + ``meta.json`` + a sha256 ``manifest.json``, written atomically)
and loads back without recomputation, checking the manifest. Hooks record copies of the
outputs, so in-place operations later in the forward pass cannot change them.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from equisae.device import resolve_device
from equisae.io import (
    atomic_folder,
    read_json,
    to_jsonable,
    verify_manifest,
    write_json_atomic,
    write_manifest,
)

ACTS_FILE = "activations.safetensors"
META_FILE = "meta.json"
FORMAT_VERSION = 1
_FACTOR_PREFIX = "factor."


class _StopForward(Exception):
    """Raised inside a hook once every requested layer is recorded, to skip the rest."""


def list_layers(model: nn.Module) -> list[str]:
    """Names of every sub-module of ``model`` that a hook can be put on (root excluded)."""
    return [name for name, _ in model.named_modules() if name]


def get_module(model: nn.Module, layer: str) -> nn.Module:
    """The sub-module called ``layer``; a KeyError lists close matches and the available names."""
    modules = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in modules or layer == "":
        names = list_layers(model)
        close = difflib.get_close_matches(str(layer), names, n=5, cutoff=0.5)
        hint = f" Did you mean {close}?" if close else ""
        raise KeyError(
            f"layer {layer!r} is not a module of {type(model).__name__}.{hint} "
            f"Available layers: {names}"
        )
    return modules[layer]


def _first_tensor(output: Any, layer: str) -> Tensor:
    """The module output itself, or the first tensor of a tuple/list output."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, Tensor):
                return item
    raise ValueError(
        f"layer {layer!r} returned {type(output).__name__}, which holds no tensor to record"
    )


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def extract_many(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str],
    batch_size: int = 512,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> dict[str, Tensor]:
    """Activations of ``images`` (N, ...) at each of ``layers``: ``{layer: (N, d_layer)}``.

    Runs under ``torch.no_grad()`` with the model in eval mode (its previous mode is restored),
    in batches of ``batch_size``; outputs are float32 on the CPU, flattened per example.
    ``device``: the forward passes run there (the model is moved for the call and moved back);
    None: where the model is.
    """
    if not isinstance(images, Tensor) or images.ndim < 2:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (N, ...), got {shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise ValueError("layers must name at least one layer")
    modules = {layer: get_module(model, layer) for layer in layers}
    home = _model_device(model)
    device = home if device is None else resolve_device(device)
    if device != home:
        model.to(device)
    captured: dict[str, Tensor] = {}

    def make_hook(layer: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if layer not in captured:
                # A copy: an in-place op later in the forward pass (ReLU(inplace=True),
                # ``out += x``) must not change what was recorded.
                captured[layer] = _first_tensor(output, layer).detach().clone()
            if len(captured) == len(layers):
                raise _StopForward

        return hook

    chunks: dict[str, list[Tensor]] = {layer: [] for layer in layers}
    handles = [modules[layer].register_forward_hook(make_hook(layer)) for layer in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            starts = range(0, images.shape[0], batch_size)
            for start in tqdm(starts, desc="activations", disable=not progress, leave=False):
                captured.clear()
                batch = images[start : start + batch_size].to(device)
                try:
                    model(batch)
                except _StopForward:
                    pass
                missing = [layer for layer in layers if layer not in captured]
                if missing:
                    raise ValueError(f"layers {missing} were not called in the forward pass")
                for layer in layers:
                    out = captured[layer]
                    if out.shape[0] != batch.shape[0]:
                        raise ValueError(
                            f"layer {layer!r} output has batch size {out.shape[0]}, "
                            f"expected {batch.shape[0]} (first dimension must be the batch)"
                        )
                    chunks[layer].append(out.reshape(out.shape[0], -1).float().cpu())
    finally:
        for handle in handles:
            handle.remove()
        if device != home:
            model.to(home)
        model.train(was_training)
    return {layer: torch.cat(parts) for layer, parts in chunks.items()}


def extract_activations(
    model: nn.Module,
    images: Tensor,
    layer: str,
    batch_size: int = 512,
    progress: bool = True,
) -> Tensor:
    """Activations of ``images`` (N, ...) at module ``layer``, flattened: shape (N, d)."""
    return extract_many(model, images, [layer], batch_size=batch_size, progress=progress)[layer]


@dataclass
class OrbitActivations:
    """Activations of a dataset's orbit: ``acts[i, p]`` is the layer's output on ``g^p x_i``.

    ``factors[name]`` has shape (N, |G|): the ground-truth factor of each pose (equivariant
    factors such as the quadrant change with ``p``; invariant ones do not).
    """

    acts: Tensor
    factors: dict[str, Tensor]
    group_name: str
    layer: str
    model_name: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.acts, Tensor) or self.acts.ndim != 3:
            shape = tuple(self.acts.shape) if isinstance(self.acts, Tensor) else self.acts
            raise ValueError(f"acts must have shape (N, |G|, d), got {shape}")
        n, order, _ = self.acts.shape
        for name, values in self.factors.items():
            if not isinstance(values, Tensor) or tuple(values.shape) != (n, order):
                shape = tuple(values.shape) if isinstance(values, Tensor) else type(values)
                raise ValueError(
                    f"factor {name!r} must have shape ({n}, {order}) like acts, got {shape}"
                )

    @property
    def n_examples(self) -> int:
        """N, the number of canonical examples."""
        return int(self.acts.shape[0])

    @property
    def group_order(self) -> int:
        """|G|, the number of poses per example."""
        return int(self.acts.shape[1])

    @property
    def dim(self) -> int:
        """d, the flattened activation dimension."""
        return int(self.acts.shape[2])

    @property
    def poses(self) -> Tensor:
        """Pose labels, shape (N, |G|): ``poses[i, p] == p``."""
        return torch.arange(self.group_order).expand(self.n_examples, -1).clone()

    def flat(self) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """All poses as rows: acts (N*|G|, d), poses (N*|G|,), factors {name: (N*|G|,)}."""
        return (
            self.acts.reshape(-1, self.dim),
            self.poses.reshape(-1),
            {name: values.reshape(-1) for name, values in self.factors.items()},
        )

    def save(self, path: str | os.PathLike, timing: dict[str, Any] | None = None) -> Path:
        """Write the folder ``path`` (safetensors, meta.json and a sha256 manifest) atomically,
        replacing what is there; returns ``path``. ``timing``: the wall-clock record of the
        work (:mod:`equisae.timing`), written beside them."""
        path = Path(path)
        with atomic_folder(path) as tmp:
            tensors = {"acts": self.acts.detach().float().contiguous()}
            for name, values in self.factors.items():
                tensors[_FACTOR_PREFIX + name] = values.detach().contiguous()
            save_file(tensors, str(tmp / ACTS_FILE))
            meta = {
                "format_version": FORMAT_VERSION,
                "group_name": self.group_name,
                "layer": self.layer,
                "model_name": self.model_name,
                "shape": list(self.acts.shape),
                "factor_names": list(self.factors),
                "metadata": to_jsonable(self.metadata),
            }
            write_json_atomic(tmp / META_FILE, meta)
            if timing is not None:
                from equisae.timing import write_timing

                write_timing(tmp, timing)
            write_manifest(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> OrbitActivations:
        """Read back a folder written by :meth:`save`.

        FileNotFoundError when nothing is saved there; ValueError naming the file when a file
        fails the manifest check (with ``verify``; a folder without manifest is accepted only
        with ``verify=False``) or cannot be read.
        """
        path = Path(path)
        if not _is_saved(path):
            raise FileNotFoundError(
                f"no saved orbit activations in {path} (expected {ACTS_FILE} and {META_FILE})"
            )
        if verify:
            problem = verify_manifest(path, required=(ACTS_FILE, META_FILE))
            if problem is not None:
                raise ValueError(f"damaged orbit activations: {problem}")
        try:
            meta = read_json(path / META_FILE)
            tensors = load_file(str(path / ACTS_FILE))
            factors = {name: tensors[_FACTOR_PREFIX + name] for name in meta["factor_names"]}
            return cls(
                acts=tensors["acts"],
                factors=factors,
                group_name=meta["group_name"],
                layer=meta["layer"],
                model_name=meta["model_name"],
                metadata=meta.get("metadata", {}),
            )
        except Exception as exc:  # safetensors errors, missing keys, bad shapes
            raise ValueError(f"cannot read orbit activations in {path}: {exc}") from exc


def _is_saved(path: Path) -> bool:
    return (path / ACTS_FILE).is_file() and (path / META_FILE).is_file()


def _orbit_factors(dataset: Any, group: Any) -> dict[str, Tensor]:
    """Per-pose factors (N, |G|) of canonical images.

    Shapes factors (the full set of :data:`equisae.data.FACTOR_NAMES`) move with the group via
    ``equisae.data.transform_factors``. Any other labels (your own classes, a dict
    ``{name: (N,) labels}``) are labels of the image, taken as unchanged by the group: each is
    repeated over the poses.
    """
    factors = getattr(dataset, "factors", None) or {}
    if not factors:
        return {}
    from equisae.data import FACTOR_NAMES, transform_factors

    n, order = int(dataset.images.shape[0]), int(group.order)
    labels = {name: torch.as_tensor(values) for name, values in factors.items()}
    for name, values in labels.items():
        if values.shape[:1] != (n,) or values.ndim != 1:
            raise ValueError(
                f"factor {name!r} must have shape ({n},) like the {n} images, "
                f"got {tuple(values.shape)}"
            )
    moving = {"x", "y", "quadrant", "orientation", "mirror", "cue"} & set(labels)
    if moving and not set(FACTOR_NAMES) <= set(labels):
        missing = sorted(set(FACTOR_NAMES) - set(labels))
        raise ValueError(
            f"factors {sorted(moving)} move with the group (Shapes factors), which needs every "
            f"Shapes factor; missing {missing}. Rename your own labels if they are not these."
        )
    if moving:
        per_pose = [transform_factors(labels, group, a) for a in range(order)]
        return {name: torch.stack([f[name] for f in per_pose], dim=1) for name in per_pose[0]}
    return {name: values.unsqueeze(1).expand(n, order).clone() for name, values in labels.items()}


def _as_group(group: Any) -> Any:
    """A Group from a Group or a name such as ``"C4"`` (ValueError naming ``group``)."""
    from equisae.groups import get_group

    if all(hasattr(group, attr) for attr in ("order", "act_images", "name")):
        return group  # a Group, or any object that acts like one
    if isinstance(group, str):
        try:
            return get_group(group)
        except KeyError as err:
            raise ValueError(f"group: {err.args[0]}") from None
    raise ValueError(f"group must be a Group or a name such as 'C4', got {type(group).__name__}")


def orbit_activations(
    model: nn.Module,
    dataset: Any,
    group: Any,
    layer: str,
    model_name: str = "",
    batch_size: int = 512,
    progress: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> OrbitActivations:
    """Activations of ``dataset``'s whole orbit under ``group`` at one ``layer``.

    Always one :class:`OrbitActivations`; :func:`orbit_activations_many` takes a list of
    layers (one forward pass for all) and returns ``{layer: OrbitActivations}``. ``group`` is
    a :class:`~equisae.groups.Group` or a name such as ``"C4"``. ``dataset`` as in
    :func:`orbit_activations_many`.
    """
    if not isinstance(layer, str):
        raise ValueError(
            f"layer must be one layer name (a str), got {type(layer).__name__}; for several "
            "layers use orbit_activations_many(model, dataset, group, layers)"
        )
    return orbit_activations_many(
        model, dataset, group, [layer], model_name, batch_size, progress, metadata
    )[layer]


def orbit_activations_many(
    model: nn.Module,
    dataset: Any,
    group: Any,
    layers: Sequence[str],
    model_name: str = "",
    batch_size: int = 512,
    progress: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, OrbitActivations]:
    """Activations of ``dataset``'s whole orbit under ``group`` at each of ``layers``.

    ``dataset`` is either an orbit dataset (``images`` of shape (N, |G|, C, H, W) and
    ``factors[name]`` of shape (N, |G|)) or a dataset of canonical images (``images`` (N, C, H, W),
    ``factors[name]`` (N,)), whose poses are made one at a time with ``group.act_images``; its
    per-pose factors are the Shapes factors moved by the group, or your own labels repeated
    over the poses. Pose ``p`` is group element ``p`` acting on the canonical image. Returns
    ``{layer: OrbitActivations}`` (one forward pass serves every layer).
    """
    if isinstance(layers, str):
        raise ValueError(
            f"layers must be a list of layer names, got the str {layers!r}; for one layer use "
            "orbit_activations(model, dataset, group, layer)"
        )
    group = _as_group(group)
    names = list(layers)
    images = getattr(dataset, "images", None)
    if not isinstance(images, Tensor) or images.ndim not in (4, 5):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(
            f"dataset.images must have shape (N, C, H, W) or (N, |G|, C, H, W), got {shape}"
        )
    order = int(group.order)
    if images.ndim == 5:
        if images.shape[1] != order:
            raise ValueError(
                f"orbit images have {images.shape[1]} poses but group {group.name} has order {order}"
            )
        n = images.shape[0]
        flat = extract_many(
            model, images.reshape(n * order, *images.shape[2:]), names, batch_size, progress
        )
        per_layer = {name: acts.reshape(n, order, -1) for name, acts in flat.items()}
        factors = {
            k: torch.as_tensor(v) for k, v in (getattr(dataset, "factors", None) or {}).items()
        }
    else:
        n = images.shape[0]
        poses: dict[str, list[Tensor]] = {name: [] for name in names}
        for p in tqdm(range(order), desc=f"poses of {group.name}", disable=not progress):
            posed = group.act_images(images, p)
            for name, acts in extract_many(model, posed, names, batch_size, False).items():
                poses[name].append(acts)
        per_layer = {name: torch.stack(parts, dim=1) for name, parts in poses.items()}
        factors = _orbit_factors(dataset, group)
    return {
        name: OrbitActivations(
            acts=acts,
            factors={k: v.clone() for k, v in factors.items()},
            group_name=group.name,
            layer=name,
            model_name=model_name,
            metadata=dict(metadata or {}),
        )
        for name, acts in per_layer.items()
    }
