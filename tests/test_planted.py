"""Tests for the planted problem (equisae.planted): representation, data and metrics."""

from __future__ import annotations

import math

import pytest
import torch

from equisae.groups import (
    get_group,
    irrep_multiplicities,
    relation_errors,
    representation_matrices,
)
from equisae.planted import (
    ToyConfig,
    cyclic_representation,
    default_multiplicities,
    detection_f1,
    feature_recovery,
    fixed_subspace,
    irrep_dims,
    make_planted,
    matrix_powers,
    multiplicity_names,
    planted_representation,
    top1_detection,
)


@pytest.mark.parametrize(("order", "d"), [(4, 16), (4, 5), (2, 3), (3, 7), (6, 10), (8, 12)])
def test_representation_is_orthogonal_of_exact_order(order: int, d: int) -> None:
    R, Q, labels = cyclic_representation(order, d, seed=order + d)
    eye = torch.eye(d)
    assert torch.allclose(R @ R.T, eye, atol=1e-5)
    assert torch.allclose(Q @ Q.T, eye, atol=1e-5)
    powers = matrix_powers(R, order + 1)
    assert torch.allclose(powers[order], eye, atol=1e-4)
    for j in range(1, order):
        assert not torch.allclose(powers[j], eye, atol=1e-3), f"R^{j} = I"
    assert labels.shape == (d,)


def test_multiplicities_fix_the_character() -> None:
    # Irrep k = frequency: trivial x2, 90-degree rotation (2-D) x3, sign x1: d = 2 + 6 + 1.
    order, mult = 4, (2, 3, 1)
    R, _, labels = cyclic_representation(order, 9, mult, seed=1)
    # Character of the real irreps of C4 at power p: 1, 2 cos(pi p / 2), (-1)^p.
    for p in range(order):
        expected = mult[0] + mult[1] * 2 * math.cos(math.pi * p / 2) + mult[2] * (-1) ** p
        assert torch.linalg.matrix_power(R, p).trace().item() == pytest.approx(expected, abs=1e-4)
    assert torch.bincount(labels, minlength=3).tolist() == [2, 6, 1]
    assert fixed_subspace(R, order).shape == (9, 2)


def test_default_multiplicities_fill_d_and_are_faithful() -> None:
    for order in (1, 2, 3, 4, 5, 6):
        dims = irrep_dims(order)
        for d in (1, 2, 3, 8, 13):
            mult = default_multiplicities(order, d)
            assert sum(m * k for m, k in zip(mult, dims, strict=True)) == d
            if order > 1 and d >= dims[1]:
                assert mult[1] >= 1


def test_bad_representation_requests_raise() -> None:
    with pytest.raises(ValueError, match="order 2, not 4"):
        cyclic_representation(4, 3, (2, 0, 1))  # trivial and sign only
    with pytest.raises(ValueError, match="span"):
        cyclic_representation(4, 5, (1, 1, 1))
    with pytest.raises(ValueError, match="multiplicities"):
        cyclic_representation(4, 4, (4, 0))
    with pytest.raises(ValueError, match="group order"):
        irrep_dims(0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"d": 0},
        {"n_features": 0},
        {"group_order": 0},
        {"n_invariant": 99},
        {"active": 0.0},
        {"noise": -1.0},
        {"amp_low": 2.0, "amp_high": 1.0},
        {"group": "SO2"},
        {"group": "D4", "group_order": 4},
    ],
)
def test_toy_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="ToyConfig"):
        ToyConfig(**kwargs)


def test_planted_orbits_follow_the_representation() -> None:
    cfg = ToyConfig(d=12, n_features=20, group_order=4, active=3.0, n_invariant=3)
    toy = make_planted(cfg, n_train=500, n_test=100, seed=3)
    assert toy.train.acts.shape == (500, 4, 12)
    assert toy.test.acts.shape == (100, 4, 12)
    assert toy.train.presence.shape == (500, 20) and toy.train.presence.dtype == torch.bool
    assert torch.allclose(toy.features.norm(dim=1), torch.ones(20), atol=1e-5)
    # h_p = R^p h_0 exactly without noise, and h_0 is the sparse sum of features.
    powers = toy.powers()
    for p in range(4):
        assert torch.allclose(toy.train.acts[:, p], toy.train.acts[:, 0] @ powers[p].T, atol=1e-5)
    assert torch.allclose(toy.train.acts[:, 0], toy.train.amplitudes @ toy.features, atol=1e-5)
    assert ((toy.train.amplitudes > 0) == toy.train.presence).all()
    # The planted invariant features are fixed by R; the others are not.
    moved = (toy.features @ toy.R.T - toy.features).norm(dim=1)
    assert (moved[:3] < 1e-4).all() and (moved[3:] > 1e-2).all()
    rate = toy.train.presence.float().mean().item()
    assert rate == pytest.approx(3.0 / 20, abs=0.02)
    acts, presence = toy.train.flat()
    assert acts.shape == (2000, 12) and presence.shape == (2000, 20)
    assert torch.equal(presence[:4], toy.train.presence[:1].expand(4, -1))


def test_planted_is_deterministic_under_seed_and_noise_is_added() -> None:
    cfg = ToyConfig(d=8, n_features=10, noise=0.3)
    a, b, c = (make_planted(cfg, 50, 10, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.train.acts, b.train.acts) and torch.equal(a.R, b.R)
    assert not torch.equal(a.train.acts, c.train.acts)
    residual = a.train.acts[:, 1] - a.train.acts[:, 0] @ a.R.T
    assert residual.norm(dim=1).mean() > 0.1


def test_feature_recovery_accounts_for_the_group() -> None:
    toy = make_planted(ToyConfig(d=16, n_features=12), 10, 10, seed=0)
    rotated = toy.features @ toy.powers()[1].T
    assert feature_recovery(toy.features, toy.features)["recovery"] == pytest.approx(1.0)
    assert feature_recovery(rotated, toy.features, toy.R)["recovery"] == pytest.approx(1.0, 1e-5)
    assert feature_recovery(rotated, toy.features)["recovery"] < 0.9
    random_atoms = torch.randn(12, 16, generator=torch.Generator().manual_seed(5))
    assert feature_recovery(random_atoms, toy.features, toy.R)["recovery"] < 0.8
    with pytest.raises(ValueError, match="share d"):
        feature_recovery(torch.randn(3, 5), toy.features)


def test_detection_metrics_find_planted_latents() -> None:
    toy = make_planted(ToyConfig(d=8, n_features=6, active=2.0), 2000, 1000, seed=2)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    train_z = torch.cat([toy.train.amplitudes[:, perm], torch.zeros(2000, 3)], dim=1)
    test_z = torch.cat([toy.test.amplitudes[:, perm], torch.zeros(1000, 3)], dim=1)
    ptr, pte = toy.train.presence, toy.test.presence
    det = detection_f1(train_z, ptr, test_z, pte)
    assert det["detection_f1"] == pytest.approx(1.0)
    assert torch.equal(perm[det["latent"]], torch.arange(6))
    top1 = top1_detection(train_z, ptr, test_z, pte)
    assert top1["top1_detection"] == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(1)
    noise_tr, noise_te = torch.rand(2000, 9, generator=gen), torch.rand(1000, 9, generator=gen)
    assert detection_f1(noise_tr - 0.5, ptr, noise_te - 0.5, pte)["detection_f1"] < 0.6
    assert top1_detection(noise_tr, ptr, noise_te, pte)["top1_detection"] < 0.6
    with pytest.raises(ValueError, match="n_samples"):
        detection_f1(train_z[:10], ptr, test_z, pte)
    with pytest.raises(ValueError, match="same number of latents"):
        detection_f1(train_z, ptr, test_z[:, :4], pte)


def test_c4_path_is_pinned_to_the_committed_version() -> None:
    """Values the C4 toy gave before D_n support (same seed, same numbers)."""
    cfg = ToyConfig(d=6, n_features=5, noise=0.1, n_invariant=1, multiplicities=(2, 1, 2))
    assert (cfg.group, cfg.group_order) == ("C4", 4)
    toy = make_planted(cfg, 3, 2, seed=4)
    expected_r = [-0.48156670, 0.56201136, -0.41543594, -0.35183185, -0.36808708, 0.14274448]
    expected_f = [-0.09896114, -0.26710719, -0.50038064, 0.77000904, -0.23565368, -0.14153773]
    expected_h = [-1.31575716, 0.54984999, 0.33667883, 0.05205026, 0.06228814, -0.04326698]
    assert toy.R[0].tolist() == pytest.approx(expected_r, abs=1e-6)
    assert toy.features[0].tolist() == pytest.approx(expected_f, abs=1e-6)
    assert toy.train.acts[1, 2].tolist() == pytest.approx(expected_h, abs=1e-6)
    assert toy.test.presence.tolist() == [[False] * 4 + [True], [False] * 3 + [True, False]]
    assert toy.S is None and toy.generators().keys() == {"r"}


def test_toy_config_resolves_the_group() -> None:
    assert (ToyConfig().group, ToyConfig().group_order) == ("C4", 4)
    assert (ToyConfig(group_order=6).group, ToyConfig(group="d4").group_order) == ("C6", 8)
    assert ToyConfig(group="D4", group_order=8) == ToyConfig(group="D4")
    with pytest.raises(ValueError, match=r"order of D4 \(8\), got 4"):
        ToyConfig(group="D4", group_order=4)


def test_d4_representation_satisfies_the_relations_and_is_faithful() -> None:
    names = multiplicity_names("D4")
    assert names == ["trivial", "flip", "sign", "sign_flip", "rotation_1"]
    assert multiplicity_names(4) == ["trivial", "rotation_1", "sign"]
    mult = default_multiplicities("D4", 16)
    assert sum(m * (2 if k == "rotation_1" else 1) for m, k in zip(mult, names, strict=True)) == 16
    assert mult[names.index("rotation_1")] >= 1
    gens, Q, labels = planted_representation("D4", 9, (1, 2, 1, 1, 2), seed=5)
    group = get_group("D4")
    mats = representation_matrices(group, {k: v.double() for k, v in gens.items()})
    assert group.relation_error(mats) < 1e-6
    assert max(relation_errors(group, gens).values()) < 1e-6
    assert torch.allclose(Q @ Q.T, torch.eye(9), atol=1e-5)
    assert torch.bincount(labels, minlength=5).tolist() == [1, 2, 1, 1, 4]
    found = irrep_multiplicities(group, mats)
    assert {k: round(v) for k, v in found.items()} == dict(zip(names, (1, 2, 1, 1, 2), strict=True))
    with pytest.raises(ValueError, match="not faithful"):
        planted_representation("D4", 4, (1, 1, 1, 1, 0))  # 1-d irreps only: r^2 acts as I
    with pytest.raises(ValueError, match="5 non-negative counts for D4"):
        planted_representation("D4", 4, (2, 1))


def test_d4_planted_orbits_follow_rho_and_invariant_features_are_fixed() -> None:
    cfg = ToyConfig(d=10, n_features=12, group="D4", active=2.0, n_invariant=2)
    toy = make_planted(cfg, n_train=200, n_test=50, seed=1)
    assert toy.train.acts.shape == (200, 8, 10) and toy.test.acts.shape == (50, 8, 10)
    assert toy.generators().keys() == {"r", "s"} and toy.group.name == "D4"
    mats = toy.powers()
    assert mats.shape == (8, 10, 10) and toy.group.relation_error(mats) < 1e-5
    assert torch.allclose(mats[1], toy.R) and torch.allclose(mats[4], toy.S)
    for a in range(8):
        assert torch.allclose(toy.train.acts[:, a], toy.train.acts[:, 0] @ mats[a].T, atol=1e-5)
    assert torch.allclose(toy.train.acts[:, 0], toy.train.amplitudes @ toy.features, atol=1e-5)
    moved = (torch.einsum("gij,nj->gni", mats, toy.features) - toy.features).norm(dim=2)
    assert (moved[:, :2] < 1e-4).all() and (moved[1:, 2:].amax(0) > 1e-2).all()
    # Recovery up to D4: a flipped copy of the features counts, with the element stack.
    flipped = toy.features @ toy.S.T
    assert feature_recovery(flipped, toy.features, mats)["recovery"] == pytest.approx(1.0, 1e-5)
    assert feature_recovery(flipped, toy.features, toy.R)["recovery"] < 0.95
    again = make_planted(cfg, n_train=200, n_test=50, seed=1)
    assert torch.equal(again.train.acts, toy.train.acts) and torch.equal(again.S, toy.S)


def test_d4_fit_on_planted_activations_recovers_r_and_s() -> None:
    from equisae.linrep import analyse_linear_representation

    cfg = ToyConfig(d=8, n_features=24, group="D4", active=4.0)
    toy = make_planted(cfg, n_train=300, n_test=200, seed=2)
    train, val, test = toy.train.acts[:200], toy.train.acts[200:], toy.test.acts
    fit, result = analyse_linear_representation(train, val, test, group="D4")
    for name, true in toy.generators().items():
        found = fit.generators()[name]
        assert float(torch.linalg.matrix_norm(found - true) / torch.linalg.matrix_norm(true)) < 1e-3
    assert min(result.r2_single) > 0.999 and len(result.r2_single) == 8
    assert result.group_error < 1e-4
