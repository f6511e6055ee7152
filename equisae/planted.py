"""The planted-features sweep (notebook 04, ``equisae sweep planted``) as runner jobs.

For each number of planted features (interference ``n / d``), each seed (a fresh problem:
representation ``R``, features and data, and a fresh SAE initialisation) and each model
(regular TopK, wide TopK, group crosscoder, equivariant SAE given the true ``R``, adaptively
equivariant SAE started from the identity), one :class:`PlantedJob` trains the model on the
planted orbits and reports recovery, detection, FVU, L0 and parameter counts on held-out orbits.
Every model at a given (setting, seed) sees the same activations: regular SAEs train on the
flattened orbits, orbit SAEs on whole orbits, with the same number of activations per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from equisae.runner import Job, JobResult, SweepResult, run_sweep
from equisae.toy import ToyConfig, detection_f1, feature_recovery, make_planted, top1_detection

__all__ = [
    "MODEL_TYPES",
    "METRICS",
    "PlantedJob",
    "PlantedSettings",
    "build_planted_sae",
    "describe_advantage",
    "equivariant_advantage",
    "planted_jobs",
    "planted_records",
    "planted_settings",
    "run_planted",
    "series",
    "summarize",
    "with_models",
]

#: The models compared on planted features, in plotting order.
MODEL_TYPES: tuple[str, ...] = ("topk", "wide", "crosscoder", "equivariant", "adaptive")
#: Models trained on whole orbits (B, |G|, d) rather than on flattened activations.
ORBIT_MODELS: tuple[str, ...] = ("crosscoder", "equivariant", "adaptive")
#: Headline metrics of every job (the notebook's results file holds each per setting and seed).
METRICS: tuple[str, ...] = (
    "recovery",
    "detection_f1",
    "top1_detection",
    "fvu",
    "l0",
    "n_params",
)


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
    group_order: int = 4
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
            group_order=self.group_order,
            active=self.active,
            noise=self.noise,
        )


def planted_settings(mode: str) -> PlantedSettings:
    """Sizes per mode. ``quick``: 2 feature counts x 2 seeds, short training (< 1 min on 2
    cores). ``full``: 5 feature counts (n/d from 0.5 to 4) x 3 seeds (< 8 min on 2 cores)."""
    if mode == "quick":
        return PlantedSettings(
            mode=mode,
            d=16,
            feature_counts=(8, 32),
            seeds=(0, 1),
            n_train=1000,
            n_test=500,
            n_steps=150,
            batch_size=128,
        )
    if mode == "full":
        return PlantedSettings(
            mode=mode,
            d=16,
            feature_counts=(8, 16, 32, 48, 64),
            seeds=(0, 1, 2),
            n_train=4000,
            n_test=1000,
            n_steps=800,
            batch_size=256,
        )
    raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")


def build_planted_sae(
    model: str,
    toy: ToyConfig,
    d_sae: int,
    k: int,
    seed: int,
    R: torch.Tensor | None = None,
    lambda_inv: float = 1.0,
    lambda_eq: float = 10.0,
):
    """An untrained SAE of type ``model`` for the planted problem ``toy``.

    ``equivariant`` needs the true representation ``R`` (frozen); ``adaptive`` starts from
    the identity and learns ``M``.
    """
    from equisae.sae import AdaptiveEquivariantSAE, EquivariantSAE, GroupCrosscoder, TopKSAE
    from equisae.sae.wide import WideSAE

    d, order = toy.d, toy.group_order
    if model == "topk":
        return TopKSAE(d, d_sae, k, seed=seed)
    if model == "wide":
        return WideSAE(d, d_sae, k, group_order=order, seed=seed)
    if model == "crosscoder":
        return GroupCrosscoder(d, d_sae, k, group_order=order, seed=seed)
    if model == "equivariant":
        if R is None:
            raise ValueError("model 'equivariant' needs the planted representation R")
        return EquivariantSAE(d, d_sae, k, group_order=order, M=R, seed=seed)
    if model == "adaptive":
        return AdaptiveEquivariantSAE(
            d,
            d_sae,
            k,
            group_order=order,
            M=None,
            lambda_inv=lambda_inv,
            lambda_eq=lambda_eq,
            seed=seed,
        )
    raise KeyError(f"unknown planted model {model!r}; known: {MODEL_TYPES}")


@dataclass(frozen=True)
class PlantedJob(Job):
    """Train one model on one planted problem and score it against the ground truth."""

    kind: ClassVar[str] = "planted"
    version: ClassVar[int] = 1
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

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        from equisae.sae.evaluate import decoder_atoms, evaluate_on_orbits, orbit_latents
        from equisae.sae.io import save_sae
        from equisae.sae.train import TrainConfig, minibatches, orbit_training_data, train_sae

        problem = make_planted(self.toy, self.n_train, self.n_test, seed=self.seed)
        sae = build_planted_sae(
            self.model,
            self.toy,
            self.d_sae,
            self.k,
            self.seed,
            R=problem.R,
            lambda_inv=self.lambda_inv,
            lambda_eq=self.lambda_eq,
        )
        data, batch = orbit_training_data(
            problem.train.acts, self.model in ORBIT_MODELS, self.batch_size
        )
        before = sae.distance_to(problem.R) if hasattr(sae, "distance_to") else None
        cfg = TrainConfig(
            n_steps=self.n_steps,
            lr=self.lr,
            warmup_steps=min(50, self.n_steps // 10),
            dead_after=max(10 * batch, 1000),
            seed=self.seed,
        )
        result = train_sae(
            sae, minibatches(data, batch, self.n_steps, seed=self.seed), cfg, progress=False
        )
        save_sae(sae, workdir / "sae")

        metrics = evaluate_on_orbits(sae, problem.test.acts)
        metrics["recovery"] = feature_recovery(decoder_atoms(sae), problem.features, problem.R)[
            "recovery"
        ]
        z_train = orbit_latents(sae, problem.train.acts).reshape(-1, sae.d_sae)
        z_test = orbit_latents(sae, problem.test.acts).reshape(-1, sae.d_sae)
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
            metrics["m_distance_to_R_before"] = before
            metrics["m_distance_to_R_after"] = sae.distance_to(problem.R)
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


def summarize(
    records: Sequence[dict[str, Any]], metrics: Sequence[str] = METRICS
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``{model: {metric: {str(n_features): {"mean", "std", "per_seed"}}}}``: the mean and
    standard deviation (ddof 0) over seeds of every metric, per setting, with the seed values
    (in seed order)."""
    if not records:
        raise ValueError("no planted records to summarise")
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    models = [m for m in MODEL_TYPES if any(r["model"] == m for r in records)]
    for model in models:
        rows = sorted((r for r in records if r["model"] == model), key=lambda r: r["seed"])
        counts = sorted({r["n_features"] for r in rows})
        out[model] = {}
        for metric in metrics:
            missing = [r["seed"] for r in rows if metric not in r]
            if missing:
                raise KeyError(f"metric {metric!r} missing from {model} records (seeds {missing})")
            out[model][metric] = {}
            for n in counts:
                values = [float(r[metric]) for r in rows if r["n_features"] == n]
                out[model][metric][str(n)] = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values)),
                    "per_seed": values,
                }
    return out


def series(summary: dict, model: str, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n_features, mean, std)`` arrays of one model and metric from :func:`summarize`."""
    try:
        per_n = summary[model][metric]
    except KeyError:
        raise KeyError(f"no {metric!r} for model {model!r} in the planted summary") from None
    counts = sorted(per_n, key=int)
    return (
        np.array([int(n) for n in counts]),
        np.array([per_n[n]["mean"] for n in counts]),
        np.array([per_n[n]["std"] for n in counts]),
    )


EQUIVARIANT_MODELS: tuple[str, ...] = ("equivariant", "adaptive")
BASELINE_MODELS: tuple[str, ...] = ("topk", "wide", "crosscoder")


def equivariant_advantage(
    summary: dict, metric: str, higher_is_better: bool = True
) -> dict[str, Any]:
    """Per setting, the better equivariant SAE against the best baseline on ``metric``.

    ``gap`` is oriented so that positive means the equivariant SAE is better; ``separated`` is
    True where the gap exceeds the sum of the two seed standard deviations.
    """
    ours = [m for m in EQUIVARIANT_MODELS if m in summary]
    base = [m for m in BASELINE_MODELS if m in summary]
    if not ours or not base:
        raise ValueError(
            f"need an equivariant model {EQUIVARIANT_MODELS} and a baseline {BASELINE_MODELS}"
        )
    sign = 1.0 if higher_is_better else -1.0
    counts = [int(n) for n in sorted(summary[ours[0]][metric], key=int)]
    rows: dict[str, list] = {
        "n_features": counts,
        "gap": [],
        "separated": [],
        "best_equivariant": [],
        "best_baseline": [],
    }
    for n in counts:

        def best(models: list[str], n: int = n) -> tuple[str, dict]:
            stats = {m: summary[m][metric][str(n)] for m in models}
            name = max(stats, key=lambda m: sign * stats[m]["mean"])
            return name, stats[name]

        m_ours, s_ours = best(ours)
        m_base, s_base = best(base)
        gap = sign * (s_ours["mean"] - s_base["mean"])
        rows["gap"].append(float(gap))
        rows["separated"].append(bool(abs(gap) > s_ours["std"] + s_base["std"]))
        rows["best_equivariant"].append(m_ours)
        rows["best_baseline"].append(m_base)
    return rows


def describe_advantage(adv: dict[str, Any], metric_label: str) -> str:
    """One sentence, computed from :func:`equivariant_advantage`, saying who wins and how the
    gap changes as the number of features grows."""
    gaps, sep, counts = adv["gap"], adv["separated"], adv["n_features"]
    wins = [g > 0 and s for g, s in zip(gaps, sep, strict=True)]
    losses = [g < 0 and s for g, s in zip(gaps, sep, strict=True)]
    if all(wins):
        head = "the equivariant SAEs beat every baseline at every number of features"
    elif all(losses):
        head = "the best baseline beats the equivariant SAEs at every number of features"
    elif any(wins):
        won = ", ".join(str(n) for n, w in zip(counts, wins, strict=True) if w)
        head = f"the equivariant SAEs beat every baseline beyond the seed spread only at n = {won}"
    else:
        head = "no model family is ahead beyond the seed spread"
    if len(gaps) > 1:
        change = gaps[-1] - gaps[0]
        if abs(change) < 0.02:
            trend = "the gap stays about the same as interference grows"
        elif change > 0:
            trend = "the difference moves in favour of the equivariant SAEs as interference grows"
        else:
            trend = "the difference moves in favour of the baselines as interference grows"
        head = f"{head}; {trend}"
    first, last = gaps[0], gaps[-1]
    return (
        f"On {metric_label}, {head} (equivariant minus best baseline: {first:+.3f} at "
        f"n = {counts[0]}, {last:+.3f} at n = {counts[-1]})."
    )


def with_models(settings: PlantedSettings, models: Sequence[str]) -> PlantedSettings:
    """A copy of ``settings`` restricted to ``models`` (each must be in :data:`MODEL_TYPES`)."""
    unknown = [m for m in models if m not in MODEL_TYPES]
    if unknown:
        raise KeyError(f"unknown planted models {unknown}; known: {MODEL_TYPES}")
    return replace(settings, models=tuple(models))
