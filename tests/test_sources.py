"""Data sources: the interface, digits, GalaxyMNIST HDF5 and image-folder loaders, the pipeline."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from equisae import data
from equisae.cli import build_parser, main
from equisae.models import build_model, image_overrides
from equisae.sources import (
    GALAXY_MNIST_CLASSES,
    ImageSource,
    digits_source,
    load_galaxy_mnist,
    load_image_folder,
    macro_f1_without,
    read_galaxy_mnist_file,
    resize_images,
    rotation_confusion,
    shapes_splits,
)
from equisae.sources.pipeline import RunSizes, run_on_source

pytestmark = pytest.mark.usefixtures("one_thread")


def _source(n: int = 40, size: int = 8, channels: int = 1) -> ImageSource:
    gen = torch.Generator().manual_seed(0)
    return ImageSource(
        name="toy",
        images=torch.rand(n, channels, size, size, generator=gen),
        factors={"label": torch.arange(n) % 4},
        invariant_factors=("label",),
    )


# ------------------------------------------------------------------------------ interface


def test_orbit_of_a_generic_source_is_exact_and_labelled() -> None:
    src = _source()
    orb = src.orbit("C4")
    assert orb.images.shape == (40, 4, 1, 8, 8) and orb.group_name == "C4"
    for p in range(4):
        assert torch.equal(orb.images[:, p], torch.rot90(src.images, p, dims=(-2, -1)))
        assert torch.equal(orb.factors["label"][:, p], src.factors["label"])
        assert (orb.factors["pose"][:, p] == p).all()
    d4 = src.orbit("D4")
    assert d4.images.shape[1] == 8


def test_split_is_seeded_stratified_and_disjoint() -> None:
    src = _source(100)
    a, b, c = src.split(3), src.split(3), src.split(4)
    assert torch.equal(a["train"].images, b["train"].images)
    assert not torch.equal(a["train"].images, c["train"].images)
    assert sum(len(p) for p in a.values()) == 100
    assert [len(a[s]) for s in ("train", "val", "test")] == [60, 20, 20]
    for part in a.values():  # 25 per class: 15 / 5 / 5
        assert torch.bincount(part.factors["label"]).unique().numel() == 1
    flat = {s: p.images.reshape(len(p), -1) for s, p in a.items()}
    assert torch.cdist(flat["train"], flat["test"]).min() > 0
    with pytest.raises(ValueError, match="empty"):
        _source(4).split(0, {"train": 0.5, "val": 0.1, "test": 0.1})


def test_source_validation_names_the_problem() -> None:
    images = torch.rand(5, 1, 8, 6)
    with pytest.raises(ValueError, match="square"):
        ImageSource("x", images, {"a": torch.zeros(5)}, ("a",))
    with pytest.raises(ValueError, match=r"factor 'a' must have shape \(5,\)"):
        ImageSource("x", torch.rand(5, 1, 8, 8), {"a": torch.zeros(4)}, ("a",))
    with pytest.raises(KeyError, match="not in factors"):
        ImageSource("x", torch.rand(5, 1, 8, 8), {"a": torch.zeros(5)}, ("b",))
    with pytest.raises(ValueError, match="neither invariant nor equivariant"):
        ImageSource("x", torch.rand(5, 1, 8, 8), {"a": torch.zeros(5), "b": torch.zeros(5)}, ("a",))


def test_resize_by_whole_factors_commutes_with_rotations() -> None:
    x = torch.rand(3, 2, 8, 8)
    for size in (16, 4):
        y = resize_images(x, size)
        assert y.shape == (3, 2, size, size)
        for p in range(1, 4):
            moved = resize_images(torch.rot90(x, p, dims=(-2, -1)), size)
            assert torch.allclose(moved, torch.rot90(y, p, dims=(-2, -1)), atol=1e-6, rtol=0)
    assert torch.equal(resize_images(x, 16)[..., ::2, ::2], x)


def test_shapes_source_orbits_move_the_equivariant_factors() -> None:
    splits = shapes_splits({"train": 30, "test": 10}, seed=1)
    src = splits["train"]
    assert src.invariant_factors == data.INVARIANT_FACTORS
    orb, ref = src.orbit("C4"), data.orbit(src.dataset, "C4")
    assert torch.equal(orb.images, ref.images)
    for name in data.FACTOR_NAMES:
        assert torch.equal(orb.factors[name], ref.factors[name])
    sub = src.subset(torch.arange(5))
    assert torch.equal(sub.orbit("C4").images, orb.images[:5])


def test_image_overrides_fit_every_model_to_one_channel_16px() -> None:
    for name in ("cnn_augmented", "gcnn", "mlp_augmented", "vit_augmented"):
        model = build_model(name, **image_overrides(name, 1, 16))
        x = torch.rand(2, 1, 16, 16)
        assert model(x).shape == x.shape
        assert model.encode(x).flatten(1).shape[1] == 64
    with pytest.raises(ValueError, match="multiple of 16"):
        image_overrides("gcnn", 1, 8)


# ------------------------------------------------------------------------------ digits


def test_digits_source_shapes_values_and_determinism() -> None:
    from sklearn.datasets import load_digits

    src = digits_source()
    assert src.images.shape == (1797, 1, 16, 16) and src.images.dtype == torch.float32
    assert src.images.min() == 0 and src.images.max() == 1
    assert torch.equal(src.images, digits_source().images)
    raw = digits_source(8)
    assert torch.equal(raw.images[:, 0] * 16, torch.from_numpy(load_digits().images).float())
    assert torch.equal(src.images[..., ::2, ::2], raw.images)  # nearest upsampling
    digit, without = src.factors["digit"], src.factors["digit_without_6_9"]
    assert torch.bincount(digit).min() > 170
    assert ((without == -1) == ((digit == 6) | (digit == 9))).all()
    assert torch.equal(without[without >= 0], digit[without >= 0])
    with pytest.raises(ValueError, match="multiple of 8"):
        digits_source(12)


def test_turned_sixes_look_like_nines() -> None:
    res = rotation_confusion(seed=0)
    assert res["upright_accuracy"] > 0.9
    assert res["6->9"] > 0.5 > res["others_to_6_9"]
    scores = macro_f1_without([6, 9, 1, 2], [9, 6, 1, 2])
    assert scores["all"] == pytest.approx(0.5) and scores["without"] == 1.0


# ------------------------------------------------------------------------------ GalaxyMNIST


def _write_galaxy(path, n: int, side: int = 64, seed: int = 0, **datasets) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("labels", data=np.arange(n) % 4)
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return images


def test_galaxy_mnist_reads_the_distributed_layout(tmp_path) -> None:
    raw = tmp_path / "GalaxyMNIST" / "raw"
    train = _write_galaxy(raw / "train_dataset.hdf5", 12, seed=1)
    _write_galaxy(raw / "test_dataset.hdf5", 8, seed=2)
    src = load_galaxy_mnist(tmp_path)
    assert src.images.shape == (20, 3, 64, 64) and len(src) == 20
    expected = torch.from_numpy(train[3]).permute(2, 0, 1).float() / 255
    assert torch.allclose(src.images[3], expected)
    assert src.factors["morphology"].tolist()[:4] == [0, 1, 2, 3]
    assert src.class_names["morphology"] == GALAXY_MNIST_CLASSES
    assert len(load_galaxy_mnist(raw / "test_dataset.hdf5")) == 8
    assert len(load_galaxy_mnist(tmp_path, split="train")) == 12
    small = load_galaxy_mnist(tmp_path, split="test", image_size=32)
    assert small.images.shape == (8, 3, 32, 32)


def test_galaxy_mnist_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="test_dataset.hdf5"):
        _write_galaxy(tmp_path / "train_dataset.hdf5", 4)
        load_galaxy_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_galaxy_mnist_file(tmp_path / "nope.hdf5")
    wrong = tmp_path / "wrong.hdf5"
    with h5py.File(wrong, "w") as f:
        f.create_dataset("x", data=np.zeros((2, 8, 8, 3), np.uint8))
        f.create_dataset("labels", data=np.zeros(2, np.int64))
    with pytest.raises(KeyError, match=r"no dataset 'images'; keys present: \['labels', 'x'\]"):
        read_galaxy_mnist_file(wrong)
    flat = tmp_path / "flat.hdf5"
    with h5py.File(flat, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 8, 6, 3), np.uint8))
        f.create_dataset("labels", data=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="square"):
        read_galaxy_mnist_file(flat)
    short = tmp_path / "short.hdf5"
    with h5py.File(short, "w") as f:
        f.create_dataset("images", data=np.zeros((3, 8, 8, 3), np.uint8))
        f.create_dataset("labels", data=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="'images' has 3 entries but 'labels' has 2"):
        read_galaxy_mnist_file(short)


# ------------------------------------------------------------------------------ image folders


def _save(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_reads_png_jpeg_tiff(tmp_path) -> None:
    rng = np.random.default_rng(0)
    grey = {
        f"{c}/{i}.png": rng.integers(0, 256, (12, 12), dtype=np.uint8)
        for c in "ab"
        for i in range(3)
    }
    for name, array in grey.items():
        _save(tmp_path / "grey" / name, array)
    src = load_image_folder(tmp_path / "grey")
    assert src.images.shape == (6, 1, 12, 12) and src.class_names["label"] == ("a", "b")
    assert src.factors["label"].tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(src.images[4, 0] * 255, torch.from_numpy(grey["b/1.png"]).float())
    ordered = load_image_folder(tmp_path / "grey", classes=["b", "a"])
    assert ordered.factors["label"].tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(ordered.images[0], src.images[3])

    colour = tmp_path / "colour"
    _save(colour / "x" / "1.jpg", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    _save(colour / "y" / "1.tif", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    _save(colour / "y" / "2.TIFF", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    (colour / "y" / "notes.txt").write_text("not an image")
    rgb = load_image_folder(colour, image_size=8)
    assert rgb.images.shape == (3, 3, 8, 8) and rgb.factors["label"].tolist() == [0, 1, 1]
    assert load_image_folder(colour, channels=1).images.shape == (3, 1, 16, 16)
    assert len(load_image_folder(colour, max_per_class=1)) == 2


def test_image_folder_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        load_image_folder(tmp_path / "none")
    square = np.zeros((8, 8), np.uint8)
    _save(tmp_path / "ok" / "a" / "1.png", square)
    (tmp_path / "ok" / "b").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*b has no images"):
        load_image_folder(tmp_path / "ok")
    _save(tmp_path / "ok" / "b" / "1.png", square)
    with pytest.raises(ValueError, match=r"unknown class folders \['b'\]; expected classes"):
        load_image_folder(tmp_path / "ok", classes=["a", "c"])
    with pytest.raises(ValueError, match=r"expected class folders \['c'\] are missing"):
        load_image_folder(tmp_path / "ok", classes=["a", "b", "c"])
    _save(tmp_path / "mixed" / "a" / "1.png", square)
    _save(tmp_path / "mixed" / "a" / "2.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="mixed image sizes.*8x8.*10x10"):
        load_image_folder(tmp_path / "mixed")
    assert load_image_folder(tmp_path / "mixed", image_size=4).images.shape == (2, 1, 4, 4)
    _save(tmp_path / "wide" / "a" / "1.png", np.zeros((8, 10), np.uint8))
    with pytest.raises(ValueError, match="must be square.*8x10"):
        load_image_folder(tmp_path / "wide")


# ------------------------------------------------------------------------------ pipeline


def test_run_on_digits_end_to_end(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EQUISAE_ARTIFACTS", str(tmp_path / "artifacts"))
    src = digits_source().subset(slice(0, 600))
    sizes = RunSizes(epochs=1, sae_steps=20, d_sae=32, k=4, probe_ks=(None, 1), max_probe_orbits=60)
    out = run_on_source(src, sizes=sizes, out_dir=tmp_path / "run")
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["split_sizes"] == {"train": 360, "val": 120, "test": 120}
    assert written["activation_dim"] == 64 and written["group"] == "C4"
    r2 = out["linear_representation"]["r2_single"]
    assert r2[0] == pytest.approx(1.0) and all(-1 < r <= 1 for r in r2)
    assert set(out["saes"]) == {"topk", "adaptive"}
    assert all(0 <= m["fvu"] < 2 and m["l0"] <= 4 for m in out["saes"].values())
    for feats in ("raw", "topk", "adaptive"):
        per = out["probes"][feats]
        assert set(per) == {"digit", "digit_without_6_9", "chance_f1"}
        assert 0 <= per["digit"]["all"] <= 1 and "k1" in per["digit"]
    assert out["probes"]["raw"]["digit"]["all"] > 2 * out["probes"]["raw"]["chance_f1"]["digit"]
    again = run_on_source(src, sizes=sizes)
    assert again["base_model"]["cached"] is True
    for name, metrics in out["saes"].items():  # deterministic under the seed (timing aside)
        metrics.pop("train_seconds"), again["saes"][name].pop("train_seconds")
    assert again["saes"] == out["saes"] and again["probes"] == out["probes"]
    with pytest.raises(ValueError, match="cyclic"):
        run_on_source(src, group="D4", sizes=sizes)


def test_images_command(tmp_path, capsys) -> None:
    args = build_parser().parse_args(["images", "--source", "digits", "--quick", "--size", "16"])
    assert args.source == "digits" and args.quick and args.size == 16
    assert main(["images", "--source", "galaxy-mnist", "--path", str(tmp_path / "no")]) == 1
    assert "GalaxyMNIST path not found" in capsys.readouterr().err
    assert main(["images", "--source", "folder"]) == 1
    assert "needs a path" in capsys.readouterr().err
