"""The base-seeds sweep: how much of a probing verdict belongs to the base model.

What a seed varies:

- an SAE **seed** (``SweepSettings.seeds``) sets the SAE's initial weights and the order of its
  minibatches; the data, the base model and the probes' subsample of orbits stay the same;
- a **data seed** (``SweepSettings.data_seed``, 0 for every published run) sets the Shapes data
  of every split and the base model's initialisation and training, hence its activations, the
  fitted representation and everything downstream.

The seed spread of every verdict is therefore the spread between SAEs on *one* base model.
This sweep trains ``base_seed_types`` at ``probe_k`` on ``base_seed_targets`` under every SAE
seed, on the data and base model of each data seed of ``base_seeds``, and probes them as
notebook 06 does. Data seed 0's jobs are the probing sweep's own (same constructors, same
hashes), so only the other data seeds are trained. :func:`base_seed_summary` reads the
adaptive-minus-TopK invariant-factor F1 per data seed through the claims' verdict code
(:func:`equisae.verdicts.probing_verdict`, hence :func:`~equisae.verdicts.claim_label`) and sets
the spread across base models (the sd of the per-base-seed mean differences) next to the SAE-seed
sd within a base model. A label that changes with the base model's seed is not a finding about
SAEs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from equisae.runner import Job, JobResult
from equisae.sweeps.settings import SweepSettings
from equisae.verdicts import (
    ALPHA,
    INVARIANT_FACTORS,
    RULE,
    probe_type,
    probing_verdict,
)

__all__ = [
    "base_seed_jobs",
    "base_seed_records",
    "base_seed_sentence",
    "base_seed_spread_table",
    "base_seed_summary",
    "base_seed_table",
]


def base_seed_jobs(s: SweepSettings) -> list[Job]:
    """The probes of ``base_seed_types`` at ``probe_k`` on ``base_seed_targets``, every SAE
    seed, on the data and base model of every data seed of ``base_seeds``."""
    from equisae.sweeps import _probes, _sae_job

    if not (s.base_seed_targets and s.base_seeds and s.base_seed_types):
        raise ValueError(
            "the base_seeds sweep needs base_seed_targets, base_seed_types and base_seeds in "
            f"the {s.mode!r} settings, got {s.base_seed_targets}, {s.base_seed_types}, "
            f"{s.base_seeds}"
        )
    jobs: list[Job] = []
    for data_seed in s.base_seeds:
        on_seed = s.with_data_seed(data_seed)
        for model, layer in s.base_seed_targets:
            for sae_type in s.base_seed_types:
                jobs += _probes(on_seed, _sae_job(on_seed, model, layer, sae_type, s.probe_k))
    return jobs


def base_seed_records(results: Sequence[JobResult | None]) -> list[dict[str, Any]]:
    """:func:`~equisae.sweeps.probe_records` of the SAE probes, each with the ``data_seed`` of
    the base model it was trained on."""
    from equisae.sweeps.probes import ProbeJob
    from equisae.sweeps.records import probe_records

    rows: list[dict[str, Any]] = []
    for r in results:
        if r is not None and isinstance(r.job, ProbeJob):
            rows += [{**row, "data_seed": r.job.sae.data_seed} for row in probe_records([r])]
    return rows


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _spread(means: Sequence[float], sds: Sequence[float], ns: Sequence[int]) -> dict[str, Any]:
    """The sd across base seeds of their mean differences, the pooled SAE-seed sd within a base
    seed (root mean of the variances of the base seeds with two or more SAE seeds) and their
    ratio; None where a spread needs more seeds than there are."""
    between = float(np.std(means, ddof=1)) if len(means) > 1 else float("nan")
    within_var = [sd**2 for sd, n in zip(sds, ns, strict=True) if n > 1 and math.isfinite(sd)]
    within = math.sqrt(float(np.mean(within_var))) if within_var else float("nan")
    ratio = between / within if within > 0 and math.isfinite(between) else float("nan")
    return {"between_sd": _finite(between), "within_sd": _finite(within), "ratio": _finite(ratio)}


def base_seed_summary(
    records: Sequence[Mapping[str, Any]],
    settings: SweepSettings,
    probe_ks: Sequence[str] | None = None,
    sae: str = "adaptive",
    baseline: str = "topk",
    factors: Sequence[str] = INVARIANT_FACTORS,
) -> dict[str, Any]:
    """Per target, probe type and base seed: ``sae`` minus ``baseline`` invariant-factor F1
    (mean, sd and n over SAE seeds, paired by seed) and the label of that one point
    (:func:`~equisae.verdicts.probing_verdict`); per target and probe type: the spread across
    base seeds next to the SAE-seed spread, and whether the label flips; per probe type: the
    label over all targets per base seed (Holm over the targets, as notebook 06) and whether it
    flips. ``records``: :func:`base_seed_records` (every record needs ``data_seed``);
    ``probe_ks``: default, the dense probe and every sparse size of ``settings.probing``."""
    if not records:
        raise ValueError("base_seed_summary: no records given")
    lacking = [r for r in records if "data_seed" not in r]
    if lacking:
        raise KeyError(
            f"base_seed_summary: a record lacks 'data_seed' (use base_seed_records); it has "
            f"{sorted(lacking[0])}"
        )
    if probe_ks is None:
        probe_ks = ["all"] + [f"k{k}" for k in settings.probing.probe_ks if k is not None]
    base_seeds = list(settings.base_seeds)
    present = {int(r["data_seed"]) for r in records}
    missing = [b for b in base_seeds if b not in present]
    if missing:
        raise ValueError(
            f"base_seed_summary: no records for base seed(s) {missing}; the records have "
            f"data seeds {sorted(present)}, the settings' base_seeds are {base_seeds}"
        )
    by_seed = {b: [r for r in records if int(r["data_seed"]) == b] for b in base_seeds}
    targets = [tuple(t) for t in settings.base_seed_targets]

    def verdict(rs: Sequence[Mapping[str, Any]], pk: str):
        return probing_verdict(rs, probe_k=pk, sae=sae, baseline=baseline, factors=factors)

    points, spread, claims = [], [], []
    for pk in probe_ks:
        for model, layer in targets:
            cells = []
            for b in base_seeds:
                on = [r for r in by_seed[b] if (r["model"], r["layer"]) == (model, layer)]
                v = verdict(on, pk)
                row, point = v.rows[0], v.points[0]
                cells.append(
                    {
                        "model": model,
                        "layer": layer,
                        "probe_k": pk,
                        "probe": probe_type(pk),
                        "base_seed": b,
                        "mean": row.delta.mean,
                        "sd": _finite(row.delta.sd) if row.delta.n > 1 else None,
                        "n": row.delta.n,
                        "p_value": _finite(point.p_value),
                        "status": point.status,
                        "direction": point.direction,
                        "label": v.outcome,
                    }
                )
            points += cells
            labels = [c["label"] for c in cells]
            spread.append(
                {
                    "model": model,
                    "layer": layer,
                    "probe_k": pk,
                    "probe": probe_type(pk),
                    "means": [c["mean"] for c in cells],
                    **_spread(
                        [c["mean"] for c in cells],
                        [c["sd"] if c["sd"] is not None else float("nan") for c in cells],
                        [c["n"] for c in cells],
                    ),
                    "labels": labels,
                    "flips": len(set(labels)) > 1,
                }
            )
        labels = [verdict(by_seed[b], pk).outcome for b in base_seeds]
        claims.append(
            {
                "probe_k": pk,
                "probe": probe_type(pk),
                "labels": labels,
                "flips": len(set(labels)) > 1,
            }
        )
    ratios = [s["ratio"] for s in spread if s["ratio"] is not None]
    n_sae = len(settings.seeds)
    summary = {
        "sae": sae,
        "baseline": baseline,
        "base_seeds": base_seeds,
        "sae_seeds": list(settings.seeds),
        "targets": [list(t) for t in targets],
        "factors": list(factors),
        "probe_ks": list(probe_ks),
        "alpha": ALPHA,
        "rule": RULE,
        "points": points,
        "spread": spread,
        "claims": claims,
        "n_point_flips": sum(s["flips"] for s in spread),
        "n_claim_flips": sum(c["flips"] for c in claims),
        "any_flip": any(s["flips"] for s in spread) or any(c["flips"] for c in claims),
        "median_ratio": float(np.median(ratios)) if ratios else None,
        "min_ratio": min(ratios) if ratios else None,
        "max_ratio": max(ratios) if ratios else None,
        #: what the ratio would be if the base model changed nothing: the sd of a mean of n
        #: SAE seeds is the SAE-seed sd over sqrt(n)
        "ratio_if_no_base_effect": 1.0 / math.sqrt(n_sae) if n_sae > 1 else None,
    }
    summary["sentence"] = base_seed_sentence(summary)
    return summary


def _target(row: Mapping[str, Any]) -> str:
    return f"{row['model']}/{row['layer']}"


def base_seed_sentence(summary: Mapping[str, Any]) -> str:
    """One paragraph from :func:`base_seed_summary`: which labels flip with the base seed, and
    the ratio of the base-seed spread to the SAE-seed spread."""
    seeds = ", ".join(map(str, summary["base_seeds"]))
    spread, claims = summary["spread"], summary["claims"]
    flipped = [s for s in spread if s["flips"]]
    if flipped:
        listed = "; ".join(
            f"{_target(s)}, {s['probe']}: {' / '.join(s['labels'])}" for s in flipped
        )
        flips = (
            f"the label of the adaptive SAE against TopK changes with the base model's seed on "
            f"{len(flipped)} of {len(spread)} (target, probe type) points ({listed})"
        )
    else:
        flips = (
            f"the label of the adaptive SAE against TopK is the same under every base model on "
            f"all {len(spread)} (target, probe type) points"
        )
    n_claims = sum(c["flips"] for c in claims)
    flips += f", and the label over the targets changes on {n_claims} of {len(claims)}"
    flips += " probe types"
    text = f"Across base-model seeds {seeds}, {flips}."
    median, null = summary["median_ratio"], summary["ratio_if_no_base_effect"]
    if median is None or null is None:
        return (
            f"{text} With {len(summary['sae_seeds'])} SAE seed(s) per base model there is no "
            "SAE-seed spread to set the base-seed spread against."
        )
    return (
        f"{text} The sd of the per-base-seed mean differences is a median {median:.2f} times "
        f"the SAE-seed sd within a base model (from {summary['min_ratio']:.2f} to "
        f"{summary['max_ratio']:.2f} over the points); if the base model changed nothing it "
        f"would be about {null:.2f} (the SAE-seed sd over the square root of "
        f"{len(summary['sae_seeds'])} seeds), so a ratio well above that is variation that "
        "the SAE seeds do not show."
    )


def base_seed_table(summary: Mapping[str, Any], digits: int = 3) -> str:
    """The long table: one row per target, probe type and base seed, with the difference
    (mean ± sd over SAE seeds, n) and the label of that point."""
    from equisae.tables import markdown_table
    from equisae.verdicts import PairedDelta

    rows = []
    for p in summary["points"]:
        sd = p["sd"] if p["sd"] is not None else 0.0
        delta = PairedDelta(p["mean"], sd, p["n"], 0)
        rows.append(
            {
                "target": _target(p),
                "probe": p["probe"],
                "base seed": p["base_seed"],
                "adaptive − TopK F1 (mean ± sd, n)": delta.cell(digits),
                "label": p["label"],
            }
        )
    return markdown_table(rows, digits=digits)


def base_seed_spread_table(summary: Mapping[str, Any], digits: int = 3) -> str:
    """Per target and probe type: the sd across base seeds of the mean differences, the SAE-seed
    sd within a base model, their ratio, and whether the label flips."""
    from equisae.tables import markdown_table

    rows = [
        {
            "target": _target(s),
            "probe": s["probe"],
            "sd across base seeds": s["between_sd"],
            "SAE-seed sd": s["within_sd"],
            "ratio": s["ratio"],
            "label flips": "yes" if s["flips"] else "no",
        }
        for s in summary["spread"]
    ]
    return markdown_table(rows, digits=digits)
