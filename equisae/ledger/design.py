"""The design choices that move the probing verdict (notebook 06's ``design_choices``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from equisae.plots.style import encoder_label
from equisae.verdicts import TOO_FEW, paired_t_pvalue, status_of

__all__ = ["design_choices"]


#: variant names written by older notebook code, as the ledger names them now
LEGACY_VARIANTS = {
    "raw (METHOD.md)": encoder_label("raw"),
    "raw (invariance learned)": encoder_label("raw"),
}


def _status(mean: float | None, sd: float | None, n: int) -> str:
    """The status of one advantage tested alone (the module rule of :mod:`equisae.verdicts`)."""
    if mean is None or sd is None or not math.isfinite(float(mean)):
        return TOO_FEW
    return status_of(float(mean), paired_t_pvalue(float(mean), float(sd), n))


def design_choices(rows: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Each design choice (and the probe type) with the adaptive SAE's invariant-factor F1
    advantage over TopK under every variant, and whether the choice moves the verdict (its
    variants fall on different sides of the rule)."""
    if not rows:
        return []
    rows = [{**r, "variant": LEGACY_VARIANTS.get(r["variant"], r["variant"])} for r in rows]
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["choice"], r["probe"]), []).append(r)
    main = [r for r in rows if r["choice"] == "encoder" and r["variant"].startswith("raw")]
    if len({r["probe"] for r in main}) > 1:
        groups[("probe type", "dense and sparse")] = [{**r, "variant": r["probe"]} for r in main]
    out = []
    for (choice, probe), members in groups.items():
        variants = [
            {
                "variant": m["variant"],
                "advantage_mean": m.get("advantage_mean"),
                "advantage_sd": m.get("advantage_sd"),
                "n": int(m.get("n", 0)),
                "status": _status(
                    m.get("advantage_mean"), m.get("advantage_sd"), int(m.get("n", 0))
                ),
            }
            for m in members
        ]
        means = [
            float(v["advantage_mean"])
            for v in variants
            if v["advantage_mean"] is not None and math.isfinite(float(v["advantage_mean"]))
        ]
        judged = {v["status"] for v in variants if v["status"] != TOO_FEW}
        out.append(
            {
                "choice": choice,
                "probe": probe,
                "variants": variants,
                "effect": (max(means) - min(means)) if len(means) > 1 else None,
                "moves_verdict": len(judged) > 1,
            }
        )
    return out
