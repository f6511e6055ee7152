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

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Group",
    "CyclicGroup",
    "DihedralGroup",
    "as_group",
    "generator_names",
    "get_group",
    "group_error",
    "invariant_subspace",
    "irrep_character",
    "irrep_dim",
    "irrep_generators",
    "irrep_multiplicities",
    "irrep_names",
    "matrix_powers",
    "random_orthogonal",
    "relation_errors",
    "relations",
    "representation_from_irreps",
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
    """``mat^p`` for ``p = 0 .. n-1`` of a (..., d, d) stack of square matrices, as
    ``(..., n, d, d)`` (differentiable in ``mat``)."""
    if mat.ndim < 2 or mat.shape[-1] != mat.shape[-2]:
        raise ValueError(f"expected a (stack of) square matrices, got shape {tuple(mat.shape)}")
    _check_order(n)
    out = [torch.eye(mat.shape[-1], dtype=mat.dtype, device=mat.device).expand_as(mat)]
    for _ in range(1, n):
        out.append(out[-1] @ mat)
    return torch.stack(out, dim=-3)


def generator_names(group: Group) -> tuple[str, ...]:
    """The generators a matrix representation of ``group`` is given by: ``("r",)`` for C_n,
    ``("r", "s")`` for D_n (rotation by 360/n degrees and the horizontal flip)."""
    return ("r", "s") if isinstance(group, DihedralGroup) else ("r",)


def representation_matrices(group: Group, generators: Mapping[str, Tensor]) -> Tensor:
    """``rho(a)`` for every element ``a`` of ``group``, built from generator matrices.

    ``generators`` maps each name of :func:`generator_names` to a (d, d) matrix (or a (..., d, d)
    stack of them, one per model of a stack): ``"r"`` the rotation, ``"s"`` the flip of D_n.
    Element ``e < n`` is ``r^e``; element ``n + k`` of D_n is ``r^k s`` (the numbering of
    :class:`DihedralGroup`). Returns (..., order, d, d), differentiable in the generators. Exact only if the generators satisfy the relations (``r^n = s^2 = I``,
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
    return torch.cat([powers, powers @ (flip if flip.ndim == 2 else flip.unsqueeze(-3))], dim=-3)


def get_group(name: str) -> Group:
    """A group by name: ``"C4"``, ``"D4"``, ``"C8"``, ... (case-insensitive)."""
    if not isinstance(name, str):
        raise KeyError(f"group name must be a string like 'C4' or 'D4', got {name!r}")
    match = _NAME.match(name.strip().upper())
    if match is None:
        raise KeyError(f"unknown group {name!r}: expected 'C<n>' or 'D<n>', e.g. 'C4' or 'D4'")
    kind, n = match.group(1), int(match.group(2))
    return CyclicGroup(n) if kind == "C" else DihedralGroup(n)


# --------------------------------------------------------------------------- irreducible representations
def as_group(group: Group | str | int) -> Group:
    """``group`` itself, a group by name (``"C4"``, ``"D4"``), or ``C_n`` for an int ``n``."""
    if isinstance(group, Group):
        return group
    if isinstance(group, str):
        return get_group(group)
    if isinstance(group, bool) or not isinstance(group, int):
        raise ValueError(
            f"group must be a Group, a name like 'D4' or an int n (C_n), got {group!r}"
        )
    return CyclicGroup(_check_order(group))


def irrep_names(group: Group | str | int) -> list[str]:
    """Names of the real irreducible representations of ``group`` (an int ``n`` means C_n).

    C_n: ``trivial``; ``sign`` (n even: r -> -1); ``rotation_k`` for ``0 < k < n/2`` (2-d,
    r -> rotation by ``2 pi k / n``). D_n adds the flip s: ``trivial`` and ``flip``
    (r -> 1, s -> +-1); for even n ``sign`` and ``sign_flip`` (r -> -1, s -> +-1); and
    ``rotation_k`` (2-d, s -> ``diag(-1, 1)``, the horizontal flip of the plane). Each D_n irrep
    restricts to the C_n irrep with the same prefix.
    """
    group = as_group(group)
    n, dihedral = group.n, isinstance(group, DihedralGroup)
    names = ["trivial", "flip"] if dihedral else ["trivial"]
    if n % 2 == 0:
        names += ["sign", "sign_flip"] if dihedral else ["sign"]
    return names + [f"rotation_{k}" for k in range(1, (n + 1) // 2)]


def _irrep_parts(group: Group, name: str) -> tuple[int, int]:
    """(frequency k of the rotation part, flip sign) of irrep ``name``; KeyError if unknown."""
    names = irrep_names(group)
    if name not in names:
        raise KeyError(f"unknown irrep {name!r} of {group.name}; known: {names}")
    if name.startswith("rotation_"):
        return int(name.split("_")[1]), 0
    k = group.n // 2 if name.startswith("sign") else 0
    return k, -1 if name.endswith("flip") else 1


def irrep_dim(group: Group | str | int, name: str) -> int:
    """The dimension (1 or 2) of irrep ``name`` of ``group``."""
    return 2 if _irrep_parts(as_group(group), name)[1] == 0 else 1


def irrep_generators(group: Group | str | int, name: str) -> dict[str, Tensor]:
    """The float64 generator matrices (``"r"``, and ``"s"`` for D_n) of irrep ``name``."""
    group = as_group(group)
    k, flip = _irrep_parts(group, name)
    if flip == 0:
        t = 2 * math.pi * k / group.n
        r = torch.tensor(
            [[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=torch.float64
        )
        s = torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    else:
        r = -torch.ones(1, 1, dtype=torch.float64) if k else torch.ones(1, 1, dtype=torch.float64)
        s = float(flip) * torch.ones(1, 1, dtype=torch.float64)
    return {"r": r, "s": s} if isinstance(group, DihedralGroup) else {"r": r}


def irrep_character(group: Group | str | int, name: str) -> Tensor:
    """The character ``tr rho(a)`` of irrep ``name`` for every element ``a``, (order,) float64."""
    group = as_group(group)
    k, flip = _irrep_parts(group, name)
    p = torch.arange(group.n, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * k * p / group.n)
    chi = 2 * wave if flip == 0 else wave
    if isinstance(group, DihedralGroup):  # r^p s: trace 0 for 2-d irreps, flip * r-part for 1-d
        chi = torch.cat([chi, float(flip) * wave])
    return chi


def irrep_multiplicities(group: Group | str | int, mats: Tensor) -> dict[str, float]:
    """Raw multiplicity of each real irrep in the representation ``mats`` (order, d, d).

    From the character: ``m = <chi_mats, chi_irrep> / <chi_irrep, chi_irrep>`` with
    ``<a, b> = mean over elements of a b``. The denominator is 1, except 2 for the 2-d irreps
    of C_n (a pair of complex irreps). Non-negative integers for a true representation.
    """
    group = as_group(group)
    if mats.ndim != 3 or mats.shape[0] != group.order or mats.shape[1] != mats.shape[2]:
        raise ValueError(
            f"mats must have shape (order={group.order}, d, d), got shape {tuple(mats.shape)}"
        )
    traces = torch.stack([torch.trace(m) for m in mats.double()])
    out: dict[str, float] = {}
    for name in irrep_names(group):
        chi = irrep_character(group, name)
        norm = 2 if isinstance(group, CyclicGroup) and irrep_dim(group, name) == 2 else 1
        out[name] = float((traces * chi).mean() / norm)
    return out


def random_orthogonal(d: int, seed: int) -> Tensor:
    """A random orthogonal (d, d) float64 matrix (QR of a seeded Gaussian, sign-fixed)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=gen, dtype=torch.float64).numpy()
    q, r = np.linalg.qr(a)
    return torch.from_numpy(q * np.sign(np.diag(r))[None, :])


def representation_from_irreps(
    group: Group | str | int, multiplicities: Mapping[str, int], seed: int = 0
) -> tuple[dict[str, Tensor], Tensor, list[str]]:
    """Orthogonal generator matrices with the given irrep multiplicities, in a random basis.

    ``rho(g) = Q B(g) Q^T`` with ``B`` block diagonal, blocks in the order of
    ``multiplicities`` (a mapping irrep name -> count) and ``Q`` from :func:`random_orthogonal`.
    Returns ``(generators, Q, labels)``: the float64 generator matrices (``"r"``, ``"s"`` for
    D_n), Q (d, d) and the irrep name of each column of Q.
    """
    group = as_group(group)
    names = irrep_names(group)
    unknown = [k for k in multiplicities if k not in names]
    if unknown:
        raise KeyError(f"unknown irreps {unknown} of {group.name}; known: {names}")
    if any(int(m) < 0 for m in multiplicities.values()):
        raise ValueError(f"multiplicities must be >= 0, got {dict(multiplicities)}")
    labels = [k for k, m in multiplicities.items() for _ in range(int(m) * irrep_dim(group, k))]
    if not labels:
        raise ValueError("multiplicities must contain at least one irrep")
    d = len(labels)
    q = random_orthogonal(d, seed).numpy()
    gens = {}
    for g in generator_names(group):
        b, i = np.zeros((d, d)), 0
        for k, m in multiplicities.items():
            blk = irrep_generators(group, k)[g].numpy()
            for _ in range(int(m)):
                b[i : i + blk.shape[0], i : i + blk.shape[0]] = blk
                i += blk.shape[0]
        gens[g] = torch.from_numpy(q @ b @ q.T)
    return gens, torch.from_numpy(q), labels


def invariant_subspace(mats: Tensor, tol: float = 1e-4) -> Tensor:
    """Orthonormal basis (d, m) float64 of the vectors fixed by every ``mats[a]`` (order, d, d).

    The group average of an orthogonal representation is the projector onto that subspace.
    """
    u, s, _ = torch.linalg.svd(mats.double().mean(0))
    return u[:, s > 1 - tol]


# --------------------------------------------------------------------------- group error
def relations(
    group: Group | str | int, generators: Mapping[str, Tensor] | Tensor
) -> dict[str, Tensor]:
    """The defining relations as matrices that equal I for a representation: ``"r^n"`` (and
    ``"s^2"``, ``"(sr)^2"`` for D_n), float64. A bare tensor means ``{"r": tensor}``."""
    group = as_group(group)
    gens = {"r": generators} if isinstance(generators, Tensor) else dict(generators)
    names = generator_names(group)
    if sorted(gens) != sorted(names):
        raise KeyError(f"{group.name} needs generator matrices {list(names)}, got {sorted(gens)}")
    for g, mat in gens.items():
        if not isinstance(mat, Tensor) or mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
            shape = tuple(mat.shape) if isinstance(mat, Tensor) else type(mat).__name__
            raise ValueError(f"generator {g!r} must be a non-empty square matrix, got {shape}")
    r = gens["r"].double()
    n = group.order if isinstance(group, CyclicGroup) else group.n
    out = {f"r^{n}": torch.linalg.matrix_power(r, n)}
    if "s" in gens:
        s = gens["s"].double()
        if s.shape != r.shape:
            raise ValueError(f"generator 's' must have the shape of 'r' {tuple(r.shape)}")
        out["s^2"] = s @ s
        out["(sr)^2"] = (s @ r) @ (s @ r)
    return out


def relation_errors(
    group: Group | str | int,
    generators: Mapping[str, Tensor] | Tensor,
    variances: Tensor | None = None,
) -> dict[str, float]:
    """Relative error of each defining relation ``X = I`` (see :func:`relations`).

    ``||X - I||_F / ||I||_F``; with ``variances`` (d,) (a diagonal data covariance in the
    generators' basis), ``sqrt(E||(X - I) z||^2 / E||z||^2)``, so low-variance directions
    weigh less.
    """
    out = {}
    for name, mat in relations(group, generators).items():
        dev = mat - torch.eye(mat.shape[0], dtype=torch.float64)
        if variances is None:
            out[name] = float(torch.linalg.matrix_norm(dev) / math.sqrt(mat.shape[0]))
            continue
        if variances.shape != (mat.shape[0],):
            raise ValueError(
                f"variances must have shape ({mat.shape[0]},), got {tuple(variances.shape)}"
            )
        scale = variances.double().clamp_min(0).sqrt()
        out[name] = float(torch.linalg.matrix_norm(dev * scale) / torch.linalg.vector_norm(scale))
    return out


def group_error(
    group: Group | str | int,
    generators: Mapping[str, Tensor] | Tensor,
    variances: Tensor | None = None,
) -> float:
    """The largest relative relation error (:func:`relation_errors`): for C_n
    ``||M^n - I||_F / ||I||_F``; 0 for an exact representation."""
    return max(relation_errors(group, generators, variances).values())
