"""Tables and summaries of sweep records for notebooks 05 and 06 (Markdown strings, tested).

Every function takes flat records (:func:`equisae.sweeps.frontier_records` /
:func:`equisae.sweeps.probe_records`) and returns Markdown or plain numbers; notebooks only call
them and display the result.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from equisae.plots.style import encoder_label
from equisae.tables import format_number, markdown_table, mean_sd_cell
from equisae.verdicts import INVARIANT_FACTORS, paired_delta

__all__ = [
    "advantage",
    "convergence_table",
    "design_choice_table",
    "design_choices",
    "doubling_rows",
    "doubling_table",
    "fvu_ratio_by_length",
    "invariant_f1_by_probe",
    "learned_generator_summary",
    "learned_generator_table",
    "leakage_table",
    "lambda_inv_summary",
    "lambda_inv_table",
    "representation_table",
    "setting_table",
]

Record = Mapping[str, Any]


def _label(sae_type: str) -> str:
    from equisae.plots.findings import label_of

    return label_of(sae_type)


def _group(records: Iterable[Record], keys: Sequence[str], value: str) -> dict[tuple, list[float]]:
    out: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        v = r.get(value)
        if v is not None and np.isfinite(v):
            out[tuple(r[k] for k in keys)].append(float(v))
    return out


def convergence_table(records: Sequence[Record]) -> str:
    """Per SAE type: steps, the relative change of the smoothed loss over the last quarter of
    training (:func:`equisae.sweeps.saes.final_loss_change`; mean ± sd over every SAE of the
    type) and the largest |change|."""
    groups = _group(records, ("sae_type",), "final_loss_change")
    steps = {r["sae_type"]: r.get("n_steps") for r in records}
    rows = [
        {
            "SAE": _label(t),
            "steps": steps.get(t),
            "SAEs": len(v),
            "loss change, last quarter (mean ± sd)": mean_sd_cell(v, signed=True),
            "largest |change|": max(abs(x) for x in v),
        }
        for (t,), v in groups.items()
    ]
    return markdown_table(rows)


def doubling_rows(records: Sequence[Record], long_records: Sequence[Record]) -> list[Record]:
    """The doubling test of convergence: per (model, layer, SAE type) of ``long_records`` (the
    ``convergence`` sweep), test FVU after the frontier's training and after the longer one,
    seed by seed, and the relative change (negative: longer training reconstructs better).

    ``records``: frontier records (same k, lambda_inv and representative are matched)."""
    short: dict[tuple, float] = {}
    for r in records:
        key = (r["model"], r["layer"], r["sae_type"], r["k"], r["lambda_inv"], r["seed"])
        if r.get("representative", "fixed") == "fixed" and r.get("fvu") is not None:
            short[key + (r["n_steps"],)] = float(r["fvu"])
    grouped: dict[tuple, list[tuple[float, float, int, int, float | None]]] = defaultdict(list)
    for r in long_records:
        if r.get("representative", "fixed") != "fixed" or r.get("fvu") is None:
            continue
        base = (r["model"], r["layer"], r["sae_type"], r["k"], r["lambda_inv"], r["seed"])
        matches = [(k[-1], v) for k, v in short.items() if k[:-1] == base and k[-1] < r["n_steps"]]
        if not matches:
            continue
        steps, fvu = max(matches)
        grouped[base[:4]].append(
            (fvu, float(r["fvu"]), steps, r["n_steps"], r.get("final_loss_change"))
        )
    rows = []
    for (model, layer, sae_type, k), pairs in grouped.items():
        changes = [long / short_ - 1 for short_, long, *_ in pairs]
        tails = [p[4] for p in pairs if p[4] is not None and np.isfinite(p[4])]
        rows.append(
            {
                "model": model,
                "layer": layer,
                "sae_type": sae_type,
                "k": k,
                "n_seeds": len(pairs),
                "steps": pairs[0][2],
                "long_steps": pairs[0][3],
                "fvu": float(np.mean([p[0] for p in pairs])),
                "fvu_long": float(np.mean([p[1] for p in pairs])),
                "relative_change": float(np.mean(changes)),
                "long_final_loss_change": float(np.mean(tails)) if tails else None,
            }
        )
    return rows


def doubling_table(rows: Sequence[Record]) -> str:
    """:func:`doubling_rows` as Markdown."""
    return markdown_table(
        [
            {
                "model / layer": f"{r['model']} / {r['layer']}",
                "SAE": _label(r["sae_type"]),
                f"FVU at {r['steps']} steps": format_number(r["fvu"]),
                "FVU at ×2 steps" if r["long_steps"] == 2 * r["steps"] else "FVU, longer": (
                    format_number(r["fvu_long"])
                ),
                "change": f"{100 * r['relative_change']:+.1f}%",
                "loss change, last quarter (long run)": (
                    "—"
                    if r["long_final_loss_change"] is None
                    else f"{r['long_final_loss_change']:+.3f}"
                ),
            }
            for r in rows
        ]
    )


def fvu_ratio_by_length(
    rows: Sequence[Record], sae: str = "adaptive", baseline: str = "topk"
) -> list[Record]:
    """The frontier verdict's quantity, FVU(sae) / FVU(baseline), per target after the
    frontier's training and after the doubling test's (from :func:`doubling_rows`)."""
    by = {(r["model"], r["layer"], r["sae_type"]): r for r in rows}
    out = []
    for (model, layer, sae_type), r in by.items():
        base = by.get((model, layer, baseline))
        if sae_type != sae or base is None:
            continue
        out.append(
            {
                "model": model,
                "layer": layer,
                "ratio": r["fvu"] / base["fvu"],
                "ratio_long": r["fvu_long"] / base["fvu_long"],
            }
        )
    return out


def learned_generator_table(rows: Sequence[Record]) -> str:
    """:func:`equisae.sweeps.saes.learned_generator_rows` as Markdown: per target and SAE type,
    mean ± sd over seeds of the distance to the fit and the group error weighted by the
    activations' covariance, and how well the learned M and the fit predict every pose from the
    base pose (FVU; the identity as the no-model reference)."""
    keys = ("model", "layer", "sae_type")
    columns = {  # the plain distance and group error are in representation_table
        "weighted distance to fit": "distance_weighted",
        "weighted group error": "group_error_weighted",
        "pose FVU, learned M": "prediction_fvu",
        "fitted M": "prediction_fvu_fit",
        "identity": "prediction_fvu_identity",
    }
    groups = {name: _group(rows, keys, metric) for name, metric in columns.items()}
    out = []
    for key in dict.fromkeys(tuple(r[k] for k in keys) for r in rows):
        row: dict[str, Any] = {"model / layer": f"{key[0]} / {key[1]}", "SAE": _label(key[2])}
        row.update({name: mean_sd_cell(groups[name].get(key, [])) for name in columns})
        out.append(row)
    return markdown_table(out)


def learned_generator_summary(
    rows: Sequence[Record], sae_type: str = "adaptive"
) -> dict[str, Any] | None:
    """What notebook 05 and the ledger say about one SAE type's learned M (rows of
    :func:`equisae.sweeps.saes.learned_generator_rows`): the number of targets, on how many the
    seed-mean pose FVU of the learned M is worse than the fit's, and the range over seeds of the
    weighted distance and group error. None when there is no row of ``sae_type``."""
    mine = [r for r in rows if r["sae_type"] == sae_type]
    if not mine:
        return None
    by_target: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in mine:
        by_target[r["model"], r["layer"]].append(r)
    worse = sum(
        float(np.mean([r["prediction_fvu"] for r in group])) > group[0]["prediction_fvu_fit"]
        for group in by_target.values()
    )

    def span(key: str) -> tuple[float, float]:
        return min(r[key] for r in mine), max(r[key] for r in mine)

    return {
        "n_targets": len(by_target),
        "n_worse": int(worse),
        "distance_weighted": span("distance_weighted"),
        "group_error_weighted": span("group_error_weighted"),
    }


def representation_table(records: Sequence[Record]) -> str:
    """The equivariant SAEs' M after training: distance to the least-squares fit, group error
    and drift (mean ± sd over seeds), per SAE type and (model, layer)."""
    rows = []
    keys = ("model", "layer", "sae_type")
    dist = _group(records, keys, "m_distance_to_fit")
    group_err = _group(records, keys, "m_group_error")
    drift = _group(records, keys, "m_drift")
    for key, values in dist.items():
        rows.append(
            {
                "model / layer": f"{key[0]} / {key[1]}",
                "SAE": _label(key[2]),
                "‖M − M_fit‖ / ‖M_fit‖": mean_sd_cell(values),
                "group error ‖M⁴ − I‖/‖I‖": mean_sd_cell(group_err.get(key, [])),
                "drift from start": mean_sd_cell(drift.get(key, [])) if key in drift else "—",
            }
        )
    return markdown_table(rows)


def _invariant_per_seed(
    records: Sequence[Record], probe_k: str, factors: Sequence[str]
) -> dict[tuple, dict[int, float]]:
    """{(model, layer, sae_type, representative, lambda_inv): {seed: mean F1 over factors}}."""
    acc: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["probe_k"] == probe_k and r["factor"] in factors and r["features"] == "latents":
            key = (r["model"], r["layer"], r["sae_type"], r["representative"], r["lambda_inv"])
            acc[key][r["seed"]].append(r["f1"])
    return {k: {s: float(np.mean(v)) for s, v in per.items()} for k, per in acc.items()}


def invariant_f1_by_probe(
    records: Sequence[Record],
    probe_ks: Sequence[str],
    sae_types: Sequence[str],
    factors: Sequence[str] = INVARIANT_FACTORS,
) -> str:
    """Mean invariant-factor F1 per SAE type (rows) and probe type (columns), pooled over the
    (model, layer) targets and seeds: mean ± sd over the per-(target, seed) values."""
    rows = []
    for t in sae_types:
        row: dict[str, Any] = {"SAE": _label(t)}
        for pk in probe_ks:
            per = _invariant_per_seed(records, pk, factors)
            vals = [v for k, d in per.items() if k[2] == t for v in d.values()]
            row["dense" if pk == "all" else f"{pk[1:]}-sparse"] = mean_sd_cell(vals)
        rows.append(row)
    return markdown_table(rows)


def leakage_table(records: Sequence[Record], sae_types: Sequence[str]) -> str:
    """The leakage probe: dense-probe F1 of the latents predicting the pose (chance ≈ 1/|G|),
    per SAE type, pooled over targets and seeds. Invariant latents should sit at chance."""
    rows = []
    for t in sae_types:
        sel = [
            r
            for r in records
            if r["sae_type"] == t
            and r["factor"] == "pose"
            and r["probe_k"] == "all"
            and r["features"] == "latents"
        ]
        if not sel:
            continue
        rows.append(
            {
                "SAE": _label(t),
                "pose F1 (dense)": mean_sd_cell([r["f1"] for r in sel]),
                "chance": float(np.mean([r["chance_f1"] for r in sel])),
            }
        )
    return markdown_table(rows)


def setting_table(
    records: Sequence[Record],
    sae_types: Sequence[str],
    probe_ks: Sequence[str] = ("all", "k1", "k5"),
    baseline: str = "topk",
    factors: Sequence[str] = INVARIANT_FACTORS,
) -> tuple[str, list[dict[str, Any]]]:
    """Fixed against random canonical representative: per (target, representative, SAE type),
    the invariant-factor F1 difference to ``baseline`` (paired by seed) for each probe type.

    Returns the Markdown table and its rows as dicts (for the results file).
    """
    out_rows: list[dict[str, Any]] = []
    table_rows = []
    for pk in probe_ks:
        per = _invariant_per_seed(records, pk, factors)
        for (model, layer, t, rep, lam), values in sorted(per.items()):
            if t not in sae_types or t == baseline:
                continue
            base = per.get((model, layer, baseline, rep, lam))
            if base is None:
                continue
            delta = paired_delta(values, base)
            out_rows.append(
                {
                    "model": model,
                    "layer": layer,
                    "sae_type": t,
                    "representative": rep,
                    "probe_k": pk,
                    "delta_mean": delta.mean,
                    "delta_sd": delta.sd,
                    "n": delta.n,
                    "status": delta.status,
                }
            )
            table_rows.append(
                {
                    "model / layer": f"{model} / {layer}",
                    "representative": rep,
                    "SAE": _label(t),
                    "probe": "dense" if pk == "all" else f"{pk[1:]}-sparse",
                    f"F1 − {_label(baseline)} (mean ± sd, n)": delta.cell(),
                    "verdict": delta.status,
                }
            )
    return markdown_table(table_rows), out_rows


def lambda_inv_summary(
    frontier: Sequence[Record],
    probes: Sequence[Record],
    probe_k: str = "k5",
    factors: Sequence[str] = INVARIANT_FACTORS,
) -> list[dict[str, Any]]:
    """Per (target, SAE type, lambda_inv): FVU, latent equivariance error and the
    invariant-factor F1 of ``probe_k`` probes (mean and sd over seeds)."""
    out = []
    keys = ("model", "layer", "sae_type", "lambda_inv")
    fvu = _group(frontier, keys, "fvu")
    inv = _group(frontier, keys, "latent_equivariance_error")
    per = _invariant_per_seed(probes, probe_k, factors)
    f1: dict[tuple, list[float]] = defaultdict(list)
    for (model, layer, t, _rep, lam), values in per.items():
        f1[model, layer, t, lam].extend(values.values())
    for key in sorted(fvu, key=lambda k: (k[0], k[1], k[2], k[3])):
        row = dict(zip(keys, key, strict=True))
        for name, source in (("fvu", fvu), ("latent_equivariance_error", inv), ("f1", f1)):
            vals = source.get(key, [])
            row[name] = float(np.mean(vals)) if vals else float("nan")
            row[f"{name}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
        row["probe_k"] = probe_k
        out.append(row)
    return out


def lambda_inv_table(summary: Sequence[Record]) -> str:
    """:func:`lambda_inv_summary` as a Markdown table."""
    rows = [
        {
            "model / layer": f"{r['model']} / {r['layer']}",
            "SAE": _label(r["sae_type"]),
            "λ_inv": r["lambda_inv"],
            "FVU": format_number(r["fvu"]),
            "latent equivariance error": format_number(r["latent_equivariance_error"]),
            f"invariant F1 ({r['probe_k'][1:]}-sparse)": format_number(r["f1"]),
        }
        for r in summary
    ]
    return markdown_table(rows)


def advantage(
    records: Sequence[Record],
    sae: str,
    baseline: str = "topk",
    probe_k: str = "all",
    representative: str = "fixed",
    n_steps: int | None = None,
    factors: Sequence[str] = INVARIANT_FACTORS,
) -> list[float]:
    """Per (target, seed): invariant-factor F1 of ``sae`` minus ``baseline`` (same seed),
    for one probe type, representative and (optionally) training length."""
    sel = [
        r
        for r in records
        if r["representative"] == representative
        and (n_steps is None or r["n_steps"] == n_steps)
        and r["lambda_inv"] in (None, 1.0)
    ]
    per = _invariant_per_seed(sel, probe_k, factors)
    out = []
    for (model, layer, t, _rep, _lam), values in per.items():
        if t != sae:
            continue
        base = next(
            (v for k, v in per.items() if k[:2] == (model, layer) and k[2] == baseline), None
        )
        if base is None:
            continue
        out += [values[s] - base[s] for s in values if s in base]
    return out


def design_choices(
    records: Sequence[Record], full_steps: int, short_steps: int, sparse: str = "k5"
) -> list[dict[str, Any]]:
    """The design choices that move the probing verdict, each measured as the adaptive SAE's
    invariant-factor F1 advantage over TopK (mean, sd, n over targets and seeds) under each
    alternative. ``records``: probe records of the probing and setting sweeps together."""

    def row(choice: str, variant: str, values: list[float], probe: str) -> dict[str, Any]:
        return {
            "choice": choice,
            "variant": variant,
            "probe": "dense" if probe == "all" else f"{probe[1:]}-sparse",
            "advantage_mean": float(np.mean(values)) if values else float("nan"),
            "advantage_sd": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
            "n": len(values),
        }

    rows = []
    for probe in ("all", sparse):
        rows += [
            row(
                "encoder",
                encoder_label("raw"),
                advantage(records, "adaptive", probe_k=probe, n_steps=full_steps),
                probe,
            ),
            row(
                "encoder",
                encoder_label("canonical"),
                advantage(records, "adaptive_canonical", probe_k=probe, n_steps=full_steps),
                probe,
            ),
            row(
                "representative",
                "fixed (main text)",
                advantage(records, "adaptive", probe_k=probe, n_steps=full_steps),
                probe,
            ),
            row(
                "representative",
                "random (appendix)",
                advantage(
                    records, "adaptive", probe_k=probe, representative="random", n_steps=full_steps
                ),
                probe,
            ),
            row(
                "training length",
                f"{full_steps} steps",
                advantage(records, "adaptive", probe_k=probe, n_steps=full_steps),
                probe,
            ),
            row(
                "training length",
                f"{short_steps} steps",
                advantage(records, "adaptive", probe_k=probe, n_steps=short_steps),
                probe,
            ),
        ]
    return rows


def design_choice_table(rows: Sequence[Record]) -> str:
    """:func:`design_choices` as a Markdown table."""
    return markdown_table(
        [
            {
                "design choice": r["choice"],
                "variant": r["variant"],
                "probe": r["probe"],
                "F1 adaptive − TopK (mean ± sd)": mean_sd_cell(
                    mean=r["advantage_mean"], sd=r["advantage_sd"], signed=True
                ),
                "n (targets × seeds)": r["n"],
            }
            for r in rows
        ]
    )
