"""Tests for equisae.sweeps: stable job hashes, complete grids, the SAE factory, records, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from equisae.linrep import full_rank_representation, sae_representation
from equisae.runner import JobResult
from equisae.sae.factory import build_sae, sae_class, shared_hyper, variants
from equisae.sweeps import (
    SWEEPS,
    InputsJob,
    ProbeJob,
    ReferenceProbeJob,
    SAEJob,
    convergence_jobs,
    frontier_jobs,
    frontier_records,
    lambda_inv_jobs,
    probe_records,
    probing_jobs,
    setting_jobs,
    sweep_settings,
)
from equisae.sweeps.inputs import subsample_orbits
from equisae.sweeps.probes import REFERENCES, pose_conditioned_features, random_dictionary_sae
from equisae.sweeps.report import (
    doubling_rows,
    doubling_table,
    fvu_ratio_by_length,
    learned_generator_summary,
    learned_generator_table,
)
from equisae.sweeps.saes import final_loss_change, loss_curve, train_sweep_saes
from equisae.sweeps.settings import SWEEP_SAE_TYPES, SAETraining


def test_job_configs_hash_stably():
    s = sweep_settings("quick")
    a = SAEJob("gcnn", "bottleneck", "adaptive", 4, (0,), "quick", s.training)
    b = SAEJob("gcnn", "bottleneck", "adaptive", 4, (0,), "quick", sweep_settings("quick").training)
    assert a.hash == b.hash and len(a.hash) == 16
    assert a.hash != SAEJob("gcnn", "bottleneck", "adaptive", 4, (1,), "quick", s.training).hash
    assert a.hash != SAEJob("gcnn", "bottleneck", "topk", 4, (0,), "quick", s.training).hash
    longer = SAETraining(n_steps=s.training.n_steps + 1)
    assert a.hash != SAEJob("gcnn", "bottleneck", "adaptive", 4, (0,), "quick", longer).hash
    rnd = SAEJob("gcnn", "bottleneck", "adaptive", 4, (0,), "quick", s.training, 0, "random")
    assert a.hash != rnd.hash and rnd.inputs.representative == "random"
    p1, p2 = ProbeJob(a, 0, s.probing), ProbeJob(b, 0, s.probing)
    assert p1.hash == p2.hash and p1.dependencies() == (a,)
    assert a.dependencies() == (InputsJob("gcnn", "bottleneck", "quick"),)
    with pytest.raises(ValueError, match="not one of the SAE job's seeds"):
        ProbeJob(a, 5, s.probing)


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_grids_contain_every_sae_type_and_condition(mode):
    s = sweep_settings(mode)
    frontier = frontier_jobs(s)
    assert {j.sae_type for j in frontier} == set(SWEEP_SAE_TYPES)
    assert len({j.hash for j in frontier}) == len(frontier)
    assert all(j.seeds == s.seeds for j in frontier)
    probes = probing_jobs(s)
    assert {j.sae.sae_type for j in probes if isinstance(j, ProbeJob)} == set(SWEEP_SAE_TYPES)
    assert {j.reference for j in probes if isinstance(j, ReferenceProbeJob)} == set(REFERENCES)
    frontier_hashes = {j.hash for j in frontier}
    assert all(j.sae.hash in frontier_hashes for j in probes if isinstance(j, ProbeJob))
    settings_probed = {
        (j.sae.representative, j.sae.sae_type) for j in setting_jobs(s) if isinstance(j, ProbeJob)
    }
    assert {r for r, _ in settings_probed} == {"fixed", "random"}
    lambdas = {j.sae.training.lambda_inv for j in lambda_inv_jobs(s)}
    assert len(lambdas) >= 3
    if mode == "full":
        assert len(s.seeds) >= 3 and s.training.n_steps >= 2000
        assert len({m for m, layer in s.targets if layer == "bottleneck"}) == 5


def test_sweeps_registry_and_bad_input():
    assert {"planted", "frontier", "probing", "setting", "lambda_inv"} <= set(SWEEPS)
    with pytest.raises(ValueError, match="mode"):
        sweep_settings("medium")
    with pytest.raises(KeyError, match="unknown SAE variant"):
        SAEJob("gcnn", "bottleneck", "dense", 4, (0,), "quick")
    with pytest.raises(ValueError, match="layer"):
        SAEJob("gcnn", "middle", "topk", 4, (0,), "quick")
    with pytest.raises(ValueError, match="representative"):
        SAEJob("gcnn", "bottleneck", "topk", 4, (0,), "quick", representative="upright")
    with pytest.raises(ValueError, match="seeds"):
        SAEJob("gcnn", "bottleneck", "topk", 4, (), "quick")
    with pytest.raises(ValueError, match="reference"):
        ReferenceProbeJob("gcnn", "bottleneck", "pca", 4, 0, "quick")
    with pytest.raises(ValueError, match="n_steps"):
        SAETraining(n_steps=0)


def test_factory_builds_every_variant_from_the_registry():
    M = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))[0]
    h = torch.randn(5, 8)
    assert set(SWEEP_SAE_TYPES) <= set(variants())
    for name in variants():
        cls = sae_class(name)
        rep = M if cls.is_equivariant else None
        hyper = shared_hyper(name, lambda_inv=0.5, lambda_eq=2.0)
        sae = build_sae(name, 8, 24, 3, seed=5, M=rep, **hyper)
        assert type(sae) is cls and sae.d_in == 8 and sae.seed == 5
        assert sae.encode(h).shape[0] == 5
        assert all(sae.config()[key] == value for key, value in hyper.items())
        assert set(hyper) == {"lambda_inv", "lambda_eq"} & set(cls.config_class.field_names())
    assert build_sae("wide", 8, 24, 3).d_sae == 24 * 4
    assert build_sae("relu", 8, 24, None).d_sae == 24  # no k field: k may be left out
    with pytest.raises(ValueError, match="needs k"):
        build_sae("topk", 8, 24, None)
    with pytest.raises(ValueError, match="needs the fitted representation"):
        build_sae("equivariant", 8, 24, 3)
    with pytest.raises(ValueError, match="has no group representation"):
        build_sae("topk", 8, 24, 3, M=M)
    with pytest.raises(KeyError, match="unknown SAE variant"):
        build_sae("dense", 8, 24, 3)
    with pytest.raises(ValueError, match=r"\['lamda_inv'\].*lambda_inv"):
        shared_hyper("adaptive", lamda_inv=3.0)  # a field of no variant


def test_sweep_factory_gives_each_seed_its_own_initial_weights(monkeypatch):
    """The weights that reach the trainer (not trained ones) differ between seeds and equal a
    directly built SAE of that seed, for every sweep variant and the planted sweep's models."""
    import equisae.sae.batched as batched
    from equisae.planted import ToyConfig, make_planted
    from equisae.sweeps.planted import build_planted_sae

    seen: list[list[torch.Tensor]] = []

    def spy(saes, data, cfgs, **kwargs):
        seen.append([sae.W_dec.detach().clone() for sae in saes])
        return []

    monkeypatch.setattr(batched, "train_many", spy)
    acts = torch.randn(16, 4, 6, generator=torch.Generator().manual_seed(0))
    M = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1)))[0]
    training = SAETraining(n_steps=1, batch_size=8, max_d_sae=12)
    for variant in SWEEP_SAE_TYPES:
        rep = M if sae_class(variant).is_equivariant else None
        train_sweep_saes(variant, acts, 2, (0, 1), training, M=rep)
        first, second = seen[-1]
        assert not torch.equal(first, second), variant
        direct = build_sae(variant, 6, training.d_sae(6), 2, seed=1, M=rep)
        assert torch.equal(second, direct.W_dec), variant
    toy = make_planted(ToyConfig(d=8, n_features=4), 16, 8, seed=0)
    for model in ("topk", "equivariant", "adaptive"):
        a, b = (build_planted_sae(model, toy, 16, 2, seed) for seed in (0, 1))
        assert not torch.equal(a.W_dec, b.W_dec) and (a.seed, b.seed) == (0, 1), model


def test_full_rank_representation_is_identity_off_the_subspace():
    class Rep:  # the fields of linrep.LinearRepresentation that the function reads
        basis = torch.eye(4, dtype=torch.float64)[:, :2]
        M_reduced = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)

    M = full_rank_representation(Rep())
    expected = torch.eye(4)
    expected[:2, :2] = Rep.M_reduced.float()
    assert torch.equal(M, expected)
    assert torch.allclose(torch.linalg.matrix_power(M, 4), torch.eye(4))


def test_random_dictionary_sae_is_untrained_tied_and_centred():
    centre = torch.arange(6, dtype=torch.float32)
    sae = random_dictionary_sae(6, 12, 2, seed=3, centre=centre)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(12))
    assert torch.equal(sae.W_enc, sae.W_dec.T) and torch.equal(sae.b_dec, centre)
    assert (sae.encode(torch.randn(7, 6)) != 0).sum(-1).le(2).all()
    with pytest.raises(ValueError, match="centre"):
        random_dictionary_sae(6, 12, 2, seed=3, centre=torch.zeros(5))


def test_train_sweep_saes_batched_equals_one_by_one_and_is_deterministic():
    # the trained weights; that seeds reach the initial weights is tested above
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(64, 4, 6, generator=gen)
    training = SAETraining(n_steps=30, batch_size=32, max_d_sae=12)
    for sae_type in ("topk", "crosscoder"):
        both, results = train_sweep_saes(sae_type, acts, 2, (0, 1), training)
        alone, _ = train_sweep_saes(sae_type, acts, 2, (1,), training)
        again, _ = train_sweep_saes(sae_type, acts, 2, (0, 1), training)
        assert torch.allclose(both[1].W_dec, alone[0].W_dec, atol=1e-5)
        assert torch.equal(both[0].W_dec, again[0].W_dec)
        assert not torch.equal(both[0].W_dec, both[1].W_dec)
        assert all(r.n_steps == 30 for r in results)
    with pytest.raises(ValueError, match=r"\(N, \|G\|, d\)"):
        train_sweep_saes("topk", acts[:, 0], 2, (0,), training)


def test_loss_curve_and_final_loss_change():
    history = [
        {"step": s, "loss": 1.0 + np.exp(-s / 50), "fvu": 0.5, "l0": 4} for s in range(0, 1000, 10)
    ]
    curve = loss_curve(history, 10)
    assert len(curve["step"]) == 10 and curve["step"][0] == 0 and curve["step"][-1] == 990
    assert abs(final_loss_change(history)) < 1e-3  # converged: flat tail
    rising = [{"step": s, "loss": 1.0 + s / 1000} for s in range(0, 1000, 10)]
    # smoothed loss ~1.72 at 75% (median of the 5% before it) and ~1.96 at the end
    assert final_loss_change(rising) == pytest.approx((1.96 - 1.72) / 1.96, abs=0.01)
    falling = [{"step": s, "loss": 1.0 - s / 1000} for s in range(0, 1000, 10)]
    assert -1.0 < final_loss_change(falling) < -0.8
    assert final_loss_change(history[:2]) is None  # too few points: None, not a sentinel


def test_final_loss_change_is_bounded_where_a_slope_explodes():
    """A loss that blows up (or collapses) over the tail gives a change in [-1, 1], and one
    spike in the smoothing window does not move it."""
    steps = range(0, 300, 10)
    exploding = [{"step": s, "loss": float(np.exp(s / 5))} for s in steps]
    collapsing = [{"step": s, "loss": float(np.exp(-s / 5))} for s in steps]
    assert 0.99 < final_loss_change(exploding) <= 1.0
    assert -1.0 <= final_loss_change(collapsing) < -0.99
    flat = [{"step": s, "loss": 1.0} for s in range(0, 1000, 10)]
    flat[-2]["loss"] = 1e6  # one spike among the last window's points
    assert final_loss_change(flat) == 0.0
    with pytest.raises(ValueError, match="fraction"):
        final_loss_change(flat, fraction=0.1, window=0.2)


def test_loss_curve_keeps_the_learned_representation_along_training():
    history = [{"step": s, "loss": 1.0, "fvu": 0.5, "l0": 4, "m_drift": s / 100} for s in range(50)]
    history[-1]["m_group_error"] = 0.1
    curve = loss_curve(history, 5)
    assert curve["m_drift"][0] == 0.0 and curve["m_drift"][-1] == pytest.approx(0.49)
    assert np.isnan(curve["m_group_error"][0]) and curve["m_group_error"][-1] == 0.1
    assert "m_drift" not in loss_curve([{"step": 1, "loss": 1.0}], 5)


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_convergence_sweep_trains_every_type_longer_on_the_key_targets(mode):
    s = sweep_settings(mode)
    jobs = convergence_jobs(s)
    assert jobs and SWEEPS["convergence"] is convergence_jobs
    assert {(j.model_name, j.layer) for j in jobs} == set(s.convergence_targets)
    for model, layer in s.convergence_targets:
        types = {j.sae_type for j in jobs if (j.model_name, j.layer) == (model, layer)}
        assert types == set(s.types_for(model, layer))
    assert all(j.training.n_steps == 2 * s.training.n_steps for j in jobs)
    assert all(j.seeds == s.convergence_seeds and j.k == s.probe_k for j in jobs)
    assert not {j.hash for j in jobs} & {j.hash for j in frontier_jobs(s)}
    with pytest.raises(ValueError, match="convergence_factor"):
        dataclasses.replace(s, convergence_factor=1)
    with pytest.raises(ValueError, match="convergence_seeds"):
        dataclasses.replace(s, convergence_seeds=(7,))


def test_doubling_rows_pair_seeds_and_report_the_change():
    def rec(sae_type, n_steps, seed, fvu, model="m"):
        return {
            "model": model,
            "layer": "bottleneck",
            "sae_type": sae_type,
            "k": 8,
            "lambda_inv": 1.0,
            "representative": "fixed",
            "n_steps": n_steps,
            "seed": seed,
            "fvu": fvu,
            "final_loss_change": -0.01,
        }

    short = [rec("topk", 100, 0, 0.10), rec("topk", 100, 1, 0.50), rec("adaptive", 100, 0, 0.2)]
    short += [rec("topk", 100, 0, 0.9, model="other"), rec("topk", 30, 0, 0.9)]
    long = [rec("topk", 200, 0, 0.09), rec("adaptive", 200, 0, 0.2), rec("wide", 200, 0, 0.1)]
    rows = {r["sae_type"]: r for r in doubling_rows(short, long)}
    assert set(rows) == {"topk", "adaptive"}  # wide has no shorter run to compare with
    assert rows["topk"]["fvu"] == 0.10 and rows["topk"]["steps"] == 100  # seed 0, not seed 1
    assert rows["topk"]["relative_change"] == pytest.approx(-0.1)
    assert rows["adaptive"]["relative_change"] == pytest.approx(0.0)
    table = doubling_table(list(rows.values()))
    assert "-10.0%" in table and "FVU at ×2 steps" in table
    (ratio,) = fvu_ratio_by_length(list(rows.values()))
    assert ratio["ratio"] == pytest.approx(2.0) and ratio["ratio_long"] == pytest.approx(0.2 / 0.09)


def test_subsample_orbits_deterministic_and_bounded():
    idx = subsample_orbits(100, 10, seed=1)
    assert idx.shape == (10,) and torch.equal(idx, subsample_orbits(100, 10, seed=1))
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == 10
    assert torch.equal(subsample_orbits(5, 10, seed=1), torch.arange(5))


def test_records_flatten_results_per_seed(tmp_path):
    s = sweep_settings("quick")
    sae_job = SAEJob("gcnn", "bottleneck", "equivariant", 4, (0, 1), "quick", s.training)
    per_seed = {
        str(i): {"fvu": 0.1 * (i + 1), "l0": 4.0, "loss_curve": {"step": [0]}} for i in (0, 1)
    }
    rows = frontier_records([JobResult(sae_job, {"per_seed": per_seed}, tmp_path), None])
    assert [r["seed"] for r in rows] == [0, 1] and rows[1]["fvu"] == pytest.approx(0.2)
    assert rows[0]["representative"] == "fixed" and "loss_curve" not in rows[0]
    job = ProbeJob(sae_job, 1, s.probing)
    metrics = {
        "f1": {
            "latents": {"shape": {"all": 0.9, "k1": 0.5}, "quadrant": {"all": 0.3}},
            "latents+pose": {"quadrant": {"all": 1.0}},
        },
        "chance_f1": {"shape": 0.1, "quadrant": 0.25},
    }
    rows = probe_records([JobResult(job, metrics, tmp_path), None])
    assert len(rows) == 4
    pose_rows = [r for r in rows if r["features"] == "latents+pose"]
    assert len(pose_rows) == 1 and pose_rows[0]["seed"] == 1
    assert pose_rows[0]["sae_type"] == "equivariant" and pose_rows[0]["chance_f1"] == 0.25


def test_sae_representation_keeps_irreducible_subspaces_of_an_exact_rep():
    gen = torch.Generator().manual_seed(0)
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    R = torch.block_diag(rot, rot, torch.tensor([[-1.0]]), torch.tensor([[1.0]]))
    scales = torch.tensor([10.0, 10.0, 1.0, 1.0, 0.5, 0.01])

    def orbits(n):
        h0 = torch.randn(n, 6, generator=gen) * scales
        return torch.stack([h0 @ torch.linalg.matrix_power(R, p).T for p in range(4)], 1).double()

    rep, M = sae_representation(orbits(300), orbits(100), variance=0.95)
    assert rep.rank in (2, 4, 5, 6) and rep.rank != 3
    assert torch.allclose(torch.linalg.matrix_power(M, 4), torch.eye(6), atol=1e-4)
    assert torch.linalg.eigvals(rep.M_reduced).abs().min() > 0.99


def test_pose_conditioned_features_make_a_modular_sum_linearly_decodable():
    from equisae.probing import fit_probe

    gen = torch.Generator().manual_seed(0)

    def make(n):
        q0 = torch.randint(0, 4, (n,), generator=gen)
        pose = torch.randint(0, 4, (n,), generator=gen)
        z = torch.nn.functional.one_hot(q0, 4).float() + 0.05 * torch.randn(n, 4, generator=gen)
        return z, pose, ((q0 + pose) % 4).numpy()

    splits_cond, splits_side = {}, {}
    for name, n in {"train": 800, "val": 300, "test": 400}.items():
        z, pose, y = make(n)
        feats = pose_conditioned_features(z, pose, 4)
        assert feats.shape == (n, 4 * 4 + 4)
        splits_cond[name] = (feats, y)
        side = torch.cat([z, torch.nn.functional.one_hot(pose, 4).float()], 1).numpy()
        splits_side[name] = (side, y)
    assert fit_probe(splits_cond).f1 > 0.95
    assert fit_probe(splits_side).f1 < 0.6
    with pytest.raises(ValueError, match="one pose per row"):
        pose_conditioned_features(torch.zeros(3, 4), torch.zeros(2), 4)


# ---------------------------------------------------------------------- the planted sweep


def test_planted_jobs_cover_the_grid_with_distinct_hashes() -> None:
    from equisae.sweeps.planted import MODEL_TYPES, planted_jobs, planted_settings

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
    from equisae.sweeps.planted import (
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
        models=("topk", "equivariant_canonical", "adaptive"),
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
    canonical = [r for r in records if r["model"] == "equivariant_canonical"]
    assert all(r["latent_equivariance_error"] < 0.2 for r in canonical)  # invariant by design
    summary = summarize(records)
    assert set(summary) == {"topk", "equivariant_canonical", "adaptive"}
    assert set(summary["topk"]) == set(METRICS)
    x, mean, std = series(summary, "topk", "recovery")
    assert x.tolist() == [4, 8] and mean.shape == std.shape == (2,)
    again = run_planted(
        "quick", scheduler="serial", progress=False, settings=settings, artifacts=str(tmp_path)
    )
    assert again.n_cached == 12 and planted_records(again.results) == records


# ---------------------------------------------------------------------- groups: C4 and D4


def test_group_field_keeps_c4_hashes_and_separates_d4():
    s = sweep_settings("quick")
    c4 = SAEJob("gcnn", "bottleneck", "adaptive", 4, (0,), "quick", s.training)
    d4 = SAEJob("gcnn", "bottleneck", "adaptive", 4, (0,), "quick", s.training, group="D4")
    # C4 is the default and is left out of the hashed config, so old caches stay valid.
    assert "group" not in c4.config() and "group" not in c4.inputs.config()
    assert c4.hash == SAEJob("gcnn", "bottleneck", "adaptive", 4, (0,), "quick", s.training).hash
    assert d4.config()["group"] == "D4" and d4.inputs.group == "D4"
    assert d4.hash != c4.hash and d4.inputs.hash != c4.inputs.hash
    ref = ReferenceProbeJob("gcnn", "bottleneck", "raw", 4, 0, "quick", group="D4")
    assert ref.inputs == d4.inputs and "group" not in dataclasses.replace(ref, group="C4").config()
    with pytest.raises(ValueError, match="group"):
        InputsJob("gcnn", "bottleneck", "quick", group="d4")
    with pytest.raises(ValueError, match="group"):
        SAEJob("gcnn", "bottleneck", "topk", 4, (0,), "quick", s.training, group="Q8")


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_group_sweep_trains_three_types_under_both_groups(mode):
    from equisae.sweeps import group_jobs

    s = sweep_settings(mode)
    jobs = SWEEPS["group"](s)
    assert jobs == group_jobs(s) and all(isinstance(j, ProbeJob) for j in jobs)
    saes = {j.sae for j in jobs}
    assert {(j.group, j.sae_type, j.k) for j in saes} == {
        (g, t, s.probe_k) for g in ("C4", "D4") for t in ("topk", "equivariant", "adaptive")
    } and len(saes) == 6 * len(s.group_targets)
    assert all(j.seeds == s.seeds for j in saes) and len(jobs) == len(saes) * len(s.seeds)


@pytest.fixture
def tiny_d4_data(tmp_path, monkeypatch):
    """Standard splits of 120/40/40 images and an untrained G-CNN (no base-model training)."""
    import equisae.data
    import equisae.models

    monkeypatch.setenv("EQUISAE_ARTIFACTS", str(tmp_path))
    sizes = {"train": 120, "val": 40, "test": 40}
    monkeypatch.setattr(equisae.data, "dataset_sizes", lambda mode: dict(sizes))

    def fake_train_or_load(name, mode="quick", seed=0, progress=True, **kwargs):
        torch.manual_seed(seed)
        return equisae.models.build_model(name), {"folder": None}

    monkeypatch.setattr(equisae.models, "train_or_load", fake_train_or_load)
    return tmp_path


def test_d4_inputs_saes_and_probes_run_on_tiny_data(tiny_d4_data):
    from equisae.groups import get_group, representation_matrices
    from equisae.runner import run_sweep
    from equisae.sweeps.inputs import load_generators

    training = SAETraining(n_steps=5, batch_size=64, expansion=1, max_d_sae=32)
    probing = dataclasses.replace(
        sweep_settings("quick").probing, max_orbits=(60, 20, 20), probe_ks=(None, 1)
    )
    sae = SAEJob("gcnn", "bottleneck", "adaptive", 4, (0,), "quick", training, group="D4")
    jobs = [sae.inputs, sae, ProbeJob(sae, 0, probing)]
    result = run_sweep(jobs, scheduler="serial", progress=False)
    result.raise_for_failures()
    inputs = next(r for r in result.results if isinstance(r.job, InputsJob))
    gens = load_generators(inputs)
    assert set(gens) == {"r", "s"} and gens["s"].shape == (64, 64)
    assert set(inputs.metrics["relation_errors"]) == {"r^4", "s^2", "(sr)^2"}
    assert len(inputs.metrics["r2_single"]) == 8  # one R^2 per element of D4
    # The G-CNN is exactly C4-equivariant, not D4: the fitted rho must still be invertible.
    rho = representation_matrices(get_group("D4"), {k: v.double() for k, v in gens.items()})
    assert float(torch.linalg.svdvals(rho).min()) > 1e-3
    trained = next(r for r in result.results if isinstance(r.job, SAEJob))
    per_seed = trained.metrics["per_seed"]["0"]
    assert {"m_distance_to_fit", "s_distance_to_fit", "m_group_error"} <= set(per_seed)
    probes = next(r for r in result.results if isinstance(r.job, ProbeJob))
    assert len(probes.metrics["f1"]["latents"]["pose"]) == 2  # dense and 1-sparse
    assert probes.metrics["chance_f1"]["pose"] == pytest.approx(1 / 8, abs=0.05)


def test_learned_generator_table_averages_seeds_per_target_and_type():
    metrics = ("distance", "distance_weighted", "group_error", "group_error_weighted")
    metrics += ("prediction_fvu", "prediction_fvu_fit", "prediction_fvu_identity")
    rows = [
        {"model": "gcnn", "layer": "bottleneck", "sae_type": "adaptive", "seed": seed}
        | {m: 0.1 * (seed + 1) for m in metrics}
        for seed in (0, 1, 2)
    ]
    table = learned_generator_table(rows)
    assert table.count("\n") == 2  # header, rule, one row
    assert "| gcnn / bottleneck | adaptive equivariant | 0.200 ± 0.100 |" in table
    assert "weighted group error" in table and "fitted M" in table


def test_learned_generator_summary_counts_targets_where_the_fit_predicts_better():
    def row(model, seed, fvu, fit):
        return {
            "model": model,
            "layer": "bottleneck",
            "sae_type": "adaptive",
            "seed": seed,
            "prediction_fvu": fvu,
            "prediction_fvu_fit": fit,
            "distance_weighted": 0.3 + 0.1 * seed,
            "group_error_weighted": 0.5 + seed,
        }

    rows = [row("a", 0, 0.2, 0.1), row("a", 1, 0.0, 0.1), row("b", 0, 0.3, 0.1)]
    summary = learned_generator_summary(rows)
    assert summary["n_targets"] == 2 and summary["n_worse"] == 1  # "a": mean 0.1, not worse
    assert summary["distance_weighted"] == pytest.approx((0.3, 0.4))
    assert summary["group_error_weighted"] == (0.5, 1.5)
    assert learned_generator_summary(rows, sae_type="adaptive_canonical") is None
