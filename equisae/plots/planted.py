"""Figures for the planted-features experiment (notebook 04)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from equisae.planted_summary import MODEL_TYPES, series
from equisae.plots.findings import colour_of, label_of

__all__ = ["plot_adaptive_distance", "plot_planted_metrics"]

METRIC_LABELS: dict[str, str] = {
    "recovery": "feature recovery (mean max cosine)",
    "detection_f1": "detection F1 (latent > 0)",
    "top1_detection": "top-1 detection F1",
    "fvu": "FVU (pose not given)",
    "l0": "L0",
    "n_params": "trainable parameters",
}


def plot_planted_metrics(
    summary: Mapping[str, Any],
    metrics: Sequence[str] = ("recovery", "detection_f1", "fvu"),
    d: int | None = None,
) -> Figure:
    """One panel per metric against the number of planted features, one line per model with
    the seed standard deviation as error bars; ``summary`` is :func:`equisae.planted_summary.summarize`.
    With ``d`` given, the top axis shows the interference n/d."""
    if not metrics:
        raise ValueError("metrics must name at least one metric")
    models = [m for m in MODEL_TYPES if m in summary]
    if not models:
        raise ValueError(f"summary holds none of the planted models {MODEL_TYPES}")
    ncols = 2 if len(metrics) == 4 else min(len(metrics), 3)
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.0 * nrows + 0.8), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for model in models:
            x, mean, std = series(summary, model, metric)
            ax.errorbar(
                x,
                mean,
                yerr=std,
                marker="o",
                capsize=3,
                color=colour_of(model),
                label=label_of(model),
            )
        ax.set_xlabel("number of planted features n")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=10)
        ax.grid(alpha=0.3)
        if d:
            top = ax.secondary_xaxis("top", functions=(lambda n: n / d, lambda r: r * d))
            top.set_xlabel("interference n / d", fontsize=8)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    rows = math.ceil(len(labels) / 2)
    fig.suptitle("Planted features: recovery, detection and reconstruction vs interference")
    fig.tight_layout(rect=(0, min(0.5, (0.2 * rows + 0.15) / fig.get_figheight()), 1, 1))
    return fig


def plot_adaptive_distance(records: Sequence[Mapping[str, Any]]) -> Figure:
    """The adaptive SAE's ``||M - R|| / ||R||`` before (identity) and after training, on all of
    R^d and on the span of the planted features, per number of features (dots: seeds)."""
    rows = [r for r in records if r.get("model") == "adaptive"]
    if not rows:
        raise ValueError("records hold no adaptive-SAE run")
    counts = sorted({r["n_features"] for r in rows})
    keys = (
        ("m_distance_to_R_before", "before training (M = I)"),
        ("m_distance_to_R_after", "after training"),
        ("m_distance_on_features", "after, on the features' span"),
    )
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        means = [np.mean([r[key] for r in rows if r["n_features"] == n]) for n in counts]
        pos = np.arange(len(counts)) + (i - (len(keys) - 1) / 2) * width
        ax.bar(pos, means, width, label=label, alpha=0.8)
        for j, n in enumerate(counts):
            vals = [r[key] for r in rows if r["n_features"] == n]
            ax.scatter(np.full(len(vals), pos[j]), vals, color="k", s=8, zorder=3)
    ax.set_xticks(np.arange(len(counts)), [str(n) for n in counts])
    ax.set_xlabel("number of planted features n")
    ax.set_yscale("log")
    ax.set_ylabel("||M - R||_F / ||R||_F (log scale)")
    ax.set_title("Adaptive equivariant SAE: learned M against the planted R")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig
