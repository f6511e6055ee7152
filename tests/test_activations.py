"""Activation extraction with forward hooks and the OrbitActivations store."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from equisae.activations import (
    OrbitActivations,
    extract_activations,
    extract_many,
    get_module,
    list_layers,
    orbit_activations,
    orbit_activations_many,
)


class TupleOut(nn.Module):
    """Returns (tensor, extra) like an attention block."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x.sum()


class CountingDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


class Rot90:
    """A minimal stand-in for a C4 group acting on images."""

    name = "C4"
    order = 4

    def act_images(self, x: torch.Tensor, a: int) -> torch.Tensor:
        return torch.rot90(x, a, dims=(-2, -1))


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 6 * 6, 5),
        TupleOut(),
    )


def test_list_layers_and_unknown_name() -> None:
    model = small_model()
    assert list_layers(model) == ["0", "1", "2", "3", "4"]
    with pytest.raises(KeyError, match="Did you mean"):
        get_module(model, "33")
    with pytest.raises(KeyError, match="Available layers"):
        extract_activations(model, torch.zeros(2, 1, 6, 6), "encoder")


def test_extract_matches_manual_forward_and_is_batch_invariant() -> None:
    model = small_model()
    x = torch.randn(7, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    conv = extract_activations(model, x, "1", batch_size=3, progress=False)
    assert conv.shape == (7, 2 * 6 * 6) and conv.dtype == torch.float32
    expected = torch.relu(model[0](x)).reshape(7, -1)
    torch.testing.assert_close(conv, expected.detach())
    whole = extract_activations(model, x, "1", batch_size=100, progress=False)
    torch.testing.assert_close(conv, whole, rtol=0, atol=1e-6)
    assert not conv.requires_grad


def test_tuple_output_takes_first_tensor() -> None:
    model = small_model()
    x = torch.randn(4, 1, 6, 6)
    out = extract_activations(model, x, "4", progress=False)
    expected = 2 * model[3](model[2](torch.relu(model[0](x))))
    torch.testing.assert_close(out, expected.detach())


def test_eval_mode_used_and_training_mode_restored() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.9))
    model.train()
    x = torch.randn(16, 4)
    a = extract_activations(model, x, "1", progress=False)
    b = extract_activations(model, x, "1", progress=False)
    torch.testing.assert_close(a, b)  # dropout off: deterministic
    torch.testing.assert_close(a, model[0](x).detach())
    assert model.training


def test_forward_stops_after_last_requested_layer() -> None:
    decoder = CountingDecoder()
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), decoder)
    acts = extract_many(model, torch.randn(10, 3), ["0", "1"], batch_size=4, progress=False)
    assert set(acts) == {"0", "1"} and acts["1"].shape == (10, 3)
    assert decoder.calls == 0
    extract_activations(model, torch.randn(10, 3), "2", batch_size=4, progress=False)
    assert decoder.calls == 3


def test_bad_input_raises() -> None:
    model = small_model()
    with pytest.raises(ValueError, match="images"):
        extract_activations(model, torch.zeros(5), "1")
    with pytest.raises(ValueError, match="batch_size"):
        extract_activations(model, torch.zeros(2, 1, 6, 6), "1", batch_size=0)


def test_orbit_activations_from_canonical_and_orbit_images_agree() -> None:
    model = small_model()
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(5, 1, 6, 6, generator=gen)
    group = Rot90()
    orbit_images = torch.stack([group.act_images(images, p) for p in range(4)], dim=1)
    shape = torch.arange(5)
    orbit_ds = SimpleNamespace(
        images=orbit_images, factors={"shape": shape.reshape(-1, 1).expand(5, 4)}
    )
    acts = orbit_activations_many(
        model, orbit_ds, group, ["1", "3"], model_name="toy", progress=False
    )
    assert acts["3"].acts.shape == (5, 4, 5) and acts["1"].acts.shape == (5, 4, 72)
    for p in range(4):
        direct = extract_activations(model, group.act_images(images, p), "3", progress=False)
        torch.testing.assert_close(acts["3"].acts[:, p], direct)
    single = orbit_activations(model, orbit_ds, group, "3", progress=False)
    assert isinstance(single, OrbitActivations) and single.layer == "3"
    assert torch.equal(single.poses[2], torch.arange(4))
    flat, poses, factors = single.flat()
    assert flat.shape == (20, 5) and torch.equal(poses[:4], torch.arange(4))
    assert torch.equal(factors["shape"][:4], torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="poses"):
        orbit_activations(
            model, SimpleNamespace(images=orbit_images[:, :3], factors={}), group, "3"
        )


def test_orbit_activations_of_equivariant_layer_are_rotations() -> None:
    """A pointwise (1x1) conv commutes with rot90: pose p is the rotated pose-0 feature map."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())
    images = torch.randn(3, 1, 4, 4)
    group = Rot90()
    orbit_images = torch.stack([group.act_images(images, p) for p in range(4)], dim=1)
    ds = SimpleNamespace(images=orbit_images, factors={})
    acts = orbit_activations(model, ds, group, "1", progress=False).acts
    base = acts[:, 0].reshape(3, 2, 4, 4)
    for p in range(4):
        expected = torch.rot90(base, p, dims=(-2, -1)).reshape(3, -1)
        torch.testing.assert_close(acts[:, p], expected)


def test_save_load_roundtrip_and_overwrite(tmp_path) -> None:
    gen = torch.Generator().manual_seed(4)
    store = OrbitActivations(
        acts=torch.randn(6, 4, 3, generator=gen),
        factors={"quadrant": torch.randint(0, 4, (6, 4), generator=gen)},
        group_name="C4",
        layer="bottleneck",
        model_name="gcnn",
        metadata={"mode": "quick", "seed": 0},
    )
    folder = store.save(tmp_path / "acts")
    back = OrbitActivations.load(folder)
    assert torch.equal(back.acts, store.acts)
    assert torch.equal(back.factors["quadrant"], store.factors["quadrant"])
    assert (back.group_name, back.layer, back.model_name) == ("C4", "bottleneck", "gcnn")
    assert back.metadata == {"mode": "quick", "seed": 0}
    store.acts = store.acts + 1
    store.save(folder)
    assert torch.equal(OrbitActivations.load(folder).acts, store.acts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts"]  # no temporary leftovers


def test_store_rejects_bad_shapes_and_missing_folder(tmp_path) -> None:
    with pytest.raises(ValueError, match="acts must have shape"):
        OrbitActivations(torch.zeros(4, 3), {}, "C4", "x", "m")
    with pytest.raises(ValueError, match="factor 'shape'"):
        OrbitActivations(torch.zeros(4, 4, 2), {"shape": torch.zeros(4)}, "C4", "x", "m")
    with pytest.raises(FileNotFoundError, match="no saved orbit activations"):
        OrbitActivations.load(tmp_path / "missing")


@pytest.fixture
def tiny_pipeline(tmp_path, monkeypatch):
    """The pipeline on 8/4/4 images with an untrained G-CNN (no training), counting loads."""
    import equisae.data
    import equisae.models

    monkeypatch.setenv("EQUISAE_ARTIFACTS", str(tmp_path))
    monkeypatch.setattr(
        equisae.data, "dataset_sizes", lambda mode: {"train": 8, "val": 4, "test": 4}
    )
    calls = []

    def fake_train_or_load(name, mode="quick", seed=0, progress=True, **kwargs):
        calls.append((name, mode, seed))
        torch.manual_seed(seed)
        return equisae.models.build_model(name), {"folder": None}

    monkeypatch.setattr(equisae.models, "train_or_load", fake_train_or_load)
    return calls


def test_pipeline_caches_every_split_and_layer(tiny_pipeline, tmp_path) -> None:
    from equisae.activation_cache import activation_folder, orbit_activations_for

    first = orbit_activations_for("gcnn", "bottleneck", "quick", seed=0, progress=False)
    assert first.acts.shape == (8, 4, 64) and first.model_name == "gcnn"
    assert first.layer == "bottleneck" and first.group_name == "C4"
    assert len(tiny_pipeline) == 1
    again = orbit_activations_for("gcnn", "bottleneck", "quick", seed=0, progress=False)
    test = orbit_activations_for("gcnn", "intermediate", "quick", split="test", progress=False)
    assert len(tiny_pipeline) == 1  # both were cached by the first call
    assert torch.equal(again.acts, first.acts) and test.acts.shape == (4, 4, 512)
    assert activation_folder("gcnn", "bottleneck", "quick", 0, "train").is_dir()
    assert activation_folder("gcnn", "bottleneck", "quick", 1, "train") != activation_folder(
        "gcnn", "bottleneck", "quick", 0, "train"
    )
    # Per-pose factors move with the group: invariant ones stay, the quadrant turns.
    shape = first.factors["shape"]
    assert torch.equal(shape, shape[:, :1].expand(-1, 4))
    quadrant = first.factors["quadrant"]
    assert len({tuple(row.tolist()) for row in quadrant.T}) > 1


def test_pipeline_rejects_bad_arguments(tiny_pipeline) -> None:
    from equisae.activation_cache import orbit_activations_for

    with pytest.raises(KeyError, match="unknown model"):
        orbit_activations_for("resnet", "bottleneck", "quick")
    with pytest.raises(KeyError, match="unknown layer"):
        orbit_activations_for("gcnn", "decoder.9", "quick")
    with pytest.raises(ValueError, match="split"):
        orbit_activations_for("gcnn", "bottleneck", "quick", split="holdout")
    with pytest.raises(ValueError, match="mode"):
        orbit_activations_for("gcnn", "bottleneck", "fast")
    assert tiny_pipeline == []


class _Block(nn.Module):
    """A torchvision-style residual block: in-place ReLU and ``out += x``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        out += x
        return self.relu(out)


class _TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block1 = _Block(4)
        self.block2 = _Block(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(self.stem(x)))


def test_in_place_ops_later_in_the_forward_pass_do_not_change_recorded_activations() -> None:
    torch.manual_seed(0)
    model = _TinyResNet()
    images = torch.randn(6, 3, 8, 8)
    layers = ["stem", "block1.conv1", "block1.conv2", "block1", "block2.conv2"]
    together = extract_many(model, images, layers, batch_size=4, progress=False)
    for layer in layers:
        alone = extract_activations(model, images, layer, batch_size=4, progress=False)
        assert torch.equal(together[layer], alone), layer
    # block1.conv1's output goes through ReLU(inplace=True): recorded values keep their negatives
    assert (together["block1.conv1"] < 0).any()


def test_saved_activations_are_readable_by_the_group(tmp_path) -> None:
    from equisae import io

    store = OrbitActivations(torch.randn(3, 4, 2), {}, "C4", "x", "m")
    folder = store.save(tmp_path / "acts")
    assert folder.stat().st_mode & 0o777 == io.DIR_MODE
    assert {p.name for p in folder.iterdir()} == {
        "activations.safetensors",
        "meta.json",
        "manifest.json",
    }
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == io.FILE_MODE, path.name
    assert not [p for p in tmp_path.iterdir() if p.name != "acts"]  # no temp folders left


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_activation_cache_is_reported_and_extracted_again(
    tiny_pipeline, how, caplog
) -> None:
    from equisae.activation_cache import activation_folder, orbit_activations_for

    first = orbit_activations_for("gcnn", "bottleneck", "quick", seed=0, progress=False)
    expected = first.acts.clone()  # the loaded tensors may map the file damaged below
    del first
    path = activation_folder("gcnn", "bottleneck", "quick", 0, "train") / "activations.safetensors"
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[-2] ^= 0x01  # a finite, plausible value: only the checksum can tell
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="activations.safetensors"):
        OrbitActivations.load(path.parent)
    with caplog.at_level("WARNING", logger="equisae"):
        again = orbit_activations_for("gcnn", "bottleneck", "quick", seed=0, progress=False)
    assert len(tiny_pipeline) == 2  # extracted again, not loaded
    assert torch.equal(again.acts, expected)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "activations.safetensors" in lines[0] and "\n" not in lines[0]


def test_pipeline_group_is_part_of_the_cache_key(tiny_pipeline) -> None:
    from equisae.activation_cache import activation_folder, activation_key, orbit_activations_for

    c4 = activation_key("gcnn", "bottleneck", "quick", 0, "train")
    assert c4["group"] == "C4" and c4 == activation_key(
        "gcnn", "bottleneck", "quick", 0, "train", group="C4"
    )
    folder = activation_folder("gcnn", "bottleneck", "quick", 0, "train", group="D4")
    assert folder != activation_folder("gcnn", "bottleneck", "quick", 0, "train")
    d4 = orbit_activations_for("gcnn", "bottleneck", "quick", progress=False, group="D4")
    assert d4.acts.shape == (8, 8, 64) and d4.group_name == "D4" and folder.is_dir()
    # Flips move the orientation-dependent factors; invariant ones stay.
    assert torch.equal(d4.factors["shape"], d4.factors["shape"][:, :1].expand(-1, 8))
    c4_acts = orbit_activations_for("gcnn", "bottleneck", "quick", progress=False)
    assert torch.allclose(c4_acts.acts, d4.acts[:, :4])  # the rotations come first
    with pytest.raises(KeyError):
        orbit_activations_for("gcnn", "bottleneck", "quick", group="Q8")


def test_orbit_activations_takes_group_names_and_own_labels() -> None:
    """A group name works like the Group; own labels (N,) are repeated over the poses; one
    return type per function (a list of layers is refused by the one-layer function)."""
    from equisae.groups import get_group

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten())
    images = torch.rand(6, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    ds = SimpleNamespace(images=images, factors={"digit": labels})
    by_name = orbit_activations(model, ds, "C4", "1", progress=False)
    by_group = orbit_activations(model, ds, get_group("C4"), "1", progress=False)
    assert isinstance(by_name, OrbitActivations) and by_name.group_name == "C4"
    assert torch.equal(by_name.acts, by_group.acts)
    assert torch.equal(by_name.factors["digit"], labels[:, None].expand(6, 4))
    many = orbit_activations_many(model, ds, "C4", ["1"], progress=False)
    assert set(many) == {"1"} and torch.equal(many["1"].acts, by_name.acts)
    with pytest.raises(ValueError, match="orbit_activations_many"):
        orbit_activations(model, ds, "C4", ["0", "1"], progress=False)
    with pytest.raises(ValueError, match="group"):
        orbit_activations(model, ds, "Z7", "1", progress=False)
    bad = SimpleNamespace(images=images, factors={"digit": labels[:4]})
    with pytest.raises(ValueError, match="factor 'digit' must have shape"):
        orbit_activations(model, bad, "C4", "1", progress=False)
