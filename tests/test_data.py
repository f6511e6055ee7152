"""The Shapes data: exact equivariance of rendering, orbits, determinism, splits, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from equisae import data
from equisae.data import (
    EQUIVARIANT_FACTORS,
    FACTOR_CLASSES,
    INVARIANT_FACTORS,
    SHAPE_SYMMETRY,
    SHAPES,
    ShapesConfig,
    dataset_sizes,
    make_shapes,
    make_splits,
    orbit,
    render,
    standard_config,
    transform_factors,
)
from equisae.groups import CyclicGroup, DihedralGroup

NOISY = ShapesConfig(background_noise=0.05, orientation_cue=True, random_mirror=True)


@pytest.fixture(scope="module")
def noisy_ds() -> data.ShapesDataset:
    return make_shapes(200, NOISY, seed=11)


@pytest.mark.parametrize("group", [CyclicGroup(4), DihedralGroup(4)], ids=repr)
def test_render_of_transformed_factors_equals_transformed_render(noisy_ds, group) -> None:
    """render(g f) == g render(f) on every pixel, background noise and cue included."""
    for a in group.elements():
        moved = group.act_images(noisy_ds.images, a)
        factors = transform_factors(noisy_ds.factors, group, a)
        noise = group.act_images(noisy_ds.noise, a)
        rendered = render(factors, NOISY, noise)
        assert (rendered - moved).abs().max() <= 1e-5
    per_element = data.equivariance_errors(noisy_ds.subset(slice(0, 100)), group, batch_size=64)
    assert per_element.shape == (group.order,) and (per_element <= 1e-5).all()


def test_equivariance_check_is_sensitive(noisy_ds) -> None:
    """Untransformed factors, or a wrong orientation, do not reproduce the rotated image."""
    c4 = CyclicGroup(4)
    moved = c4.act_images(noisy_ds.images, 1)
    noise = c4.act_images(noisy_ds.noise, 1)
    assert (render(noisy_ds.factors, NOISY, noise) - moved).abs().max() > 0.5
    factors = transform_factors(noisy_ds.factors, c4, 1)
    oriented = factors["orientation"] >= 0
    factors["orientation"] = torch.where(oriented, (factors["orientation"] + 1) % 4, -1)
    diff = (render(factors, NOISY, noise) - moved).abs().amax(dim=(1, 2, 3))
    assert (diff[oriented] > 0.3).all() and (diff[~oriented] == 0).all()


def test_equivariance_at_other_image_sizes() -> None:
    for size in (17, 24):
        cfg = ShapesConfig(image_size=size, orientation_cue=True)
        ds = make_shapes(64, cfg, seed=size)
        assert ds.images.shape == (64, 3, size, size)
        assert data.equivariance_error(ds, "D4") <= 1e-5


def test_orbit_shapes_and_factor_transport(noisy_ds) -> None:
    orb = orbit(noisy_ds, "C4")
    n = len(noisy_ds)
    assert orb.images.shape == (n, 4, 3, 32, 32)
    assert orb.poses.shape == (n, 4) and torch.equal(orb.poses[0], torch.arange(4))
    assert orb.group_name == "C4" and orb.order == 4
    assert torch.equal(orb.images[:, 0], noisy_ds.images)
    for name in INVARIANT_FACTORS + ("mirror",):
        assert torch.equal(orb.factors[name], noisy_ds.factors[name][:, None].expand(n, 4))
    # A quarter turn moves the quadrant on by one.
    q0 = noisy_ds.factors["quadrant"]
    for p in range(4):
        assert torch.equal(orb.factors["quadrant"][:, p], (q0 + p) % 4)
        assert torch.equal(orb.factors["cue"][:, p], torch.full((n,), p))
    # Orientation moves on by one for oriented shapes and stays -1 for C4-symmetric ones.
    o0 = noisy_ds.factors["orientation"]
    symmetric = o0 == -1
    expected_symmetric = torch.tensor([SHAPE_SYMMETRY[s] == "full" for s in SHAPES])
    assert torch.equal(symmetric, expected_symmetric[noisy_ds.factors["shape"]])
    for p in range(4):
        op = orb.factors["orientation"][:, p]
        assert (op[symmetric] == -1).all()
        assert torch.equal(op[~symmetric], (o0[~symmetric] + p) % 4)
    flat = orb.flat_factors()
    assert flat["pose"].shape == (4 * n,) and orb.flat_images().shape == (4 * n, 3, 32, 32)


def test_flip_changes_chirality_only_for_the_L(noisy_ds) -> None:
    orb = orbit(noisy_ds, "D4")
    mirror = orb.factors["mirror"]
    is_l = noisy_ds.factors["shape"] == SHAPES.index("L")
    assert (mirror[~is_l] == -1).all()
    assert torch.equal(mirror[is_l, 4], 1 - mirror[is_l, 0])  # the flip s
    assert torch.equal(mirror[is_l, 1], mirror[is_l, 0])  # a rotation


def test_non_d4_group_is_refused(noisy_ds) -> None:
    with pytest.raises(ValueError, match="90-degree"):
        orbit(noisy_ds, CyclicGroup(8))


def test_determinism_and_seed_dependence() -> None:
    cfg = standard_config()
    a, b = make_shapes(200, cfg, seed=5), make_shapes(200, cfg, seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.noise, b.noise)
    assert all(torch.equal(a.factors[k], b.factors[k]) for k in a.factors)
    c = make_shapes(200, cfg, seed=6)
    assert not torch.equal(a.images, c.images)


def test_rendering_does_not_depend_on_thread_count() -> None:
    cfg = standard_config()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = make_shapes(300, cfg, seed=9)
        torch.set_num_threads(2)
        two = make_shapes(300, cfg, seed=9)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.images, two.images)


def test_splits_are_disjoint_reproducible_draws() -> None:
    sizes = {"train": 300, "val": 100, "test": 100}
    cfg = standard_config()
    splits = make_splits(sizes, cfg, seed=0)
    assert {k: len(v) for k, v in splits.items()} == sizes
    flat = {k: v.images.reshape(len(v), -1) for k, v in splits.items()}
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        # No image of one split appears in another.
        assert torch.cdist(flat[a], flat[b]).min() > 1e-3
    again = make_splits({"val": 100}, cfg, seed=0)
    assert torch.equal(again["val"].images, splits["val"].images)  # independent of other sizes
    other = make_splits(sizes, cfg, seed=1)
    assert not torch.equal(other["train"].images, splits["train"].images)


def test_factors_are_balanced_and_in_range() -> None:
    cfg = dataclasses.replace(standard_config(), representative="random")
    factors = data.sample_factors(4000, cfg, torch.Generator().manual_seed(2))
    for name in INVARIANT_FACTORS + EQUIVARIANT_FACTORS:
        values = factors[name]
        valid = values[values >= 0]
        counts = torch.bincount(valid, minlength=FACTOR_CLASSES[name])
        assert counts.numel() == FACTOR_CLASSES[name]
        expected = valid.numel() / FACTOR_CLASSES[name]
        assert (counts - expected).abs().max() < 0.2 * expected, (name, counts)
    assert len(SHAPES) >= 6
    x, y = factors["x"], factors["y"]
    assert (x.abs() >= 0.5).all() and (y.abs() >= 0.5).all()
    ds = make_shapes(200, standard_config(), seed=2)
    assert (ds.images >= 0).all() and (ds.images <= 1).all()


def test_cue_and_noise_are_visible() -> None:
    plain = make_shapes(50, ShapesConfig(), seed=3)
    cued = make_shapes(50, ShapesConfig(orientation_cue=True), seed=3)
    # Same factors except the cue; the ground line lights up the bottom row only.
    assert (plain.factors["cue"] == -1).all() and (cued.factors["cue"] == 0).all()
    bottom = (cued.images - plain.images)[:, :, -1].abs().mean()
    top = (cued.images - plain.images)[:, :, 0].abs().mean()
    assert bottom > 0.2 and top == 0
    noisy = make_shapes(50, ShapesConfig(background_noise=0.05), seed=3)
    assert noisy.noise is not None and plain.noise is None
    assert 0 < (noisy.images - plain.images).abs().max() < 0.5


def test_every_shape_differs_from_its_quarter_turn_iff_oriented() -> None:
    cfg = ShapesConfig(image_size=32)
    n = len(SHAPES)
    factors = {
        "shape": torch.arange(n),
        "colour": torch.zeros(n, dtype=torch.int64),
        "scale": torch.full((n,), 2),
        "quadrant": torch.zeros(n, dtype=torch.int64),
        "orientation": torch.tensor([0 if SHAPE_SYMMETRY[s] != "full" else -1 for s in SHAPES]),
        "mirror": torch.tensor([0 if SHAPE_SYMMETRY[s] == "none" else -1 for s in SHAPES]),
        "cue": torch.full((n,), -1),
        "x": torch.zeros(n),
        "y": torch.zeros(n),
    }
    images = render(factors, cfg)
    turned = torch.rot90(images, 1, dims=(-2, -1))
    changes = (images - turned).abs().amax(dim=(1, 2, 3))
    for i, name in enumerate(SHAPES):
        assert (changes[i] > 0.5) == (SHAPE_SYMMETRY[name] != "full"), name
        assert images[i].amax() > 0.5  # the shape is drawn


def test_dataset_sizes() -> None:
    quick, full = dataset_sizes("quick"), dataset_sizes("full")
    assert set(quick) == set(full) == {"train", "val", "test"}
    assert all(quick[k] < full[k] for k in quick)
    with pytest.raises(ValueError, match="mode"):
        dataset_sizes("huge")


def test_errors_on_bad_input(noisy_ds) -> None:
    with pytest.raises(ValueError, match="image_size"):
        ShapesConfig(image_size=4)
    with pytest.raises(ValueError, match="background_noise"):
        ShapesConfig(background_noise=-1.0)
    with pytest.raises(ValueError, match="n must be"):
        make_shapes(0, standard_config(), seed=0)
    with pytest.raises(ValueError, match="ShapesConfig"):
        make_shapes(5, {"image_size": 32}, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sizes"):
        make_splits({}, standard_config(), seed=0)
    with pytest.raises(ValueError, match=r"sizes\['val'\]"):
        make_splits({"train": 10, "val": 0}, standard_config(), seed=0)
    with pytest.raises(ValueError, match="seed"):
        make_shapes(5, standard_config(), seed=-1)
    factors = dict(noisy_ds.factors)
    del factors["colour"]
    with pytest.raises(KeyError, match="colour"):
        render(factors, NOISY)
    bad = dict(noisy_ds.factors, shape=noisy_ds.factors["shape"] + len(SHAPES))
    with pytest.raises(ValueError, match="shape"):
        render(bad, NOISY)
    with pytest.raises(ValueError, match="noise"):
        render(noisy_ds.factors, NOISY, torch.zeros(3, 1, 32, 32))
    with pytest.raises(KeyError, match="unknown group"):
        orbit(noisy_ds, "SO3")
    with pytest.raises(KeyError, match="unknown factor"):
        data.valid_mask(noisy_ds.factors, "size")
    assert dataclasses.is_dataclass(standard_config())


# ------------------------------------------------------------------------------------------
# The representative setting: fixed (orientation 0, the default) or random


def test_fixed_representative_is_the_default_and_draws_orientation_zero() -> None:
    assert ShapesConfig().representative == "fixed"
    assert standard_config().representative == "fixed"
    ds = make_shapes(300, NOISY, seed=4)
    symmetric = torch.tensor([SHAPE_SYMMETRY[SHAPES[i]] == "full" for i in ds.factors["shape"]])
    orientation = ds.factors["orientation"]
    assert (orientation[symmetric] == -1).all()
    assert (orientation[~symmetric] == 0).all() and (~symmetric).sum() > 100
    # Rendering the factors with orientation 0 reproduces the generated images exactly.
    assert torch.equal(render(ds.factors, NOISY, ds.noise), ds.images)


def test_random_representative_is_unchanged_bit_for_bit() -> None:
    """The random representative keeps the old sampler: the same RNG draws in the same order."""
    cfg = dataclasses.replace(NOISY, representative="random")
    gen = torch.Generator().manual_seed(5)
    n = 400
    shape = torch.randint(len(SHAPES), (n,), generator=gen)
    for classes in (len(data.COLOURS), len(data.SCALE_FRACTIONS), 4):  # colour, scale, quadrant
        torch.randint(classes, (n,), generator=gen)
    rot = torch.randint(4, (n,), generator=gen)
    factors = data.sample_factors(n, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(factors["shape"], shape)
    oriented = factors["orientation"] >= 0
    assert torch.equal(factors["orientation"][oriented], rot[oriented])
    assert len(torch.unique(factors["orientation"][oriented])) == 4
    # Fixed and random differ only in the orientation (same draws for every other factor) ...
    fixed = data.sample_factors(n, NOISY, torch.Generator().manual_seed(5))
    for name in data.FACTOR_NAMES:
        if name != "orientation":
            assert torch.equal(fixed[name], factors[name]), name
    # ... and both are deterministic under the seed.
    a, b = make_shapes(50, cfg, seed=9), make_shapes(50, cfg, seed=9)
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize("group", [CyclicGroup(4), DihedralGroup(4)], ids=repr)
def test_fixed_representative_orbit_pose_is_the_orientation(group) -> None:
    ds = make_shapes(120, NOISY, seed=6)
    orb = orbit(ds, group)
    for a in group.elements():
        k, flip = data._as_d4(group, a)
        expected = transform_factors(ds.factors, group, a)
        for name in data.FACTOR_NAMES:
            assert torch.equal(orb.factors[name][:, a], expected[name]), (name, a)
        oriented = orb.factors["orientation"][:, a] >= 0
        if not flip:  # a pure rotation by k quarter turns: orientation == k == cue
            assert (orb.factors["orientation"][:, a][oriented] == k).all()
            assert (orb.factors["cue"][:, a] == k).all()
    # Rendering the orbit's factors reproduces the orbit's images (equivariance stays exact).
    assert data.equivariance_error(ds, group) < 1e-5


def test_bad_representative() -> None:
    with pytest.raises(ValueError, match="representative must be one of"):
        ShapesConfig(representative="canonical")
