"""Training the SAEs of a sweep: one job trains every seed of one (target, variant, k) at once.

:class:`SAEJob` builds one SAE per seed with :func:`equisae.sae.factory.build_sae`, trains them
together with :func:`equisae.sae.batched.train_many` (one stacked model where the class allows
it, otherwise one after another with the same results), saves each as ``sae_s<seed>/`` and
reports, per seed, the frontier metrics on held-out orbits and a thinned loss curve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from equisae.device import current_device
from equisae.modes import EVAL_ORBITS, check_mode
from equisae.runner import JobResult
from equisae.sweeps.inputs import (
    DEFAULT_GROUP,
    ReadsInputs,
    check_group,
    load_generators,
    subsample_orbits,
)
from equisae.sweeps.settings import LAYER_ROLES, REPRESENTATIVES, SAETraining, check_choice

__all__ = [
    "EVAL_ORBITS",
    "SAEJob",
    "final_loss_change",
    "learned_generator_rows",
    "sae_folder",
    "train_sweep_saes",
]


def sae_folder(seed: int) -> str:
    """The sub-folder of an :class:`SAEJob` artifact holding the SAE of ``seed``."""
    return f"sae_s{seed}"


def train_config(training: SAETraining, seed: int, batch: int):
    """The trainer settings of one SAE of a sweep (the one rule for ``dead_after``)."""
    from equisae.sae.train import TrainConfig

    return TrainConfig(
        n_steps=training.n_steps,
        lr=training.lr,
        warmup_steps=min(50, training.n_steps // 10),
        seed=seed,
        dead_after=max(batch * 50, 5000),
    )


#: model state logged along training that the thinned curve keeps when present
CURVE_DIAGNOSTICS: tuple[str, ...] = ("m_drift", "m_group_error")


def loss_curve(history: list[dict[str, float]], points: int) -> dict[str, list[float]]:
    """The logged training curve thinned to at most ``points`` entries: step, loss, fvu, l0, and
    for a learned representation ``m_drift`` (distance to the fit it started from) and
    ``m_group_error`` along training."""
    keys = ["step", "loss", "fvu", "l0"]
    if not history:
        return {key: [] for key in keys}
    keys += [key for key in CURVE_DIAGNOSTICS if key in history[-1]]
    idx = np.unique(np.linspace(0, len(history) - 1, min(points, len(history))).round().astype(int))
    return {key: [float(history[i].get(key, float("nan"))) for i in idx] for key in keys}


#: the fraction of training whose start and end the convergence measure compares
FINAL_FRACTION = 0.25
#: the width (fraction of training) of the windows whose median loss smooths each end
SMOOTHING_WINDOW = 0.05


def final_loss_change(
    history: list[dict[str, float]],
    fraction: float = FINAL_FRACTION,
    window: float = SMOOTHING_WINDOW,
) -> float | None:
    """Relative change of the smoothed training loss over the last ``fraction`` of training.

    The smoothed loss at a point is the median of the logged losses in the ``window`` (a
    fraction of training) before it; the change from ``a`` (at ``1 - fraction`` of training) to
    ``b`` (at the end) is ``(b - a) / max(a, b)``, which lies in [-1, 1] whatever the curve
    does: -0.2 means the loss fell by 20% over the last quarter, 0 a flat tail, positive a
    rising one. It includes the trainer's learning-rate decay, so a converged SAE shows a small
    negative change. None where the history has too few finite, positive losses to tell.
    """
    if not 0 < fraction < 1 or not 0 < window <= fraction:
        raise ValueError(
            f"need 0 < window <= fraction < 1, got fraction={fraction!r}, window={window!r}"
        )
    rows = [
        (float(h["step"]), float(h["loss"]))
        for h in history
        if np.isfinite(h.get("loss", np.nan)) and h.get("loss", 0) > 0
    ]
    if len(rows) < 4:
        return None
    steps = np.array([r[0] for r in rows])
    losses = np.array([r[1] for r in rows])
    last = steps.max()

    def smoothed(at: float) -> float | None:
        inside = (steps > (at - window) * last) & (steps <= at * last)
        return float(np.median(losses[inside])) if inside.any() else None

    a, b = smoothed(1.0 - fraction), smoothed(1.0)
    if a is None or b is None:
        return None
    return (b - a) / max(a, b)


def train_sweep_saes(
    variant: str,
    train_acts: Tensor,
    k: int,
    seeds: tuple[int, ...],
    training: SAETraining,
    M: Tensor | None = None,
    group: Any = "C4",
    progress: bool = False,
    generators: dict[str, Tensor] | None = None,
    device: Any = None,
) -> tuple[list[Any], list[Any]]:
    """Build and train one SAE per seed on orbit activations (N, |G|, d); (saes, results).

    Equivariant variants get the representation: ``M`` (C_n) or ``generators`` (``{"r", "s"}``
    for D_n; give one of the two), fixed or as the adaptive model's start. ``device``: where
    they train (:func:`~equisae.sae.batched.train_many`; None: where they are built, the CPU)."""
    from equisae.sae.batched import train_many
    from equisae.sae.factory import build_sae, sae_class, shared_hyper
    from equisae.sae.train import orbit_training_data

    if train_acts.ndim != 3:
        raise ValueError(f"train_acts must have shape (N, |G|, d), got {tuple(train_acts.shape)}")
    d = train_acts.shape[-1]
    d_sae = training.d_sae(d)
    if not 1 <= k <= d_sae:
        raise ValueError(f"k must be in 1..d_sae={d_sae}, got {k}")
    cls = sae_class(variant)
    equivariant = getattr(cls, "is_equivariant", False)
    if M is not None and generators is not None:
        raise ValueError("give either M or generators to train_sweep_saes, not both")
    saes = [
        build_sae(
            variant,
            d,
            d_sae,
            k,
            seed=seed,
            group=group,
            M=M if equivariant else None,
            generators=generators if equivariant else None,
            **shared_hyper(variant, lambda_inv=training.lambda_inv, lambda_eq=training.lambda_eq),
        )
        for seed in seeds
    ]
    data, batch = orbit_training_data(
        train_acts, getattr(cls, "takes_orbits", False), training.batch_size
    )
    cfgs = [train_config(training, seed, batch) for seed in seeds]
    results = train_many(
        saes, data, cfgs, batch_size=batch, seeds=list(seeds), progress=progress, device=device
    )
    return saes, results


@dataclass(frozen=True)
class SAEJob(ReadsInputs):
    """Train one SAE per seed on a base model's orbit activations; frontier metrics per seed."""

    kind: ClassVar[str] = "sweep-sae"
    #: 4: the seed reaches the SAE's initial weights (before, every seed started from seed 0)
    version: ClassVar[int] = 4
    model_name: str
    layer: str
    sae_type: str
    k: int
    seeds: tuple[int, ...]
    mode: str
    training: SAETraining = field(default_factory=SAETraining)
    data_seed: int = 0
    representative: str = "fixed"
    #: the group of the orbits and of the equivariant SAEs ("C4" or "D4"; hashed unless C4)
    group: str = DEFAULT_GROUP

    def __post_init__(self) -> None:
        from equisae.sae.factory import sae_class

        sae_class(self.sae_type)  # KeyError naming the known variants
        check_group(self.group)
        check_choice("layer", self.layer, LAYER_ROLES)
        check_choice("representative", self.representative, REPRESENTATIVES)
        check_mode(self.mode)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty tuple of distinct ints, got {self.seeds}")

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        from equisae.sae.evaluate import evaluate_on_orbits
        from equisae.sae.io import save_sae

        train = self.inputs.split("train")
        test = self.inputs.split("test")
        fitted = load_generators(deps[0])
        rep = {"M": fitted["r"]} if len(fitted) == 1 else {"generators": fitted}
        dev = current_device()
        saes, results = train_sweep_saes(
            self.sae_type,
            train.acts,
            self.k,
            self.seeds,
            self.training,
            group=self.group,
            device=dev,
            **rep,
        )
        test_acts = test.acts[subsample_orbits(test.n_examples, EVAL_ORBITS, seed=0)]
        per_seed: dict[str, dict[str, Any]] = {}
        for seed, sae, result in zip(self.seeds, saes, results, strict=True):
            save_sae(sae, workdir / sae_folder(seed))
            metrics = evaluate_on_orbits(sae, test_acts, device=dev)
            sae.cpu()  # the fitted generators live on the CPU (a no-op there)
            metrics.update(
                n_eval_orbits=int(test_acts.shape[0]),
                train_seconds=result.seconds,
                d_sae=sae.d_sae,
                d_in=sae.d_in,
                loss_curve=loss_curve(result.history, self.training.curve_points),
                final_loss_change=final_loss_change(result.history),
            )
            if hasattr(sae, "m_drift"):
                metrics["m_drift"] = sae.m_drift()
            if getattr(sae, "is_equivariant", False):
                metrics["m_group_error"] = sae.group_error()
                metrics["m_distance_to_fit"] = sae.distance_to(fitted["r"])
                if "s" in fitted:
                    metrics["s_distance_to_fit"] = sae.distance_to(fitted["s"], "s")
            per_seed[str(seed)] = metrics
        return {"per_seed": per_seed}


def learned_generator_rows(
    results: list[JobResult | None], k: int, targets: tuple[tuple[str, str], ...]
) -> list[dict[str, Any]]:
    """The learned M of every adaptive SAE (``learns_representation``) at ``k`` on ``targets``
    against the least-squares fit it started from, on the held-out orbits of the frontier's
    evaluation (:func:`equisae.linrep.compare_generators`): one row per SAE and seed.

    Reads the saved SAEs and the verified inputs from the artifacts; C_n SAEs only."""
    from equisae.linrep import compare_generators
    from equisae.runner import load_result
    from equisae.sae.factory import sae_class
    from equisae.sae.io import load_sae

    rows = []
    for result in results:
        job = None if result is None else result.job
        if not isinstance(job, SAEJob) or job.k != k or (job.model_name, job.layer) not in targets:
            continue
        if not getattr(sae_class(job.sae_type), "learns_representation", False):
            continue
        inputs = load_result(job.inputs)
        if inputs is None:
            raise FileNotFoundError(f"the inputs of {job.label()} are not in the artifacts")
        fitted = load_generators(inputs)
        if set(fitted) != {"r"}:
            continue
        test = job.inputs.split("test")
        orbits = test.acts[subsample_orbits(test.n_examples, EVAL_ORBITS, seed=0)]
        for seed in job.seeds:
            sae = load_sae(result.path / sae_folder(seed))
            report = compare_generators(orbits, sae.M.detach(), fitted["r"])
            rows.append(
                {
                    "model": job.model_name,
                    "layer": job.layer,
                    "sae_type": job.sae_type,
                    "k": job.k,
                    "seed": seed,
                    **report,
                }
            )
    return rows
