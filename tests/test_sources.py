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
    assert written["source"]["n_images"] == 600  # the whole source, not its training split
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


# ------------------------------------------------------------------------------ the study


def _tiny_study_settings(**changes):
    from dataclasses import replace

    from equisae.sources.pipeline import study_settings

    base = replace(
        study_settings("quick"),
        models=("cnn_augmented", "gcnn"),
        sae_types=("topk", "adaptive"),
        ks=(4,),
        probe_k=4,
        seeds=(0, 1),
        epochs=1,
        n_steps=20,
        max_d_sae=32,
        max_probe_orbits=(40, 20, 40),
        eval_orbits=40,
    )
    return replace(base, **changes)


def test_study_settings_validate_and_size_the_modes() -> None:
    from equisae.sources.pipeline import StudySettings, study_settings

    quick, full = study_settings("quick"), study_settings("full")
    assert len(quick.seeds) >= 2 and len(full.seeds) >= 3  # verdicts need a spread
    assert quick.n_steps < full.n_steps and set(quick.ks) <= set(full.ks)
    assert full.models == ("cnn_canonical", "cnn_augmented", "gcnn")
    assert {"adaptive", "adaptive_canonical", "topk"} <= set(full.sae_types)
    assert quick.training.d_sae(64) == quick.max_d_sae
    with pytest.raises(ValueError, match="probe_k=3 must be one of ks"):
        StudySettings(mode="quick", ks=(4, 8), probe_k=3)
    with pytest.raises(KeyError):
        StudySettings(mode="quick", sae_types=("nope",))
    with pytest.raises(ValueError, match="mode must be one of"):
        study_settings("medium")
    with pytest.raises(ValueError, match="seeds must be distinct"):
        StudySettings(mode="quick", seeds=(0, 0))


def test_study_records_feed_the_verdicts(tmp_path, monkeypatch) -> None:
    from equisae.sources.pipeline import format_study, study_source
    from equisae.verdicts import frontier_verdict, linear_representation_verdict, probing_verdict

    monkeypatch.setenv("EQUISAE_ARTIFACTS", str(tmp_path / "artifacts"))
    src = digits_source().subset(slice(0, 500))
    settings = _tiny_study_settings()
    threads = torch.get_num_threads()
    out = study_source(src, settings, out_dir=tmp_path / "run")
    assert torch.get_num_threads() == threads  # restored
    written = json.loads((tmp_path / "run" / "study.json").read_text())
    assert written["frontier"] == json.loads(json.dumps(out["frontier"]))
    # 2 models x 2 SAE types x 1 k x 2 seeds
    assert len(out["frontier"]) == 8 and {r["seed"] for r in out["frontier"]} == {0, 1}
    assert all(0 <= r["fvu"] < 2 and r["l0"] <= 4 + 1e-6 for r in out["frontier"])
    # the G-CNN is exactly equivariant: one matrix explains its rotations
    gcnn = next(r for r in out["linrep"] if r["model"] == "gcnn")
    assert min(gcnn["r2_single"]) > 0.999 and gcnn["group_error"] < 1e-3
    base = {r["model"]: r for r in out["base_models"]}
    assert base["gcnn"]["output_equivariance_error"] < 1e-6
    assert base["cnn_augmented"]["output_equivariance_error"] > 1e-4
    # probes: every factor, probe size, SAE seed and the references
    factors = {"digit", "digit_without_6_9", "pose"}
    assert {r["factor"] for r in out["probes"]} == factors
    assert {r["probe_k"] for r in out["probes"]} == {"all", "k1", "k5"}
    assert {r["sae_type"] for r in out["probes"]} == {"topk", "adaptive", "raw", "random"}
    assert all(r["features"] == "latents" and 0 <= r["f1"] <= 1 for r in out["probes"])
    raw = [r for r in out["probes"] if (r["sae_type"], r["probe_k"]) == ("raw", "all")]
    assert all(r["f1"] > 2 * r["chance_f1"] for r in raw if r["factor"] != "pose")
    v = probing_verdict(out["probes"], "all", factors=("digit",))
    assert len(v.rows) == 2 and all(r.delta.n == 2 for r in v.rows)
    assert len(frontier_verdict(out["frontier"]).rows) == 2
    lin = linear_representation_verdict({(r["model"], r["layer"]): r for r in out["linrep"]})
    assert len(lin.rows) == 2
    assert "gcnn: R^2 of M^p 1.000" in format_study(out)
    # deterministic under the seeds (timings aside)
    again = study_source(src, settings)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]

    assert strip(again["frontier"]) == strip(out["frontier"])
    assert again["probes"] == out["probes"]
    with pytest.raises(ValueError, match="cyclic"):
        study_source(src, settings, group="D4")
    with pytest.raises(ValueError, match="threads must be"):
        study_source(src, settings, threads=0)


def test_images_command_has_a_study_switch() -> None:
    args = build_parser().parse_args(["images", "--source", "digits", "--quick", "--study"])
    assert args.study and args.quick
    assert not build_parser().parse_args(["images", "--source", "digits"]).study


def test_study_report_tables_pair_by_model_and_seed() -> None:
    from equisae.sources.report import (
        linrep_table,
        probing_verdict_table,
        probing_verdicts,
        six_nine,
        six_nine_table,
    )

    probes = []
    for model in ("a", "b"):
        for seed in (0, 1, 2):
            for t, base in (("topk", 0.5), ("adaptive", 0.6)):
                for factor, shift in (("digit", 0.0), ("digit_without_6_9", 0.1 + 0.01 * seed)):
                    probes.append(
                        {
                            "model": model,
                            "layer": "bottleneck",
                            "sae_type": t,
                            "seed": seed,
                            "features": "latents",
                            "factor": factor,
                            "probe_k": "all",
                            "f1": base + shift + 0.001 * seed,
                            "chance_f1": 0.1,
                        }
                    )
    rows = six_nine(probes, ["topk", "adaptive", "absent"])
    assert [r["sae_type"] for r in rows] == ["topk", "adaptive"]
    assert rows[0]["gain_mean"] == pytest.approx(0.11) and rows[0]["n"] == 6
    assert "+0.110 ± 0.009 (n=6)" in six_nine_table(rows)
    verdicts = probing_verdicts(probes, ["adaptive"], ["all"], ["digit"])
    (v,) = verdicts.values()
    assert v.n_better == 2 and v.holds  # +0.1 at every seed of both models
    table = probing_verdict_table(verdicts)
    assert "| adaptive equivariant | digit, dense probe | a | +0.100 | 0 | 3 | better |" in table
    assert "|  |  | label over the 2 above | +0.100 |  |  | **holds** |" in table
    lin = {"model": "m", "r2_single": [1, 0.9, 0.8, 0.9], "r2_per_power": [1, 0.95, 0.9, 0.9]}
    lin.update(r2_identity=[1, 0, -1, 0], group_error=0.5, rank=3, dim=4)
    table = linrep_table([lin])
    assert "| m | 0.9000 | 0.8000 | 0.9000 | 0.1000 | -0.3333 | 0.5000 | 3 / 4 |" in table


def test_verdict_tables_are_long_one_row_per_point_and_a_label_row() -> None:
    """Notebook 07's verdict tables: seven (six) narrow columns, one row per SAE, metric and
    target with value, spread, n and status, then the label; targets in words; k in order."""
    from equisae.sources.report import frontier_verdict_table, probing_verdict_table
    from equisae.verdicts import frontier_verdict, probing_verdict

    probes = [
        {
            "model": m,
            "layer": "bottleneck",
            "sae_type": t,
            "seed": seed,
            "features": "latents",
            "factor": f,
            "probe_k": pk,
            "f1": 0.5 + (0.05 * seed if t == "adaptive" and m == "b" else 0.0) + 0.01 * seed,
        }
        for m in ("a", "b", "c")
        for t in ("topk", "adaptive")
        for seed in ((0,) if m == "c" else (0, 1, 2))
        for f in ("digit", "digit_without_6_9")
        for pk in ("all", "k5")
    ]
    verdicts = {
        ("adaptive", pk, f): probing_verdict(probes, pk, "adaptive", "topk", (f,))
        for pk in ("all", "k5")
        for f in ("digit", "digit_without_6_9")
    }
    lines = probing_verdict_table(verdicts).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["SAE (vs TopK)", "F1 of, probe", "base model", "F1 difference", "sd", "n"] + [
        "status"
    ]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert len(body) == 4 * (3 + 1)  # per verdict: three base models and the label
    assert [r[0] for r in body].count("adaptive equivariant") == 1  # named once
    assert body[4][1] == "digit without 6 and 9, dense probe"
    assert "digit_without_6_9" not in "\n".join(lines)
    by_model = {r[2]: r for r in body[:3]}
    assert by_model["b"][3:] == ["+0.050", "0.050", "3", "within spread"]
    assert by_model["c"][4:] == ["", "1", "one seed"]  # one seed: n=1, no spread
    assert body[3][2] == "label over the 3 above" and body[3][6].startswith("**")

    frontier = [
        {"model": m, "layer": "bottleneck", "sae_type": t, "seed": seed, "k": k, "fvu": v}
        for m in ("a",)
        for k in (4, 16, 8)
        for seed in (0, 1, 2)
        for t, v in (("topk", 0.1), ("adaptive", 0.2 + 0.001 * seed))
    ]
    table = frontier_verdict_table({"adaptive": frontier_verdict(frontier, "adaptive", "topk")})
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert [r[1] for r in rows] == ["a, k=4", "a, k=8", "a, k=16", "label over the 3 above"]
    assert rows[0][2:] == ["+0.101", "0.001", "3", "higher FVU"] and rows[3][5] == "**holds**"


def test_probe_f1_table_is_long_and_names_targets_in_words() -> None:
    """One row per (features, probe type), one column per factor: it fits a page's column."""
    from equisae.sources.report import probe_f1_table

    probes = [
        {"sae_type": t, "factor": f, "probe_k": k, "f1": 0.5 + 0.1 * s, "model": "m", "seed": s}
        for t in ("topk", "adaptive")
        for f in ("digit", "digit_without_6_9")
        for k in ("all", "k1")
        for s in (0, 1)
    ]
    lines = probe_f1_table(
        probes, ["topk", "adaptive"], ["digit", "digit_without_6_9"], ["all", "k1"]
    ).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["features", "probe", "digit", "digit without 6 and 9"]
    assert len(lines) == 2 + 2 * 2  # header, rule, (2 feature types x 2 probe types)
    assert "digit_without_6_9" not in "\n".join(lines)
