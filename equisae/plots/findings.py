"""Figures for the findings notebooks: the frontier (05) and probing (06).

Every function takes the flat records of :func:`equisae.sweeps.frontier_records` or
:func:`equisae.sweeps.probe_records` (lists of dicts), so the notebooks need no pandas. Colours
and labels of the SAE types are the classes' own traits (:mod:`equisae.sae.factory`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

__all__ = [
    "colour_of",
    "group_stats",
    "label_of",
    "plot_advantage_vs_r2",
    "plot_frontier",
    "plot_probe_f1",
    "plot_representation_training",
]

#: the probing references, which are not SAE classes
REFERENCE_STYLE: dict[str, tuple[str, str]] = {
    "raw": ("raw activations", "0.25"),
    "random": ("random dictionary", "0.6"),
}


def colour_of(sae_type: str) -> str:
    """The colour of an SAE type (its class trait) or of a reference."""
    from equisae.sae.factory import variant_colour

    if sae_type in REFERENCE_STYLE:
        return REFERENCE_STYLE[sae_type][1]
    try:
        return variant_colour(sae_type)
    except KeyError:
        return "tab:gray"


def label_of(sae_type: str) -> str:
    """The legend label of an SAE type (its class trait) or of a reference."""
    from equisae.sae.factory import variant_label

    if sae_type in REFERENCE_STYLE:
        return REFERENCE_STYLE[sae_type][0]
    try:
        return variant_label(sae_type)
    except KeyError:
        return sae_type


def group_stats(
    records: Iterable[Mapping[str, Any]], keys: Sequence[str], value: str
) -> dict[tuple, tuple[float, float, int]]:
    """``{key tuple: (mean, std, n)}`` of ``value`` over records sharing ``keys`` (seeds pooled).

    Records whose value is None are skipped; std is the population std (0 for one seed).
    """
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        missing = [k for k in (*keys, value) if k not in r]
        if missing:
            raise KeyError(f"record has no field(s) {missing}: {dict(r)}")
        if r[value] is not None:
            groups[tuple(r[k] for k in keys)].append(float(r[value]))
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in groups.items()}


def _panels(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["model"], r["layer"]) for r in records))


#: the widest figure, in inches: at matplotlib's 100 dpi it fits the book's column at about
#: its natural size, so 10-point text stays above 8 points as displayed
MAX_WIDTH = 7.6


def _legend_below(fig: Figure, handles: list, labels: list[str], ncol: int = 2) -> float:
    """One legend under the panels, ``ncol`` entries a row (a wider legend would make the
    saved figure wider than the column); returns the figure fraction it takes at the bottom,
    for ``tight_layout(rect=(0, bottom, 1, top))``."""
    ncol = max(1, min(ncol, len(labels)))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    rows = math.ceil(len(labels) / ncol)
    legend = 0.18 * rows + 0.15  # inches
    panels = fig.get_figheight()
    fig.set_figheight(panels + legend)  # the legend adds height; the panels keep theirs
    return legend / (panels + legend)


def _grid(n: int, ncols: int, size: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """``n`` panels of about ``size`` inches, ``ncols`` a row, no wider than :data:`MAX_WIDTH`."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    width = min(size[0], MAX_WIDTH / ncols)
    height = max(size[1] * width / size[0], 2.6)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, axes


def plot_frontier(
    records: Sequence[Mapping[str, Any]],
    sae_types: Sequence[str] | None = None,
    oracle_types: Sequence[str] = ("equivariant", "adaptive"),
    ncols: int = 3,
) -> Figure:
    """FVU against L0 for every SAE type, one panel per (model, layer), mean +- std over seeds.

    Solid lines: the headline FVU (pose inferred for equivariant SAEs); dashed: the same SAEs
    given the oracle pose (``fvu_oracle_pose``), for the types in ``oracle_types``.
    """
    if not records:
        raise ValueError("records is empty: nothing to plot")
    panels = _panels(records)
    types = list(sae_types or dict.fromkeys(r["sae_type"] for r in records))
    fvu = group_stats(records, ("model", "layer", "sae_type", "k"), "fvu")
    l0 = group_stats(records, ("model", "layer", "sae_type", "k"), "l0")
    oracle = group_stats(
        [r for r in records if r.get("fvu_oracle_pose") is not None],
        ("model", "layer", "sae_type", "k"),
        "fvu_oracle_pose",
    )
    fig, axes = _grid(len(panels), ncols, (4.6, 3.6))
    for ax, (model, layer) in zip(axes.flat, panels, strict=False):
        for t in types:
            ks = sorted(k for (m, la, tt, k) in fvu if (m, la, tt) == (model, layer, t))
            if not ks:
                continue
            x = [l0[model, layer, t, k][0] for k in ks]
            y = [fvu[model, layer, t, k][0] for k in ks]
            e = [fvu[model, layer, t, k][1] for k in ks]
            colour = colour_of(t)
            ax.errorbar(x, y, yerr=e, marker="o", ms=3, color=colour, label=label_of(t), capsize=2)
            if t in oracle_types and all((model, layer, t, k) in oracle for k in ks):
                yo = [oracle[model, layer, t, k][0] for k in ks]
                ax.plot(
                    x, yo, ls="--", marker=".", color=colour, label=f"{label_of(t)} (oracle pose)"
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())  # no overprinted minor tick labels
        ax.set_xlabel("L0 (active latents per activation)")
        ax.set_ylabel("FVU (test)")
        ax.set_title(f"{model} / {layer}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    bottom = _legend_below(fig, handles, labels)
    fig.suptitle("Reconstruction-sparsity frontier (lower is better)")
    fig.tight_layout(rect=(0, bottom, 1, 0.97))
    return fig


def plot_probe_f1(
    records: Sequence[Mapping[str, Any]],
    factors: Sequence[str],
    sae_types: Sequence[str] | None = None,
    probe_k: str = "all",
    ncols: int = 1,
) -> Figure:
    """Test macro F1 per factor (x) and SAE type (bars), one panel per (model, layer).

    Bars: mean over seeds with the seed std as error bars, for probes on the latents; for SAE
    types that also have ``latents+pose`` records a hatched bar shows that feature set. The
    dotted line per factor is the chance F1 of a no-information probe (about 1/C).
    """
    rows = [r for r in records if r["probe_k"] == probe_k]
    if not rows:
        raise ValueError(f"no probe records with probe_k={probe_k!r}")
    panels = _panels(rows)
    types = list(sae_types or dict.fromkeys(r["sae_type"] for r in rows))
    keys = ("model", "layer", "sae_type", "features", "factor")
    stats = group_stats(rows, keys, "f1")
    chance = group_stats(rows, ("model", "layer", "factor"), "chance_f1")
    bars = [(t, "latents") for t in types]
    bars += [
        (t, "latents+pose") for t in types if any(k[2:4] == (t, "latents+pose") for k in stats)
    ]
    width = 0.8 / len(bars)
    fig, axes = _grid(len(panels), ncols, (6.4, 3.6))
    x = np.arange(len(factors))
    for ax, (model, layer) in zip(axes.flat, panels, strict=False):
        for i, (t, feats) in enumerate(bars):
            vals = [stats.get((model, layer, t, feats, f), (np.nan, 0.0, 0)) for f in factors]
            ax.bar(
                x + (i - (len(bars) - 1) / 2) * width,
                [v[0] for v in vals],
                width,
                yerr=[v[1] for v in vals],
                color=colour_of(t),
                hatch="//" if feats == "latents+pose" else None,
                edgecolor="white" if feats == "latents" else "black",
                linewidth=0.3,
                label=label_of(t) if feats == "latents" else f"{label_of(t)} + pose",
                capsize=1.5,
            )
        for j, f in enumerate(factors):
            if (model, layer, f) in chance:
                c = chance[model, layer, f][0]
                ax.plot([j - 0.45, j + 0.45], [c, c], ls=":", color="k", lw=1)
        ax.set_xticks(x, factors, rotation=0, fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("test macro F1")
        ax.set_title(f"{model} / {layer}", fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    bottom = _legend_below(fig, handles, labels)
    suffix = "all latents" if probe_k == "all" else f"{probe_k[1:]} latents"
    fig.suptitle(f"Probe F1 per factor ({suffix}; dotted: chance)")
    fig.tight_layout(rect=(0, bottom, 1, 0.97))
    return fig


def plot_advantage_vs_r2(
    advantage: Mapping[str, tuple[float, float]],
    r2: Mapping[str, float],
    xlabel: str = "1 - R^2 of the linear representation (log)",
    ylabel: str = "F1(adaptive) - F1(topk), invariant factors",
) -> Figure:
    """Scatter of an SAE advantage (mean, std over seeds) against the base model's 1 - R^2."""
    names = [n for n in advantage if n in r2]
    if not names:
        raise ValueError("advantage and r2 share no (model, layer) names")
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    xs = [max(1.0 - r2[n], 1e-12) for n in names]
    ys = [advantage[n][0] for n in names]
    ax.errorbar(xs, ys, yerr=[advantage[n][1] for n in names], fmt="o", capsize=3)
    for xv, yv, n in zip(xs, ys, names, strict=True):
        ax.annotate(n, (xv, yv), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("Does the adaptive SAE's probing advantage track equivariance?")
    fig.tight_layout()
    return fig


def plot_loss_curves(
    records: Sequence[Mapping[str, Any]],
    targets: Sequence[tuple[str, str]],
    k: int,
    mark_step: int | None = None,
) -> Figure:
    """Training loss (log) against the step for every SAE type at ``k``, one panel per target;
    thin lines are seeds. ``records`` need ``loss_curve`` (``frontier_records(curves=True)``).
    ``mark_step``: a dashed vertical line (e.g. the frontier's step count on longer runs)."""
    fig, axes = _grid(len(targets), 2, (5.2, 3.4))
    for ax, (model, layer) in zip(axes.flat, targets, strict=False):
        rows = [
            r
            for r in records
            if (r["model"], r["layer"], r["k"]) == (model, layer, k) and r.get("loss_curve")
        ]
        seen: set[str] = set()
        for r in rows:
            t, curve = r["sae_type"], r["loss_curve"]
            ax.plot(
                curve["step"],
                curve["loss"],
                color=colour_of(t),
                lw=1.0,
                alpha=0.8,
                label=None if t in seen else label_of(t),
            )
            seen.add(t)
        if mark_step is not None:
            ax.axvline(mark_step, color="0.3", ls="--", lw=1.0)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss (log)")
        ax.set_title(f"{model} / {layer}, k = {k}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, _legend_below(fig, handles, labels), 1, 1))
    return fig


def plot_representation_training(records: Sequence[Mapping[str, Any]]) -> Figure:
    """The learned generators along training: relative distance to the least-squares fit they
    started from (left) and group error (right) against the step, one line per (target, SAE
    type, seed) of the SAEs that learn their representation (``loss_curve`` with ``m_drift``)."""
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH, 3.4))
    seen: set[tuple[str, str]] = set()
    styles = ("-", "--", ":", "-.")
    targets = list(dict.fromkeys((r["model"], r["layer"]) for r in records))
    for r in records:
        curve = r.get("loss_curve") or {}
        if "m_drift" not in curve:
            continue
        key = (r["sae_type"], f"{r['model']} / {r['layer']}")
        style = styles[targets.index((r["model"], r["layer"])) % len(styles)]
        for ax, name in zip(axes, ("m_drift", "m_group_error"), strict=True):
            ax.plot(
                curve["step"],
                curve[name],
                color=colour_of(r["sae_type"]),
                ls=style,
                lw=1.0,
                alpha=0.8,
                label=None if key in seen else f"{label_of(key[0])}, {key[1]}",
            )
        seen.add(key)
    for ax, ylabel in zip(
        axes,
        ("‖M − M_fit‖ / ‖M_fit‖ (distance to the fit)", "group error ‖M⁴ − I‖ / ‖I‖"),
        strict=True,
    ):
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8)
    rows = math.ceil(len(labels) / 2)
    fig.tight_layout(rect=(0, 0.06 + 0.045 * rows, 1, 1))
    return fig


def plot_lambda_inv(summary: Sequence[Mapping[str, Any]]) -> Figure:
    """FVU and invariant-factor sparse-probe F1 against lambda_inv (log x), one line per
    (target, SAE type); error bars: seed sd. ``summary`` from ``report.lambda_inv_summary``."""
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH, 3.6))
    groups = dict.fromkeys((r["model"], r["layer"], r["sae_type"]) for r in summary)
    for model, layer, t in groups:
        rows = sorted(
            (r for r in summary if (r["model"], r["layer"], r["sae_type"]) == (model, layer, t)),
            key=lambda r: r["lambda_inv"],
        )
        x = [r["lambda_inv"] for r in rows]
        for ax, key in zip(axes, ("fvu", "f1"), strict=True):
            err = [0.0 if np.isnan(r[f"{key}_sd"]) else r[f"{key}_sd"] for r in rows]
            ax.errorbar(
                x,
                [r[key] for r in rows],
                yerr=err,
                marker="o",
                capsize=3,
                label=f"{model} / {layer}",
            )
    probe = summary[0]["probe_k"][1:] if summary else "?"
    for ax, ylabel in zip(
        axes, ("FVU (test, lower is better)", f"invariant F1, {probe}-sparse probe"), strict=True
    ):
        ax.set_xscale("log")
        ax.set_xlabel("λ_inv (invariance weight)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_sparse_probes(
    records: Sequence[Mapping[str, Any]],
    sae_types: Sequence[str],
    probe_ks: Sequence[str],
    factors: Sequence[str],
) -> Figure:
    """Invariant-factor F1 (mean over ``factors``, then over targets and seeds) against the
    probe size (1, 2, 5, 16 latents, then dense), one line per SAE type; error bars: sd."""
    fig, ax = plt.subplots(figsize=(MAX_WIDTH, 4.0))
    xs = np.arange(len(probe_ks))
    for t in sae_types:
        means, sds = [], []
        for pk in probe_ks:
            per: dict[tuple, list[float]] = defaultdict(list)
            for r in records:
                if (
                    r["sae_type"] == t
                    and r["probe_k"] == pk
                    and r["factor"] in factors
                    and r["features"] == "latents"
                ):
                    per[r["model"], r["layer"], r["seed"]].append(r["f1"])
            vals = [float(np.mean(v)) for v in per.values()]
            means.append(np.mean(vals) if vals else np.nan)
            sds.append(np.std(vals) if vals else 0.0)
        ax.errorbar(
            xs, means, yerr=sds, marker="o", capsize=3, color=colour_of(t), label=label_of(t)
        )
    ax.set_xticks(xs, ["dense" if pk == "all" else pk[1:] for pk in probe_ks])
    ax.set_xlabel("latents the probe may read")
    ax.set_ylabel("invariant-factor macro F1 (test)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.tight_layout(rect=(0, _legend_below(fig, handles, labels), 1, 1))
    return fig
