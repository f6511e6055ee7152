"""Every size of the two run modes, ``quick`` and ``full``, in one place.

``quick`` is the CI configuration (one or two seeds, short training: it shows that everything
runs, not what the findings are); ``full`` is the published one. Each mode is one frozen
:class:`Mode` holding one typed group of sizes per part of the project; the settings functions
of those parts (:func:`equisae.data.dataset_sizes`, :func:`equisae.models.training_settings`,
:func:`equisae.sweeps.settings.sweep_settings`, :func:`equisae.sweeps.planted.planted_settings`,
:func:`equisae.sources.pipeline.study_settings`, ...) read them from here. A new size goes in
here, as a field of the group it belongs to, with its value for both modes.

This module imports nothing of the project, so every other module may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "EVAL_ORBITS",
    "FULL",
    "MODES",
    "QUICK",
    "SWEEP_SAE_TYPES",
    "BaseTrainingSizes",
    "DataSizes",
    "ImageRunSizes",
    "Mode",
    "PlantedSizes",
    "StudySizes",
    "SweepSizes",
    "check_mode",
    "get_mode",
]

#: The run modes, in order of size.
MODES: tuple[str, ...] = ("quick", "full")

#: Every SAE type of the sweeps, in plotting order (names of :mod:`equisae.sae.factory`): the
#: family the paper compares (BatchTopK is in the library but not in the comparisons). The same
#: in both modes.
SWEEP_SAE_TYPES: tuple[str, ...] = (
    "topk",
    "wide",
    "crosscoder",
    "equivariant",
    "adaptive",
    "equivariant_canonical",
    "adaptive_canonical",
)

#: Test orbits on which the sweeps' SAEs are scored (FVU, L0, equivariance): the same in both
#: modes (a subsample under seed 0 when the test split has more).
EVAL_ORBITS: int = 500


def check_mode(mode: str, name: str = "mode") -> str:
    """``mode`` if it is one of :data:`MODES`; a ValueError naming ``name`` otherwise."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{name} must be one of {MODES}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class DataSizes:
    """The Shapes splits (:func:`equisae.data.dataset_sizes`) and the rendering benchmark."""

    train: int
    val: int
    test: int
    #: images a rendering-speed measurement draws (:func:`equisae.data.benchmark_size`)
    benchmark: int

    def splits(self) -> dict[str, int]:
        """``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class BaseTrainingSizes:
    """How long the base autoencoders train (:func:`equisae.models.training_settings`)."""

    epochs: int
    batch_size: int


@dataclass(frozen=True)
class SweepSizes:
    """The sizes of the Shapes sweeps (:func:`equisae.sweeps.settings.sweep_settings`).

    Which targets each part of the grid runs on is the sweep's structure, written there; these
    are how many k, seeds, steps and probe examples it uses.
    """

    ks: tuple[int, ...]
    #: the k sweep of the intermediate layers (None: the same as ``ks``)
    intermediate_ks: tuple[int, ...] | None
    seeds: tuple[int, ...]
    probe_k: int
    reference_seeds: tuple[int, ...]
    n_steps: int
    batch_size: int
    max_d_sae: int
    curve_points: int
    short_steps: int
    probe_ks: tuple[int | None, ...]
    c_grid: tuple[float, ...]
    max_orbits: tuple[int, int, int]
    probe_max_iter: int
    aa_seeds_a: tuple[int, ...]
    aa_seeds_b: tuple[int, ...]
    #: the data seeds (data and base-model initialisation) of the base-seeds sweep
    base_seeds: tuple[int, ...]


@dataclass(frozen=True)
class PlantedSizes:
    """One planted-features sweep (:func:`equisae.sweeps.planted.planted_settings`)."""

    d: int
    feature_counts: tuple[int, ...]
    seeds: tuple[int, ...]
    n_train: int
    n_test: int
    n_steps: int
    batch_size: int


@dataclass(frozen=True)
class StudySizes:
    """The image-source study of notebook 07 (:func:`equisae.sources.pipeline.study_settings`)."""

    ks: tuple[int, ...]
    seeds: tuple[int, ...]
    probe_k: int
    epochs: int
    n_steps: int
    max_d_sae: int
    expansion: int
    max_probe_orbits: tuple[int, int, int]
    eval_orbits: int
    c_grid: tuple[float, ...]
    probe_max_iter: int


@dataclass(frozen=True)
class ImageRunSizes:
    """One run of ``equisae images`` (:func:`equisae.sources.pipeline.run_sizes`)."""

    epochs: int
    sae_steps: int
    d_sae: int
    k: int
    probe_ks: tuple[int | None, ...]


@dataclass(frozen=True)
class Mode:
    """Every size of one run mode."""

    name: str
    data: DataSizes
    base_training: BaseTrainingSizes
    sweep: SweepSizes
    planted: PlantedSizes
    #: the planted problem of notebook 08 (D4 against C4)
    dihedral: PlantedSizes
    study: StudySizes
    images: ImageRunSizes

    def __post_init__(self) -> None:
        check_mode(self.name, "Mode.name")


QUICK = Mode(
    name="quick",
    data=DataSizes(train=2000, val=500, test=500, benchmark=5_000),
    base_training=BaseTrainingSizes(epochs=2, batch_size=32),
    sweep=SweepSizes(
        ks=(4, 16),
        intermediate_ks=None,
        seeds=(0,),
        probe_k=4,
        reference_seeds=(0,),
        n_steps=300,
        batch_size=256,
        max_d_sae=256,
        curve_points=20,
        short_steps=100,
        probe_ks=(None, 1, 5),
        c_grid=(0.1, 1.0),
        max_orbits=(150, 75, 100),
        probe_max_iter=100,
        aa_seeds_a=(0, 1),
        aa_seeds_b=(2, 3),
        base_seeds=(0, 1),
    ),
    planted=PlantedSizes(
        d=16,
        feature_counts=(8, 32),
        seeds=(0, 1),
        n_train=1000,
        n_test=500,
        n_steps=150,
        batch_size=128,
    ),
    dihedral=PlantedSizes(
        d=8, feature_counts=(6,), seeds=(0,), n_train=600, n_test=300, n_steps=300, batch_size=128
    ),
    study=StudySizes(
        ks=(4, 8),
        seeds=(0, 1),
        probe_k=8,
        epochs=3,
        n_steps=120,
        max_d_sae=64,
        expansion=1,
        max_probe_orbits=(60, 30, 60),
        eval_orbits=120,
        c_grid=(1.0,),
        probe_max_iter=100,
    ),
    images=ImageRunSizes(epochs=4, sae_steps=200, d_sae=128, k=4, probe_ks=(None, 2)),
)

FULL = Mode(
    name="full",
    data=DataSizes(train=10000, val=2000, test=2000, benchmark=50_000),
    base_training=BaseTrainingSizes(epochs=6, batch_size=32),
    sweep=SweepSizes(
        ks=(4, 8, 16),
        intermediate_ks=(8,),
        seeds=(0, 1, 2),
        probe_k=8,
        reference_seeds=(0, 1, 2),
        n_steps=4000,
        batch_size=256,
        max_d_sae=256,
        curve_points=40,
        short_steps=300,
        probe_ks=(None, 1, 2, 5, 16),
        c_grid=(0.01, 0.1, 1.0),
        max_orbits=(600, 200, 400),
        probe_max_iter=200,
        aa_seeds_a=(0, 1, 2),
        aa_seeds_b=(3, 4, 5),
        base_seeds=(0, 1, 2),
    ),
    planted=PlantedSizes(
        d=16,
        feature_counts=(8, 16, 32, 48, 64),
        seeds=(0, 1, 2),
        n_train=4000,
        n_test=1000,
        n_steps=800,
        batch_size=256,
    ),
    dihedral=PlantedSizes(
        d=16,
        feature_counts=(8, 16),
        seeds=(0, 1, 2),
        n_train=4000,
        n_test=1000,
        n_steps=800,
        batch_size=256,
    ),
    study=StudySizes(
        ks=(4, 8, 16),
        seeds=(0, 1, 2),
        probe_k=8,
        epochs=20,
        n_steps=600,
        max_d_sae=128,
        expansion=2,
        max_probe_orbits=(240, 80, 240),
        eval_orbits=360,
        c_grid=(0.1, 1.0),
        probe_max_iter=200,
    ),
    images=ImageRunSizes(epochs=20, sae_steps=1000, d_sae=256, k=8, probe_ks=(None, 1, 5)),
)

_BY_NAME: dict[str, Mode] = {"quick": QUICK, "full": FULL}


def get_mode(mode: str) -> Mode:
    """The sizes of ``mode`` (``"quick"`` or ``"full"``); a ValueError naming both otherwise."""
    return _BY_NAME[check_mode(mode)]
