"""Tests for equisae.verdicts: the calibrated rule (measured on simulated nulls and effects),
the one label function (every combination of statuses), the sign of every comparison."""

from __future__ import annotations

import numpy as np
import pytest

from equisae.verdicts import (
    ALPHA,
    CONTRADICTED,
    HIGHER,
    HOLDS,
    LOWER,
    MIXED,
    NEGATIVE,
    NOT_HOLDS,
    NOT_RUN,
    POSITIVE,
    TOO_FEW,
    UNDECIDED,
    WITHIN,
    claim_label,
    claim_verdict,
    frontier_verdict,
    holm_adjust,
    judge_points,
    linear_representation_verdict,
    min_detectable_effect,
    paired_delta,
    paired_t_pvalue,
    planted_verdict,
    probe_type,
    probing_verdict,
)


def test_paired_delta_rule():
    d = paired_delta({0: 0.6, 1: 0.7, 2: 0.65}, {0: 0.5, 1: 0.6, 2: 0.55, 3: 0.9})
    assert d.n == 3 and d.n_positive == 3 and d.seeds == (0, 1, 2)
    assert d.mean == pytest.approx(0.1) and d.sd == pytest.approx(0.0, abs=1e-12)
    assert d.status == POSITIVE
    assert paired_delta({0: 1.0, 1: 0.0}, {0: 0.5, 1: 0.4}).status == WITHIN
    assert paired_delta({0: 0.1, 1: 0.2, 2: 0.1}, {0: 0.5, 1: 0.5, 2: 0.5}).status == NEGATIVE
    assert paired_delta({0: 1.0}, {0: 0.0}).status == TOO_FEW
    assert paired_delta({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.5}).cell() == "+0.150 ± 0.071 (n=2)"
    with pytest.raises(ValueError, match="no seed in common"):
        paired_delta({0: 1.0}, {1: 1.0})


def _probe_records(delta_by_layer: dict[str, float], probe_k: str = "all"):
    rows = []
    for layer, delta in delta_by_layer.items():
        for seed in range(3):
            for factor in ("shape", "colour", "scale", "quadrant"):
                for sae, f1 in (("topk", 0.5 + 0.01 * seed), ("adaptive", 0.5 + delta)):
                    # quadrant (an equivariant factor) must not enter the invariant average
                    f1 = 0.0 if (factor == "quadrant" and sae == "adaptive") else f1
                    rows.append(
                        dict(
                            model="cnn",
                            layer=layer,
                            sae_type=sae,
                            seed=seed,
                            factor=factor,
                            probe_k=probe_k,
                            f1=f1,
                            features="latents",
                        )
                    )
    return rows


def test_probing_verdict_counts_layers_and_names_probe_type():
    records = _probe_records({"a": 0.2, "b": 0.2, "c": -0.2}, "k1")
    v = probing_verdict(records, probe_k=1)
    assert [r.status for r in v.rows] == [POSITIVE, POSITIVE, NEGATIVE]
    # two pairs for, one against: points both ways are "mixed", not a majority "holds"
    assert v.n_better == 2 and v.n_worse == 1 and not v.holds and v.outcome == MIXED
    assert "1-sparse probe" in v.sentence() and "2 of 3" in v.sentence()
    assert "label for this probe type: mixed" in v.sentence()
    assert probing_verdict(_probe_records({"a": 0.2, "b": 0.2, "c": 0.0}, "k1"), 1).holds
    assert v.rows[0].delta.mean == pytest.approx(0.19)
    assert "| cnn / a |" in v.markdown()
    assert v.to_dict()["probe_type"] == "1-sparse probe"
    with pytest.raises(ValueError, match="probe_k='all'"):
        probing_verdict(records, probe_k="all")  # no dense records: says so
    assert probe_type(None) == "dense probe (all latents)" and probe_type("k5") == "5-sparse probe"
    with pytest.raises(KeyError, match="f1"):
        probing_verdict([{k: v for k, v in records[0].items() if k != "f1"}])


def _frontier_records(fvu_sae: float, fvu_base: float, layers=("a",), ks=(8,)):
    return [
        dict(model="cnn", layer=la, sae_type=t, k=k, seed=s, fvu=f + 0.001 * s, l0=float(k))
        for la in layers
        for k in ks
        for s in range(3)
        for t, f in (("adaptive", fvu_sae), ("topk", fvu_base))
    ]


def test_frontier_verdict_higher_fvu_is_a_lag():
    lagging = frontier_verdict(_frontier_records(0.30, 0.20))
    assert lagging.lags and lagging.n_lags == 1
    assert "higher (worse)" in lagging.sentence()
    assert lagging.median_ratio == pytest.approx(0.301 / 0.201)
    assert lagging.l0 == ((8.0, 8.0),)
    assert "| higher |" in lagging.markdown()
    leading = frontier_verdict(_frontier_records(0.10, 0.20, ks=(4, 8)), k=8)
    assert not leading.lags and leading.n_leads == 1 and len(leading.rows) == 1
    assert "leads the TopK SAE" in leading.sentence()  # lower FVU everywhere: contradicted
    assert leading.sentence().endswith("label: contradicted.")


def test_claim_verdict_needs_both_halves():
    probing = probing_verdict(_probe_records({"a": 0.2}))
    assert claim_verdict(probing, frontier_verdict(_frontier_records(0.3, 0.2))).n_holds == 1
    assert claim_verdict(probing, frontier_verdict(_frontier_records(0.1, 0.2))).n_holds == 0


def _planted(metric: str, ours: float, base: float):
    return [
        {"model": m, "n_features": n, "seed": s, metric: v + 0.002 * s}
        for n in (32, 64)
        for s in range(3)
        for m, v in (("equivariant", ours), ("adaptive", ours + 0.05), ("topk", base))
    ]


def test_planted_verdict_states_lower_fvu_as_lower_and_better():
    v = planted_verdict(_planted("fvu", 0.165, 0.187), "fvu", higher_is_better=False)
    row = v.rows[0]
    assert row.ours == "equivariant" and row.baseline == "topk"
    assert row.delta.mean == pytest.approx(-0.022)
    text = v.sentence()
    assert "lower is better" in text
    assert "0.167 vs TopK 0.189: lower (-0.022" in text
    assert "better)" in text and "worse)" not in text
    assert v.n_better == 2 and v.n_worse == 0
    # the same numbers on a higher-is-better metric are a loss, still described as "lower"
    w = planted_verdict(_planted("recovery", 0.165, 0.187), "recovery", higher_is_better=True)
    assert w.rows[0].ours == "adaptive"  # best by mean when higher is better: 0.217
    assert w.rows[0].delta.mean == pytest.approx(0.028)
    assert "higher (+0.028" in w.sentence()
    low = planted_verdict(_planted("recovery", 0.10, 0.187), "recovery", higher_is_better=True)
    assert low.n_worse == 2 and "lower (-0.037" in low.sentence() and "worse)" in low.sentence()
    with pytest.raises(KeyError, match="detection_f1"):
        planted_verdict(_planted("fvu", 0.1, 0.2), "detection_f1", True)


def test_linear_representation_verdict():
    good = {"r2_single": [1, 0.995, 0.994, 0.996], "r2_per_power": [1, 0.996, 0.995, 0.997]}
    compounding = {"r2_single": [1, 0.995, 0.95, 0.99], "r2_per_power": [1, 0.996, 0.99, 0.995]}
    ident = {"r2_identity": [1, 0.2, 0.1, 0.2]}
    v = linear_representation_verdict(
        {("gcnn", "bottleneck"): {**good, **ident}, "cnn/intermediate": {**compounding, **ident}}
    )
    assert v.n_holds == 1
    assert v.rows[1].min_r2 == pytest.approx(0.95)
    assert v.rows[1].max_gap == pytest.approx(0.04)
    assert "1 of 2" in v.sentence() and "`cnn` (intermediate)" in v.sentence()
    assert "0.167" in v.sentence()
    assert "| gcnn / bottleneck |" in v.markdown()
    with pytest.raises(KeyError, match="r2_identity"):
        linear_representation_verdict({"a/b": good})


# --------------------------------------------------------------------------- calibration
def _null_points(rng: np.random.Generator, n: int, draws: int, effect: float = 0.0):
    d = rng.normal(effect, 1.0, size=(draws, n))
    return d.mean(axis=1), d.std(axis=1, ddof=1)


@pytest.mark.parametrize("n", [3, 5])
def test_per_point_false_positive_rate_is_at_most_five_percent(n: int) -> None:
    draws = 4000
    means, sds = _null_points(np.random.default_rng(n), n, draws)
    rate = np.mean([paired_t_pvalue(m, s, n) < ALPHA for m, s in zip(means, sds, strict=True)])
    mc = 3 * np.sqrt(ALPHA * (1 - ALPHA) / draws)
    assert rate <= ALPHA + mc
    assert rate >= ALPHA - mc  # exact, not merely conservative
    # the rule it replaces (mean beyond 2 standard errors) fires far more often at n = 3
    old = np.mean(np.abs(means) > 2 * sds / np.sqrt(n))
    assert n != 3 or old > 0.15


@pytest.mark.parametrize("n", [3, 5])
def test_per_claim_false_positive_rate_is_at_most_five_percent(n: int) -> None:
    """Five points, no difference anywhere: any label but "does not hold" is a false positive."""
    rng = np.random.default_rng(10 + n)
    claims, n_points = 1500, 5
    means, sds = _null_points(rng, n, claims * n_points)
    false = 0
    for c in range(claims):
        sl = slice(c * n_points, (c + 1) * n_points)
        pts = judge_points(
            [(str(i), m, s, n) for i, (m, s) in enumerate(zip(means[sl], sds[sl], strict=True))],
            HIGHER,
        )
        false += claim_label([p.status for p in pts], [p.direction for p in pts]) != NOT_HOLDS
    assert false / claims <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / claims)


@pytest.mark.parametrize("n", [3, 5])
def test_minimum_detectable_effect_is_detected_at_its_power(n: int) -> None:
    effect = min_detectable_effect(1.0, n)
    draws = 3000
    means, sds = _null_points(np.random.default_rng(20 + n), n, draws, effect)
    power = np.mean([paired_t_pvalue(m, s, n) < ALPHA for m, s in zip(means, sds, strict=True)])
    assert abs(power - 0.8) <= 3 * np.sqrt(0.8 * 0.2 / draws)
    assert min_detectable_effect(2.0, n) == pytest.approx(2 * effect)
    assert min_detectable_effect(1.0, n, alpha=ALPHA / 5) > effect
    assert np.isnan(min_detectable_effect(1.0, 1))


def test_paired_t_pvalue_matches_scipy_and_edge_cases() -> None:
    from scipy import stats

    d = np.array([0.3, 0.1, 0.25, 0.4])
    expected = stats.ttest_1samp(d, 0.0).pvalue
    assert paired_t_pvalue(d.mean(), d.std(ddof=1), 4) == pytest.approx(expected)
    assert np.isnan(paired_t_pvalue(0.3, 0.0, 1))
    assert paired_t_pvalue(0.3, 0.0, 3) == 0.0 and paired_t_pvalue(0.0, 0.0, 3) == 1.0


def test_holm_matches_the_step_down_definition() -> None:
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm_adjust([0.2, float("nan"), 0.01])
    assert out[0] == pytest.approx(0.2) and np.isnan(out[1]) and out[2] == pytest.approx(0.02)


# --------------------------------------------------------------------------- the label
P, N, W, T = POSITIVE, NEGATIVE, WITHIN, TOO_FEW
#: (statuses, label) with direction "higher" at every point: every combination of 1 and 2
LABEL_TABLE = [
    ((), NOT_RUN),
    ((P,), HOLDS),
    ((N,), CONTRADICTED),
    ((W,), NOT_HOLDS),
    ((T,), UNDECIDED),
    ((P, P), HOLDS),
    ((P, N), MIXED),
    ((P, W), MIXED),
    ((P, T), MIXED),
    ((N, P), MIXED),
    ((N, N), CONTRADICTED),
    ((N, W), NOT_HOLDS),
    ((N, T), NOT_HOLDS),
    ((W, P), MIXED),
    ((W, N), NOT_HOLDS),
    ((W, W), NOT_HOLDS),
    ((W, T), NOT_HOLDS),
    ((T, P), MIXED),
    ((T, N), NOT_HOLDS),
    ((T, W), NOT_HOLDS),
    ((T, T), UNDECIDED),
    ((P, P, W), HOLDS),
    ((P, P, N), MIXED),
    ((N, N, W), CONTRADICTED),
]


@pytest.mark.parametrize(("statuses", "label"), LABEL_TABLE)
def test_claim_label_table(statuses: tuple[str, ...], label: str) -> None:
    assert claim_label(statuses, [HIGHER] * len(statuses)) == label
    # "lower" is better: the same table with the signs swapped
    swap = {P: N, N: P, W: W, T: T}
    assert claim_label([swap[s] for s in statuses], [LOWER] * len(statuses)) == label


def test_claim_label_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="direction"):
        claim_label([P], ["up"])
    with pytest.raises(ValueError, match="status"):
        claim_label(["better"], [HIGHER])
    with pytest.raises(ValueError, match="same length"):
        claim_label([P, P], [HIGHER])
