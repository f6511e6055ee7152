"""Base autoencoders: exact equivariance of the G-CNN, shapes, training, caching, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from equisae.models import (
    LAYERS,
    MODEL_NAMES,
    TrainSettings,
    build_model,
    evaluate_reconstruction,
    feature_permutation,
    load_checkpoint,
    model_config,
    random_rotations,
    reconstruction_mse,
    rotate_features,
    save_checkpoint,
    train_model,
    train_or_load,
    training_settings,
)
from equisae.models.gcnn import GroupConv, LiftingConv

TINY = TrainSettings(epochs=2, batch_size=16)


def blob_images(n: int, seed: int) -> torch.Tensor:
    """Coloured rectangles at random places on a black 32x32 canvas."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 3, 32, 32)
    for i in range(n):
        h, w = torch.randint(6, 16, (2,), generator=gen).tolist()
        top, left = torch.randint(0, 32 - 16, (2,), generator=gen).tolist()
        images[i, :, top : top + h, left : left + w] = torch.rand(3, 1, 1, generator=gen)
    return images


def tiny_splits(seed: int = 0) -> dict[str, torch.Tensor]:
    return {
        "train": blob_images(48, seed),
        "val": blob_images(8, seed + 1),
        "test": blob_images(8, seed + 2),
    }


@pytest.fixture(autouse=True)
def _artifacts(tmp_path, monkeypatch):
    """Artifacts in a temporary folder; one torch thread (the test machine is shared)."""
    monkeypatch.setenv("EQUISAE_ARTIFACTS", str(tmp_path / "artifacts"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def hooked_outputs(model: torch.nn.Module, x: torch.Tensor, names: list[str]) -> dict:
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o))
        for n in names
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return outputs


def gcnn_feature_layers(model: torch.nn.Module) -> list[str]:
    """Every block of the encoder, the bottleneck and the decoder blocks with p4 feature maps."""
    names = [f"encoder.{i}" for i in range(len(model.encoder))] + ["encoder", "bottleneck"]
    names += [f"decoder.{i}" for i in range(len(model.decoder) - 1)]
    return names


@pytest.mark.parametrize("p", [1, 2, 3])
def test_gcnn_is_exactly_equivariant_at_every_layer_and_output(p):
    model = build_model("gcnn").eval()
    x = torch.rand(4, 3, 32, 32)
    xr = torch.rot90(x, p, dims=(-2, -1))
    names = gcnn_feature_layers(model)
    h, hr = hooked_outputs(model, x, names), hooked_outputs(model, xr, names)
    assert set(LAYERS["gcnn"].values()) <= set(names)
    for name in names:
        assert hr[name].shape[1] % 4 == 0
        torch.testing.assert_close(hr[name], rotate_features(h[name], p), atol=1e-5, rtol=0)
        # rotating a non-trivially is not the identity: the check has teeth
        assert not torch.allclose(hr[name], h[name], atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(
            model(xr), torch.rot90(model(x), p, dims=(-2, -1)), atol=1e-5, rtol=0
        )


def test_group_layers_equivariant_with_other_kernel_sizes():
    x = torch.rand(2, 2, 10, 10)
    lift, gconv = LiftingConv(2, 3, kernel_size=5), GroupConv(3, 2, kernel_size=1)
    with torch.no_grad():
        for p in range(4):
            xr = torch.rot90(x, p, dims=(-2, -1))
            torch.testing.assert_close(lift(xr), rotate_features(lift(x), p), atol=1e-5, rtol=0)
            torch.testing.assert_close(
                gconv(lift(xr)), rotate_features(gconv(lift(x)), p), atol=1e-5, rtol=0
            )
    with pytest.raises(ValueError, match="odd"):
        GroupConv(2, 2, kernel_size=4)
    with pytest.raises(ValueError, match="GroupConv expects"):
        gconv(torch.rand(1, 5, 4, 4))


def test_rotate_features_is_a_c4_action_and_a_permutation():
    f = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(rotate_features(f, 0), f, atol=0, rtol=0)
    for a in range(4):
        for b in range(4):
            torch.testing.assert_close(
                rotate_features(rotate_features(f, b), a), rotate_features(f, a + b), atol=0, rtol=0
            )
        perm = feature_permutation((8, 4, 4), a)
        assert sorted(perm.tolist()) == list(range(8 * 16))
        torch.testing.assert_close(rotate_features(f, a).flatten(1), f.flatten(1)[:, perm])
    with pytest.raises(ValueError, match="C\\*4"):
        rotate_features(torch.randn(2, 6, 4, 4), 1)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_maps_images_to_images_with_modest_named_layers(name):
    model = build_model(name).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
        z = model.encode(x)
    assert y.shape == x.shape
    names = [LAYERS[name]["bottleneck"], LAYERS[name]["intermediate"]]
    out = hooked_outputs(model, x, names)
    d_bottleneck = out[names[0]].flatten(1).shape[1]
    d_intermediate = out[names[1]].flatten(1).shape[1]
    assert d_bottleneck == z.flatten(1).shape[1] == 64
    assert 64 <= d_intermediate <= 1024
    torch.testing.assert_close(model.decode(z), y)


def test_plain_models_are_not_equivariant_at_init():
    x = torch.rand(4, 3, 32, 32)
    for name in ("cnn_canonical", "mlp_augmented", "vit_augmented"):
        model = build_model(name).eval()
        with torch.no_grad():
            gap = model(torch.rot90(x, 1, dims=(-2, -1))) - torch.rot90(model(x), 1, dims=(-2, -1))
        assert gap.abs().max() > 1e-4, name


def test_unknown_names_overrides_and_modes_raise():
    with pytest.raises(KeyError, match="cnn_canonical.*gcnn"):
        build_model("resnet")
    with pytest.raises(KeyError, match="known models"):
        train_or_load("resnet", "quick", 0, progress=False)
    with pytest.raises(ValueError, match="bottleneck_width"):
        build_model("cnn_augmented", bottleneck_width=3)
    with pytest.raises(ValueError, match="mode"):
        training_settings("medium")
    with pytest.raises(ValueError, match="mode"):
        train_or_load("gcnn", "medium", 0, progress=False)
    with pytest.raises(ValueError, match="seed"):
        train_or_load("gcnn", "quick", -1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        TrainSettings(epochs=0, batch_size=8)
    with pytest.raises(KeyError, match="test"):
        train_or_load("gcnn", splits={"train": blob_images(4, 0)}, progress=False)
    with pytest.raises(ValueError, match="train_images"):
        train_model(build_model("gcnn"), torch.rand(4, 32, 32), TINY, False, 0, progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_checkpoint("/nonexistent/folder")


def test_model_config_overrides_are_applied_without_touching_the_rng():
    state = torch.random.get_rng_state()
    config = model_config("cnn_augmented", bottleneck_dim=32)
    assert torch.equal(state, torch.random.get_rng_state())
    assert config["bottleneck_dim"] == 32
    model = build_model("cnn_augmented", bottleneck_dim=32)
    assert model.encode(torch.rand(1, 3, 32, 32)).shape == (1, 32)
    assert model.config() == config


def test_random_rotations_rotate_each_image_deterministically():
    x = torch.rand(16, 3, 8, 8)
    a = random_rotations(x, torch.Generator().manual_seed(1))
    b = random_rotations(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    powers = []
    for i in range(16):
        matches = [p for p in range(4) if torch.equal(a[i], torch.rot90(x[i], p, dims=(-2, -1)))]
        assert len(matches) == 1
        powers.append(matches[0])
    assert len(set(powers)) > 1


@pytest.mark.parametrize("name", ["cnn_augmented", "gcnn", "mlp_augmented", "vit_augmented"])
def test_training_on_a_tiny_dataset_reduces_the_loss(name):
    images = blob_images(32, 0)
    model = build_model(name)
    before = reconstruction_mse(model, images)
    history = train_model(
        model, images, TrainSettings(epochs=8, batch_size=4), augment=True, seed=0, progress=False
    )
    after = reconstruction_mse(model, images)
    assert after < 0.7 * before
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert len(history["step_loss"]) == 8 * 8


def test_gcnn_reconstructs_every_rotation_equally_well():
    model = build_model("gcnn")
    errors = evaluate_reconstruction(model, blob_images(8, 3))
    per_rotation = torch.tensor(errors["test_mse_per_rotation"])
    torch.testing.assert_close(per_rotation, per_rotation[0].expand(4), atol=1e-6, rtol=1e-5)


def test_train_or_load_caches_and_reloads_identical_weights(tmp_path):
    splits = tiny_splits()
    model, info = train_or_load("cnn_canonical", splits=splits, settings=TINY, progress=False)
    assert info["cached"] is False and info["train_seconds"] > 0
    assert {"test_mse_canonical", "test_mse_rotated", "n_params", "history"} <= set(info)
    assert info["n_params"] == sum(p.numel() for p in model.parameters())
    assert len(info["history"]["val_loss"]) == TINY.epochs
    folder = info["folder"]
    assert str(tmp_path / "artifacts" / "models") in folder
    again, info2 = train_or_load("cnn_canonical", splits=splits, settings=TINY, progress=False)
    assert info2["cached"] is True and info2["folder"] == folder
    assert info2["train_seconds"] == info["train_seconds"]
    for (k, v), (k2, v2) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    # a different seed or different data is a different cache entry
    _, info3 = train_or_load("cnn_canonical", seed=1, splits=splits, settings=TINY, progress=False)
    _, info4 = train_or_load("cnn_canonical", splits=tiny_splits(5), settings=TINY, progress=False)
    assert info3["cached"] is False and info4["cached"] is False
    assert len({folder, info3["folder"], info4["folder"]}) == 3


def test_training_is_deterministic_under_a_seed(tmp_path, monkeypatch):
    splits = tiny_splits()
    weights = []
    for run in range(2):
        monkeypatch.setenv("EQUISAE_ARTIFACTS", str(tmp_path / f"run{run}"))
        model, info = train_or_load(
            "mlp_augmented", seed=3, splits=splits, settings=TINY, progress=False
        )
        assert info["cached"] is False
        weights.append(model.state_dict())
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_checkpoint_round_trip_is_bit_identical(tmp_path, name):
    model = build_model(name)
    config = {"name": name, "model": model.config()}
    folder = save_checkpoint(model, tmp_path / "ckpt", config, {"note": 1})
    loaded, config2, metrics = load_checkpoint(folder)
    assert config2 == config and metrics == {"note": 1}
    state, state2 = model.state_dict(), loaded.state_dict()
    assert state.keys() == state2.keys()
    for k in state:
        assert torch.equal(state[k], state2[k]), k
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    # saving again over an existing checkpoint keeps the first one and leaves no temp folder
    save_checkpoint(build_model(name), folder, config, {"note": 2})
    assert load_checkpoint(folder)[2] == {"note": 1}
    assert [p.name for p in (tmp_path).iterdir()] == ["ckpt"]


def test_model_figures_have_one_panel_per_image_and_model():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from equisae.plots.models import plot_reconstructions, plot_test_errors, plot_training_curves

    models = {name: build_model(name) for name in ("gcnn", "mlp_augmented")}
    fig = plot_reconstructions(models, torch.rand(3, 3, 32, 32))
    assert len(fig.axes) == (1 + 2) * (2 * 3)
    info = {
        "test_mse_canonical": 0.01,
        "test_mse_rotated": 0.02,
        "history": {"step_loss": [0.1, 0.05, 0.02], "val_loss": [0.04, 0.03]},
    }
    infos = {"a": info, "b": info}
    assert len(plot_test_errors(infos).axes) == 1
    assert len(plot_training_curves(infos).axes) == 2
    plt.close("all")
    with pytest.raises(ValueError, match="models is empty"):
        plot_reconstructions({}, torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="images"):
        plot_reconstructions(models, torch.rand(3, 32, 32))


def _damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":  # one bit of the last weight: the header stays valid, the value finite
        data[-2] ^= 0x01
    else:  # truncate: half the file
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_checkpoint_is_detected_named_and_retrained(how, caplog):
    splits = tiny_splits()
    model, info = train_or_load("cnn_canonical", splits=splits, settings=TINY, progress=False)
    weights = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    folder = info["folder"]
    _damage(Path(folder) / "model.safetensors", how)
    with pytest.raises(ValueError, match="model.safetensors"):
        load_checkpoint(folder)
    with caplog.at_level("WARNING", logger="equisae"):
        again, info2 = train_or_load("cnn_canonical", splits=splits, settings=TINY, progress=False)
    assert info2["cached"] is False and info2["folder"] == folder  # retrained, not loaded
    lines = [r.getMessage() for r in caplog.records if "model.safetensors" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "retraining" in lines[0]
    healed = torch.nn.utils.parameters_to_vector(again.parameters()).detach()
    assert torch.equal(healed, weights)  # deterministic retraining gives the same weights
    _, info3 = train_or_load("cnn_canonical", splits=splits, settings=TINY, progress=False)
    assert info3["cached"] is True


def test_checkpoint_is_readable_by_the_group(tmp_path):
    import os

    from equisae import io

    folder = save_checkpoint(build_model("gcnn"), tmp_path / "ckpt", {"name": "gcnn"}, {})
    assert folder.stat().st_mode & 0o777 == io.DIR_MODE
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == io.FILE_MODE, path.name
    if not io._UMASK & 0o050:  # the usual umask 022/002: folders 0755, files 0644
        assert folder.stat().st_mode & 0o050 == 0o050
        assert os.stat(folder / "model.safetensors").st_mode & 0o040
