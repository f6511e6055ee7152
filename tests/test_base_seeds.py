"""The base-seeds sweep: its jobs (data seed 0 shared with the probing sweep), its summary on
synthetic records (a flip is found, the spreads are computed right), its figure and settings."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from equisae.sweeps import probing_jobs, sweep_jobs, sweep_settings
from equisae.sweeps.base_seeds import (
    base_seed_jobs,
    base_seed_sentence,
    base_seed_spread_table,
    base_seed_summary,
    base_seed_table,
)
from equisae.sweeps.saes import SAEJob
from equisae.verdicts import claim_label


def _sae_jobs(jobs) -> set[SAEJob]:
    return {j.sae for j in jobs if isinstance(getattr(j, "sae", None), SAEJob)}


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_jobs_cover_every_base_seed_target_and_type(mode: str) -> None:
    s = sweep_settings(mode)
    saes = _sae_jobs(base_seed_jobs(s))
    assert {j.data_seed for j in saes} == set(s.base_seeds)
    assert {(j.model_name, j.layer) for j in saes} == set(s.base_seed_targets)
    assert {j.sae_type for j in saes} == set(s.base_seed_types) and {j.k for j in saes} == {
        s.probe_k
    }
    assert {j.seeds for j in saes} == {s.seeds}
    assert len(saes) == len(s.base_seeds) * len(s.base_seed_targets) * len(s.base_seed_types)
    assert len(sweep_jobs("base_seeds", mode)) == len(base_seed_jobs(s))
    # the other data seeds reach the activations the SAEs train on
    assert len({j.inputs.hash for j in saes}) == len(s.base_seeds) * len(s.base_seed_targets)


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_data_seed_0_jobs_have_the_probing_sweeps_hashes(mode: str) -> None:
    s = sweep_settings(mode)
    assert 0 in s.base_seeds and s.data_seed == 0
    ours = {j.hash for j in base_seed_jobs(s) if j.sae.data_seed == 0}
    main = {j.hash for j in probing_jobs(s)}
    assert ours and ours <= main  # cached by the probing sweep: nothing retrained
    n_probes = len(s.base_seed_targets) * len(s.base_seed_types) * len(s.seeds)
    assert len(ours) == n_probes
    others = {j.hash for j in base_seed_jobs(s) if j.sae.data_seed != 0}
    assert not others & main


def test_full_and_quick_sizes() -> None:
    full, quick = sweep_settings("full"), sweep_settings("quick")
    assert full.base_seeds == (0, 1, 2) and len(full.base_seed_targets) == 2
    assert quick.base_seeds == (0, 1) and len(quick.base_seed_targets) == 1


def test_settings_refuse_bad_base_seeds() -> None:
    s = sweep_settings("quick")
    with pytest.raises(ValueError, match="distinct"):
        replace(s, base_seeds=(0, 0))
    with pytest.raises(ValueError, match="non-negative ints"):
        replace(s, base_seeds=(0, -1))
    with pytest.raises(ValueError, match="base_seed_targets"):
        base_seed_jobs(replace(s, base_seed_targets=()))


def _records(s, diffs: dict[tuple[int, tuple[str, str]], list[float]], pks=("all", "k5")):
    """Probe records where adaptive minus TopK F1 at SAE seed i on base seed b and target t is
    ``diffs[b, t][i]`` (the same on every factor and probe type)."""
    out = []
    for (b, (model, layer)), per_seed in diffs.items():
        for seed, d in zip(s.seeds, per_seed, strict=True):
            for sae_type, f1 in (("topk", 0.5), ("adaptive", 0.5 + d)):
                for pk in pks:
                    for factor in ("shape", "colour", "scale"):
                        out.append(
                            dict(
                                model=model,
                                layer=layer,
                                sae_type=sae_type,
                                seed=seed,
                                factor=factor,
                                probe_k=pk,
                                f1=f1,
                                features="latents",
                                data_seed=b,
                            )
                        )
    return out


def test_summary_finds_a_flip_and_computes_the_spreads() -> None:
    s = sweep_settings("full")
    a, g = s.base_seed_targets
    diffs = {
        # target a: clearly better on base seeds 0 and 2, clearly worse on base seed 1: a flip
        (0, a): [0.10, 0.11, 0.12],
        (1, a): [-0.10, -0.11, -0.12],
        (2, a): [0.20, 0.21, 0.22],
        # target g: within the spread on every base seed, same label
        (0, g): [0.05, -0.05, 0.0],
        (1, g): [0.06, -0.04, 0.01],
        (2, g): [0.04, -0.06, -0.01],
    }
    out = base_seed_summary(_records(s, diffs), s, probe_ks=("all", "k5"))
    assert out["base_seeds"] == [0, 1, 2] and len(out["points"]) == 2 * 2 * 3
    by = {(p["model"], p["probe_k"], p["base_seed"]): p for p in out["points"]}
    assert by[a[0], "all", 0]["label"] == "holds"
    assert by[a[0], "all", 1]["label"] == "contradicted"
    assert by[g[0], "all", 1]["label"] == "does not hold"
    # each point's label is the one label function of its status and direction
    for p in out["points"]:
        assert claim_label([p["status"]], [p["direction"]]) == p["label"]
    assert by[a[0], "k5", 2]["mean"] == pytest.approx(0.21)
    assert by[a[0], "k5", 2]["sd"] == pytest.approx(0.01) and by[a[0], "k5", 2]["n"] == 3
    spread = {(r["model"], r["probe_k"]): r for r in out["spread"]}
    ra, rg = spread[a[0], "all"], spread[g[0], "all"]
    assert ra["flips"] and not rg["flips"]
    assert ra["labels"] == ["holds", "contradicted", "holds"]
    assert ra["between_sd"] == pytest.approx(np.std([0.11, -0.11, 0.21], ddof=1))
    assert ra["within_sd"] == pytest.approx(0.01)
    assert ra["ratio"] == pytest.approx(ra["between_sd"] / 0.01)
    within_g = np.sqrt(np.mean([np.var(v, ddof=1) for (b, t), v in diffs.items() if t == g]))
    assert rg["within_sd"] == pytest.approx(within_g)
    assert rg["between_sd"] == pytest.approx(np.std([0.0, 0.01, -0.01], ddof=1))
    assert out["n_point_flips"] == 2 and out["any_flip"]
    # over both targets (Holm over them) the label flips too: mixed, does not hold, mixed
    assert all(c["flips"] for c in out["claims"]) and out["n_claim_flips"] == 2
    assert out["ratio_if_no_base_effect"] == pytest.approx(1 / np.sqrt(3))
    assert out["median_ratio"] == pytest.approx(np.median([r["ratio"] for r in out["spread"]]))
    text = out["sentence"]
    assert "changes with the base model's seed on 2 of 4" in text
    assert "holds / contradicted / holds" in text and f"{out['median_ratio']:.2f}" in text
    assert "base seed" in base_seed_table(out) and "ratio" in base_seed_spread_table(out)


def test_summary_without_a_flip_says_so() -> None:
    s = sweep_settings("full")
    diffs = {
        (b, t): [0.10 + 0.01 * b, 0.11 + 0.01 * b, 0.12 + 0.01 * b]
        for b in s.base_seeds
        for t in s.base_seed_targets
    }
    out = base_seed_summary(_records(s, diffs), s, probe_ks=("all",))
    assert not out["any_flip"] and out["n_point_flips"] == out["n_claim_flips"] == 0
    assert {p["label"] for p in out["points"]} == {"holds"}
    assert all(r["between_sd"] == pytest.approx(0.01) for r in out["spread"])
    assert "the same under every base model on all 2" in out["sentence"]


def test_summary_with_one_sae_seed_has_no_within_spread() -> None:
    s = sweep_settings("quick")
    (t,) = s.base_seed_targets
    out = base_seed_summary(_records(s, {(0, t): [0.1], (1, t): [-0.1]}), s, probe_ks=("all",))
    (row,) = out["spread"]
    assert row["within_sd"] is None and row["ratio"] is None
    assert row["between_sd"] == pytest.approx(np.std([0.1, -0.1], ddof=1))
    assert row["labels"] == ["undecided (one seed)"] * 2 and not out["any_flip"]
    assert "no SAE-seed spread" in base_seed_sentence(out)


def test_summary_refuses_records_without_data_seed_or_a_base_seed() -> None:
    s = sweep_settings("quick")
    (t,) = s.base_seed_targets
    records = _records(s, {(0, t): [0.1], (1, t): [0.1]})
    with pytest.raises(KeyError, match="data_seed"):
        base_seed_summary([{k: v for k, v in r.items() if k != "data_seed"} for r in records], s)
    only_0 = [r for r in records if r["data_seed"] == 0]
    with pytest.raises(ValueError, match=r"base seed\(s\) \[1\]"):
        base_seed_summary(only_0, s, probe_ks=("all",))


def test_plot_draws_one_marker_per_point() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from equisae.plots.base_seeds import plot_base_seeds

    s = sweep_settings("full")
    rng = np.random.default_rng(0)
    diffs = {
        (b, t): list(rng.normal(0.05, 0.02, 3)) for b in s.base_seeds for t in s.base_seed_targets
    }
    out = base_seed_summary(_records(s, diffs), s, probe_ks=("all", "k5"))
    fig = plot_base_seeds(out)
    assert len(fig.axes) == len(s.base_seed_targets)
    drawn = sum(len(ln.get_xdata()) for ax in fig.axes for ln in ax.lines if ln.get_marker() == "o")
    assert drawn == len(out["points"])
    with pytest.raises(ValueError, match="no points"):
        plot_base_seeds({"points": []})
