"""Tests for the equivariant SAE family: fixed-M, adaptive, wide, group crosscoder, evaluation."""

from __future__ import annotations

import pytest
import torch

from equisae.sae import (
    AdaptiveEquivariantSAE,
    EquivariantSAE,
    GroupCrosscoder,
    TopKSAE,
    WideSAE,
    load_sae,
    save_sae,
)
from equisae.sae.evaluate import (
    decoder_atoms,
    evaluate_on_orbits,
    latent_equivariance_error,
    orbit_latents,
)
from equisae.sae.train import TrainConfig, minibatches, train_sae
from equisae.toy import ToyConfig, feature_recovery, make_planted, matrix_powers

G = 4


#: one torch thread per test (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _toy(d: int = 8, n_features: int = 6, n_invariant: int = 0, seed: int = 0, noise: float = 0.0):
    cfg = ToyConfig(d=d, n_features=n_features, active=1.5, n_invariant=n_invariant, noise=noise)
    return make_planted(cfg, n_train=1000, n_test=400, seed=seed)


def _train(
    sae, data: torch.Tensor, steps: int = 200, batch: int = 32, seed: int = 0, lr: float = 5e-3
):
    cfg = TrainConfig(n_steps=steps, lr=lr, warmup_steps=20, dead_after=1000, seed=seed)
    return train_sae(sae, minibatches(data, batch, steps, seed=seed), cfg, progress=False)


def _perturb(sae, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    sae.normalize_decoder()
    return sae


# ---------------------------------------------------------------------- invariance and shapes


def test_latents_are_invariant_under_the_exact_representation() -> None:
    toy = _toy(d=10, n_features=8)
    sae = _perturb(EquivariantSAE(10, 16, 3, group_order=G, M=toy.R, seed=2))
    with torch.no_grad():
        sae.b_dec.zero_()  # a bias fixed by R (the data mean of a G-invariant set is)
    acts = toy.test.acts  # exact orbits: h_p = R^p h_0
    given = torch.stack([sae.encode(acts[:, p], pose=p) for p in range(G)], 1)
    assert torch.allclose(given, given[:, :1].expand_as(given), atol=1e-5)
    assert given.abs().sum() > 0
    # With the pose inferred, every pose of an orbit gets the same offset, so still invariant.
    inferred = orbit_latents(sae, acts, pose="inferred")
    assert latent_equivariance_error(inferred) < 1e-8
    # The orbit encoding (canonicalise, average) gives the same latents as any single pose.
    loss = sae.loss(acts)
    assert loss.latents.shape == (acts.shape[0], 16)
    assert torch.allclose(loss.latents, given[:, 0], atol=1e-5)
    assert loss.recon.shape == acts.shape
    # Reconstruction is M^p W_dec z + b_dec.
    z = given[:, 0]
    for p in range(G):
        expected = (z @ sae.W_dec) @ torch.linalg.matrix_power(toy.R, p).T
        assert torch.allclose(sae.decode(z, pose=p), expected, atol=1e-5)


def test_regular_sae_latents_are_not_invariant() -> None:
    toy = _toy(d=10, n_features=8)
    sae = _perturb(TopKSAE(10, 16, 3, seed=2))
    assert latent_equivariance_error(orbit_latents(sae, toy.test.acts)) > 0.1


@pytest.mark.parametrize(
    "make",
    [
        lambda: EquivariantSAE(8, 12, 2, group_order=G),
        lambda: AdaptiveEquivariantSAE(8, 12, 2, group_order=G),
        lambda: GroupCrosscoder(8, 12, 2, group_order=G),
    ],
)
def test_orbit_batches_of_the_wrong_shape_raise(make) -> None:
    sae = make()
    assert sae.loss(torch.randn(5, G, 8)).total.ndim == 0
    for bad in (torch.randn(5, G + 1, 8), torch.randn(5, G, 7), torch.randn(5 * G, 8)):
        with pytest.raises(ValueError, match="orbit batch"):
            sae.loss(bad)
    with pytest.raises(ValueError, match="group_order"):
        evaluate_on_orbits(sae, torch.randn(5, 3, 8))
    with pytest.raises(ValueError, match="d_in=8"):
        evaluate_on_orbits(sae, torch.randn(5, G, 9))


def test_bad_constructor_and_pose_arguments_raise() -> None:
    with pytest.raises(ValueError, match="M must have shape"):
        EquivariantSAE(8, 12, 2, group_order=G, M=torch.eye(7))
    with pytest.raises(ValueError, match="group_order"):
        EquivariantSAE(8, 12, 2, group_order=0)
    with pytest.raises(ValueError, match="lambda_eq"):
        AdaptiveEquivariantSAE(8, 12, 2, lambda_eq=-1.0)
    with pytest.raises(ValueError, match="k must be at most"):
        WideSAE(8, 2, 9, group_order=G)  # d_sae = 8 < k
    sae = EquivariantSAE(8, 12, 2, group_order=G)
    with pytest.raises(ValueError, match="pose values"):
        sae.encode(torch.randn(3, 8), pose=G)
    with pytest.raises(ValueError, match="pose"):
        sae.encode(torch.randn(3, 8), pose=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="pose must be an int"):
        GroupCrosscoder(8, 12, 2).decode(torch.zeros(3, 12), pose=G)
    with pytest.raises(ValueError, match="pose must be one of"):
        orbit_latents(sae, torch.randn(3, G, 8), pose="guess")


def test_M_keeps_the_model_dtype() -> None:
    """A float64 model stores M in float64 without a float32 round trip."""
    M = torch.eye(8, dtype=torch.float64) + 1e-9 * torch.ones(8, 8, dtype=torch.float64)
    sae = EquivariantSAE(8, 12, 2, group_order=G, M=M, dtype="float64")
    assert sae.M.dtype == torch.float64 and torch.equal(sae.M, M)
    assert EquivariantSAE(8, 12, 2, group_order=G, M=M).M.dtype == torch.float32


def test_wide_sae_has_group_order_times_the_latents() -> None:
    wide = WideSAE(8, 12, 2, group_order=G, seed=1)
    assert wide.d_sae == 12 * G and wide.k == 2
    equi = EquivariantSAE(8, 12, 2, group_order=G)
    assert equi.n_params < GroupCrosscoder(8, 12, 2, group_order=G).n_params < wide.n_params
    assert equi.n_params == TopKSAE(8, 12, 2).n_params and equi.n_fixed_params == 64
    assert AdaptiveEquivariantSAE(8, 12, 2).n_params == equi.n_params + 64


# ---------------------------------------------------------------------- save / load


@pytest.mark.parametrize(
    "make",
    [
        lambda R: EquivariantSAE(8, 12, 2, group_order=G, M=R, seed=3),
        lambda R: AdaptiveEquivariantSAE(8, 12, 2, group_order=G, M=R, lambda_inv=0.5, seed=3),
        lambda R: GroupCrosscoder(8, 12, 2, group_order=G, seed=3),
        lambda R: WideSAE(8, 3, 2, group_order=G, seed=3),
    ],
)
def test_save_load_round_trip_keeps_M_and_outputs(make, tmp_path) -> None:
    toy = _toy()
    sae = _perturb(make(toy.R))
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert type(loaded) is type(sae) and loaded.config() == sae.config()
    for name, tensor in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    if isinstance(sae, EquivariantSAE):
        assert not torch.allclose(loaded.M, torch.eye(8))
    if isinstance(sae, AdaptiveEquivariantSAE):
        assert torch.equal(loaded.M_init, toy.R) and loaded.m_drift() == sae.m_drift() > 0
    assert evaluate_on_orbits(loaded, toy.test.acts) == evaluate_on_orbits(sae, toy.test.acts)


# ---------------------------------------------------------------------- the crosscoder


def test_crosscoder_classifies_planted_invariant_and_equivariant_features() -> None:
    # Trivial irrep x4, rotation x3, sign x2 (d = 12); features 0, 1 are G-invariant.
    cfg = ToyConfig(d=12, n_features=4, active=1.2, n_invariant=2, multiplicities=(4, 3, 2))
    toy = make_planted(cfg, n_train=1000, n_test=10, seed=4)
    cc = GroupCrosscoder(12, 8, 2, group_order=G, seed=0)
    _train(cc, toy.train.acts, steps=300, lr=2e-2)
    match = feature_recovery(cc.decoder_blocks[:, 0].detach(), toy.features)
    cosines = cc.block_cosines()
    assert cosines.shape == (8, G) and torch.allclose(cosines[:, 0], torch.ones(8))
    invariant = cc.invariant_latents(threshold=0.9)
    labels = cc.classify_latents(threshold=0.9)
    recovered = match["per_feature"] > 0.95
    # Local minima can merge two features into one latent: judge the features that were found,
    # and require both kinds among them.
    assert bool(recovered[:2].any()) and bool(recovered[2:].any()), match["per_feature"]
    for i, j in enumerate(match["best_atom"].tolist()):
        if not recovered[i]:
            continue
        if i < 2:  # planted invariant: every block equals block 0
            assert bool(invariant[j]) and labels[j] == "invariant", cosines[j]
        else:  # planted equivariant: block p is R^p f_i, not f_i
            assert not bool(invariant[j]) and labels[j] == "equivariant", cosines[j]
            blocks = torch.nn.functional.normalize(cc.decoder_blocks[j].detach(), dim=-1)
            rotated = toy.features[i] @ matrix_powers(toy.R, G).transpose(1, 2)
            assert (blocks * rotated).sum(-1).min() > 0.9
    with pytest.raises(ValueError, match="threshold"):
        cc.invariant_latents(threshold=1.5)


# ---------------------------------------------------------------------- the must-hold items


def test_fixed_M_sae_with_true_R_is_invariant_and_recovers_features() -> None:
    # Low interference: 8 nearly orthogonal features in R^16, a 2x overcomplete dictionary.
    toy = _toy(d=16, n_features=8, noise=0.02)
    sae = EquivariantSAE(16, 16, 2, group_order=G, M=toy.R, seed=0)
    _train(sae, toy.train.acts, steps=300, lr=2e-2)
    metrics = evaluate_on_orbits(sae, toy.test.acts)
    assert metrics["latent_equivariance_error"] < 0.02
    # Empty samples (no active feature) have no recoverable pose, so only the FVU is compared.
    assert metrics["fvu"] == pytest.approx(metrics["fvu_oracle_pose"], abs=0.02)
    assert metrics["fvu"] < 0.2 and 1.0 < metrics["l0"] <= 2.0  # TopK then ReLU: at most k
    assert metrics["fvu_inferred_pose"] == metrics["fvu"]
    assert feature_recovery(decoder_atoms(sae), toy.features, toy.R)["recovery"] > 0.9


def test_adaptive_sae_moves_M_from_identity_toward_planted_R() -> None:
    toy = _toy(d=8, n_features=6)
    sae = AdaptiveEquivariantSAE(8, 6, 2, group_order=G, M=None, lambda_eq=10.0, seed=0)
    before, error_before = sae.distance_to(toy.R), sae.group_error()
    assert sae.m_drift() == 0.0 and error_before == 0.0  # I is a (trivial) representation
    result = _train(sae, toy.train.acts, steps=300, lr=2e-2)
    after = sae.distance_to(toy.R)
    assert after < 0.3 * before, (before, after)
    assert sae.m_drift() > 0.5
    assert sae.group_error() < 0.3
    assert "loss_equivariance" in result.history[-1] and "loss_invariance" in result.history[-1]


def test_adaptive_loss_terms_vanish_for_the_true_representation() -> None:
    toy = _toy(d=8, n_features=6)
    sae = AdaptiveEquivariantSAE(8, 6, 2, group_order=G, M=toy.R, seed=0)
    with torch.no_grad():
        sae.b_dec.zero_()
    out = sae.loss(toy.train.acts[:64])
    assert out.terms["equivariance"] < 1e-10 and out.terms["invariance"] < 1e-10
    out.total.backward()
    assert sae.M.grad is not None and torch.isfinite(sae.M.grad).all()


def test_training_is_deterministic_under_seed() -> None:
    toy = _toy()
    runs = []
    for _ in range(2):
        sae = AdaptiveEquivariantSAE(8, 6, 2, group_order=G, seed=5)
        _train(sae, toy.train.acts, steps=30, seed=7)
        runs.append(sae.state_dict())
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name
