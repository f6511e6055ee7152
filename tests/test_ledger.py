"""The claims ledger: labels from small synthetic results (recomputable from the JSON alone),
the registry, missing notebooks, old schema, the book directive."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from equisae import ledger
from equisae.ledger.registry import CLAIMS, ClaimSpec
from equisae.ledger.results import Read
from equisae.verdicts import (
    CONTRADICTED,
    HOLDS,
    MIXED,
    NOT_RUN,
    UNDECIDED,
    claim_label,
)

ROOT = Path(__file__).resolve().parents[1]


def _delta(values: list[float]) -> dict:
    import numpy as np

    v = np.array(values, dtype=float)
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "sd": sd, "n": int(v.size), "n_positive": int((v > 0).sum())}


def _probing_verdict(deltas: dict[str, list[float]], pk: str) -> dict:
    rows = []
    for target, values in deltas.items():
        model, layer = target.split("/")
        rows.append(
            {"model": model, "layer": layer, "delta": _delta(values), "sae_mean": 0.5, "k": None}
        )
    return {
        "factors": ["shape", "colour", "scale"],
        "probe_k": pk,
        "probe_type": "dense probe (all latents)" if pk == "all" else f"{pk[1:]}-sparse probe",
        "rows": rows,
        "sentence": f"sentence for {pk}",
    }


def _write(folder: Path, stem: str, data: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(data))


def _results(folder: Path) -> Path:
    """A results folder with 03-06 of the current schema (3 seeds) and no 07/08."""
    r2 = {"r2_single": [1.0, 0.995, 0.994, 0.996], "r2_per_power": [1.0, 0.996, 0.995, 0.997]}
    r2_bad = {"r2_single": [1.0, 0.90, 0.80, 0.90], "r2_per_power": [1.0, 0.95, 0.95, 0.95]}
    identity = {"r2_identity": [1.0, 0.1, 0.0, 0.1]}
    _write(
        folder,
        "03_linear_representation",
        {
            "mode": "full",
            "group": "C4",
            "models": {
                "gcnn": {
                    "bottleneck": {
                        **r2,
                        **identity,
                        "group_error": 1e-9,
                        "root_distance_max": 1e-9,
                    }
                },
                "cnn": {"x": {**r2_bad, **identity, "group_error": 0.8, "root_distance_max": 0.9}},
            },
        },
    )
    runs04 = [
        {
            "model": "adaptive",
            "n_features": n,
            "seed": s,
            "m_distance_to_R_before": 1.41,
            "m_distance_to_R_after": 0.5 + 0.01 * s,
        }
        for n in (8, 32)
        for s in range(3)
    ]
    planted = {
        "higher_is_better": True,
        "label": "detection F1",
        "metric": "detection_f1",
        "rows": [
            {
                "n_features": 8,
                "ours": "adaptive",
                "baseline": "topk",
                "delta": _delta([0.2, 0.21, 0.19]),
            },
            {
                "n_features": 32,
                "ours": "adaptive",
                "baseline": "topk",
                "delta": _delta([0.1, 0.11, 0.09]),
            },
        ],
        "sentence": "planted detection",
    }
    fvu = {
        **planted,
        "higher_is_better": False,
        "label": "FVU",
        "metric": "fvu",
        "rows": [{**r, "delta": _delta([0.2, 0.21, 0.19])} for r in planted["rows"]],
    }
    recovery = {**planted, "label": "feature recovery", "metric": "recovery", "rows": fvu["rows"]}
    _write(
        folder,
        "04_planted_features",
        {
            "mode": "full",
            "runs": runs04,
            "summary": {},
            "settings": {
                "d": 16,
                "feature_counts": [8, 32],
                "k": 2,
                "n_steps": 9,
                "seeds": [0, 1, 2],
            },
            "verdicts": {"raw/detection_f1": planted, "raw/fvu": fvu, "raw/recovery": recovery},
        },
    )
    frontier_rows = [
        {"model": "gcnn", "layer": "b", "k": k, "delta": _delta([0.05, 0.06, 0.055])}
        for k in (4, 16)
    ]
    _write(
        folder,
        "05_frontier",
        {
            "mode": "full",
            "grid": {
                "targets": [["gcnn", "b"]],
                "ks": [4, 16],
                "n_steps": 2000,
                "seeds": [0, 1, 2],
            },
            "runs": [{"representative": "fixed"}],
            "verdicts": {"adaptive_vs_topk": {"rows": frontier_rows, "median_ratio": 1.5}},
            "doubling": [{"long_steps": 4000}],
            "learned_generators": [
                {
                    "model": "gcnn",
                    "layer": "b",
                    "sae_type": "adaptive",
                    "prediction_fvu": 0.2 + 0.01 * seed,
                    "prediction_fvu_fit": 0.1,
                    "seed": seed,
                    "group_error_weighted": 0.5 + 0.1 * seed,
                    "distance_weighted": 0.3,
                }
                for seed in range(3)
            ],
            "doubling_fvu_ratios": [
                {"model": "gcnn", "layer": "b", "ratio": 1.5, "ratio_long": 1.75}
            ],
        },
    )
    runs06 = [
        {
            "sae_type": "adaptive",
            "model": "gcnn",
            "layer": "b",
            "representative": "fixed",
            "n_steps": 2000,
            "lambda_inv": 1.0,
        }
    ]
    _write(
        folder,
        "06_probing",
        {
            "mode": "full",
            "probe_k": 8,
            "runs": runs06,
            "verdicts": {
                # dense: worse beyond the spread at both layers; 5-sparse: better at both
                "adaptive/all": _probing_verdict(
                    {"gcnn/b": [-0.04, -0.05, -0.045], "cnn/b": [-0.03, -0.031, -0.029]}, "all"
                ),
                "adaptive/k5": _probing_verdict(
                    {"gcnn/b": [0.3, 0.31, 0.29], "cnn/b": [0.2, 0.19, 0.21]}, "k5"
                ),
            },
            "frontier_at_probe_k": {
                "rows": [
                    {"model": m, "layer": "b", "k": 8, "delta": _delta([0.05, 0.06, 0.055])}
                    for m in ("gcnn", "cnn")
                ]
            },
            "claim": {
                "all": {"holds_layers": 0, "n_layers": 2, "sentence": "dense: 0 of 2"},
                "k5": {"holds_layers": 2, "n_layers": 2, "sentence": "sparse: 2 of 2"},
            },
            "design_choices": [
                {
                    "choice": "encoder",
                    "variant": "raw (METHOD.md)",
                    "probe": "dense",
                    "advantage_mean": -0.04,
                    "advantage_sd": 0.005,
                    "n": 6,
                },
                {
                    "choice": "encoder",
                    "variant": "canonicalising",
                    "probe": "dense",
                    "advantage_mean": 0.05,
                    "advantage_sd": 0.005,
                    "n": 6,
                },
                {
                    "choice": "encoder",
                    "variant": "raw (METHOD.md)",
                    "probe": "5-sparse",
                    "advantage_mean": 0.25,
                    "advantage_sd": 0.05,
                    "n": 6,
                },
                {
                    "choice": "encoder",
                    "variant": "canonicalising",
                    "probe": "5-sparse",
                    "advantage_mean": 0.2,
                    "advantage_sd": 0.05,
                    "n": 6,
                },
            ],
        },
    )
    return folder


def _by_id(built: dict) -> dict[str, dict]:
    return {c["id"]: c for c in built["claims"]}


def test_labels_follow_the_calibrated_rule(tmp_path: Path) -> None:
    claims = _by_id(ledger.build_ledger(_results(tmp_path / "full")))
    assert claims["claim-1"]["verdict"] == MIXED  # gcnn one matrix, cnn not
    rep = claims["claim-1-representation"]
    assert rep["verdict"] == MIXED and [p["status"] for p in rep["points"]] == [
        "negative",  # gcnn: ||M^4 - I|| below the threshold, a representation
        "positive",
    ]
    assert claims["claim-2-planted"]["verdict"] == HOLDS  # M moves from 1.41 to ~0.5
    # the learned M predicts poses worse than the fit (0.21 vs 0.1): against the claim
    assert claims["claim-2-base-models"]["verdict"] == CONTRADICTED
    assert claims["claim-3a-dense"]["verdict"] == CONTRADICTED
    assert claims["claim-3a-dense"]["probe_type"] == "dense probe (all latents)"
    assert claims["claim-3a-sparse"]["verdict"] == HOLDS
    assert claims["claim-3a-sparse"]["probe_type"] == "5-sparse probe"
    assert claims["claim-3b"]["verdict"] == HOLDS  # higher FVU = lags, as claimed
    assert claims["claim-3-dense"]["verdict"] == CONTRADICTED  # probes worse at both
    assert claims["claim-3-sparse"]["verdict"] == HOLDS
    assert claims["planted-detection"]["verdict"] == HOLDS
    assert claims["planted-recovery"]["verdict"] == HOLDS
    probing = claims["claim-3a-sparse"]
    assert probing["notebook"] == "06_probing" and probing["paper"] == "v1"
    assert "+0.300 ± 0.010 (n=3) at gcnn/b" in probing["number"]
    point = probing["points"][0]
    assert point["n"] == 3 and point["direction"] == "higher" and point["rule"].startswith("paired")
    assert 0 < point["p_value"] <= point["p_holm"] < 0.05 and point["mde"] > 0
    assert probing["reads"][0] == "06_probing.json: verdicts → adaptive/k5"


def test_every_label_is_recomputed_from_the_json_alone(tmp_path: Path) -> None:
    """Write the ledger, read the JSON back, recompute each point's status and each label."""
    folder = _results(tmp_path / "full")
    loaded = json.loads(ledger.write_ledger(folder, tmp_path / "claims.json").read_text())
    checked = 0
    for claim in loaded["claims"]:
        statuses, label = ledger.relabel(claim["points"])
        assert statuses == [p["status"] for p in claim["points"]], claim["id"]
        assert label == claim["verdict"] or claim["verdict"] == NOT_RUN, claim["id"]
        checked += bool(claim["points"])
        for variant in claim["variants"]:
            if variant["points"]:
                assert ledger.relabel(variant["points"])[1] == variant["verdict"]
    assert checked >= 9


@pytest.mark.parametrize("source", ["full", "quick"])
def test_published_reference_relabels(source: str) -> None:
    """The ledger rebuilt from the committed reference obeys the one label function."""
    folder = ROOT / "reference" / source
    if not (folder / "06_probing.json").is_file():
        pytest.skip(f"reference/{source} is not published")
    for claim in ledger.build_ledger(folder)["claims"]:
        if claim["points"]:
            assert ledger.relabel(claim["points"])[1] == claim["verdict"], claim["id"]


@pytest.mark.parametrize("source", ["full", "quick"])
def test_committed_claims_json_relabels(source: str) -> None:
    """Every label of the committed claims.json equals the label function of its points."""
    path = ROOT / "reference" / source / "claims.json"
    if not path.is_file():
        pytest.skip(f"reference/{source}/claims.json is not published")
    data = json.loads(path.read_text())
    if data.get("schema") != ledger.SCHEMA:
        pytest.skip(f"{path} predates ledger schema {ledger.SCHEMA}: republish it")
    for claim in data["claims"]:
        if claim["points"]:
            assert ledger.relabel(claim["points"])[1] == claim["verdict"], claim["id"]


def test_a_flipped_status_changes_the_recomputed_label(tmp_path: Path) -> None:
    built = ledger.build_ledger(_results(tmp_path / "full"))
    claim = _by_id(built)["claim-3a-sparse"]
    points = [dict(p) for p in claim["points"]]
    points[0]["mean"] = -points[0]["mean"]  # a point against the claim now
    statuses, label = ledger.relabel(points)
    assert statuses[0] == "negative" and label == MIXED
    assert claim_label(statuses, [p["direction"] for p in points]) == label


def test_one_seed_is_undecided(tmp_path: Path) -> None:
    folder = _results(tmp_path / "quick")
    data = json.loads((folder / "06_probing.json").read_text())
    data["verdicts"]["adaptive/k5"] = _probing_verdict({"gcnn/b": [0.3]}, "k5")
    (folder / "06_probing.json").write_text(json.dumps(data))
    claims = _by_id(ledger.build_ledger(folder))
    assert claims["claim-3a-sparse"]["verdict"] == UNDECIDED
    assert claims["claim-3-sparse"]["verdict"] == UNDECIDED


def test_missing_notebooks_and_keys_are_not_run(tmp_path: Path) -> None:
    folder = _results(tmp_path / "full")
    (folder / "05_frontier.json").unlink()
    built = ledger.build_ledger(folder)
    claims = _by_id(built)
    assert claims["claim-3b"]["verdict"] == NOT_RUN
    assert "05_frontier.json: verdicts → adaptive_vs_topk" in claims["claim-3b"]["sentence"]
    assert claims["digits-frontier"]["verdict"] == NOT_RUN
    assert claims["d4-planted"]["verdict"] == NOT_RUN
    assert "05_frontier" not in built["notebooks_run"]
    assert claims["claim-3a-sparse"]["verdict"] == HOLDS  # the rest still there


def test_d4_planted_verdict_is_read_by_its_key(tmp_path: Path) -> None:
    folder = _results(tmp_path / "full")
    verdict = {
        "higher_is_better": True,
        "label": "feature recovery",
        "rows": [{"n_features": n, "delta": _delta([0.1, 0.11, 0.09])} for n in (8, 16)],
        "sentence": "D4 planted.",
    }
    _write(folder, "08_dihedral", {"mode": "full", "planted": {"verdict": verdict}})
    claims = _by_id(ledger.build_ledger(folder))
    assert claims["d4-planted"]["verdict"] == HOLDS
    assert claims["d4-planted"]["sentence"].startswith("2 of 2 points go the paper's way")
    assert claims["d4-probing-dense"]["verdict"] == NOT_RUN  # its key is absent


def test_registry_entries_are_typed_and_unique() -> None:
    ids = [c.id for c in CLAIMS]
    assert len(set(ids)) == len(ids)
    assert all(c.reads and c.scope and c.paper in ("v1", "v2") for c in CLAIMS)
    assert ledger.claim_spec("claim-1").notebook == "03_linear_representation"
    with pytest.raises(KeyError, match="known"):
        ledger.claim_spec("claim-9")
    with pytest.raises(ValueError, match="stem"):
        Read("x", "09_nothing", ("a",))
    with pytest.raises(ValueError, match="paper"):
        ClaimSpec("x", "t", "v3", "s", "06_probing", "scope", (), lambda s, x: {})


def test_old_schema_is_refused_with_the_command_to_rewrite_it(tmp_path: Path) -> None:
    folder = _results(tmp_path / "full")
    _write(folder, "06_probing", {"mode": "full", "claim_holds_layers": 0, "claim": {}})
    with pytest.raises(ledger.LedgerSchemaError) as info:
        ledger.build_ledger(folder)
    message = str(info.value)
    assert "06_probing.json" in message and "old schema" in message
    assert "'verdicts'" in message and "equisae reproduce --mode full" in message


def test_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="results_dir"):
        ledger.build_ledger(tmp_path / "nowhere")


def test_design_choices_say_what_moves_the_verdict(tmp_path: Path) -> None:
    built = ledger.build_ledger(_results(tmp_path / "full"))
    choices = {(d["choice"], d["probe"]): d for d in built["design_choices"]}
    dense = choices["encoder", "dense"]
    assert dense["moves_verdict"] is True  # -0.04 (negative) against +0.05 (positive)
    assert dense["effect"] == pytest.approx(0.09)
    assert choices["encoder", "5-sparse"]["moves_verdict"] is False  # both positive
    probe = choices["probe type", "dense and sparse"]
    assert [v["variant"] for v in probe["variants"]] == ["dense", "5-sparse"]
    assert probe["moves_verdict"] is True


def test_the_raw_encoder_has_one_name_everywhere(tmp_path: Path) -> None:
    """The ledger's encoder field, its design table and the sweeps' design rows use the one
    name of :data:`equisae.plots.style.ENCODER_LABELS`; older names are read as it."""
    from equisae.ledger.claims import ENCODERS
    from equisae.ledger.design import design_choices
    from equisae.plots.style import ENCODER_LABELS, encoder_label
    from equisae.sweeps import report

    raw = encoder_label("raw")
    assert ENCODERS == ENCODER_LABELS and raw.startswith("raw (")
    built = ledger.build_ledger(_results(tmp_path / "full"))
    encoders = {c["encoder"] for c in built["claims"] if c["encoder"]}
    assert encoders == {raw}
    named = {v["variant"] for d in built["design_choices"] for v in d["variants"]}
    assert raw in named and not any(n.startswith("raw") and n != raw for n in named)
    old = {"choice": "encoder", "probe": "dense", "advantage_mean": 0.1, "advantage_sd": 0.01}
    for legacy in ("raw (METHOD.md)", "raw (invariance learned)"):
        (choice,) = design_choices([{**old, "variant": legacy, "n": 3}])
        assert [v["variant"] for v in choice["variants"]] == [raw]
    rows = report.design_choices([], full_steps=4, short_steps=2)
    encoder_rows = [r["variant"] for r in rows if r["choice"] == "encoder"]
    assert set(encoder_rows) == {raw, encoder_label("canonical")}
    with pytest.raises(KeyError, match="encoder must be one of"):
        encoder_label("pixel")


def test_write_ledger_round_trips_and_renders(tmp_path: Path) -> None:
    folder = _results(tmp_path / "full")
    path = ledger.write_ledger(folder, tmp_path / "claims.json")
    loaded = json.loads(path.read_text())
    assert loaded["schema"] == ledger.SCHEMA and loaded["mode"] == "full"
    assert loaded["source"] == f"{tmp_path.name}/full"
    text = ledger.ledger_markdown(loaded)
    row = (
        "| {ref}`Claim 3a: better probing, sparse probe <claim-3a-sparse>` "
        "(paper v1; {doc}`notebook 06 <notebooks/06_probing>`) | **holds** |"
    )
    assert row in text and "n = 3 seeds" in text
    assert "(claim-3a-sparse)=" in text  # the stable anchor of the details
    assert "{doc}`notebook 06 <notebooks/06_probing>`" in text
    assert "| encoder | dense |" in text
    doubled = "*Variant, trained 4000 steps instead of 2000 (seed 0)*: FVU ratio adaptive/TopK"
    assert f"{doubled} gcnn/b 1.50 → 1.75" in text
    assert "No A/A calibration in these results" in text
    assert ledger.write_ledger(folder) == folder / "claims.json"


def test_book_directive_falls_back_when_reference_is_old(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "equisae_book", ROOT / "book" / "_ext" / "equisae_book.py"
    )
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    _results(tmp_path / "results" / "quick")
    _write(tmp_path / "reference" / "full", "06_probing", {"mode": "full", "claim": {}})
    text = ext.claims_markdown(tmp_path, "summary", "quick")
    assert "`reference/full` has not been republished under the current method yet" in text
    assert "showing this build's quick numbers" in text
    assert "better probing, sparse probe <claim-3a-sparse>`" in text
    _results(tmp_path / "reference" / "full")  # republished: no notice
    text = ext.claims_markdown(tmp_path, "summary", "quick")
    assert "republished" not in text and "`reference/full`" in text
    assert "| encoder | dense |" in ext.claims_markdown(tmp_path, "design", "quick")
    assert "No A/A calibration" in ext.claims_markdown(tmp_path, "calibration", "quick")
    with pytest.raises(ValueError, match="summary"):
        ext.claims_markdown(tmp_path, "everything", "quick")
    assert "has not been published yet" in ext.claims_markdown(tmp_path, "extended", "quick")


def test_calibration_section_reads_the_aa_key_of_notebook_06(tmp_path: Path) -> None:
    from equisae.sweeps import sweep_settings
    from equisae.sweeps.aa import aa_summary

    s = sweep_settings("quick")
    probes = [
        dict(model=m, layer=la, sae_type=t, seed=seed, factor=f, probe_k=pk, f1=0.5 + 0.01 * seed)
        for m, la in s.aa_targets
        for t in s.aa_types
        for seed in (*s.aa_seeds_a, *s.aa_seeds_b)
        for f in ("shape", "colour", "scale")
        for pk in ("all", "k5")
    ]
    saes = [
        dict(model=m, layer=la, sae_type=t, seed=seed, k=s.probe_k, fvu=0.1 + 0.001 * seed)
        for m, la in s.aa_targets
        for t in s.aa_types
        for seed in (*s.aa_seeds_a, *s.aa_seeds_b)
    ]
    aa = aa_summary(probes, saes, s)
    folder = _results(tmp_path / "full")
    data = json.loads((folder / "06_probing.json").read_text())
    data["aa"] = aa
    (folder / "06_probing.json").write_text(json.dumps(data))
    built = ledger.build_ledger(folder)
    assert built["calibration"]["n_claims"] == 3 * len(s.aa_types)
    text = ledger.calibration_table(built)
    assert "| invariant F1, dense probe (all latents) | topk |" in text
    assert f"of {aa['n_points']} points" in text and "comparisons" in text


def _purity_records(adaptive_invariance: float, seeds: int = 3) -> list[dict]:
    """Notebook 09's purity records for one target: TopK at 0.1 invariance, the adaptive SAE at
    ``adaptive_invariance``; duplication and monosemanticity equal (no effect)."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        for sae, inv in (("topk", 0.1), ("adaptive", adaptive_invariance)):
            for metric, value in (
                ("weighted_invariance", inv),
                ("duplicate_fraction", 0.3),
                ("monosemantic_fraction", 0.2),
            ):
                rows.append(
                    {
                        "model": "cnn_augmented",
                        "layer": "bottleneck",
                        "sae_type": sae,
                        "seed": seed,
                        "metric": metric,
                        "value": value + float(rng.normal(0, 0.01)),
                    }
                )
    return rows


def test_feature_purity_claim_reads_notebook_09_and_judges_by_the_one_rule():
    from equisae.ledger import claims
    from equisae.ledger.registry import claim_spec
    from equisae.verdicts import claim_label

    spec = claim_spec("claim-3-features")
    assert [r.address for r in spec.reads][0] == "09_gallery.json: purity_records"
    strong = claims.feature_purity(spec, {"records": _purity_records(0.8)})
    statuses = {p["where"].split(", ")[1]: p["status"] for p in strong["points"]}
    assert statuses["activation-weighted orbit invariance"] == "positive"
    assert statuses["fraction of latents duplicated across poses"] == "within spread"
    directions = [p["direction"] for p in strong["points"]]
    assert strong["verdict"] == claim_label([p["status"] for p in strong["points"]], directions)
    null = claims.feature_purity(spec, {"records": _purity_records(0.1)})
    assert {p["status"] for p in null["points"]} == {"within spread"}
    one_seed = claims.feature_purity(spec, {"records": _purity_records(0.8, seeds=1)})
    assert {p["status"] for p in one_seed["points"]} == {"too few seeds"}
