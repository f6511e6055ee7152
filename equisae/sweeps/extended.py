"""The extended sweep: the layers outside the published full grid (the 512-wide intermediate
layers of the key base models), run by ``equisae extended`` and committed to
``reference/extended/``.

The published full run (notebooks 05 and 06) covers the bottlenecks. The intermediate layers
cost several times a bottleneck job per SAE (the equivariant SAEs multiply by ``d x d`` matrices
per pose), so they run as their own command. The grid is the full grid's on those targets: every
SAE type of :func:`SweepSettings.types_for` (no canonicalising variants), ``probe_k`` only, all
seeds, the same training, probes and references; the summary holds the same verdicts as notebook
06 (probing per probe type, the frontier at ``probe_k``, and both together).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from equisae.runner import Job
from equisae.sweeps.settings import SweepSettings

__all__ = [
    "EXTENDED_STEM",
    "extended_jobs",
    "extended_markdown",
    "extended_results_path",
    "extended_summary",
    "extended_targets_settings",
    "run_extended",
]

#: the file name (without .json) of the extended sweep's results
EXTENDED_STEM = "intermediate_layers"
#: the SAE types whose verdicts against TopK are recorded
COMPARED = ("adaptive", "equivariant")


def extended_targets_settings(s: SweepSettings) -> SweepSettings:
    """``s`` restricted to its ``extended_targets`` at ``probe_k`` (a ValueError when it has
    none)."""
    if not s.extended_targets:
        raise ValueError(f"the {s.mode} settings have no extended_targets")
    from equisae.sweeps.settings import sweep_settings

    return replace(
        s,
        targets=s.extended_targets,
        intermediate_ks=(s.probe_k,),
        # the canonicalising variants are an ablation of the bottleneck grid only
        variant_types=sweep_settings("full").variant_types,
        variant_targets=(),
    )


def extended_jobs(s: SweepSettings) -> list[Job]:
    """The SAEs (at ``probe_k``), probes and references of the extended targets."""
    from equisae.sweeps import frontier_jobs, probing_jobs

    ext = extended_targets_settings(s)
    return frontier_jobs(ext) + probing_jobs(ext)


def extended_results_path(root: Path, mode: str, published: bool) -> Path:
    """``reference/extended/<stem>.json`` (published, full mode) or
    ``results/extended-<mode>/<stem>.json`` (a run's own output)."""
    if published:
        return root / "reference" / "extended" / f"{EXTENDED_STEM}.json"
    return root / "results" / f"extended-{mode}" / f"{EXTENDED_STEM}.json"


def extended_summary(
    s: SweepSettings,
    sae_records: Sequence[dict[str, Any]],
    probe_records: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The verdicts of notebook 06 on the extended targets, as a JSON-able dict."""
    from equisae.verdicts import claim_verdict, frontier_verdict, probing_verdict

    probe_ks = ["all"] + [f"k{k}" for k in s.probing.probe_ks if k is not None]
    verdicts = {
        (sae, pk): probing_verdict(probe_records, probe_k=pk, sae=sae, baseline="topk")
        for sae in COMPARED
        for pk in probe_ks
    }
    frontier = frontier_verdict(sae_records, sae="adaptive", baseline="topk", k=s.probe_k)
    combined = {pk: claim_verdict(verdicts["adaptive", pk], frontier) for pk in probe_ks}
    fvu: dict[tuple[str, str, str], list[float]] = {}
    for r in sae_records:
        fvu.setdefault((r["model"], r["layer"], r["sae_type"]), []).append(float(r["fvu"]))
    return {
        "mode": s.mode,
        "targets": [list(t) for t in s.extended_targets],
        "grid": {
            "sae_types": sorted({r["sae_type"] for r in sae_records}),
            "k": s.probe_k,
            "seeds": list(s.seeds),
            "n_steps": s.training.n_steps,
            "lr": s.training.lr,
            "probe_ks": probe_ks,
        },
        "fvu": [
            {
                "model": m,
                "layer": layer,
                "sae_type": t,
                "mean": float(np.mean(v)),
                "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None,
                "n": len(v),
            }
            for (m, layer, t), v in sorted(fvu.items())
        ],
        "runs": list(sae_records),
        "probe_runs": list(probe_records),
        "verdicts": {f"{sae}/{pk}": v.to_dict() for (sae, pk), v in verdicts.items()},
        "frontier": frontier.to_dict(),
        "claim": {
            pk: {"holds_layers": c.n_holds, "n_layers": len(c.holds), "sentence": c.sentence()}
            for pk, c in combined.items()
        },
    }


def run_extended(mode: str = "full", scheduler: Any = None, publish: bool = False) -> Path:
    """Run (or load from the cache) the extended sweep of ``mode`` and write its summary:
    ``results/extended-<mode>/``, and with ``publish`` (full mode only) ``reference/extended/``.
    Raises when a job failed."""
    from equisae.io import project_root, write_json_atomic
    from equisae.sweeps import all_results, frontier_records, probe_records, run_named_sweep
    from equisae.sweeps.settings import sweep_settings

    if publish and mode != "full":
        raise ValueError("only a full-mode extended sweep can be published (use --mode full)")
    settings = sweep_settings(mode)
    result = run_named_sweep("extended", mode, scheduler=scheduler, progress=True)
    summary = extended_summary(
        settings, frontier_records(all_results(result)), probe_records(result.results)
    )
    root = project_root()
    path = write_json_atomic(extended_results_path(root, mode, published=False), summary)
    if publish:
        path = write_json_atomic(extended_results_path(root, mode, published=True), summary)
    return path


def extended_markdown(summary: dict[str, Any] | None) -> str:
    """The published extended sweep as MyST: the grid, FVU per SAE type and target, and the
    probing, frontier and combined verdicts of the adaptive SAE against TopK."""
    from equisae.plots.findings import label_of
    from equisae.tables import markdown_table, mean_sd_cell
    from equisae.verdicts import probe_type

    if summary is None:
        return (
            "The extended sweep has not been published yet: `equisae extended --publish` runs it "
            "and writes `reference/extended/`."
        )
    grid = summary["grid"]
    targets = ", ".join("/".join(t) for t in summary["targets"])
    lines = [
        f"Targets {targets}; SAE types {', '.join(label_of(t) for t in grid['sae_types'])}; "
        f"k = {grid['k']}; {len(grid['seeds'])} seeds; {grid['n_steps']} steps at learning rate "
        f"{grid['lr']:g}; the probes and the verdict rule of notebook 06.",
        "",
    ]
    fvu: dict[tuple[str, str], dict[str, Any]] = {}
    for r in summary["fvu"]:
        fvu.setdefault((r["model"], r["layer"]), {})[r["sae_type"]] = r
    rows = []
    for (model, layer), by_type in fvu.items():
        row: dict[str, Any] = {"model / layer": f"{model} / {layer}"}
        for t in grid["sae_types"]:
            if t in by_type:
                r = by_type[t]
                row[f"FVU {label_of(t)}"] = mean_sd_cell(mean=r["mean"], sd=r["sd"])
        if "adaptive" in by_type and "topk" in by_type:
            row["adaptive / TopK"] = by_type["adaptive"]["mean"] / by_type["topk"]["mean"]
        rows.append(row)
    lines += [markdown_table(rows), ""]
    verdict_rows = []
    for pk in grid["probe_ks"]:
        v = summary["verdicts"].get(f"adaptive/{pk}")
        claim = summary["claim"].get(pk)
        if v is None or claim is None:
            continue
        n = len(v["rows"])
        verdict_rows.append(
            {
                "probe": probe_type(pk),
                "adaptive probes better": f"{v['n_better']} of {n}",
                "worse": f"{v['n_worse']} of {n}",
                "better and lags on FVU": f"{claim['holds_layers']} of {claim['n_layers']}",
            }
        )
    lines += [markdown_table(verdict_rows), "", summary["frontier"]["sentence"]]
    return "\n".join(lines)
