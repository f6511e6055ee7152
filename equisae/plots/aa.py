"""The figure of the A/A test of the verdict rule (notebook 06)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from equisae.plots.findings import colour_of, label_of

__all__ = ["plot_aa"]


def plot_aa(summary: Mapping[str, Any]) -> Figure:
    """Every A/A point's two-sided p-value (unadjusted, log scale), one column per compared
    quantity and SAE type, with the 5 % level dashed: points below it are false positives of
    the per-point test. ``summary`` is :func:`equisae.sweeps.aa.aa_summary`."""
    rows = summary.get("rows") or []
    if not rows:
        raise ValueError("summary has no rows: run equisae.sweeps.aa.aa_summary first")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rows)), 3.6), layout="constrained")
    rng = np.random.default_rng(0)
    floor = 1e-4
    for i, row in enumerate(rows):
        p = np.array([q["p_value"] for q in row["points"] if q["p_value"] is not None], float)
        x = i + rng.uniform(-0.15, 0.15, size=p.size)
        ax.scatter(x, np.clip(p, floor, 1.0), s=22, color=colour_of(row["sae"]), zorder=3)
    ax.axhline(summary.get("alpha", 0.05), ls="--", color="0.3", lw=1)
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, 1.5)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(
        [f"{r['short']}\n{label_of(r['sae']).replace(' ', chr(10), 1)}" for r in rows],
        fontsize=7,
    )
    ax.set_ylabel("p-value, set A vs set B")
    ax.set_title(
        f"A/A test: {summary['n_points']} points, {len(summary['seeds_a'])} + "
        f"{len(summary['seeds_b'])} seeds",
        fontsize=9,
    )
    return fig
