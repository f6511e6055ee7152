"""The A/A sweep: its jobs (set A shared with the probing sweep), its summary on simulated
records with and without a difference, and the settings' checks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from equisae.sweeps import probing_jobs, sweep_jobs, sweep_settings
from equisae.sweeps.aa import aa_jobs, aa_summary
from equisae.sweeps.saes import SAEJob


def _sae_jobs(jobs) -> set:
    return {j.sae for j in jobs if hasattr(j, "sae") and isinstance(j.sae, SAEJob)}


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_aa_jobs_train_two_disjoint_seed_sets(mode: str) -> None:
    s = sweep_settings(mode)
    saes = _sae_jobs(aa_jobs(s))
    assert {j.seeds for j in saes} == {s.aa_seeds_a, s.aa_seeds_b}
    assert not set(s.aa_seeds_a) & set(s.aa_seeds_b)
    assert {j.sae_type for j in saes} == set(s.aa_types) and {j.k for j in saes} == {s.probe_k}
    assert {(j.model_name, j.layer) for j in saes} == set(s.aa_targets)
    assert len(sweep_jobs("aa", mode)) == len(aa_jobs(s))


def test_full_set_a_is_the_probing_sweeps_cache() -> None:
    s = sweep_settings("full")
    set_a = {j for j in _sae_jobs(aa_jobs(s)) if j.seeds == s.aa_seeds_a}
    assert set_a <= _sae_jobs(probing_jobs(s))  # same keys: no retraining for set A
    assert len(set_a) == len(s.aa_targets) * len(s.aa_types)


def test_settings_refuse_overlapping_or_unpaired_seed_sets() -> None:
    s = sweep_settings("quick")
    with pytest.raises(ValueError, match="disjoint"):
        replace(s, aa_seeds_a=(0, 1), aa_seeds_b=(1, 2))
    with pytest.raises(ValueError, match="same length"):
        replace(s, aa_seeds_a=(0, 1), aa_seeds_b=(2,))
    with pytest.raises(ValueError, match="aa_targets"):
        aa_jobs(replace(s, aa_targets=()))


def _records(s, rng: np.random.Generator, offset_b: float = 0.0):
    """Probe and SAE records of both seed sets: F1 and FVU are noise around a per-target
    level, set B shifted by ``offset_b``."""
    probes, saes = [], []
    for model, layer in s.aa_targets:
        for sae_type in s.aa_types:
            for seeds, shift in ((s.aa_seeds_a, 0.0), (s.aa_seeds_b, offset_b)):
                for seed in seeds:
                    base = dict(model=model, layer=layer, sae_type=sae_type, seed=seed)
                    saes.append({**base, "k": s.probe_k, "fvu": 0.1 + shift + rng.normal(0, 0.01)})
                    for pk in ("all", "k5"):
                        for factor in ("shape", "colour", "scale"):
                            f1 = 0.6 - shift + rng.normal(0, 0.02)
                            probes.append(
                                {
                                    **base,
                                    "factor": factor,
                                    "probe_k": pk,
                                    "f1": f1,
                                    "features": "latents",
                                }
                            )
    return probes, saes


def test_aa_summary_counts_false_positives_through_the_verdict_code() -> None:
    s = replace(sweep_settings("full"), aa_seeds_a=(0, 1, 2, 3, 4), aa_seeds_b=(5, 6, 7, 8, 9))
    rng = np.random.default_rng(0)
    null = aa_summary(*_records(s, rng), s)
    assert null["n_claims"] == 3 * len(s.aa_types)
    assert null["n_points"] == null["n_claims"] * len(s.aa_targets)
    assert {r["quantity"] for r in null["rows"]} == {
        "invariant F1, dense probe (all latents)",
        "invariant F1, 5-sparse probe",
        f"test FVU at k = {s.probe_k}",
    }
    assert null["holm_false_rate"] <= null["point_false_rate"] <= 0.3
    # a real difference between the sets is found at every point
    shifted = aa_summary(*_records(s, rng, offset_b=0.1), s)
    assert shifted["point_false_rate"] == 1.0 and shifted["claim_false_rate"] == 1.0
    assert {r["label"] for r in shifted["rows"]} == {"holds", "contradicted"}


def test_aa_false_positive_rate_over_many_simulated_sweeps() -> None:
    """Pooled over many simulated null sweeps (3 + 3 seeds), the per-point rate the A/A
    summary reports stays at or below 5 % (plus Monte-Carlo error)."""
    s = sweep_settings("full")
    rng = np.random.default_rng(1)
    flagged = total = 0
    for _ in range(40):
        out = aa_summary(*_records(s, rng), s)
        flagged += sum(r["point_false"] for r in out["rows"])
        total += out["n_points"]
    assert flagged / total <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / total)


def test_plot_aa_draws_one_column_per_comparison() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from equisae.plots.aa import plot_aa

    s = sweep_settings("full")
    summary = aa_summary(*_records(s, np.random.default_rng(2)), s)
    fig = plot_aa(summary)
    ax = fig.axes[0]
    assert len(ax.get_xticks()) == summary["n_claims"]
    assert sum(len(c.get_offsets()) for c in ax.collections) == summary["n_points"]
    with pytest.raises(ValueError, match="no rows"):
        plot_aa({"rows": []})
