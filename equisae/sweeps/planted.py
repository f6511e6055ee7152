"""The planted-features sweep (notebook 04, ``equisae sweep planted``) as runner jobs.

For each number of planted features (interference ``n / d``), each seed (a fresh problem:
representation, features and data, and a fresh SAE initialisation) and each model (regular
TopK, wide TopK, group crosscoder, the equivariant SAEs given the true representation, the
adaptive ones started from the identity; both encoders), one :class:`PlantedJob` trains the
model on the planted orbits and reports recovery, detection, FVU, L0 and parameter counts on
held-out orbits. Every model at a given (setting, seed) sees the same activations: regular SAEs
train on the flattened orbits, orbit SAEs on whole orbits, with the same activations per step.
The group is C4 by default; ``PlantedSettings(group="D4")`` runs the same sweep under D4
(:func:`dihedral_settings`: the sizes of notebook 08).

The adaptive models start from the identity under both groups, on purpose: the sweep shows
that they *learn* the representation (distance to the truth before and after). Under D4 this
works because the adaptive SAE's equivariance term takes every pose as a base by default
(``equivariance_bases="all"`` for D_n, :mod:`equisae.sae.adaptive`): with ``h_0`` as the only
base the flip ``S`` multiplies only canonical activations, whose span here (``n_features <
d``) misses part of ``R^d``, and ``S`` stayed at relative distance ~1 from the truth. Under C4
the term is the Method page's (``h_0`` only), which already identifies ``R``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from equisae.device import current_device, device_config
from equisae.modes import get_mode
from equisae.planted import ToyConfig, detection_f1, feature_recovery, make_planted, top1_detection
from equisae.planted_summary import METRICS, MODEL_TYPES, series, summarize
from equisae.runner import Job, JobResult, SweepResult, run_sweep

__all__ = [
    "MODEL_TYPES",
    "METRICS",
    "PlantedJob",
    "PlantedSettings",
    "build_planted_sae",
    "dihedral_settings",
    "planted_jobs",
    "planted_records",
    "planted_settings",
    "run_planted",
    "series",
    "summarize",
    "with_models",
]


@dataclass(frozen=True)
class PlantedSettings:
    """The sweep of one mode: problem sizes, the grid, and how every SAE is trained.

    ``expansion``: base dictionary size ``d_sae = expansion * n_features`` (the wide SAE has
    ``|G|`` times that). ``batch_size`` counts activations per step; orbit models take
    ``batch_size // |G|`` orbits, so every model sees the same activations per step.
    """

    mode: str
    d: int
    feature_counts: tuple[int, ...]
    seeds: tuple[int, ...]
    n_train: int
    n_test: int
    group: str = "C4"
    active: float = 2.0
    noise: float = 0.05
    expansion: int = 2
    k: int = 2
    n_steps: int = 600
    batch_size: int = 256
    lr: float = 1e-2
    lambda_inv: float = 1.0
    lambda_eq: float = 10.0
    models: tuple[str, ...] = MODEL_TYPES

    def toy(self, n_features: int) -> ToyConfig:
        """The planted problem with ``n_features`` features."""
        return ToyConfig(
            d=self.d,
            n_features=n_features,
            group=self.group,
            active=self.active,
            noise=self.noise,
        )


def planted_settings(mode: str) -> PlantedSettings:
    """Sizes per mode (:attr:`equisae.modes.Mode.planted`). ``quick``: 2 feature counts x 2
    seeds, short training (< 1 min on 2 cores). ``full``: 5 feature counts (n/d from 0.5 to 4)
    x 3 seeds (< 8 min on 2 cores)."""
    return PlantedSettings(mode=mode, **asdict(get_mode(mode).planted))


def dihedral_settings(mode: str, group: str = "D4") -> PlantedSettings:
    """The planted problem of notebook 08 (``group`` D4, or C4 for the comparison); sizes
    :attr:`equisae.modes.Mode.dihedral`.

    ``quick``: d = 8, 6 features, one seed, 300 steps (the adaptive SAE reaches the true
    generators within 0.05 there; ~10 s). ``full``: d = 16, 8 and 16 features, 3 seeds, 800
    steps. Models: TopK, the equivariant SAE given the truth, the adaptive SAE from the identity.
    """
    models = ("topk", "equivariant", "adaptive")
    sizes = asdict(get_mode(mode).dihedral)
    return PlantedSettings(mode=mode, group=group, models=models, **sizes)


def build_planted_sae(
    model: str,
    problem: Any,
    d_sae: int,
    k: int,
    seed: int,
    lambda_inv: float = 1.0,
    lambda_eq: float = 1.0,
):
    """An untrained SAE of variant ``model`` for the planted problem ``problem``.

    Fixed-representation equivariant SAEs get the true generators (frozen); adaptive ones start
    from the identity and learn them (under D_n with every pose as a base of the equivariance
    term, see the module doc).
    """
    from equisae.sae.factory import build_sae, sae_class, shared_hyper

    cls = sae_class(model)
    gens = None
    if getattr(cls, "is_equivariant", False) and not getattr(cls, "learns_representation", False):
        gens = problem.generators()
    return build_sae(
        model,
        problem.config.d,
        d_sae,
        k,
        seed=seed,
        group=problem.group,
        generators=gens,
        **shared_hyper(model, lambda_inv=lambda_inv, lambda_eq=lambda_eq),
    )


@dataclass(frozen=True)
class PlantedJob(Job):
    """Train one model on one planted problem and score it against the ground truth."""

    kind: ClassVar[str] = "planted"
    #: 2: the seed reaches the SAE's initial weights (before, every seed started from seed 0)
    version: ClassVar[int] = 2
    model: str
    toy: ToyConfig
    seed: int
    n_train: int
    n_test: int
    d_sae: int
    k: int
    n_steps: int
    batch_size: int
    lr: float
    lambda_inv: float = 1.0
    lambda_eq: float = 10.0

    def __post_init__(self) -> None:
        if self.model not in MODEL_TYPES:
            raise KeyError(f"unknown planted model {self.model!r}; known: {MODEL_TYPES}")
        for name in ("n_train", "n_test", "d_sae", "k", "n_steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PlantedJob.{name} must be a positive integer, got {value!r}")
        if self.batch_size < self.toy.group_order:
            raise ValueError(
                f"PlantedJob.batch_size must be >= group_order={self.toy.group_order} "
                f"(orbit models take batch_size // group_order orbits), got {self.batch_size}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"PlantedJob.lr must be a positive number, got {self.lr!r}")

    def config(self) -> dict[str, Any]:
        """The fields, and the run's device when it is not the CPU (own cache entries)."""
        return {**super().config(), **device_config()}

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        from equisae.sae.evaluate import decoder_atoms, evaluate_on_orbits, orbit_latents
        from equisae.sae.io import save_sae
        from equisae.sae.train import TrainConfig, minibatches, orbit_training_data, train_sae

        dev = current_device()
        problem = make_planted(self.toy, self.n_train, self.n_test, seed=self.seed)
        truth = problem.generators()
        sae = build_planted_sae(
            self.model,
            problem,
            self.d_sae,
            self.k,
            self.seed,
            lambda_inv=self.lambda_inv,
            lambda_eq=self.lambda_eq,
        )
        data, batch = orbit_training_data(problem.train.acts, sae.takes_orbits, self.batch_size)
        before = sae.generator_distances(truth) if sae.is_equivariant else None
        cfg = TrainConfig(
            n_steps=self.n_steps,
            lr=self.lr,
            warmup_steps=min(50, self.n_steps // 10),
            dead_after=max(10 * batch, 1000),
            seed=self.seed,
        )
        result = train_sae(
            sae,
            minibatches(data, batch, self.n_steps, seed=self.seed),
            cfg,
            progress=False,
            device=dev,
        )
        save_sae(sae, workdir / "sae")

        metrics = evaluate_on_orbits(sae, problem.test.acts, device=dev)
        metrics["recovery"] = feature_recovery(
            decoder_atoms(sae).cpu(), problem.features, problem.powers()
        )["recovery"]
        z_train = orbit_latents(sae, problem.train.acts, device=dev).reshape(-1, sae.d_sae)
        z_test = orbit_latents(sae, problem.test.acts, device=dev).reshape(-1, sae.d_sae)
        sae.cpu()  # the ground truth lives on the CPU (a no-op there)
        p_train, p_test = problem.train.flat()[1], problem.test.flat()[1]
        metrics["detection_f1"] = detection_f1(z_train, p_train, z_test, p_test)["detection_f1"]
        metrics["top1_detection"] = top1_detection(z_train, p_train, z_test, p_test)[
            "top1_detection"
        ]
        metrics["train_seconds"] = result.seconds
        metrics["d_sae"] = sae.d_sae
        metrics["n_features"] = self.toy.n_features
        metrics["interference"] = self.toy.n_features / self.toy.d
        if before is not None:
            after = sae.generator_distances(truth)
            metrics["m_distance_to_R_before"] = before["r"]
            metrics["m_distance_to_R_after"] = after["r"]
            if "s" in after:
                metrics["s_distance_before"] = before["s"]
                metrics["s_distance_after"] = after["s"]
            metrics["m_distance_on_features"] = _distance_on_span(sae.rep(), problem)
            metrics["m_group_error"] = sae.group_error()
        if hasattr(sae, "m_drift"):
            metrics["m_drift"] = sae.m_drift()
        return metrics


def _distance_on_span(M: torch.Tensor, problem: Any) -> float:
    """``||(M - R) B|| / ||R B||`` with ``B`` an orthonormal basis of the planted features' span:
    how well ``M`` matches ``R`` where the canonical data lives."""
    u, sv, _ = torch.linalg.svd(problem.features.double().T, full_matrices=False)
    basis = u[:, sv > 1e-6 * sv.max()]
    with torch.no_grad():
        diff = (M.double() - problem.R.double()) @ basis
    return float(diff.norm() / (problem.R.double() @ basis).norm())


def planted_jobs(mode: str, settings: PlantedSettings | None = None) -> list[PlantedJob]:
    """Every job of the planted sweep of ``mode``: feature counts x models x seeds."""
    s = settings or planted_settings(mode)
    return [
        PlantedJob(
            model=model,
            toy=s.toy(n),
            seed=seed,
            n_train=s.n_train,
            n_test=s.n_test,
            d_sae=s.expansion * n,
            k=s.k,
            n_steps=s.n_steps,
            batch_size=s.batch_size,
            lr=s.lr,
            lambda_inv=s.lambda_inv,
            lambda_eq=s.lambda_eq,
        )
        for n in s.feature_counts
        for model in s.models
        for seed in s.seeds
    ]


def run_planted(
    mode: str,
    scheduler: Any = None,
    progress: bool = True,
    settings: PlantedSettings | None = None,
    artifacts: str | None = None,
) -> SweepResult:
    """Run (or load from the artifact cache) the planted sweep; raises if any job failed."""
    result = run_sweep(
        planted_jobs(mode, settings), scheduler=scheduler, progress=progress, artifacts=artifacts
    )
    result.raise_for_failures()
    return result


def planted_records(results: Sequence[JobResult | None]) -> list[dict[str, Any]]:
    """One flat row per finished job: model, n_features, seed and every metric."""
    rows = []
    for r in results:
        if r is None:
            continue
        job = r.job
        if not isinstance(job, PlantedJob):
            raise ValueError(f"expected PlantedJob results, got {type(job).__name__}")
        rows.append(
            {"model": job.model, "n_features": job.toy.n_features, "seed": job.seed, **r.metrics}
        )
    return rows


def with_models(settings: PlantedSettings, models: Sequence[str]) -> PlantedSettings:
    """A copy of ``settings`` restricted to ``models`` (each must be in :data:`MODEL_TYPES`)."""
    unknown = [m for m in models if m not in MODEL_TYPES]
    if unknown:
        raise KeyError(f"unknown planted models {unknown}; known: {MODEL_TYPES}")
    return replace(settings, models=tuple(models))


def problem_diagnostics(settings: PlantedSettings) -> list[dict[str, Any]]:
    """Per number of features: the representation's checks (relation error, orthogonality) and
    how much the features interfere (mean over features of the largest |cos| with another
    feature, and with any transform rho(g) f_j of another feature)."""
    from equisae.planted import make_planted

    rows = []
    for n in settings.feature_counts:
        problem = make_planted(settings.toy(n), 10, 10, seed=settings.seeds[0])
        rho = problem.powers().double()  # (|G|, d, d)
        feats = problem.features.double()
        others = ~torch.eye(n, dtype=torch.bool)
        cos = (feats @ feats.T).abs()
        cos_all = torch.stack([(feats @ (feats @ m.T).T).abs() for m in rho])
        eye = torch.eye(settings.d, dtype=torch.float64)
        rows.append(
            {
                "n": n,
                "n/d": n / settings.d,
                "relation error": problem.group.relation_error(rho),
                "‖RRᵀ − I‖": float((rho[1] @ rho[1].T - eye).norm()),
                "max |cos| with another feature": float(
                    cos.masked_fill(~others, 0).max(1).values.mean()
                ),
                "max |cos| with a transform of another": float(
                    cos_all.masked_fill(~others, 0).amax((0, 2)).mean()
                ),
            }
        )
    return rows


def metric_table(
    records: Sequence[dict[str, Any]],
    metrics: Sequence[str],
    counts: Sequence[int],
    models: Sequence[str] = MODEL_TYPES,
) -> str:
    """Mean ± sd over seeds of ``metrics`` per model (rows) at each number of features."""
    from equisae.plots.findings import label_of
    from equisae.tables import markdown_table, mean_sd_cell

    rows = []
    for model in models:
        for n in counts:
            sel = [r for r in records if r["model"] == model and r["n_features"] == n]
            if not sel:
                continue
            row: dict[str, Any] = {"model": label_of(model), "n": n}
            for m in metrics:
                values = [r[m] for r in sel if r.get(m) is not None]
                if m == "n_params" and values:
                    row["trainable parameters"] = f"{int(round(float(np.mean(values)))):,}"
                else:
                    row[m.replace("_", " ")] = mean_sd_cell(values)
            rows.append(row)
    return markdown_table(rows)
