"""Tests for batched SAE training (equisae.sae.batched): equal to train_sae one by one."""

from __future__ import annotations

import copy

import pytest
import torch

from equisae.sae import GroupCrosscoder, ReLUSAE, TopKSAE, TrainConfig, minibatches, train_sae
from equisae.sae.batched import can_stack, train_many

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen) @ torch.randn(d, d, generator=gen) + 0.3


def _assert_same(saes, refs, results, ref_results) -> None:
    for sae, ref, res, ref_res in zip(saes, refs, results, ref_results, strict=True):
        for name, tensor in sae.state_dict().items():
            torch.testing.assert_close(tensor, ref.state_dict()[name], rtol=1e-4, atol=2e-5)
        assert torch.equal(res.dead_mask, ref_res.dead_mask)
        assert res.activation_scale == pytest.approx(ref_res.activation_scale)
        assert len(res.history) == len(ref_res.history)
        for row, ref_row in zip(res.history, ref_res.history, strict=True):
            assert row.keys() == ref_row.keys()
            for key, value in row.items():
                assert value == pytest.approx(ref_row[key], rel=1e-4, abs=1e-6), key


def test_topk_batched_equals_one_by_one_with_dead_latents_and_mixed_k():
    data = _data(2048, 16)
    ks = [2, 3, 2]
    saes = [TopKSAE(16, 64, k=k, seed=i, aux_k=4) for i, k in enumerate(ks)]
    refs = [copy.deepcopy(s) for s in saes]
    cfgs = [
        TrainConfig(n_steps=40, lr=5e-3 * (1 + i), warmup_steps=5, seed=i, dead_after=256)
        for i in range(3)
    ]
    results = train_many(saes, data, cfgs, batch_size=64)
    ref_results = [
        train_sae(r, minibatches(data, 64, 40, seed=c.seed), c, progress=False)
        for r, c in zip(refs, cfgs, strict=True)
    ]
    assert all(r.dead_mask.any() for r in ref_results)  # AuxK was exercised
    assert {"loss_auxk"} <= set(ref_results[0].final)
    _assert_same(saes, refs, results, ref_results)
    assert not any(s.training for s in saes)


def test_crosscoder_batched_equals_one_by_one():
    orbits = _data(512 * 4, 8).reshape(512, 4, 8)
    saes = [GroupCrosscoder(8, 32, k=2, group_order=4, seed=s) for s in (0, 1)]
    refs = [copy.deepcopy(s) for s in saes]
    cfg = TrainConfig(n_steps=30, lr=1e-2, warmup_steps=3, dead_after=128)
    streams = [minibatches(orbits, 32, 30, seed=s) for s in (0, 1)]
    results = train_many(saes, streams, cfg)
    ref_results = [
        train_sae(r, minibatches(orbits, 32, 30, seed=s), cfg, progress=False)
        for r, s in zip(refs, (0, 1), strict=True)
    ]
    _assert_same(saes, refs, results, ref_results)


def test_unstackable_classes_fall_back_to_train_sae():
    data = _data(512, 8)
    saes = [ReLUSAE(8, 16, seed=s) for s in (0, 1)]
    assert not can_stack(saes) and can_stack([TopKSAE(8, 16, k=2, seed=s) for s in (0, 1)])
    refs = [copy.deepcopy(s) for s in saes]
    cfg = TrainConfig(n_steps=10, warmup_steps=2)
    train_many(saes, data, cfg, batch_size=32, seeds=[0, 1])
    for sae, ref, seed in zip(saes, refs, (0, 1), strict=True):
        train_sae(ref, minibatches(data, 32, 10, seed=seed), cfg, progress=False)
        assert torch.equal(sae.W_dec, ref.W_dec)


def test_nan_batch_in_one_sae_names_the_step():
    data = _data(1024, 8)
    bad = data.clone()
    batches = list(minibatches(bad, 32, 20, seed=1))
    batches[10] = batches[10].clone()
    batches[10][3, 2] = float("nan")
    saes = [TopKSAE(8, 16, k=2, seed=s) for s in (0, 1)]
    cfg = TrainConfig(n_steps=20, warmup_steps=2)
    with pytest.raises(FloatingPointError, match=r"step 10 \(batch contains 1 NaN.*\(SAE 1\)"):
        train_many(saes, [list(minibatches(data, 32, 20)), batches], cfg)


def test_train_many_input_errors():
    saes = [TopKSAE(8, 16, k=2, seed=s) for s in (0, 1)]
    data = _data(256, 8)
    with pytest.raises(ValueError, match="batch_size"):
        train_many(saes, data, TrainConfig(n_steps=5))
    with pytest.raises(ValueError, match="same number of steps"):
        train_many(saes, data, [TrainConfig(n_steps=5), TrainConfig(n_steps=6)], batch_size=8)
    with pytest.raises(ValueError, match="one data tensor and one seed per SAE"):
        train_many(saes, [data], TrainConfig(n_steps=5), batch_size=8)


ORBIT_CLASSES = (
    "EquivariantSAE",
    "AdaptiveEquivariantSAE",
    "AdaptiveCanonicalSAE",
    "CanonicalEquivariantSAE",
)


def _orbit_run(cls_name: str, group: str, dtype: str, n_steps: int = 40):
    """Three SAEs of one equivariant class (mixed k, seeds, lambdas, lr, clipping) trained
    stacked and one by one on the same orbit batches; returns (saes, refs, results, refs')."""
    import equisae.sae as sae_mod

    cls = getattr(sae_mod, cls_name)
    order = 4 if group == "C4" else 8
    orbits = _data(256 * order, 8).reshape(256, order, 8).to(getattr(torch, dtype))
    # the canonical-mean SAE has no invariance term, hence no lambda_inv field
    has_inv = "lambda_inv" in cls.config_class.field_names()
    saes = [
        cls(8, 32, k=k, group=group, seed=i, aux_k=4, dtype=dtype, **inv)
        for i, k in enumerate((2, 3, 2))
        for inv in [{"lambda_inv": 0.5 * (i + 1)} if has_inv else {}]
    ]
    refs = [copy.deepcopy(s) for s in saes]
    cfgs = [
        TrainConfig(
            n_steps=n_steps,
            lr=5e-3 * (1 + i),
            warmup_steps=5,
            seed=i,
            dead_after=128,
            grad_clip=None if i == 2 else 1.0,
        )
        for i in range(3)
    ]
    assert can_stack(saes)
    results = train_many(saes, orbits, cfgs, batch_size=16)
    ref_results = [
        train_sae(r, minibatches(orbits, 16, n_steps, seed=c.seed), c, progress=False)
        for r, c in zip(refs, cfgs, strict=True)
    ]
    return saes, refs, results, ref_results


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("cls_name", ORBIT_CLASSES)
def test_equivariant_batched_equals_one_by_one(cls_name, group):
    saes, refs, results, ref_results = _orbit_run(cls_name, group, "float32")
    assert all(r.dead_mask.any() for r in ref_results[:1])  # AuxK was exercised
    assert "loss_auxk" in ref_results[0].final
    if saes[0].learns_representation:
        assert "loss_equivariance" in ref_results[0].final
        for sae, ref in zip(saes, refs, strict=True):
            assert sae.m_drift() > 1e-3  # the generators were trained, each its own way
            for name, gen in sae.generators().items():
                torch.testing.assert_close(gen, ref.generators()[name], rtol=1e-4, atol=2e-5)
        for sae, res in zip(saes, results, strict=True):  # the generators logged along training
            drift = [row["m_drift"] for row in res.history]
            assert drift[0] < drift[-1]
            assert drift[-1] == pytest.approx(sae.m_drift(), rel=1e-5)
            assert res.history[-1]["m_group_error"] == pytest.approx(sae.group_error(), rel=1e-5)
    else:
        assert "m_drift" not in ref_results[0].final
    _assert_same(saes, refs, results, ref_results)  # W_enc, W_dec, biases, generators, history
    assert not any(s.training for s in saes)


@pytest.mark.parametrize("cls_name", ["EquivariantSAE", "AdaptiveCanonicalSAE"])
def test_equivariant_batched_is_exact_in_float64(cls_name):
    """In float64 the stacked path reproduces train_sae to 1e-10 (same sums, same order)."""
    saes, refs, results, ref_results = _orbit_run(cls_name, "D4", "float64", n_steps=30)
    for sae, ref in zip(saes, refs, strict=True):
        for name, tensor in sae.state_dict().items():
            torch.testing.assert_close(tensor, ref.state_dict()[name], rtol=0, atol=1e-10)
    for res, ref_res in zip(results, ref_results, strict=True):
        for row, ref_row in zip(res.history, ref_res.history, strict=True):
            assert row == pytest.approx(ref_row, rel=1e-10, abs=1e-12)


def test_equivariant_can_stack_needs_one_group_and_one_loss():
    from equisae.sae import AdaptiveEquivariantSAE, EquivariantSAE

    assert not can_stack([EquivariantSAE(8, 16, 2, group=g) for g in ("C4", "D4")])
    assert not can_stack([EquivariantSAE(8, 16, 2), AdaptiveEquivariantSAE(8, 16, 2)])
    bases = [
        AdaptiveEquivariantSAE(8, 16, 2, group="D4", equivariance_bases=b)
        for b in ("all", "canonical")
    ]
    assert not can_stack(bases)

    class OwnLoss(EquivariantSAE):  # a loss that is not its stacked loss
        def loss(self, batch, dead_mask=None):  # noqa: ANN001, ANN202
            return super().loss(batch, dead_mask)

    assert not can_stack([OwnLoss(8, 16, 2, seed=s) for s in (0, 1)])
    assert can_stack([EquivariantSAE(8, 16, k, seed=s) for s, k in ((0, 2), (1, 3))])


class _ExtraTerm:
    """A representation term written once, on stacked batches (S, B, G, d)."""

    def _representation_terms(self, stack, batch, rho):  # noqa: ANN001, ANN202
        terms = super()._representation_terms(stack, batch, rho)
        extra = (batch - stack["b_dec"][:, None, None]).pow(2).mean((1, 2, 3))
        return {**terms, "extra": (torch.full_like(extra, 0.1), extra)}


def test_a_subclass_loss_term_is_trained_stacked_as_one_by_one():
    from equisae.sae import AdaptiveEquivariantSAE

    class Custom(_ExtraTerm, AdaptiveEquivariantSAE):
        pass

    orbits = _data(128 * 4, 8).reshape(128, 4, 8)
    cfg = TrainConfig(n_steps=12, warmup_steps=2, dead_after=64)
    saes = [Custom(8, 16, k=2, group_order=4, seed=s) for s in (0, 1)]
    assert can_stack(saes)
    refs = [copy.deepcopy(s) for s in saes]
    results = train_many(saes, orbits, cfg, batch_size=16, seeds=[0, 1])
    ref_results = [
        train_sae(ref, minibatches(orbits, 16, 12, seed=seed), cfg, progress=False)
        for ref, seed in zip(refs, (0, 1), strict=True)
    ]
    assert {"loss_extra", "loss_equivariance"} <= set(results[0].final)
    _assert_same(saes, refs, results, ref_results)


def test_unstackable_equivariant_saes_train_one_by_one_through_train_many():
    from equisae.sae import EquivariantSAE

    class Custom(EquivariantSAE):  # its own loss, not its stacked loss: not stackable
        def loss(self, batch, dead_mask=None):  # noqa: ANN001, ANN202
            out = super().loss(batch, dead_mask)
            extra = batch.pow(2).mean()
            out.terms["extra"] = extra
            out.total = out.total + 0.1 * extra
            return out

    orbits = _data(128 * 4, 8).reshape(128, 4, 8)
    cfg = TrainConfig(n_steps=6, warmup_steps=2, dead_after=64)
    saes = [Custom(8, 16, k=2, group_order=4, seed=s) for s in (0, 1)]
    refs = [copy.deepcopy(s) for s in saes]
    results = train_many(saes, orbits, cfg, batch_size=16, seeds=[0, 1])
    for sae, ref, res, seed in zip(saes, refs, results, (0, 1), strict=True):
        ref_res = train_sae(ref, minibatches(orbits, 16, 6, seed=seed), cfg, progress=False)
        for name, tensor in sae.state_dict().items():
            assert torch.equal(tensor, ref.state_dict()[name]), name
        assert res.final == ref_res.final and "loss_extra" in res.final


@pytest.mark.parametrize("cls_name", ["TopKSAE", "AdaptiveCanonicalSAE", "ReLUSAE"])
def test_train_sae_is_train_many_of_one(cls_name):
    """One loop, one optimiser: train_sae on the model's own weights gives exactly what
    train_many gives a stack of that one model (any class; ReLU through its own loss)."""
    import equisae.sae as sae_mod

    cls = getattr(sae_mod, cls_name)
    orbit = cls.takes_orbits
    data = _data(256 * 8, 8).reshape(256, 8, 8) if orbit else _data(1024, 8)
    hyper = {"group": "D4"} if orbit else {}
    if cls_name != "ReLUSAE":
        hyper["k"] = 2
    sae = cls(8, 32, seed=3, **hyper)
    ref = copy.deepcopy(sae)
    cfg = TrainConfig(n_steps=25, warmup_steps=3, dead_after=64, seed=2)
    (result,) = train_many([sae], data, cfg, batch_size=16)
    ref_result = train_sae(ref, minibatches(data, 16, 25, seed=2), cfg, progress=False)
    for name, tensor in sae.state_dict().items():
        assert torch.equal(tensor, ref.state_dict()[name]), name
    assert result.history == ref_result.history and len(result.history) == 3
