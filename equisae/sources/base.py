"""The data-source interface: images with labelled factors and exact orbits under a group.

An :class:`ImageSource` holds canonical images ``(N, C, H, W)`` (float32, square) and factor
labels ``factors[name]`` of shape ``(N,)`` (int64 class indices; -1 where undefined), each
declared either invariant (unchanged by the group: digit class, galaxy morphology, shape) or
equivariant (moved by it: Shapes' quadrant and orientation). ``orbit(group)`` returns the
:class:`equisae.data.OrbitDataset` that the activation, fit and SAE code takes: images
``(N, |G|, C, H, W)`` with pose ``p`` the canonical image acted on by group element ``p``, and
factors ``(N, |G|)``, among them ``pose`` (for a source without equivariant factors the pose is
the only equivariant label). ``split(seed)`` makes seeded, stratified train/val/test splits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from equisae.data import OrbitDataset
from equisae.groups import Group, get_group

__all__ = [
    "DEFAULT_FRACTIONS",
    "ImageSource",
    "as_group",
    "resize_images",
    "stratified_split_indices",
]

#: Train, val and test shares of :meth:`ImageSource.split`.
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.6, "val": 0.2, "test": 0.2}


def as_group(group: Group | str) -> Group:
    """A :class:`~equisae.groups.Group` from itself or its name (``"C4"``, ``"D4"``)."""
    if isinstance(group, str):
        return get_group(group)
    if not isinstance(group, Group):
        raise ValueError(f"group must be a Group or a name like 'C4', got {type(group).__name__}")
    return group


def resize_images(images: Tensor, size: int, batch_size: int = 1024) -> Tensor:
    """Resize square images ``(N, C, H, H)`` to ``(N, C, size, size)``.

    Integer upsampling uses nearest neighbours and integer downsampling averages blocks
    (``area``): both commute with 90-degree rotations and flips (nearest bit for bit, area up
    to float rounding), and orbits are made after resizing, so they stay exact. Other ratios use antialiased bilinear interpolation.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must have shape (N, C, H, H), got {tuple(images.shape)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    side = images.shape[-1]
    if size == side:
        return images
    if size % side == 0:
        kwargs: dict[str, Any] = {"mode": "nearest"}
    elif side % size == 0:
        kwargs = {"mode": "area"}
    else:
        kwargs = {"mode": "bilinear", "align_corners": False, "antialias": True}
    parts = [
        F.interpolate(images[i : i + batch_size], size=(size, size), **kwargs)
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(parts).contiguous()


def stratified_split_indices(
    labels: Tensor, fractions: Mapping[str, float], seed: int
) -> dict[str, Tensor]:
    """Disjoint sorted index sets per split, stratified by ``labels`` (N,), under ``seed``.

    Each class is permuted with a generator seeded by ``seed`` and cut by the cumulative
    ``fractions`` (which must be positive and sum to at most 1; the rest is left out).
    """
    if not fractions:
        raise ValueError("fractions must name at least one split, e.g. {'train': 0.6}")
    if any(not 0 < float(f) <= 1 for f in fractions.values()) or sum(fractions.values()) > 1 + 1e-9:
        raise ValueError(f"fractions must be in (0, 1] and sum to <= 1, got {dict(fractions)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    gen = torch.Generator().manual_seed(seed)
    names = list(fractions)
    bounds = np.cumsum([0.0, *[float(fractions[n]) for n in names]])
    parts: dict[str, list[Tensor]] = {n: [] for n in names}
    for value in torch.unique(labels):
        rows = (labels == value).nonzero().squeeze(1)
        rows = rows[torch.randperm(rows.numel(), generator=gen)]
        cuts = [int(round(b * rows.numel())) for b in bounds]
        for i, name in enumerate(names):
            parts[name].append(rows[cuts[i] : cuts[i + 1]])
    return {n: torch.cat(parts[n]).sort().values for n in names}


#: the largest pixel magnitude a source may hold (sources scale pixels to [0, 1])
PIXEL_LIMIT = 1e4


def _check_pixels(images: Tensor, name: str, metadata: dict[str, Any]) -> None:
    """Refuse non-finite or absurdly large pixels: the input, not the training, is at fault."""
    where = f" (read from {metadata['path']})" if metadata.get("path") else ""
    if not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images)).sum())
        raise ValueError(f"{name}{where}: the input images hold {bad} NaN or infinite pixel(s)")
    peak = float(images.abs().max())
    if peak > PIXEL_LIMIT:
        raise ValueError(
            f"{name}{where}: the input images hold pixel values up to {peak:.3g} (limit "
            f"{PIXEL_LIMIT:.0e}); scale the images to [0, 1]"
        )


@dataclass
class ImageSource:
    """Canonical images with invariant and equivariant factor labels (see module docstring).

    ``class_names[factor]`` optionally names the classes of a factor; ``metadata`` records
    where the data came from (file paths, preprocessing) for the run summary.
    """

    name: str
    images: Tensor
    factors: dict[str, Tensor]
    invariant_factors: tuple[str, ...]
    equivariant_factors: tuple[str, ...] = ()
    class_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        images = self.images
        if not isinstance(images, Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"{self.name}: images must be a (N, C, H, W) tensor, got {shape}")
        if images.shape[0] == 0:
            raise ValueError(f"{self.name}: images is empty")
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(
                f"{self.name}: images must be square (the group rotates them), got "
                f"{images.shape[-2]}x{images.shape[-1]}"
            )
        self.images = images.to(torch.float32)
        _check_pixels(self.images, self.name, self.metadata)
        self.invariant_factors = tuple(self.invariant_factors)
        self.equivariant_factors = tuple(self.equivariant_factors)
        declared = self.invariant_factors + self.equivariant_factors
        if not self.invariant_factors:
            raise ValueError(f"{self.name}: invariant_factors must name at least one factor")
        missing = [f for f in declared if f not in self.factors]
        if missing:
            raise KeyError(
                f"{self.name}: declared factors {missing} are not in factors {sorted(self.factors)}"
            )
        undeclared = [f for f in self.factors if f not in declared]
        if undeclared:
            raise ValueError(
                f"{self.name}: factors {undeclared} are neither invariant nor equivariant"
            )
        if "pose" in self.factors:
            raise ValueError(f"{self.name}: 'pose' is reserved for the orbit pose")
        n = images.shape[0]
        for key, value in self.factors.items():
            if not isinstance(value, Tensor) or tuple(value.shape) != (n,):
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"{self.name}: factor {key!r} must have shape ({n},), got {got}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        """Number of image channels C."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the square images in pixels."""
        return int(self.images.shape[-1])

    def subset(self, index: Tensor | slice) -> ImageSource:
        """The images (and factors) selected by ``index``."""
        return replace(
            self,
            images=self.images[index],
            factors={k: v[index] for k, v in self.factors.items()},
        )

    def resized(self, size: int) -> ImageSource:
        """The same source at ``size`` x ``size`` pixels (see :func:`resize_images`)."""
        meta = {**self.metadata, "resized_from": self.image_size}
        return replace(self, images=resize_images(self.images, size), metadata=meta)

    def split(
        self,
        seed: int = 0,
        fractions: Mapping[str, float] | None = None,
        stratify: str | None = None,
    ) -> dict[str, ImageSource]:
        """Seeded splits (default 60/20/20 train/val/test), stratified by ``stratify``
        (default: the first invariant factor)."""
        fractions = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
        key = stratify or self.invariant_factors[0]
        if key not in self.factors:
            raise KeyError(f"stratify must be a factor of {self.name}: {sorted(self.factors)}")
        index = stratified_split_indices(self.factors[key], fractions, seed)
        empty = [name for name, rows in index.items() if rows.numel() == 0]
        if empty:
            raise ValueError(
                f"{self.name}: splits {empty} are empty ({len(self)} images, fractions "
                f"{fractions}); use more images or larger fractions"
            )
        return {name: self.subset(rows) for name, rows in index.items()}

    def orbit(self, group: Group | str) -> OrbitDataset:
        """All |G| transforms of each image; invariant factors repeated, ``pose`` added."""
        group = as_group(group)
        if self.equivariant_factors:
            raise NotImplementedError(
                f"{self.name}: a generic source cannot move equivariant factors "
                f"{list(self.equivariant_factors)}; subclass ImageSource and override orbit"
            )
        n, order = len(self), group.order
        images = group.orbit_images(self.images)
        factors = {k: v[:, None].expand(n, order).clone() for k, v in self.factors.items()}
        poses = torch.arange(order).expand(n, order).clone()
        factors["pose"] = poses.clone()
        return OrbitDataset(images, factors, poses, group.name, None, extra={"source": self.name})

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: sizes, factors, class counts and metadata."""
        counts = {
            name: {
                int(k): int(c)
                for k, c in zip(*np.unique(v.numpy(), return_counts=True), strict=True)
            }
            for name, v in self.factors.items()
            if not v.is_floating_point()
        }
        return {
            "name": self.name,
            "n_images": len(self),
            "channels": self.channels,
            "image_size": self.image_size,
            "invariant_factors": list(self.invariant_factors),
            "equivariant_factors": list(self.equivariant_factors),
            "class_names": {k: list(v) for k, v in self.class_names.items()},
            "class_counts": counts,
            "metadata": dict(self.metadata),
        }
