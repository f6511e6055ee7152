"""Figures for the linear representation of C_n in activation space (notebook 03)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_eigenvalues", "plot_r2_by_power", "plot_r2_vs_equivariance"]


def _eigenvalues(result: Any) -> np.ndarray:
    """Complex eigenvalues from a LinRepResult or its ``to_dict()``."""
    eig = result["eigenvalues"] if isinstance(result, Mapping) else result.eigenvalues
    if isinstance(eig, Mapping):
        return np.asarray(eig["real"]) + 1j * np.asarray(eig["imag"])
    return np.asarray(eig)


def _get(result: Any, key: str) -> Any:
    return result[key] if isinstance(result, Mapping) else getattr(result, key)


def plot_eigenvalues(results: Mapping[str, Any], n: int = 4, ncols: int = 3) -> Figure:
    """Eigenvalues of each fitted M in the complex plane, with the unit circle and the n-th
    roots of unity; ``results`` maps a panel title to a LinRepResult (or its dict)."""
    if not results:
        raise ValueError("results must hold at least one fitted representation")
    ncols = min(ncols, len(results))
    nrows = math.ceil(len(results) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.5 * ncols, 2.5 * nrows + 0.4), squeeze=False)
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 256))
    roots = np.exp(2j * np.pi * np.arange(n) / n)
    for ax, (title, result) in zip(axes.flat, results.items(), strict=False):
        eig = _eigenvalues(result)
        ax.plot(circle.real, circle.imag, color="0.7", lw=1)
        ax.scatter(eig.real, eig.imag, s=10, alpha=0.6, label="eigenvalues of M")
        ax.scatter(roots.real, roots.imag, marker="x", s=60, color="crimson", label=f"{n}th roots")
        lim = max(1.3, float(np.abs(eig).max()) * 1.1 if eig.size else 1.3)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("Re")
        ax.set_ylabel("Im")
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    # one legend for the figure, below the panels: inside a panel it covers a root of unity
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=2, fontsize=10, frameon=False)
    fig.suptitle(f"Eigenvalues of the fitted generator M against the {n}th roots of unity")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_r2_by_power(results: Mapping[str, Any], layer: str = "", ncols: int = 3) -> Figure:
    """Held-out R^2 per power p for M^p and the per-power fit M_p, one panel per entry of
    ``results`` (title -> LinRepResult or its dict), ``ncols`` panels a row.

    The y axis shows the decisive range (from 0.9, or lower when a fit is worse, up to 1): the
    difference between 0.95 and 0.99 decides the claim. The identity map, far below that range,
    is given as a number in each panel instead of a line.
    """
    if not results:
        raise ValueError("results must hold at least one fitted representation")
    if ncols < 1:
        raise ValueError(f"ncols must be a positive number of panels per row, got {ncols}")
    ncols = min(ncols, len(results))
    nrows = -(-len(results) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.5 * ncols, 2.4 * nrows + 0.6), squeeze=False, sharey=True
    )
    styles = {
        "r2_single": ("M^p (one matrix)", "o-"),
        "r2_per_power": ("M_p (fitted per power)", "s--"),
    }
    fitted = [
        float(v)
        for result in results.values()
        for key in styles
        for v in np.asarray(_get(result, key), dtype=float)
    ]
    low = min(0.9, np.floor(min(fitted) * 20) / 20 - 0.01)
    for ax, (title, result) in zip(axes.flat, results.items(), strict=False):
        for key, (label, style) in styles.items():
            values = np.asarray(_get(result, key), dtype=float)
            ax.plot(np.arange(len(values)), values, style, label=label, ms=4)
        identity = np.asarray(_get(result, "r2_identity"), dtype=float)
        ax.axhline(0.99, color="0.6", lw=0.8, ls=":")
        ax.text(
            0.03,
            0.04,
            f"identity: {np.mean(identity[1:] if len(identity) > 1 else identity):.2f}",
            transform=ax.transAxes,
            fontsize=8,
            color="0.3",
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("power p")
        ax.set_ylim(low, 1.002)
        ax.set_xticks(range(len(values)))
    for ax in axes[:, 0]:
        ax.set_ylabel("held-out R²")
    for ax in list(axes.flat)[len(results) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8, loc="center left")
    fig.suptitle(f"Predicting h(g^p x) from h(x){f' at the {layer} layer' if layer else ''}")
    fig.tight_layout()
    return fig


def plot_r2_vs_equivariance(
    equivariance: Mapping[str, float], r2: Mapping[str, Mapping[str, float]]
) -> Figure:
    """Each model's output equivariance error (x, log scale) against the mean held-out R^2 of
    M^p over p >= 1 (y), one marker style per layer: ``r2[layer][model]``."""
    if not equivariance or not r2:
        raise ValueError("equivariance and r2 must not be empty")
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    markers = ["o", "s", "^", "D"]
    floor = 1e-12
    for (layer, per_model), marker in zip(r2.items(), markers, strict=False):
        missing = sorted(set(per_model) - set(equivariance))
        if missing:
            raise KeyError(f"no equivariance error for models {missing}")
        xs = [max(equivariance[m], floor) for m in per_model]
        ys = list(per_model.values())
        ax.scatter(xs, ys, marker=marker, s=50, label=layer)
        # labels fan out (alternating above and below) so that close points stay readable
        order = sorted(range(len(xs)), key=lambda i: (ys[i], xs[i]))
        for rank, i in enumerate(order):
            dy = 8 if rank % 2 == 0 else -12
            ax.annotate(
                list(per_model)[i],
                (xs[i], ys[i]),
                fontsize=8,
                xytext=(5, dy),
                textcoords="offset points",
            )
    ax.set_xscale("log")
    ax.set_xlabel("output equivariance error of the autoencoder (log; 0 drawn at 1e-12)")
    ax.set_ylabel("mean held-out R^2 of M^p, p = 1..n-1")
    ax.set_title("Does a single linear map explain rotations better for more equivariant models?")
    ax.legend(title="layer")
    fig.tight_layout()
    return fig
