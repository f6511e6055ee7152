"""Reading notebook results for the ledger: one file per notebook, values by explicit keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equisae.io import read_json

__all__ = ["OPTIONAL_STEMS", "REQUIRED_KEYS", "LedgerSchemaError", "Read", "load_results"]

# The keys a results file of the current schema has (an earlier version's files lack them).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "03_linear_representation": ("models",),
    "04_planted_features": ("verdicts", "summary", "runs"),
    "05_frontier": ("verdicts", "grid", "runs"),
    "06_probing": ("verdicts", "claim", "design_choices", "runs"),
}
OPTIONAL_STEMS: tuple[str, ...] = ("07_digits", "08_dihedral", "09_gallery")
STEMS: tuple[str, ...] = (*REQUIRED_KEYS, *OPTIONAL_STEMS)


class LedgerSchemaError(ValueError):
    """A results file written by an earlier version's notebooks (before equisae.sweeps)."""


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
            f"{path} holds results of the old schema (an earlier version, before the notebooks "
            f"moved to equisae.sweeps): it lacks the key(s) {missing} (it has {sorted(data)}). "
            f"Rewrite it with `equisae reproduce --mode {mode}` (and republish the reference)."
        )
    return data


@dataclass(frozen=True)
class Read:
    """One value a claim reads: ``results/<stem>.json`` at the key path ``path``.

    ``required``: a claim whose required read is absent is "not run" (it names the key).
    """

    name: str
    stem: str
    path: tuple[str, ...]
    required: bool = True

    def __post_init__(self) -> None:
        if self.stem not in STEMS:
            raise ValueError(f"Read {self.name!r}: stem must be one of {STEMS}, got {self.stem!r}")
        if not self.path:
            raise ValueError(f"Read {self.name!r}: path must name at least one key")

    @property
    def address(self) -> str:
        """``"06_probing.json: verdicts → adaptive/all"``."""
        return f"{self.stem}.json: " + " → ".join(self.path)

    def value(self, loaded: Mapping[str, Mapping[str, Any] | None]) -> Any:
        """The value, or None when the file or a key on the path is absent."""
        node: Any = loaded.get(self.stem)
        for key in self.path:
            if not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
        return node
