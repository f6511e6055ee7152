"""The A/A test of the verdict rule: one SAE type against itself.

Every SAE of ``aa_types`` at ``probe_k`` on ``aa_targets`` is trained twice, under two disjoint
seed sets (``aa_seeds_a``, the published seeds, whose SAEs and probes the probing sweep has
already cached, and ``aa_seeds_b``), and probed. The two sets differ only by seed, so every
difference the verdict code finds between them is a false positive. :func:`aa_summary` runs
the exact verdict functions of the claims (:func:`equisae.verdicts.probing_verdict`,
:func:`equisae.verdicts.frontier_verdict`) with set A as "the SAE" and set B as "the
baseline", pairing the i-th seed of A with the i-th seed of B, and counts

- per point: the points whose unadjusted paired t-test rejects at 5 % (the per-point rate the
  rule promises to keep at or below 5 %), and those still separated after Holm;
- per claim: the comparisons labelled anything but "does not hold" (or "undecided").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from equisae.runner import Job
from equisae.sweeps.settings import SweepSettings
from equisae.verdicts import (
    ALPHA,
    INVARIANT_FACTORS,
    NOT_HOLDS,
    TOO_FEW,
    UNDECIDED,
    WITHIN,
    Point,
    frontier_verdict,
    probe_type,
    probing_verdict,
)

__all__ = ["aa_jobs", "aa_summary"]

A, B = "A", "B"


def aa_jobs(s: SweepSettings) -> list[Job]:
    """The SAEs of both seed sets (``aa_types`` at ``probe_k`` on ``aa_targets``), probed."""
    from equisae.sweeps import _probes, _sae_job

    if not (s.aa_targets and s.aa_seeds_a and s.aa_seeds_b):
        raise ValueError(
            f"the aa sweep needs aa_targets, aa_seeds_a and aa_seeds_b in the {s.mode!r} "
            f"settings, got {s.aa_targets}, {s.aa_seeds_a}, {s.aa_seeds_b}"
        )
    jobs: list[Job] = []
    for seeds in (s.aa_seeds_a, s.aa_seeds_b):
        for model, layer in s.aa_targets:
            for sae_type in s.aa_types:
                jobs += _probes(s, _sae_job(s, model, layer, sae_type, s.probe_k, seeds=seeds))
    return jobs


def _as_sets(
    records: Sequence[Mapping[str, Any]],
    sae_type: str,
    seeds_a: Sequence[int],
    seeds_b: Sequence[int],
) -> list[dict[str, Any]]:
    """The records of ``sae_type`` relabelled ``"A"``/``"B"`` by seed set, with the seed
    replaced by its rank in its set (so the i-th seeds of A and B are paired)."""
    rank_a = {s: i for i, s in enumerate(seeds_a)}
    rank_b = {s: i for i, s in enumerate(seeds_b)}
    out = []
    for r in records:
        if r.get("sae_type") != sae_type:
            continue
        if r["seed"] in rank_a:
            out.append({**r, "sae_type": A, "seed": rank_a[r["seed"]]})
        elif r["seed"] in rank_b:
            out.append({**r, "sae_type": B, "seed": rank_b[r["seed"]]})
    return out


def _row(
    quantity: str, short: str, sae_type: str, points: Sequence[Point], label: str, n: int
) -> dict:
    return {
        "quantity": quantity,
        "short": short,
        "sae": sae_type,
        "n_points": len(points),
        "n_seeds": n,
        "point_false": sum(p.p_value < ALPHA for p in points),
        "holm_false": sum(p.status not in (WITHIN, TOO_FEW) for p in points),
        "label": label,
        "false_claim": label not in (NOT_HOLDS, UNDECIDED),
        "points": [p.to_dict() for p in points],
    }


def aa_summary(
    probe_rows: Sequence[Mapping[str, Any]],
    sae_rows: Sequence[Mapping[str, Any]],
    settings: SweepSettings,
    probe_ks: Sequence[str] = ("all", "k5"),
    factors: Sequence[str] = INVARIANT_FACTORS,
) -> dict[str, Any]:
    """The A/A table: per SAE type, invariant-factor F1 on each probe type of ``probe_ks`` and
    test FVU at ``probe_k``, set A against set B through the claims' verdict functions; and the
    pooled per-point and per-claim false-positive rates. ``probe_rows``/``sae_rows``: the
    sweep's :func:`~equisae.sweeps.probe_records` and :func:`~equisae.sweeps.frontier_records`."""
    seeds_a, seeds_b = settings.aa_seeds_a, settings.aa_seeds_b
    n = len(seeds_a)
    rows = []
    for sae_type in settings.aa_types:
        probes = _as_sets(probe_rows, sae_type, seeds_a, seeds_b)
        for pk in probe_ks:
            v = probing_verdict(probes, probe_k=pk, sae=A, baseline=B, factors=factors)
            short = "F1, dense" if pk == "all" else f"F1, {pk[1:]}-sparse"
            quantity = f"invariant F1, {probe_type(pk)}"
            rows.append(_row(quantity, short, sae_type, v.points, v.outcome, n))
        saes = _as_sets(sae_rows, sae_type, seeds_a, seeds_b)
        f = frontier_verdict(saes, sae=A, baseline=B, k=settings.probe_k)
        quantity = f"test FVU at k = {settings.probe_k}"
        rows.append(_row(quantity, "FVU", sae_type, f.points, f.outcome, n))
    n_points = sum(r["n_points"] for r in rows)
    return {
        "seeds_a": list(seeds_a),
        "seeds_b": list(seeds_b),
        "targets": [list(t) for t in settings.aa_targets],
        "alpha": ALPHA,
        "rows": rows,
        "n_points": n_points,
        "point_false_rate": sum(r["point_false"] for r in rows) / n_points if n_points else None,
        "holm_false_rate": sum(r["holm_false"] for r in rows) / n_points if n_points else None,
        "n_claims": len(rows),
        "claim_false_rate": sum(r["false_claim"] for r in rows) / len(rows) if rows else None,
    }
