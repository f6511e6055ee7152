"""Figures for the base autoencoders: reconstructions, test errors and training curves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

__all__ = ["plot_reconstructions", "plot_test_errors", "plot_training_curves"]


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    return image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def plot_reconstructions(
    models: Mapping[str, nn.Module], images: torch.Tensor, rotation: int = 1
) -> Figure:
    """A grid: the first row holds ``images`` and the same images rotated by ``rotation``
    quarter turns; each further row holds one model's reconstructions of them."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            f"images must be a non-empty (N, C, H, W) tensor, got {tuple(images.shape)}"
        )
    if not models:
        raise ValueError("models is empty")
    rotated = torch.rot90(images, rotation, dims=(-2, -1))
    inputs = torch.cat([images, rotated])
    rows = [("input", inputs)]
    with torch.no_grad():
        for name, model in models.items():
            model.eval()
            rows.append((name, model(inputs)))
    n_cols = inputs.shape[0]
    cell = min(1.1, 7.6 / n_cols)  # no wider than the book's column
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(cell * n_cols, 1.1 * cell * len(rows)), squeeze=False
    )
    for r, (name, batch) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.imshow(_to_hwc(batch[c]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
            if r == 0:
                label = "canonical" if c < images.shape[0] else f"rotated {90 * rotation}°"
                ax.set_title(label, fontsize=7)
    fig.suptitle("Reconstructions of canonical (left) and rotated (right) test images")
    fig.tight_layout()
    return fig


def plot_test_errors(infos: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Grouped bars: test reconstruction MSE on canonical and on rotated images per model."""
    if not infos:
        raise ValueError("infos is empty")
    names = list(infos)
    x = np.arange(len(names))
    canonical = [infos[n]["test_mse_canonical"] for n in names]
    rotated = [infos[n]["test_mse_rotated"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(x - 0.2, canonical, width=0.4, label="canonical test images")
    ax.bar(x + 0.2, rotated, width=0.4, label="rotated test images (90/180/270°)")
    ax.set_xticks(x, names, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("reconstruction MSE (log scale)")
    ax.set_title("Test reconstruction error by model")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_training_curves(infos: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Training loss per step (smoothed) and validation MSE per epoch for every model."""
    if not infos:
        raise ValueError("infos is empty")
    fig, (ax_step, ax_val) = plt.subplots(1, 2, figsize=(7.6, 3.3))
    for name, info in infos.items():
        history = info["history"]
        steps = np.asarray(history["step_loss"], dtype=float)
        window = max(1, len(steps) // 50)
        smooth = np.convolve(steps, np.ones(window) / window, mode="valid")
        (line,) = ax_step.plot(np.arange(len(smooth)) + window, smooth, label=name)
        val = history.get("val_loss") or []
        if val:
            ax_val.plot(
                np.arange(1, len(val) + 1), val, marker="o", color=line.get_color(), label=name
            )
    ax_step.set_yscale("log")
    ax_step.set_xlabel("optimisation step")
    ax_step.set_ylabel("training MSE (moving average)")
    ax_step.set_title("Training loss")
    ax_val.set_yscale("log")
    ax_val.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("validation MSE")
    ax_val.set_title("Validation reconstruction error")
    ax_val.legend(fontsize=8)
    fig.tight_layout()
    return fig
