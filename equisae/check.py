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
* Booleans and verdict labels (string leaves named ``verdict`` or ``status``) must match
  exactly; other strings that differ are reported as notes, not failures.
* Records that differ only by seed (a list of mappings with a ``seed`` key, e.g. ``runs``):
  each number of a record is also allowed ``3 x`` the standard deviation of that number across
  the seeds of its group in the reference (the seed spread the results carry).

Canonical forms come first: eigenvalues (a mapping ``eigenvalues: {real: [...], imag: [...]}``)
are a set, so the run's are reordered to their best one-to-one match with the reference's
(Hungarian matching on the distance in the complex plane) before they are compared by
position. Irreducible-representation multiplicities are mappings keyed by name, compared by
name. Matched dictionaries only enter the results as order-free summaries (mean cosine,
recovery), so no other list needs reordering.

The envelope (quick mode, ``reference/<mode>/envelope.json``, written by ``equisae envelope``;
see :mod:`equisae.envelope`) overrides the fixed tolerances leaf by leaf. For a number the
envelope is the smallest and largest value the reference and the envelope runs gave (the
runs differ only in their numeric kernels); the leaf reproduces inside
``[min - margin, max + margin]`` with ``margin = ENVELOPE_RANGE_FACTOR x max(max - min, the
spread of its kind)`` plus the leaf's fixed tolerance as a floor. The spread of a kind (the
95th percentile of the ranges, the largest range for counts, over every leaf with the same
results file and last two named path components, e.g. every probe F1 of notebook 06) guards
against a few runs agreeing on one value by chance. With five values the observed range is
about 2.3 standard deviations of the spread, so twice the range on either side reaches about
six standard deviations: a rerun elsewhere is expected inside, a regression larger than the
machine-to-machine spread is not; the floor keeps the check from ever being stricter than
the fixed rules. A boolean or label that changed across the envelope runs, or one of a kind
that changed there, is *unstable*: reported, never a failure. A leaf without an envelope falls back to the fixed rules.

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

import numpy as np

from equisae.io import atomic_folder, project_root, read_json, results_dir, write_json_atomic
from equisae.modes import check_mode

SPREAD_KEYS = ("std", "sd", "spread", "sem")
PER_SEED_KEY = "per_seed"
SEED_SPREAD_FACTOR = 3.0
#: failing or unstable leaves listed one by one before the rest are counted
MAX_LISTED = 200
#: string leaves that are verdict labels: compared exactly, like booleans
LABEL_KEYS = ("verdict", "status")
#: the key of a seed in a list of per-seed records
SEED_KEY = "seed"
#: the mapping whose ``real``/``imag`` lists are a set of eigenvalues (canonicalised)
EIGENVALUE_KEY = "eigenvalues"
#: the envelope file in ``reference/<mode>/`` (not a results file)
ENVELOPE_FILE = "envelope.json"
#: the envelope is widened on each side by this multiple of its width (plus the rule's floor)
ENVELOPE_RANGE_FACTOR = 2.0
#: a leaf's kind: its results file and this many of its last named path components
FAMILY_DEPTH = 2


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
    low: float | None = None  # the accepted band, where an envelope gave one
    high: float | None = None
    unstable: bool = False  # a boolean/label that changed across the envelope runs

    @property
    def describe(self) -> str:
        """One line: the value, what it was compared with, and why it passed or failed."""
        if self.low is not None and self.high is not None:
            return (
                f"{self.path}: {self.value!r} outside [{self.low:.6g}, {self.high:.6g}] "
                f"({self.rule})"
            )
        return f"{self.path}: {self.value!r} vs {self.reference!r} (tol {self.tolerance:.3g}; {self.rule})"

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
    enveloped: int = 0  # leaves judged by a measured envelope
    unstable: int = 0  # booleans/labels the envelope runs did not agree on

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
    envelope: str | None = None  # where the envelope came from, when one was used

    @property
    def unstable_leaves(self) -> list[LeafCheck]:
        """Booleans and labels that changed across the envelope runs (reported, not failed)."""
        return [leaf for leaf in self.leaves if leaf.unstable]

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
            summary.enveloped += leaf.low is not None or leaf.unstable
            summary.unstable += leaf.unstable
            if not leaf.passed:
                summary.failed += 1
                if not summary.worst:
                    summary.worst = leaf.describe
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
        header = f"{'figure':<{width}}  {'leaves':>6}  {'failed':>6}  {'envelope':>8}  status"
        lines = [header, "-" * len(header)]
        for summary in figures.values():
            status = "reproduced" if summary.reproduced else "NOT reproduced"
            if summary.unstable:
                status += f" ({summary.unstable} unstable)"
            lines.append(
                f"{summary.figure:<{width}}  {summary.compared:>6}  {summary.failed:>6}  "
                f"{summary.enveloped:>8}  {status}"
            )
        n_ok = sum(s.reproduced for s in figures.values())
        lines.append(f"{n_ok}/{len(figures)} figures reproduced")
        lines.append(f"envelope: {self.envelope or 'none (fixed tolerances only)'}")
        failed = self.failed_leaves
        if failed or self.failures:
            lines.append("failures (every failing leaf: value, accepted band, who set its bounds):")
            lines.extend(f"  {leaf.describe}" for leaf in failed[:MAX_LISTED])
            if len(failed) > MAX_LISTED:
                lines.append(f"  ... and {len(failed) - MAX_LISTED} more failing leaves")
            lines.extend(f"  {message}" for message in self.failures)
        unstable = self.unstable_leaves
        if unstable:
            lines.append(
                f"unstable (changed across the envelope runs: reported, not failed): {len(unstable)}"
            )
            lines.extend(
                f"  {leaf.path}: {leaf.value!r} ({leaf.rule})" for leaf in unstable[:MAX_LISTED]
            )
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


def match_eigenvalues(reference: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """``run``'s eigenvalues (``{"real": [...], "imag": [...]}``) in the order of
    ``reference``'s: Hungarian matching on ``|z_ref - z_run|`` pairs them one to one. Where the
    two differ in number (a rank one higher on another machine), the run's extra eigenvalues are
    dropped and a reference eigenvalue left without a partner gets its nearest run eigenvalue,
    so that the result lines up with the reference (the rank itself is compared as its own
    leaf). Returned unchanged when either is not a non-empty eigenvalue list."""
    from scipy.optimize import linear_sum_assignment

    try:
        ref = np.asarray(reference["real"], float) + 1j * np.asarray(reference["imag"], float)
        new = np.asarray(run["real"], float) + 1j * np.asarray(run["imag"], float)
    except (KeyError, TypeError, ValueError):
        return dict(run)
    if ref.ndim != 1 or new.ndim != 1 or ref.size == 0 or new.size == 0:
        return dict(run)
    cost = np.abs(ref[:, None] - new[None, :])
    rows, cols = linear_sum_assignment(cost)
    partner = cost.argmin(axis=1)
    partner[rows] = cols
    out = dict(run)
    out["real"] = [float(x) for x in new.real[partner]]
    out["imag"] = [float(x) for x in new.imag[partner]]
    return out


def _record_spreads(records: list[Any]) -> list[dict[str, float]]:
    """Per record of a list of per-seed records: ``{key: standard deviation across the seeds of
    its group}``, a group being the records equal in every key but the seed and the floats."""
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        # the configuration: the scalar settings (text, flags, integers), not the seed nor the
        # measured (float) values nor nested values
        label = sorted(
            (k, repr(v))
            for k, v in record.items()
            if k != SEED_KEY and (v is None or isinstance(v, (str, bool, int)))
        )
        groups.setdefault(repr(label), []).append(i)
    out: list[dict[str, float]] = [{} for _ in records]
    for members in groups.values():
        if len(members) < 2:
            continue
        keys = set.intersection(*(set(records[i]) for i in members)) - {SEED_KEY}
        for key in keys:
            values = [records[i][key] for i in members]
            if all(_is_number(v) for v in values):
                spread = statistics.pstdev([float(v) for v in values])
                for i in members:
                    out[i][key] = spread
    return out


class _Comparer:
    """Walks a reference tree and a run tree side by side, filling a :class:`CheckReport`."""

    def __init__(self, report: CheckReport, envelope: Mapping[str, Any] | None = None) -> None:
        self.report = report
        envelope = envelope or {}
        self.envelope: Mapping[str, Any] = envelope.get("leaves", {})
        self.families: Mapping[str, Any] = envelope.get("families", {})

    def leaf(
        self, figure: str, path: str, ref: Any, run: Any, seed_spread: float | None = None
    ) -> None:
        rule = rule_for(path)
        if rule.skip:
            return
        bounds = self.envelope.get(path)
        family = self.families.get(leaf_family(path), {})
        if isinstance(bounds, Mapping) and "unstable" in bounds:
            self._categorical(figure, path, ref, run, bounds)
            return
        if isinstance(ref, (bool, str)) or isinstance(run, (bool, str)):
            if family.get("unstable"):
                self._categorical(figure, path, ref, run, family)
                return
            passed = ref == run and type(ref) is type(run)
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
        spread = float(family.get("spread", 0.0))
        if not (isinstance(bounds, Sequence) and len(bounds) == 4 and _is_number(bounds[0])):
            bounds = None
        if bounds is not None or spread > 0:
            self._within_envelope(figure, path, float(ref), float(run), tol, bounds, spread)
            return
        passed = abs(float(run) - float(ref)) <= tol + 1e-12
        self.report.leaves.append(LeafCheck(figure, path, ref, run, tol, desc, passed))

    def _within_envelope(
        self,
        figure: str,
        path: str,
        ref: float,
        run: float,
        floor: float,
        bounds: Sequence | None,
        family_spread: float = 0.0,
    ) -> None:
        if bounds is None:  # this leaf did not move, others of its kind did
            bounds = [ref, ref, "reference", "reference"]
        lo, hi = min(float(bounds[0]), ref), max(float(bounds[1]), ref)
        lo_from = bounds[2] if lo == float(bounds[0]) else "reference"
        hi_from = bounds[3] if hi == float(bounds[1]) else "reference"
        width = max(hi - lo, family_spread)
        margin = ENVELOPE_RANGE_FACTOR * width + floor
        low, high = lo - margin, hi + margin
        passed = low - 1e-12 <= run <= high + 1e-12
        desc = (
            f"envelope min {lo:.6g} from {lo_from}, max {hi:.6g} from {hi_from}, widened by "
            f"{ENVELOPE_RANGE_FACTOR:g} x max(range, spread of its kind {family_spread:.3g}) "
            f"+ floor {floor:.3g}"
        )
        self.report.leaves.append(
            LeafCheck(figure, path, ref, run, margin, desc, passed, low=low, high=high)
        )

    def _absent_in_envelope(self, path: str) -> str | None:
        """The envelope runs in which the leaf ``path`` (or every leaf under it) was unstable,
        as a comma-separated list, or None when the envelope says it was always there."""
        bounds = self.envelope.get(path)
        if isinstance(bounds, Mapping) and bounds.get("unstable"):
            return ", ".join(bounds.get("changed_in", [])) or "?"
        prefix = path + "/"
        under = [b for p, b in self.envelope.items() if p.startswith(prefix)]
        if under and all(isinstance(b, Mapping) and b.get("unstable") for b in under):
            return ", ".join(sorted({e for b in under for e in b.get("changed_in", [])})) or "?"
        return None

    def _categorical(
        self, figure: str, path: str, ref: Any, run: Any, bounds: Mapping[str, Any]
    ) -> None:
        if bounds.get("unstable"):
            changed = ", ".join(bounds.get("changed_in", [])) or "?"
            kind = "" if "changed_in" in bounds and "n" not in bounds else " (values of its kind)"
            desc = f"unstable: changed across the envelope runs{kind} ({changed})"
            self.report.leaves.append(
                LeafCheck(figure, path, ref, run, 0.0, desc, True, unstable=True)
            )
            return
        passed = ref == run and type(ref) is type(run)
        self.report.leaves.append(
            LeafCheck(figure, path, ref, run, 0.0, "exact (stable across the envelope)", passed)
        )

    def walk(
        self, figure: str, path: str, ref: Any, run: Any, spreads: Mapping[str, float] | None = None
    ) -> None:
        if isinstance(ref, Mapping):
            if not isinstance(run, Mapping):
                self.report.failures.append(f"{figure}: {path} is a mapping in the reference only")
                return
            self._walk_mapping(figure, path, ref, run, spreads)
        elif isinstance(ref, list):
            if not isinstance(run, list):
                self.report.failures.append(f"{figure}: {path} is a list in the reference only")
                return
            if len(ref) != len(run):
                self.report.failures.append(
                    f"{figure}: {path} has {len(run)} entries, the reference {len(ref)}"
                )
                return
            records = ref and all(isinstance(r, Mapping) and SEED_KEY in r for r in ref)
            per_record = _record_spreads(ref) if records else [None] * len(ref)
            for i, (r, v) in enumerate(zip(ref, run, strict=True)):
                self.walk(figure, f"{path}/{i}", r, v, per_record[i])
        elif isinstance(ref, str):
            if path.rsplit("/", 1)[-1] in LABEL_KEYS:
                self.leaf(figure, path, ref, run)
            elif ref != run:
                self.report.notes.append(f"{figure}: {path} changed from {ref!r} to {run!r}")
        else:
            self.leaf(figure, path, ref, run)

    def _walk_mapping(
        self,
        figure: str,
        path: str,
        ref: Mapping[str, Any],
        run: Mapping[str, Any],
        spreads: Mapping[str, float] | None = None,
    ) -> None:
        for key in run:
            if key not in ref:
                self.report.notes.append(f"{figure}: extra key {path}/{key} (not in reference)")
        seed_spreads = [s for s in (_spread_of(ref), _spread_of(run)) if s is not None]
        seed_spread = max(seed_spreads) if seed_spreads and "mean" in ref else None
        for key, ref_value in ref.items():
            child = f"{path}/{key}"
            if key not in run:
                changed = self._absent_in_envelope(child)
                if changed is None:
                    self.report.failures.append(f"{figure}: missing key {child}")
                else:  # absent in some envelope runs too: an unstable leaf, not a failure
                    desc = f"unstable: absent in some envelope runs ({changed})"
                    self.report.leaves.append(
                        LeafCheck(figure, child, ref_value, None, 0.0, desc, True, unstable=True)
                    )
                continue
            run_value = run[key]
            if key == EIGENVALUE_KEY and isinstance(ref_value, Mapping):
                run_value = match_eigenvalues(ref_value, run_value)
            if key == PER_SEED_KEY:
                self._per_seed(figure, child, ref_value, run_value)
            elif seed_spread is not None and (key == "mean" or key in SPREAD_KEYS):
                self.leaf(figure, child, ref_value, run_value, seed_spread=seed_spread)
            elif spreads and spreads.get(key) and _is_number(ref_value):
                self.leaf(figure, child, ref_value, run_value, seed_spread=spreads[key])
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


def compare_trees(
    stem: str,
    reference: Any,
    run: Any,
    report: CheckReport,
    envelope: Mapping[str, Any] | None = None,
) -> None:
    """Compare one results file's JSON tree with its reference, appending to ``report``;
    ``envelope`` maps leaf paths to their envelope (see :func:`load_envelope`)."""
    comparer = _Comparer(report, envelope)
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


def collect_leaves(stem: str, reference: Any, run: Any) -> dict[str, Any]:
    """``{leaf path: run's value}`` for every leaf :func:`compare_trees` compares (canonical
    forms applied, timings and cache flags left out): what an envelope is built from."""
    report = CheckReport(Path("."), Path("."))
    compare_trees(stem, reference, run, report)
    return {leaf.path: leaf.value for leaf in report.leaves}


def leaf_family(path: str) -> str:
    """The kind of a leaf: its results file and its last two named path components (list
    indices dropped), e.g. ``06_probing:runs/f1`` for ``06_probing/runs/12/f1``. The envelope
    pools the spread of every leaf of a kind."""
    parts = path.split("/")
    named = [p for p in parts[1:] if not p.isdigit()]
    return f"{parts[0]}:{'/'.join(named[-FAMILY_DEPTH:])}"


def load_envelope(folder: str | Path) -> dict[str, Any] | None:
    """``folder/envelope.json`` (``leaves`` and ``families``), None when there is none."""
    path = Path(folder) / ENVELOPE_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("leaves"), Mapping):
        raise ValueError(f"{path}: expected a mapping with 'leaves', got {type(data).__name__}")
    return dict(data)


def compare_results(
    reference_dir: str | Path, run_dir: str | Path, use_envelope: bool = True
) -> CheckReport:
    """Compare every ``<stem>.json`` in ``reference_dir`` with the same file in ``run_dir``,
    judging by ``reference_dir/envelope.json`` where it exists (and ``use_envelope``)."""
    reference_dir, run_dir = Path(reference_dir), Path(run_dir)
    if not reference_dir.is_dir():
        raise FileNotFoundError(f"reference folder not found: {reference_dir}")
    references = sorted(p for p in reference_dir.glob("*.json") if p.name != ENVELOPE_FILE)
    if not references:
        raise FileNotFoundError(f"no reference results (*.json) in {reference_dir}")
    report = CheckReport(reference_dir, run_dir)
    envelope = load_envelope(reference_dir) if use_envelope else None
    if envelope is not None:
        n_runs = len(envelope.get("environments", {}))
        report.envelope = (
            f"{reference_dir / ENVELOPE_FILE} ({len(envelope['leaves'])} leaves moved across "
            f"{n_runs} run(s) and the reference)"
        )
    for ref_path in references:
        stem = ref_path.stem
        run_path = run_dir / ref_path.name
        if not run_path.is_file():
            report.failures.append(f"{stem}: results file missing ({run_path})")
            continue
        compare_trees(stem, read_json(ref_path), read_json(run_path), report, envelope)
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


def publish_reference(
    mode: str, root: str | Path | None = None, source: str | Path | None = None
) -> Path:
    """Copy ``results/<mode>/*.json`` (or ``source``'s, with one level of sub-folders such as
    ``timings/``) to ``reference/<mode>/``, replacing it atomically (a stale envelope goes)."""
    if source is None:
        source = results_dir(mode) if root is None else Path(root) / "results" / mode
    source = Path(source)
    files = sorted(source.glob("*.json")) if source.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no results (*.json) to publish in {source}")
    target = reference_dir(mode, root)
    with atomic_folder(target) as staging:
        for path in [*files, *sorted(source.glob("*/*.json"))]:
            write_json_atomic(staging / path.relative_to(source), read_json(path))
    return target


def main_check(
    mode: str,
    root: str | Path | None = None,
    stream: Any = None,
    run_dir: str | Path | None = None,
    use_envelope: bool = True,
) -> int:
    """Compare ``results/<mode>`` (or ``run_dir``) with ``reference/<mode>``, print the table,
    return an exit code: 0 when every figure reproduced, 1 when some did not, 2 when there is
    nothing to compare."""
    import sys

    out = stream if stream is not None else sys.stdout
    if run_dir is not None:
        run = Path(run_dir)
    else:
        run = results_dir(mode) if root is None else Path(root) / "results" / mode
    try:
        report = compare_results(reference_dir(mode, root), run, use_envelope=use_envelope)
    except (FileNotFoundError, ValueError) as exc:
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
    "collect_leaves",
    "compare_trees",
    "leaf_family",
    "load_envelope",
    "match_eigenvalues",
    "compare_results",
    "reference_dir",
    "publish_reference",
    "main_check",
)
