"""The ledger as MyST Markdown for the book (``{equisae-claims}`` in ``book/claims.md``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from equisae.ledger.entries import BOTH, THRESHOLD
from equisae.tables import escape, format_number, markdown_table, mean_sd_cell
from equisae.verdicts import NOT_RUN

__all__ = [
    "calibration_table",
    "claim_details",
    "claims_table",
    "compact_number",
    "design_table",
    "ledger_markdown",
]

Links = bool | Collection[str]


def _link(stem: str, link: Links = True) -> str:
    """A MyST link "notebook NN" to the notebook page, or its name when ``link`` is False or a
    collection of the notebook stems that have a page and ``stem`` is not among them."""
    if link is True or (not isinstance(link, bool) and stem in link):
        return f"{{doc}}`notebook {stem[:2]} <notebooks/{stem}>`"
    return f"`{stem}` (not in this book)"


def _rests_on(claim: Mapping[str, Any]) -> str:
    """The probe type, or what a non-probing claim is measured by ("—" when not run)."""
    text = str(claim["probe_type"])
    if claim["verdict"] == NOT_RUN:
        return "—"
    if text.startswith("none (") and text.endswith(")"):
        return text[len("none (") : -1]
    return text


def compact_number(claim: Mapping[str, Any]) -> str:
    """The summary's number: the range of the per-point differences, the typical seed sd and
    the seed count (or the measured values of a one-fit claim)."""
    points = claim["points"]
    if not points:
        return "—"
    rules = {p["rule"] for p in points}
    if rules == {THRESHOLD}:
        values = [p["value"] for p in points]
        return f"{min(values):.3g} to {max(values):.3g} over {len(points)} fits (one each)"
    if rules == {BOTH}:
        held = sum(p["status"] == "positive" for p in points)
        return f"both halves at {held} of {len(points)}"
    s = claim["summary"]
    lo, hi = s["mean_range"]
    seeds = "/".join(str(n) for n in s["n_seeds"])
    sd = f", sd ≈ {format_number(s['sd_median'])}" if s["sd_median"] is not None else ""
    span = format_number(lo, signed=True)
    if len(points) > 1:
        span += f" to {format_number(hi, signed=True)}"
    return f"{span} over {len(points)} point(s){sd}, n = {seeds} seeds"


def _detectable(claim: Mapping[str, Any]) -> str:
    mde = claim["summary"].get("mde_median")
    return "—" if mde is None else format_number(mde)


def claims_table(ledger: Mapping[str, Any], link: Links = True) -> str:
    """One row per claim: the claim (linked to its details, with the paper version and the
    notebook that computes it), the label, the number with spread and seed count, the smallest
    detectable difference, what it rests on, its scope. Six columns: at the book's column width
    every word of every column fits on a line (``book/_static/equisae.css``)."""
    rows = [
        {
            "claim": (
                f"{{ref}}`{escape(c['title'])} <{c['id']}>` "
                f"(paper {c['paper']}; {_link(c['notebook'], link)})"
            ),
            "verdict": f"**{c['verdict']}**",
            "difference (paper's claim minus baseline)": compact_number(c),
            "smallest detectable": _detectable(c),
            "rests on": _rests_on(c),
            "scope": c["scope"],
        }
        for c in ledger["claims"]
    ]
    return markdown_table(rows)


def _advantage(v: Mapping[str, Any]) -> str:
    return mean_sd_cell(
        mean=v["advantage_mean"], sd=v["advantage_sd"], n=v["n"], show_n=True, signed=True
    )


def design_table(ledger: Mapping[str, Any]) -> str:
    """The design choices: every variant's F1 advantage (adaptive − TopK) and whether the
    choice moves the verdict."""
    rows = [
        {
            "design choice": d["choice"],
            "probe": d["probe"],
            "variants: F1 adaptive − TopK (mean ± sd, n)": "; ".join(
                f"{v['variant']}: {_advantage(v)} ({v['status']})" for v in d["variants"]
            ),
            "largest difference": format_number(d["effect"]),
            "moves the verdict": "yes" if d["moves_verdict"] else "no",
        }
        for d in ledger["design_choices"]
    ]
    if not rows:
        return "No design-choice measurements in these results (notebook 06 not run)."
    return markdown_table(rows)


def calibration_table(ledger: Mapping[str, Any]) -> str:
    """The A/A test of the rule (notebook 06): per compared quantity, the per-point and
    per-claim false-positive rates."""
    aa = ledger.get("calibration")
    if not aa:
        return "No A/A calibration in these results (notebook 06 did not run it)."
    rows = [
        {
            "quantity": r["quantity"],
            "SAE": r["sae"],
            "points": r["n_points"],
            "seeds per set": r["n_seeds"],
            "per-point false positives": f"{r['point_false']} of {r['n_points']}",
            "after Holm": f"{r['holm_false']} of {r['n_points']}",
            "claim label": r["label"],
        }
        for r in aa["rows"]
    ]
    n_points, n_claims = aa["n_points"], aa["n_claims"]
    pooled = (
        f"Seeds {', '.join(map(str, aa['seeds_a']))} against "
        f"{', '.join(map(str, aa['seeds_b']))}: "
        f"{round(aa['point_false_rate'] * n_points)} of {n_points} points "
        f"({aa['point_false_rate']:.1%}) reject at 5 % alone, "
        f"{round(aa['holm_false_rate'] * n_points)} after Holm; "
        f"{round(aa['claim_false_rate'] * n_claims)} of {n_claims} comparisons "
        f"({aa['claim_false_rate']:.1%}) get a label other than 'does not hold'."
    )
    return markdown_table(rows) + "\n\n" + pooled


def claim_details(claim: Mapping[str, Any], link: Links = True) -> str:
    """One claim as MyST, under a stable target (``#claim-1``): the statement, the scope, the
    setting, the number, the label with the rule, the smallest detectable difference."""
    nb = _link(claim["notebook"], link)
    lines = [
        f"({claim['id']})=",
        f"**{escape(claim['title'])}** (paper {claim['paper']}; computed in {nb})",
        "",
        f"- *The paper*: {claim['statement']}",
        f"- *What we tested*: {claim['scope']}",
    ]
    if claim["setting"]:
        lines.append(f"- *Setting*: {claim['setting']}")
    if claim["number"]:
        lines.append(f"- *Our number*: {claim['number']}")
    lines.append(f"- *Verdict*: **{claim['verdict']}**; rests on: {_rests_on(claim)}.")
    mde = claim["summary"].get("mde_median")
    if mde is not None:
        lines.append(
            f"- *Smallest difference this test could detect* (80 % power, median over points): "
            f"{format_number(mde)}"
        )
    if claim["encoder"]:
        lines.append(f"- *Encoder*: {claim['encoder']}")
    if claim["sentence"]:
        lines.append(f"- *In words*: {claim['sentence']}")
    for v in claim["variants"]:
        verdict = f"**{v['verdict']}**; " if v.get("verdict") else ""
        lines.append(f"- *Variant, {v['label']}*: {verdict}{v['number']}")
    return "\n".join(lines)


def ledger_markdown(ledger: Mapping[str, Any], link: Links = True) -> str:
    """The whole ledger as MyST: the summary table, the design choices, the A/A calibration,
    then every claim."""
    out = [
        claims_table(ledger, link),
        "",
        "### The design choices that move a verdict",
        "",
        design_table(ledger),
        "",
        "### The A/A test of the rule",
        "",
        calibration_table(ledger),
        "",
        "### Every claim in detail",
    ]
    for claim in ledger["claims"]:
        out += ["", claim_details(claim, link)]
    return "\n".join(out)
