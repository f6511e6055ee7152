"""Finite rotation groups C_n and D_n: composition, actions on images and coordinates.

Elements are integers ``0 .. order-1`` with ``0`` the identity.

* ``CyclicGroup(n)``: element ``p`` is the counter-clockwise rotation by ``360 * p / n`` degrees.
* ``DihedralGroup(n)``: element ``e < n`` is the rotation ``r^e``; element ``e >= n`` is
  ``r^(e-n) s``, where ``s`` is the horizontal flip (``x -> -x``, i.e. ``torch.flip`` on the
  width axis). ``r^k s`` acts by flipping first, then rotating.

Rotations by multiples of 90 degrees are exact (``torch.rot90``, counter-clockwise on screen);
other angles are bilinear interpolation through ``affine_grid``/``grid_sample`` (zero padding),
hence only approximately invertible.

Coordinates are centred on the image centre: ``x = col - (W-1)/2`` (right) and
``y = (H-1)/2 - row`` (up), so a 90-degree rotation maps pixel centres to pixel centres.
"""

from __future__ import annotations

import math
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Group",
    "CyclicGroup",
    "DihedralGroup",
    "generator_names",
    "get_group",
    "matrix_powers",
    "representation_matrices",
    "rotate_coords",
    "rotate_images",
]


def _check_order(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"group order n must be an int >= 1, got {n!r}")
    if n < 1:
        raise ValueError(f"group order n must be >= 1, got {n}")
    return n


def _quarter_turns(angle_deg: float) -> int | None:
    """The number of exact quarter turns in ``angle_deg`` (mod 4), or None if not a multiple."""
    q = angle_deg / 90.0
    k = round(q)
    return k % 4 if abs(q - k) < 1e-9 else None


def rotate_images(x: Tensor, angle_deg: float) -> Tensor:
    """Rotate ``x`` (..., C, H, W) counter-clockwise by ``angle_deg`` degrees.

    Multiples of 90 degrees use ``torch.rot90`` (exact, no interpolation); any other angle is
    bilinear interpolation with zero padding (``grid_sample``, ``align_corners=False``).
    """
    if x.ndim < 3:
        raise ValueError(f"images must have shape (..., C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2], x.shape[-1]
    k = _quarter_turns(angle_deg)
    if k == 0:
        return x.clone()
    if k == 2:
        return torch.rot90(x, 2, dims=(-2, -1))
    if h != w:
        raise ValueError(f"rotation by {angle_deg} degrees needs square images, got H={h}, W={w}")
    if k is not None:
        return torch.rot90(x, k, dims=(-2, -1))
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    if not flat.is_floating_point():
        raise ValueError(f"interpolated rotation needs floating-point images, got {x.dtype}")
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    # Output pixel q samples the input at R^{-1} q; grid y points down, hence the sign pattern.
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=flat.dtype, device=flat.device)
    theta = theta.expand(flat.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(*lead, *out.shape[-3:])


def rotate_coords(xy: Tensor, angle_deg: float) -> Tensor:
    """Rotate centred coordinates ``xy`` (..., 2) counter-clockwise by ``angle_deg`` degrees.

    Quarter turns are exact sign changes and swaps (no trigonometry round-off).
    """
    if xy.ndim < 1 or xy.shape[-1] != 2:
        raise ValueError(f"coordinates must have shape (..., 2), got shape {tuple(xy.shape)}")
    x, y = xy[..., 0], xy[..., 1]
    k = _quarter_turns(angle_deg)
    if k is not None:
        for _ in range(k):
            x, y = -y, x
        return torch.stack([x, y], dim=-1)
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    return torch.stack([c * x - s * y, s * x + c * y], dim=-1)


class Group(ABC):
    """A finite group acting on images by rotations (and flips)."""

    name: str
    order: int
    n: int

    def elements(self) -> list[int]:
        """All elements ``0 .. order-1``; ``0`` is the identity."""
        return list(range(self.order))

    def check_element(self, a: int) -> int:
        """Return ``a`` if it is an element of the group, else raise ValueError."""
        if isinstance(a, bool):
            raise ValueError(f"group element must be an int, got {a!r}")
        try:
            a = operator.index(a)
        except TypeError:
            raise ValueError(f"group element must be an int, got {a!r}") from None
        if not 0 <= a < self.order:
            raise ValueError(
                f"group element {a} out of range for {self.name}: expected 0..{self.order - 1}"
            )
        return a

    @abstractmethod
    def compose(self, a: int, b: int) -> int:
        """``a`` after ``b``: ``act(act(x, b), a) == act(x, compose(a, b))``."""

    def inverse(self, a: int) -> int:
        """The element ``b`` with ``compose(a, b) == 0``."""
        a = self.check_element(a)
        for b in self.elements():
            if self.compose(a, b) == 0:
                return b
        raise AssertionError(f"{self.name}: element {a} has no inverse")  # pragma: no cover

    @abstractmethod
    def rotation_angle(self, a: int) -> float:
        """The rotation part of ``a`` in degrees (counter-clockwise)."""

    @abstractmethod
    def is_reflection(self, a: int) -> bool:
        """Whether ``a`` contains the flip ``s``."""

    def power(self, a: int, p: int) -> int:
        """``a`` composed with itself ``p`` times (``p`` may be negative)."""
        a = self.check_element(a)
        if p < 0:
            a, p = self.inverse(a), -p
        out = 0
        for _ in range(p):
            out = self.compose(a, out)
        return out

    def cayley_table(self) -> Tensor:
        """``table[a, b] = compose(a, b)`` as an (order, order) int64 tensor."""
        return torch.tensor(
            [[self.compose(a, b) for b in self.elements()] for a in self.elements()]
        )

    def act_images(self, x: Tensor, a: int) -> Tensor:
        """Act with ``a`` on images (..., C, H, W): flip (if a reflection), then rotate."""
        a = self.check_element(a)
        if x.ndim < 3:
            raise ValueError(f"images must have shape (..., C, H, W), got shape {tuple(x.shape)}")
        if self.is_reflection(a):
            x = torch.flip(x, dims=(-1,))
        return rotate_images(x, self.rotation_angle(a))

    def act_coords(self, xy: Tensor, a: int) -> Tensor:
        """Where the point at centred coordinates ``xy`` (..., 2) goes under ``a``."""
        a = self.check_element(a)
        if xy.ndim < 1 or xy.shape[-1] != 2:
            raise ValueError(f"coordinates must have shape (..., 2), got shape {tuple(xy.shape)}")
        if self.is_reflection(a):
            xy = torch.stack([-xy[..., 0], xy[..., 1]], dim=-1)
        return rotate_coords(xy, self.rotation_angle(a))

    def orbit_images(self, x: Tensor) -> Tensor:
        """All transforms of a batch: (N, C, H, W) -> (N, order, C, H, W), pose ``p`` on axis 1."""
        if x.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got shape {tuple(x.shape)}")
        return torch.stack([self.act_images(x, a) for a in self.elements()], dim=1)

    def regular_representation(self) -> Tensor:
        """Permutation matrices ``P[a]`` (order, order, order) with ``P[a] e_b = e_{compose(a,b)}``."""
        mats = torch.zeros(self.order, self.order, self.order)
        for a in self.elements():
            for b in self.elements():
                mats[a, self.compose(a, b), b] = 1.0
        return mats

    def relation_error(self, mats: Tensor) -> float:
        """Max absolute deviation of ``mats`` (order, d, d) from a representation of the group.

        Checks ``mats[0] == I`` and ``mats[a] @ mats[b] == mats[compose(a, b)]`` for all pairs.
        """
        if mats.ndim != 3 or mats.shape[0] != self.order or mats.shape[1] != mats.shape[2]:
            raise ValueError(
                f"mats must have shape (order={self.order}, d, d), got shape {tuple(mats.shape)}"
            )
        mats = mats.to(torch.float64)
        eye = torch.eye(mats.shape[1], dtype=mats.dtype)
        err = (mats[0] - eye).abs().max()
        table = self.cayley_table()
        products = torch.einsum("aij,bjk->abik", mats, mats)
        err = torch.maximum(err, (products - mats[table]).abs().max())
        return float(err)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.n == other.n  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.n))


class CyclicGroup(Group):
    """C_n: rotations by multiples of 360/n degrees; element ``p`` is ``r^p``."""

    def __init__(self, n: int) -> None:
        self.n = _check_order(n)
        self.order = self.n
        self.name = f"C{self.n}"

    def compose(self, a: int, b: int) -> int:
        """``a`` after ``b``: ``(a + b) mod n``."""
        return (self.check_element(a) + self.check_element(b)) % self.n

    def inverse(self, a: int) -> int:
        """``(-a) mod n``."""
        return (-self.check_element(a)) % self.n

    def rotation_angle(self, a: int) -> float:
        """``360 * a / n`` degrees."""
        return 360.0 * self.check_element(a) / self.n

    def is_reflection(self, a: int) -> bool:
        """Never: C_n has no flips."""
        self.check_element(a)
        return False


class DihedralGroup(Group):
    """D_n (order 2n): element ``e < n`` is ``r^e``; element ``n + k`` is ``r^k s``."""

    def __init__(self, n: int) -> None:
        self.n = _check_order(n)
        self.order = 2 * self.n
        self.name = f"D{self.n}"

    def _split(self, a: int) -> tuple[int, int]:
        a = self.check_element(a)
        return a % self.n, a // self.n

    def _join(self, k: int, m: int) -> int:
        return (k % self.n) + self.n * (m % 2)

    def compose(self, a: int, b: int) -> int:
        """``(r^i s^m)(r^j s^t) = r^(i + (-1)^m j) s^(m + t)``."""
        i, m = self._split(a)
        j, t = self._split(b)
        return self._join(i + (-j if m else j), m + t)

    def inverse(self, a: int) -> int:
        """Rotations invert to ``r^-k``; every reflection is its own inverse."""
        k, m = self._split(a)
        return a if m else self._join(-k, 0)

    def rotation_angle(self, a: int) -> float:
        """The angle of the rotation part ``r^k`` in degrees."""
        return 360.0 * self._split(a)[0] / self.n

    def is_reflection(self, a: int) -> bool:
        """Whether ``a = r^k s`` for some ``k``."""
        return self._split(a)[1] == 1


_NAME = re.compile(r"^([CD])(\d+)$")


# --------------------------------------------------------------------------- matrix representations
def matrix_powers(mat: Tensor, n: int) -> Tensor:
    """``mat^p`` for ``p = 0 .. n-1`` stacked as ``(n, d, d)`` (differentiable in ``mat``)."""
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {tuple(mat.shape)}")
    _check_order(n)
    out = [torch.eye(mat.shape[0], dtype=mat.dtype, device=mat.device)]
    for _ in range(1, n):
        out.append(out[-1] @ mat)
    return torch.stack(out)


def generator_names(group: Group) -> tuple[str, ...]:
    """The generators a matrix representation of ``group`` is given by: ``("r",)`` for C_n,
    ``("r", "s")`` for D_n (rotation by 360/n degrees and the horizontal flip)."""
    return ("r", "s") if isinstance(group, DihedralGroup) else ("r",)


def representation_matrices(group: Group, generators: Mapping[str, Tensor]) -> Tensor:
    """``rho(a)`` for every element ``a`` of ``group``, built from generator matrices.

    ``generators`` maps each name of :func:`generator_names` to a (d, d) matrix: ``"r"`` the
    rotation, ``"s"`` the flip of D_n. Element ``e < n`` is ``r^e``; element ``n + k`` of D_n is
    ``r^k s`` (the numbering of :class:`DihedralGroup`). Returns (order, d, d), differentiable
    in the generators. Exact only if the generators satisfy the relations (``r^n = s^2 = I``,
    ``s r s = r^-1``); :meth:`Group.relation_error` measures the gap.
    """
    names = generator_names(group)
    missing = [name for name in names if name not in generators]
    extra = sorted(set(generators) - set(names))
    if missing or extra:
        raise KeyError(
            f"{group.name} needs generator matrices {list(names)}, got {sorted(generators)}"
        )
    rot = generators["r"]
    n = group.order if isinstance(group, CyclicGroup) else group.n
    powers = matrix_powers(rot, n)
    if "s" not in names:
        return powers
    flip = generators["s"]
    if flip.shape != rot.shape:
        raise ValueError(
            f"generator 's' must have the shape of 'r' {tuple(rot.shape)}, got {tuple(flip.shape)}"
        )
    return torch.cat([powers, powers @ flip])


def get_group(name: str) -> Group:
    """A group by name: ``"C4"``, ``"D4"``, ``"C8"``, ... (case-insensitive)."""
    if not isinstance(name, str):
        raise KeyError(f"group name must be a string like 'C4' or 'D4', got {name!r}")
    match = _NAME.match(name.strip().upper())
    if match is None:
        raise KeyError(f"unknown group {name!r}: expected 'C<n>' or 'D<n>', e.g. 'C4' or 'D4'")
    kind, n = match.group(1), int(match.group(2))
    return CyclicGroup(n) if kind == "C" else DihedralGroup(n)
