"""The named sweeps of the companion as jobs on :mod:`equisae.runner`.

Job graph for one base model and layer::

    InputsJob(model, layer, mode, data seed, representative)   activations cached, M fitted
      -> SAEJob(..., sae_type, k, seeds)      trains every seed as one batched model
           -> ProbeJob(sae=SAEJob, seed)      dense and k-sparse probes per factor
      -> ReferenceProbeJob(..., "raw"|"random", ...)   raw activations / a random SAE

Named sweeps (:data:`SWEEPS`, ``equisae sweep NAME --mode quick|full``):

* ``planted``: the planted-features problem (notebook 04), :mod:`equisae.sweeps.planted`;
* ``frontier``: every SAE type over k (notebook 05);
* ``convergence``: every SAE type trained twice as long on the key targets (notebook 05);
* ``probing``: probes at matched L0 with references (notebook 06);
* ``setting``: the random canonical representative next to the fixed one (notebook 06);
* ``lambda_inv``: the adaptive SAE over the invariance weight (notebooks 05 and 06);
* ``group``: topk, equivariant and adaptive SAEs under C4 and under D4 (notebook 08);
* ``aa``: the A/A test of the verdict rule, one SAE type against itself under two disjoint
  seed sets (notebook 06), :mod:`equisae.sweeps.aa`;
* ``base_seeds``: TopK and adaptive SAEs on the key targets over the data and base models of
  several data seeds (notebook 06), :mod:`equisae.sweeps.base_seeds`;
* ``extended``: the intermediate layers outside the published grid (``equisae extended``,
  :mod:`equisae.sweeps.extended`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from equisae.runner import Job, SweepResult, run_sweep
from equisae.sweeps.inputs import InputsJob
from equisae.sweeps.probes import ProbeJob, ReferenceProbeJob
from equisae.sweeps.records import all_results, frontier_records, probe_records
from equisae.sweeps.saes import SAEJob
from equisae.sweeps.settings import SweepSettings, sweep_settings

__all__ = [
    "SWEEPS",
    "InputsJob",
    "ProbeJob",
    "ReferenceProbeJob",
    "SAEJob",
    "all_results",
    "convergence_jobs",
    "frontier_jobs",
    "frontier_records",
    "group_jobs",
    "lambda_inv_jobs",
    "probe_records",
    "probing_jobs",
    "run_named_sweep",
    "setting_jobs",
    "sweep_settings",
]


def _sae_job(s: SweepSettings, model: str, layer: str, sae_type: str, k: int, **kw) -> SAEJob:
    return SAEJob(
        model,
        layer,
        sae_type,
        k,
        kw.pop("seeds", s.seeds),
        s.mode,
        kw.pop("training", s.training),
        s.data_seed,
        kw.pop("representative", s.representative),
        **({"group": kw.pop("group")} if "group" in kw else {}),
    )


def _probes(s: SweepSettings, job: SAEJob) -> list[Job]:
    return [ProbeJob(job, seed, s.probing) for seed in job.seeds]


def _references(s: SweepSettings, model: str, layer: str, representative: str) -> list[Job]:
    jobs: list[Job] = [
        ReferenceProbeJob(
            model,
            layer,
            "raw",
            s.probe_k,
            0,
            s.mode,
            s.training,
            s.probing,
            s.data_seed,
            representative,
        )
    ]
    jobs += [
        ReferenceProbeJob(
            model,
            layer,
            "random",
            s.probe_k,
            seed,
            s.mode,
            s.training,
            s.probing,
            s.data_seed,
            representative,
        )
        for seed in s.reference_seeds
    ]
    return jobs


def frontier_jobs(s: SweepSettings) -> list[Job]:
    """Every SAE of the frontier grid: targets x SAE types x k, all seeds in one job."""
    return [
        _sae_job(s, model, layer, sae_type, k)
        for sae_type in s.sae_types
        for (model, layer) in s.targets
        if sae_type in s.types_for(model, layer)
        for k in s.ks_for_target(model, layer)
    ]


def probing_jobs(s: SweepSettings) -> list[Job]:
    """Probes at matched L0 (``probe_k``) on every SAE type and seed, plus the references."""
    jobs: list[Job] = []
    for sae_type in s.sae_types:
        for model, layer in s.targets:
            if sae_type in s.types_for(model, layer):
                jobs += _probes(s, _sae_job(s, model, layer, sae_type, s.probe_k))
    for model, layer in s.targets:
        jobs += _references(s, model, layer, s.representative)
    return jobs


def setting_jobs(s: SweepSettings) -> list[Job]:
    """The ``setting_types`` at ``probe_k`` under both canonical representatives, and the
    ``length_types`` trained for only ``short_steps`` steps (all probed)."""
    jobs: list[Job] = []
    for representative in ("fixed", "random"):
        for model, layer in s.setting_targets:
            for sae_type in s.setting_types:
                job = _sae_job(s, model, layer, sae_type, s.probe_k, representative=representative)
                jobs += _probes(s, job)
            jobs += _references(s, model, layer, representative)[:1]
    short = replace(s.training, n_steps=s.short_steps)
    for model, layer in s.setting_targets:
        for sae_type in s.length_types:
            jobs += _probes(s, _sae_job(s, model, layer, sae_type, s.probe_k, training=short))
    return jobs


def lambda_inv_jobs(s: SweepSettings) -> list[Job]:
    """The adaptive SAE at ``probe_k`` for every ``lambda_inv`` value (probed)."""
    jobs: list[Job] = []
    for value in s.lambda_inv_values:
        training = replace(s.training, lambda_inv=float(value))
        for model, layer in s.lambda_inv_targets:
            for sae_type in s.lambda_inv_types:
                job = _sae_job(s, model, layer, sae_type, s.probe_k, training=training)
                jobs += _probes(s, job)
    return jobs


def group_jobs(s: SweepSettings) -> list[Job]:
    """``group_types`` at ``probe_k`` on ``group_targets`` under every group of ``groups``
    (C4 and D4: orbits, fitted generators and equivariant SAEs of that group), all probed."""
    jobs: list[Job] = []
    for group in s.groups:
        # C4 jobs are notebook 06's (shared cache); under a larger group the pose-conditioned
        # probes (|G| blocks of latents) are skipped: notebook 08 reads the invariant factors
        # and the leakage probe only.
        probing = s.probing if group == "C4" else replace(s.probing, pose_factors=())
        settings = replace(s, probing=probing)
        for model, layer in s.group_targets:
            for sae_type in s.group_types:
                job = _sae_job(s, model, layer, sae_type, s.probe_k, group=group)
                jobs += _probes(settings, job)
    return jobs


def convergence_jobs(s: SweepSettings) -> list[Job]:
    """Every SAE type at ``probe_k`` on ``convergence_targets`` trained ``convergence_factor``
    times longer than the frontier, with ``convergence_seeds`` (the doubling test)."""
    return [
        _sae_job(
            s,
            model,
            layer,
            sae_type,
            s.probe_k,
            training=s.long_training,
            seeds=s.convergence_seeds,
        )
        for model, layer in s.convergence_targets
        for sae_type in s.types_for(model, layer)
    ]


def _extended_jobs(s: SweepSettings) -> list[Job]:
    from equisae.sweeps.extended import extended_jobs

    return extended_jobs(s)


def _aa_jobs(s: SweepSettings) -> list[Job]:
    from equisae.sweeps.aa import aa_jobs

    return aa_jobs(s)


def _base_seed_jobs(s: SweepSettings) -> list[Job]:
    from equisae.sweeps.base_seeds import base_seed_jobs

    return base_seed_jobs(s)


def _planted_jobs(s: Any) -> list[Job]:
    from equisae.sweeps import planted

    return list(planted.planted_jobs(s.mode))


#: name -> function of the mode's settings returning the sweep's jobs
SWEEPS: dict[str, Callable[[SweepSettings], list[Job]]] = {
    "planted": _planted_jobs,
    "frontier": frontier_jobs,
    "convergence": convergence_jobs,
    "probing": probing_jobs,
    "setting": setting_jobs,
    "lambda_inv": lambda_inv_jobs,
    "group": group_jobs,
    "aa": _aa_jobs,
    "base_seeds": _base_seed_jobs,
    "extended": _extended_jobs,
}


def sweep_jobs(name: str, mode: str, data_seed: int | None = None) -> list[Job]:
    """The jobs of the named sweep ``name`` in ``mode`` (KeyError listing the names)."""
    if name not in SWEEPS:
        raise KeyError(f"unknown sweep {name!r}; known: {sorted(SWEEPS)}")
    return SWEEPS[name](sweep_settings(mode).with_data_seed(data_seed))


def run_named_sweep(
    name: str,
    mode: str,
    scheduler: Any = None,
    progress: bool = False,
    data_seed: int | None = None,
    artifacts: str | None = None,
) -> SweepResult:
    """Run (or load from the verified artifact cache) one named sweep; raises on failures.

    ``scheduler``: None for a local Dask cluster, ``"serial"`` for this process, or the address
    of a running scheduler. Used by the notebooks and by ``equisae sweep``.
    """
    jobs = sweep_jobs(name, mode, data_seed)
    result = run_sweep(jobs, scheduler=scheduler, progress=progress, artifacts=artifacts)
    result.raise_for_failures()
    return result
