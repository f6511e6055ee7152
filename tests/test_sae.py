"""Unit tests for the SAE architectures (equisae.sae.base/topk/relu/batchtopk) and save/load."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from equisae.io import write_manifest
from equisae.sae import (
    ARCHITECTURES,
    BatchTopKSAE,
    ReLUSAE,
    SparseAutoencoder,
    TopKSAE,
    get_architecture,
    load_sae,
    register_architecture,
    save_sae,
)
from equisae.sae.io import CFG_FILENAME, WEIGHTS_FILENAME

#: one torch thread per test (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _perturbed(sae: SparseAutoencoder, seed: int = 1) -> SparseAutoencoder:
    """Give every parameter non-trivial values so round trips test real content."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    sae.normalize_decoder()
    return sae


ALL_MODELS = [
    lambda: TopKSAE(12, 48, k=5, seed=3),
    lambda: BatchTopKSAE(12, 48, k=5, seed=3),
    lambda: ReLUSAE(12, 48, l1_coeff=0.05, seed=3),
]


@pytest.mark.parametrize("make", ALL_MODELS)
def test_init_unit_decoder_and_tied_encoder(make):
    sae = make()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(sae.d_sae))
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    assert sae.W_enc.shape == (sae.d_in, sae.d_sae) and sae.W_dec.shape == (sae.d_sae, sae.d_in)
    assert sae.n_params == 2 * 12 * 48 + 48 + 12


@pytest.mark.parametrize("make", ALL_MODELS)
def test_leading_dimensions_are_flattened_and_restored(make):
    sae = make().eval()
    h = _randn(3, 4, 12)
    out = sae(h)
    assert out.latents.shape == (3, 4, 48) and out.recon.shape == (3, 4, 12)
    flat = sae(h.reshape(12, 12))
    torch.testing.assert_close(out.latents.reshape(12, 48), flat.latents)
    torch.testing.assert_close(sae.decode(sae.encode(h)), out.recon)


@pytest.mark.parametrize("make", ALL_MODELS)
def test_bad_shapes_raise(make):
    sae = make()
    with pytest.raises(ValueError, match="d_in=12"):
        sae.encode(_randn(5, 11))
    with pytest.raises(ValueError, match="d_sae=48"):
        sae.decode(_randn(5, 47))
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        sae.encode([[0.0] * 12])
    with pytest.raises(ValueError, match="dead_mask"):
        sae.loss(_randn(5, 12), dead_mask=torch.ones(47, dtype=torch.bool))


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="k must be at most d_sae=8"):
        TopKSAE(4, 8, k=9)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        TopKSAE(4, 8, k=0)
    with pytest.raises(ValueError, match="d_in"):
        TopKSAE(0, 8, k=1)
    with pytest.raises(ValueError, match="dtype"):
        TopKSAE(4, 8, k=1, dtype="int8")
    with pytest.raises(ValueError, match="l1_coeff"):
        ReLUSAE(4, 8, l1_coeff=-1.0)
    with pytest.raises(ValueError, match="threshold_momentum"):
        BatchTopKSAE(4, 8, k=2, threshold_momentum=0.0)


def test_topk_exactly_k_nonzeros_and_they_are_the_largest():
    sae = TopKSAE(16, 64, k=4, seed=0)
    h = _randn(200, 16)
    z = sae.encode(h)
    pre = sae.pre_activations(h)
    assert ((z != 0).sum(-1) == 4).all()
    assert (z >= 0).all()
    # every kept pre-activation is at least as large as every dropped one
    kept_min = pre.masked_fill(z == 0, float("inf")).min(-1).values
    dropped_max = pre.masked_fill(z != 0, float("-inf")).max(-1).values
    assert (kept_min >= dropped_max).all()
    torch.testing.assert_close(z[z != 0], pre[z != 0])


def test_topk_never_exceeds_k_with_negative_preacts():
    sae = TopKSAE(8, 32, k=6, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(-3.0)
    l0 = (sae.encode(_randn(50, 8)) != 0).sum(-1)
    assert (l0 <= 6).all() and (l0 < 6).any()


def test_batchtopk_averages_k_in_training_and_thresholds_at_inference():
    sae = BatchTopKSAE(16, 64, k=4, seed=0).train()
    h = _randn(128, 16)
    z = sae(h).latents
    assert int((z != 0).sum()) == 4 * 128
    per_example = (z != 0).sum(-1)
    assert per_example.float().mean() == 4.0 and per_example.min() < per_example.max()
    smallest = z[z > 0].min()
    torch.testing.assert_close(sae.threshold, smallest)  # first update sets it directly
    sae(_randn(128, 16, seed=1))
    assert int(sae.threshold_updates) == 2
    sae.eval()
    pre = sae.pre_activations(h)
    z_eval = sae.encode(h)
    torch.testing.assert_close(z_eval, torch.where(pre > sae.threshold, pre, 0.0))
    before = sae.threshold.clone()
    sae.encode(h)  # inference must not move the threshold
    assert torch.equal(sae.threshold, before)


def test_relu_loss_has_l1_term():
    sae = ReLUSAE(8, 16, l1_coeff=0.5, seed=0)
    h = _randn(20, 8)
    out = sae.loss(h)
    z = sae.encode(h)
    torch.testing.assert_close(out.terms["l1"], 0.5 * z.abs().sum(-1).mean())
    torch.testing.assert_close(out.total, out.terms["mse"] + out.terms["l1"])


def test_auxk_loss_uses_only_dead_latents():
    sae = TopKSAE(8, 32, k=2, seed=0, aux_k=3, aux_coef=0.5)
    h = _randn(20, 8)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[:5] = True
    out = sae.loss(h, dead_mask=dead)
    assert "auxk" in out.terms
    torch.testing.assert_close(out.total, out.terms["mse"] + 0.5 * out.terms["auxk"])
    out.terms["auxk"].backward()
    # gradient reaches the decoder rows of dead latents only
    grad_rows = sae.W_dec.grad.abs().sum(1) > 0
    assert grad_rows[:5].any() and not grad_rows[5:].any()
    assert sae.loss(h, dead_mask=torch.zeros(32, dtype=torch.bool)).terms.keys() == {"mse"}


def test_normalize_decoder_and_remove_parallel_grads():
    sae = TopKSAE(8, 16, k=2, seed=0)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 3.0, 16)[:, None])
    sae.normalize_decoder()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(16))
    sae.loss(_randn(30, 8)).total.backward()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() > 1e-6
    sae.remove_parallel_grads()
    torch.testing.assert_close((sae.W_dec.grad * sae.W_dec).sum(1), torch.zeros(16))


@pytest.mark.parametrize("make", ALL_MODELS)
def test_fold_activation_scale_matches_scaled_model(make):
    sae = _perturbed(make()).eval()
    h = _randn(40, 12)
    scale = 2.5
    expected = sae(h * scale)
    sae.fold_activation_scale(scale)
    got = sae(h)
    torch.testing.assert_close(got.latents * scale, expected.latents, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.recon * scale, expected.recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(48))


def test_registry_and_from_config():
    assert {"topk", "relu", "batchtopk"} <= set(ARCHITECTURES)
    assert get_architecture("topk") is TopKSAE
    with pytest.raises(KeyError, match="no_such_sae"):
        get_architecture("no_such_sae")
    with pytest.raises(ValueError, match="SparseAutoencoder subclass"):
        register_architecture("not_an_sae")(int)
    with pytest.raises(ValueError, match="already registered"):

        @register_architecture("topk")
        class Impostor(TopKSAE):
            pass

    sae = BatchTopKSAE(6, 10, k=3, seed=7, aux_k=4, threshold_momentum=0.05)
    clone = BatchTopKSAE.from_config(sae.config())
    assert clone.config() == sae.config()
    for name, tensor in sae.state_dict().items():
        assert torch.equal(tensor, clone.state_dict()[name])  # same seed, same init
    with pytest.raises(ValueError, match="does not match"):
        TopKSAE.from_config(sae.config())


@pytest.mark.parametrize("make", ALL_MODELS)
def test_save_load_round_trip_bit_for_bit(make, tmp_path):
    sae = _perturbed(make())
    if isinstance(sae, BatchTopKSAE):
        sae.train()(_randn(64, 12))  # give the threshold a value
    folder = save_sae(sae, tmp_path / "sae")
    loaded = load_sae(folder)
    assert type(loaded) is type(sae) and not loaded.training
    assert loaded.config() == sae.config()
    state, loaded_state = sae.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    for name in state:
        assert torch.equal(state[name], loaded_state[name]), name
    h = _randn(10, 12)
    assert torch.equal(sae.eval()(h).recon, loaded(h).recon)
    # overwriting an existing folder works and leaves no temporary folders behind
    save_sae(loaded, folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]


def test_saved_format_follows_saelens(tmp_path):
    sae = _perturbed(TopKSAE(12, 48, k=5, seed=3))
    folder = save_sae(sae, tmp_path / "topk")
    cfg = json.loads((folder / CFG_FILENAME).read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 5
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"], cfg["device"]) == (12, 48, "float32", "cpu")
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"
    tensors = load_file(str(folder / WEIGHTS_FILENAME))
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "W_enc": (12, 48),
        "b_enc": (48,),
        "W_dec": (48, 12),
        "b_dec": (12,),
    }
    relu_cfg = json.loads((save_sae(ReLUSAE(4, 8), tmp_path / "relu") / CFG_FILENAME).read_text())
    assert relu_cfg["architecture"] == "standard" and relu_cfg["equisae_architecture"] == "relu"


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_sae(tmp_path / "missing")
    folder = save_sae(TopKSAE(4, 8, k=2), tmp_path / "sae")
    cfg = json.loads((folder / CFG_FILENAME).read_text())
    cfg["equisae_architecture"] = "nope"
    (folder / CFG_FILENAME).write_text(json.dumps(cfg))
    write_manifest(folder)  # a consistent folder of an unknown architecture
    with pytest.raises(KeyError, match="nope"):
        load_sae(folder)
    (folder / WEIGHTS_FILENAME).unlink()
    cfg["equisae_architecture"] = "topk"
    (folder / CFG_FILENAME).write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match="weights"):
        load_sae(folder)
    with pytest.raises(ValueError, match="SparseAutoencoder"):
        save_sae(torch.nn.Linear(2, 2), tmp_path / "x")


@pytest.mark.parametrize("n_dead", [0, 20])
def test_sparse_training_path_matches_dense(n_dead):
    """The sparse TopK loss gives the dense loss, latents and gradients (float rounding aside)."""
    sparse = _perturbed(TopKSAE(16, 48, k=4, seed=1, aux_k=5))
    dense = TopKSAE(16, 48, k=4, seed=1, aux_k=5, sparse_training=False)
    dense.load_state_dict(sparse.state_dict())
    h = 2 * _randn(64, 16) + 0.3
    dead = torch.arange(48) < n_dead
    out_sparse, out_dense = sparse.loss(h, dead), dense.loss(h, dead)
    assert (
        out_sparse.terms.keys()
        == out_dense.terms.keys()
        == ({"mse", "auxk"} if n_dead else {"mse"})
    )
    torch.testing.assert_close(out_sparse.total, out_dense.total)
    assert torch.equal(out_sparse.latents, out_dense.latents)
    torch.testing.assert_close(out_sparse.recon, out_dense.recon)
    out_sparse.total.backward()
    out_dense.total.backward()
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_saved_sae_is_verified_on_load(tmp_path) -> None:
    from equisae.sae import TopKSAE, load_sae, save_sae

    folder = save_sae(TopKSAE(6, 12, 2, seed=0), tmp_path / "sae")
    assert load_sae(folder).d_sae == 12
    weights = folder / "sae_weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # flip one bit of the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged SAE folder"):
        load_sae(folder)
