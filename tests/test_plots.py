"""Tests for the convergence figures of notebook 05 (what they draw, not how it looks)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from equisae.plots.findings import plot_loss_curves, plot_representation_training  # noqa: E402


def _record(sae_type: str, seed: int, learned: bool) -> dict:
    curve = {"step": [10, 20, 30], "loss": [1.0, 0.5, 0.4], "fvu": [1, 1, 1], "l0": [4, 4, 4]}
    if learned:
        curve |= {"m_drift": [0.0, 0.01, 0.02], "m_group_error": [0.05, 0.04, 0.03]}
    return {
        "model": "gcnn",
        "layer": "bottleneck",
        "k": 8,
        "sae_type": sae_type,
        "seed": seed,
        "loss_curve": curve,
    }


def test_representation_figure_draws_only_the_learned_generators() -> None:
    records = [_record("adaptive", s, True) for s in (0, 1)] + [_record("topk", 0, False)]
    fig = plot_representation_training(records)
    left, right = fig.axes[:2]
    assert len(left.lines) == len(right.lines) == 2
    assert list(right.lines[0].get_ydata()) == [0.05, 0.04, 0.03]
    labels = [t.get_text() for t in fig.legends[0].texts]
    assert len(labels) == 1 and "gcnn / bottleneck" in labels[0]  # seeds share one entry
    plt.close(fig)


def test_loss_curves_mark_the_frontier_step_count() -> None:
    records = [_record("topk", 0, False), _record("adaptive", 0, True)]
    marked = plot_loss_curves(records, [("gcnn", "bottleneck")], 8, mark_step=20)
    plain = plot_loss_curves(records, [("gcnn", "bottleneck")], 8)
    assert len(marked.axes[0].lines) == len(plain.axes[0].lines) + 1
    assert list(marked.axes[0].lines[-1].get_xdata()) == [20, 20]
    plt.close("all")
