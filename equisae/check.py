"""Compare a fresh run's results with the committed reference, figure by figure.

``equisae check --mode quick|full`` walks every ``reference/<mode>/<stem>.json`` and the matching
``results/<mode>/<stem>.json`` and compares every numeric leaf. A *figure* is one top-level key
of one results file (``03_linear_representation/r2``); it reproduces when all of its leaves do.

Tolerances (a leaf passes when ``|run - reference| <= tolerance``):

* Seed spread. Where the results carry several seeds, either as a mapping with ``mean`` and a
  spread (``std``, ``sd``, ``spread`` or ``sem``) or as a ``per_seed`` list/mapping of values,
  the tolerance is ``max(abs floor, 3 x spread)`` with the spread the larger of the reference's
  and the run's (for ``per_seed`` values, their standard deviation; their mean is compared).
* Otherwise, the first rule of :data:`TOLERANCE_RULES` whose pattern matches the leaf's path
  gives ``max(abs floor, rel x |reference|)``; the fallback is 10 % relative with a 1e-3 floor.
* Cache flags (``cached``, ``n_cached``) say how a run went, not what it found: not compared.
* Timings and speeds (any path component containing ``second``, ``time``, ``timing``,
  ``wall``, ``elapsed``, ``duration``, ``throughput`` or ``speed``) are not compared: they
  measure the machine.
* Booleans must match exactly; strings that differ are reported as notes, not failures.

Missing files and keys are failures; extra files and keys in the run are notes.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from equisae.io import atomic_folder, project_root, read_json, results_dir, write_json_atomic
from equisae.modes import check_mode

SPREAD_KEYS = ("std", "sd", "spread", "sem")
PER_SEED_KEY = "per_seed"
SEED_SPREAD_FACTOR = 3.0


@dataclass(frozen=True)
class ToleranceRule:
    """A tolerance for the leaves whose path (``stem/key/...``, lower case) matches ``pattern``."""

    pattern: str
    rel: float
    abs: float
    description: str
    skip: bool = False

    def matches(self, path: str) -> bool:
        """Whether the rule applies to the leaf at ``path``."""
        return re.search(self.pattern, path.lower()) is not None

    def tolerance(self, reference: float) -> float:
        """The allowed absolute difference from ``reference``."""
        return max(self.abs, self.rel * abs(reference))


_LAST = r"(?:^|/)"  # start of a path component
_END = r"(?:/\d+)*$"  # the component may be followed by list indices only

#: Tolerance rules, first match wins. The pattern is searched in the leaf's lower-case path.
TOLERANCE_RULES: tuple[ToleranceRule, ...] = (
    ToleranceRule(
        _LAST
        + r"[a-z0-9_]*(?:second|secs|time|timing|wall|elapsed|duration|throughput|speed)[a-z0-9_]*(?:/|$)",
        0.0,
        0.0,
        "timings and speeds depend on the machine: not compared",
        skip=True,
    ),
    ToleranceRule(
        _LAST + r"(?:cached|n_cached)" + _END,
        0.0,
        0.0,
        "whether a run found its artifacts in the cache depends on the run: not compared",
        skip=True,
    ),
    ToleranceRule(
        _LAST
        + r"(?:n|num|n_[a-z0-9_]+|num_[a-z0-9_]+|seed|seeds|n_seeds|k|d|d_in|d_sae|order)"
        + _END,
        0.0,
        0.0,
        "sizes, counts and seeds: exact",
    ),
    ToleranceRule(r"r2|r_squared|rsquared", 0.0, 0.02, "R^2: within 0.02"),
    ToleranceRule(r"f1|accuracy|acc\b|auc", 0.0, 0.03, "F1 / accuracy: within 0.03"),
    ToleranceRule(r"cos|recovery|detection", 0.0, 0.03, "cosine-based recovery: within 0.03"),
    ToleranceRule(r"dead", 0.0, 0.05, "dead-latent fraction: within 0.05"),
    ToleranceRule(r"l0", 0.05, 0.5, "L0: 5 % relative, floor 0.5 latents"),
    ToleranceRule(r"fvu|mse|loss|error|err\b", 0.10, 0.01, "FVU / MSE / errors: 10 %, floor 0.01"),
)

#: The rule for leaves no pattern matches.
DEFAULT_RULE = ToleranceRule(r"", 0.10, 1e-3, "default: 10 % relative, floor 1e-3")


def rule_for(path: str) -> ToleranceRule:
    """The first :data:`TOLERANCE_RULES` entry matching ``path`` (else :data:`DEFAULT_RULE`)."""
    for rule in TOLERANCE_RULES:
        if rule.matches(path):
            return rule
    return DEFAULT_RULE


@dataclass(frozen=True)
class LeafCheck:
    """One compared numeric leaf."""

    figure: str
    path: str
    reference: float | bool | None
    value: float | bool | None
    tolerance: float
    rule: str
    passed: bool

    @property
    def difference(self) -> float:
        """``|value - reference|`` (infinite where one side is missing or not a number)."""
        if not _is_number(self.reference) or not _is_number(self.value):
            return 0.0 if self.reference == self.value else math.inf
        return abs(float(self.value) - float(self.reference))


@dataclass
class FigureSummary:
    """How the leaves of one figure fared."""

    figure: str
    compared: int = 0
    failed: int = 0
    worst: str = ""

    @property
    def reproduced(self) -> bool:
        """True when every compared leaf passed."""
        return self.failed == 0


@dataclass
class CheckReport:
    """The outcome of :func:`compare_results`."""

    reference_dir: Path
    run_dir: Path
    leaves: list[LeafCheck] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # missing files/keys, type mismatches
    notes: list[str] = field(default_factory=list)  # extra files/keys, changed strings, skips

    @property
    def failed_leaves(self) -> list[LeafCheck]:
        """The leaves outside their tolerance."""
        return [leaf for leaf in self.leaves if not leaf.passed]

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failures and not self.failed_leaves

    def figures(self) -> dict[str, FigureSummary]:
        """Per-figure counts, in the order the figures were met."""
        out: dict[str, FigureSummary] = {}
        for leaf in self.leaves:
            summary = out.setdefault(leaf.figure, FigureSummary(leaf.figure))
            summary.compared += 1
            if not leaf.passed:
                summary.failed += 1
                if not summary.worst:
                    summary.worst = f"{leaf.path}: {leaf.value!r} vs {leaf.reference!r} (tol {leaf.tolerance:.3g})"
        for message in self.failures:
            figure = message.split(":", 1)[0]
            summary = out.setdefault(figure, FigureSummary(figure))
            summary.failed += 1
            summary.worst = summary.worst or message
        return out

    def format_table(self) -> str:
        """A plain-text table: one row per figure, then the failures and notes."""
        figures = self.figures()
        width = max([len("figure"), *(len(name) for name in figures)])
        lines = [f"{'figure':<{width}}  {'leaves':>6}  {'failed':>6}  status", "-" * (width + 28)]
        for summary in figures.values():
            status = "reproduced" if summary.reproduced else "NOT reproduced"
            lines.append(
                f"{summary.figure:<{width}}  {summary.compared:>6}  {summary.failed:>6}  {status}"
            )
        n_ok = sum(s.reproduced for s in figures.values())
        lines.append(f"{n_ok}/{len(figures)} figures reproduced")
        problems = [s.worst for s in figures.values() if not s.reproduced]
        if problems:
            lines.append("failures (first per figure):")
            lines.extend(f"  {p}" for p in problems)
        if self.notes:
            lines.append("notes:")
            lines.extend(f"  {n}" for n in self.notes)
        return "\n".join(lines)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _spread_of(node: Mapping[str, Any]) -> float | None:
    """The seed spread a mapping carries (``std``/``sd``/``spread``/``sem``), if any."""
    for key in SPREAD_KEYS:
        if _is_number(node.get(key)):
            return abs(float(node[key]))
    return None


def _per_seed_values(node: Any) -> list[float] | None:
    """The numbers of a ``per_seed`` list or mapping, or None when it is not all numbers."""
    values = list(node.values()) if isinstance(node, Mapping) else node
    if isinstance(values, list) and values and all(_is_number(v) for v in values):
        return [float(v) for v in values]
    return None


class _Comparer:
    """Walks a reference tree and a run tree side by side, filling a :class:`CheckReport`."""

    def __init__(self, report: CheckReport) -> None:
        self.report = report

    def leaf(
        self, figure: str, path: str, ref: Any, run: Any, seed_spread: float | None = None
    ) -> None:
        rule = rule_for(path)
        if rule.skip:
            return
        if isinstance(ref, bool) or isinstance(run, bool):
            passed = ref is run
            self.report.leaves.append(LeafCheck(figure, path, ref, run, 0.0, "exact", passed))
            return
        if not _is_number(ref) or not _is_number(run):
            passed = ref is None and run is None
            desc = "missing value (null) on one side" if not passed else "both null"
            self.report.leaves.append(LeafCheck(figure, path, ref, run, 0.0, desc, passed))
            return
        if seed_spread is not None:
            tol = max(rule.abs, SEED_SPREAD_FACTOR * seed_spread)
            desc = f"max({rule.abs:g}, 3 x seed spread {seed_spread:.3g})"
        else:
            tol = rule.tolerance(float(ref))
            desc = rule.description
        passed = abs(float(run) - float(ref)) <= tol + 1e-12
        self.report.leaves.append(LeafCheck(figure, path, ref, run, tol, desc, passed))

    def walk(self, figure: str, path: str, ref: Any, run: Any) -> None:
        if isinstance(ref, Mapping):
            if not isinstance(run, Mapping):
                self.report.failures.append(f"{figure}: {path} is a mapping in the reference only")
                return
            self._walk_mapping(figure, path, ref, run)
        elif isinstance(ref, list):
            if not isinstance(run, list):
                self.report.failures.append(f"{figure}: {path} is a list in the reference only")
                return
            if len(ref) != len(run):
                self.report.failures.append(
                    f"{figure}: {path} has {len(run)} entries, the reference {len(ref)}"
                )
                return
            for i, (r, v) in enumerate(zip(ref, run, strict=True)):
                self.walk(figure, f"{path}/{i}", r, v)
        elif isinstance(ref, str):
            if ref != run:
                self.report.notes.append(f"{figure}: {path} changed from {ref!r} to {run!r}")
        else:
            self.leaf(figure, path, ref, run)

    def _walk_mapping(
        self, figure: str, path: str, ref: Mapping[str, Any], run: Mapping[str, Any]
    ) -> None:
        for key in run:
            if key not in ref:
                self.report.notes.append(f"{figure}: extra key {path}/{key} (not in reference)")
        spreads = [s for s in (_spread_of(ref), _spread_of(run)) if s is not None]
        seed_spread = max(spreads) if spreads and "mean" in ref else None
        for key, ref_value in ref.items():
            child = f"{path}/{key}"
            if key not in run:
                self.report.failures.append(f"{figure}: missing key {child}")
                continue
            run_value = run[key]
            if key == PER_SEED_KEY:
                self._per_seed(figure, child, ref_value, run_value)
            elif seed_spread is not None and (key == "mean" or key in SPREAD_KEYS):
                self.leaf(figure, child, ref_value, run_value, seed_spread=seed_spread)
            else:
                self.walk(figure, child, ref_value, run_value)

    def _per_seed(self, figure: str, path: str, ref: Any, run: Any) -> None:
        ref_values, run_values = _per_seed_values(ref), _per_seed_values(run)
        if ref_values is None or run_values is None:
            self.walk(figure, path, ref, run)
            return
        spread = max(
            statistics.pstdev(ref_values) if len(ref_values) > 1 else 0.0,
            statistics.pstdev(run_values) if len(run_values) > 1 else 0.0,
        )
        self.leaf(
            figure,
            f"{path}/mean",
            statistics.fmean(ref_values),
            statistics.fmean(run_values),
            seed_spread=spread,
        )


def compare_trees(stem: str, reference: Any, run: Any, report: CheckReport) -> None:
    """Compare one results file's JSON tree with its reference, appending to ``report``."""
    comparer = _Comparer(report)
    if isinstance(reference, Mapping) and isinstance(run, Mapping):
        for key in run:
            if key not in reference:
                report.notes.append(f"{stem}/{key}: extra figure (not in reference)")
        for key, ref_value in reference.items():
            figure = f"{stem}/{key}"
            if key not in run:
                report.failures.append(f"{figure}: missing figure")
                continue
            comparer.walk(figure, figure, ref_value, run[key])
    else:
        comparer.walk(stem, stem, reference, run)


def compare_results(reference_dir: str | Path, run_dir: str | Path) -> CheckReport:
    """Compare every ``<stem>.json`` in ``reference_dir`` with the same file in ``run_dir``."""
    reference_dir, run_dir = Path(reference_dir), Path(run_dir)
    if not reference_dir.is_dir():
        raise FileNotFoundError(f"reference folder not found: {reference_dir}")
    references = sorted(reference_dir.glob("*.json"))
    if not references:
        raise FileNotFoundError(f"no reference results (*.json) in {reference_dir}")
    report = CheckReport(reference_dir, run_dir)
    for ref_path in references:
        stem = ref_path.stem
        run_path = run_dir / ref_path.name
        if not run_path.is_file():
            report.failures.append(f"{stem}: results file missing ({run_path})")
            continue
        compare_trees(stem, read_json(ref_path), read_json(run_path), report)
    if run_dir.is_dir():
        known = {p.name for p in references}
        for extra in sorted(run_dir.glob("*.json")):
            if extra.name not in known:
                report.notes.append(f"{extra.stem}: extra results file (no reference)")
    return report


def reference_dir(mode: str, root: str | Path | None = None) -> Path:
    """``reference/<mode>/`` under the project root: the committed reference results."""
    check_mode(mode)
    return Path(root if root is not None else project_root()) / "reference" / mode


def publish_reference(mode: str, root: str | Path | None = None) -> Path:
    """Copy ``results/<mode>/*.json`` to ``reference/<mode>/``, replacing it atomically."""
    source = results_dir(mode) if root is None else Path(root) / "results" / mode
    files = sorted(source.glob("*.json")) if source.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no results (*.json) to publish in {source}")
    target = reference_dir(mode, root)
    with atomic_folder(target) as staging:
        for path in files:
            write_json_atomic(staging / path.name, read_json(path))
    return target


def main_check(mode: str, root: str | Path | None = None, stream: Any = None) -> int:
    """Compare ``results/<mode>`` with ``reference/<mode>``, print the table, return an exit code.

    0 when every figure reproduced, 1 when some did not, 2 when there is nothing to compare.
    """
    import sys

    out = stream if stream is not None else sys.stdout
    run = results_dir(mode) if root is None else Path(root) / "results" / mode
    try:
        report = compare_results(reference_dir(mode, root), run)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=out)
        return 2
    print(f"comparing {run} with the reference {report.reference_dir}", file=out)
    print(report.format_table(), file=out)
    return 0 if report.ok else 1


__all__: Sequence[str] = (
    "CheckReport",
    "FigureSummary",
    "LeafCheck",
    "ToleranceRule",
    "TOLERANCE_RULES",
    "DEFAULT_RULE",
    "rule_for",
    "compare_trees",
    "compare_results",
    "reference_dir",
    "publish_reference",
    "main_check",
)
