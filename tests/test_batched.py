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


def test_equivariant_saes_train_one_by_one_through_train_many():
    from equisae.sae import AdaptiveEquivariantSAE, EquivariantSAE

    orbits = _data(128 * 4, 8).reshape(128, 4, 8)
    cfg = TrainConfig(n_steps=6, warmup_steps=2, dead_after=64)
    for cls in (EquivariantSAE, AdaptiveEquivariantSAE):
        saes = [cls(8, 16, k=2, group_order=4, seed=s) for s in (0, 1)]
        assert not can_stack(saes)
        refs = [copy.deepcopy(s) for s in saes]
        results = train_many(saes, orbits, cfg, batch_size=16, seeds=[0, 1])
        for sae, ref, res, seed in zip(saes, refs, results, (0, 1), strict=True):
            ref_res = train_sae(ref, minibatches(orbits, 16, 6, seed=seed), cfg, progress=False)
            for name, tensor in sae.state_dict().items():
                assert torch.equal(tensor, ref.state_dict()[name]), name
            assert res.final == ref_res.final
