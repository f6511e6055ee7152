"""Figures for the Shapes data: sample grids, orbits and factor balance."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from equisae.data import (
    COLOURS,
    EQUIVARIANT_FACTORS,
    FACTOR_CLASSES,
    INVARIANT_FACTORS,
    SHAPES,
    OrbitDataset,
    ShapesDataset,
)

__all__ = ["factor_label", "plot_samples", "plot_orbit", "plot_factor_balance"]

_CLASS_NAMES: dict[str, list[str]] = {
    "shape": list(SHAPES),
    "colour": list(COLOURS),
    "scale": ["small", "medium", "large"],
    "quadrant": ["(+,+)", "(-,+)", "(-,-)", "(+,-)"],
    "orientation": ["0", "90", "180", "270"],
}


def _to_hwc(image: torch.Tensor):
    return image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def factor_label(factors: dict[str, torch.Tensor], index: int | tuple[int, ...]) -> str:
    """A short two-line description of one image's factors, for a subplot title."""
    shape = SHAPES[int(factors["shape"][index])]
    colour = list(COLOURS)[int(factors["colour"][index])]
    orientation = int(factors["orientation"][index])
    rot = "sym" if orientation < 0 else f"{90 * orientation}°"
    return (
        f"{shape} {colour}\n"
        f"s{int(factors['scale'][index])} q{int(factors['quadrant'][index])} rot {rot}"
    )


def plot_samples(ds: ShapesDataset, n: int = 24, ncols: int = 6) -> Figure:
    """The first ``n`` images of ``ds`` in a grid, each titled with its factors."""
    if n < 1 or ncols < 1:
        raise ValueError(f"n and ncols must be >= 1, got n={n}, ncols={ncols}")
    n = min(n, len(ds))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.25 * ncols, 1.5 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_to_hwc(ds.images[i]), interpolation="nearest")
            ax.set_title(factor_label(ds.factors, i), fontsize=9)
    fig.suptitle(f"Shapes samples ({ds.config.image_size}x{ds.config.image_size}, canonical)")
    fig.tight_layout()
    return fig


def plot_orbit(orb: OrbitDataset, rows: int = 4) -> Figure:
    """``rows`` images (one per row) and all their transforms (columns = pose ``p``)."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    rows = min(rows, len(orb))
    cols = orb.order
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for i in range(rows):
        for p in range(cols):
            ax = axes[i, p]
            ax.imshow(_to_hwc(orb.images[i, p]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(factor_label(orb.factors, (i, p)), fontsize=9)
            if i == rows - 1:
                ax.set_xlabel(f"pose p = {p}")
    fig.suptitle(f"Orbits under {orb.group_name}: columns are g^p x, factors moved with them")
    fig.tight_layout()
    return fig


def plot_factor_balance(ds: ShapesDataset) -> Figure:
    """Bar charts of the class counts of every invariant and equivariant factor."""
    names = [*INVARIANT_FACTORS, *EQUIVARIANT_FACTORS]
    ncols = 3  # legible at a page's width: two rows of three panels
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.5 * ncols, 2.5 * nrows), squeeze=False)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        values = ds.factors[name]
        counts = torch.bincount(values[values >= 0], minlength=FACTOR_CLASSES[name])
        labels = list(_CLASS_NAMES[name])
        heights = counts.tolist()
        if (values < 0).any():
            labels.append("none")
            heights.append(int((values < 0).sum()))
        ax.bar(range(len(heights)), heights, color="tab:blue")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=10)
        ax.set_title(name)
        ax.set_xlabel("class")
        ax.set_ylabel("images")
    fig.suptitle(f"Factor balance over {len(ds)} images")
    fig.tight_layout()
    return fig
