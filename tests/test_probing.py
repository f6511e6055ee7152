"""Tests for equisae.probing: planted structure is found, noise is not, bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from equisae.probing import (
    UNDEFINED,
    class_mean_scores,
    fit_probe,
    probe_factors,
    probe_k_name,
    select_features,
)


def _planted(n: int, d: int, informative: tuple[int, ...], n_classes: int, seed: int):
    """Gaussian noise features; the class shifts the informative features by a large margin."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    x = rng.normal(size=(n, d))
    for j, idx in enumerate(informative):
        x[:, idx] += 4.0 * ((y + j) % n_classes == 0) - 2.0 * (y % 2)
    return x, y


def _splits(d=20, informative=(3, 11), n_classes=3, seed=0):
    return {
        s: _planted(n, d, informative, n_classes, seed + i)
        for i, (s, n) in enumerate({"train": 400, "val": 200, "test": 300}.items())
    }


def test_probe_recovers_planted_separable_factor():
    result = fit_probe(_splits())
    assert result.f1 > 0.95
    assert result.n_classes == 3
    assert result.f1 > result.chance_f1 + 0.5


def test_probe_on_noise_is_chance_level():
    rng = np.random.default_rng(1)
    splits = {
        s: (rng.normal(size=(n, 10)), rng.integers(0, 2, size=n))
        for s, n in {"train": 400, "val": 200, "test": 2000}.items()
    }
    result = fit_probe(splits)
    assert 0.35 < result.f1 < 0.6


def test_k_sparse_selection_picks_planted_latents():
    x, y = _planted(500, 30, (7, 19), 2, seed=3)
    chosen = select_features(x, y, 2)
    assert set(chosen.tolist()) == {7, 19}
    scores = class_mean_scores(x, y)
    assert scores.shape == (30,)
    assert np.argmax(scores) in (7, 19)
    result = fit_probe(_splits(d=30, informative=(7, 19), n_classes=2), k=2)
    assert set(result.features) == {7, 19}
    assert result.f1 > 0.95


def test_single_latent_probe_worse_than_informative_pair_when_both_needed():
    # class 0 vs 1 in feature 0, class 1 vs 2 in feature 1: one feature cannot tell all three
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 3, size=n)
        x = rng.normal(scale=0.2, size=(n, 8))
        x[:, 0] += (y >= 1) * 3.0
        x[:, 1] += (y == 2) * 3.0
        return x, y

    splits = {s: make(n) for s, n in {"train": 600, "val": 300, "test": 600}.items()}
    assert fit_probe(splits, k=2).f1 > 0.95
    assert fit_probe(splits, k=1).f1 < 0.85


def test_undefined_labels_are_excluded():
    splits = _splits(n_classes=2)
    # corrupt features of a third of the examples and mark them undefined: they must be ignored
    poisoned = {}
    for s, (x, y) in splits.items():
        x, y = x.copy(), y.copy()
        bad = np.arange(len(y)) % 3 == 0
        x[bad] = np.random.default_rng(9).normal(size=(bad.sum(), x.shape[1])) * 50
        y[bad] = UNDEFINED
        poisoned[s] = (x, y)
    result = fit_probe(poisoned)
    assert result.n_test == int((poisoned["test"][1] != UNDEFINED).sum())
    assert result.n_classes == 2
    assert result.f1 > 0.95


def test_probe_is_deterministic_and_accepts_tensors():
    splits = _splits()
    as_torch = {
        s: (torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y))
        for s, (x, y) in splits.items()
    }
    a, b = fit_probe(as_torch, k=5), fit_probe(as_torch, k=5)
    assert a == b


def test_probe_factors_reports_every_factor_and_size():
    splits = _splits(d=6, informative=(1, 4))
    features = {s: x for s, (x, _) in splits.items()}
    factors = {s: {"a": y, "b": (y == 0).astype(int)} for s, (_, y) in splits.items()}
    out = probe_factors(features, factors, ["a", "b"], probe_ks=(None, 1, 2, 16))
    assert set(out) == {"a", "b"}
    assert set(out["a"]) == {"all", "k1", "k2"}  # k=16 > d=6 is skipped
    assert out["b"]["all"].f1 > 0.9
    assert probe_k_name(None) == "all" and probe_k_name(5) == "k5"
    with pytest.raises(KeyError, match="colour"):
        probe_factors(features, factors, ["colour"])


def test_bad_input_raises():
    x, y = _planted(50, 4, (0,), 2, seed=0)
    good = {"train": (x, y), "val": (x, y), "test": (x, y)}
    with pytest.raises(ValueError, match="differ in length"):
        fit_probe({**good, "train": (x, y[:-1])})
    with pytest.raises(ValueError, match="single class"):
        fit_probe({**good, "train": (x, np.zeros(50, dtype=int))})
    with pytest.raises(ValueError, match="shape"):
        fit_probe({**good, "val": (x[:, 0], y)})
    with pytest.raises(ValueError, match="feature dimensions"):
        fit_probe({**good, "test": (x[:, :2], y)})
    with pytest.raises(KeyError, match="val"):
        fit_probe({"train": (x, y), "test": (x, y)})
    with pytest.raises(ValueError, match="k"):
        select_features(x, y, 0)
    with pytest.raises(ValueError, match="exceeds"):
        select_features(x, y, 5)
    with pytest.raises(ValueError, match="no examples"):
        fit_probe({**good, "test": (x, np.full(50, UNDEFINED))})
