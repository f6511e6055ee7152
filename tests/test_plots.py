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


def _linrep(single: list[float], identity: list[float]) -> dict:
    return {
        "r2_single": single,
        "r2_per_power": [min(1.0, v + 0.01) for v in single],
        "r2_identity": identity,
    }


def test_r2_figure_shows_the_decisive_range_not_minus_one() -> None:
    from equisae.plots.linrep import plot_r2_by_power

    results = {
        f"model {i}": _linrep([1.0, 0.95, 0.93, 0.96], [1.0, -1.3, -0.8, -1.2]) for i in "ab"
    }
    fig = plot_r2_by_power(results, layer="bottleneck")
    low, high = fig.axes[0].get_ylim()
    assert 0.8 <= low <= 0.9 and 1.0 <= high < 1.05  # 0.95 against 0.99 is visible
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(t.startswith("identity: -1.10") for t in texts)  # mean over p >= 1, as a number
    worse = plot_r2_by_power({"m": _linrep([1.0, 0.7, 0.6, 0.7], [1.0, -1.0, -1.0, -1.0])})
    assert worse.axes[0].get_ylim()[0] < 0.6  # a worse fit widens the axis instead of hiding
    plt.close("all")


def test_figures_fit_the_book_column() -> None:
    """Multi-panel figures wrap into rows instead of growing wider than the column."""
    from equisae.plots.findings import MAX_WIDTH, _grid
    from equisae.plots.linrep import plot_eigenvalues

    fig, axes = _grid(5, 3, (4.6, 3.6))
    assert fig.get_figwidth() <= MAX_WIDTH + 1e-9 and axes.shape == (2, 3)
    many = {f"m{i}": {"eigenvalues": {"real": [1.0, 0.0], "imag": [0.0, 1.0]}} for i in range(10)}
    eig = plot_eigenvalues(many)
    assert eig.get_figwidth() <= MAX_WIDTH
    plt.close("all")
