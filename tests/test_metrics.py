"""Tests for equisae.metrics: reconstruction and sparsity metrics, dictionary matching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from equisae.metrics import (
    cosine_matrix,
    dead_fraction,
    decoder_cosine_matrix,
    density_histogram,
    feature_density,
    fvu,
    l0,
    match_dictionaries,
    mean_max_cosine,
    mse,
)


def _unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


def test_fvu_reference_values():
    x = torch.randn(100, 5, generator=torch.Generator().manual_seed(0)) + 3.0
    assert fvu(x, x) == 0.0
    mean_pred = x.mean(0, keepdim=True).expand_as(x)
    assert fvu(x, mean_pred) == pytest.approx(1.0)
    assert fvu(x, x + 0.5 * (mean_pred - x)) == pytest.approx(0.25)
    assert mse(x, x + 2.0) == pytest.approx(4.0)
    # leading dimensions are flattened
    assert fvu(x.reshape(10, 10, 5), mean_pred.reshape(10, 10, 5)) == pytest.approx(1.0)


def test_fvu_errors():
    with pytest.raises(ValueError, match="same shape"):
        fvu(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="zero variance"):
        fvu(torch.ones(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="at least two"):
        fvu(torch.ones(1, 3), torch.zeros(1, 3))


def test_sparsity_metrics():
    z = torch.zeros(4, 6)
    z[0, :3] = 1.0
    z[1, 0] = 2.0
    z[2, 1] = -1.0
    assert l0(z) == pytest.approx((3 + 1 + 1 + 0) / 4)
    torch.testing.assert_close(
        feature_density(z), torch.tensor([0.5, 0.5, 0.25, 0, 0, 0], dtype=torch.float64)
    )
    assert dead_fraction(z) == pytest.approx(0.5)
    counts, edges, n_dead = density_histogram(z, bins=6)
    assert n_dead == 3 and counts.sum() == 3 and len(edges) == 7
    with pytest.raises(ValueError, match="bins"):
        density_histogram(z, bins=0)


def test_cosine_and_decoder_similarity():
    w = _unit_rows(7, 4, seed=0)
    cos = decoder_cosine_matrix(w * 3.0)
    torch.testing.assert_close(cos.diagonal(), torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(cos, cos.T)
    with pytest.raises(ValueError, match="same d"):
        cosine_matrix(torch.zeros(3, 4), torch.zeros(3, 5))


def test_mean_max_cosine_of_planted_features():
    features = _unit_rows(10, 16, seed=1)
    atoms = torch.cat([-2.0 * features[:5], features[5:], _unit_rows(6, 16, seed=2)])
    assert mean_max_cosine(atoms, features) == pytest.approx(1.0)
    assert mean_max_cosine(_unit_rows(10, 16, seed=3), features) < 0.8


def test_hungarian_matching_recovers_a_permutation():
    a = _unit_rows(12, 20, seed=4)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    noise = 0.05 * _unit_rows(12, 20, seed=5)
    b = a[perm] + noise
    result = match_dictionaries(a, b)
    inverse = torch.argsort(perm).numpy()
    np.testing.assert_array_equal(result.rows_b, inverse[result.rows_a])
    assert result.mean_cosine > 0.99 and result.fraction_above(0.9) == 1.0
    # rectangular: every row of the smaller dictionary is used once
    wide = match_dictionaries(a[:5], b)
    assert len(wide.rows_a) == 5 and len(set(wide.rows_b.tolist())) == 5
    flipped = match_dictionaries(a, -b, absolute=True)
    assert flipped.mean_cosine > 0.99
    assert match_dictionaries(a, -b).mean_cosine < 0.5  # signed: true partners are at -1


def test_fvu_argument_order_is_x_then_reconstruction():
    # FVU is not symmetric: with x_hat = x / 2, fvu(x, x_hat) = 1/4 but fvu(x_hat, x) = 1.
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(3))
    x = x - x.mean(0)
    assert fvu(x, 0.5 * x) == pytest.approx(0.25)
    assert fvu(0.5 * x, x) == pytest.approx(1.0)


def test_sae_evaluation_uses_the_metrics_fvu_in_the_same_order(monkeypatch):
    from equisae.sae import evaluate
    from equisae.sae.topk import TopKSAE

    assert evaluate.fvu is fvu  # one FVU in the library
    acts = torch.randn(20, 4, 6, generator=torch.Generator().manual_seed(0))
    acts = acts - acts.reshape(-1, 6).mean(0)

    def half(sae, a, pose="inferred", batch_size=1024, progress=False, device=None):
        z = torch.ones(*a.shape[:2], sae.d_sae)
        return z, 0.5 * a, torch.zeros(a.shape[:2], dtype=torch.long)

    monkeypatch.setattr(evaluate, "orbit_reconstructions", half)
    out = evaluate.evaluate_on_orbits(TopKSAE(6, 8, k=2), acts)
    assert out["fvu"] == pytest.approx(0.25)  # reversed arguments would give 1.0
