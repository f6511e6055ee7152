"""Tests for equisae.experiments: stable job hashes, complete grids, SAE construction, errors."""

from __future__ import annotations

import pytest
import torch

from equisae import experiments as ex
from equisae.runner import JobResult


def test_job_configs_hash_stably():
    s = ex.sweep_settings("quick")
    a = ex.SAEJob("gcnn", "bottleneck", "adaptive", 4, 0, "quick", s.training)
    b = ex.SAEJob(
        "gcnn", "bottleneck", "adaptive", 4, 0, "quick", ex.sweep_settings("quick").training
    )
    assert a.hash == b.hash
    assert len(a.hash) == 16
    assert a.hash != ex.SAEJob("gcnn", "bottleneck", "adaptive", 4, 1, "quick", s.training).hash
    assert a.hash != ex.SAEJob("gcnn", "bottleneck", "topk", 4, 0, "quick", s.training).hash
    longer = ex.SAETraining(n_steps=s.training.n_steps + 1)
    assert a.hash != ex.SAEJob("gcnn", "bottleneck", "adaptive", 4, 0, "quick", longer).hash
    p1, p2 = ex.ProbeJob(a, s.probing), ex.ProbeJob(b, s.probing)
    assert p1.hash == p2.hash
    assert p1.dependencies() == (a,)
    assert a.dependencies() == (ex.InputsJob("gcnn", "bottleneck", "quick"),)


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_grids_contain_every_sae_type(mode):
    s = ex.sweep_settings(mode)
    frontier = ex.frontier_jobs(mode)
    assert {j.sae_type for j in frontier} == set(ex.SAE_TYPES)
    assert len({j.hash for j in frontier}) == len(frontier)  # no duplicates
    assert s.probe_k in s.ks_for("bottleneck") and s.probe_k in s.ks_for("intermediate")
    probes = ex.probing_jobs(mode)
    sae_types = {j.sae.sae_type for j in probes if isinstance(j, ex.ProbeJob)}
    assert sae_types == set(ex.SAE_TYPES)
    refs = {j.reference for j in probes if isinstance(j, ex.ReferenceProbeJob)}
    assert refs == set(ex.REFERENCES)
    frontier_hashes = {j.hash for j in frontier}
    assert all(j.sae.hash in frontier_hashes for j in probes if isinstance(j, ex.ProbeJob))
    if mode == "full":
        assert len(s.seeds) >= 3
        models = {m for m, layer in s.targets if layer == "bottleneck"}
        assert len(models) == 5
        assert {("cnn_augmented", "intermediate"), ("gcnn", "intermediate")} <= set(s.targets)


def test_sweeps_registry_and_bad_mode():
    assert {"frontier", "probing"} <= set(ex.SWEEPS)
    with pytest.raises(ValueError, match="mode"):
        ex.sweep_settings("medium")
    with pytest.raises(ValueError, match="sae_type"):
        ex.SAEJob("gcnn", "bottleneck", "relu", 4, 0, "quick")
    with pytest.raises(ValueError, match="layer"):
        ex.SAEJob("gcnn", "middle", "topk", 4, 0, "quick")
    with pytest.raises(ValueError, match="reference"):
        ex.ReferenceProbeJob("gcnn", "bottleneck", "pca", 4, 0, "quick")
    with pytest.raises(ValueError, match="n_steps"):
        ex.SAETraining(n_steps=0)


def test_build_sae_every_type_and_shapes():
    training = ex.SAETraining(expansion=4, max_d_sae=24)
    M = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))[0]
    h = torch.randn(5, 8)
    for sae_type in ex.SAE_TYPES:
        sae = ex.build_sae(sae_type, 8, 3, 0, training, M=M)
        assert sae.d_in == 8
        assert sae.encode(h).shape[0] == 5
    assert ex.build_sae("topk", 8, 3, 0, training).d_sae == 24  # 4 * 8 capped at 24
    assert ex.build_sae("wide", 8, 3, 0, training).d_sae == 24 * 4
    with pytest.raises(ValueError, match="needs the fitted representation"):
        ex.build_sae("equivariant", 8, 3, 0, training)
    with pytest.raises(ValueError, match="k must be"):
        ex.build_sae("topk", 8, 100, 0, training)


def test_full_rank_representation_is_identity_off_the_subspace():
    class Rep:  # the fields of linrep.LinearRepresentation that the function reads
        basis = torch.eye(4, dtype=torch.float64)[:, :2]
        M_reduced = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)

    M = ex.full_rank_representation(Rep())
    expected = torch.eye(4)
    expected[:2, :2] = Rep.M_reduced.float()
    assert torch.equal(M, expected)
    assert torch.allclose(torch.linalg.matrix_power(M, 4), torch.eye(4))


def test_random_dictionary_sae_is_untrained_tied_and_centred():
    centre = torch.arange(6, dtype=torch.float32)
    sae = ex.random_dictionary_sae(6, 12, 2, seed=3, centre=centre)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(12))
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    assert torch.equal(sae.b_dec, centre)
    assert (sae.encode(torch.randn(7, 6)) != 0).sum(-1).le(2).all()
    again = ex.random_dictionary_sae(6, 12, 2, seed=3, centre=centre)
    assert torch.equal(sae.W_dec, again.W_dec)
    with pytest.raises(ValueError, match="centre"):
        ex.random_dictionary_sae(6, 12, 2, seed=3, centre=torch.zeros(5))


def test_train_sweep_sae_is_deterministic_and_reduces_error():
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(64, 4, 6, generator=gen)
    training = ex.SAETraining(n_steps=30, batch_size=32, max_d_sae=12)
    for sae_type in ("topk", "crosscoder"):
        a, res = ex.train_sweep_sae(sae_type, acts, 2, 0, training)
        b, _ = ex.train_sweep_sae(sae_type, acts, 2, 0, training)
        assert torch.equal(a.W_dec, b.W_dec)
        assert res.n_steps == 30
    with pytest.raises(ValueError, match=r"\(N, \|G\|, d\)"):
        ex.train_sweep_sae("topk", acts[:, 0], 2, 0, training)


def test_subsample_orbits_deterministic_and_bounded():
    idx = ex.subsample_orbits(100, 10, seed=1)
    assert idx.shape == (10,) and torch.equal(idx, ex.subsample_orbits(100, 10, seed=1))
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == 10
    assert torch.equal(ex.subsample_orbits(5, 10, seed=1), torch.arange(5))


def test_probe_records_flatten_results(tmp_path):
    s = ex.sweep_settings("quick")
    job = ex.ProbeJob(ex.SAEJob("gcnn", "bottleneck", "equivariant", 4, 0, "quick", s.training))
    metrics = {
        "f1": {
            "latents": {"shape": {"all": 0.9, "k1": 0.5}, "quadrant": {"all": 0.3}},
            "latents+pose": {"quadrant": {"all": 1.0}},
        },
        "chance_f1": {"shape": 0.1, "quadrant": 0.1},
    }
    rows = ex.probe_records([JobResult(job, metrics, tmp_path), None])
    assert len(rows) == 4
    pose_rows = [r for r in rows if r["features"] == "latents+pose"]
    assert pose_rows == [
        {
            "model": "gcnn",
            "layer": "bottleneck",
            "sae_type": "equivariant",
            "k": 4,
            "seed": 0,
            "features": "latents+pose",
            "factor": "quadrant",
            "probe_k": "all",
            "f1": 1.0,
            "chance_f1": 0.1,
        }
    ]


def test_sae_representation_keeps_irreducible_subspaces_of_an_exact_rep():
    # 6-d activations: two rotation planes (eigenvalues +-i) with different variances and a
    # sign irrep; a 99% variance cut would split the second plane unless gaps are respected
    gen = torch.Generator().manual_seed(0)
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    R = torch.block_diag(rot, rot, torch.tensor([[-1.0]]), torch.tensor([[1.0]]))
    scales = torch.tensor([10.0, 10.0, 1.0, 1.0, 0.5, 0.01])

    def orbits(n):
        h0 = torch.randn(n, 6, generator=gen) * scales
        return torch.stack([h0 @ torch.linalg.matrix_power(R, p).T for p in range(4)], 1).double()

    rep = ex.sae_representation(orbits(300), orbits(100), variance=0.95)
    assert rep.rank in (2, 4, 5, 6) and rep.rank != 3
    M = ex.full_rank_representation(rep)
    assert torch.allclose(torch.linalg.matrix_power(M, 4), torch.eye(6), atol=1e-4)
    eig = torch.linalg.eigvals(rep.M_reduced).abs()
    assert eig.min() > 0.99


def test_pose_conditioned_features_make_a_modular_sum_linearly_decodable():
    from equisae.probing import fit_probe

    gen = torch.Generator().manual_seed(0)

    def make(n):
        q0 = torch.randint(0, 4, (n,), generator=gen)  # invariant: canonical quadrant
        pose = torch.randint(0, 4, (n,), generator=gen)
        z = torch.nn.functional.one_hot(q0, 4).float() + 0.05 * torch.randn(n, 4, generator=gen)
        return z, pose, ((q0 + pose) % 4).numpy()

    splits_cond, splits_side = {}, {}
    for name, n in {"train": 800, "val": 300, "test": 400}.items():
        z, pose, y = make(n)
        feats = ex.pose_conditioned_features(z, pose, 4)
        assert feats.shape == (n, 4 * 4 + 4)
        splits_cond[name] = (feats, y)
        side = torch.cat([z, torch.nn.functional.one_hot(pose, 4).float()], 1).numpy()
        splits_side[name] = (side, y)
    assert fit_probe(splits_cond).f1 > 0.95
    assert fit_probe(splits_side).f1 < 0.6
    with pytest.raises(ValueError, match="one pose per row"):
        ex.pose_conditioned_features(torch.zeros(3, 4), torch.zeros(2), 4)
