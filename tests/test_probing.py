"""Tests for equisae.probing: planted structure is found, noise is not, bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from equisae.probing import (
    DEFAULT_C_GRID,
    UNDEFINED,
    SeedSummary,
    aggregate_seeds,
    chance_f1,
    class_mean_scores,
    fit_probe,
    leakage_probe,
    majority_class_f1,
    probe_factors,
    probe_k_name,
    random_splits,
    select_features,
    shuffled_label_f1,
    summarize_values,
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


# --------------------------------------------------------------------------- protocol (issue 10)
def _one_informative(n: int, d: int, j: int, n_classes: int, seed: int):
    """Noise features; only feature ``j`` carries the class (its value is the class id)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    x = rng.normal(size=(n, d))
    x[:, j] = 3.0 * y + rng.normal(scale=0.1, size=n)
    return x, y


def test_one_sparse_probe_selects_the_informative_feature_from_train_only():
    splits = {
        s: _one_informative(n, 40, 17, 3, seed=i)
        for i, (s, n) in enumerate((("train", 600), ("val", 300), ("test", 600)))
    }
    result = fit_probe(splits, k=1)
    assert result.features == (17,)
    assert result.k == 1 and result.probe_k == "k1"
    assert result.f1 > 0.98
    # scrambling the test (and val) labels must not move the selection: ranking reads train only
    rng = np.random.default_rng(5)
    scrambled = {
        **splits,
        "val": (splits["val"][0], rng.permutation(splits["val"][1])),
        "test": (splits["test"][0], rng.permutation(splits["test"][1])),
    }
    again = fit_probe(scrambled, k=1)
    assert again.features == (17,)
    assert again.f1 < 0.6


def test_chance_f1_is_one_over_c_for_balanced_classes():
    for n_classes in (2, 3, 7):
        y = np.repeat(np.arange(n_classes), 10)
        assert chance_f1(y, y) == pytest.approx(1 / n_classes)
        # the majority-class F1 is the much lower number it must not be confused with
        assert majority_class_f1(y, y) == pytest.approx(2 / (n_classes * (n_classes + 1)))


def test_chance_f1_matches_monte_carlo_random_guessing():
    rng = np.random.default_rng(0)
    train = rng.choice(4, size=4000, p=[0.55, 0.25, 0.15, 0.05])
    test = rng.choice(4, size=4000, p=[0.2, 0.3, 0.3, 0.2])
    p = np.bincount(train) / train.size
    scores = [
        f1_score(test, rng.choice(4, size=test.size, p=p), average="macro") for _ in range(200)
    ]
    assert chance_f1(train, test) == pytest.approx(np.mean(scores), abs=0.005)
    assert chance_f1(train, test) > majority_class_f1(train, test) + 0.1


def test_chance_f1_ignores_undefined_and_counts_unseen_classes():
    assert chance_f1([0, 1, UNDEFINED], [0, 1]) == pytest.approx(0.5)
    # class 2 only in test: the probe never guesses it, F1 0 for that class
    assert chance_f1([0, 1], [0, 1, 2, 2]) == pytest.approx((2 * 0.5 * 0.25 / 0.75) * 2 / 3)
    with pytest.raises(ValueError, match="test_labels has no defined labels"):
        chance_f1([0, 1], [UNDEFINED])


def test_shuffled_label_f1_is_near_chance():
    splits = {
        s: _planted(n, 12, (2, 5), 4, seed=i)
        for i, (s, n) in enumerate((("train", 800), ("val", 400), ("test", 2000)))
    }
    real = fit_probe(splits)
    shuffled = shuffled_label_f1(splits, n_repeats=3, seed=1)
    assert shuffled.n == 3
    assert abs(shuffled.mean - real.chance_f1) < 0.05
    assert real.f1 > shuffled.mean + 0.3
    assert shuffled_label_f1(splits, n_repeats=2, seed=1) == shuffled_label_f1(
        splits, n_repeats=2, seed=1
    )


def test_warm_started_grid_matches_cold_fits():
    splits = _splits(d=24, informative=(3, 11, 20), n_classes=5, seed=4)
    for k in (None, 2, 5):
        warm = fit_probe(splits, k=k, c_grid=(0.001, 0.01, 0.1, 1.0, 10.0))
        cold = fit_probe(splits, k=k, c_grid=(0.001, 0.01, 0.1, 1.0, 10.0), warm_start=False)
        assert abs(warm.f1 - cold.f1) <= 0.01
        assert warm.features == cold.features


def test_leakage_probe_separates_invariant_from_pose_carrying_latents():
    rng = np.random.default_rng(0)
    poses = rng.integers(0, 4, size=2000)
    invariant = rng.normal(size=(2000, 16))
    leaky = invariant.copy()
    leaky[:, 3] += 8.0 * poses
    clean = leakage_probe(invariant, poses, seed=0)
    assert abs(clean.f1 - clean.chance_f1) < 0.06
    assert leakage_probe(leaky, poses, seed=0).f1 > 0.9
    split = random_splits(invariant, poses, seed=0)
    assert leakage_probe(split) == clean
    with pytest.raises(ValueError, match="poses is required"):
        leakage_probe(invariant)


def test_probe_result_carries_protocol_fields_and_aggregates_over_seeds():
    results = [fit_probe(_splits(seed=s), k=2) for s in (0, 10, 20)]
    r = results[0]
    assert (r.n_train, r.n_val, r.n_test) == (400, 200, 300)
    assert r.C in DEFAULT_C_GRID and len(r.features) == 2
    assert r.to_dict()["probe_k"] == "k2"
    agg = aggregate_seeds(results)
    f1s = [x.f1 for x in results]
    assert agg["f1"].n == 3
    assert agg["f1"].mean == pytest.approx(np.mean(f1s))
    assert agg["f1"].sd == pytest.approx(np.std(f1s, ddof=1))
    assert summarize_values([1.0, float("nan"), None, 3.0]) == SeedSummary(2.0, np.sqrt(2), 2)
    with pytest.raises(ValueError, match="mix probe sizes"):
        aggregate_seeds([r, fit_probe(_splits())])


def test_bad_input_messages_name_the_problem():
    x, y = _planted(50, 4, (0,), 2, seed=0)
    good = {"train": (x, y), "val": (x, y), "test": (x, y)}
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="val features contain NaN"):
        fit_probe({**good, "val": (bad, y)})
    with pytest.raises(ValueError, match="single class"):
        shuffled_label_f1({**good, "train": (x, np.ones(50, dtype=int))})
    with pytest.raises(ValueError, match="positive"):
        fit_probe(good, c_grid=(0.1, -1.0))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        select_features(x, y, True)
