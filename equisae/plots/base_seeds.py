"""The figure of the base-seeds sweep (notebook 06): one probing difference per base model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from equisae.verdicts import CONTRADICTED, HOLDS

__all__ = ["plot_base_seeds"]

#: labels that rest on a difference separated from the seed spread (drawn filled)
SEPARATED = (HOLDS, CONTRADICTED)


def plot_base_seeds(summary: Mapping[str, Any]) -> Figure:
    """Adaptive minus TopK invariant-factor F1 (mean ± SAE-seed sd) per probe type, one marker
    colour per base-model seed, one panel per target; filled markers: the point's label is
    "holds" or "contradicted" (separated from the SAE-seed spread), hollow otherwise.
    ``summary`` is :func:`equisae.sweeps.base_seeds.base_seed_summary`."""
    points = summary.get("points") or []
    if not points:
        raise ValueError("summary has no points: run equisae.sweeps.base_seeds.base_seed_summary")
    targets = [tuple(t) for t in summary["targets"]]
    probe_ks = list(summary["probe_ks"])
    seeds = list(summary["base_seeds"])
    width = min(7.6, 1.0 + 3.3 * len(targets))
    fig, axes = plt.subplots(
        1, len(targets), figsize=(width, 3.2), sharey=True, squeeze=False, layout="constrained"
    )
    step = 0.6 / max(len(seeds), 1)
    for ax, (model, layer) in zip(axes[0], targets, strict=True):
        for j, seed in enumerate(seeds):
            colour = f"C{j % 10}"
            for p in points:
                if (p["model"], p["layer"], p["base_seed"]) != (model, layer, seed):
                    continue
                x = probe_ks.index(p["probe_k"]) + (j - (len(seeds) - 1) / 2) * step
                ax.errorbar(
                    x,
                    p["mean"],
                    yerr=p["sd"] if p["sd"] is not None else None,
                    fmt="o",
                    ms=5,
                    color=colour,
                    mfc=colour if p["label"] in SEPARATED else "white",
                    capsize=2,
                    lw=1,
                    zorder=3,
                )
            ax.plot([], [], "o", color=colour, label=f"base seed {seed}")
        ax.axhline(0.0, color="0.4", lw=0.8, ls="--")
        ax.set_xticks(range(len(probe_ks)))
        ax.set_xticklabels(["dense" if k == "all" else f"{k[1:]}-sparse" for k in probe_ks])
        ax.set_title(f"{model} / {layer}", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0][0].set_ylabel("adaptive − TopK, invariant F1", fontsize=8)
    axes[0][-1].legend(fontsize=7, frameon=False)
    return fig
