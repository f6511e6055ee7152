"""Group axioms, exact actions, the regular representation and errors on bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from equisae.groups import CyclicGroup, DihedralGroup, Group, get_group, rotate_images

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
