"""Tests for the extended sweep: its grid, its verdicts and where it writes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from equisae.sweeps import SWEEPS, ProbeJob, ReferenceProbeJob, SAEJob, sweep_jobs, sweep_settings
from equisae.sweeps.extended import (
    extended_jobs,
    extended_markdown,
    extended_results_path,
    extended_summary,
    extended_targets_settings,
    run_extended,
)
from equisae.sweeps.settings import SWEEP_SAE_TYPES, extended_settings


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_extended_grid_is_the_intermediate_layers_at_matched_k(mode: str) -> None:
    s = sweep_settings(mode)
    jobs = extended_jobs(s)
    assert SWEEPS["extended"](s) == jobs and sweep_jobs("extended", mode) == jobs
    saes = [j for j in jobs if isinstance(j, SAEJob)]
    assert {(j.model_name, j.layer) for j in saes} == set(s.extended_targets)
    assert all(layer == "intermediate" for _, layer in s.extended_targets)
    assert all(j.k == s.probe_k and j.seeds == s.seeds and j.training == s.training for j in saes)
    assert {j.sae_type for j in saes} == {t for t in SWEEP_SAE_TYPES if "canonical" not in t}
    probes = [j for j in jobs if isinstance(j, ProbeJob)]
    assert len(probes) == len(saes) * len(s.seeds)
    assert {j.reference for j in jobs if isinstance(j, ReferenceProbeJob)} == {"raw", "random"}
    full = sweep_settings("full")
    assert extended_settings().targets == full.targets + full.extended_targets


def test_settings_without_extended_targets_are_refused() -> None:
    s = dataclasses.replace(sweep_settings("quick"), extended_targets=())
    with pytest.raises(ValueError, match="no extended_targets"):
        extended_targets_settings(s)
    with pytest.raises(ValueError, match="only a full-mode"):
        run_extended("quick", publish=True)


def _records(delta_f1: float, delta_fvu: float) -> tuple[list[dict], list[dict]]:
    saes, probes = [], []
    for seed in (0, 1, 2):
        for sae_type, f1, fvu in (
            ("topk", 0.5, 0.10),
            ("adaptive", 0.5 + delta_f1, 0.10 + delta_fvu),
            ("equivariant", 0.5, 0.10 + delta_fvu),
        ):
            base = {"model": "gcnn", "layer": "intermediate", "sae_type": sae_type, "seed": seed}
            saes.append({**base, "k": 8, "fvu": fvu + 0.001 * seed})
            for factor in ("shape", "colour", "scale"):
                for pk in ("all", "k5"):
                    probes.append(
                        {
                            **base,
                            "factor": factor,
                            "probe_k": pk,
                            "features": "latents",
                            "f1": f1 + 0.002 * seed * (sae_type == "adaptive"),
                        }
                    )
    return saes, probes


def test_summary_holds_the_probing_frontier_and_combined_verdicts() -> None:
    s = dataclasses.replace(
        sweep_settings("full"),
        probing=dataclasses.replace(sweep_settings("full").probing, probe_ks=(None, 5)),
    )
    summary = extended_summary(s, *_records(delta_f1=0.1, delta_fvu=0.05))
    assert summary["verdicts"]["adaptive/k5"]["n_better"] == 1
    assert summary["frontier"]["n_lags"] == 1
    assert summary["claim"]["k5"]["holds_layers"] == 1
    assert summary["grid"]["n_steps"] == s.training.n_steps
    fvu = {r["sae_type"]: r for r in summary["fvu"]}
    assert fvu["adaptive"]["mean"] == pytest.approx(0.151) and fvu["topk"]["n"] == 3
    against = extended_summary(s, *_records(delta_f1=-0.1, delta_fvu=0.05))
    assert against["claim"]["k5"]["holds_layers"] == 0
    text = extended_markdown(json.loads(json.dumps(summary)))  # as read back from disk
    assert "| gcnn / intermediate |" in text and "| 5-sparse probe | 1 of 1 |" in text
    assert "adaptive / TopK" in text and "1.495" in text  # FVU ratio 0.151 / 0.101
    assert "not been published" in extended_markdown(None)


def test_results_paths_separate_a_run_from_the_published_reference(tmp_path: Path) -> None:
    assert extended_results_path(tmp_path, "full", published=True) == (
        tmp_path / "reference" / "extended" / "intermediate_layers.json"
    )
    run = extended_results_path(tmp_path, "quick", published=False)
    assert run.parent.name == "extended-quick"
