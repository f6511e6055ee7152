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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from equisae.io import to_jsonable

DEFAULT_RIDGE_GRID: tuple[float, ...] = (0.0, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1)
DEFAULT_RANK_TOL = 1e-6


# --------------------------------------------------------------------------- irreps of C_n
def irrep_names(n: int) -> list[str]:
    """Names of the real irreducible representations of C_n.

    ``trivial`` (dim 1), ``sign`` (dim 1, n even: g -> -1) and ``rotation_k`` for
    ``0 < k < n/2`` (dim 2: g -> rotation by 2 pi k / n).
    """
    _check_order(n)
    names = ["trivial"]
    if n % 2 == 0:
        names.append("sign")
    names += [f"rotation_{k}" for k in range(1, (n + 1) // 2)]
    return names


def irrep_matrix(name: str, n: int) -> Tensor:
    """The float64 matrix of the generator g in the real irrep ``name`` of C_n."""
    names = irrep_names(n)
    if name not in names:
        raise KeyError(f"unknown irrep {name!r} of C{n}; known: {names}")
    if name == "trivial":
        return torch.ones(1, 1, dtype=torch.float64)
    if name == "sign":
        return -torch.ones(1, 1, dtype=torch.float64)
    k = int(name.split("_")[1])
    t = 2 * math.pi * k / n
    return torch.tensor(
        [[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=torch.float64
    )


def representation_from_multiplicities(
    multiplicities: Mapping[str, int], n: int, seed: int = 0
) -> Tensor:
    """An orthogonal generator R (d, d) of C_n, float64, with the given irrep multiplicities,
    written in a random orthogonal basis (seeded): ``R = Q B Q^T`` with B block diagonal."""
    names = irrep_names(n)
    unknown = [k for k in multiplicities if k not in names]
    if unknown:
        raise KeyError(f"unknown irreps {unknown} of C{n}; known: {names}")
    if any(int(m) < 0 for m in multiplicities.values()):
        raise ValueError(f"multiplicities must be >= 0, got {dict(multiplicities)}")
    blocks = [irrep_matrix(k, n) for k in names for _ in range(int(multiplicities.get(k, 0)))]
    if not blocks:
        raise ValueError("multiplicities must contain at least one irrep")
    b = torch.block_diag(*blocks)
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(b.shape[0], b.shape[0], generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q @ b @ q.T


def _check_order(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2:
        raise ValueError(f"group order n must be an integer >= 2, got {n!r}")


# --------------------------------------------------------------------------- diagnostics
def matrix_powers(m: Tensor, n: int) -> list[Tensor]:
    """``[M^0, M^1, ..., M^n]`` (n + 1 matrices)."""
    powers = [torch.eye(m.shape[0], dtype=m.dtype)]
    for _ in range(n):
        powers.append(powers[-1] @ m)
    return powers


def group_error(m: Tensor, n: int) -> float:
    """Relative error of the group law ``g^n = e``: ``||M^n - I||_F / ||I||_F``."""
    _check_square(m, "M")
    _check_order(n)
    m = m.double()
    eye = torch.eye(m.shape[0], dtype=torch.float64)
    return float(
        torch.linalg.matrix_norm(torch.linalg.matrix_power(m, n) - eye) / math.sqrt(m.shape[0])
    )


def weighted_group_error(m: Tensor, n: int, variances: Tensor) -> float:
    """``sqrt(E||(M^n - I) z||^2 / E||z||^2)`` for z with the diagonal covariance ``variances``.

    Unlike :func:`group_error`, directions weigh by how much data variance they carry, so
    poorly determined low-variance directions do not dominate.
    """
    _check_square(m, "M")
    _check_order(n)
    if variances.shape != (m.shape[0],):
        raise ValueError(f"variances must have shape ({m.shape[0]},), got {tuple(variances.shape)}")
    m = m.double()
    dev = torch.linalg.matrix_power(m, n) - torch.eye(m.shape[0], dtype=torch.float64)
    scale = variances.double().clamp_min(0).sqrt()
    return float(torch.linalg.matrix_norm(dev * scale) / torch.linalg.vector_norm(scale))


def irrep_multiplicities(m: Tensor, n: int) -> dict[str, float]:
    """Raw multiplicity of each real irrep of C_n in M, from its character ``tr(M^p)``.

    Complex irreps: ``m_k = (1/n) sum_p tr(M^p) conj(chi_k(g^p))`` with
    ``chi_k(g^p) = exp(2 pi i k p / n)``. Real-ified: trivial = m_0, sign = m_{n/2}, and
    ``rotation_k = Re(m_k)`` (the 2-d real irrep is chi_k + chi_{-k}). For a true representation
    these are non-negative integers with ``trivial + sign + 2 * sum(rotation_k) = d``.
    """
    _check_square(m, "M")
    _check_order(n)
    traces = torch.stack([torch.trace(p) for p in matrix_powers(m.double(), n - 1)])
    p = torch.arange(n, dtype=torch.float64)
    out: dict[str, float] = {}
    for name in irrep_names(n):
        k = 0 if name == "trivial" else n // 2 if name == "sign" else int(name.split("_")[1])
        out[name] = float((traces * torch.cos(2 * math.pi * k * p / n)).mean())
    return out


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
    _check_order(n)
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
    """A fitted map M of the generator on activations, in the kept principal subspace.

    ``basis`` (d, r) has orthonormal columns; ``M = basis @ M_reduced @ basis.T`` on centred
    activations. ``per_power_reduced[p]`` is the separately fitted ``M_p`` (reduced coordinates).
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
        """The fitted generator map on centred activations, (d, d) float64."""
        return self.basis @ self.M_reduced @ self.basis.T

    def per_power(self, p: int) -> Tensor:
        """The separately fitted ``M_p`` on centred activations, (d, d) float64."""
        return self.basis @ self.per_power_reduced[p % self.n] @ self.basis.T

    def predict(self, h: Tensor, p: int, per_power: bool = False) -> Tensor:
        """Predict ``h(g^p x)`` from ``h(x)`` (rows of ``h``, shape (N, d)) by ``M^p`` or ``M_p``."""
        if h.ndim != 2 or h.shape[1] != self.dim:
            raise ValueError(f"h must have shape (N, {self.dim}), got {tuple(h.shape)}")
        z = (h.double() - self.mean) @ self.basis
        mat = (
            self.per_power_reduced[p % self.n]
            if per_power
            else torch.linalg.matrix_power(self.M_reduced, p)
        )
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


def fit_linear_representation(
    train: Any,
    val: Any,
    ridge_grid: Sequence[float] = DEFAULT_RIDGE_GRID,
    rank_tol: float = DEFAULT_RANK_TOL,
    max_dim: int | None = None,
) -> LinearRepresentation:
    """Fit M (and the per-power maps M_p) on ``train`` orbits (N, n, d), ridge chosen on ``val``.

    Both arguments are tensors of shape (N, n, d) or :class:`~equisae.activations.OrbitActivations`
    whose pose axis is the cyclic powers ``g^0 .. g^{n-1}``. Raises ValueError on mismatched
    shapes, non-finite values, or fewer training examples than the kept rank.
    """
    group_name = getattr(train, "group_name", None)
    if group_name is not None and not str(group_name).upper().startswith("C"):
        raise ValueError(f"the linear-representation fit needs a cyclic group, got {group_name!r}")
    tr, va = _as_orbit(train, "train"), _as_orbit(val, "val")
    if tr.shape[1:] != va.shape[1:]:
        raise ValueError(
            f"train and val activations must share (n, d), got {tuple(tr.shape[1:])} "
            f"and {tuple(va.shape[1:])}"
        )
    if not ridge_grid or any(float(a) < 0 for a in ridge_grid):
        raise ValueError(f"ridge_grid must be a non-empty list of alphas >= 0, got {ridge_grid}")
    n_train, n, d = tr.shape
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
    step = torch.roll(zt, shifts=-1, dims=1)  # step[:, p] = z_{p+1 mod n}
    step_val = torch.roll(zv, shifts=-1, dims=1)
    m_red, alpha, val_r2 = _RidgeFitter(zt.reshape(-1, r), zv.reshape(-1, r)).fit(
        step.reshape(-1, r), step_val.reshape(-1, r), ridge_grid
    )
    per_power, alphas = [], []
    from_canonical = _RidgeFitter(zt[:, 0], zv[:, 0])
    for p in range(n):
        m_p, a_p, _ = from_canonical.fit(zt[:, p], zv[:, p], ridge_grid)
        per_power.append(m_p)
        alphas.append(a_p)
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
    )


# --------------------------------------------------------------------------- evaluation
@dataclass
class LinRepResult:
    """Held-out fit quality and group-structure diagnostics of a fitted M (see module doc)."""

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
    """Held-out R^2 per power on ``test`` orbits (N, n, d) and the group diagnostics of M.

    ``r2_single[p]``: R^2 of ``M^p h(x)`` for ``h(g^p x)``; ``r2_identity[p]``: of ``h(x)``
    itself; ``r2_per_power[p]``: of the separately fitted ``M_p h(x)``, all with x the canonical
    test images and R^2 pooled over dimensions (SST around the target mean).
    ``group_error = ||M^n - I||_F / ||I||_F`` and ``power_consistency[p] =
    ||M_p - M^p||_F / ||M_p||_F`` are computed in the kept subspace, as are the eigenvalues,
    the irrep multiplicities from the character, and the relative distance to the nearest
    orthogonal matrix (raw, and after whitening by the training covariance, in which an exact
    representation of a G-invariant distribution is orthogonal).
    """
    te = _as_orbit(test, "test")
    if te.shape[1:] != (rep.n, rep.dim):
        raise ValueError(
            f"test activations must have shape (N, {rep.n}, {rep.dim}), got {tuple(te.shape)}"
        )
    n = rep.n
    h0 = te[:, 0]
    r2_single, r2_identity, r2_pp = [], [], []
    for p in range(n):
        r2_single.append(r2_score(rep.predict(h0, p), te[:, p]))
        r2_identity.append(r2_score(h0, te[:, p]))
        r2_pp.append(r2_score(rep.predict(h0, p, per_power=True), te[:, p]))
    m = rep.M_reduced
    powers = matrix_powers(m, n)
    consistency = [
        float(
            torch.linalg.matrix_norm(rep.per_power_reduced[p] - powers[p])
            / torch.linalg.matrix_norm(rep.per_power_reduced[p]).clamp_min(1e-300)
        )
        for p in range(n)
    ]
    eig = torch.linalg.eigvals(m)
    dist = root_of_unity_distance(eig, n)
    raw = irrep_multiplicities(m, n)
    scale = rep.variances.clamp_min(1e-300).sqrt()
    whitened = m * scale.reciprocal().reshape(-1, 1) * scale.reshape(1, -1)
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
        group_error=group_error(m, n),
        group_error_weighted=weighted_group_error(m, n, rep.variances),
        power_consistency=consistency,
        eigenvalues=eig.numpy(),
        root_distance_max=float(dist.max()),
        root_distance_mean=float(dist.mean()),
        irrep_multiplicities={k: int(round(v)) for k, v in raw.items()},
        irrep_multiplicities_raw=raw,
        orthogonality_error=orthogonality_error(m),
        whitened_orthogonality_error=orthogonality_error(whitened),
    )


def analyse_linear_representation(
    train: Any,
    val: Any,
    test: Any,
    ridge_grid: Sequence[float] = DEFAULT_RIDGE_GRID,
    rank_tol: float = DEFAULT_RANK_TOL,
    max_dim: int | None = None,
) -> tuple[LinearRepresentation, LinRepResult]:
    """Fit on ``train`` (ridge chosen on ``val``) and evaluate on ``test``: (fit, result)."""
    rep = fit_linear_representation(train, val, ridge_grid, rank_tol, max_dim)
    return rep, evaluate_linear_representation(rep, test)
