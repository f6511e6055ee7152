"""Planted ground-truth features under a known orthogonal representation R of a cyclic group.

The toy setting of the paper's v2: ``n`` unit features ``f_i`` in ``R^d``, a representation
``R`` of ``C_n`` (orthogonal, ``R^n = I`` and no smaller power is ``I``) with chosen real
irreducible multiplicities, and orbit activations

    h_p = R^p (sum_i a_i f_i) + noise_p,   p = 0 .. |G|-1,

where each sample switches on a sparse random set of features with non-negative amplitudes.
Pose 0 is the canonical pose: there the features appear untransformed. The module also holds
the metrics that need the ground truth: feature recovery (up to the group) and detection F1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ToyConfig",
    "ToyData",
    "PlantedToy",
    "irrep_dims",
    "default_multiplicities",
    "cyclic_representation",
    "fixed_subspace",
    "make_planted",
    "feature_recovery",
    "detection_f1",
    "top1_detection",
]


@dataclass(frozen=True)
class ToyConfig:
    """Sizes of one planted problem.

    ``multiplicities[k]`` is the number of copies of the real irrep ``k`` of ``C_n``
    (``k = 0``: trivial, 1-D; ``k = n/2`` for even ``n``: sign, 1-D; otherwise the 2-D rotation
    by ``2 pi k / n``); ``None`` fills ``d`` evenly. ``n_invariant`` of the features are drawn
    from the fixed subspace of ``R`` (G-invariant features). ``active`` is the expected number of
    active features per sample; ``noise`` the expected norm of the per-pose Gaussian noise.
    """

    d: int = 16
    n_features: int = 16
    group_order: int = 4
    multiplicities: tuple[int, ...] | None = None
    n_invariant: int = 0
    active: float = 2.0
    noise: float = 0.0
    amp_low: float = 0.5
    amp_high: float = 1.5

    def __post_init__(self) -> None:
        if self.d < 1:
            raise ValueError(f"ToyConfig.d must be >= 1, got {self.d}")
        if self.group_order < 1:
            raise ValueError(f"ToyConfig.group_order must be >= 1, got {self.group_order}")
        if self.n_features < 1:
            raise ValueError(f"ToyConfig.n_features must be >= 1, got {self.n_features}")
        if not 0 <= self.n_invariant <= self.n_features:
            raise ValueError(
                f"ToyConfig.n_invariant must be in [0, n_features={self.n_features}], "
                f"got {self.n_invariant}"
            )
        if not 0 < self.active <= self.n_features:
            raise ValueError(
                f"ToyConfig.active must be in (0, n_features={self.n_features}], got {self.active}"
            )
        if self.noise < 0:
            raise ValueError(f"ToyConfig.noise must be >= 0, got {self.noise}")
        if not 0 <= self.amp_low <= self.amp_high:
            raise ValueError(
                f"ToyConfig amplitudes need 0 <= amp_low <= amp_high, got "
                f"{self.amp_low}, {self.amp_high}"
            )

    def to_dict(self) -> dict:
        """Plain-dict form (for hashing and results files)."""
        return asdict(self)


@dataclass
class ToyData:
    """One split: orbit activations ``(N, |G|, d)``, presence ``(N, n)`` bool, amplitudes."""

    acts: Tensor
    presence: Tensor
    amplitudes: Tensor

    def flat(self) -> tuple[Tensor, Tensor]:
        """Activations ``(N |G|, d)`` and the presence of each feature repeated per pose."""
        n, order, d = self.acts.shape
        return self.acts.reshape(n * order, d), self.presence.repeat_interleave(order, dim=0)


@dataclass
class PlantedToy:
    """A planted problem: its config, features ``(n, d)``, representation ``R (d, d)``, splits."""

    config: ToyConfig
    features: Tensor
    R: Tensor
    train: ToyData
    test: ToyData

    def powers(self) -> Tensor:
        """``R^p`` for ``p = 0 .. |G|-1`` as a ``(|G|, d, d)`` tensor."""
        return matrix_powers(self.R, self.config.group_order)


def irrep_dims(order: int) -> list[int]:
    """Dimensions of the real irreps ``k = 0 .. floor(order/2)`` of ``C_order``."""
    if order < 1:
        raise ValueError(f"group order must be >= 1, got {order}")
    return [1 if (k == 0 or 2 * k == order) else 2 for k in range(order // 2 + 1)]


def default_multiplicities(order: int, d: int) -> tuple[int, ...]:
    """Fill ``d`` dimensions with irreps in turn (faithful ``k = 1`` first), as evenly as possible."""
    dims = irrep_dims(order)
    mult = [0] * len(dims)
    # Order of preference: the faithful irrep first so that R has order exactly `order`.
    faithful = 1 if order > 1 else 0
    sequence = [faithful] + [k for k in range(len(dims)) if k != faithful]
    left = d
    while left > 0:
        placed = False
        for k in sequence:
            if dims[k] <= left:
                mult[k] += 1
                left -= dims[k]
                placed = True
            if left == 0:
                break
        if not placed:  # only 2-D irreps remain and one dimension is left: use the trivial one
            mult[0] += left
            left = 0
    return tuple(mult)


def matrix_powers(mat: Tensor, order: int) -> Tensor:
    """``mat^p`` for ``p = 0 .. order-1`` stacked as ``(order, d, d)``."""
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {tuple(mat.shape)}")
    out = [torch.eye(mat.shape[0], dtype=mat.dtype, device=mat.device)]
    for _ in range(1, order):
        out.append(out[-1] @ mat)
    return torch.stack(out)


def _irrep_block(order: int, k: int) -> np.ndarray:
    if k == 0:
        return np.ones((1, 1))
    if 2 * k == order:
        return -np.ones((1, 1))
    angle = 2 * math.pi * k / order
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _random_orthogonal(d: int, gen: torch.Generator) -> np.ndarray:
    a = torch.randn(d, d, generator=gen, dtype=torch.float64).numpy()
    q, r = np.linalg.qr(a)
    return q * np.sign(np.diag(r))[None, :]


def cyclic_representation(
    order: int,
    d: int,
    multiplicities: tuple[int, ...] | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """A random orthogonal representation of ``C_order`` on ``R^d`` of order exactly ``order``.

    Returns ``(R, Q, labels)``: ``R = Q B Q^T`` with ``B`` block diagonal in the real irreps,
    ``Q`` the orthogonal basis change and ``labels[j]`` the irrep index of basis column ``j``.
    """
    dims = irrep_dims(order)
    mult = default_multiplicities(order, d) if multiplicities is None else tuple(multiplicities)
    if len(mult) != len(dims) or any(m < 0 for m in mult):
        raise ValueError(
            f"multiplicities must be {len(dims)} non-negative counts for C{order}, got {mult}"
        )
    total = sum(m * dk for m, dk in zip(mult, dims, strict=True))
    if total != d:
        raise ValueError(f"multiplicities {mult} span {total} dimensions, but d = {d}")
    blocks, labels = [], []
    for k, m in enumerate(mult):
        for _ in range(m):
            blocks.append(_irrep_block(order, k))
            labels.extend([k] * dims[k])
    b = np.zeros((d, d))
    i = 0
    for blk in blocks:
        n = blk.shape[0]
        b[i : i + n, i : i + n] = blk
        i += n
    gen = torch.Generator().manual_seed(seed)
    q = _random_orthogonal(d, gen)
    r = q @ b @ q.T
    eye = np.eye(d)
    power = eye.copy()
    for j in range(1, order):
        power = power @ r
        if np.allclose(power, eye, atol=1e-8):
            raise ValueError(
                f"multiplicities {mult} give a representation of order {j}, not {order}: "
                "include an irrep whose frequency k is coprime with the group order"
            )
    if order > 0 and not np.allclose(power @ r, eye, atol=1e-8):
        raise AssertionError("internal error: R^order != I")
    return (
        torch.from_numpy(r).float(),
        torch.from_numpy(q).float(),
        torch.tensor(labels, dtype=torch.long),
    )


def fixed_subspace(R: Tensor, order: int, tol: float = 1e-4) -> Tensor:
    """Orthonormal basis ``(d, m)`` of the vectors fixed by ``R`` (the G-invariant subspace)."""
    proj = matrix_powers(R.double(), order).mean(0)  # group average: projector onto fixed space
    u, s, _ = torch.linalg.svd(proj)
    return u[:, s > 1 - tol].float()


def _sample(cfg: ToyConfig, features: Tensor, R: Tensor, n: int, gen: torch.Generator) -> ToyData:
    if n < 1:
        raise ValueError(f"number of samples must be >= 1, got {n}")
    prob = cfg.active / cfg.n_features
    presence = torch.rand(n, cfg.n_features, generator=gen) < prob
    amps = cfg.amp_low + (cfg.amp_high - cfg.amp_low) * torch.rand(n, cfg.n_features, generator=gen)
    amps = amps * presence
    canonical = amps @ features  # (n, d)
    powers = matrix_powers(R, cfg.group_order)  # (G, d, d)
    acts = torch.einsum("pij,nj->npi", powers, canonical)
    if cfg.noise > 0:
        acts = acts + cfg.noise / math.sqrt(cfg.d) * torch.randn(acts.shape, generator=gen)
    return ToyData(acts=acts.contiguous(), presence=presence, amplitudes=amps)


def make_planted(cfg: ToyConfig, n_train: int, n_test: int, seed: int = 0) -> PlantedToy:
    """Draw R, the features and train/test orbit activations, all from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    rep_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    R, _, _ = cyclic_representation(cfg.group_order, cfg.d, cfg.multiplicities, seed=rep_seed)
    feats = torch.randn(cfg.n_features, cfg.d, generator=gen)
    if cfg.n_invariant:
        basis = fixed_subspace(R, cfg.group_order)
        if basis.shape[1] == 0:
            raise ValueError(
                "ToyConfig.n_invariant > 0 needs a trivial irrep (multiplicities[0] > 0)"
            )
        coeffs = torch.randn(cfg.n_invariant, basis.shape[1], generator=gen)
        feats[: cfg.n_invariant] = coeffs @ basis.T
    feats = feats / feats.norm(dim=1, keepdim=True)
    train = _sample(cfg, feats, R, n_train, gen)
    test = _sample(cfg, feats, R, n_test, gen)
    return PlantedToy(config=cfg, features=feats, R=R, train=train, test=test)


# --------------------------------------------------------------------------- metrics


def feature_recovery(atoms: Tensor, features: Tensor, R: Tensor | None = None) -> dict:
    """Mean over true features of the max cosine with any decoder atom, up to the group.

    ``atoms`` is ``(n_atoms, d)``; with ``R`` given the match may be to ``R^p f_i`` for any ``p``
    (the order of ``R`` is found as its smallest power equal to the identity, at most 64).
    Returns ``{"recovery": mean, "per_feature": (n,) tensor, "best_atom": (n,) long}``.
    """
    if atoms.ndim != 2 or features.ndim != 2 or atoms.shape[1] != features.shape[1]:
        raise ValueError(
            f"atoms (n_atoms, d) and features (n, d) must share d, got {tuple(atoms.shape)} "
            f"and {tuple(features.shape)}"
        )
    feats = features.float()
    variants = [feats]
    if R is not None:
        eye = torch.eye(R.shape[0])
        power = R.float()
        while not torch.allclose(power, eye, atol=1e-4):
            variants.append(feats @ power.T)
            power = power @ R.float()
            if len(variants) > 64:
                raise ValueError("R does not have finite order <= 64")
    a = torch.nn.functional.normalize(atoms.float(), dim=1)
    sims = torch.stack([torch.nn.functional.normalize(v, dim=1) @ a.T for v in variants])
    best_over_pose = sims.max(0).values  # (n, n_atoms)
    best, idx = best_over_pose.max(1)
    return {"recovery": float(best.mean()), "per_feature": best, "best_atom": idx}


def _f1_matrix(fires: Tensor, presence: Tensor) -> Tensor:
    """F1 of every latent's firing (n_samples, L) against every feature (n_samples, n): (n, L)."""
    f = fires.float()
    t = presence.float()
    tp = t.T @ f  # (n, L)
    n_fire = f.sum(0, keepdim=True)
    n_true = t.sum(0).unsqueeze(1)
    denom = n_fire + n_true
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1e-12), torch.zeros_like(tp))


def _check_latents(latents: Tensor, presence: Tensor, name: str) -> None:
    if latents.ndim != 2 or presence.ndim != 2 or latents.shape[0] != presence.shape[0]:
        raise ValueError(
            f"{name}: latents (n_samples, L) and presence (n_samples, n) must share n_samples, "
            f"got {tuple(latents.shape)} and {tuple(presence.shape)}"
        )


def detection_f1(
    latents_train: Tensor,
    presence_train: Tensor,
    latents_test: Tensor,
    presence_test: Tensor,
) -> dict:
    """Detection F1: each feature's best latent (by F1 of ``latent > 0``) on the training split,
    scored on the test split. Returns ``{"detection_f1": mean, "per_feature", "latent"}``."""
    _check_latents(latents_train, presence_train, "train")
    _check_latents(latents_test, presence_test, "test")
    if latents_train.shape[1] != latents_test.shape[1]:
        raise ValueError("train and test latents must have the same number of latents")
    best = _f1_matrix(latents_train > 0, presence_train).argmax(1)  # (n,)
    test_f1 = _f1_matrix(latents_test[:, best] > 0, presence_test)
    per_feature = test_f1.diagonal()
    return {"detection_f1": float(per_feature.mean()), "per_feature": per_feature, "latent": best}


def top1_detection(
    latents_train: Tensor,
    presence_train: Tensor,
    latents_test: Tensor,
    presence_test: Tensor,
) -> dict:
    """Top-1 sparse probing: per feature the latent with the largest gap in mean activation
    (present minus absent) on the training split, a threshold on it chosen to maximise training
    F1, and the test F1 of that one-latent classifier. Returns ``{"top1_detection", ...}``."""
    _check_latents(latents_train, presence_train, "train")
    _check_latents(latents_test, presence_test, "test")
    z, t = latents_train.float(), presence_train.bool()
    n_pos = t.sum(0).clamp_min(1).float()
    n_neg = (~t).sum(0).clamp_min(1).float()
    mean_pos = (t.float().T @ z) / n_pos[:, None]
    mean_neg = ((~t).float().T @ z) / n_neg[:, None]
    best = (mean_pos - mean_neg).argmax(1)  # (n,)
    per_feature = torch.empty(t.shape[1])
    for i in range(t.shape[1]):
        score = z[:, best[i]]
        order = torch.argsort(score, descending=True)
        labels = t[order, i].float()
        tp = labels.cumsum(0)
        n_pred = torch.arange(1, len(labels) + 1, dtype=torch.float32)
        f1 = 2 * tp / (n_pred + labels.sum()).clamp_min(1e-12)
        # Only thresholds between distinct scores are realisable.
        s = score[order]
        valid = torch.ones_like(f1, dtype=torch.bool)
        valid[:-1] = s[:-1] != s[1:]
        j = int(torch.where(valid, f1, torch.full_like(f1, -1.0)).argmax())
        # Threshold half-way to the next lower score, so a test score between them counts.
        threshold = float(s[j]) if j == len(s) - 1 else float(s[j] + s[j + 1]) / 2
        pred = latents_test[:, best[i]].float() >= threshold
        per_feature[i] = _f1_matrix(pred[:, None], presence_test[:, i : i + 1])[0, 0]
    return {"top1_detection": float(per_feature.mean()), "per_feature": per_feature, "latent": best}
