"""The claims registry: one typed entry per claim of the ledger.

Each :class:`ClaimSpec` names the claim, quotes the paper (v1 or v2), says what the test covers
(``scope``), names the notebook that computes it, lists the exact results keys it reads
(:class:`~equisae.ledger.results.Read`) and the builder that turns those values into the entry
(:mod:`equisae.ledger.claims`). Adding a claim is one entry here plus its test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from equisae.ledger import claims as build
from equisae.ledger.results import Read

__all__ = ["CLAIMS", "ClaimSpec", "claim_spec"]


@dataclass(frozen=True)
class ClaimSpec:
    """One claim of the ledger (see the module docstring)."""

    id: str
    title: str
    paper: str
    statement: str
    notebook: str
    scope: str
    reads: tuple[Read, ...]
    build: Callable[[Any, Mapping[str, Any]], dict[str, Any]]

    def __post_init__(self) -> None:
        if self.paper not in ("v1", "v2"):
            raise ValueError(
                f"ClaimSpec {self.id!r}: paper must be 'v1' or 'v2', got {self.paper!r}"
            )
        names = [r.name for r in self.reads]
        if len(set(names)) != len(names):
            raise ValueError(f"ClaimSpec {self.id!r}: read names must be unique, got {names}")

    def inputs(self, loaded: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
        """``{read name: value or None}`` from the loaded results files."""
        return {r.name: r.value(loaded) for r in self.reads}

    def missing(self, inputs: Mapping[str, Any]) -> list[str]:
        """The addresses of the required reads that are absent."""
        return [r.address for r in self.reads if r.required and inputs.get(r.name) is None]


_CLAIM1 = (
    "Autoencoders trained on images with 90-degree rotational symmetry (C4) have activations "
    "that transform by a single linear map, h(gx) ≈ M h(x); rotating by g^p is explained by "
    "M^p (fit quality reported as R²)."
)
_CLAIM2 = (
    "Adaptively equivariant SAEs, which learn M together with an SAE whose latents are "
    "invariant to the group, adapt to the base model's actual level of equivariance."
)
_CLAIM3A = (
    "Their features give better probing (classification F1 on held-out data) than a regular "
    "SAE's ..."
)
_CLAIM3B = "... although they lag on the reconstruction-sparsity frontier."
_CLAIM3 = (
    "Adaptive SAE features probe better than a regular SAE's although they lag on the frontier "
    "(both halves at once, per base-model layer)."
)
_PLANTED = (
    "In a toy setting with planted ground-truth features, equivariant SAEs recover and detect "
    "features better than regular SAEs, wider SAEs and group crosscoders, increasingly so as "
    "interference grows."
)
_REAL = "The findings carry over from synthetic shapes to real images (v2: galaxy and cell images)."
_D4 = "The construction extends beyond C4 (here: the dihedral group D4, rotations and flips)."
_DIGITS_SCOPE = (
    "scikit-learn's bundled 8×8 digits, a stand-in for the paper's galaxy and cell images "
    "(which are not reproduced)"
)
#: the sparse probe size the ledger's sparse-probe lines rest on (in both modes' probe sizes)
SPARSE = "k5"

N03, N04, N05, N06 = (
    "03_linear_representation",
    "04_planted_features",
    "05_frontier",
    "06_probing",
)
N07, N08, N09 = "07_digits", "08_dihedral", "09_gallery"


def _probing_reads(pk: str) -> tuple[Read, ...]:
    reads = [
        Read("verdict", N06, ("verdicts", f"adaptive/{pk}")),
        Read("canonical", N06, ("verdicts", f"adaptive_canonical/{pk}"), required=False),
        Read("runs", N06, ("runs",)),
        Read("probe_k", N06, ("probe_k",), required=False),
        Read("n_rows", N06, ("n_rows",), required=False),
    ]
    if pk != "all":  # the other sparse sizes: variants of the sparse line, not lines of their own
        reads += [
            Read(f"also_{k}", N06, ("verdicts", f"adaptive/{k}"), required=False)
            for k in ("k1", "k2", "k16")
        ]
    return tuple(reads)


def _both_reads(pk: str) -> tuple[Read, ...]:
    return (
        Read("probing", N06, ("verdicts", f"adaptive/{pk}")),
        Read("frontier", N06, ("frontier_at_probe_k",)),
        Read("runs", N06, ("runs",)),
        Read("probe_k", N06, ("probe_k",), required=False),
        Read("n_rows", N06, ("n_rows",), required=False),
    )


def _planted_reads(metric: str) -> tuple[Read, ...]:
    return (
        Read("verdict", N04, ("verdicts", f"raw/{metric}")),
        Read("canonical", N04, ("verdicts", f"canonical/{metric}"), required=False),
        Read("settings", N04, ("settings",), required=False),
    )


def _digits_reads(*path: str) -> tuple[Read, ...]:
    return (Read("verdict", N07, path), Read("settings", N07, ("settings",), required=False))


#: Every claim of the ledger, in the order the claims page shows them.
CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec(
        "claim-1",
        "Claim 1: one matrix M",
        "v1",
        _CLAIM1,
        N03,
        "the five Shapes base models, bottleneck and intermediate layer, one fit each",
        (Read("models", N03, ("models",)), Read("group", N03, ("group",), required=False)),
        build.one_matrix,
    ),
    ClaimSpec(
        "claim-1-representation",
        "Claim 1: is M a representation of C4?",
        "v1",
        _CLAIM1,
        N03,
        "the same fits: ‖M⁴ − I‖ and the eigenvalues of M against the 4th roots of unity",
        (Read("models", N03, ("models",)),),
        build.representation,
    ),
    ClaimSpec(
        "claim-2-planted",
        "Claim 2: the adaptive M finds a planted representation",
        "v1",
        _CLAIM2,
        N04,
        "the planted toy setting only (known R, M started at I)",
        (Read("runs", N04, ("runs",)),),
        build.learned_m_planted,
    ),
    ClaimSpec(
        "claim-2-base-models",
        "Claim 2: the adaptive M on the base models",
        "v1",
        _CLAIM2,
        N05,
        "the Shapes base models: the learned M against the least-squares fit it started from",
        (Read("learned", N05, ("learned_generators",)),),
        build.learned_m_base_models,
    ),
    ClaimSpec(
        "claim-3a-dense",
        "Claim 3a: better probing, dense probe",
        "v1",
        _CLAIM3A,
        N06,
        "Shapes bottlenecks; invariant factors; dense probes on all latents",
        _probing_reads("all"),
        build.probing,
    ),
    ClaimSpec(
        "claim-3a-sparse",
        "Claim 3a: better probing, sparse probe",
        "v1",
        _CLAIM3A,
        N06,
        "Shapes bottlenecks; invariant factors; 5-sparse probes (other sizes as variants)",
        _probing_reads(SPARSE),
        build.probing,
    ),
    ClaimSpec(
        "claim-3b",
        "Claim 3b: lags on the frontier",
        "v1",
        _CLAIM3B,
        N05,
        "Shapes bottlenecks; test FVU at equal k (matched L0)",
        (
            Read("verdict", N05, ("verdicts", "adaptive_vs_topk")),
            Read("canonical", N05, ("verdicts", "adaptive_canonical_vs_topk"), required=False),
            Read("grid", N05, ("grid",), required=False),
            Read("runs", N05, ("runs",), required=False),
            Read("doubling", N05, ("doubling",), required=False),
            Read("doubling_ratios", N05, ("doubling_fvu_ratios",), required=False),
        ),
        build.frontier,
    ),
    ClaimSpec(
        "claim-3-dense",
        "Claim 3: both halves at once, dense probe",
        "v1",
        _CLAIM3,
        N06,
        "Shapes bottlenecks at the probing k; dense probes",
        _both_reads("all"),
        build.both_halves,
    ),
    ClaimSpec(
        "claim-3-sparse",
        "Claim 3: both halves at once, sparse probe",
        "v1",
        _CLAIM3,
        N06,
        "Shapes bottlenecks at the probing k; 5-sparse probes",
        _both_reads(SPARSE),
        build.both_halves,
    ),
    ClaimSpec(
        "claim-3-features",
        "Claim 3: better features, read off the latents",
        "v1",
        _CLAIM3A,
        N09,
        "the key Shapes bottlenecks; adaptive SAE minus TopK at the probing k; orbit invariance, "
        "duplication across poses and monosemanticity of the alive latents",
        (
            Read("records", N09, ("purity_records",)),
            Read("thresholds", N09, ("thresholds",), required=False),
        ),
        build.feature_purity,
    ),
    ClaimSpec(
        "planted-recovery",
        "v2: planted features, recovery",
        "v2",
        _PLANTED,
        N04,
        "the planted toy setting (C4)",
        _planted_reads("recovery"),
        build.planted,
    ),
    ClaimSpec(
        "planted-detection",
        "v2: planted features, detection F1",
        "v2",
        _PLANTED,
        N04,
        "the planted toy setting (C4)",
        _planted_reads("detection_f1"),
        build.planted,
    ),
    ClaimSpec(
        "digits-one-matrix",
        "v2 on 8×8 digits: one matrix M",
        "v2",
        _REAL,
        N07,
        _DIGITS_SCOPE,
        _digits_reads("linrep_verdict"),
        build.digits_one_matrix,
    ),
    ClaimSpec(
        "digits-frontier",
        "v2 on 8×8 digits: lags on the frontier",
        "v2",
        _REAL,
        N07,
        _DIGITS_SCOPE,
        _digits_reads("frontier_verdicts", "adaptive"),
        build.digits_frontier,
    ),
    ClaimSpec(
        "digits-probing-dense",
        "v2 on 8×8 digits: better probing, dense probe",
        "v2",
        _REAL,
        N07,
        _DIGITS_SCOPE + "; digit class; dense probes",
        (
            *_digits_reads("probing_verdicts", "adaptive/all/digit"),
            Read("without_6_9", N07, ("probing_verdicts", "adaptive/all/digit_without_6_9"), False),
        ),
        build.digits_probing,
    ),
    ClaimSpec(
        "digits-probing-sparse",
        "v2 on 8×8 digits: better probing, sparse probe",
        "v2",
        _REAL,
        N07,
        _DIGITS_SCOPE + "; digit class; 5-sparse probes",
        (
            *_digits_reads("probing_verdicts", f"adaptive/{SPARSE}/digit"),
            Read(
                "without_6_9",
                N07,
                ("probing_verdicts", f"adaptive/{SPARSE}/digit_without_6_9"),
                False,
            ),
        ),
        build.digits_probing,
    ),
    ClaimSpec(
        "d4-planted",
        "v2 beyond C4: planted features under D4",
        "v2",
        _D4,
        N08,
        "the planted toy setting under D4",
        (
            Read("verdict", N08, ("planted", "verdict")),
            Read("settings", N08, ("planted", "settings"), required=False),
        ),
        build.dihedral_planted,
    ),
    ClaimSpec(
        "d4-probing-dense",
        "v2 beyond C4: D4 against C4, dense probe",
        "v2",
        _D4,
        N08,
        "the key Shapes bottlenecks; adaptive SAE under D4 minus under C4; dense probes",
        (Read("verdict", N08, ("verdicts", "adaptive/all")),),
        build.dihedral_probing,
    ),
    ClaimSpec(
        "d4-probing-sparse",
        "v2 beyond C4: D4 against C4, sparse probe",
        "v2",
        _D4,
        N08,
        "the key Shapes bottlenecks; adaptive SAE under D4 minus under C4; 5-sparse probes",
        (Read("verdict", N08, ("verdicts", f"adaptive/{SPARSE}")),),
        build.dihedral_probing,
    ),
)


def claim_spec(claim_id: str) -> ClaimSpec:
    """The registry entry ``claim_id`` (KeyError listing the ids)."""
    for spec in CLAIMS:
        if spec.id == claim_id:
            return spec
    raise KeyError(f"unknown claim {claim_id!r}; known: {[s.id for s in CLAIMS]}")
