"""Group axioms, exact actions, the regular representation and errors on bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from equisae.groups import (
    CyclicGroup,
    DihedralGroup,
    Group,
    get_group,
    group_error,
    invariant_subspace,
    irrep_character,
    irrep_dim,
    irrep_generators,
    irrep_multiplicities,
    irrep_names,
    matrix_powers,
    relation_errors,
    representation_from_irreps,
    representation_matrices,
    rotate_images,
)

GROUPS = [CyclicGroup(4), DihedralGroup(4), CyclicGroup(2), DihedralGroup(2), DihedralGroup(1)]


def _images(seed: int = 0, size: int = 7) -> torch.Tensor:
    return torch.randn(3, 2, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_group_axioms_on_image_action(group: Group) -> None:
    x = _images()
    elements = group.elements()
    assert elements[0] == 0 and len(elements) == group.order
    assert torch.equal(group.act_images(x, 0), x)  # identity
    for a, b in itertools.product(elements, elements):
        ab = group.compose(a, b)
        assert ab in elements  # closure
        expected = group.act_images(group.act_images(x, b), a)
        assert torch.equal(group.act_images(x, ab), expected)
    for a in elements:
        inv = group.inverse(a)
        assert group.compose(a, inv) == 0 and group.compose(inv, a) == 0
        assert torch.equal(group.act_images(group.act_images(x, a), inv), x)
    for a, b, c in itertools.product(elements, elements, elements):
        assert group.compose(group.compose(a, b), c) == group.compose(a, group.compose(b, c))


def test_c4_is_rot90_counter_clockwise() -> None:
    x = _images(1)
    c4 = CyclicGroup(4)
    for p in range(4):
        assert torch.equal(c4.act_images(x, p), torch.rot90(x, p, dims=(-2, -1)))
    # On screen: the top-right pixel moves to the top-left.
    img = torch.zeros(1, 1, 4, 4)
    img[0, 0, 0, 3] = 1
    assert c4.act_images(img, 1)[0, 0, 0, 0] == 1


def test_dihedral_relations() -> None:
    d4 = DihedralGroup(4)
    r, s = 1, 4
    assert d4.power(r, 4) == 0 and d4.compose(s, s) == 0
    # s r s = r^-1
    assert d4.compose(s, d4.compose(r, s)) == d4.inverse(r)
    assert not all(d4.compose(a, b) == d4.compose(b, a) for a in range(8) for b in range(8))


@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_coordinate_action_matches_image_action(group: Group) -> None:
    size = 6
    centre = (size - 1) / 2
    for row, col in [(0, 4), (1, 1), (5, 2)]:
        img = torch.zeros(1, 1, size, size)
        img[0, 0, row, col] = 1.0
        xy = torch.tensor([col - centre, centre - row])
        for a in group.elements():
            moved = group.act_images(img, a)[0, 0].nonzero()[0].tolist()
            new = group.act_coords(xy, a)
            assert torch.equal(new, torch.tensor([moved[1] - centre, centre - moved[0]]))


def test_interpolated_rotation_agrees_with_exact_quarter_turn() -> None:
    x = _images(2, size=9)
    c8 = CyclicGroup(8)
    # Element 2 of C8 is a quarter turn: exact.
    assert torch.equal(c8.act_images(x, 2), torch.rot90(x, 1, dims=(-2, -1)))
    # Interpolation at (almost) 90 degrees lands on the pixel centres: float error only.
    near = rotate_images(x, 90.0 + 1e-7)
    assert (near - torch.rot90(x, 1, dims=(-2, -1))).abs().max() < 1e-4
    # 45 degrees then 45 degrees approximates 90 degrees on a smooth image.
    grid = torch.linspace(-1, 1, 33)
    smooth = torch.exp(-(grid[None, :] ** 2 + (grid[:, None] - 0.2) ** 2) * 4)[None, None]
    twice = c8.act_images(c8.act_images(smooth, 1), 1)
    assert (twice - torch.rot90(smooth, 1, dims=(-2, -1))).abs().max() < 0.05


@pytest.mark.parametrize(
    "group", [CyclicGroup(4), CyclicGroup(5), DihedralGroup(3), DihedralGroup(4)], ids=repr
)
def test_regular_representation_satisfies_relations(group: Group) -> None:
    mats = group.regular_representation()
    assert mats.shape == (group.order, group.order, group.order)
    assert group.relation_error(mats) == 0.0
    # Permutation matrices: one 1 per row and per column.
    assert torch.equal(mats.sum(1), torch.ones(group.order, group.order))
    assert torch.equal(mats.sum(2), torch.ones(group.order, group.order))


def test_relation_error_detects_wrong_matrices() -> None:
    c4 = CyclicGroup(4)
    mats = c4.regular_representation()
    # r^-1 generates C4 too: relabelling r <-> r^3 is still a representation.
    assert c4.relation_error(mats[[0, 3, 2, 1]]) == 0.0
    wrong = mats[[0, 2, 1, 3]]  # r and r^2 exchanged
    assert c4.relation_error(wrong) > 0.5
    noisy = mats + 0.01 * torch.randn(mats.shape, generator=torch.Generator().manual_seed(0))
    assert 0 < c4.relation_error(noisy) < 0.2
    d4 = DihedralGroup(4)
    # The regular representation of C8 is not one of D4 (both have order 8).
    assert d4.relation_error(CyclicGroup(8).regular_representation()) > 0.5


def test_orbit_images_shape_and_order() -> None:
    x = _images(3)
    for group in (CyclicGroup(4), DihedralGroup(4)):
        orb = group.orbit_images(x)
        assert orb.shape == (3, group.order, *x.shape[1:])
        for a in group.elements():
            assert torch.equal(orb[:, a], group.act_images(x, a))


def test_get_group_by_name() -> None:
    assert get_group("C4") == CyclicGroup(4)
    assert get_group("d4") == DihedralGroup(4)
    assert get_group("C8").order == 8 and get_group("D3").order == 6
    with pytest.raises(KeyError, match="unknown group"):
        get_group("SO2")


def test_errors_on_bad_input() -> None:
    with pytest.raises(ValueError, match="order"):
        CyclicGroup(0)
    with pytest.raises(ValueError, match="order"):
        DihedralGroup(-2)
    with pytest.raises(ValueError, match="order"):
        get_group("C0")
    c4 = CyclicGroup(4)
    with pytest.raises(ValueError, match="out of range"):
        c4.act_images(_images(), 4)
    with pytest.raises(ValueError, match="out of range"):
        c4.compose(0, -1)
    with pytest.raises(ValueError, match="square"):
        c4.act_images(torch.zeros(1, 3, 4, 6), 1)
    assert c4.act_images(torch.zeros(1, 3, 4, 6), 2).shape == (1, 3, 4, 6)  # 180 is fine
    with pytest.raises(ValueError, match="C, H, W"):
        c4.act_images(torch.zeros(4, 4), 1)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        c4.act_coords(torch.zeros(3, 3), 1)
    with pytest.raises(ValueError, match="shape"):
        c4.relation_error(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="N, C, H, W"):
        c4.orbit_images(torch.zeros(3, 4, 4))


# ---------------------------------------------------------------------- matrix representations
def test_matrix_powers_and_representation_from_generators() -> None:
    rot = irrep_generators("C4", "rotation_1")["r"]
    powers = matrix_powers(rot, 4)
    assert powers.shape == (4, 2, 2) and torch.equal(powers[0], torch.eye(2, dtype=torch.float64))
    assert torch.allclose(powers[3], torch.linalg.matrix_power(rot, 3))
    assert torch.equal(representation_matrices(CyclicGroup(4), {"r": rot}), powers)
    with pytest.raises(ValueError, match="square"):
        matrix_powers(torch.zeros(2, 3), 4)
    with pytest.raises(KeyError, match=r"D4 needs generator matrices \['r', 's'\]"):
        representation_matrices(DihedralGroup(4), {"r": rot})


@pytest.mark.parametrize(
    "group", [CyclicGroup(4), CyclicGroup(5), DihedralGroup(3), DihedralGroup(4)], ids=repr
)
def test_irreps_are_representations_with_orthonormal_characters(group: Group) -> None:
    names = irrep_names(group)
    dims = [irrep_dim(group, name) for name in names]
    if isinstance(group, DihedralGroup):  # sum of squared dimensions = |G|
        assert sum(d * d for d in dims) == group.order
    chars = []
    for name in names:
        mats = representation_matrices(group, irrep_generators(group, name))
        assert group.relation_error(mats) < 1e-12
        chi = irrep_character(group, name)
        assert torch.allclose(torch.stack([m.trace() for m in mats]), chi, atol=1e-12)
        chars.append(chi)
        found = irrep_multiplicities(group, mats)
        assert found == {k: pytest.approx(float(k == name), abs=1e-12) for k in names}
    chars = torch.stack(chars)
    gram = chars @ chars.T / group.order  # 1 (absolutely irreducible) or 2 (C_n rotation_k)
    assert torch.allclose(gram, torch.diag(gram.diagonal()), atol=1e-12)


def test_d4_irreps_and_the_coordinate_action() -> None:
    d4 = DihedralGroup(4)
    assert irrep_names(d4) == ["trivial", "flip", "sign", "sign_flip", "rotation_1"]
    assert irrep_names("C4") == irrep_names(4) == ["trivial", "sign", "rotation_1"]
    # rotation_1 of D4 is exactly how centred coordinates move under act_coords.
    mats = representation_matrices(d4, irrep_generators(d4, "rotation_1"))
    xy = torch.tensor([[1.0, 2.0], [-0.5, 3.0]], dtype=torch.float64)
    for a in d4.elements():
        assert torch.allclose(d4.act_coords(xy, a), xy @ mats[a].T)
    with pytest.raises(KeyError, match="unknown irrep 'sign' of D3"):
        irrep_generators("D3", "sign")


def test_planted_d4_representation_recovers_multiplicities_and_relations() -> None:
    d4 = get_group("D4")
    mult = {"rotation_1": 2, "trivial": 1, "flip": 3, "sign_flip": 1}
    gens, q, labels = representation_from_irreps(d4, mult, seed=3)
    assert gens["r"].shape == (9, 9) and len(labels) == 9 and labels[:4] == ["rotation_1"] * 4
    assert torch.allclose(q @ q.T, torch.eye(9, dtype=torch.float64), atol=1e-12)
    mats = representation_matrices(d4, gens)
    assert d4.relation_error(mats) < 1e-6
    assert max(relation_errors(d4, gens).values()) < 1e-12
    raw = irrep_multiplicities(d4, mats)
    assert raw == {k: pytest.approx(mult.get(k, 0), abs=1e-10) for k in irrep_names(d4)}
    assert invariant_subspace(mats).shape == (9, 1)  # one trivial irrep
    # Breaking one relation is seen by that relation.
    bent = {"r": gens["r"], "s": gens["s"] @ gens["r"] @ gens["r"] @ gens["r"]}
    errors = relation_errors(d4, {"r": gens["r"], "s": 1.1 * gens["s"]})
    assert errors["r^4"] < 1e-12 and errors["s^2"] > 0.1 and errors["(sr)^2"] > 0.1
    assert group_error(d4, bent) < 1e-12  # r^3 s is another reflection: still D4
    assert group_error(d4, {"r": gens["r"], "s": gens["r"]}) > 0.5


def test_group_error_is_the_relative_cyclic_relation() -> None:
    rot = representation_from_irreps(4, {"rotation_1": 2, "sign": 1}, seed=0)[0]["r"]
    assert group_error("C4", rot) < 1e-12
    assert group_error("C2", rot) == pytest.approx(
        float(torch.linalg.matrix_norm(rot @ rot - torch.eye(5, dtype=torch.float64)) / 5**0.5)
    )
    variances = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    weighted = relation_errors("C2", rot, variances)["r^2"]
    assert 0 < weighted < 10
    with pytest.raises(ValueError, match="variances"):
        relation_errors("C2", rot, torch.ones(3))
    with pytest.raises(KeyError, match="C4 needs generator matrices"):
        group_error("C4", {"r": rot, "s": rot})
    with pytest.raises(KeyError, match="unknown irreps"):
        representation_from_irreps("D4", {"rotation_2": 1})
    with pytest.raises(ValueError, match=">= 0"):
        representation_from_irreps("D4", {"flip": -1})
    with pytest.raises(ValueError, match="group must be"):
        irrep_names(2.5)  # type: ignore[arg-type]
