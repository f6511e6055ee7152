"""The linear representation of a cyclic group in activation space (the paper's first claim).

Given orbit activations ``acts[i, p] = h(g^p x_i)`` of shape (N, n, d) for the cyclic group
C_n with generator g (pose ``p`` is the power ``g^p``), we fit one matrix M with
``h(g x) - mu ~= M (h(x) - mu)`` by ridge least squares in closed form, in float64, on
mean-centred activations (``mu`` is the training mean over all examples and poses; a
G-invariant data distribution has a G-invariant mean, so centring keeps the map linear).

Concrete choices (ours, not the paper's):

* M is fitted on every consecutive pair of the training orbits, ``(h_p, h_{p+1 mod n})``,
  since every pose ``g^p x`` is itself an input whose rotation is ``g^{p+1} x``.
* The fit lives in the principal subspace of the centred training activations: directions whose
  variance is below ``rank_tol`` times the largest (dead or constant units) are dropped, since a
  map there is not determined by the data. ``max_dim`` optionally keeps only the top components.
* The ridge strength is ``alpha * trace(X^T X) / r`` (scale-free ``alpha``), with ``alpha``
  chosen from a small grid by the R^2 of the same prediction task on the validation split.
* R^2 = 1 - SSE / SST, pooled over all dimensions, with SST taken around the per-dimension mean
  of the targets. The held-out R^2 for power ``p`` predicts ``h(g^p x)`` from ``h(x)`` of the
  canonical (pose 0) test images, by ``M^p``, by the identity (no change at all), and by a
  separately fitted ``M_p`` (the best linear map for that power, fitted on pairs ``(h_0, h_p)``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from equisae.groups import (
    CyclicGroup,
    Group,
    as_group,
    generator_names,
    group_error,
    irrep_multiplicities,
    irrep_names,
    matrix_powers,
    relation_errors,
    representation_matrices,
)
from equisae.io import to_jsonable
from equisae.timing import timed

__all__ = [
    "auto_max_dim",
    "full_rank_generators",
    "full_rank_representation",
    "sae_generators",
    "sae_representation",
    "representation_summary",
    "DEFAULT_RANK_TOL",
    "DEFAULT_RIDGE_GRID",
    "LinRepResult",
    "LinearRepresentation",
    "analyse_linear_representation",
    "evaluate_linear_representation",
    "fit_linear_representation",
    "irrep_names",
    "nearest_orthogonal",
    "orthogonality_error",
    "r2_score",
    "root_of_unity_distance",
    "orbit_prediction_fvu",
    "compare_generators",
]

DEFAULT_RIDGE_GRID: tuple[float, ...] = (0.0, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1)
DEFAULT_RANK_TOL = 1e-6


# --------------------------------------------------------------------------- diagnostics
def orbit_prediction_fvu(orbits: Tensor, generator: Tensor, centre: Tensor | None = None) -> float:
    """How well one matrix carries the base pose to every other pose of C_n orbits ``(N, n, d)``.

    FVU of ``(h_p - c) ~ M^p (h_0 - c)`` pooled over ``p = 1..n-1``: the squared residuals
    over the squared deviations of ``h_p`` from its mean. ``c`` defaults to the mean of all
    poses. 0 is a perfect prediction; the identity matrix scores how different the poses are.
    """
    if orbits.ndim != 3 or orbits.shape[1] < 2:
        raise ValueError(f"orbits must have shape (N, n >= 2, d), got {tuple(orbits.shape)}")
    d = orbits.shape[-1]
    _check_square(generator, "generator")
    if generator.shape[0] != d:
        raise ValueError(f"generator must be ({d}, {d}) for orbits of dimension {d}")
    h = orbits.double()
    c = h.mean((0, 1)) if centre is None else centre.double()
    base = h[:, 0] - c
    powers = matrix_powers(generator.double(), orbits.shape[1])
    residual = total = 0.0
    for p in range(1, orbits.shape[1]):
        target = h[:, p] - c
        residual += float((target - base @ powers[p].T).pow(2).sum())
        total += float((h[:, p] - h[:, p].mean(0)).pow(2).sum())
    return residual / total


def compare_generators(orbits: Tensor, learned: Tensor, fit: Tensor) -> dict[str, float]:
    """A learned C_n generator against the least-squares fit, on held-out ``orbits``.

    Distances and group errors plain (``||.||_F``, every direction alike) and weighted by the
    orbits' covariance (``||(A - B) S^1/2|| / ||B S^1/2||``, the group error in the covariance's
    eigenbasis with the variances as weights, :func:`equisae.groups.relation_errors`), so that
    directions the activations do not use weigh nothing; and how well each predicts every pose
    from the base pose (:func:`orbit_prediction_fvu`).
    """
    n = orbits.shape[1]
    h = orbits.double().reshape(-1, orbits.shape[-1])
    variances, basis = torch.linalg.eigh(torch.cov(h.T))
    variances = variances.clamp_min(0)
    root = basis @ torch.diag(variances.sqrt()) @ basis.T
    a, b = learned.double(), fit.double()
    return {
        "distance": float((a - b).norm() / b.norm()),
        "distance_weighted": float(((a - b) @ root).norm() / (b @ root).norm()),
        "group_error": group_error(n, a),
        "group_error_weighted": group_error(n, basis.T @ a @ basis, variances),
        "group_error_fit_weighted": group_error(n, basis.T @ b @ basis, variances),
        "prediction_fvu": orbit_prediction_fvu(orbits, a),
        "prediction_fvu_fit": orbit_prediction_fvu(orbits, b),
        "prediction_fvu_identity": orbit_prediction_fvu(orbits, torch.eye(a.shape[0])),
    }


def nearest_orthogonal(m: Tensor) -> Tensor:
    """The orthogonal matrix closest to M in Frobenius norm (polar factor ``U V^T``)."""
    _check_square(m, "M")
    u, _, vh = torch.linalg.svd(m.double())
    return u @ vh


def orthogonality_error(m: Tensor) -> float:
    """``||M - Q||_F / ||Q||_F`` with Q the nearest orthogonal matrix (0 for orthogonal M)."""
    _check_square(m, "M")
    s = torch.linalg.svdvals(m.double())
    return float(torch.linalg.vector_norm(s - 1) / math.sqrt(m.shape[0]))


def root_of_unity_distance(eigenvalues: Tensor, n: int) -> Tensor:
    """Distance of each (complex) eigenvalue to the nearest n-th root of unity."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"group order n must be an integer >= 1, got {n!r}")
    roots = torch.exp(2j * math.pi * torch.arange(n, dtype=torch.float64) / n)
    return (eigenvalues.reshape(-1, 1).to(torch.complex128) - roots).abs().min(dim=1).values


def r2_score(pred: Tensor, target: Tensor) -> float:
    """R^2 = 1 - SSE / SST pooled over all dimensions; SST around the per-dimension target mean."""
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(
            f"pred and target must both have shape (N, d), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    pred, target = pred.double(), target.double()
    sst = ((target - target.mean(dim=0)) ** 2).sum()
    if sst <= 0:
        raise ValueError("target has zero variance: R^2 is undefined")
    return float(1 - ((target - pred) ** 2).sum() / sst)


def _check_square(m: Tensor, name: str) -> None:
    if not isinstance(m, Tensor) or m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        shape = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
        raise ValueError(f"{name} must be a non-empty square matrix, got {shape}")


# --------------------------------------------------------------------------- fitting
def _as_orbit(acts: Any, name: str) -> Tensor:
    """Orbit activations (N, n, d) as float64, from a tensor or an OrbitActivations."""
    acts = getattr(acts, "acts", acts)
    if not isinstance(acts, Tensor) or acts.ndim != 3:
        shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
        raise ValueError(f"{name} activations must have shape (N, n, d), got {shape}")
    if acts.shape[1] < 2 or acts.shape[2] < 1:
        raise ValueError(
            f"{name} activations need n >= 2 poses and d >= 1, got {tuple(acts.shape)}"
        )
    if acts.shape[0] < 2:
        raise ValueError(f"{name} activations need at least 2 examples, got {acts.shape[0]}")
    acts = acts.double()
    if not torch.isfinite(acts).all():
        raise ValueError(f"{name} activations contain NaN or infinite values")
    return acts


class _RidgeFitter:
    """Ridge fits ``y ~= x W`` for several targets sharing the inputs ``x`` (and ``x_val``).

    The penalty is ``lam ||W||_F^2`` with ``lam = alpha * tr(X^T X) / r``. With the eigen-
    decomposition ``X^T X = V diag(s) V^T`` and ``B = V^T X^T Y``, ``W = V diag(1/(s+lam)) B``,
    and the validation error ``SSE = tr(Yv^T Yv) - 2 tr(W^T Xv^T Yv) + tr(W^T Xv^T Xv W)``
    reduces to sums over r x r matrices, so each alpha of the grid costs O(r^2).
    """

    def __init__(self, x: Tensor, x_val: Tensor) -> None:
        self.x, self.x_val = x, x_val
        self.evals, self.v = torch.linalg.eigh(x.T @ x)
        self.c = self.v.T @ (x_val.T @ x_val) @ self.v

    def fit(self, y: Tensor, y_val: Tensor, grid: Sequence[float]) -> tuple[Tensor, float, float]:
        """Best alpha by validation R^2: (M = W^T acting on column vectors, alpha, val R^2).

        An alpha that leaves the system singular (``s + lam`` below 1e-12 of the largest
        eigenvalue) is skipped.
        """
        evals, v = self.evals, self.v
        r = evals.shape[0]
        b = v.T @ (self.x.T @ y)
        e = (v.T @ (self.x_val.T @ y_val)) * b
        g = b @ b.T
        vyy = (y_val**2).sum()
        sst = ((y_val - y_val.mean(dim=0)) ** 2).sum()
        if sst <= 0:
            raise ValueError("validation targets have zero variance: cannot choose the ridge")
        top = float(evals.abs().max())
        best: tuple[float, float] | None = None  # (alpha, score)
        for alpha in grid:
            lam = float(alpha) * float(evals.sum()) / r
            denom = evals + lam
            if float(denom.min()) <= 1e-12 * top:
                continue  # singular without (enough) ridge: another alpha will do
            dinv = denom.reciprocal()
            cross = (dinv * e.sum(dim=1)).sum()
            quad = (dinv.reshape(-1, 1) * self.c * dinv.reshape(1, -1) * g.T).sum()
            score = float(1 - (vyy - 2 * cross + quad).clamp_min(0) / sst)
            if math.isfinite(score) and (best is None or score > best[1]):
                best = (float(alpha), score)
        if best is None:
            raise ValueError(
                f"the ridge fit failed for every alpha in {list(grid)}; add a larger one"
            )
        alpha, score = best
        lam = alpha * float(evals.sum()) / r
        w = v @ (b / (evals + lam).reshape(-1, 1))
        return w.T.contiguous(), alpha, score


@dataclass
class LinearRepresentation:
    """A fitted representation on activations, in the kept principal subspace.

    ``basis`` (d, r) has orthonormal columns; ``M = basis @ M_reduced @ basis.T`` on centred
    activations is the fitted rotation generator ``r`` (the only generator of C_n); for D_n,
    ``S_reduced`` is the fitted flip ``s``. ``per_power_reduced[a]`` is the separately fitted
    map ``M_a`` from pose 0 to pose ``a`` (reduced coordinates). ``n`` is |G|, the number of
    poses; ``group_name`` the group (``None`` means ``C{n}``).
    """

    n: int
    mean: Tensor
    basis: Tensor
    variances: Tensor
    M_reduced: Tensor
    per_power_reduced: Tensor
    ridge: float
    ridge_per_power: list[float]
    explained_variance: float
    val_r2: float
    group_name: str | None = None
    S_reduced: Tensor | None = None
    ridge_s: float | None = None
    val_r2_s: float | None = None

    @property
    def group(self) -> Group:
        """The group whose elements index the poses."""
        return as_group(self.group_name or self.n)

    @property
    def dim(self) -> int:
        """d, the activation dimension."""
        return int(self.basis.shape[0])

    @property
    def rank(self) -> int:
        """r, the dimension of the kept principal subspace."""
        return int(self.basis.shape[1])

    @property
    def M(self) -> Tensor:
        """The fitted rotation generator on centred activations, (d, d) float64."""
        return self.basis @ self.M_reduced @ self.basis.T

    @property
    def S(self) -> Tensor | None:
        """The fitted flip generator of D_n on centred activations (None for C_n)."""
        return None if self.S_reduced is None else self.basis @ self.S_reduced @ self.basis.T

    def generators_reduced(self) -> dict[str, Tensor]:
        """The fitted generator matrices in reduced coordinates: ``{"r"}`` or ``{"r", "s"}``."""
        gens = {"r": self.M_reduced}
        if "s" in generator_names(self.group):
            gens["s"] = self.S_reduced
        return gens

    def generators(self) -> dict[str, Tensor]:
        """The fitted generator matrices on centred activations, (d, d) float64 each."""
        return {k: self.basis @ v @ self.basis.T for k, v in self.generators_reduced().items()}

    def element_matrices_reduced(self) -> Tensor:
        """``rho(a)`` for every element, built from the fitted generators: (|G|, r, r)."""
        return representation_matrices(self.group, self.generators_reduced())

    def per_power(self, p: int) -> Tensor:
        """The separately fitted ``M_p`` on centred activations, (d, d) float64."""
        return self.basis @ self.per_power_reduced[p % self.n] @ self.basis.T

    def predict(self, h: Tensor, p: int, per_power: bool = False) -> Tensor:
        """Predict ``h(a x)`` from ``h(x)`` (rows of ``h``, shape (N, d)) for element ``a = p``
        (``g^p`` for C_n), by ``rho(a)`` built from the generators or by the fitted ``M_a``."""
        if h.ndim != 2 or h.shape[1] != self.dim:
            raise ValueError(f"h must have shape (N, {self.dim}), got {tuple(h.shape)}")
        z = (h.double() - self.mean) @ self.basis
        if per_power:
            mat = self.per_power_reduced[p % self.n]
        elif isinstance(self.group, CyclicGroup):
            mat = torch.linalg.matrix_power(self.M_reduced, p)
        else:
            mat = self.element_matrices_reduced()[p % self.n]
        return self.mean + (z @ mat.T) @ self.basis.T


def _principal_subspace(
    z: Tensor, rank_tol: float, max_dim: int | None
) -> tuple[Tensor, Tensor, float]:
    """Orthonormal basis (d, r) and variances (r,) of the centred rows ``z``, plus the
    fraction of the total variance they keep."""
    m, d = z.shape
    if d <= m:
        evals, evecs = torch.linalg.eigh(z.T @ z / m)
        evals, evecs = evals.flip(0), evecs.flip(1)
    else:
        _, s, vh = torch.linalg.svd(z, full_matrices=False)
        evals, evecs = s**2 / m, vh.T
    total = float(evals.clamp_min(0).sum())
    if total <= 0:
        raise ValueError("training activations are constant: there is nothing to fit")
    keep = int((evals > rank_tol * evals[0]).sum())
    if max_dim is not None:
        if max_dim < 1:
            raise ValueError(f"max_dim must be >= 1 or None, got {max_dim}")
        keep = min(keep, int(max_dim))
    return (
        evecs[:, :keep].contiguous(),
        evals[:keep].contiguous(),
        float(evals[:keep].sum()) / total,
    )


def _fit_group(train: Any, group: Group | str | None, order: int) -> Group:
    """The group of the pose axis: ``group``, else the activations' ``group_name``, else C_n."""
    if group is None:
        group = getattr(train, "group_name", None) or order
    try:
        group = as_group(group)
    except KeyError as err:
        raise ValueError(f"group: {err.args[0]}") from None
    if group.order != order:
        raise ValueError(
            f"{group.name} has {group.order} elements, but the activations have {order} poses "
            "(expected shape (N, |G|, d) in the group's element order)"
        )
    return group


def fit_linear_representation(
    train: Any,
    val: Any,
    ridge_grid: Sequence[float] = DEFAULT_RIDGE_GRID,
    rank_tol: float = DEFAULT_RANK_TOL,
    max_dim: int | None = None,
    group: Group | str | None = None,
) -> LinearRepresentation:
    """Fit the generator maps (and the per-element maps M_a) on ``train`` orbits (N, |G|, d),
    ridge chosen on ``val``.

    Both arguments are tensors of shape (N, |G|, d) or
    :class:`~equisae.activations.OrbitActivations` whose pose axis is the group's elements in
    its order (C_n: ``g^0 .. g^{n-1}``; D_n: ``r^0 .. r^{n-1}, s, r s, ..``). ``group``
    (a :class:`~equisae.groups.Group` or a name such as ``"D4"``) defaults to the activations'
    ``group_name``, else ``C_|G|``. Each generator ``t`` (``r``, and ``s`` for D_n) is fitted
    on the pairs ``(h_a, h_{t a})`` over every pose ``a``. Raises ValueError on mismatched
    shapes, non-finite values, or fewer training examples than the kept rank.
    """
    tr, va = _as_orbit(train, "train"), _as_orbit(val, "val")
    if tr.shape[1:] != va.shape[1:]:
        raise ValueError(
            f"train and val activations must share (n, d), got {tuple(tr.shape[1:])} "
            f"and {tuple(va.shape[1:])}"
        )
    if not ridge_grid or any(float(a) < 0 for a in ridge_grid):
        raise ValueError(f"ridge_grid must be a non-empty list of alphas >= 0, got {ridge_grid}")
    n_train, n, d = tr.shape
    grp = _fit_group(train, group, n)
    mean = tr.reshape(-1, d).mean(dim=0)
    basis, variances, explained = _principal_subspace(tr.reshape(-1, d) - mean, rank_tol, max_dim)
    r = basis.shape[1]
    if n_train <= r:
        raise ValueError(
            f"too few training examples for the dimension: {n_train} examples but the "
            f"activations span {r} dimensions (d = {d}); the per-power fits need more examples "
            f"than dimensions. Use more data or pass max_dim < {n_train}."
        )
    zt, zv = (tr - mean) @ basis, (va - mean) @ basis  # (N, n, r)
    fitter = _RidgeFitter(zt.reshape(-1, r), zv.reshape(-1, r))
    fits = {}
    for name, element in zip(generator_names(grp), (1, grp.n), strict=False):
        after = [grp.compose(element, a) for a in grp.elements()]  # pose of t a, per pose a
        fits[name] = fitter.fit(
            zt[:, after].reshape(-1, r), zv[:, after].reshape(-1, r), ridge_grid
        )
    per_power, alphas = [], []
    from_canonical = _RidgeFitter(zt[:, 0], zv[:, 0])
    for p in range(n):
        m_p, a_p, _ = from_canonical.fit(zt[:, p], zv[:, p], ridge_grid)
        per_power.append(m_p)
        alphas.append(a_p)
    m_red, alpha, val_r2 = fits["r"]
    s_red, alpha_s, val_r2_s = fits.get("s", (None, None, None))
    return LinearRepresentation(
        n=n,
        mean=mean,
        basis=basis,
        variances=variances,
        M_reduced=m_red,
        per_power_reduced=torch.stack(per_power),
        ridge=alpha,
        ridge_per_power=alphas,
        explained_variance=explained,
        val_r2=val_r2,
        group_name=grp.name,
        S_reduced=s_red,
        ridge_s=alpha_s,
        val_r2_s=val_r2_s,
    )


# --------------------------------------------------------------------------- evaluation
@dataclass
class LinRepResult:
    """Held-out fit quality and group-structure diagnostics of a fitted M (see module doc).

    Lists indexed by pose run over the group's elements (C_n: the powers ``g^p``). For D_n,
    ``extra`` holds ``group``, ``relation_errors`` (relative, per relation ``r^n``, ``s^2``,
    ``(sr)^2``), ``relation_error_max_abs`` (:meth:`Group.relation_error` of the rho stack)
    and ``s_orthogonality_error``.
    """

    group_order: int
    dim: int
    rank: int
    explained_variance: float
    ridge: float
    ridge_per_power: list[float]
    r2_single: list[float]
    r2_identity: list[float]
    r2_per_power: list[float]
    group_error: float
    group_error_weighted: float
    power_consistency: list[float]
    eigenvalues: np.ndarray
    root_distance_max: float
    root_distance_mean: float
    irrep_multiplicities: dict[str, int]
    irrep_multiplicities_raw: dict[str, float]
    orthogonality_error: float
    whitened_orthogonality_error: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (eigenvalues as ``{"real": [...], "imag": [...]}``)."""
        return to_jsonable(self)


def evaluate_linear_representation(rep: LinearRepresentation, test: Any) -> LinRepResult:
    """Held-out R^2 per group element on ``test`` orbits (N, |G|, d) and the group diagnostics.

    ``r2_single[a]``: R^2 of ``rho(a) h(x)`` (rho built from the fitted generators; ``M^p``
    for C_n) for ``h(a x)``; ``r2_identity[a]``: of ``h(x)`` itself; ``r2_per_power[a]``: of
    the separately fitted ``M_a h(x)``, all with x the canonical test images and R^2 pooled
    over dimensions (SST around the target mean). ``group_error`` is the largest relative
    relation error (:func:`equisae.groups.group_error`; ``||M^n - I||_F / ||I||_F`` for C_n) and
    ``power_consistency[a] = ||M_a - rho(a)||_F / ||M_a||_F``, computed in the kept subspace,
    as are the eigenvalues of M (against the n-th roots of unity, n the order of the rotation;
    stored sorted by angle in [0, 2 pi), then by modulus),
    the irrep multiplicities from the character, and the relative distance to the nearest
    orthogonal matrix (raw, and after whitening by the training covariance, in which an exact
    representation of a G-invariant distribution is orthogonal).
    """
    te = _as_orbit(test, "test")
    if te.shape[1:] != (rep.n, rep.dim):
        raise ValueError(
            f"test activations must have shape (N, {rep.n}, {rep.dim}), got {tuple(te.shape)}"
        )
    n, grp = rep.n, rep.group
    h0 = te[:, 0]
    r2_single, r2_identity, r2_pp = [], [], []
    for p in range(n):
        r2_single.append(r2_score(rep.predict(h0, p), te[:, p]))
        r2_identity.append(r2_score(h0, te[:, p]))
        r2_pp.append(r2_score(rep.predict(h0, p, per_power=True), te[:, p]))
    m = rep.M_reduced
    gens = rep.generators_reduced()
    cyclic = isinstance(grp, CyclicGroup)
    mats = matrix_powers(m, n) if cyclic else rep.element_matrices_reduced()
    consistency = [
        float(
            torch.linalg.matrix_norm(rep.per_power_reduced[p] - mats[p])
            / torch.linalg.matrix_norm(rep.per_power_reduced[p]).clamp_min(1e-300)
        )
        for p in range(n)
    ]
    eig = torch.linalg.eigvals(m)
    # LAPACK returns the eigenvalues in an order that depends on the machine: store them in a
    # canonical one, by angle in [0, 2 pi) (rounded, so that rounding noise does not reorder
    # equal angles), then by modulus.
    eig_np = eig.numpy()
    angle = np.round(np.mod(np.angle(eig_np), 2 * np.pi), 6)
    eig = eig[torch.from_numpy(np.lexsort((np.abs(eig_np), angle)).copy())]
    dist = root_of_unity_distance(eig, grp.order if cyclic else grp.n)
    raw = irrep_multiplicities(grp, matrix_powers(m.double(), n) if cyclic else mats)
    scale = rep.variances.clamp_min(1e-300).sqrt()
    whitened = m * scale.reciprocal().reshape(-1, 1) * scale.reshape(1, -1)
    extra: dict[str, Any] = {}
    if not cyclic:
        extra = {
            "group": grp.name,
            "relation_errors": relation_errors(grp, gens),
            "relation_errors_weighted": relation_errors(grp, gens, rep.variances),
            "relation_error_max_abs": grp.relation_error(mats),
            "s_orthogonality_error": orthogonality_error(gens["s"]),
        }
    return LinRepResult(
        group_order=n,
        dim=rep.dim,
        rank=rep.rank,
        explained_variance=rep.explained_variance,
        ridge=rep.ridge,
        ridge_per_power=list(rep.ridge_per_power),
        r2_single=r2_single,
        r2_identity=r2_identity,
        r2_per_power=r2_pp,
        group_error=group_error(grp, gens),
        group_error_weighted=group_error(grp, gens, rep.variances),
        power_consistency=consistency,
        eigenvalues=eig.numpy(),
        root_distance_max=float(dist.max()),
        root_distance_mean=float(dist.mean()),
        irrep_multiplicities={k: int(round(v)) for k, v in raw.items()},
        irrep_multiplicities_raw=raw,
        orthogonality_error=orthogonality_error(m),
        whitened_orthogonality_error=orthogonality_error(whitened),
        extra=extra,
    )


@timed("fit of M")
def analyse_linear_representation(
    train: Any,
    val: Any,
    test: Any,
    ridge_grid: Sequence[float] = DEFAULT_RIDGE_GRID,
    rank_tol: float = DEFAULT_RANK_TOL,
    max_dim: int | None = None,
    group: Group | str | None = None,
) -> tuple[LinearRepresentation, LinRepResult]:
    """Fit on ``train`` (ridge chosen on ``val``) and evaluate on ``test``: (fit, result)."""
    rep = fit_linear_representation(train, val, ridge_grid, rank_tol, max_dim, group)
    return rep, evaluate_linear_representation(rep, test)


# --------------------------------------------------------------------------- M for the SAEs
def full_rank_representation(rep: LinearRepresentation) -> Tensor:
    """The fitted generator as an invertible (d, d) matrix for an equivariant SAE.

    The fit lives in the principal subspace (``basis``); outside it the activations have
    (almost) no variance, so there the map is taken to be the identity:
    ``M = B M_r B^T + (I - B B^T)``.
    """
    basis = rep.basis.double()
    d = basis.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    return (basis @ rep.M_reduced.double() @ basis.T + eye - basis @ basis.T).float()


def auto_max_dim(train: Any, rank_tol: float = DEFAULT_RANK_TOL) -> int | None:
    """A cap on the fit's subspace when the data cannot determine a full one, else None.

    The per-power fits need more training examples than kept dimensions; when the
    activations span ``r >= N / 2`` dimensions for ``N`` training examples the cap is
    ``N // 2`` (a warning says so and how to change it).
    """
    tr = _as_orbit(train, "train")
    n_train, n, d = tr.shape
    if d < n_train // 2:
        return None
    flat = tr.reshape(-1, d)
    _, variances, _ = _principal_subspace(flat - flat.mean(0), rank_tol, None)
    if variances.shape[0] < n_train // 2:
        return None
    cap = max(1, n_train // 2)
    warnings.warn(
        f"the training activations span {variances.shape[0]} dimensions (d = {d}) for "
        f"{n_train} examples: fitting M in the top {cap} principal directions (max_dim={cap}; "
        "pass max_dim= to choose, or use more images)",
        stacklevel=3,
    )
    return cap


def _gap_ranks(variances: Tensor, tol: float = 0.01) -> list[int]:
    """Ranks r that do not split a (near-)degenerate eigenvalue: v[r] < (1 - tol) v[r - 1]."""
    v = variances.double()
    return [r for r in range(1, len(v)) if v[r] < (1 - tol) * v[r - 1]] + [len(v)]


def sae_representation(
    train: Any,
    val: Any,
    variance: float = 0.99,
    min_modulus: float = 0.25,
    max_dim: int | None = None,
) -> tuple[LinearRepresentation, Tensor]:
    """The least-squares fit of M that the equivariant SAEs use, well conditioned: **the** way
    to get an SAE-ready M from orbit activations of any layer.

    Do not pass a fit's ``rep.M`` to an SAE: it is ``B M_r B^T``, singular whenever the fit
    drops directions (dead ReLU units, constant channels). The matrix returned here is full
    rank on the activations' span and the identity on the dropped directions (explicitly:
    ``M = B M_r B^T + (I - B B^T)``); :func:`representation_summary` reports its rank,
    the dropped dimensions and its condition number.

    Returns the fit and its full-rank (d, d) matrix (:func:`full_rank_representation`). The
    fit in the full principal subspace can have eigenvalues near zero in directions of
    negligible variance, which the canonicalising variant (``M^-p``) and the SAEs' refusal of
    ill-conditioned matrices cannot take. So M is fitted in the leading principal subspace
    holding ``variance`` of the training variance, without splitting a degenerate eigenvalue
    (that would break the irreducible subspaces of an exact representation), shrunk further
    while an eigenvalue of M has modulus below ``min_modulus``; outside it M is the identity.
    C_n only (the rotation generator); :func:`sae_generators` gives every generator of D_n.
    ``max_dim`` caps the principal subspace (needed on wide layers, where the per-power fits
    want more examples than dimensions); None chooses it automatically when it must
    (:func:`sae_generators` warns with the reason).
    """
    rep, gens = sae_generators(
        train, val, variance, min_modulus, group=_cyclic_group_of(train), max_dim=max_dim
    )
    return rep, gens["r"]


def representation_summary(rep: LinearRepresentation, M: Tensor | None = None) -> dict[str, Any]:
    """How an SAE-ready M was made from the fit ``rep``: plain JSON values.

    ``dim`` (d), ``rank`` (r, the kept principal subspace), ``dropped`` (d - r directions, where
    M is the identity), ``explained_variance`` (of the kept subspace), ``complement``
    ("identity"), ``condition_number`` of M (2-norm; :data:`COND_LIMIT`-style checks of the
    SAEs compare against it) and ``min_eigenvalue_modulus`` of M restricted to the subspace.
    ``M`` defaults to :func:`full_rank_representation` of ``rep``.
    """
    mat = full_rank_representation(rep) if M is None else M
    _check_square(mat, "M")
    if mat.shape[0] != rep.dim:
        raise ValueError(f"M must be ({rep.dim}, {rep.dim}) like the fit, got {tuple(mat.shape)}")
    return {
        "dim": rep.dim,
        "rank": rep.rank,
        "dropped": rep.dim - rep.rank,
        "explained_variance": float(rep.explained_variance),
        "complement": "identity",
        "condition_number": float(torch.linalg.cond(mat.double())),
        "min_eigenvalue_modulus": _min_modulus(rep),
    }


def _cyclic_group_of(train: Any) -> Group:
    """C_|G| for the pose axis of ``train``; ValueError if its activations say D_n."""
    grp = _fit_group(train, None, _as_orbit(train, "train").shape[1])
    if "s" in generator_names(grp):
        raise ValueError(
            f"sae_representation fits the C_n generator only, but train is under {grp.name}; "
            "use sae_generators(train, val, group=...) for every generator"
        )
    return grp


def full_rank_generators(rep: LinearRepresentation) -> dict[str, Tensor]:
    """Every fitted generator as an invertible (d, d) matrix, identity outside the subspace:
    ``A = B A_r B^T + (I - B B^T)`` (:func:`full_rank_representation` for each generator)."""
    basis = rep.basis.double()
    eye = torch.eye(basis.shape[0], dtype=torch.float64)
    rest = eye - basis @ basis.T
    return {
        name: (basis @ mat.double() @ basis.T + rest).float()
        for name, mat in rep.generators_reduced().items()
    }


def _min_modulus(rep: LinearRepresentation) -> float:
    """Smallest eigenvalue modulus over every fitted generator (reduced coordinates)."""
    return min(
        float(torch.linalg.eigvals(mat.double()).abs().min())
        for mat in rep.generators_reduced().values()
    )


def sae_generators(
    train: Any,
    val: Any,
    variance: float = 0.99,
    min_modulus: float = 0.25,
    group: Group | str | None = None,
    max_dim: int | None = None,
) -> tuple[LinearRepresentation, dict[str, Tensor]]:
    """The least-squares fit of every generator (``"r"``; ``"s"`` for D_n) for the SAEs.

    As :func:`sae_representation` (same principal-subspace choice, now required of every
    generator's eigenvalues), returning the fit and ``{name: (d, d) full-rank matrix}``
    (:func:`full_rank_generators`). ``group`` as in :func:`fit_linear_representation`.
    ``max_dim`` caps the subspace; None takes :func:`auto_max_dim` (a warning gives the reason
    when it caps anything).
    """
    if max_dim is None:
        max_dim = auto_max_dim(train)
    full = fit_linear_representation(train, val, group=group, max_dim=max_dim)
    v = full.variances.double()
    share = v.cumsum(0) / v.sum()
    wanted = int((share < variance).sum()) + 1
    ranks = _gap_ranks(v)
    candidates = [r for r in ranks if r <= wanted][::-1] + [r for r in ranks if r > wanted][:1]
    candidates = sorted(set(candidates), key=lambda r: (r < wanted, -r if r < wanted else r))
    best: tuple[LinearRepresentation, float] | None = None
    for r in candidates[:12]:
        rep = fit_linear_representation(train, val, max_dim=r, group=group)
        modulus = _min_modulus(rep)
        if best is None or modulus > best[1]:
            best = (rep, modulus)
        if modulus >= min_modulus:
            break
    assert best is not None
    chosen = rep if modulus >= min_modulus else best[0]
    return chosen, full_rank_generators(chosen)
