"""A model equisae has never seen, for the own-model tests and the walk-through.

A small CNN classifier with BatchNorm, in-place ReLUs and an ``nn.Sequential`` head whose hidden
ReLU layer (``head.2``, 64 units) has dead units (biases far below zero), so its activations
are rank-deficient. ``make()`` is what ``equisae images --model foreign_model:make`` calls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

N_DEAD = 24  # hidden units of head.2 that never fire


class SmallCNN(nn.Module):
    """conv-BN-ReLU(inplace) x2, global pooling, then a Linear-ReLU-Linear head."""

    def __init__(self, in_channels: int = 1, n_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, padding=1, stride=2),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 64), nn.ReLU(inplace=True), nn.Linear(64, n_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def make(in_channels: int = 1) -> SmallCNN:
    """The foreign model with fixed weights (seed 0) and ``N_DEAD`` dead units in ``head.2``."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SmallCNN(in_channels)
    with torch.no_grad():
        model.head[1].bias[:N_DEAD] = -100.0
    return model.eval()


def make_images(n: int, size: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` grey images (n, 1, size, size) with labels (n,): label c has c + 1 bright squares
    (a label of the image, unchanged by rotations), on faint noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    images = 0.1 * torch.rand(n, 1, size, size, generator=gen)
    for i in range(n):
        for _ in range(int(labels[i]) + 1):
            x, y = torch.randint(0, size - 3, (2,), generator=gen).tolist()
            images[i, 0, y : y + 3, x : x + 3] = 1.0
    return images, labels


def write_png_folder(root: Path, n: int = 120, size: int = 16, seed: int = 0) -> Path:
    """An image folder ``root/<class>/<i>.png`` of :func:`make_images` (grey PNGs)."""
    from PIL import Image

    images, labels = make_images(n, size, seed)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        folder = Path(root) / f"class{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (img[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    return Path(root)
