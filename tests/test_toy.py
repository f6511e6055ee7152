"""Tests for the planted toy setting (equisae.toy): representation, data and metrics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from equisae.toy import (
    ToyConfig,
    cyclic_representation,
    default_multiplicities,
    detection_f1,
    feature_recovery,
    fixed_subspace,
    irrep_dims,
    make_planted,
    matrix_powers,
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


# ---------------------------------------------------------------------- the planted sweep


def test_planted_jobs_cover_the_grid_with_distinct_hashes() -> None:
    from equisae.planted import MODEL_TYPES, planted_jobs, planted_settings

    for mode in ("quick", "full"):
        s = planted_settings(mode)
        jobs = planted_jobs(mode)
        assert len(jobs) == len(s.feature_counts) * len(MODEL_TYPES) * len(s.seeds)
        assert len({j.hash for j in jobs}) == len(jobs)
        assert all(j.d_sae == s.expansion * j.toy.n_features for j in jobs)
    assert len(planted_settings("full").seeds) >= 3 and len(planted_settings("quick").seeds) >= 2
    with pytest.raises(ValueError, match="mode"):
        planted_settings("medium")
    job = planted_jobs("quick")[0]
    with pytest.raises(KeyError, match="unknown planted model"):
        dataclasses.replace(job, model="dense")
    with pytest.raises(ValueError, match="batch_size"):
        dataclasses.replace(job, batch_size=2)


def test_planted_job_runs_and_reports_every_metric(tmp_path) -> None:
    from equisae.planted import (
        METRICS,
        PlantedSettings,
        planted_jobs,
        planted_records,
        run_planted,
        series,
        summarize,
    )

    settings = PlantedSettings(
        mode="quick",
        d=8,
        feature_counts=(4, 8),
        seeds=(0, 1),
        n_train=200,
        n_test=100,
        n_steps=20,
        batch_size=64,
        models=("topk", "equivariant", "adaptive"),
    )
    result = run_planted(
        "quick", scheduler="serial", progress=False, settings=settings, artifacts=str(tmp_path)
    )
    records = planted_records(result.results)
    assert len(records) == len(planted_jobs("quick", settings)) == 12
    for r in records:
        assert all(0 <= r[m] <= 1.0 + 1e-6 for m in ("recovery", "detection_f1", "top1_detection"))
        assert r["n_params"] > 0 and 0 < r["l0"] <= 2
    adaptive = [r for r in records if r["model"] == "adaptive"]
    assert all(r["m_distance_to_R_before"] == pytest.approx(2**0.5, rel=1e-4) for r in adaptive)
    equi = [r for r in records if r["model"] == "equivariant"]
    assert all(r["latent_equivariance_error"] < 0.2 for r in equi)
    summary = summarize(records)
    assert set(summary) == {"topk", "equivariant", "adaptive"} and set(summary["topk"]) == set(
        METRICS
    )
    x, mean, std = series(summary, "topk", "recovery")
    assert x.tolist() == [4, 8] and mean.shape == std.shape == (2,)
    per_seed = summary["topk"]["recovery"]["4"]["per_seed"]
    assert len(per_seed) == 2 and mean[0] == pytest.approx(np.mean(per_seed))
    # A second run loads every job from the cache, with identical metrics.
    again = run_planted(
        "quick", scheduler="serial", progress=False, settings=settings, artifacts=str(tmp_path)
    )
    assert again.n_cached == 12 and planted_records(again.results) == records


def test_equivariant_advantage_and_its_sentence_follow_the_numbers() -> None:
    from equisae.planted import describe_advantage, equivariant_advantage

    def entry(mean: float, std: float = 0.01) -> dict:
        return {"mean": mean, "std": std, "per_seed": [mean - std, mean + std]}

    summary = {
        "topk": {"detection_f1": {"8": entry(0.3), "32": entry(0.2)}},
        "wide": {"detection_f1": {"8": entry(0.4), "32": entry(0.25)}},
        "equivariant": {"detection_f1": {"8": entry(0.7), "32": entry(0.65)}},
    }
    adv = equivariant_advantage(summary, "detection_f1")
    assert adv["n_features"] == [8, 32] and adv["best_baseline"] == ["wide", "wide"]
    assert adv["gap"] == pytest.approx([0.3, 0.4]) and adv["separated"] == [True, True]
    text = describe_advantage(adv, "detection F1")
    assert "beat every baseline at every number of features" in text
    assert "in favour of the equivariant SAEs" in text and "+0.300" in text
    # Lower is better for FVU: a higher equivariant FVU is a loss.
    fvu = {m: {"fvu": {"8": entry(v)}} for m, v in (("topk", 0.2), ("equivariant", 0.5))}
    adv = equivariant_advantage(fvu, "fvu", higher_is_better=False)
    assert adv["gap"] == pytest.approx([-0.3])
    assert "best baseline beats the equivariant SAEs" in describe_advantage(adv, "FVU")
    with pytest.raises(ValueError, match="baseline"):
        equivariant_advantage({"equivariant": summary["equivariant"]}, "detection_f1")
