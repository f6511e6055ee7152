"""Tests for the SAE trainer (equisae.sae.train): convergence, recovery, AuxK, determinism."""

from __future__ import annotations

import pytest
import torch

from equisae.metrics import feature_density, fvu, mean_max_cosine
from equisae.sae import (
    BatchTopKSAE,
    ReLUSAE,
    TopKSAE,
    TrainConfig,
    iterate_minibatches,
    minibatches,
    train_sae,
)
from equisae.sae.train import geometric_median

#: one torch thread per test (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def planted(d: int, n_features: int, k: int, n: int, seed: int, noise: float = 0.01):
    """Unit features F (n_features, d) and data = k-sparse positive codes @ F + noise + offset."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n_features, d, generator=gen)
    features /= features.norm(dim=1, keepdim=True)
    support = torch.rand(n, n_features, generator=gen).argsort(1)[:, :k]
    codes = torch.zeros(n, n_features).scatter(1, support, torch.rand(n, k, generator=gen) + 0.5)
    data = codes @ features + noise * torch.randn(n, d, generator=gen) + 0.5
    return features, data


def test_iterate_minibatches_epochs_and_determinism():
    x = torch.arange(10.0)[:, None]
    batches = list(iterate_minibatches(x, 4, 5, seed=0))
    assert len(batches) == 5 and all(b.shape == (4, 1) for b in batches)
    first_epoch = torch.cat(batches[:2]).flatten()
    assert len(set(first_epoch.tolist())) == 8  # no repeats within an epoch
    again = list(iterate_minibatches(x, 4, 5, seed=0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    other = list(iterate_minibatches(x, 4, 5, seed=1))
    assert not all(torch.equal(a, b) for a, b in zip(batches, other, strict=True))
    assert len(minibatches(x, 4, 7)) == 7
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_minibatches(x, 0, 5))
    with pytest.raises(ValueError, match="n_steps"):
        next(iterate_minibatches(x, 2, 0))


def test_geometric_median_is_robust_to_outliers():
    gen = torch.Generator().manual_seed(0)
    pts = torch.randn(200, 3, generator=gen) * 0.1 + torch.tensor([1.0, 2.0, 3.0])
    pts[:20] += 100.0
    med = geometric_median(pts, n_iter=100)
    assert (med - torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).norm() < 0.1
    assert (pts.double().mean(0) - med).norm() > 5.0


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0.0)
    with pytest.raises(ValueError, match="b_dec_init"):
        TrainConfig(b_dec_init="median")
    with pytest.raises(ValueError, match="n_steps"):
        TrainConfig(n_steps=0)


def test_trainer_input_errors():
    sae = TopKSAE(8, 16, k=2)
    with pytest.raises(ValueError, match="d_in=8"):
        train_sae(sae, [torch.randn(4, 7)], TrainConfig(n_steps=1), progress=False)
    with pytest.raises(ValueError, match="no len"):
        train_sae(sae, iter([torch.randn(4, 8)]), TrainConfig(), progress=False)
    with pytest.raises(ValueError, match="empty"):
        train_sae(sae, [], TrainConfig(n_steps=3), progress=False)


@pytest.mark.parametrize("make", [lambda: TopKSAE(16, 32, k=3), lambda: ReLUSAE(16, 32)])
def test_loss_falls_on_fixed_batch_and_decoder_stays_unit(make):
    _, data = planted(16, 32, 3, 256, seed=0)
    sae = make()
    cfg = TrainConfig(n_steps=60, lr=5e-3, warmup_steps=5, log_every=5, normalize_activations=False)
    result = train_sae(sae, [data] * 60, cfg, progress=False)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(32))
    assert result.n_steps == 60 and len(result.history) == 12
    assert {"mse", "fvu", "l0", "dead_fraction", "loss_mse", "lr"} <= set(result.final)


def test_planted_dictionary_is_recovered():
    features, data = planted(16, 32, 2, 8192, seed=0)
    sae = TopKSAE(16, 32, k=2, seed=0)
    cfg = TrainConfig(lr=1e-2, warmup_steps=20, dead_after=2048)
    result = train_sae(sae, minibatches(data, 256, 400, seed=0), cfg, progress=False)
    assert mean_max_cosine(sae.W_dec, features) > 0.95
    assert result.final["fvu"] < 0.15 and result.final["l0"] == 2.0
    # normalisation was folded back: the model works on raw activations
    assert result.activation_scale != 1.0
    assert fvu(data, sae(data).recon) < 0.15


def test_batchtopk_trains_to_average_k():
    features, data = planted(16, 32, 2, 4096, seed=1)
    sae = BatchTopKSAE(16, 32, k=2, seed=0)
    cfg = TrainConfig(lr=1e-2, warmup_steps=20)
    result = train_sae(sae, minibatches(data, 256, 300, seed=0), cfg, progress=False)
    assert result.final["l0"] == pytest.approx(2.0)
    assert not sae.training and sae.threshold > 0
    eval_l0 = float((sae.encode(data) != 0).sum(-1).float().mean())
    assert 1.0 < eval_l0 < 3.5  # the learned threshold gives about k latents per example
    assert mean_max_cosine(sae.W_dec, features) > 0.9


def _sae_with_dead_half(features: torch.Tensor, aux_coef: float) -> TopKSAE:
    """Latents 16..31 copy the encoders of 0..15 at a tenth of the scale: they never win top-1."""
    sae = TopKSAE(32, 32, k=1, seed=0, aux_coef=aux_coef)
    with torch.no_grad():
        sae.W_enc[:, :16] = 2 * features[:16].T
        sae.W_dec[:16] = features[:16]
        sae.W_enc[:, 16:] = 0.1 * features[:16].T
    return sae


def test_auxk_revives_dead_latents():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(32, 32, generator=gen)
    features /= features.norm(dim=1, keepdim=True)
    which = torch.randint(0, 32, (4096, 1), generator=gen)
    data = torch.zeros(4096, 32).scatter(1, which, torch.rand(4096, 1, generator=gen) + 0.5)
    data = data @ features
    revived = {}
    for use_auxk in (False, True):
        sae = _sae_with_dead_half(features, aux_coef=1.0)
        assert (feature_density(sae.encode(data))[16:] == 0).all()  # dead by construction
        cfg = TrainConfig(
            lr=3e-3,
            warmup_steps=10,
            dead_after=1024,
            use_auxk=use_auxk,
            b_dec_init="none",
            normalize_activations=False,
        )
        train_sae(sae, minibatches(data, 256, 300, seed=0), cfg, progress=False)
        revived[use_auxk] = int((feature_density(sae.encode(data))[16:] > 0).sum())
    assert revived[True] >= revived[False] + 4


def test_training_is_deterministic_under_seed():
    _, data = planted(16, 32, 2, 2048, seed=0)

    def run(seed: int) -> TopKSAE:
        sae = TopKSAE(16, 32, k=2, seed=seed)
        cfg = TrainConfig(lr=1e-2, warmup_steps=5, seed=seed, dead_after=256)
        train_sae(sae, minibatches(data, 128, 40, seed=seed), cfg, progress=False)
        return sae

    a, b, c = run(0), run(0), run(1)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert not torch.equal(a.W_dec, c.W_dec)


def test_trainer_accepts_leading_dimensions():
    _, data = planted(16, 32, 2, 1024, seed=0)
    orbits = data.reshape(256, 4, 16)
    sae = TopKSAE(16, 32, k=2)
    result = train_sae(sae, minibatches(orbits, 32, 10), TrainConfig(log_every=5), progress=False)
    assert result.final["l0"] == 2.0 and result.n_steps == 10


def test_nan_batch_at_step_10_is_refused_before_the_weights_change():
    _, data = planted(16, 32, 2, 1024, seed=0)
    batches = list(minibatches(data, 64, 20, seed=0))
    batches[10] = batches[10].clone()
    batches[10][5, 3] = float("nan")
    sae = TopKSAE(16, 32, k=2)
    seen = []

    class Spy(list):
        def __iter__(self):
            for i, b in enumerate(list.__iter__(self)):
                if i == 10:
                    seen.append({k: v.clone() for k, v in sae.state_dict().items()})
                yield b

    with pytest.raises(FloatingPointError, match=r"non-finite batch at step 10 \(batch contains"):
        train_sae(sae, Spy(batches), TrainConfig(n_steps=20, warmup_steps=2), progress=False)
    for name, tensor in sae.state_dict().items():
        assert torch.equal(tensor, seen[0][name]), name  # step 10 never updated the weights
    # a NaN among the b_dec initialisation batches (no normalisation to catch it) names its step
    batches[10] = batches[2]
    batches[2] = torch.full_like(batches[2], float("inf"))
    cfg = TrainConfig(n_steps=20, normalize_activations=False)
    with pytest.raises(FloatingPointError, match=r"step 2 \(batch contains .* inf"):
        train_sae(TopKSAE(16, 32, k=2), batches, cfg, progress=False)


def test_non_finite_loss_names_the_step_and_the_weights():
    _, data = planted(16, 32, 2, 256, seed=0)
    sae = TopKSAE(16, 32, k=2)
    cfg = TrainConfig(n_steps=5, warmup_steps=1, b_dec_init="none")
    with torch.no_grad():
        sae.W_enc[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 0 \(the weights"):
        train_sae(sae, minibatches(data, 64, 5), cfg, progress=False)


def test_metric_rows_count_fired_latents_from_indices_as_from_dense_latents():
    from equisae.sae.base import LossOutput
    from equisae.sae.train import _step_rows, as_stacked

    gen = torch.Generator().manual_seed(0)
    sae = TopKSAE(8, 40, k=3, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(-1.5)  # some selected latents are zero
    out = sae.loss(torch.randn(30, 8, generator=gen))
    dense = out.latents != 0
    assert 0 < int(dense.sum()) < 30 * 3
    plain = LossOutput(out.total, out.terms, out.latents, out.recon, out.target)
    for loss in (out, plain):  # selected (indices, values), or every latent
        since = torch.full((1, 40), 7, dtype=torch.long)
        scale = torch.ones(1, dtype=torch.float64)
        row = _step_rows(as_stacked(loss, 40), torch.tensor([False]), scale, since, 8)[0]
        assert torch.equal(since[0] == 0, dense.any(0))
        assert bool((since[0][~dense.any(0)] == 37).all())
        assert row["l0"] == pytest.approx(float(dense.sum(-1).double().mean()))
        assert row["mse"] == pytest.approx(float((out.recon - out.target).pow(2).mean()))


def test_stacked_auxk_with_different_dead_counts_matches_each_dense_loss():
    """AuxK of a stack whose SAEs have 0, few and many dead latents and their own aux_k and k
    (dead columns padded to the widest, positions past each k_aux masked): each SAE's loss,
    terms and gradients equal its dense loss."""
    from equisae.sae.stack import Stack

    gen = torch.Generator().manual_seed(3)
    specs = [(4, 5, 0), (3, 2, 6), (4, 7, 30)]  # (k, aux_k, dead latents)
    sparse = [TopKSAE(16, 48, k=k, seed=i, aux_k=a) for i, (k, a, _) in enumerate(specs)]
    dense = [
        TopKSAE(16, 48, k=k, seed=i, aux_k=a, sparse_training=False)
        for i, (k, a, _) in enumerate(specs)
    ]
    for s, d in zip(sparse, dense, strict=True):
        with torch.no_grad():
            s.b_enc.normal_(generator=gen)
        d.load_state_dict(s.state_dict())
    h = 2 * torch.randn(3, 64, 16, generator=gen) + 0.3
    dead = torch.stack([torch.arange(48) >= 48 - n for _, _, n in specs])
    stack = Stack.of(sparse)
    out = stack.loss(h, dead)
    out.total.sum().backward()
    for i, d in enumerate(dense):
        ref = d.loss(h[i], dead[i])
        assert ("auxk" in ref.terms) == bool(specs[i][2])
        torch.testing.assert_close(out.terms["auxk"][i], ref.terms.get("auxk", torch.tensor(0.0)))
        torch.testing.assert_close(out.total[i], ref.total)
        ref.total.backward()
        for name, p in d.named_parameters():
            torch.testing.assert_close(stack[name].grad[i], p.grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(("shape", "k"), [((50, 256), 8), ((3, 40, 1024), 32), ((7, 30), 4)])
def test_fast_topk_selects_the_topk_set(shape, k):
    from equisae.sae.stack import fast_topk

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    vals, idx = fast_topk(x, k)
    ref_vals, ref_idx = x.topk(k, dim=-1)
    assert torch.equal(idx.sort(-1).values, ref_idx.sort(-1).values)
    assert torch.equal(vals.sort(-1).values, ref_vals.sort(-1).values)
    assert torch.equal(x.gather(-1, idx), vals)


def test_step_count_mismatch_is_an_error():
    """TrainConfig(n_steps=50) with 20 minibatches raises (no silently shorter schedule), and an
    iterator that runs out before n_steps raises too; the default lr is the study's 4e-3."""
    data = torch.randn(256, 8)
    sae = TopKSAE(8, 16, k=2)
    with pytest.raises(ValueError, match="n_steps=50 but batches holds 20"):
        train_sae(sae, minibatches(data, 32, 20), TrainConfig(n_steps=50), progress=False)
    short = iter(list(minibatches(data, 32, 5)))
    with pytest.raises(ValueError, match="ran out after 5 of cfg.n_steps=8"):
        train_sae(sae, short, TrainConfig(n_steps=8, warmup_steps=1), progress=False)
    assert TrainConfig().lr == 4e-3
    result = train_sae(sae, minibatches(data, 32, 12), TrainConfig(warmup_steps=1), progress=False)
    assert result.n_steps == 12 and result.history[-1]["lr"] < 4e-3


def test_train_and_evaluate_take_a_device():
    """``device=`` moves the SAE and the batches (CPU here; the same path serves CUDA)."""
    from equisae.sae.evaluate import evaluate_on_orbits

    data = torch.randn(64, 4, 8)
    sae = TopKSAE(8, 16, k=2)
    cfg = TrainConfig(warmup_steps=1)
    train_sae(sae, minibatches(data.reshape(-1, 8), 32, 6), cfg, progress=False, device="cpu")
    assert sae.W_dec.device.type == "cpu"
    metrics = evaluate_on_orbits(sae, data, device="cpu")
    assert 0 <= metrics["fvu"] < 2 and metrics["l0"] <= 2
