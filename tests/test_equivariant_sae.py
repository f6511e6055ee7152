"""Tests for the equivariant SAE family: fixed-M, adaptive, wide, group crosscoder, evaluation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from equisae.groups import get_group, representation_matrices
from equisae.planted import ToyConfig, feature_recovery, make_planted, matrix_powers
from equisae.plots.style import variant_colour, variant_label
from equisae.sae import (
    AdaptiveCanonicalSAE,
    AdaptiveEquivariantSAE,
    CanonicalEquivariantSAE,
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
    orbit_reconstructions,
)
from equisae.sae.train import TrainConfig, minibatches, train_sae

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


# ---------------------------------------------------------------------- helpers


def _reynolds_encoder(sae, rho: torch.Tensor) -> None:
    """Project the encoder onto the invariant subspace: ``W_enc <- mean_g rho(g)^T W_enc``.

    For an exact orthogonal representation and a G-fixed ``b_dec`` (zero) the pre-activations,
    hence the latents, of every pose of an orbit are then equal.
    """
    with torch.no_grad():
        sae.W_enc.copy_(rho.transpose(1, 2).mean(0) @ sae.W_enc)
        sae.b_dec.zero_()


def _d4_planted(copies: int = 2, n: int = 300, seed: int = 0):
    """Orbits ``h_a = rho(a) h_0`` under ``copies`` blocks of D4's regular representation."""
    group = get_group("D4")
    reg = group.regular_representation()  # (8, 8, 8)
    rho = torch.stack([torch.block_diag(*[reg[a]] * copies) for a in range(group.order)])
    gen = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(6, 8 * copies, generator=gen), dim=-1)
    coef = torch.rand(n, 6, generator=gen) * (torch.rand(n, 6, generator=gen) < 0.3)
    h0 = coef @ features
    acts = torch.einsum("aij,nj->nai", rho, h0)
    return group, rho, {"r": rho[1], "s": rho[group.n]}, acts


def _naive_pose_inference(sae, flat: torch.Tensor):
    """Per-pose loop, no stacking: the reference for the one-GEMM inference."""
    rho = representation_matrices(sae.group, sae.generators())
    inverse = sae.representation_inverse()  # inv(rho(g)), or rho(g^-1) for learned generators
    errors, recons, latents = [], [], []
    for p in range(sae.group_order):
        centred = flat - sae.b_dec
        if sae.encoder == "canonical":
            centred = centred @ inverse[p].T
        z = sae.activation(centred @ sae.W_enc + sae.b_enc)
        recon = (z @ sae.W_dec) @ rho[p].T + sae.b_dec
        errors.append((recon - flat).pow(2).sum(-1))
        recons.append(recon)
        latents.append(z)
    idx = torch.stack(errors, 1).argmin(1)
    rows = torch.arange(len(flat))
    return idx, torch.stack(recons, 1)[rows, idx], torch.stack(latents, 1)[rows, idx]


# ---------------------------------------------------------------------- the raw encoder


def test_raw_encoder_reads_each_pose_and_is_not_invariant_by_construction() -> None:
    toy = _toy(d=10, n_features=8)
    sae = _perturb(EquivariantSAE(10, 16, 3, group_order=G, M=toy.R, seed=2))
    acts = toy.test.acts
    expected = sae.activation((acts - sae.b_dec).reshape(-1, 10) @ sae.W_enc + sae.b_enc)
    z = sae.orbit_latents(acts, pose="oracle")
    assert torch.allclose(z.reshape(-1, 16), expected, atol=1e-6)
    for p in range(G):  # the pose does not change the latents of the raw encoder
        assert torch.equal(sae.encode(acts[:, p], pose=p), sae.encode(acts[:, p]))
    assert latent_equivariance_error(z) > 0.05  # a random encoder is not invariant
    out = sae.loss(acts)
    assert out.latents.shape == (acts.shape[0], G, 16) and out.recon.shape == acts.shape
    assert float(out.terms["invariance"].detach()) > 0
    assert torch.allclose(out.total, out.terms["mse"] + sae.lambda_inv * out.terms["invariance"])
    # The first term is the per-element MSE of rho(g_p) W_dec z_p + b_dec.
    recon = torch.einsum("pij,npj->npi", matrix_powers(toy.R, G), z @ sae.W_dec) + sae.b_dec
    assert torch.allclose(out.recon, recon, atol=1e-5)
    assert torch.allclose(out.terms["mse"], (recon - acts).pow(2).mean(), atol=1e-7)


@pytest.mark.parametrize("group_name", ["C4", "D4"])
def test_reconstruction_is_exactly_equivariant_when_latents_are_invariant(group_name) -> None:
    if group_name == "C4":
        toy = _toy(d=10, n_features=8)
        acts, rho = toy.test.acts, matrix_powers(toy.R, G)
        sae = EquivariantSAE(10, 16, 3, M=toy.R, seed=2)
    else:
        group, rho, gens, acts = _d4_planted()
        sae = EquivariantSAE(16, 16, 3, group="D4", generators=gens, seed=2)
    _reynolds_encoder(_perturb(sae), rho)
    z, recon, _ = sae.orbit_outputs(acts, pose="oracle")
    assert latent_equivariance_error(z) < 1e-10 and z.abs().sum() > 0
    assert float(sae.loss(acts).terms["invariance"]) < 1e-10
    pose0 = recon[:, 0] - sae.b_dec
    expected = torch.einsum("pij,nj->npi", rho, pose0) + sae.b_dec
    assert torch.allclose(recon, expected, atol=1e-5)
    # Inferred poses give the same latents for every pose of an orbit, so still invariant.
    assert latent_equivariance_error(sae.orbit_latents(acts, pose="inferred")) < 1e-10


def test_pose_inference_recovers_the_true_pose_on_planted_data() -> None:
    toy = _toy(d=16, n_features=8, noise=0.02)
    sae = EquivariantSAE(16, 16, 2, group_order=G, M=toy.R, seed=0)
    _train(sae, toy.train.acts, steps=300, lr=2e-2)
    _, _, poses = sae.orbit_outputs(toy.test.acts, pose="inferred")
    nonempty = toy.test.presence.any(1)  # an empty sample has no pose to recover
    accuracy = (poses[nonempty] == torch.arange(G)).double().mean()
    assert accuracy > 0.95, accuracy
    metrics = evaluate_on_orbits(sae, toy.test.acts)
    assert metrics["fvu"] < 0.35 and metrics["latent_equivariance_error"] < 0.3
    assert metrics["fvu_inferred_pose"] == metrics["fvu"]
    assert feature_recovery(decoder_atoms(sae), toy.features, toy.R)["recovery"] > 0.8


@pytest.mark.parametrize("cls", [EquivariantSAE, CanonicalEquivariantSAE, AdaptiveCanonicalSAE])
@pytest.mark.parametrize("group_name", ["C4", "D4"])
def test_one_gemm_pose_inference_equals_the_naive_per_pose_loop(cls, group_name) -> None:
    if group_name == "C4":
        toy = _toy(d=10, n_features=8, noise=0.1)
        acts, kwargs = toy.test.acts, {"M": toy.R.double()}
    else:
        _, _, gens, acts = _d4_planted(copies=1)
        acts = acts + 0.05 * torch.randn(acts.shape, generator=torch.Generator().manual_seed(3))
        kwargs = {"group": "D4", "generators": {k: v.double() for k, v in gens.items()}}
    sae = _perturb(cls(acts.shape[-1], 16, 3, dtype="float64", seed=1, **kwargs))
    flat = acts.reshape(-1, acts.shape[-1]).double()
    idx, recon, z = _naive_pose_inference(sae, flat)
    out = sae(flat)
    assert torch.equal(sae.infer_pose(flat), idx)
    assert torch.allclose(out.recon, recon, atol=1e-6) and torch.allclose(out.latents, z, atol=1e-6)
    z_o, recon_o, poses_o = sae.orbit_outputs(acts.double(), pose="inferred")
    assert torch.equal(poses_o.reshape(-1), idx)
    assert torch.allclose(recon_o.reshape(flat.shape), recon, atol=1e-6)
    # a given pose tensor (rows grouped by pose) equals the naive per-row computation
    given = sae(flat, pose=idx)
    assert torch.allclose(given.recon, recon, atol=1e-6)


def test_regular_sae_latents_are_not_invariant() -> None:
    toy = _toy(d=10, n_features=8)
    sae = _perturb(TopKSAE(10, 16, 3, seed=2))
    assert latent_equivariance_error(orbit_latents(sae, toy.test.acts)) > 0.1


@pytest.mark.parametrize(
    "make",
    [
        lambda: EquivariantSAE(8, 12, 2, group_order=G),
        lambda: AdaptiveEquivariantSAE(8, 12, 2, group_order=G),
        lambda: CanonicalEquivariantSAE(8, 12, 2, group_order=G),
        lambda: AdaptiveCanonicalSAE(8, 12, 2, group_order=G),
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
    with pytest.raises(ValueError, match="lambda_inv"):
        EquivariantSAE(8, 12, 2, lambda_inv=float("nan"))
    with pytest.raises(ValueError, match="does not match group D4"):
        EquivariantSAE(8, 12, 2, group_order=4, group="D4")
    with pytest.raises(ValueError, match=r"generators=\{'r': R, 's': S\}"):
        EquivariantSAE(8, 12, 2, group="D4", M=torch.eye(8))
    with pytest.raises(ValueError, match="must map"):
        EquivariantSAE(8, 12, 2, group="D4", generators={"r": torch.eye(8)})
    with pytest.raises(ValueError, match="not both"):
        EquivariantSAE(8, 12, 2, M=torch.eye(8), generators={"r": torch.eye(8)})
    with pytest.raises(KeyError, match="unknown group"):
        EquivariantSAE(8, 12, 2, group="Z4")
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
        lambda R: CanonicalEquivariantSAE(8, 12, 2, group_order=G, M=R, seed=3),
        lambda R: AdaptiveCanonicalSAE(8, 12, 2, M=R, lambda_eq=3.0, seed=3),
        lambda R: EquivariantSAE(8, 12, 2, group="D4", generators=_d4_planted(1)[2], seed=3),
        lambda R: AdaptiveEquivariantSAE(8, 12, 2, group="D4", generators=_d4_planted(1)[2]),
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
    acts = toy.test.acts
    if isinstance(sae, EquivariantSAE):
        assert not torch.allclose(loaded.M, torch.eye(8))
        assert loaded.group == sae.group and loaded.encoder == sae.encoder
        for name, mat in sae.generators().items():
            assert torch.equal(loaded.generators()[name], mat), name
        if sae.group.name == "D4":
            acts = _d4_planted(1)[3]
    if isinstance(sae, AdaptiveEquivariantSAE):
        assert loaded.m_drift() == sae.m_drift() > 0
        if sae.group.name == "C4":
            assert torch.equal(loaded.M_init, toy.R)
    assert evaluate_on_orbits(loaded, acts) == evaluate_on_orbits(sae, acts)


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


def test_canonical_fixed_M_sae_with_true_R_is_invariant_and_recovers_features() -> None:
    # Low interference: 8 nearly orthogonal features in R^16, a 2x overcomplete dictionary.
    toy = _toy(d=16, n_features=8, noise=0.02)
    sae = CanonicalEquivariantSAE(16, 16, 2, group_order=G, M=toy.R, seed=0)
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
    _reynolds_encoder(sae, matrix_powers(toy.R, G))  # invariant latents, b_dec = 0
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


# ---------------------------------------------------------------------- groups and generators


def test_d4_model_with_the_regular_representation() -> None:
    group, rho, gens, acts = _d4_planted(copies=1)
    sae = EquivariantSAE(8, 12, 2, group="D4", generators=gens)
    assert sae.group_order == 8 and sae.group == group and sae.n_fixed_params == 2 * 64
    assert torch.equal(sae.representation(), rho)
    assert sae.group_error() == 0.0 and group.relation_error(sae.representation()) == 0.0
    assert set(sae.relation_errors()) == {"r^4", "s^2", "(sr)^2"}
    assert sae.distance_to(gens["s"], "s") == 0.0 and sae.distance_to(torch.eye(8), "s") > 0.5
    assert sae.generator_distances(gens) == {"r": 0.0, "s": 0.0}
    assert sae.loss(acts).recon.shape == acts.shape
    # A wrong flip breaks the relations, and group_error says so.
    bad = EquivariantSAE(8, 12, 2, group="D4", generators={"r": gens["r"], "s": torch.eye(8)})
    assert bad.relation_errors()["(sr)^2"] > 0.5 and bad.group_error() > 0.5


def test_group_order_keeps_working_and_old_configs_load() -> None:
    assert EquivariantSAE(8, 12, 2).group.name == "C4"
    assert EquivariantSAE(8, 12, 2, group_order=6).group.name == "C6"
    sae = AdaptiveEquivariantSAE(8, 12, 2, group_order=8)
    assert sae.group.name == "C8" and sae.config()["group"] == "C8"
    with pytest.raises(ValueError, match="positional"):
        AdaptiveEquivariantSAE(8, 12, 2, 8)  # fields after k are keywords
    old_cfg = {"architecture": "equivariant_topk", "d_in": 8, "d_sae": 12, "k": 2}
    old_cfg["group_order"] = 6  # what the oldest version saved: no group name
    assert EquivariantSAE.from_config(old_cfg).group.name == "C6"
    with pytest.raises(ValueError, match="group_order=6 does not match"):
        EquivariantSAE.from_config({**old_cfg, "group": "D4"})


def test_fixed_representation_cache_is_invalidated_when_M_changes() -> None:
    toy = _toy(d=8)
    sae = EquivariantSAE(8, 12, 2, M=toy.R)
    first = sae.representation()
    assert sae.representation() is first  # cached
    with torch.no_grad():
        sae.M.copy_(torch.linalg.inv(toy.R))  # in place: _version changes
    assert torch.allclose(sae.representation(), matrix_powers(sae.M, G))
    assert not torch.allclose(sae.representation(), first)
    sae.load_state_dict({**sae.state_dict(), "M": toy.R})
    assert torch.allclose(sae.representation(), first)
    assert sae.double().representation().dtype == torch.float64  # a new buffer tensor
    # A learned generator is never served from the cache when it needs a graph.
    adaptive = AdaptiveEquivariantSAE(8, 12, 2, M=toy.R)
    assert adaptive.representation().grad_fn is not None
    with torch.no_grad():
        cached = adaptive.representation()
        assert adaptive.representation() is cached
        adaptive.M.mul_(2.0)
        assert torch.allclose(adaptive.representation(), matrix_powers(adaptive.M, G))


def test_singular_or_ill_conditioned_fixed_M_is_refused() -> None:
    singular = torch.eye(8)
    singular[3, 3] = 0.0
    with pytest.raises(ValueError, match="M is singular or ill-conditioned.*linrep"):
        EquivariantSAE(8, 12, 2, M=singular)
    with pytest.raises(ValueError, match="ill-conditioned"):
        CanonicalEquivariantSAE(8, 12, 2, M=torch.diag(torch.logspace(0, -7, 8)))
    gens = {"r": torch.eye(8), "s": torch.zeros(8, 8)}
    with pytest.raises(ValueError, match=r"generators\['s'\] is singular"):
        EquivariantSAE(8, 12, 2, group="D4", generators=gens)
    with pytest.raises(ValueError, match="non-finite"):
        EquivariantSAE(8, 12, 2, M=torch.full((8, 8), float("nan")))
    # The adaptive model starts anywhere finite: it learns the generators.
    assert AdaptiveEquivariantSAE(8, 12, 2, M=singular).group_error() > 0


# ---------------------------------------------------------------------- the canonical variant


def test_canonical_variants_keep_the_previous_encoder() -> None:
    """Reference formulas of the previous EquivariantSAE / AdaptiveEquivariantSAE."""
    toy = _toy(d=10, n_features=8, noise=0.05)
    acts, R = toy.test.acts, toy.R
    fixed = _perturb(CanonicalEquivariantSAE(10, 16, 3, M=R, seed=2))
    powers, inv_powers = matrix_powers(R, G), matrix_powers(torch.linalg.inv(R), G)
    centred = acts - fixed.b_dec
    c = torch.einsum("pij,bpj->bi", inv_powers, centred) / G
    z = fixed.activation(c @ fixed.W_enc + fixed.b_enc)
    recon = torch.einsum("pij,bj->bpi", powers, z @ fixed.W_dec) + fixed.b_dec
    out = fixed.loss(acts)
    assert torch.allclose(out.latents, z, atol=1e-5) and torch.allclose(out.recon, recon, atol=1e-5)
    for p in range(G):  # a single activation at a known pose: z from M^-p (h - b_dec)
        c_p = (acts[:, p] - fixed.b_dec) @ inv_powers[p].T
        expect = fixed.activation(c_p @ fixed.W_enc + fixed.b_enc)
        assert torch.allclose(fixed.encode(acts[:, p], pose=p), expect, atol=1e-5)
    adaptive = _perturb(AdaptiveCanonicalSAE(10, 16, 3, M=R, lambda_eq=10.0, seed=2))
    powers = matrix_powers(adaptive.M.detach(), G)  # the perturbed, learned M
    inverse = powers[(-torch.arange(G)) % G]  # M^{(n-p) mod n}
    base = acts - adaptive.b_dec
    canonical = torch.einsum("pij,bpj->bpi", inverse, base)
    z = adaptive.activation(canonical @ adaptive.W_enc + adaptive.b_enc)
    recon = torch.einsum("pij,bpj->bpi", powers, z @ adaptive.W_dec) + adaptive.b_dec
    mse = (recon - acts).pow(2).mean()
    inv = (z - z.mean(1, keepdim=True)).pow(2).sum() / acts.numel()
    eq = (base - torch.einsum("pij,bj->bpi", powers, base[:, 0])).pow(2).sum() / acts.numel()
    out = adaptive.loss(acts)
    assert torch.allclose(out.total, mse + inv + 10.0 * eq, atol=1e-6)
    assert torch.allclose(out.latents, z, atol=1e-6)


# ---------------------------------------------------------------------- traits, evaluation, vmap


@pytest.mark.parametrize(
    "cls", [EquivariantSAE, AdaptiveEquivariantSAE, CanonicalEquivariantSAE, AdaptiveCanonicalSAE]
)
def test_traits_and_orbit_methods_match_the_evaluation(cls) -> None:
    assert cls.takes_orbits and cls.is_equivariant
    assert not hasattr(cls, "label") and not hasattr(cls, "colour")  # in equisae.plots.style
    assert variant_label(cls.variant) and variant_colour(cls.variant).startswith("tab:")
    toy = _toy(d=8, noise=0.05)
    sae = _perturb(cls(8, 12, 2, M=toy.R, seed=4))
    for pose in ("inferred", "oracle"):
        z, recon, _ = orbit_reconstructions(sae, toy.test.acts, pose)
        assert torch.allclose(sae.orbit_latents(toy.test.acts, pose), z, atol=1e-6)
        assert torch.allclose(sae.orbit_reconstructions(toy.test.acts, pose), recon, atol=1e-6)
    with pytest.raises(ValueError, match="pose must be one of"):
        sae.orbit_latents(toy.test.acts, pose="guess")


@pytest.mark.parametrize(
    "cls", [EquivariantSAE, AdaptiveEquivariantSAE, CanonicalEquivariantSAE, AdaptiveCanonicalSAE]
)
def test_stacked_loss_of_several_models_is_each_models_own_loss(cls) -> None:
    """The loss written once on stacked weights: S models with different weights, k and dead
    latents give, SAE by SAE, the loss, terms and gradients of each model's own ``loss``."""
    from equisae.sae.stack import Stack

    toy = _toy(d=8)
    models = [
        _perturb(cls(8, 12, k, M=toy.R, seed=s, aux_k=3), seed=s + 1)
        for s, k in ((0, 2), (1, 3), (2, 2))
    ]
    batch = toy.train.acts[:16]
    dead = torch.stack([torch.arange(12) < n for n in (0, 5, 9)])
    stack = Stack.of(models)
    out = stack.loss(batch.expand(3, *batch.shape), dead)
    out.total.sum().backward()
    for i, model in enumerate(models):
        own = model.loss(batch, dead[i] if dead[i].any() else None)
        torch.testing.assert_close(out.total[i], own.total, rtol=1e-5, atol=1e-6)
        assert set(own.terms) <= set(out.terms) and ("auxk" in own.terms) == bool(dead[i].any())
        for name, value in own.terms.items():
            torch.testing.assert_close(out.terms[name][i], value, rtol=1e-5, atol=1e-6)
        own.total.backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(stack[name].grad[i], p.grad, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------- D4: learning r and s


def _d4_adaptive_run(bases: str, steps: int = 300, seed: int = 0):
    """The planted sweep's adaptive model (identity start, lambda_eq 10, lr 1e-2) on a small D4
    problem: 6 features in d = 8, so the canonical activations span only 6 of the 8 dimensions."""
    from equisae.sweeps.planted import PlantedSettings, build_planted_sae

    s = PlantedSettings(
        mode="test", d=8, feature_counts=(6,), seeds=(seed,), n_train=600, n_test=100, group="D4"
    )
    toy = make_planted(s.toy(6), s.n_train, s.n_test, seed=seed)
    sae = build_planted_sae("adaptive", toy, s.expansion * 6, s.k, seed, s.lambda_inv, s.lambda_eq)
    if bases != "auto":  # the same model (identity start) with other equivariance bases
        sae = type(sae)(dataclasses.replace(sae.cfg, equivariance_bases=bases))
    cfg = TrainConfig(n_steps=steps, lr=s.lr, warmup_steps=30, seed=seed)
    train_sae(sae, minibatches(toy.train.acts, 128 // 8, steps, seed=seed), cfg, progress=False)
    return toy, sae


def test_adaptive_d4_from_identity_learns_both_generators_and_the_features() -> None:
    toy, sae = _d4_adaptive_run("auto")
    assert sae.equivariance_bases == "all" and sae.config()["equivariance_bases"] == "all"
    dist = sae.generator_distances(toy.generators())
    assert dist["r"] < 0.05 and dist["s"] < 0.05, dist
    assert sae.group_error() < 0.05
    assert feature_recovery(decoder_atoms(sae), toy.features, toy.powers())["recovery"] > 0.8


def test_canonical_base_leaves_the_flip_unidentified() -> None:
    """With h_0 as the only base, S multiplies only canonical activations: r is learned, s not."""
    toy, sae = _d4_adaptive_run("canonical")
    dist = sae.generator_distances(toy.generators())
    assert dist["r"] < 0.05 and dist["s"] > 0.3, dist


def test_equivariance_bases_resolve_by_group_and_round_trip(tmp_path) -> None:
    assert AdaptiveEquivariantSAE(8, 6, 2).equivariance_bases == "canonical"  # C4: METHOD.md
    group, rho, gens, acts = _d4_planted(copies=1)
    sae = AdaptiveEquivariantSAE(8, 12, 2, group="D4", generators=gens)
    assert sae.equivariance_bases == "all"
    with torch.no_grad():
        sae.b_dec.zero_()
    assert float(sae.loss(acts).terms["equivariance"]) < 1e-10  # exact rep: every base fits
    save_sae(sae, tmp_path / "sae")
    assert load_sae(tmp_path / "sae").equivariance_bases == "all"
    with pytest.raises(ValueError, match="equivariance_bases must be one of"):
        AdaptiveEquivariantSAE(8, 6, 2, equivariance_bases="some")
