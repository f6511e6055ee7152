"""Shapes as an :class:`~equisae.sources.base.ImageSource` (wrapping :func:`equisae.data.make_splits`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from torch import Tensor

from equisae import data
from equisae.groups import Group
from equisae.sources.base import ImageSource, as_group

__all__ = ["ShapesSource", "shapes_source", "shapes_splits"]


@dataclass
class ShapesSource(ImageSource):
    """Shapes images with their factors; orbits move quadrant, orientation, mirror, cue and the
    centre exactly (:func:`equisae.data.orbit`). Every Shapes factor is kept: the continuous
    ``x``, ``y`` and the ``mirror`` and ``cue`` factors are listed as equivariant too."""

    dataset: data.ShapesDataset | None = None

    def subset(self, index: Tensor | slice) -> ShapesSource:
        out = super().subset(index)
        assert isinstance(out, ShapesSource) and self.dataset is not None
        return replace(out, dataset=self.dataset.subset(index))

    def resized(self, size: int) -> ImageSource:
        raise ValueError(
            "Shapes are rendered at their size: set ShapesConfig(image_size=...) instead of "
            f"resizing (asked for {size})"
        )

    def orbit(self, group: Group | str) -> data.OrbitDataset:
        assert self.dataset is not None
        orb = data.orbit(self.dataset, as_group(group))
        orb.factors["pose"] = orb.poses.clone()
        orb.extra["source"] = self.name
        return orb


def _from_dataset(ds: data.ShapesDataset, name: str) -> ShapesSource:
    equivariant = tuple(f for f in data.FACTOR_NAMES if f not in data.INVARIANT_FACTORS)
    class_names = {
        "shape": data.SHAPES,
        "colour": tuple(data.COLOURS),
        "scale": tuple(str(s) for s in data.SCALE_FRACTIONS),
    }
    return ShapesSource(
        name=name,
        images=ds.images,
        factors=dict(ds.factors),
        invariant_factors=data.INVARIANT_FACTORS,
        equivariant_factors=equivariant,
        class_names=class_names,
        metadata={"config": ds.config.__dict__.copy(), "seed": ds.seed},
        dataset=ds,
    )


def shapes_source(n: int, cfg: data.ShapesConfig | None = None, seed: int = 0) -> ShapesSource:
    """``n`` Shapes images (default :func:`equisae.data.standard_config`) as one source."""
    return _from_dataset(data.make_shapes(n, cfg or data.standard_config(), seed), "shapes")


def shapes_splits(
    sizes: Mapping[str, int], cfg: data.ShapesConfig | None = None, seed: int = 0
) -> dict[str, ShapesSource]:
    """Independent Shapes draws per split (:func:`equisae.data.make_splits`), as sources."""
    splits = data.make_splits(sizes, cfg or data.standard_config(), seed)
    return {name: _from_dataset(ds, "shapes") for name, ds in splits.items()}
