"""The claims ledger: the paper's claims, our numbers and our verdicts, in one JSON file.

:func:`build_ledger` reads a results folder (``reference/full`` by default; ``results/quick``
works the same) and returns, per claim of the paper (METHOD.md, "The paper's claims"): the
paper's statement (v1 or v2), the setting we test it in, our number (mean ± sd over seeds, per
(model, layer) or per number of features), the verdict, the probe type it rests on and the
notebook that computed it. It also lists the design choices that move a verdict (encoder,
canonical representative, training length, probe type) with their measured effect, from
notebook 06. :func:`write_ledger` writes it as JSON; :func:`ledger_markdown` renders it for
the book (``{equisae-claims}`` in ``book/claims.md``).

A notebook whose results file is absent gives claims marked ``"not run"``. A results file of
the first release's schema (before the notebooks moved to :mod:`equisae.sweeps`) raises
:class:`LedgerSchemaError`, naming the file, the keys it lacks and the command that rewrites it.

Verdict words (one rule for every claim, that of :mod:`equisae.verdicts`: a paired per-seed
difference counts when its mean is more than two standard errors from zero):

- ``"holds"``: in the paper's direction beyond the spread at a majority of the points;
- ``"contradicted"``: against it beyond the spread at a majority of the points;
- ``"does not hold"``: in its direction beyond the spread nowhere;
- ``"mixed"``: anything in between;
- ``"undecided (one seed)"``: no point has two seeds, so there is no spread to judge by;
- ``"not run"``: the notebook's results are absent.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from equisae.io import project_root, read_json, write_json_atomic
from equisae.tables import escape, format_number, markdown_table, mean_sd_cell
from equisae.verdicts import (
    NEGATIVE,
    POSITIVE,
    SPREAD_FACTOR,
    TOO_FEW,
    WITHIN,
    PairedDelta,
    linear_representation_verdict,
    paired_delta,
    probe_type,
)

SCHEMA = 1
HOLDS, CONTRADICTED, NOT_HOLDS, MIXED = "holds", "contradicted", "does not hold", "mixed"
UNDECIDED, NOT_RUN = "undecided (one seed)", "not run"
VERDICTS = (HOLDS, CONTRADICTED, NOT_HOLDS, MIXED, UNDECIDED, NOT_RUN)

# The keys a results file of the current schema has (the first release's files lack them).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "03_linear_representation": ("models",),
    "04_planted_features": ("verdicts", "summary", "runs"),
    "05_frontier": ("verdicts", "grid", "runs"),
    "06_probing": ("verdicts", "claim", "design_choices", "runs"),
}
OPTIONAL_STEMS = ("07_digits", "08_dihedral")

# The paper's statements (METHOD.md, "The paper's claims"), quoted or closely paraphrased.
STATEMENTS = {
    "claim1": (
        "v1",
        "Autoencoders trained on images with 90-degree rotational symmetry (C4) have activations "
        "that transform by a single linear map, h(gx) ≈ M h(x); rotating by g^p is explained by "
        "M^p (fit quality reported as R²).",
    ),
    "claim2": (
        "v1",
        "Adaptively equivariant SAEs, which learn M together with an SAE whose latents are "
        "invariant to the group, adapt to the base model's actual level of equivariance.",
    ),
    "claim3_probing": (
        "v1",
        "Their features give better probing (classification F1 on held-out data) than a "
        "regular SAE's ...",
    ),
    "claim3_frontier": ("v1", "... although they lag on the reconstruction-sparsity frontier."),
    "claim3_both": (
        "v1",
        "Adaptive SAE features probe better than a regular SAE's although they lag on the "
        "frontier (both halves at once, per base-model layer).",
    ),
    "planted": (
        "v2",
        "In a toy setting with planted ground-truth features, equivariant SAEs recover and "
        "detect features better than regular SAEs, wider SAEs and group crosscoders, "
        "increasingly so as interference grows.",
    ),
    "digits": (
        "v2",
        "The findings carry over from synthetic shapes to real images (v2: galaxy and cell "
        "images; here a real-image stand-in).",
    ),
    "dihedral": (
        "v2",
        "The construction extends beyond C4 (here: the dihedral group D4, rotations and flips, "
        "against C4).",
    ),
}
TITLES = {
    "claim1": "Claim 1: one matrix M",
    "claim2": "Claim 2: the adaptive SAE adapts its M",
    "claim3_probing": "Claim 3a: better probing",
    "claim3_frontier": "Claim 3b: lags on the frontier",
    "claim3_both": "Claim 3: both halves at once",
    "planted": "v2: planted features",
    "digits": "v2: real images",
    "dihedral": "v2: C4 against D4",
}
NOTEBOOK = {
    "claim1": "03_linear_representation",
    "claim2": "04_planted_features",
    "claim3_probing": "06_probing",
    "claim3_frontier": "05_frontier",
    "claim3_both": "06_probing",
    "planted": "04_planted_features",
    "digits": "07_digits",
    "dihedral": "08_dihedral",
}
PLANTED_METRICS = ("recovery", "detection_f1")
ENCODERS = {"raw": "raw (METHOD.md)", "canonical": "canonicalising"}


class LedgerSchemaError(ValueError):
    """A results file written by the first release's notebooks (before equisae.sweeps)."""


# --------------------------------------------------------------------------- reading results
def load_results(results_dir: Path, stem: str) -> dict[str, Any] | None:
    """``results_dir/<stem>.json``, or None when absent; old-schema files raise."""
    path = Path(results_dir) / f"{stem}.json"
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise LedgerSchemaError(f"{path} must hold a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS.get(stem, ()) if k not in data]
    if missing:
        mode = data.get("mode", "full")
        raise LedgerSchemaError(
            f"{path} holds results of the old schema (the first release, before the notebooks "
            f"moved to equisae.sweeps): it lacks the key(s) {missing} (it has {sorted(data)}). "
            f"Rewrite it with `equisae reproduce --mode {mode}` (and republish the reference)."
        )
    return data


def _delta(d: Mapping[str, Any]) -> PairedDelta:
    return PairedDelta(
        float(d["mean"]),
        float(d.get("sd") or 0.0),
        int(d["n"]),
        int(d.get("n_positive", 0)),
        tuple(d.get("seeds", ())),
    )


def _value(where: str, delta: PairedDelta, **extra: Any) -> dict[str, Any]:
    return {
        "where": where,
        "mean": delta.mean,
        "sd": delta.sd,
        "n_seeds": delta.n,
        "status": delta.status,
        **extra,
    }


def _cell(mean: float, sd: float | None, n: int) -> str:
    """``"+0.041 ± 0.007 (n=3)"``; no sd for one seed (there is no spread)."""
    return mean_sd_cell(mean=mean, sd=sd if n > 1 else None, n=n, show_n=True, signed=True)


def _number(values: Sequence[Mapping[str, Any]], what: str) -> str:
    """``"what: +0.081 ± 0.012 (n=3) at a/b; ..."`` for the per-point values."""
    if not values:
        return "—"
    parts = [f"{_cell(v['mean'], v['sd'], v['n_seeds'])} at {v['where']}" for v in values]
    return f"{what}: " + "; ".join(parts)


def verdict_word(n_for: int, n_against: int, n_points: int, decidable: bool) -> str:
    """One of :data:`VERDICTS` from the counts of points beyond the spread each way."""
    if n_points == 0:
        return NOT_RUN
    if not decidable:
        return UNDECIDED
    if n_for > n_points / 2:
        return HOLDS
    if n_against > n_points / 2:
        return CONTRADICTED
    if n_for == 0:
        return NOT_HOLDS
    return MIXED


def _decidable(values: Sequence[Mapping[str, Any]]) -> bool:
    return any(v["status"] != TOO_FEW for v in values)


def _claim(key: str, **fields: Any) -> dict[str, Any]:
    version, statement = STATEMENTS[key]
    out = {
        "id": key,
        "title": TITLES[key],
        "paper": version,
        "statement": statement,
        "notebook": NOTEBOOK[key],
        "setting": "",
        "number": "",
        "values": [],
        "verdict": NOT_RUN,
        "sentence": "",
        "probe_type": "none (not a probing claim)",
        "variant_label": "",
        "encoder": None,
        "variants": [],
    }
    out.update(fields)
    return out


def _not_run(key: str, **fields: Any) -> dict[str, Any]:
    sentence = f"Not run: results/…/{NOTEBOOK[key]}.json is absent from this results folder."
    return _claim(key, sentence=sentence, **fields)


# --------------------------------------------------------------------------- claim 1
def claim_one_matrix(r03: Mapping[str, Any] | None) -> dict[str, Any]:
    """Claim 1 from notebook 03: held-out R^2 of M^p per (model, layer)."""
    if r03 is None:
        return _not_run("claim1")
    fits = {
        (model, layer): res
        for model, layers in r03["models"].items()
        for layer, res in layers.items()
        if isinstance(res, Mapping) and "r2_single" in res
    }
    if not fits:
        return _not_run("claim1")
    verdict = linear_representation_verdict(fits)
    values = [
        {
            "where": f"{r.model}/{r.layer}",
            "mean": r.min_r2,
            "sd": None,
            "n_seeds": 1,
            "status": "one matrix" if verdict.holds_for(r) else "not one matrix",
        }
        for r in verdict.rows
    ]
    mins = [r.min_r2 for r in verdict.rows]
    n = len(values)
    word = HOLDS if verdict.n_holds == n else NOT_HOLDS if verdict.n_holds == 0 else MIXED
    number = (
        f"min over p of held-out R² of M^p: {mean_sd_cell(mins)} over {n} (model, layer) pairs "
        f"(one seed); one matrix (R² ≥ {verdict.r2_threshold:g} at every power) at "
        f"{verdict.n_holds} of {n}"
    )
    return _claim(
        "claim1",
        setting=f"{len({m for m, _ in fits})} base models × {len({la for _, la in fits})} layers, "
        f"group {r03.get('group', 'C4')}, ridge fit on training orbits, R² on held-out orbits",
        number=number,
        values=values,
        verdict=word,
        sentence=verdict.sentence(),
        probe_type="none (held-out R² of M^p)",
    )


# --------------------------------------------------------------------------- claim 2
def _base_model_generators(r05: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The raw-encoder adaptive SAE's learned M on the base models (notebook 05), as a variant
    line of claim 2 without a verdict; None when notebook 05 did not record it."""
    from equisae.sweeps.report import learned_generator_summary

    summary = learned_generator_summary((r05 or {}).get("learned_generators", []))
    if summary is None:
        return None
    low, high = summary["group_error_weighted"]
    return {
        "encoder": ENCODERS["raw"],
        "label": "base models (notebook 05, no verdict)",
        "verdict": "",
        "number": f"the learned M predicts held-out poses worse than the fit it started from on "
        f"{summary['n_worse']} of {summary['n_targets']} targets; covariance-weighted group error "
        f"{low:.2f} to {high:.2f} (0 for a representation)",
    }


def claim_adapts(
    r04: Mapping[str, Any] | None, r05: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Claim 2, as far as the planted setting tests it: the adaptive SAE's M, started at I,
    moves toward the true representation R (paired by seed: distance after minus before)."""
    if r04 is None:
        return _not_run("claim2")
    values = []
    for model, encoder in (("adaptive", "raw"), ("adaptive_canonical", "canonical")):
        runs = [
            r
            for r in r04["runs"]
            if r.get("model") == model and r.get("m_distance_to_R_after") is not None
        ]
        for n_features in sorted({r["n_features"] for r in runs}):
            at = [r for r in runs if r["n_features"] == n_features]
            after = {r["seed"]: r["m_distance_to_R_after"] for r in at}
            before = {r["seed"]: r["m_distance_to_R_before"] for r in at}
            delta = paired_delta(after, before)
            values.append(
                _value(
                    f"{n_features} features",
                    delta,
                    encoder=ENCODERS[encoder],
                    after=float(np.mean(list(after.values()))),
                    before=float(np.mean(list(before.values()))),
                )
            )
    if not values:
        return _not_run("claim2")
    main = [v for v in values if v["encoder"] == ENCODERS["raw"]] or values
    n_for = sum(v["status"] == NEGATIVE for v in main)
    n_against = sum(v["status"] == POSITIVE for v in main)
    word = verdict_word(n_for, n_against, len(main), _decidable(main))
    number = "relative distance ‖M − R‖/‖R‖, after minus before training: " + "; ".join(
        f"{_cell(v['mean'], v['sd'], v['n_seeds'])} at {v['where']} "
        f"({v['before']:.3f} → {v['after']:.3f})"
        for v in main
    )
    sentence = (
        f"Started at M = I, the adaptive SAE's learned M moves toward the planted "
        f"representation R beyond the seed spread at {n_for} of {len(main)} numbers of features "
        f"(away from it at {n_against}). This tests that M adapts to the representation in the "
        f"data; that it tracks the *level* of equivariance of a base model is shown, without a "
        f"verdict, by the learned M's distance to the least-squares fit in notebook 05."
    )
    variants = [
        {
            "encoder": v["encoder"],
            "where": v["where"],
            "number": f"{_cell(v['mean'], v['sd'], v['n_seeds'])} at {v['where']}",
        }
        for v in values
        if v not in main
    ]
    base = _base_model_generators(r05)
    if base is not None:
        variants.append(base)
    return _claim(
        "claim2",
        setting="planted toy setting (notebook 04): known R, adaptive M initialised at I",
        probe_type="none (distance of the learned M to R)",
        number=number,
        values=main,
        verdict=word,
        sentence=sentence,
        encoder=ENCODERS["raw"],
        variants=variants,
    )


# --------------------------------------------------------------------------- claim 3
def _setting_06(r06: Mapping[str, Any], r05: Mapping[str, Any] | None) -> str:
    runs = [r for r in r06["runs"] if r.get("sae_type") == "adaptive"]
    targets = sorted({f"{r['model']}/{r['layer']}" for r in runs})
    reps = sorted({str(r.get("representative")) for r in runs})
    steps = sorted({r["n_steps"] for r in runs if r.get("n_steps") is not None})
    lam = sorted({r["lambda_inv"] for r in runs if r.get("lambda_inv") is not None})
    parts = [
        f"{'/'.join(reps)} canonical representative",
        f"targets {', '.join(targets)}",
        f"k = {r06.get('probe_k')}",
    ]
    if steps:
        parts.append(f"{steps[-1]} training steps")
    if lam:
        parts.append(f"λ_inv = {lam[0]:g}")
    rows = r06.get("n_rows")
    if isinstance(rows, Mapping) and "test" in rows:
        parts.append(f"{rows['test']} held-out probe rows")
    return "; ".join(parts)


def _short_probe(pk: str) -> str:
    """``"dense"`` or ``"5-sparse"`` for a probe key ``"all"`` / ``"k5"``."""
    return "dense" if pk == "all" else f"{pk[1:]}-sparse"


def _probing_values(verdict: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        _value(f"{r['model']}/{r['layer']}", _delta(r["delta"]), sae=r.get("sae_mean"))
        for r in verdict.get("rows", [])
    ]


def _probe_keys(r06: Mapping[str, Any]) -> list[str]:
    keys = {k.split("/", 1)[1] for k in r06["verdicts"] if k.startswith("adaptive/")}
    return sorted(keys, key=lambda k: (k != "all", int(k[1:]) if k[1:].isdigit() else 0))


def claims_probing(r06: Mapping[str, Any] | None, r05: Mapping[str, Any] | None) -> list[dict]:
    """Claim 3a (better probing of the invariant factors), one entry per probe type."""
    if r06 is None:
        return [_not_run("claim3_probing")]
    out = []
    setting = _setting_06(r06, r05)
    for pk in _probe_keys(r06):
        verdict = r06["verdicts"][f"adaptive/{pk}"]
        values = _probing_values(verdict)
        n_for = sum(v["status"] == POSITIVE for v in values)
        n_against = sum(v["status"] == NEGATIVE for v in values)
        variants = []
        canon = r06["verdicts"].get(f"adaptive_canonical/{pk}")
        if canon is not None:
            cv = _probing_values(canon)
            variants.append(
                {
                    "encoder": ENCODERS["canonical"],
                    "verdict": verdict_word(
                        sum(v["status"] == POSITIVE for v in cv),
                        sum(v["status"] == NEGATIVE for v in cv),
                        len(cv),
                        _decidable(cv),
                    ),
                    "number": _number(cv, "F1 difference"),
                    "sentence": canon.get("sentence", ""),
                }
            )
        factors = ", ".join(verdict.get("factors", ()))
        out.append(
            _claim(
                "claim3_probing",
                id=f"claim3_probing/{pk}",
                variant_label=_short_probe(pk),
                setting=setting,
                number=_number(values, f"invariant-factor F1 ({factors}), adaptive minus TopK"),
                values=values,
                verdict=verdict_word(n_for, n_against, len(values), _decidable(values)),
                sentence=verdict.get("sentence", ""),
                probe_type=verdict.get("probe_type", probe_type(pk)),
                encoder=ENCODERS["raw"],
                variants=variants,
            )
        )
    return out or [_not_run("claim3_probing")]


def _frontier_values(verdict: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        _value(f"{r['model']}/{r['layer']}, k={r['k']}", _delta(r["delta"]))
        for r in verdict.get("rows", [])
    ]


def _frontier_word(values: Sequence[Mapping[str, Any]]) -> str:
    return verdict_word(
        sum(v["status"] == POSITIVE for v in values),
        sum(v["status"] == NEGATIVE for v in values),
        len(values),
        _decidable(values),
    )


def claim_frontier(r05: Mapping[str, Any] | None) -> dict[str, Any]:
    """Claim 3b: the adaptive SAE's test FVU is higher than TopK's at the same k."""
    if r05 is None or "adaptive_vs_topk" not in r05.get("verdicts", {}):
        return _not_run("claim3_frontier")
    verdict = r05["verdicts"]["adaptive_vs_topk"]
    values = _frontier_values(verdict)
    grid = r05.get("grid", {})
    setting = (
        f"{'/'.join(sorted({str(r.get('representative')) for r in r05['runs']}))} canonical "
        f"representative; targets {', '.join('/'.join(t) for t in grid.get('targets', []))}; "
        f"k ∈ {grid.get('ks')}; {grid.get('n_steps')} steps; {len(grid.get('seeds', []))} "
        f"seed(s); pose inferred at evaluation"
    )
    variants = []
    canon = r05["verdicts"].get("adaptive_canonical_vs_topk")
    if canon is not None:
        cv = _frontier_values(canon)
        variants.append(
            {
                "encoder": ENCODERS["canonical"],
                "verdict": _frontier_word(cv),
                "number": f"median FVU ratio {canon.get('median_ratio', float('nan')):.2f}",
                "sentence": canon.get("sentence", ""),
            }
        )
    doubled = r05.get("doubling_fvu_ratios") or []
    if doubled:
        long_steps = (
            max(r["long_steps"] for r in r05.get("doubling", [])) if "doubling" in r05 else 0
        )
        variants.append(
            {
                "encoder": ENCODERS["raw"],
                "label": f"trained {long_steps} steps instead of {grid.get('n_steps')} (seed 0)",
                "verdict": "",
                "number": "FVU ratio adaptive/TopK "
                + "; ".join(
                    f"{r['model']}/{r['layer']} {r['ratio']:.2f} → {r['ratio_long']:.2f}"
                    for r in doubled
                ),
                "sentence": "",
            }
        )
    ratio = verdict.get("median_ratio")
    number = _number(values, "test FVU, adaptive minus TopK")
    if ratio is not None:
        number = f"median FVU ratio adaptive/TopK {ratio:.2f}; " + number
    return _claim(
        "claim3_frontier",
        setting=setting,
        number=number,
        values=values,
        verdict=_frontier_word(values),
        sentence=verdict.get("sentence", ""),
        probe_type="none (test FVU at matched k)",
        encoder=ENCODERS["raw"],
        variants=variants,
    )


def claims_both(r06: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Claim 3 as a whole, per probe type: probes better AND lags, per (model, layer)."""
    if r06 is None:
        return [_not_run("claim3_both")]
    out = []
    for pk in _probe_keys(r06):
        claim = r06["claim"].get(pk)
        if claim is None:
            continue
        values = _probing_values(r06["verdicts"][f"adaptive/{pk}"])
        held, n = int(claim["holds_layers"]), int(claim["n_layers"])
        if not _decidable(values):
            word = UNDECIDED
        else:
            word = HOLDS if held > n / 2 else NOT_HOLDS if held == 0 else MIXED
        out.append(
            _claim(
                "claim3_both",
                id=f"claim3_both/{pk}",
                variant_label=_short_probe(pk),
                setting=_setting_06(r06, None),
                number=f"holds on {held} of {n} (model, layer) pairs",
                values=[],
                verdict=word,
                sentence=claim.get("sentence", ""),
                probe_type=probe_type(pk),
                encoder=ENCODERS["raw"],
            )
        )
    return out or [_not_run("claim3_both")]


# --------------------------------------------------------------------------- v2: planted
def _planted_values(verdict: Mapping[str, Any]) -> list[dict[str, Any]]:
    higher = bool(verdict.get("higher_is_better", True))
    out = []
    for r in verdict.get("rows", []):
        delta = _delta(r["delta"])
        status = delta.status
        if not higher and status in (POSITIVE, NEGATIVE):  # orient: positive = better
            status = POSITIVE if status == NEGATIVE else NEGATIVE
        out.append(
            {
                **_value(f"{r['n_features']} features", delta),
                "status": status,
                "ours": r.get("ours"),
                "baseline": r.get("baseline"),
            }
        )
    return out


def claims_planted(r04: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """v2's planted-feature result, one entry per metric (raw encoder; canonicalising as a
    variant): best equivariant SAE minus best baseline, per number of features."""
    if r04 is None:
        return [_not_run("planted")]
    settings = r04.get("settings", {})
    setting = (
        f"planted toy: d = {settings.get('d')}, n features ∈ {settings.get('feature_counts')}, "
        f"k = {settings.get('k')}, {settings.get('n_steps')} steps, "
        f"{len(settings.get('seeds', []))} seeds, pose inferred"
    )
    out = []
    for metric in PLANTED_METRICS:
        verdict = r04["verdicts"].get(f"raw/{metric}")
        if verdict is None:
            continue
        values = _planted_values(verdict)
        variants = []
        canon = r04["verdicts"].get(f"canonical/{metric}")
        if canon is not None:
            cv = _planted_values(canon)
            variants.append(
                {
                    "encoder": ENCODERS["canonical"],
                    "verdict": _frontier_word(cv),
                    "number": _number(cv, f"{canon.get('label', metric)}, best minus best"),
                    "sentence": canon.get("sentence", ""),
                }
            )
        label = verdict.get("label", metric)
        out.append(
            _claim(
                "planted",
                id=f"planted/{metric}",
                variant_label=label,
                setting=setting,
                number=_number(values, f"{label}, best equivariant minus best baseline"),
                values=values,
                verdict=_frontier_word(values),
                sentence=verdict.get("sentence", ""),
                probe_type=f"none ({label})",
                encoder=ENCODERS["raw"],
                variants=variants,
            )
        )
    return out or [_not_run("planted")]


# --------------------------------------------------------------------------- v2: 07, 08
def _generic_values(v: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in v.get("rows", []) or []:
        if isinstance(r, Mapping) and isinstance(r.get("delta"), Mapping) and "n" in r["delta"]:
            where = "/".join(str(r[k]) for k in ("model", "layer", "n_features") if k in r)
            out.append(_value(where or "all", _delta(r["delta"])))
    return out


PART_WORDS = {
    "frontier_verdicts": "frontier",
    "frontier_verdict": "frontier",
    "probing_verdicts": "probing",
    "probing_verdict": "probing",
    "linrep_verdict": "one matrix M",
    "digit_without_6_9": "digit without 6 and 9",
}


def _part_label(part: str) -> str:
    if part == "all" or (part.startswith("k") and part[1:].isdigit()):
        return _short_probe(part)
    return PART_WORDS.get(part, part.replace("_", " "))


def _generic_probe(name: str, v: Mapping[str, Any]) -> str:
    if "probe_type" in v:
        return str(v["probe_type"])
    if "frontier" in name or "lags" in v:
        return "none (test FVU at matched k)"
    if "linrep" in name or "n_holds" in v:
        return "none (held-out R² of M^p)"
    return "see the notebook"


def _generic_word(v: Mapping[str, Any]) -> str:
    values = _generic_values(v)
    if values and not _decidable(values):
        return UNDECIDED
    if "holds" in v and isinstance(v["holds"], bool):
        return HOLDS if v["holds"] else NOT_HOLDS
    if "lags" in v and isinstance(v["lags"], bool):
        return HOLDS if v["lags"] else NOT_HOLDS
    if "n_better" in v and "rows" in v:
        return verdict_word(int(v["n_better"]), int(v.get("n_worse", 0)), len(v["rows"]), True)
    if "n_holds" in v and isinstance(v.get("rows"), list) and v["rows"]:
        held, n = int(v["n_holds"]), len(v["rows"])
        return HOLDS if held == n else NOT_HOLDS if held == 0 else MIXED
    return "see the notebook"


def _verdict_entries(node: Any, path: str = "", depth: int = 0) -> list[tuple[str, Mapping]]:
    """Every mapping with a ``sentence`` under a key naming a verdict or claim (any depth)."""
    if not isinstance(node, Mapping) or depth > 5:
        return []
    if path and "sentence" in node and isinstance(node["sentence"], str):
        return [(path, node)]
    out = []
    for k, v in node.items():
        inside = bool(path) or any(w in str(k) for w in ("verdict", "claim"))
        if inside:
            out += _verdict_entries(v, f"{path}/{k}" if path else str(k), depth + 1)
    return out


def _is_main(name: str) -> bool:
    """Entries of the main model: the raw-encoder adaptive SAE (variants and the fixed-M SAE
    stay on the notebook page)."""
    parts = name.split("/")
    return "canonical" not in name and not any(p in ("equivariant", "topk", "wide") for p in parts)


def claims_generic(key: str, results: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Notebooks 07 and 08: one entry per recorded verdict (whatever its schema)."""
    if results is None:
        return [_not_run(key)]
    found = [(name, v) for name, v in _verdict_entries(results) if _is_main(name)]
    if not found:
        return [
            _claim(
                key,
                verdict="see the notebook",
                sentence="The notebook ran but recorded no verdict sentence in its results.",
            )
        ]
    return [
        _claim(
            key,
            id=f"{key}/{name}",
            variant_label=", ".join(
                _part_label(part) for part in name.split("/") if part not in ("verdicts", "claim")
            ),
            setting=str(results.get("setting_description", "")),
            number=_number(_generic_values(v), "difference") if _generic_values(v) else "",
            values=_generic_values(v),
            verdict=_generic_word(v),
            sentence=str(v["sentence"]),
            probe_type=_generic_probe(name, v),
        )
        for name, v in found
    ]


# --------------------------------------------------------------------------- design choices
def _status(mean: float | None, sd: float | None, n: int) -> str:
    if mean is None or not math.isfinite(float(mean)):
        return TOO_FEW
    if n < 2 or sd is None or not math.isfinite(float(sd)):
        return TOO_FEW
    band = SPREAD_FACTOR * float(sd) / math.sqrt(n)
    if mean - band > 0:
        return POSITIVE
    if mean + band < 0:
        return NEGATIVE
    return WITHIN


def design_choices(r06: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Each design choice (and the probe type) with the adaptive SAE's invariant-factor F1
    advantage over TopK under every variant, and whether the choice moves the verdict."""
    if r06 is None:
        return []
    rows = list(r06.get("design_choices", []))
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["choice"], r["probe"]), []).append(r)
    # the probe type as a choice of its own: the main variant under each probe
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


# --------------------------------------------------------------------------- the ledger
def default_results_dir() -> Path:
    """``reference/full`` under the project root: the published numbers."""
    return project_root() / "reference" / "full"


def build_ledger(results_dir: str | Path | None = None) -> dict[str, Any]:
    """The claims ledger of a results folder (``reference/full`` by default), as a dict."""
    folder = Path(results_dir) if results_dir is not None else default_results_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"results_dir {folder} is not a folder of results files")
    loaded = {stem: load_results(folder, stem) for stem in (*REQUIRED_KEYS, *OPTIONAL_STEMS)}
    modes = {str(d["mode"]) for d in loaded.values() if d and "mode" in d}
    claims = [
        claim_one_matrix(loaded["03_linear_representation"]),
        claim_adapts(loaded["04_planted_features"], loaded["05_frontier"]),
        *claims_probing(loaded["06_probing"], loaded["05_frontier"]),
        claim_frontier(loaded["05_frontier"]),
        *claims_both(loaded["06_probing"]),
        *claims_planted(loaded["04_planted_features"]),
        *claims_generic("digits", loaded["07_digits"]),
        *claims_generic("dihedral", loaded["08_dihedral"]),
    ]
    return {
        "schema": SCHEMA,
        # the folder as "reference/full" or "results/quick": never a local absolute path
        "source": f"{folder.parent.name}/{folder.name}",
        "mode": " and ".join(sorted(modes)) if modes else "unknown",
        "notebooks_run": sorted(stem for stem, d in loaded.items() if d is not None),
        "claims": claims,
        "design_choices": design_choices(loaded["06_probing"]),
    }


def write_ledger(results_dir: str | Path | None = None, out_path: str | Path | None = None) -> Path:
    """Write :func:`build_ledger` of ``results_dir`` to ``out_path`` (default
    ``results_dir/claims.json``) atomically; returns the path."""
    folder = Path(results_dir) if results_dir is not None else default_results_dir()
    ledger = build_ledger(folder)
    return write_json_atomic(Path(out_path) if out_path else folder / "claims.json", ledger)


# --------------------------------------------------------------------------- Markdown
Links = bool | Collection[str]


def _link(stem: str, link: Links = True) -> str:
    """A MyST link "notebook NN" to the notebook page, or its name when ``link`` is False or a
    collection of the notebook stems that have a page and ``stem`` is not among them."""
    if link is True or (not isinstance(link, bool) and stem in link):
        return f"{{doc}}`notebook {stem[:2]} <notebooks/{stem}>`"
    return f"`{stem}` (not in this book)"


def _full_title(claim: Mapping[str, Any]) -> str:
    label = claim.get("variant_label")
    return claim["title"] + (f", {label}" if label else "")


def _rests_on(claim: Mapping[str, Any]) -> str:
    """The probe type, or what a non-probing claim is measured by ("—" when not run)."""
    text = str(claim["probe_type"])
    if claim["verdict"] == NOT_RUN:
        return "—"
    if text.startswith("none (") and text.endswith(")"):
        return text[len("none (") : -1]
    return text


def claims_table(ledger: Mapping[str, Any], link: Links = True) -> str:
    """One row per claim: the claim, the paper's version, the verdict, the probe, the notebook."""
    rows = [
        {
            "claim": _full_title(c),
            "paper": c["paper"],
            "verdict": f"**{c['verdict']}**",
            "rests on": _rests_on(c),
            "notebook": _link(c["notebook"], link),
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
    rows = []
    for d in ledger["design_choices"]:
        rows.append(
            {
                "design choice": d["choice"],
                "probe": d["probe"],
                "variants: F1 adaptive − TopK (mean ± sd, n)": "; ".join(
                    f"{v['variant']}: {_advantage(v)} ({v['status']})" for v in d["variants"]
                ),
                "largest difference": format_number(d["effect"]),
                "moves the verdict": "yes" if d["moves_verdict"] else "no",
            }
        )
    if not rows:
        return "No design-choice measurements in these results (notebook 06 not run)."
    return markdown_table(rows)


def claim_details(claim: Mapping[str, Any], link: Links = True) -> str:
    """One claim as MyST: the statement, the setting, our number, the verdict sentence."""
    nb = _link(claim["notebook"], link)
    lines = [
        f"**{escape(_full_title(claim))}** (paper {claim['paper']}; computed in {nb})",
        "",
        f"- *The paper*: {claim['statement']}",
    ]
    if claim["setting"]:
        lines.append(f"- *Setting*: {claim['setting']}")
    if claim["number"]:
        lines.append(f"- *Our number*: {claim['number']}")
    lines.append(f"- *Verdict*: **{claim['verdict']}**; rests on: {_rests_on(claim)}.")
    if claim["encoder"]:
        lines.append(f"- *Encoder*: {claim['encoder']}")
    if claim["sentence"]:
        lines.append(f"- *In words*: {claim['sentence']}")
    for v in claim["variants"]:
        verdict = f"**{v['verdict']}**; " if v.get("verdict") else ""
        label = v.get("label") or f"{v['encoder']} encoder"
        lines.append(f"- *Variant, {label}*: {verdict}{v['number']}")
    return "\n".join(lines)


def ledger_markdown(ledger: Mapping[str, Any], link: Links = True) -> str:
    """The whole ledger as MyST: the summary table, the design choices, then every claim."""
    out = [
        claims_table(ledger, link),
        "",
        "### The design choices that move a verdict",
        "",
        design_table(ledger),
        "",
        "### Every claim in detail",
    ]
    for claim in ledger["claims"]:
        out += ["", claim_details(claim, link)]
    return "\n".join(out)


__all__ = [
    "LedgerSchemaError",
    "REQUIRED_KEYS",
    "SCHEMA",
    "VERDICTS",
    "build_ledger",
    "claim_details",
    "claims_table",
    "default_results_dir",
    "design_choices",
    "design_table",
    "ledger_markdown",
    "load_results",
    "verdict_word",
    "write_ledger",
]
