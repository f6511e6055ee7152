"""The claims ledger: the paper's claims, our numbers and our verdicts, in one JSON file.

:func:`build_ledger` reads a results folder (``reference/full`` by default; ``results/quick``
works the same) and returns one entry per claim of the registry
(:data:`equisae.ledger.registry.CLAIMS`): the paper's statement (v1 or v2), what the test
covers (scope), the setting, the results keys it read, every point with its status, the
direction that supports the paper, the mean difference, sd, n and p-values, and the label
computed from them by the one label function :func:`equisae.verdicts.claim_label` (rule in
:mod:`equisae.verdicts`). :func:`equisae.ledger.entries.relabel` recomputes every label from
the JSON alone. The ledger also lists the design choices that move a verdict (notebook 06) and
the A/A calibration of the rule when notebook 06 ran it.

Modules: :mod:`~equisae.ledger.results` (reading results by explicit keys),
:mod:`~equisae.ledger.registry` (the claims), :mod:`~equisae.ledger.claims` (the builders),
:mod:`~equisae.ledger.entries` (points, labels, numbers), :mod:`~equisae.ledger.design`,
:mod:`~equisae.ledger.render` (Markdown for the book).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from equisae.io import project_root, write_json_atomic
from equisae.ledger.design import design_choices
from equisae.ledger.entries import not_run, relabel
from equisae.ledger.registry import CLAIMS, ClaimSpec, claim_spec
from equisae.ledger.render import (
    calibration_table,
    claim_details,
    claims_table,
    design_table,
    ledger_markdown,
)
from equisae.ledger.results import (
    OPTIONAL_STEMS,
    REQUIRED_KEYS,
    STEMS,
    LedgerSchemaError,
    load_results,
)
from equisae.verdicts import LABELS, RULE

__all__ = [
    "CLAIMS",
    "LABELS",
    "REQUIRED_KEYS",
    "SCHEMA",
    "ClaimSpec",
    "LedgerSchemaError",
    "OPTIONAL_STEMS",
    "build_claim",
    "build_ledger",
    "calibration_table",
    "claim_details",
    "claim_spec",
    "claims_table",
    "default_results_dir",
    "design_choices",
    "design_table",
    "ledger_markdown",
    "load_results",
    "relabel",
    "write_ledger",
]

SCHEMA = 2


def default_results_dir() -> Path:
    """``reference/full`` under the project root: the published numbers."""
    return project_root() / "reference" / "full"


def build_claim(spec: ClaimSpec, loaded: dict[str, Any]) -> dict[str, Any]:
    """One entry: "not run" when a required read is absent, else the spec's builder."""
    inputs = spec.inputs(loaded)
    missing = spec.missing(inputs)
    if missing:
        return not_run(spec, ", ".join(missing))
    return spec.build(spec, inputs)


def build_ledger(results_dir: str | Path | None = None) -> dict[str, Any]:
    """The claims ledger of a results folder (``reference/full`` by default), as a dict."""
    folder = Path(results_dir) if results_dir is not None else default_results_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"results_dir {folder} is not a folder of results files")
    loaded = {stem: load_results(folder, stem) for stem in STEMS}
    modes = {str(d["mode"]) for d in loaded.values() if d and "mode" in d}
    r06 = loaded["06_probing"] or {}
    return {
        "schema": SCHEMA,
        # the folder as "reference/full" or "results/quick": never a local absolute path
        "source": f"{folder.parent.name}/{folder.name}",
        "mode": " and ".join(sorted(modes)) if modes else "unknown",
        "rule": RULE,
        "notebooks_run": sorted(stem for stem, d in loaded.items() if d is not None),
        "claims": [build_claim(spec, loaded) for spec in CLAIMS],
        "design_choices": design_choices(r06.get("design_choices")),
        "calibration": r06.get("aa"),
    }


def write_ledger(results_dir: str | Path | None = None, out_path: str | Path | None = None) -> Path:
    """Write :func:`build_ledger` of ``results_dir`` to ``out_path`` (default
    ``results_dir/claims.json``) atomically; returns the path."""
    folder = Path(results_dir) if results_dir is not None else default_results_dir()
    ledger = build_ledger(folder)
    return write_json_atomic(Path(out_path) if out_path else folder / "claims.json", ledger)
