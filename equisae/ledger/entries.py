"""One ledger entry: its judged points, its label (by :func:`equisae.verdicts.claim_label`), its
number with spread and seed count. Every point stores what its status was computed from, so the
label can be recomputed from ``claims.json`` alone (:func:`relabel`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from equisae.tables import mean_sd_cell
from equisae.verdicts import (
    NEGATIVE,
    NOT_RUN,
    POSITIVE,
    RULE,
    TOO_FEW,
    WITHIN,
    claim_label,
    judge_points,
)

__all__ = [
    "BOTH",
    "PAIRED",
    "THRESHOLD",
    "Spec",
    "both_points",
    "entry",
    "judged",
    "label",
    "not_run",
    "number_text",
    "relabel",
    "threshold_point",
]

#: the rules a point can be judged by (stored with the point as ``"rule"``)
PAIRED = "paired t-test, Holm"
THRESHOLD = "threshold"
BOTH = "both halves"


class Spec(Protocol):
    """What an entry needs of its registry entry (:class:`equisae.ledger.registry.ClaimSpec`)."""

    id: str
    title: str
    paper: str
    statement: str
    notebook: str
    scope: str
    reads: tuple


def judged(
    points: Sequence[tuple[str, Mapping[str, Any]]], direction: str | Sequence[str]
) -> list[dict]:
    """Points ``(where, {"mean", "sd", "n"})`` judged together (t-test, Holm within the list);
    ``direction`` is one for all points or one per point."""
    rows = [(w, float(d["mean"]), float(d.get("sd") or 0.0), int(d["n"])) for w, d in points]
    return [{**p.to_dict(), "rule": PAIRED} for p in judge_points(rows, direction)]


def threshold_point(where: str, value: float, threshold: float, direction: str) -> dict:
    """A one-seed point judged against a fixed threshold: ``mean`` is ``value - threshold``;
    "positive"/"negative" by its sign (no spread: a measurement, not a test)."""
    mean = float(value) - float(threshold)
    status = POSITIVE if mean > 0 else NEGATIVE if mean < 0 else WITHIN
    return {
        "where": where,
        "mean": mean,
        "sd": None,
        "n": 1,
        "direction": direction,
        "p_value": None,
        "p_holm": None,
        "status": status,
        "mde": None,
        "rule": THRESHOLD,
        "value": float(value),
        "threshold": float(threshold),
    }


def _both_status(sides: Sequence[str]) -> str:
    """ "negative" if any part is against the paper, "positive" if every part is for it, "too
    few seeds" if a part has one seed, else "within spread"."""
    if "against" in sides:
        return NEGATIVE
    if set(sides) == {"for"}:
        return POSITIVE
    return TOO_FEW if TOO_FEW in sides else WITHIN


def both_points(first: Sequence[Mapping], second: Sequence[Mapping], key) -> list[dict]:
    """Per ``key(point)`` (e.g. the base model and layer): "positive" when every point of both
    lists there is in the paper's direction, "negative" when any is against it, else "within
    spread". The parts are kept, each judged within its own list."""
    from equisae.verdicts import HIGHER, orient

    groups: dict[str, list[Mapping]] = {}
    for p in [*first, *second]:
        groups.setdefault(key(p), []).append(p)
    out = []
    for where in sorted({key(p) for p in first} & {key(p) for p in second}):
        parts = groups[where]
        status = _both_status([orient(p["status"], p["direction"]) for p in parts])
        out.append(
            {
                "where": where,
                "n": min(int(p["n"]) for p in parts),
                "direction": HIGHER,
                "status": status,
                "rule": BOTH,
                "parts": [dict(p) for p in parts],
            }
        )
    return out


def label(points: Sequence[Mapping[str, Any]]) -> str:
    """The one label function (:func:`equisae.verdicts.claim_label`) on stored points."""
    return claim_label([p["status"] for p in points], [p["direction"] for p in points])


def relabel(points: Sequence[Mapping[str, Any]]) -> tuple[list[str], str]:
    """Recompute every point's status from what it stores and the label from those statuses:
    paired points from ``mean, sd, n`` (t-test, Holm over the paired points of the entry),
    threshold points from ``value`` and ``threshold``, "both halves" points from their parts'
    stored statuses (each part is judged within its own claim)."""
    from equisae.verdicts import orient

    paired = [i for i, p in enumerate(points) if p["rule"] == PAIRED]
    statuses: list[str] = [""] * len(points)
    if paired:
        rows = [
            (points[i]["where"], points[i]["mean"], points[i]["sd"] or 0.0, points[i]["n"])
            for i in paired
        ]
        directions = [points[i]["direction"] for i in paired]
        for i, p in zip(paired, judge_points(rows, directions), strict=True):
            statuses[i] = p.status
    for i, p in enumerate(points):
        if p["rule"] == THRESHOLD:
            mean = float(p["value"]) - float(p["threshold"])
            statuses[i] = POSITIVE if mean > 0 else NEGATIVE if mean < 0 else WITHIN
        elif p["rule"] == BOTH:
            # the parts are judged within their own claims (their Holm family); combine them
            statuses[i] = _both_status([orient(q["status"], q["direction"]) for q in p["parts"]])
        elif p["rule"] != PAIRED:
            raise ValueError(f"point {p.get('where')!r}: unknown rule {p['rule']!r}")
    directions = [p["direction"] for p in points]
    return statuses, claim_label(statuses, directions)


def number_text(points: Sequence[Mapping[str, Any]], what: str, digits: int = 3) -> str:
    """``"what: +0.081 ± 0.012 (n=3) at a/b; ..."`` for the per-point values."""
    if not points:
        return "—"
    parts = []
    for p in points:
        if p["rule"] == THRESHOLD:
            parts.append(f"{p['value']:.{digits}f} at {p['where']}")
        elif p["rule"] == BOTH:
            parts.append(f"{p['status']} at {p['where']}")
        else:
            sd = p["sd"] if p["n"] > 1 else None
            cell = mean_sd_cell(mean=p["mean"], sd=sd, n=p["n"], show_n=True, signed=True)
            parts.append(f"{cell} at {p['where']}")
    return f"{what}: " + "; ".join(parts)


def spread_summary(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The compact number of the summary table: the range of the per-point mean differences,
    the typical sd, the seed count and the median smallest detectable difference."""
    paired = [p for p in points if p["rule"] == PAIRED]
    if not paired:
        return {"mean_range": None, "sd_median": None, "n_seeds": None, "mde_median": None}
    means = [float(p["mean"]) for p in paired]
    sds = [float(p["sd"]) for p in paired if p["sd"] is not None and p["n"] > 1]
    mdes = [float(p["mde"]) for p in paired if p["mde"] is not None]
    finite = [m for m in mdes if math.isfinite(m)]
    return {
        "mean_range": [min(means), max(means)],
        "sd_median": float(np.median(sds)) if sds else None,
        "n_seeds": sorted({int(p["n"]) for p in paired}),
        "mde_median": float(np.median(finite)) if finite else None,
    }


def tally(points: Sequence[Mapping[str, Any]]) -> str:
    """The sentence of a claim from its points alone: how many go the paper's way, against it,
    within the spread, and the label."""
    from equisae.verdicts import orient

    if not points:
        return ""
    sides = [orient(p["status"], p["direction"]) for p in points]
    rules = {p["rule"] for p in points}
    how = (
        "against a fixed threshold, one fit each"
        if rules == {THRESHOLD}
        else "both halves beyond the seed spread"
        if rules == {BOTH}
        else "beyond the seed spread (two-sided paired t-test, Holm-adjusted, 5 %)"
    )
    return (
        f"{sides.count('for')} of {len(points)} points go the paper's way and "
        f"{sides.count('against')} against it, {how}; {sides.count('neither')} within the "
        f"spread and {sides.count(TOO_FEW)} with too few seeds. Label: {label(points)}."
    )


def entry(spec: Spec, points: Sequence[Mapping[str, Any]], **fields: Any) -> dict[str, Any]:
    """The ledger entry of ``spec``: its points, the label computed from them, and ``fields``
    (``setting``, ``number``, ``sentence``, ``probe_type``, ``encoder``, ``variants``, ...)."""
    out: dict[str, Any] = {
        "id": spec.id,
        "title": spec.title,
        "paper": spec.paper,
        "statement": spec.statement,
        "notebook": spec.notebook,
        "scope": spec.scope,
        "reads": [r.address for r in spec.reads],
        "rule": RULE,
        "setting": "",
        "number": "",
        "points": [dict(p) for p in points],
        "verdict": label(points),
        "summary": spread_summary(points),
        "sentence": tally(points),
        "probe_type": "none (not a probing claim)",
        "encoder": None,
        "variants": [],
    }
    out.update(fields)
    if fields.get("sentence") and points:
        out["sentence"] = f"{fields['sentence']} {tally(points)}"
    return out


def not_run(spec: Spec, missing: str = "") -> dict[str, Any]:
    """A claim whose notebook results (or a key it reads) are absent."""
    what = missing or f"results/…/{spec.notebook}.json"
    return entry(spec, [], verdict=NOT_RUN, sentence=f"Not run: {what} is absent.")
