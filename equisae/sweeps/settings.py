"""The grid of every named sweep per mode, sized by :mod:`equisae.modes`.

Every setting that changes a job's output is a field of a frozen dataclass that is part of the
job, so artifacts are keyed by everything that made them. ``quick`` is the CI configuration
(one seed, short training: it shows that the pipeline runs, not what the findings are);
``full`` is the published one (3 seeds, converged SAEs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from equisae.modes import SWEEP_SAE_TYPES, check_mode, get_mode

__all__ = [
    "LAYER_ROLES",
    "REPRESENTATIVES",
    "ProbeSettings",
    "SAETraining",
    "SweepSettings",
    "check_choice",
    "extended_settings",
    "sweep_settings",
]

LAYER_ROLES: tuple[str, ...] = ("bottleneck", "intermediate")
#: the Method page: the canonical representative is ``fixed`` (the paper's main setting) by default,
#: ``random`` in the appendix setting.
REPRESENTATIVES: tuple[str, ...] = ("fixed", "random")


def check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``; a ValueError naming the argument otherwise."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


@dataclass(frozen=True)
class SAETraining:
    """How an SAE of a sweep is sized and trained (part of every SAE job's hash)."""

    n_steps: int = 4000
    batch_size: int = 256  # activations per step; orbit SAEs take batch_size // |G| orbits
    #: Adam's peak learning rate: 4e-3 reaches in 4000 steps the test FVU that 1e-3 reaches in
    #: about 10,000 (TopK and adaptive SAEs on cnn_augmented/bottleneck); 1e-2 is no faster
    #: and ends higher (a study on that one target; notebook 05's doubling test checks the
    #: training length on the key targets)
    lr: float = 4e-3
    expansion: int = 4  # d_sae = expansion * d_in, capped at max_d_sae
    max_d_sae: int = 256
    lambda_inv: float = 1.0
    lambda_eq: float = 1.0
    #: points of the loss curve kept in the results (for the convergence figure)
    curve_points: int = 40

    def __post_init__(self) -> None:
        for name in ("n_steps", "batch_size", "expansion", "max_d_sae", "curve_points"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SAETraining.{name} must be a positive integer, got {value!r}")
        for name in ("lr", "lambda_inv", "lambda_eq"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)) or (name == "lr" and value == 0):
                raise ValueError(f"SAETraining.{name} must be a finite number >= 0, got {value!r}")

    def d_sae(self, d_in: int) -> int:
        """Dictionary size for activations of dimension ``d_in``."""
        return min(self.expansion * d_in, self.max_d_sae)


@dataclass(frozen=True)
class ProbeSettings:
    """Which factors are probed, with which probe sizes, on how much data.

    ``probe_ks``: None is the dense probe (all latents); an int ``k`` is a k-sparse probe on the
    ``k`` latents with the largest class-mean difference on the training split (SAEBench).
    ``factors`` include ``pose``, the orbit index ``p``: on invariant latents it is the leakage
    probe (it should sit at chance).
    """

    factors: tuple[str, ...] = ("shape", "colour", "scale", "quadrant", "orientation", "pose")
    probe_ks: tuple[int | None, ...] = (None, 1, 2, 5, 16)
    c_grid: tuple[float, ...] = (0.01, 0.1, 1.0)
    max_orbits: tuple[int, int, int] = (600, 200, 400)  # train, val, test orbits (x |G| rows)
    max_iter: int = 200
    tol: float = 1e-3
    #: factors also probed on latents + one-hot inferred pose (equivariant SAEs only)
    pose_factors: tuple[str, ...] = ("quadrant", "orientation")
    subsample_seed: int = 0

    def __post_init__(self) -> None:
        if not self.factors:
            raise ValueError("ProbeSettings.factors must name at least one factor")
        if len(self.max_orbits) != 3 or any(n < 1 for n in self.max_orbits):
            raise ValueError(
                f"ProbeSettings.max_orbits must be 3 positive ints, got {self.max_orbits}"
            )


@dataclass(frozen=True)
class SweepSettings:
    """The grid of one mode.

    * ``frontier``: every (target, SAE type, k) with all ``seeds`` trained as one batched job.
    * ``probing``: the SAEs at ``probe_k`` (matched L0), probed with every probe size, plus raw
      activations and random-dictionary references.
    * ``setting``: ``setting_types`` at ``probe_k`` on ``setting_targets`` with the *random*
      representative (the paper's appendix setting) next to the default fixed one.
    * ``lambda_inv``: the adaptive SAE at ``lambda_inv_values`` on ``lambda_inv_targets``.
    * ``setting`` also trains ``length_types`` for only ``short_steps`` steps (fixed
      representative), to measure what training length does to the verdict.
    """

    mode: str
    targets: tuple[tuple[str, str], ...]
    sae_types: tuple[str, ...]
    ks: tuple[int, ...]
    seeds: tuple[int, ...]
    probe_k: int
    training: SAETraining
    probing: ProbeSettings
    intermediate_ks: tuple[int, ...] | None = None
    #: SAE types trained only on ``variant_targets`` (the canonicalising variants: an ablation
    #: of the encoder, not a separate model family); empty: every type on every target
    variant_types: tuple[str, ...] = ()
    variant_targets: tuple[tuple[str, str], ...] = ()
    #: targets that get the whole k sweep; the others only ``probe_k`` (matched L0). Empty:
    #: every target gets the whole sweep
    curve_targets: tuple[tuple[str, str], ...] = ()
    reference_seeds: tuple[int, ...] = (0,)
    data_seed: int = 0
    representative: str = "fixed"
    setting_targets: tuple[tuple[str, str], ...] = ()
    setting_types: tuple[str, ...] = ("topk", "equivariant", "adaptive")
    lambda_inv_targets: tuple[tuple[str, str], ...] = ()
    lambda_inv_values: tuple[float, ...] = (0.1, 1.0, 10.0)
    lambda_inv_types: tuple[str, ...] = ("adaptive",)
    #: shorter training runs of ``length_types`` on ``setting_targets`` (the training-length
    #: ablation of the claims ledger)
    short_steps: int = 300
    length_types: tuple[str, ...] = ("topk", "adaptive")
    #: the C4 vs D4 comparison (notebook 08): ``group_types`` at ``probe_k`` on
    #: ``group_targets`` under every group of ``groups``, all seeds, probed
    group_targets: tuple[tuple[str, str], ...] = ()
    group_types: tuple[str, ...] = ("topk", "equivariant", "adaptive")
    groups: tuple[str, ...] = ("C4", "D4")
    #: the doubling test of convergence (notebook 05): every SAE type at ``probe_k`` on
    #: ``convergence_targets`` retrained for ``convergence_factor`` x ``n_steps`` steps with
    #: ``convergence_seeds``; what a longer training still changes is the evidence that
    #: ``n_steps`` suffice
    convergence_targets: tuple[tuple[str, str], ...] = ()
    #: targets outside the published grid, run by ``equisae extended`` (the 512-wide
    #: intermediate layers): :mod:`equisae.sweeps.extended`
    extended_targets: tuple[tuple[str, str], ...] = ()
    convergence_factor: int = 2
    convergence_seeds: tuple[int, ...] = (0,)
    #: the A/A test of the verdict rule (:mod:`equisae.sweeps.aa`, notebook 06): ``aa_types`` at
    #: ``probe_k`` on ``aa_targets`` trained under two disjoint seed sets and probed; set A is
    #: the published seeds (its SAEs and probes come from the probing sweep's cache)
    aa_targets: tuple[tuple[str, str], ...] = ()
    aa_types: tuple[str, ...] = ("topk", "adaptive")
    aa_seeds_a: tuple[int, ...] = ()
    aa_seeds_b: tuple[int, ...] = ()
    #: the base-seeds sweep (:mod:`equisae.sweeps.base_seeds`, notebook 06): ``base_seed_types``
    #: at ``probe_k`` on ``base_seed_targets`` under every SAE seed of ``seeds``, on the data
    #: and base models of each data seed of ``base_seeds``; data seed ``data_seed`` is the
    #: published one, whose SAEs and probes come from the probing sweep's cache
    base_seed_targets: tuple[tuple[str, str], ...] = ()
    base_seed_types: tuple[str, ...] = ("topk", "adaptive")
    base_seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_mode(self.mode)
        check_choice("representative", self.representative, REPRESENTATIVES)
        if self.probe_k not in self.ks:
            raise ValueError(f"probe_k={self.probe_k} must be one of ks={self.ks}")
        if not isinstance(self.convergence_factor, int) or self.convergence_factor < 2:
            raise ValueError(
                f"convergence_factor must be an int >= 2, got {self.convergence_factor!r}"
            )
        if set(self.aa_seeds_a) & set(self.aa_seeds_b):
            raise ValueError(
                f"aa_seeds_a {self.aa_seeds_a} and aa_seeds_b {self.aa_seeds_b} must be disjoint"
            )
        if len(self.aa_seeds_a) != len(self.aa_seeds_b):
            raise ValueError(
                f"aa_seeds_a {self.aa_seeds_a} and aa_seeds_b {self.aa_seeds_b} must have the "
                "same length (they are paired by rank)"
            )
        bad = [s for s in self.base_seeds if isinstance(s, bool) or not isinstance(s, int)]
        if bad or any(s < 0 for s in self.base_seeds):
            raise ValueError(f"base_seeds must be non-negative ints, got {self.base_seeds}")
        if len(set(self.base_seeds)) != len(self.base_seeds):
            raise ValueError(f"base_seeds must be distinct, got {self.base_seeds}")
        if not set(self.convergence_seeds) <= set(self.seeds):
            raise ValueError(
                f"convergence_seeds {self.convergence_seeds} must be among seeds {self.seeds}"
            )

    @property
    def long_training(self) -> SAETraining:
        """The training of the doubling test: ``convergence_factor`` x ``n_steps`` steps."""
        return replace(self.training, n_steps=self.convergence_factor * self.training.n_steps)

    def types_for(self, model: str, layer: str) -> tuple[str, ...]:
        """The SAE types trained on (model, layer): every type, except that ``variant_types``
        run only on ``variant_targets``."""
        if (model, layer) in self.variant_targets:
            return self.sae_types
        return tuple(t for t in self.sae_types if t not in self.variant_types)

    def ks_for_target(self, model: str, layer: str) -> tuple[int, ...]:
        """The k values trained on (model, layer): the layer's sweep on ``curve_targets`` (or
        everywhere when it is empty), otherwise ``probe_k`` alone."""
        if self.curve_targets and (model, layer) not in self.curve_targets:
            return (self.probe_k,)
        return self.ks_for(layer)

    def ks_for(self, layer: str) -> tuple[int, ...]:
        """The k sweep of a layer (always containing ``probe_k``)."""
        if layer == "intermediate" and self.intermediate_ks is not None:
            return self.intermediate_ks
        return self.ks

    def with_data_seed(self, data_seed: int | None) -> SweepSettings:
        """These settings on the data and base models of ``data_seed`` (None: unchanged)."""
        if data_seed is None:
            return self
        if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
            raise ValueError(f"data_seed must be a non-negative int, got {data_seed!r}")
        return replace(self, data_seed=data_seed)


def sweep_settings(mode: str) -> SweepSettings:
    """The grid per mode.

    ``full``: the bottleneck of all five base models at k = 8 (matched L0), with the whole frontier
    (k in {4, 8, 16}) on the two key bottlenecks (``cnn_augmented``, ``gcnn``); every SAE type
    (the canonicalising variants on the two key bottlenecks only), 3 seeds,
    4000 steps at learning rate 4e-3 (notebook 05's doubling test: 8000 steps change the test FVU
    by a few percent); probes at k = 8 with dense and
    1-, 2-, 5-, 16-sparse probes; the random-representative comparison and the lambda_inv curve
    on ``cnn_augmented``/bottleneck and ``gcnn``/bottleneck; the A/A test: TopK and adaptive
    SAEs on every target under seeds (3, 4, 5) against the published (0, 1, 2); the base-seeds
    sweep: TopK and adaptive SAEs on the two key bottlenecks over the data and base models of
    data seeds 0 (published), 1 and 2. ``quick``: two bottlenecks, k in {4, 16}, one seed, 300
    steps: it shows that everything runs (the A/A test: 2 + 2 seeds on both; the base-seeds
    sweep: data seeds 0 and 1 on ``cnn_augmented``/bottleneck).
    """
    from equisae.models import MODEL_NAMES

    sizes = get_mode(mode).sweep
    training = SAETraining(
        n_steps=sizes.n_steps,
        batch_size=sizes.batch_size,
        max_d_sae=sizes.max_d_sae,
        curve_points=sizes.curve_points,
    )
    probing = ProbeSettings(
        probe_ks=sizes.probe_ks,
        c_grid=sizes.c_grid,
        max_orbits=sizes.max_orbits,
        max_iter=sizes.probe_max_iter,
    )
    sized = dict(
        mode=mode,
        sae_types=SWEEP_SAE_TYPES,
        ks=sizes.ks,
        intermediate_ks=sizes.intermediate_ks,
        seeds=sizes.seeds,
        probe_k=sizes.probe_k,
        reference_seeds=sizes.reference_seeds,
        training=training,
        short_steps=sizes.short_steps,
        probing=probing,
        aa_seeds_a=sizes.aa_seeds_a,
        aa_seeds_b=sizes.aa_seeds_b,
        base_seeds=sizes.base_seeds,
    )
    key_targets = (("cnn_augmented", "bottleneck"), ("gcnn", "bottleneck"))
    if mode == "full":
        # The 512-wide intermediate layers cost several times a bottleneck job per SAE (the
        # equivariant SAEs multiply by 512 x 512 matrices per pose): they are in the extended
        # sweep (``extended_settings``), not in the published full run.
        targets = tuple((m, "bottleneck") for m in MODEL_NAMES)
        return SweepSettings(
            **sized,
            targets=targets,
            variant_types=("equivariant_canonical", "adaptive_canonical"),
            variant_targets=key_targets,
            curve_targets=key_targets,
            setting_targets=key_targets,
            lambda_inv_targets=key_targets,
            group_targets=key_targets,
            convergence_targets=key_targets,
            extended_targets=tuple((m, "intermediate") for m, _ in key_targets),
            aa_targets=targets,
            base_seed_targets=key_targets,
        )
    return SweepSettings(
        **sized,
        targets=key_targets,
        setting_targets=key_targets[:1],
        lambda_inv_targets=key_targets[:1],
        group_targets=key_targets[:1],
        convergence_targets=key_targets[:1],
        extended_targets=(("cnn_augmented", "intermediate"),),
        aa_targets=key_targets,
        base_seed_targets=key_targets[:1],
    )


def extended_settings(data_seed: int = 0) -> SweepSettings:
    """The full grid plus its ``extended_targets`` (the 512-wide intermediate layers of
    ``cnn_augmented`` and ``gcnn``, k = 8): ``equisae extended`` runs the added targets
    (:mod:`equisae.sweeps.extended`), whose cost does not fit the budget of ``full``."""
    full = sweep_settings("full")
    return replace(full, targets=full.targets + full.extended_targets, data_seed=data_seed)
