"""The named sweeps (``frontier``, ``probing``, ``planted``) as jobs on :mod:`equisae.runner`.

Job graph for one base model and layer::

    InputsJob(model, layer, mode)           orbit activations cached, M fitted (linrep)
      -> SAEJob(..., sae_type, k, seed)      trains one SAE, saves it, frontier metrics
           -> ProbeJob(sae=SAEJob, ...)      F1 of probes on its latents per factor
      -> ReferenceProbeJob(..., "raw"|"random", ...)   probes on raw activations / a random SAE

Every setting that changes a job's output is a field of the job (nested frozen dataclasses
:class:`SAETraining` and :class:`ProbeSettings`), so artifacts are keyed by everything that made
them. :func:`sweep_settings` fixes the grid per mode; notebooks 05 and 06 and the CLI
(``equisae sweep frontier|probing|planted --mode quick|full``) build the same jobs from it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from equisae.runner import Job, JobResult

SAE_TYPES: tuple[str, ...] = ("topk", "batchtopk", "wide", "crosscoder", "equivariant", "adaptive")
#: SAE types trained on whole orbits (B, |G|, d) rather than on single activations.
ORBIT_SAE_TYPES: tuple[str, ...] = ("crosscoder", "equivariant", "adaptive")
#: SAE types with G-invariant latents and an inferred pose.
EQUIVARIANT_SAE_TYPES: tuple[str, ...] = ("equivariant", "adaptive")
REFERENCES: tuple[str, ...] = ("raw", "random")
LAYER_ROLES: tuple[str, ...] = ("bottleneck", "intermediate")
MODES: tuple[str, ...] = ("quick", "full")
#: Test orbits the frontier metrics are computed on (a fixed subsample of the test split).
EVAL_ORBITS = 500
#: Feature sets a probe can read: the latents alone, or the latents conditioned on the inferred
#: pose (see :func:`pose_conditioned_features`).
FEATURE_SETS: tuple[str, ...] = ("latents", "latents+pose")


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SAETraining:
    """How an SAE of the sweep is sized and trained (part of every SAE job's hash)."""

    n_steps: int = 600
    batch_size: int = 256  # activations per step; orbit SAEs take batch_size // |G| orbits
    lr: float = 1e-3
    expansion: int = 4  # d_sae = expansion * d_in, capped at max_d_sae
    max_d_sae: int = 256
    lambda_inv: float = 1.0
    lambda_eq: float = 1.0

    def __post_init__(self) -> None:
        for name in ("n_steps", "batch_size", "expansion", "max_d_sae"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SAETraining.{name} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"SAETraining.lr must be a positive number, got {self.lr!r}")

    def d_sae(self, d_in: int) -> int:
        """Dictionary size for activations of dimension ``d_in``."""
        return min(self.expansion * d_in, self.max_d_sae)


@dataclass(frozen=True)
class ProbeSettings:
    """Which factors are probed, with which probe sizes, on how much data."""

    factors: tuple[str, ...] = ("shape", "colour", "scale", "quadrant", "orientation")
    probe_ks: tuple[int | None, ...] = (None, 1, 2, 5, 16)
    c_grid: tuple[float, ...] = (0.01, 0.1, 1.0)
    max_orbits: tuple[int, int, int] = (400, 200, 250)  # train, val, test orbits (x |G| rows)
    max_iter: int = 100
    tol: float = 1e-3
    #: factors also probed on latents + one-hot inferred pose (equivariant SAEs only)
    pose_factors: tuple[str, ...] = ("quadrant", "orientation")
    subsample_seed: int = 0

    def __post_init__(self) -> None:
        if not self.factors:
            raise ValueError("ProbeSettings.factors must name at least one factor")
        if len(self.max_orbits) != 3 or any(n < 1 for n in self.max_orbits):
            raise ValueError(
                f"ProbeSettings.max_orbits must be 3 positive ints, got {self.max_orbits}"
            )


@dataclass(frozen=True)
class SweepSettings:
    """The grid of one mode: targets (model, layer), SAE types, k, seeds, and their settings."""

    mode: str
    targets: tuple[tuple[str, str], ...]
    sae_types: tuple[str, ...]
    ks: tuple[int, ...]
    seeds: tuple[int, ...]
    probe_k: int  # the SAE k (matched L0) at which every SAE type is probed
    training: SAETraining
    probing: ProbeSettings
    #: a smaller k sweep for the (wider, costlier) intermediate layers; None: ``ks``
    intermediate_ks: tuple[int, ...] | None = None
    #: seeds of the random-dictionary reference
    reference_seeds: tuple[int, ...] = (0,)
    data_seed: int = 0

    def ks_for(self, layer: str) -> tuple[int, ...]:
        """The k sweep of a layer (always containing ``probe_k``)."""
        if layer == "intermediate" and self.intermediate_ks is not None:
            return self.intermediate_ks
        return self.ks


def sweep_settings(mode: str) -> SweepSettings:
    """The grid per mode, sized so notebooks 05 + 06 stay within their CPU budget.

    ``full``: the bottleneck of all five base models (k in {4, 8, 16, 32}) and the intermediate
    layer of ``cnn_augmented`` and ``gcnn`` (k = 8 only: d = 512 makes those jobs several times
    costlier); every SAE type; 3 seeds; probes at
    k = 8 with probe sizes all, 1, 2, 5, 16. ``quick``: the bottleneck of ``cnn_augmented`` and
    ``gcnn``; every SAE type; k in {4, 16}; one seed; shorter training, probes at k = 4 with
    probe sizes all and 2 on smaller subsamples.
    """
    from equisae.models import MODEL_NAMES

    _check_mode(mode)
    if mode == "full":
        targets = tuple((m, "bottleneck") for m in MODEL_NAMES) + (
            ("cnn_augmented", "intermediate"),
            ("gcnn", "intermediate"),
        )
        return SweepSettings(
            mode=mode,
            targets=targets,
            sae_types=SAE_TYPES,
            ks=(4, 8, 16, 32),
            seeds=(0, 1, 2),
            probe_k=8,
            training=SAETraining(n_steps=300, batch_size=256, max_d_sae=256),
            probing=ProbeSettings(c_grid=(0.1, 1.0), max_orbits=(600, 200, 400)),
            intermediate_ks=(8,),
            reference_seeds=(0, 1, 2),
        )
    return SweepSettings(
        mode=mode,
        targets=(("cnn_augmented", "bottleneck"), ("gcnn", "bottleneck")),
        sae_types=SAE_TYPES,
        ks=(4, 16),
        seeds=(0,),
        probe_k=4,
        training=SAETraining(n_steps=200, batch_size=256, max_d_sae=256),
        probing=ProbeSettings(
            probe_ks=(None, 2), c_grid=(0.1, 1.0), max_orbits=(150, 75, 100), max_iter=100
        ),
    )


# ------------------------------------------------------------------------------------------
# Data access
# ------------------------------------------------------------------------------------------


def orbit_split(model_name: str, layer: str, mode: str, seed: int, split: str):
    """Orbit activations (``OrbitActivations``) of one split, from the cached pipeline."""
    from equisae import pipeline

    _check_choice("layer", layer, LAYER_ROLES)
    return pipeline.orbit_activations_for(model_name, layer, mode, seed, split, progress=False)


def full_rank_representation(rep: Any) -> Tensor:
    """The fitted generator as an invertible (d, d) matrix for an equivariant SAE.

    ``linrep`` fits ``M`` in the principal subspace (``basis``); outside it the activations have
    (almost) no variance, so there the map is taken to be the identity:
    ``M = B M_r B^T + (I - B B^T)``.
    """
    basis = rep.basis.double()
    d = basis.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    return (basis @ rep.M_reduced.double() @ basis.T + eye - basis @ basis.T).float()


def eval_batch_size(d: int, group_order: int = 4, budget_bytes: int = 256 * 2**20) -> int:
    """Orbits per evaluation batch so that per-row (d, d) representation matrices (equivariant
    SAEs gather one per activation) stay within ``budget_bytes``; at most 1024."""
    return int(max(8, min(1024, budget_bytes // (4 * group_order * d * d))))


def _gap_ranks(variances: Tensor, tol: float = 0.01) -> list[int]:
    """Ranks r that do not split a (near-)degenerate eigenvalue: v[r] < (1 - tol) v[r - 1]."""
    v = variances.double()
    return [r for r in range(1, len(v)) if v[r] < (1 - tol) * v[r - 1]] + [len(v)]


def sae_representation(train: Any, val: Any, variance: float = 0.99, min_modulus: float = 0.25):
    """The least-squares fit of M that the equivariant SAEs use, well conditioned.

    The fit in the full principal subspace can have eigenvalues near zero in directions of
    negligible variance, and the equivariant SAE canonicalises with ``M^{-p}``, which blows them
    up. So M is fitted in the leading principal subspace that holds ``variance`` of the training
    variance, without splitting a degenerate eigenvalue (that would break the irreducible
    subspaces of an exact representation), shrunk further while an eigenvalue of M has modulus
    below ``min_modulus``; outside it M is the identity (:func:`full_rank_representation`).
    """
    from equisae.linrep import fit_linear_representation

    full = fit_linear_representation(train, val)
    v = full.variances.double()
    share = v.cumsum(0) / v.sum()
    wanted = int((share < variance).sum()) + 1
    ranks = _gap_ranks(v)
    candidates = [r for r in ranks if r <= wanted][::-1] + [r for r in ranks if r > wanted][:1]
    candidates = sorted(set(candidates), key=lambda r: (r < wanted, -r if r < wanted else r))
    best = None
    for r in candidates[:12]:
        rep = fit_linear_representation(train, val, max_dim=r)
        modulus = float(torch.linalg.eigvals(rep.M_reduced).abs().min())
        if best is None or modulus > best[1]:
            best = (rep, modulus)
        if modulus >= min_modulus:
            return rep
    return best[0]


def subsample_orbits(n: int, limit: int, seed: int) -> Tensor:
    """Sorted indices of ``min(n, limit)`` orbits, chosen without replacement under ``seed``."""
    if n <= limit:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:limit].sort().values


# ------------------------------------------------------------------------------------------
# Building and training SAEs
# ------------------------------------------------------------------------------------------


def build_sae(
    sae_type: str,
    d_in: int,
    k: int,
    seed: int,
    training: SAETraining,
    M: Tensor | None = None,
    group_order: int = 4,
):
    """An untrained SAE of ``sae_type`` for activations of dimension ``d_in``."""
    from equisae.sae.adaptive import AdaptiveEquivariantSAE
    from equisae.sae.batchtopk import BatchTopKSAE
    from equisae.sae.crosscoder import GroupCrosscoder
    from equisae.sae.equivariant import EquivariantSAE
    from equisae.sae.topk import TopKSAE
    from equisae.sae.wide import WideSAE

    _check_choice("sae_type", sae_type, SAE_TYPES)
    d_sae = training.d_sae(d_in)
    if not 1 <= k <= d_sae:
        raise ValueError(f"k must be in 1..d_sae={d_sae}, got {k}")
    if sae_type in EQUIVARIANT_SAE_TYPES and M is None:
        raise ValueError(f"sae_type {sae_type!r} needs the fitted representation M")
    if sae_type == "topk":
        return TopKSAE(d_in, d_sae, k, seed=seed)
    if sae_type == "batchtopk":
        return BatchTopKSAE(d_in, d_sae, k, seed=seed)
    if sae_type == "wide":
        return WideSAE(d_in, d_sae, k, group_order=group_order, seed=seed)
    if sae_type == "crosscoder":
        return GroupCrosscoder(d_in, d_sae, k, group_order=group_order, seed=seed)
    if sae_type == "equivariant":
        return EquivariantSAE(d_in, d_sae, k, group_order=group_order, M=M, seed=seed)
    return AdaptiveEquivariantSAE(
        d_in,
        d_sae,
        k,
        group_order=group_order,
        M=M,
        lambda_inv=training.lambda_inv,
        lambda_eq=training.lambda_eq,
        seed=seed,
    )


def random_dictionary_sae(d_in: int, d_sae: int, k: int, seed: int, centre: Tensor | None = None):
    """The untrained reference: a TopK SAE with random unit decoder rows and encoder = decoder^T.

    ``centre`` (d_in,) sets ``b_dec`` (the training mean), so the random directions read
    centred activations like a trained SAE does.
    """
    from equisae.sae.topk import TopKSAE

    sae = TopKSAE(d_in, d_sae, k, seed=seed)  # W_dec random unit rows, W_enc = W_dec^T
    if centre is not None:
        if centre.shape != (d_in,):
            raise ValueError(f"centre must have shape ({d_in},), got {tuple(centre.shape)}")
        with torch.no_grad():
            sae.b_dec.copy_(centre.float())
    return sae.eval()


def train_sweep_sae(
    sae_type: str,
    train_acts: Tensor,
    k: int,
    seed: int,
    training: SAETraining,
    M: Tensor | None = None,
    progress: bool = False,
):
    """Build and train one SAE of the sweep on orbit activations (N, |G|, d); returns (sae, result)."""
    from equisae.sae.train import TrainConfig, minibatches, orbit_training_data, train_sae

    if train_acts.ndim != 3:
        raise ValueError(f"train_acts must have shape (N, |G|, d), got {tuple(train_acts.shape)}")
    _, order, d = train_acts.shape
    sae = build_sae(sae_type, d, k, seed, training, M=M, group_order=order)
    data, batch = orbit_training_data(train_acts, sae_type in ORBIT_SAE_TYPES, training.batch_size)
    cfg = TrainConfig(
        n_steps=training.n_steps,
        lr=training.lr,
        warmup_steps=min(50, training.n_steps // 10),
        seed=seed,
        dead_after=max(batch * 50, 5000),
    )
    result = train_sae(sae, minibatches(data, batch, training.n_steps, seed=seed), cfg, progress)
    return sae, result


# ------------------------------------------------------------------------------------------
# Jobs
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputsJob(Job):
    """Cache the orbit activations of every split and fit the representation ``M`` on them."""

    kind: ClassVar[str] = "sweep-inputs"
    version: ClassVar[int] = 3
    model_name: str
    layer: str
    mode: str
    data_seed: int = 0
    #: M for the SAEs is fitted in the principal subspace holding this fraction of the variance
    rep_variance: float = 0.99

    def __post_init__(self) -> None:
        _check_choice("layer", self.layer, LAYER_ROLES)
        _check_mode(self.mode)
        if not 0 < self.rep_variance <= 1:
            raise ValueError(f"rep_variance must be in (0, 1], got {self.rep_variance!r}")

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        from safetensors.torch import save_file

        from equisae.linrep import analyse_linear_representation

        acts = {
            s: orbit_split(self.model_name, self.layer, self.mode, self.data_seed, s)
            for s in ("train", "val", "test")
        }
        rep, res = analyse_linear_representation(acts["train"], acts["val"], acts["test"])
        sae_rep = sae_representation(acts["train"], acts["val"], self.rep_variance)
        rank = sae_rep.rank
        M = full_rank_representation(sae_rep)
        save_file({"M": M.contiguous()}, str(workdir / "representation.safetensors"))
        return {
            "sae_rep_rank": rank,
            "sae_rep_min_abs_eigenvalue": float(
                torch.linalg.eigvals(sae_rep.M_reduced).abs().min()
            ),
            "dim": acts["train"].dim,
            "group_order": acts["train"].group_order,
            "n_train": acts["train"].n_examples,
            "rank": rep.rank,
            "r2_single": res.r2_single,
            "r2_identity": res.r2_identity,
            "r2_per_power": res.r2_per_power,
            "group_error": res.group_error,
        }


def load_representation(inputs: JobResult) -> Tensor:
    """The (d, d) representation matrix an :class:`InputsJob` saved."""
    from safetensors.torch import load_file

    return load_file(str(inputs.file("representation.safetensors")))["M"]


@dataclass(frozen=True)
class SAEJob(Job):
    """Train one SAE on a base model's orbit activations and report its frontier metrics."""

    kind: ClassVar[str] = "sweep-sae"
    version: ClassVar[int] = 2
    model_name: str
    layer: str
    sae_type: str
    k: int
    seed: int
    mode: str
    training: SAETraining = field(default_factory=SAETraining)
    data_seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("sae_type", self.sae_type, SAE_TYPES)
        _check_choice("layer", self.layer, LAYER_ROLES)
        _check_mode(self.mode)
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")

    @property
    def inputs(self) -> InputsJob:
        return InputsJob(self.model_name, self.layer, self.mode, self.data_seed)

    def dependencies(self) -> tuple[Job, ...]:
        return (self.inputs,)

    def config(self) -> dict[str, Any]:
        """The fields plus the inputs job's hash, so a change of the inputs retrains the SAE."""
        return {**super().config(), "inputs": self.inputs.hash}

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        from equisae.sae.evaluate import evaluate_on_orbits
        from equisae.sae.io import save_sae

        train = orbit_split(self.model_name, self.layer, self.mode, self.data_seed, "train")
        test = orbit_split(self.model_name, self.layer, self.mode, self.data_seed, "test")
        M = load_representation(deps[0]) if self.sae_type in EQUIVARIANT_SAE_TYPES else None
        sae, result = train_sweep_sae(
            self.sae_type, train.acts, self.k, self.seed, self.training, M
        )
        save_sae(sae, workdir / "sae")
        test_acts = test.acts[subsample_orbits(test.n_examples, EVAL_ORBITS, seed=0)]
        metrics = evaluate_on_orbits(sae, test_acts, batch_size=eval_batch_size(sae.d_in))
        metrics["n_eval_orbits"] = int(test_acts.shape[0])
        metrics["train_seconds"] = result.seconds
        metrics["d_sae"] = sae.d_sae
        metrics["d_in"] = sae.d_in
        if hasattr(sae, "m_drift"):
            metrics["m_drift"] = sae.m_drift()
            metrics["m_group_error"] = sae.group_error()
        return metrics


def _split_arrays(
    model_name: str, layer: str, mode: str, data_seed: int, settings: ProbeSettings
) -> dict[str, Any]:
    """The probe subsample of each split: orbit activations (n, |G|, d) and factors (n, |G|)."""
    out = {}
    for i, split in enumerate(("train", "val", "test")):
        acts = orbit_split(model_name, layer, mode, data_seed, split)
        missing = [f for f in settings.factors if f not in acts.factors]
        if missing:
            raise KeyError(
                f"factors {missing} not in the activations' factors {sorted(acts.factors)}"
            )
        idx = subsample_orbits(acts.n_examples, settings.max_orbits[i], settings.subsample_seed + i)
        out[split] = (acts.acts[idx], {f: acts.factors[f][idx] for f in settings.factors})
    return out


def _one_hot(poses: Tensor, order: int) -> Tensor:
    return torch.nn.functional.one_hot(poses.long().reshape(-1), order).float()


def pose_conditioned_features(latents: Tensor, poses: Tensor, order: int) -> np.ndarray:
    """Latents (rows, d_sae) placed in the block of their pose, plus the one-hot pose.

    Returns (rows, order * d_sae + order): ``z`` outer ``e_p`` flattened, then ``e_p``. An
    equivariant factor such as the quadrant is ``(q_0 + p) mod |G|``: it needs the invariant
    code *and* the pose together, which a linear probe can read from the outer product but not
    from ``z`` and ``e_p`` side by side.
    """
    if latents.ndim != 2 or poses.reshape(-1).shape[0] != latents.shape[0]:
        raise ValueError(
            f"latents must be (rows, d_sae) with one pose per row, got {tuple(latents.shape)} "
            f"and {tuple(poses.shape)}"
        )
    onehot = _one_hot(poses, order)
    blocks = (onehot[:, :, None] * latents[:, None, :]).reshape(latents.shape[0], -1)
    return torch.cat([blocks, onehot], dim=1).numpy()


def _probe_feature_sets(
    sae: Any, splits: dict[str, Any], with_pose: bool
) -> dict[str, dict[str, np.ndarray]]:
    """Features per feature set and split: (rows, d_sae) latents, optionally + one-hot pose."""
    from equisae.sae.evaluate import orbit_reconstructions

    sets: dict[str, dict[str, np.ndarray]] = {"latents": {}}
    if with_pose:
        sets["latents+pose"] = {}
    for split, (acts, _) in splits.items():
        z, _, poses = orbit_reconstructions(
            sae, acts, pose="inferred", batch_size=eval_batch_size(acts.shape[-1], acts.shape[1])
        )
        flat = z.reshape(-1, z.shape[-1])
        sets["latents"][split] = flat.numpy()
        if with_pose:
            sets["latents+pose"][split] = pose_conditioned_features(flat, poses, acts.shape[1])
    return sets


def _probe_all(
    sets: dict[str, dict[str, np.ndarray]], splits: dict[str, Any], settings: ProbeSettings
) -> dict[str, Any]:
    from equisae.probing import probe_factors

    labels = {
        s: {f: v.reshape(-1).numpy() for f, v in fac.items()} for s, (_, fac) in splits.items()
    }
    f1: dict[str, Any] = {}
    chance: dict[str, float] = {}
    for name, features in sets.items():
        factors = settings.factors if name == "latents" else settings.pose_factors
        res = probe_factors(
            features,
            labels,
            [f for f in factors if f in settings.factors],
            probe_ks=settings.probe_ks,
            c_grid=settings.c_grid,
            max_iter=settings.max_iter,
            tol=settings.tol,
        )
        f1[name] = {f: {pk: r.f1 for pk, r in per.items()} for f, per in res.items()}
        chance.update({f: next(iter(per.values())).chance_f1 for f, per in res.items()})
    return {"f1": f1, "chance_f1": chance}


@dataclass(frozen=True)
class ProbeJob(Job):
    """Probe every factor on the latents of a trained SAE (equivariant SAEs: also + pose)."""

    kind: ClassVar[str] = "sweep-probe"
    version: ClassVar[int] = 2
    sae: SAEJob
    settings: ProbeSettings = field(default_factory=ProbeSettings)

    def dependencies(self) -> tuple[Job, ...]:
        return (self.sae,)

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        from equisae.sae.io import load_sae

        job = self.sae
        sae = load_sae(deps[0].path / "sae")
        splits = _split_arrays(job.model_name, job.layer, job.mode, job.data_seed, self.settings)
        sets = _probe_feature_sets(sae, splits, job.sae_type in EQUIVARIANT_SAE_TYPES)
        return {**_probe_all(sets, splits, self.settings), "l0": deps[0].metrics.get("l0")}


@dataclass(frozen=True)
class ReferenceProbeJob(Job):
    """Probes on raw activations or on an untrained random-dictionary TopK SAE."""

    kind: ClassVar[str] = "sweep-probe-reference"
    version: ClassVar[int] = 1
    model_name: str
    layer: str
    reference: str
    k: int
    seed: int
    mode: str
    training: SAETraining = field(default_factory=SAETraining)
    settings: ProbeSettings = field(default_factory=ProbeSettings)
    data_seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("reference", self.reference, REFERENCES)
        _check_choice("layer", self.layer, LAYER_ROLES)
        _check_mode(self.mode)

    def dependencies(self) -> tuple[Job, ...]:
        return (InputsJob(self.model_name, self.layer, self.mode, self.data_seed),)

    def config(self) -> dict[str, Any]:
        """The fields plus the inputs job's hash, so a change of the inputs reruns the probes."""
        return {**super().config(), "inputs": self.dependencies()[0].hash}

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        splits = _split_arrays(
            self.model_name, self.layer, self.mode, self.data_seed, self.settings
        )
        if self.reference == "raw":
            sets = {
                "latents": {s: a.reshape(-1, a.shape[-1]).numpy() for s, (a, _) in splits.items()}
            }
            return {
                **_probe_all(sets, splits, self.settings),
                "l0": float(splits["train"][0].shape[-1]),
            }
        train = orbit_split(self.model_name, self.layer, self.mode, self.data_seed, "train").acts
        d = train.shape[-1]
        sae = random_dictionary_sae(
            d, self.training.d_sae(d), self.k, self.seed, centre=train.reshape(-1, d).mean(0)
        )
        sets = _probe_feature_sets(sae, splits, with_pose=False)
        return {**_probe_all(sets, splits, self.settings), "l0": float(self.k)}


# ------------------------------------------------------------------------------------------
# Sweeps
# ------------------------------------------------------------------------------------------


def _with_data_seed(settings: SweepSettings, data_seed: int | None) -> SweepSettings:
    if data_seed is None:
        return settings
    if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
        raise ValueError(f"data_seed must be a non-negative int, got {data_seed!r}")
    return dataclasses.replace(settings, data_seed=data_seed)


def frontier_jobs(mode: str, data_seed: int | None = None) -> list[SAEJob]:
    """Every SAE of the frontier grid of ``mode``: targets x SAE types x k x seeds.

    ``data_seed`` (default: the settings' ``data_seed``) picks the base models and data.
    """
    s = _with_data_seed(sweep_settings(mode), data_seed)
    return [
        SAEJob(model, layer, sae_type, k, seed, mode, s.training, s.data_seed)
        for sae_type in s.sae_types
        for (model, layer) in s.targets
        for k in s.ks_for(layer)
        for seed in s.seeds
    ]


def probing_jobs(mode: str, data_seed: int | None = None) -> list[Job]:
    """Probes at matched L0 (``probe_k``) on every SAE type, plus the raw and random references."""
    s = _with_data_seed(sweep_settings(mode), data_seed)
    jobs: list[Job] = [
        ProbeJob(
            SAEJob(model, layer, sae_type, s.probe_k, seed, mode, s.training, s.data_seed),
            s.probing,
        )
        for sae_type in s.sae_types
        for (model, layer) in s.targets
        for seed in s.seeds
    ]
    for model, layer in s.targets:
        jobs.append(
            ReferenceProbeJob(
                model, layer, "raw", s.probe_k, 0, mode, s.training, s.probing, s.data_seed
            )
        )
        jobs.extend(
            ReferenceProbeJob(
                model, layer, "random", s.probe_k, seed, mode, s.training, s.probing, s.data_seed
            )
            for seed in s.reference_seeds
        )
    return jobs


def _planted_jobs(mode: str) -> list[Job]:
    from equisae import planted

    return list(planted.planted_jobs(mode))


def _sweeps() -> dict[str, Callable[[str], list]]:
    sweeps: dict[str, Callable[[str], list]] = {"frontier": frontier_jobs, "probing": probing_jobs}
    try:
        from equisae import planted  # noqa: F401
    except ImportError:
        return sweeps
    sweeps["planted"] = _planted_jobs
    return sweeps


SWEEPS: dict[str, Callable[[str], list]] = _sweeps()


# ------------------------------------------------------------------------------------------
# Flattening results for notebooks
# ------------------------------------------------------------------------------------------

FRONTIER_METRICS: tuple[str, ...] = (
    "fvu",
    "mse",
    "l0",
    "dead_fraction",
    "n_params",
    "latent_equivariance_error",
    "fvu_oracle_pose",
)


def frontier_records(results: Sequence[JobResult | None]) -> list[dict[str, Any]]:
    """One row per finished SAE job: model, layer, sae_type, k, seed and the frontier metrics."""
    rows = []
    for r in results:
        if r is None:
            continue
        job = r.job
        row = {
            "model": job.model_name,
            "layer": job.layer,
            "sae_type": job.sae_type,
            "k": job.k,
            "seed": job.seed,
        }
        row.update({m: r.metrics.get(m) for m in FRONTIER_METRICS})
        rows.append(row)
    return rows


def probe_records(results: Sequence[JobResult | None]) -> list[dict[str, Any]]:
    """One row per (probe job, feature set, factor, probe size) with its test macro F1."""
    rows = []
    for r in results:
        if r is None:
            continue
        job = r.job
        if isinstance(job, ProbeJob):
            base = {
                "model": job.sae.model_name,
                "layer": job.sae.layer,
                "sae_type": job.sae.sae_type,
                "k": job.sae.k,
                "seed": job.sae.seed,
            }
        else:
            base = {
                "model": job.model_name,
                "layer": job.layer,
                "sae_type": job.reference,
                "k": job.k if job.reference == "random" else None,
                "seed": job.seed,
            }
        for feature_set, per_factor in r.metrics["f1"].items():
            for factor, per_k in per_factor.items():
                for probe_k, f1 in per_k.items():
                    rows.append(
                        {
                            **base,
                            "features": feature_set,
                            "factor": factor,
                            "probe_k": probe_k,
                            "f1": f1,
                            "chance_f1": r.metrics["chance_f1"][factor],
                        }
                    )
    return rows
