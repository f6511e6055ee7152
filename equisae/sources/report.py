"""Tables and sentences of a :func:`equisae.sources.pipeline.study_source` result (notebook 07).

Every function takes the study dict (or its flat records) and returns Markdown or plain
numbers, so the notebook only calls them and displays the result. Verdicts come from
:mod:`equisae.verdicts` (one rule for every claim, the same as on Shapes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from equisae.plots.findings import label_of as _label
from equisae.tables import format_number, format_spread, markdown_table, mean_sd_cell
from equisae.verdicts import (
    NEGATIVE,
    POSITIVE,
    TOO_FEW,
    WITHIN,
    paired_delta,
    probe_type,
    probing_verdict,
)

__all__ = [
    "base_model_table",
    "confusion_table",
    "count_better",
    "factor_words",
    "frontier_verdict_table",
    "linrep_table",
    "probe_f1_table",
    "probing_verdicts",
    "probing_verdict_table",
    "six_nine",
    "six_nine_table",
    "verdict_long_rows",
]

Record = Mapping[str, Any]


def confusion_table(
    confusion: Mapping[str, Any], pairs: Sequence[tuple[int, int]] = ((6, 9),)
) -> str:
    """The pixel-level measurement of :func:`equisae.sources.rotation_confusion` as a table."""
    rows = [
        {"measure": "accuracy on upright test digits", "value": confusion["upright_accuracy"]},
        {
            "measure": "accuracy on the same digits turned by 180°",
            "value": confusion["turned_accuracy"],
        },
    ]
    for a, b in pairs:
        rows += [
            {"measure": f"turned {a} classified as {b}", "value": confusion[f"{a}->{b}"]},
            {"measure": f"turned {b} classified as {a}", "value": confusion[f"{b}->{a}"]},
            {
                "measure": f"turned digits of other classes classified as {a} or {b}",
                "value": confusion[f"others_to_{a}_{b}"],
            },
        ]
    return markdown_table(rows)


def base_model_table(base_models: Sequence[Record]) -> str:
    """Per base model: test MSE on upright and on rotated images and the output equivariance
    error (0: exactly equivariant)."""
    rows = [
        {
            "base model": r["model"],
            "test MSE (upright)": r["test_mse_canonical"],
            "test MSE (rotated)": r["test_mse_rotated"],
            "output equivariance error": r["output_equivariance_error"],
            "parameters": r["n_params"],
        }
        for r in base_models
    ]
    return markdown_table(rows, digits=4)


def linrep_table(linrep: Sequence[Record]) -> str:
    """Per base model: held-out R^2 of ``M^p`` for p = 1..|G|-1, the best per-power fit's gain,
    the identity's mean R^2, the group error and the fit's rank and dimension."""
    rows = []
    for r in linrep:
        single, per_power, ident = r["r2_single"], r["r2_per_power"], r["r2_identity"]
        row: dict[str, Any] = {"base model": r["model"]}
        for p in range(1, len(single)):
            row[f"R² of M^{p}"] = single[p]
        row["max gain of M_p"] = max(
            pp - s for pp, s in zip(per_power[1:], single[1:], strict=True)
        )
        row["mean R² identity"] = float(np.mean(ident[1:]))
        row["group error"] = r["group_error"]
        row["rank / d"] = f"{r['rank']} / {r['dim']}"
        rows.append(row)
    return markdown_table(rows, digits=4)


def _mean_over(records: Sequence[Record], keys: Sequence[str], value: str = "f1") -> dict:
    out: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        v = r.get(value)
        if v is not None and np.isfinite(v):
            out[tuple(r[k] for k in keys)].append(float(v))
    return out


#: probe targets as words in tables (a raw identifier is not prose)
FACTOR_WORDS = {"digit_without_6_9": "digit without 6 and 9"}


def factor_words(factor: str) -> str:
    """A probe target as table text: ``digit_without_6_9`` -> ``digit without 6 and 9``."""
    return FACTOR_WORDS.get(factor, factor.replace("_", " "))


def probe_f1_table(
    probes: Sequence[Record],
    feature_types: Sequence[str],
    factors: Sequence[str],
    probe_ks: Sequence[str] = ("all", "k1", "k5"),
) -> str:
    """F1 per (feature type, probe type) (rows) and factor (columns): mean ± sd over base
    models and seeds. Long format, so that the table fits a page's column."""
    stats = _mean_over(probes, ("sae_type", "factor", "probe_k"))
    rows = []
    for t in feature_types:
        for i, pk in enumerate(probe_ks):
            row: dict[str, Any] = {
                "features": _label(t) if i == 0 else "",
                "probe": "dense" if pk == "all" else f"{pk[1:]}-sparse",
            }
            for f in factors:
                row[factor_words(f)] = mean_sd_cell(stats.get((t, f, pk), []))
            rows.append(row)
    return markdown_table(rows)


def six_nine(
    probes: Sequence[Record],
    feature_types: Sequence[str],
    probe_k: str = "all",
    with_pair: str = "digit",
    without_pair: str = "digit_without_6_9",
) -> list[dict[str, Any]]:
    """Per feature type: probe F1 of the digit with and without 6 and 9 and their difference
    (without minus with), paired per (base model, seed), as numbers."""
    rows = []
    for t in feature_types:
        sel = [r for r in probes if r["sae_type"] == t and r["probe_k"] == probe_k]
        a = {(r["model"], r["seed"]): r["f1"] for r in sel if r["factor"] == with_pair}
        b = {(r["model"], r["seed"]): r["f1"] for r in sel if r["factor"] == without_pair}
        if not a or not b:
            continue
        d = paired_delta(b, a)
        rows.append(
            {
                "sae_type": t,
                "f1_with": float(np.mean(list(a.values()))),
                "f1_without": float(np.mean(list(b.values()))),
                "gain_mean": d.mean,
                "gain_sd": d.sd,
                "n": d.n,
            }
        )
    return rows


def six_nine_table(rows: Sequence[Record]) -> str:
    """The :func:`six_nine` rows as a table."""
    return markdown_table(
        [
            {
                "features": _label(r["sae_type"]),
                "F1, all ten digits": r["f1_with"],
                "F1 without 6 and 9": r["f1_without"],
                "gain (mean ± sd, n)": mean_sd_cell(
                    mean=r["gain_mean"], sd=r["gain_sd"], n=r["n"], show_n=True, signed=True
                ),
            }
            for r in rows
        ]
    )


def probing_verdicts(
    probes: Sequence[Record],
    saes: Sequence[str],
    probe_ks: Sequence[str],
    factors: Sequence[str],
    baseline: str = "topk",
) -> dict[tuple[str, str, str], Any]:
    """``{(sae, probe_k, factor): ProbingVerdict}`` of every SAE against ``baseline``."""
    present = {r["sae_type"] for r in probes}
    return {
        (sae, pk, f): probing_verdict(
            probes, probe_k=pk, sae=sae, baseline=baseline, factors=(f,), features="latents"
        )
        for sae in saes
        if sae in present
        for pk in probe_ks
        for f in factors
    }


#: a point's status after Holm as table text: probing (higher F1 is better) and frontier
#: (higher FVU is worse); one seed has no spread to test against
PROBING_STATUS = {
    POSITIVE: "better",
    NEGATIVE: "worse",
    WITHIN: "within spread",
    TOO_FEW: "one seed",
}
FRONTIER_STATUS = {
    POSITIVE: "higher FVU",
    NEGATIVE: "lower FVU",
    WITHIN: "within spread",
    TOO_FEW: "one seed",
}
LONG_COLUMNS = ("SAE", "metric", "target", "value", "spread", "n", "status")


def verdict_long_rows(
    groups: Sequence[tuple[str, str, Any]],
    target: Callable[[Any], str],
    status_words: Mapping[str, str],
    order: Callable[[Any], Any] | None = None,
) -> list[dict[str, Any]]:
    """Long-format rows of judged verdicts, for :func:`markdown_table` over
    :data:`LONG_COLUMNS`: for every ``(sae, metric, verdict)`` one row per point of the verdict
    (``target(row)`` of its comparison row; value: the mean paired difference SAE minus
    baseline; spread: its seed sd, blank for one seed; n: seeds; status after Holm over the
    verdict's points, in ``status_words``) and then one row with the verdict's label over all
    its points. ``order``: a sort key of the comparison rows (default: the verdict's order).
    The SAE and metric are named on their first row only."""
    out: list[dict[str, Any]] = []
    previous = None
    for sae, metric, verdict in groups:
        points = verdict.points
        judged = list(zip(verdict.rows, points, strict=True))
        if order is not None:
            judged.sort(key=lambda pair: order(pair[0]))
        for i, (row, point) in enumerate(judged):
            out.append(
                {
                    "SAE": _label(sae) if i == 0 and sae != previous else "",
                    "metric": metric if i == 0 else "",
                    "target": target(row),
                    "value": format_number(point.mean, signed=True),
                    "spread": format_spread(point.sd) if point.n > 1 else "",
                    "n": point.n,
                    "status": status_words.get(point.status, point.status),
                }
            )
            previous = sae
        mean = float(np.mean([p.mean for p in points]))
        out.append(
            {
                "SAE": "",
                "metric": "",
                "target": f"label over the {len(points)} above",
                "value": format_number(mean, signed=True),
                "spread": "",
                "n": "",
                "status": f"**{verdict.outcome}**",
            }
        )
    return out


def _long_table(
    rows: Sequence[Mapping[str, Any]],
    headers: Mapping[str, str],
    columns: Sequence[str] = LONG_COLUMNS,
) -> str:
    right = {c: "right" for c in ("value", "spread", "n")}
    return markdown_table(rows, columns=columns, align=right, headers=headers)


def _model(row: Any, layers: set[str]) -> str:
    """The base model of a comparison row, with its layer when the table has several."""
    return row.model if len(layers) == 1 else f"{row.model} / {row.layer}"


def probing_verdict_table(verdicts: Mapping[tuple[str, str, str], Any]) -> str:
    """The probing verdicts in long format: per SAE, probe type and factor (the metric), one
    row per base model (F1 difference SAE minus baseline, seed sd, n, status after Holm) and a
    row with the label over the base models. Seven narrow columns: it fits a page's column."""
    if not verdicts:
        raise ValueError("probing_verdict_table needs at least one verdict, got none")
    layers = {r.layer for v in verdicts.values() for r in v.rows}
    groups = [
        (sae, f"{factor_words(factor)}, {probe_type(pk).removesuffix(' (all latents)')}", v)
        for (sae, pk, factor), v in verdicts.items()
    ]
    baselines = {_label(v.baseline) for v in verdicts.values()}
    rows = verdict_long_rows(groups, lambda r: _model(r, layers), PROBING_STATUS)
    headers = {
        "SAE": f"SAE (vs {', '.join(sorted(baselines))})",
        "metric": "F1 of, probe",
        "target": "base model",
        "value": "F1 difference",
        "spread": "sd",
    }
    return _long_table(rows, headers)


def frontier_verdict_table(verdicts: Mapping[str, Any]) -> str:
    """The frontier verdicts (``{sae: FrontierVerdict}``) in long format: per SAE, one row per
    base model and k (test FVU difference SAE minus baseline, seed sd, n, status after Holm:
    a higher FVU reconstructs worse) and a row with the label over its points."""
    if not verdicts:
        raise ValueError("frontier_verdict_table needs at least one verdict, got none")
    layers = {r.layer for v in verdicts.values() for r in v.rows}
    groups = [(sae, "test FVU", v) for sae, v in verdicts.items()]
    baselines = {_label(v.baseline) for v in verdicts.values()}
    rows = verdict_long_rows(
        groups,
        lambda r: f"{_model(r, layers)}, k={r.k}",
        FRONTIER_STATUS,
        order=lambda r: (r.model, r.layer, float(r.k)),
    )
    for row in rows:
        row.pop("metric")
    headers = {
        "SAE": f"SAE (vs {', '.join(sorted(baselines))})",
        "target": "base model, k",
        "value": "FVU difference",
        "spread": "sd",
    }
    return _long_table(rows, headers, [c for c in LONG_COLUMNS if c != "metric"])


def count_better(verdict: Any) -> tuple[int, int]:
    """(base models where the SAE is better beyond the spread, number of base models)."""
    return verdict.n_better, len(verdict.rows)
