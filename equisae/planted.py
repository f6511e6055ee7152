"""Planted ground-truth features under a known orthogonal representation of C_n or D_n.

The toy setting of the paper's v2: ``n`` unit features ``f_i`` in ``R^d``, a faithful
orthogonal representation ``rho`` of the group (C4 by default, or D4) with chosen real
irreducible multiplicities, given by its generator matrices (``R`` the rotation, ``S`` the flip
of D_n; built in :mod:`equisae.groups`), and orbit activations

    h_a = rho(a) (sum_i a_i f_i) + noise_a,   a = 0 .. |G|-1 (the group's element order),

where each sample switches on a sparse random set of features with non-negative amplitudes.
For C_n, ``rho(g^p) = R^p``. Pose 0 is the canonical pose: there the features appear
untransformed. The module also holds the metrics that need the ground truth: feature recovery
(up to the group) and detection F1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from equisae.groups import (
    CyclicGroup,
    DihedralGroup,
    Group,
    as_group,
    get_group,
    invariant_subspace,
    irrep_dim,
    irrep_names,
    matrix_powers,
    representation_from_irreps,
    representation_matrices,
)

__all__ = [
    "ToyConfig",
    "ToyData",
    "PlantedToy",
    "irrep_dims",
    "default_multiplicities",
    "multiplicity_names",
    "cyclic_representation",
    "planted_representation",
    "matrix_powers",
    "fixed_subspace",
    "make_planted",
    "feature_recovery",
    "detection_f1",
    "top1_detection",
]


@dataclass(frozen=True)
class ToyConfig:
    """Sizes of one planted problem.

    ``group`` is ``"C4"`` (default), ``"D4"``, ... and ``group_order`` its order |G| (the
    number of poses); give either (``group_order=k`` alone means ``C_k``), both are set after
    construction. ``multiplicities[j]`` is the number of copies of the real irrep
    ``multiplicity_names(group)[j]``: for ``C_n`` by frequency ``k = j`` (``k = 0``: trivial,
    1-D; ``k = n/2`` for even ``n``: sign, 1-D; otherwise the 2-D rotation by ``2 pi k / n``),
    for ``D_n`` in the order of :func:`equisae.groups.irrep_names`; ``None`` fills ``d``
    evenly. ``n_invariant`` of the features are drawn from the subspace fixed by the group
    (G-invariant features). ``active`` is the expected number of active features per sample;
    ``noise`` the expected norm of the per-pose Gaussian noise.
    """

    d: int = 16
    n_features: int = 16
    group_order: int | None = None
    multiplicities: tuple[int, ...] | None = None
    n_invariant: int = 0
    active: float = 2.0
    noise: float = 0.0
    amp_low: float = 0.5
    amp_high: float = 1.5
    group: str | None = None

    def __post_init__(self) -> None:
        if self.d < 1:
            raise ValueError(f"ToyConfig.d must be >= 1, got {self.d}")
        self._resolve_group()
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

    def _resolve_group(self) -> None:
        """Set ``group`` and ``group_order`` from whichever was given (C4 if neither)."""
        order = self.group_order
        if order is not None and (isinstance(order, bool) or not isinstance(order, int)):
            raise ValueError(f"ToyConfig.group_order must be an int >= 1, got {order!r}")
        if order is not None and order < 1:
            raise ValueError(f"ToyConfig.group_order must be >= 1, got {order}")
        if self.group is None:
            name = f"C{4 if order is None else order}"
        else:
            try:
                name = get_group(self.group).name
            except (KeyError, ValueError) as err:
                raise ValueError(f"ToyConfig.group: {err.args[0]}") from None
        size = get_group(name).order
        if order is not None and order != size:
            raise ValueError(
                f"ToyConfig.group_order must be the order of {name} ({size}), got {order}; "
                "give only one of group and group_order"
            )
        object.__setattr__(self, "group", name)
        object.__setattr__(self, "group_order", size)

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
    """A planted problem: its config, features ``(n, d)``, the rotation generator ``R (d, d)``,
    the splits, and for D_n the flip generator ``S (d, d)``."""

    config: ToyConfig
    features: Tensor
    R: Tensor
    train: ToyData
    test: ToyData
    S: Tensor | None = None

    @property
    def group(self) -> Group:
        """The planted group."""
        return get_group(self.config.group)

    def generators(self) -> dict[str, Tensor]:
        """The generator matrices: ``{"r": R}`` for C_n, ``{"r": R, "s": S}`` for D_n."""
        return {"r": self.R} if self.S is None else {"r": self.R, "s": self.S}

    def powers(self) -> Tensor:
        """``rho(a)`` for every element ``a`` as a ``(|G|, d, d)`` tensor (``R^p`` for C_n)."""
        return representation_matrices(self.group, self.generators())


def irrep_dims(order: int) -> list[int]:
    """Dimensions of the real irreps ``k = 0 .. floor(order/2)`` of ``C_order``."""
    if order < 1:
        raise ValueError(f"group order must be >= 1, got {order}")
    return [1 if (k == 0 or 2 * k == order) else 2 for k in range(order // 2 + 1)]


def multiplicity_names(group: Group | str | int) -> list[str]:
    """The irrep counted by each entry of :attr:`ToyConfig.multiplicities` (an int means C_n).

    C_n: by frequency ``k = 0 .. floor(n/2)`` (trivial, rotation_1, ..., sign for even n);
    D_n: :func:`equisae.groups.irrep_names`.
    """
    group = as_group(group)
    if isinstance(group, DihedralGroup):
        return irrep_names(group)
    n = group.n
    return ["trivial"] + ["sign" if 2 * k == n else f"rotation_{k}" for k in range(1, n // 2 + 1)]


def _fill(dims: list[int], faithful: int, d: int) -> tuple[int, ...]:
    """Irreps of dimensions ``dims`` in turn (``faithful`` first) until ``d`` is filled."""
    mult = [0] * len(dims)
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


def default_multiplicities(order: int | str | Group, d: int) -> tuple[int, ...]:
    """Fill ``d`` dimensions with irreps in turn (a faithful one first), as evenly as possible.

    ``order`` is the order of a cyclic group (``C_order``) or a group (``"D4"``); the counts
    follow :func:`multiplicity_names`.
    """
    if isinstance(order, (str, Group)):
        group = as_group(order)
        names = multiplicity_names(group)
        dims = [irrep_dim(group, name) for name in names]
        if isinstance(group, DihedralGroup):
            faithful = names.index("rotation_1") if "rotation_1" in names else min(1, len(names))
            return _fill(dims, faithful, d)
        order = group.order
    # The faithful irrep (k = 1) first so that R has order exactly `order`.
    return _fill(irrep_dims(order), 1 if order > 1 else 0, d)


def planted_representation(
    group: Group | str | int,
    d: int,
    multiplicities: tuple[int, ...] | None = None,
    seed: int = 0,
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """A random faithful orthogonal representation of ``group`` on ``R^d``.

    ``rho(a) = Q B(a) Q^T`` with ``B`` block diagonal in the real irreps (counts as in
    :func:`multiplicity_names`, ``None``: :func:`default_multiplicities`) and ``Q`` a seeded
    random orthogonal matrix. Returns ``(generators, Q, labels)``, float32: the generator
    matrices (``"r"``, and ``"s"`` for D_n), Q, and ``labels[j]`` the index (into
    :func:`multiplicity_names`) of the irrep of basis column ``j``.
    """
    group = as_group(group)
    names = multiplicity_names(group)
    dims = [irrep_dim(group, name) for name in names]
    mult = default_multiplicities(group, d) if multiplicities is None else tuple(multiplicities)
    if len(mult) != len(dims) or any(m < 0 for m in mult):
        raise ValueError(
            f"multiplicities must be {len(dims)} non-negative counts for {group.name} "
            f"({', '.join(names)}), got {mult}"
        )
    total = sum(m * dk for m, dk in zip(mult, dims, strict=True))
    if total != d:
        raise ValueError(f"multiplicities {mult} span {total} dimensions, but d = {d}")
    gens, q, labels = representation_from_irreps(group, dict(zip(names, mult, strict=True)), seed)
    _check_faithful(group, gens, mult)
    return (
        {k: v.float() for k, v in gens.items()},
        q.float(),
        torch.tensor([names.index(name) for name in labels], dtype=torch.long),
    )


def _check_faithful(group: Group, gens: dict[str, Tensor], mult: tuple[int, ...]) -> None:
    """Raise ValueError unless only the identity acts as the identity."""
    mats = representation_matrices(group, gens)
    eye = torch.eye(mats.shape[1], dtype=mats.dtype)
    for a in range(1, group.order):
        if torch.allclose(mats[a], eye, atol=1e-8):
            if isinstance(group, CyclicGroup):
                raise ValueError(
                    f"multiplicities {mult} give a representation of order {a}, not "
                    f"{group.order}: include an irrep whose frequency k is coprime with the "
                    "group order"
                )
            raise ValueError(
                f"multiplicities {mult} give a representation of {group.name} that is not "
                f"faithful (element {a} acts as the identity): include rotation_1"
            )
    if group.relation_error(mats) > 1e-8:
        raise AssertionError(f"internal error: not a representation of {group.name}")


def cyclic_representation(
    order: int,
    d: int,
    multiplicities: tuple[int, ...] | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """A random orthogonal representation of ``C_order`` on ``R^d`` of order exactly ``order``.

    Returns ``(R, Q, labels)``: ``R = Q B Q^T`` with ``B`` block diagonal in the real irreps,
    ``Q`` the orthogonal basis change and ``labels[j]`` the irrep index of basis column ``j``
    (see :func:`planted_representation`).
    """
    if order < 1:
        raise ValueError(f"group order must be >= 1, got {order}")
    gens, q, labels = planted_representation(CyclicGroup(order), d, multiplicities, seed)
    return gens["r"], q, labels


def fixed_subspace(R: Tensor, order: int, tol: float = 1e-4) -> Tensor:
    """Orthonormal basis ``(d, m)`` of the vectors fixed by ``R`` (the G-invariant subspace of
    C_order); for any group, :func:`equisae.groups.invariant_subspace` of ``rho``."""
    return invariant_subspace(matrix_powers(R.double(), order), tol).float()


def _sample(
    cfg: ToyConfig, features: Tensor, mats: Tensor, n: int, gen: torch.Generator
) -> ToyData:
    """``n`` orbits: canonical sparse sums of the features, acted on by every ``mats[a]``."""
    if n < 1:
        raise ValueError(f"number of samples must be >= 1, got {n}")
    prob = cfg.active / cfg.n_features
    presence = torch.rand(n, cfg.n_features, generator=gen) < prob
    amps = cfg.amp_low + (cfg.amp_high - cfg.amp_low) * torch.rand(n, cfg.n_features, generator=gen)
    amps = amps * presence
    canonical = amps @ features  # (n, d)
    acts = torch.einsum("pij,nj->npi", mats, canonical)
    if cfg.noise > 0:
        acts = acts + cfg.noise / math.sqrt(cfg.d) * torch.randn(acts.shape, generator=gen)
    return ToyData(acts=acts.contiguous(), presence=presence, amplitudes=amps)


def make_planted(cfg: ToyConfig, n_train: int, n_test: int, seed: int = 0) -> PlantedToy:
    """Draw the representation, the features and train/test orbit activations from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    rep_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    group = get_group(cfg.group)
    gens, _, _ = planted_representation(group, cfg.d, cfg.multiplicities, seed=rep_seed)
    feats = torch.randn(cfg.n_features, cfg.d, generator=gen)
    if cfg.n_invariant:
        basis = invariant_subspace(
            representation_matrices(group, {k: v.double() for k, v in gens.items()})
        ).float()
        if basis.shape[1] == 0:
            raise ValueError(
                "ToyConfig.n_invariant > 0 needs a trivial irrep (multiplicities[0] > 0)"
            )
        coeffs = torch.randn(cfg.n_invariant, basis.shape[1], generator=gen)
        feats[: cfg.n_invariant] = coeffs @ basis.T
    feats = feats / feats.norm(dim=1, keepdim=True)
    mats = representation_matrices(group, gens)  # (|G|, d, d)
    train = _sample(cfg, feats, mats, n_train, gen)
    test = _sample(cfg, feats, mats, n_test, gen)
    return PlantedToy(
        config=cfg, features=feats, R=gens["r"], train=train, test=test, S=gens.get("s")
    )


# --------------------------------------------------------------------------- metrics


def feature_recovery(atoms: Tensor, features: Tensor, R: Tensor | None = None) -> dict:
    """Mean over true features of the max cosine with any decoder atom, up to the group.

    ``atoms`` is ``(n_atoms, d)``. ``R`` may be a (d, d) generator of a cyclic group: the match
    may be to ``R^p f_i`` for any ``p`` (the order of ``R`` is found as its smallest power equal
    to the identity, at most 64); or a ``(|G|, d, d)`` stack ``rho(a)`` of any group (e.g.
    :meth:`PlantedToy.powers` for D4): the match may be to any ``rho(a) f_i``.
    Returns ``{"recovery": mean, "per_feature": (n,) tensor, "best_atom": (n,) long}``.
    """
    if atoms.ndim != 2 or features.ndim != 2 or atoms.shape[1] != features.shape[1]:
        raise ValueError(
            f"atoms (n_atoms, d) and features (n, d) must share d, got {tuple(atoms.shape)} "
            f"and {tuple(features.shape)}"
        )
    feats = features.float()
    variants = [feats]
    if R is not None and R.ndim == 3:
        if R.shape[1:] != (feats.shape[1], feats.shape[1]):
            raise ValueError(
                f"R as a stack must have shape (|G|, {feats.shape[1]}, {feats.shape[1]}), "
                f"got {tuple(R.shape)}"
            )
        variants = [feats @ mat.float().T for mat in R]
    elif R is not None:
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
