"""The verdict on each of the paper's claims, computed from result records (not in notebooks).

Every function takes plain records (a list of dicts, one per trained SAE / probe / seed) and
returns a small frozen dataclass holding the numbers, with ``.sentence()`` (one paragraph of
Markdown), ``.markdown()`` (a table) and ``.to_dict()`` (JSON-ready).

**The rule** (one rule for every claim). A claim is tested at one or more *points* (a base
model and layer, a k, a number of features). At each point the per-seed paired differences
``delta_s = value(SAE, seed s) - value(baseline, seed s)`` give a mean ``m``, a sample sd ``s``
(ddof 1) and ``n`` seeds. Each point gets a two-sided paired t-test (``t = m / (s / sqrt(n))``,
``n - 1`` degrees of freedom, :func:`paired_t_pvalue`); within a claim the p-values are
Holm-adjusted (:func:`holm_adjust`), and a point's status is

- ``"positive"`` / ``"negative"``: adjusted p-value below :data:`ALPHA` (5 %), by the sign of
  ``m``;
- ``"within spread"``: not separated from zero at that level;
- ``"too few seeds"``: ``n < 2`` (no spread to judge by).

A point alone (one-point claims, and the unadjusted ``"status"`` of a :class:`PairedDelta`) has
a false-positive rate of at most 5 % when the paired differences are normal; Holm keeps the
probability that *any* point of a claim is called positive or negative when no point differs
(the per-claim false-positive rate) at most 5 % as well. The test is exact for normal
differences; ``tests/test_verdicts.py`` measures both rates on simulated null differences at
n = 3 and n = 5.

**The label** of a claim (:func:`claim_label`, the only place that maps statuses to a label):
each point also carries the *direction* that supports the paper (``"higher"``: a positive
difference is in the paper's favour; ``"lower"``: a negative one is). With ``for`` the points
separated in the paper's direction, ``against`` those separated the other way and ``N`` all
points:

- ``"not run"``: no points;
- ``"undecided (one seed)"``: no point has two seeds;
- ``"holds"``: ``for > N / 2`` and ``against == 0``;
- ``"contradicted"``: ``against > N / 2`` and ``for == 0``;
- ``"does not hold"``: ``for == 0`` (and not contradicted);
- ``"mixed"``: anything else (some points for, but not a majority, or points both ways).

Under no difference at any point, every label other than "does not hold" needs a Holm
rejection, so a claim is called anything but "does not hold" with probability at most 5 %.

**The smallest detectable difference** (:func:`min_detectable_effect`): the difference a
two-sided paired t-test at level ``ALPHA / N`` (Holm's first step) detects with 80 % power, from
the observed sd and ``n`` (noncentral t). With 3 seeds it is about 7.3 seed sd at ``N = 5``
(3.3 sd for one point): a claim whose differences are small against the seed spread cannot
be decided, and says so.

Record keys (missing keys raise a KeyError naming them):

- probing: ``model, layer, sae_type, seed, factor, probe_k, f1`` (+ optional ``features``,
  kept when equal to the ``features`` argument; ``probe_k`` is ``"all"`` or ``"k<k>"``);
- frontier: ``model, layer, sae_type, k, seed, fvu`` (+ optional ``l0``);
- planted: ``model, n_features, seed`` and the metric (e.g. ``fvu``, ``detection_f1``);
- linear representation: per (model, layer) an object or dict with ``r2_single``,
  ``r2_per_power``, ``r2_identity`` (lists indexed by the power p, p = 0 the identity).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import integrate, optimize, stats

from equisae.tables import format_number, markdown_table

POSITIVE, NEGATIVE, WITHIN, TOO_FEW = "positive", "negative", "within spread", "too few seeds"
STATUSES: tuple[str, ...] = (POSITIVE, NEGATIVE, WITHIN, TOO_FEW)
HIGHER, LOWER = "higher", "lower"
DIRECTIONS: tuple[str, ...] = (HIGHER, LOWER)
HOLDS, CONTRADICTED, NOT_HOLDS, MIXED = "holds", "contradicted", "does not hold", "mixed"
UNDECIDED, NOT_RUN = "undecided (one seed)", "not run"
LABELS: tuple[str, ...] = (HOLDS, CONTRADICTED, NOT_HOLDS, MIXED, UNDECIDED, NOT_RUN)
#: the significance level of every test (per point alone, and per claim after Holm)
ALPHA = 0.05
#: the power at which :func:`min_detectable_effect` is quoted
POWER = 0.8
RULE = "two-sided paired t-test per point, Holm-adjusted within the claim, level 0.05"
INVARIANT_FACTORS: tuple[str, ...] = ("shape", "colour", "scale")
EQUIVARIANT_PLANTED: tuple[str, ...] = ("equivariant", "adaptive")
BASELINE_PLANTED: tuple[str, ...] = ("topk", "wide", "crosscoder")
SAE_LABELS = {
    "topk": "TopK",
    "wide": "wide TopK",
    "wide_topk": "wide TopK",
    "equivariant": "fixed-M equivariant",
    "adaptive": "adaptive",
    "crosscoder": "crosscoder",
}

Record = Mapping[str, Any]


def _label(name: str) -> str:
    """The SAE class's own label (its ``label`` trait), else the short names above."""
    from equisae.sae.factory import variant_label

    try:
        return variant_label(name)
    except KeyError:
        return SAE_LABELS.get(name, name)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# --------------------------------------------------------------------------- the rule
def paired_t_pvalue(mean: float, sd: float, n: int) -> float:
    """Two-sided p-value of the paired t-test of mean difference 0 (nan for ``n < 2``).

    ``sd == 0`` (identical differences): 0 when ``mean != 0``, 1 when it is 0.
    """
    if n < 2 or not math.isfinite(mean) or not math.isfinite(sd):
        return float("nan")
    if sd <= 0.0:
        return 0.0 if mean != 0.0 else 1.0
    t = mean / (sd / math.sqrt(n))
    return float(2.0 * stats.t.sf(abs(t), df=n - 1))


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan entries stay nan and do not count in m)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out.tolist()
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def status_of(mean: float, p_value: float, alpha: float = ALPHA) -> str:
    """:data:`POSITIVE` / :data:`NEGATIVE` when ``p_value < alpha`` (by the sign of
    ``mean``), :data:`WITHIN` otherwise, :data:`TOO_FEW` when ``p_value`` is nan."""
    if not math.isfinite(p_value):
        return TOO_FEW
    if p_value < alpha:
        return POSITIVE if mean > 0 else NEGATIVE
    return WITHIN


def min_detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest absolute mean difference a two-sided paired t-test at level ``alpha``
    detects with probability ``power``, for ``n`` seeds and per-seed sd ``sd`` (nan for
    ``n < 2``)."""
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError(f"alpha and power must lie in (0, 1), got alpha={alpha}, power={power}")
    if n < 2 or not math.isfinite(sd):
        return float("nan")
    return float(_ncp_for_power(n - 1, alpha, power) * sd / math.sqrt(n))


@functools.lru_cache(maxsize=256)
def _ncp_for_power(df: int, alpha: float, power: float) -> float:
    """The noncentrality at which a two-sided t-test with ``df`` degrees of freedom at level
    ``alpha`` rejects with probability ``power``."""
    crit = float(stats.t.ppf(1.0 - alpha / 2.0, df))

    def shortfall(ncp: float) -> float:
        # power of |T| > crit for T noncentral t: integrate the normal tail over s^2 ~ chi2/df
        def tail(v: float) -> float:
            c = crit * math.sqrt(v / df)
            return float(
                stats.chi2.pdf(v, df) * (stats.norm.sf(c - ncp) + stats.norm.cdf(-c - ncp))
            )

        return integrate.quad(tail, 0.0, np.inf, limit=200)[0] - power

    hi = crit + 10.0
    while shortfall(hi) < 0:
        hi *= 2.0
    ncp = optimize.brentq(shortfall, 0.0, hi, xtol=1e-6)
    return float(ncp)


def check_direction(direction: str) -> str:
    """``direction`` if it is ``"higher"`` or ``"lower"``; a ValueError otherwise."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return direction


def orient(status: str, direction: str) -> str:
    """``"for"``, ``"against"``, ``"neither"`` (within spread) or ``"too few seeds"``: a
    status read in the paper's ``direction``."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    check_direction(direction)
    if status in (WITHIN, TOO_FEW):
        return "neither" if status == WITHIN else TOO_FEW
    good = POSITIVE if direction == HIGHER else NEGATIVE
    return "for" if status == good else "against"


def claim_label(statuses: Sequence[str], directions: Sequence[str]) -> str:
    """The label of a claim from its points' (Holm-adjusted) statuses and the direction that
    supports the paper at each point: the one rule of the module docstring."""
    if len(statuses) != len(directions):
        raise ValueError(
            f"statuses and directions must have the same length, got {len(statuses)} and "
            f"{len(directions)}"
        )
    if not statuses:
        return NOT_RUN
    sides = [orient(s, d) for s, d in zip(statuses, directions, strict=True)]
    if all(s == TOO_FEW for s in sides):
        return UNDECIDED
    n, n_for, n_against = len(sides), sides.count("for"), sides.count("against")
    if n_for > n / 2 and n_against == 0:
        return HOLDS
    if n_against > n / 2 and n_for == 0:
        return CONTRADICTED
    if n_for == 0:
        return NOT_HOLDS
    return MIXED


@dataclass(frozen=True)
class Point:
    """One point of a claim, judged: the paired difference, its test, its Holm-adjusted status
    and the direction that supports the paper. ``to_dict`` is what ``claims.json`` stores."""

    where: str
    mean: float
    sd: float
    n: int
    direction: str
    p_value: float
    p_holm: float
    status: str
    mde: float

    @property
    def side(self) -> str:
        """``"for"``, ``"against"``, ``"neither"`` or ``"too few seeds"``."""
        return orient(self.status, self.direction)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("sd", "p_value", "p_holm", "mde"):
            if not math.isfinite(out[key]):
                out[key] = None
        return out


def judge_points(
    points: Sequence[tuple[str, float, float, int]], direction: str | Sequence[str]
) -> tuple[Point, ...]:
    """Judge a claim's points ``(where, mean, sd, n)`` together: t-test, Holm over the
    claim's points, status and the smallest detectable difference at level ``ALPHA / N``."""
    directions = [direction] * len(points) if isinstance(direction, str) else list(direction)
    if len(directions) != len(points):
        raise ValueError(f"{len(points)} points need as many directions, got {len(directions)}")
    pvals = [paired_t_pvalue(float(m), float(s), int(n)) for _, m, s, n in points]
    adjusted = holm_adjust(pvals)
    m = sum(math.isfinite(p) for p in pvals) or 1
    return tuple(
        Point(
            where=str(where),
            mean=float(mean),
            sd=float(sd),
            n=int(n),
            direction=check_direction(d),
            p_value=p,
            p_holm=q,
            status=status_of(float(mean), q),
            mde=min_detectable_effect(float(sd), int(n), ALPHA / m),
        )
        for (where, mean, sd, n), d, p, q in zip(points, directions, pvals, adjusted, strict=True)
    )


def label_of(points: Sequence[Point]) -> str:
    """:func:`claim_label` of judged points."""
    return claim_label([p.status for p in points], [p.direction for p in points])


def median_mde(points: Sequence[Point]) -> float:
    """The median over a claim's points of the smallest detectable difference (nan if none)."""
    finite = [p.mde for p in points if math.isfinite(p.mde)]
    return float(np.median(finite)) if finite else float("nan")


# --------------------------------------------------------------------------- paired deltas
@dataclass(frozen=True)
class PairedDelta:
    """Per-seed paired differences (SAE minus baseline): mean, sample sd, n, positive count."""

    mean: float
    sd: float
    n: int
    n_positive: int
    seeds: tuple = ()

    @property
    def se(self) -> float:
        """Standard error of the mean difference."""
        return self.sd / np.sqrt(self.n) if self.n else float("nan")

    @property
    def p_value(self) -> float:
        """Two-sided paired t-test p-value (nan for one seed)."""
        return paired_t_pvalue(self.mean, self.sd, self.n)

    @property
    def status(self) -> str:
        """The status of this difference tested alone (level :data:`ALPHA`, no Holm)."""
        return status_of(self.mean, self.p_value)

    def cell(self, digits: int = 3) -> str:
        """``"+0.041 ± 0.007 (n=3)"`` (sd, not se); ``"+0.041 (n=1)"`` with one seed."""
        if self.n < 2:
            return f"{format_number(self.mean, digits, signed=True)} (n={self.n})"
        return (
            f"{format_number(self.mean, digits, signed=True)} ± "
            f"{format_number(self.sd, digits)} (n={self.n})"
        )


def paired_delta(values: Mapping[Any, float], baseline: Mapping[Any, float]) -> PairedDelta:
    """:class:`PairedDelta` of ``values[s] - baseline[s]`` over the seeds ``s`` both contain."""
    seeds = sorted(set(values) & set(baseline), key=str)
    if not seeds:
        raise ValueError(
            f"no seed in common: values has seeds {sorted(values, key=str)}, "
            f"baseline has {sorted(baseline, key=str)}"
        )
    d = np.array([float(values[s]) - float(baseline[s]) for s in seeds])
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    return PairedDelta(float(d.mean()), sd, int(d.size), int((d > 0).sum()), tuple(seeds))


def judge_deltas(
    deltas: Sequence[tuple[str, PairedDelta]], direction: str | Sequence[str]
) -> tuple[Point, ...]:
    """:func:`judge_points` of ``(where, PairedDelta)`` pairs."""
    return judge_points([(w, d.mean, d.sd, d.n) for w, d in deltas], direction)


def _p_cell(p: float) -> str:
    return "—" if not math.isfinite(p) else f"{p:.3f}"


def _judged(points: Sequence[Point]) -> dict[str, Any]:
    """The judged points, the label and the rule, for a verdict's ``to_dict``."""
    return {
        "points": [p.to_dict() for p in points],
        "outcome": label_of(points),
        "rule": RULE,
        "mde_median": _finite_or_none(median_mde(points)),
    }


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _require(records: Sequence[Record], keys: Sequence[str], what: str) -> None:
    if not records:
        raise ValueError(f"{what}: no records given")
    for r in records:
        missing = [k for k in keys if k not in r]
        if missing:
            raise KeyError(f"{what}: a record lacks key(s) {missing}; it has {sorted(r)}")


def _per_seed(
    records: Iterable[Record], group: Sequence[str], value: str
) -> dict[tuple, dict[Any, float]]:
    """``{group values: {seed: mean of value}}`` (several records per seed are averaged)."""
    acc: dict[tuple, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        v = r.get(value)
        if v is not None and np.isfinite(float(v)):
            acc[tuple(r[k] for k in group)][r["seed"]].append(float(v))
    return {g: {s: float(np.mean(v)) for s, v in per.items()} for g, per in acc.items()}


# --------------------------------------------------------------------------- claim 2: probing
def probe_type(probe_k: str | int | None) -> str:
    """Words for a probe size: ``"dense probe (all latents)"`` or ``"5-sparse probe"``."""
    name = _probe_k_key(probe_k)
    return "dense probe (all latents)" if name == "all" else f"{name[1:]}-sparse probe"


def _probe_k_key(probe_k: str | int | None) -> str:
    if probe_k is None or probe_k == "all":
        return "all"
    if isinstance(probe_k, str) and probe_k.startswith("k") and probe_k[1:].isdigit():
        return probe_k
    if isinstance(probe_k, (int, np.integer)) and probe_k > 0:
        return f"k{int(probe_k)}"
    raise ValueError(f"probe_k must be 'all', None, 'k<int>' or a positive int, got {probe_k!r}")


@dataclass(frozen=True)
class LayerComparison:
    """One (model, layer): the SAE's and the baseline's mean value and the paired delta."""

    model: str
    layer: str
    sae_mean: float
    baseline_mean: float
    delta: PairedDelta
    k: Any = None

    @property
    def status(self) -> str:
        """The difference tested alone (no Holm); a verdict's ``points`` hold the status
        adjusted over the claim's points, which the labels use."""
        return self.delta.status


@dataclass(frozen=True)
class ProbingVerdict:
    """Claim 2: does ``sae`` probe the ``factors`` better than ``baseline`` (F1, paired)?"""

    sae: str
    baseline: str
    probe_k: str
    factors: tuple[str, ...]
    features: str | None
    rows: tuple[LayerComparison, ...]

    @property
    def points(self) -> tuple[Point, ...]:
        """The (model, layer) pairs judged together (higher F1 supports the paper)."""
        return judge_deltas([(f"{r.model}/{r.layer}", r.delta) for r in self.rows], HIGHER)

    @property
    def outcome(self) -> str:
        """The claim's label on this probe type (:func:`claim_label`)."""
        return label_of(self.points)

    @property
    def n_better(self) -> int:
        return sum(p.side == "for" for p in self.points)

    @property
    def n_worse(self) -> int:
        return sum(p.side == "against" for p in self.points)

    @property
    def holds(self) -> bool:
        """True when the label is ``"holds"``."""
        return self.outcome == HOLDS

    @property
    def decidable(self) -> bool:
        """False when no pair has two or more seeds (no spread to judge by)."""
        return self.outcome != UNDECIDED

    def sentence(self) -> str:
        n = len(self.rows)
        rest = n - self.n_better - self.n_worse
        if not self.decidable:
            return (
                f"On a {probe_type(self.probe_k)}, F1 averaged over {', '.join(self.factors)}: "
                f"with one seed per (model, layer) there is no spread, so nothing is decided "
                f"(mean difference {_label(self.sae)} minus {_label(self.baseline)}: "
                f"{np.mean([r.delta.mean for r in self.rows]):+.3f} over {n} pairs)."
            )
        return (
            f"On a {probe_type(self.probe_k)}, F1 averaged over {', '.join(self.factors)}: the "
            f"{_label(self.sae)} SAE probes better than the {_label(self.baseline)} SAE beyond "
            f"the seed spread (paired t-test, Holm-adjusted over the pairs, 5 %) on "
            f"{self.n_better} of {n} (model, layer) pairs, worse on {self.n_worse}, and within "
            f"the spread on {rest} (smallest detectable difference about "
            f"{median_mde(self.points):.3f}); label for this probe type: {self.outcome}."
        )

    def markdown(self, digits: int = 3) -> str:
        rows = [
            {
                "model / layer": f"{r.model} / {r.layer}",
                f"F1 {_label(self.sae)}": r.sae_mean,
                f"F1 {_label(self.baseline)}": r.baseline_mean,
                "difference (mean ± sd, n)": r.delta.cell(digits),
                "p (Holm)": _p_cell(p.p_holm),
                "verdict": p.status,
            }
            for r, p in zip(self.rows, self.points, strict=True)
        ]
        return markdown_table(rows, digits=digits)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(probe_type=probe_type(self.probe_k), n_better=self.n_better)
        out.update(n_worse=self.n_worse, holds=self.holds, sentence=self.sentence())
        out.update(_judged(self.points))
        return out


def _compare(
    per_seed: Mapping[tuple, Mapping[Any, float]], sae: str, baseline: str, what: str
) -> tuple[LayerComparison, ...]:
    """Pair ``(*key, sae)`` with ``(*key, baseline)`` for every key both have."""
    rows = []
    for key in sorted({g[:-1] for g in per_seed}, key=str):
        a, b = per_seed.get((*key, sae)), per_seed.get((*key, baseline))
        if a is None or b is None:
            continue
        rows.append(
            LayerComparison(
                model=key[0],
                layer=key[1],
                sae_mean=float(np.mean(list(a.values()))),
                baseline_mean=float(np.mean(list(b.values()))),
                delta=paired_delta(a, b),
                k=key[2] if len(key) > 2 else None,
            )
        )
    if not rows:
        raise ValueError(f"{what}: no (model, layer) has records of both {sae!r} and {baseline!r}")
    return tuple(rows)


def probing_verdict(
    records: Sequence[Record],
    probe_k: str | int | None = "all",
    sae: str = "adaptive",
    baseline: str = "topk",
    factors: Sequence[str] = INVARIANT_FACTORS,
    features: str | None = "latents",
    sae_key: str = "sae_type",
) -> ProbingVerdict:
    """Claim 2 on one probe type: per (model, layer), F1 of ``sae`` minus ``baseline``,
    averaged over ``factors`` within each seed, then paired by seed (module rule)."""
    _require(records, ("model", "layer", sae_key, "seed", "factor", "probe_k", "f1"), "probing")
    pk = _probe_k_key(probe_k)
    keep = [
        r
        for r in records
        if r[sae_key] in (sae, baseline)
        and r["probe_k"] == pk
        and r["factor"] in factors
        and (features is None or r.get("features", features) == features)
    ]
    per_seed = _per_seed(keep, ("model", "layer", sae_key), "f1")
    rows = _compare(per_seed, sae, baseline, f"probing_verdict(probe_k={pk!r})")
    return ProbingVerdict(sae, baseline, pk, tuple(factors), features, rows)


# --------------------------------------------------------------------------- claim 3: frontier
_LAG_WORDS = {
    HOLDS: "lags",
    MIXED: "lags at some points",
    NOT_HOLDS: "does not lag",
    CONTRADICTED: "leads",
}


@dataclass(frozen=True)
class FrontierVerdict:
    """Claim 3: does ``sae`` lag ``baseline`` on the frontier (higher test FVU at the same k)?

    TopK-style SAEs fire exactly k latents, so equal k is matched L0 (``l0`` is kept when the
    records have it, to show it).
    """

    sae: str
    baseline: str
    rows: tuple[LayerComparison, ...]
    l0: tuple[tuple[float, float], ...] = ()

    @property
    def points(self) -> tuple[Point, ...]:
        """The (model, layer, k) points judged together (a higher FVU supports the paper)."""
        return judge_deltas([(f"{r.model}/{r.layer}, k={r.k}", r.delta) for r in self.rows], HIGHER)

    @property
    def outcome(self) -> str:
        """The claim's label (:func:`claim_label`)."""
        return label_of(self.points)

    @property
    def n_lags(self) -> int:
        """Points where the SAE's FVU is higher (worse) beyond the spread."""
        return sum(p.status == POSITIVE for p in self.points)

    @property
    def n_leads(self) -> int:
        """Points where the SAE's FVU is lower (better) beyond the spread."""
        return sum(p.status == NEGATIVE for p in self.points)

    @property
    def median_ratio(self) -> float:
        return float(np.median([r.sae_mean / r.baseline_mean for r in self.rows]))

    @property
    def lags(self) -> bool:
        """True when the label is ``"holds"`` (higher FVU beyond the spread at a majority)."""
        return self.outcome == HOLDS

    @property
    def decidable(self) -> bool:
        """False when no point has two or more seeds (no spread to judge by)."""
        return self.outcome != UNDECIDED

    def sentence(self) -> str:
        n = len(self.rows)
        if not self.decidable:
            return (
                f"With one seed per point nothing is decided for the {_label(self.sae)} SAE "
                f"against the {_label(self.baseline)} SAE (median FVU ratio "
                f"{self.median_ratio:.2f} over {n} (model, layer, k) points; lower FVU is better)."
            )
        return (
            f"The {_label(self.sae)} SAE {_LAG_WORDS[self.outcome]} the "
            f"{_label(self.baseline)} SAE on the frontier: its test FVU is higher (worse) beyond "
            f"the seed spread (paired t-test, Holm-adjusted, 5 %) at {self.n_lags} of {n} "
            f"(model, layer, k) points, lower (better) "
            f"at {self.n_leads}, and within the spread at {n - self.n_lags - self.n_leads}; "
            f"median FVU ratio {_label(self.sae)}/{_label(self.baseline)} "
            f"{self.median_ratio:.2f} (lower FVU is better); label: {self.outcome}."
        )

    def markdown(self, digits: int = 3) -> str:
        rows = [
            {
                "model / layer": f"{r.model} / {r.layer}",
                "k": r.k,
                f"FVU {_label(self.sae)}": r.sae_mean,
                f"FVU {_label(self.baseline)}": r.baseline_mean,
                "difference (mean ± sd, n)": r.delta.cell(digits),
                "p (Holm)": _p_cell(p.p_holm),
                "SAE's FVU is": {POSITIVE: "higher", NEGATIVE: "lower"}.get(p.status, p.status),
            }
            for r, p in zip(self.rows, self.points, strict=True)
        ]
        return markdown_table(rows, digits=digits)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(n_lags=self.n_lags, n_leads=self.n_leads, lags=self.lags)
        out.update(median_ratio=self.median_ratio, sentence=self.sentence())
        out.update(_judged(self.points))
        return out


def frontier_verdict(
    records: Sequence[Record],
    sae: str = "adaptive",
    baseline: str = "topk",
    k: int | None = None,
    sae_key: str = "sae_type",
) -> FrontierVerdict:
    """Claim 3: per (model, layer, k) the paired FVU difference ``sae - baseline``; positive
    means the SAE lags (higher FVU). ``k`` restricts to one sparsity."""
    _require(records, ("model", "layer", sae_key, "k", "seed", "fvu"), "frontier")
    keep = [r for r in records if r[sae_key] in (sae, baseline) and (k is None or r["k"] == k)]
    group = ("model", "layer", "k", sae_key)
    rows = _compare(_per_seed(keep, group, "fvu"), sae, baseline, "frontier_verdict")
    l0: tuple[tuple[float, float], ...] = ()
    if keep and all("l0" in r for r in keep):
        per = _per_seed(keep, group, "l0")

        def mean_l0(r: LayerComparison, t: str) -> float:
            return float(np.mean(list(per[r.model, r.layer, r.k, t].values())))

        l0 = tuple((mean_l0(r, sae), mean_l0(r, baseline)) for r in rows)
    return FrontierVerdict(sae, baseline, rows, l0)


@dataclass(frozen=True)
class ClaimVerdict:
    """The paper's combined claim per (model, layer): probes better AND lags on the frontier."""

    probing: ProbingVerdict
    frontier: FrontierVerdict
    holds: tuple[tuple[str, str, bool], ...]

    @property
    def n_holds(self) -> int:
        return sum(h for *_, h in self.holds)

    def sentence(self) -> str:
        if not (self.probing.decidable and self.frontier.decidable):
            return (
                f"The paper's claim ({_label(self.probing.sae)} SAE probes the invariant factors "
                f"better than {_label(self.probing.baseline)} while lagging on the frontier) "
                f"cannot be decided with one seed per (model, layer) on a "
                f"{probe_type(self.probing.probe_k)}."
            )
        return (
            f"The paper's claim ({_label(self.probing.sae)} SAE probes the invariant factors "
            f"better than {_label(self.probing.baseline)} while lagging on the frontier) holds on "
            f"{self.n_holds} of {len(self.holds)} (model, layer) pairs on a "
            f"{probe_type(self.probing.probe_k)}."
        )


def claim_verdict(probing: ProbingVerdict, frontier: FrontierVerdict) -> ClaimVerdict:
    """Combine claims 2 and 3 per (model, layer) (frontier: any k of that layer lagging counts
    only if every k there lags; pass ``frontier_verdict(..., k=...)`` to fix one k)."""
    lag: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for r, p in zip(frontier.rows, frontier.points, strict=True):
        lag[r.model, r.layer].append(p.status == POSITIVE)
    holds = tuple(
        (r.model, r.layer, p.status == POSITIVE and all(lag.get((r.model, r.layer), [False])))
        for r, p in zip(probing.rows, probing.points, strict=True)
    )
    return ClaimVerdict(probing, frontier, holds)


# --------------------------------------------------------------------------- planted features
@dataclass(frozen=True)
class PlantedRow:
    """One number of features: best equivariant model vs best baseline on one metric."""

    n_features: int
    ours: str
    baseline: str
    ours_mean: float
    baseline_mean: float
    delta: PairedDelta  # ours minus baseline, raw (not oriented)


@dataclass(frozen=True)
class PlantedVerdict:
    """v2's planted-feature result on one metric, with the direction stated in words."""

    metric: str
    label: str
    higher_is_better: bool
    rows: tuple[PlantedRow, ...]

    @property
    def points(self) -> tuple[Point, ...]:
        """The numbers of features judged together (the metric's better side supports v2)."""
        direction = HIGHER if self.higher_is_better else LOWER
        return judge_deltas([(f"{r.n_features} features", r.delta) for r in self.rows], direction)

    @property
    def outcome(self) -> str:
        """The claim's label on this metric (:func:`claim_label`)."""
        return label_of(self.points)

    def _better(self, row: PlantedRow) -> bool | None:
        """True/False when the gap is beyond the spread in the SAE's favour/against, else None."""
        side = self.points[self.rows.index(row)].side
        return {"for": True, "against": False}.get(side)

    @property
    def n_better(self) -> int:
        return sum(self._better(r) is True for r in self.rows)

    @property
    def n_worse(self) -> int:
        return sum(self._better(r) is False for r in self.rows)

    def row_sentence(self, row: PlantedRow, digits: int = 3) -> str:
        word = "higher" if row.delta.mean > 0 else "lower" if row.delta.mean < 0 else "equal"
        judged = self._better(row)
        quality = {True: "better", False: "worse", None: "not separated from the seed spread"}
        return (
            f"at n = {row.n_features}, {_label(row.ours)} {self.label} "
            f"{row.ours_mean:.{digits}f} vs {_label(row.baseline)} "
            f"{row.baseline_mean:.{digits}f}: {word} ({row.delta.cell(digits)}; "
            f"{quality[judged]})"
        )

    def sentence(self, digits: int = 3) -> str:
        direction = "higher" if self.higher_is_better else "lower"
        parts = "; ".join(self.row_sentence(r, digits) for r in self.rows)
        return (
            f"On {self.label} ({direction} is better), the best equivariant SAE is better than "
            f"the best baseline beyond the seed spread at {self.n_better} of {len(self.rows)} "
            f"numbers of features and worse at {self.n_worse} (paired t-test, Holm-adjusted, "
            f"5 %; label: {self.outcome}): {parts}."
        )

    def markdown(self, digits: int = 3) -> str:
        rows = [
            {
                "n features": r.n_features,
                "equivariant SAE": _label(r.ours),
                f"{self.label}, equivariant": r.ours_mean,
                "best baseline": _label(r.baseline),
                f"{self.label}, baseline": r.baseline_mean,
                "equivariant minus baseline": r.delta.cell(digits),
                "verdict": {True: "better", False: "worse", None: "within spread"}[self._better(r)],
            }
            for r in self.rows
        ]
        return markdown_table(rows, digits=digits)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(n_better=self.n_better, n_worse=self.n_worse, sentence=self.sentence())
        out.update(_judged(self.points))
        return out


def planted_verdict(
    records: Sequence[Record],
    metric: str,
    higher_is_better: bool,
    label: str | None = None,
    ours: Sequence[str] = EQUIVARIANT_PLANTED,
    baselines: Sequence[str] = BASELINE_PLANTED,
) -> PlantedVerdict:
    """Per number of features, the best (by mean) of ``ours`` against the best of ``baselines``
    on ``metric``, paired by seed. The difference is reported raw (ours minus baseline) and
    the sentence says "lower"/"higher" and "better"/"worse" explicitly: for FVU
    (``higher_is_better=False``) a negative difference is better."""
    _require(records, ("model", "n_features", "seed"), "planted")
    if not any(metric in r for r in records):
        raise KeyError(f"planted: no record has the metric {metric!r}")
    per = _per_seed(records, ("n_features", "model"), metric)
    sign = 1.0 if higher_is_better else -1.0
    rows = []
    for n in sorted({g[0] for g in per}):

        def best(models: Sequence[str], n: int = n) -> str | None:
            have = [m for m in models if (n, m) in per]
            return max(have, key=lambda m: sign * np.mean(list(per[n, m].values())), default=None)

        a, b = best(ours), best(baselines)
        if a is None or b is None:
            continue
        rows.append(
            PlantedRow(
                n_features=int(n),
                ours=a,
                baseline=b,
                ours_mean=float(np.mean(list(per[n, a].values()))),
                baseline_mean=float(np.mean(list(per[n, b].values()))),
                delta=paired_delta(per[n, a], per[n, b]),
            )
        )
    if not rows:
        raise ValueError(f"planted_verdict: need records of one of {ours} and one of {baselines}")
    return PlantedVerdict(metric, label or metric, higher_is_better, tuple(rows))


# --------------------------------------------------------------------------- claim 1: one M
def _get(result: Any, name: str) -> list[float]:
    value = result[name] if isinstance(result, Mapping) else getattr(result, name, None)
    if value is None:
        raise KeyError(f"linear-representation result lacks {name!r}")
    return [float(v) for v in value]


@dataclass(frozen=True)
class LinRepRow:
    """One (model, layer): held-out R^2 of M^p, of per-power fits M_p and of the identity."""

    model: str
    layer: str
    r2_single: tuple[float, ...]
    r2_per_power: tuple[float, ...]
    r2_identity: tuple[float, ...]

    @property
    def min_r2(self) -> float:
        """Worst R^2 of M^p over the non-trivial powers p >= 1."""
        return min(self.r2_single[1:])

    @property
    def max_gap(self) -> float:
        """Largest amount by which a per-power fit M_p beats M^p (p >= 1)."""
        return max(pp - s for pp, s in zip(self.r2_per_power[1:], self.r2_single[1:], strict=True))


@dataclass(frozen=True)
class LinRepVerdict:
    """Claim 1: one matrix M whose powers M^p map h(x) to h(g^p x)."""

    rows: tuple[LinRepRow, ...]
    r2_threshold: float
    gap_threshold: float

    def holds_for(self, row: LinRepRow) -> bool:
        return row.min_r2 >= self.r2_threshold and row.max_gap <= self.gap_threshold

    @property
    def n_holds(self) -> int:
        return sum(self.holds_for(r) for r in self.rows)

    def sentence(self) -> str:
        ident = np.mean([np.mean(r.r2_identity[1:]) for r in self.rows])
        fails = [f"`{r.model}` ({r.layer})" for r in self.rows if not self.holds_for(r)]
        tail = f" It fails at {', '.join(fails)}." if fails else ""
        return (
            f"One matrix captures the rotations (held-out $R^2$ of $M^p \\geq$ "
            f"{self.r2_threshold:g} for every power, and no per-power fit $M_p$ better by more "
            f"than {self.gap_threshold:g}) at {self.n_holds} of {len(self.rows)} (model, layer) "
            f"pairs; leaving the activation unchanged (identity) scores a mean $R^2$ of "
            f"{ident:.3f}.{tail}"
        )

    def markdown(self, digits: int = 4) -> str:
        rows = [
            {
                "model / layer": f"{r.model} / {r.layer}",
                "min R² of M^p": r.min_r2,
                "max gain of M_p": r.max_gap,
                "mean R² identity": float(np.mean(r.r2_identity[1:])),
                "one matrix": "yes" if self.holds_for(r) else "no",
            }
            for r in self.rows
        ]
        return markdown_table(rows, digits=digits)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(n_holds=self.n_holds, sentence=self.sentence())
        return out


def linear_representation_verdict(
    results: Mapping[Any, Any], r2_threshold: float = 0.99, gap_threshold: float = 0.01
) -> LinRepVerdict:
    """Claim 1 from ``{(model, layer) or "model/layer": result}``; ``result`` has ``r2_single``,
    ``r2_per_power`` and ``r2_identity`` indexed by power (attributes or keys)."""
    if not results:
        raise ValueError("linear_representation_verdict: no results given")
    rows = []
    for key, res in results.items():
        model, layer = key if isinstance(key, tuple) else str(key).split("/", 1)
        single, per_power = _get(res, "r2_single"), _get(res, "r2_per_power")
        identity = _get(res, "r2_identity")
        if len(single) < 2 or len(single) != len(per_power):
            raise ValueError(
                f"{model}/{layer}: r2_single and r2_per_power need the same length >= 2 "
                f"(p = 0 first), got {len(single)} and {len(per_power)}"
            )
        rows.append(LinRepRow(model, layer, tuple(single), tuple(per_power), tuple(identity)))
    return LinRepVerdict(tuple(rows), r2_threshold, gap_threshold)
