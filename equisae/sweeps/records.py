"""Flat records (one dict per SAE and seed, or per probe) from sweep results, for notebooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from equisae.runner import JobResult, SweepResult
from equisae.sweeps.probes import ProbeJob, ReferenceProbeJob
from equisae.sweeps.saes import SAEJob

__all__ = ["FRONTIER_METRICS", "all_results", "frontier_records", "probe_records"]

FRONTIER_METRICS: tuple[str, ...] = (
    "fvu",
    "mse",
    "l0",
    "dead_fraction",
    "n_params",
    "latent_equivariance_error",
    "fvu_oracle_pose",
    "pose_accuracy",
    "final_loss_change",
    "m_drift",
    "m_group_error",
    "m_distance_to_fit",
    "train_seconds",
)


def _sae_base(job: SAEJob) -> dict[str, Any]:
    return {
        "model": job.model_name,
        "layer": job.layer,
        "sae_type": job.sae_type,
        "k": job.k,
        "representative": job.representative,
        "lambda_inv": job.training.lambda_inv,
        "n_steps": job.training.n_steps,
    }


def frontier_records(
    results: Sequence[JobResult | None], curves: bool = False
) -> list[dict[str, Any]]:
    """One row per (SAE job, seed): the job's grid point, the seed and the frontier metrics.

    ``curves`` adds the thinned ``loss_curve`` of each SAE (for the convergence figure).
    """
    rows = []
    for r in results:
        if r is None or not isinstance(r.job, SAEJob):
            continue
        for seed, metrics in r.metrics["per_seed"].items():
            row = {**_sae_base(r.job), "seed": int(seed)}
            row.update({m: metrics.get(m) for m in FRONTIER_METRICS})
            if curves:
                row["loss_curve"] = metrics.get("loss_curve")
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
            base = {**_sae_base(job.sae), "seed": job.seed}
        elif isinstance(job, ReferenceProbeJob):
            base = {
                "model": job.model_name,
                "layer": job.layer,
                "sae_type": job.reference,
                "k": job.k if job.reference == "random" else None,
                "representative": job.representative,
                "lambda_inv": None,
                "n_steps": None,
                "seed": job.seed,
            }
        else:
            continue
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


def all_results(sweep: SweepResult) -> list[JobResult]:
    """Every finished job of a sweep, requested or dependency (e.g. the SAEs under probes)."""
    return [o for o in sweep.outcomes.values() if isinstance(o, JobResult)]
