"""The inputs of every SAE of a sweep: cached orbit activations and the fitted representation.

:class:`InputsJob` caches the orbit activations of every split of one (base model, layer, data
seed, representative, group) and fits the representation the fixed-M SAEs use and the adaptive
SAEs start from: ``M`` for C4 (:func:`equisae.linrep.sae_representation`), the generators
``{"r", "s"}`` for D4 (:func:`equisae.linrep.sae_generators`), each full rank in the SAEs'
principal-subspace form.

``group`` is a field of the sweep jobs (default ``"C4"``). It enters a job's hash only when it
is not C4 (:func:`group_config`), so the C4 jobs keep the hashes, hence the cached artifacts,
they had before the field existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from equisae.activation_cache import ActivationKey, load_activations
from equisae.device import device_config
from equisae.modes import check_mode
from equisae.runner import Job, JobResult
from equisae.sweeps.settings import LAYER_ROLES, REPRESENTATIVES, check_choice

__all__ = [
    "DEFAULT_GROUP",
    "InputsJob",
    "check_group",
    "ReadsInputs",
    "group_config",
    "load_generators",
    "load_representation",
    "orbit_split",
    "subsample_orbits",
]

#: the group of the sweeps unless a job says otherwise
DEFAULT_GROUP = "C4"

SPLITS: tuple[str, ...] = ("train", "val", "test")


def check_group(group: str) -> str:
    """The canonical name of ``group`` (``"C4"``, ``"D4"``); ValueError naming it if unknown."""
    from equisae.groups import get_group

    if not isinstance(group, str):
        raise ValueError(f"group must be a group name like 'C4' or 'D4', got {group!r}")
    try:
        name = get_group(group).name
    except (KeyError, ValueError) as err:
        raise ValueError(f"group: {err.args[0]}") from None
    if name != group:
        raise ValueError(f"group must be written {name!r}, got {group!r}")
    return name


def group_config(config: dict[str, Any]) -> dict[str, Any]:
    """A job's config without its ``group`` entry when that is the default C4 (stable hashes)."""
    if config.get("group") == DEFAULT_GROUP:
        return {k: v for k, v in config.items() if k != "group"}
    return config


def orbit_split(key: ActivationKey):
    """Orbit activations (``OrbitActivations``) of one split, from the verified cache."""
    check_choice("layer", key.layer, LAYER_ROLES)
    return load_activations(key, progress=False)


def subsample_orbits(n: int, limit: int, seed: int) -> Tensor:
    """Sorted indices of ``min(n, limit)`` orbits, chosen without replacement under ``seed``."""
    if n <= limit:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:limit].sort().values


@dataclass(frozen=True)
class InputsJob(Job):
    """Cache the orbit activations of every split and fit the representation on them.

    Saves ``representation.safetensors`` with ``M`` (the rotation generator) and, for D_n,
    ``S`` (the flip): :func:`load_representation` and :func:`load_generators` read them.
    """

    kind: ClassVar[str] = "sweep-inputs"
    version: ClassVar[int] = 4
    model_name: str
    layer: str
    mode: str
    data_seed: int = 0
    representative: str = "fixed"
    #: M for the SAEs is fitted in the principal subspace holding this fraction of the variance
    rep_variance: float = 0.99
    #: the group whose orbits are taken and whose generators are fitted ("C4" or "D4")
    group: str = DEFAULT_GROUP

    def __post_init__(self) -> None:
        check_group(self.group)
        check_choice("layer", self.layer, LAYER_ROLES)
        check_choice("representative", self.representative, REPRESENTATIVES)
        check_mode(self.mode)
        if not 0 < self.rep_variance <= 1:
            raise ValueError(f"rep_variance must be in (0, 1], got {self.rep_variance!r}")

    def config(self) -> dict[str, Any]:
        """The fields; ``group`` only when it is not C4 (:func:`group_config`); the run's
        device only when it is not the CPU (:func:`equisae.device.device_config`)."""
        return {**group_config(super().config()), **device_config()}

    def key(self, split: str) -> ActivationKey:
        """The activations of ``split`` that this job's SAEs train or are tested on."""
        return ActivationKey(
            self.model_name,
            self.layer,
            self.mode,
            self.data_seed,
            split,
            self.representative,
            self.group,
        )

    def split(self, split: str):
        """The orbit activations of ``split`` that this job's SAEs train or are tested on."""
        return orbit_split(self.key(split))

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        from safetensors.torch import save_file

        from equisae.linrep import analyse_linear_representation, sae_generators

        acts = {s: self.split(s) for s in SPLITS}
        rep, res = analyse_linear_representation(
            acts["train"], acts["val"], acts["test"], group=self.group
        )
        sae_rep, gens = sae_generators(
            acts["train"], acts["val"], self.rep_variance, group=self.group
        )
        tensors = {GENERATOR_KEYS[name]: mat.contiguous() for name, mat in gens.items()}
        save_file(tensors, str(workdir / "representation.safetensors"))
        extra = {}
        if "s" in gens:  # D_n: every relation, raw and weighted by the activations' variance
            extra = {k: res.extra[k] for k in ("relation_errors", "relation_errors_weighted")}
        return {
            **extra,
            "sae_rep_rank": sae_rep.rank,
            "sae_rep_min_abs_eigenvalue": min(
                float(torch.linalg.eigvals(m.double()).abs().min())
                for m in sae_rep.generators_reduced().values()
            ),
            "dim": acts["train"].dim,
            "group_order": acts["train"].group_order,
            "n_train": acts["train"].n_examples,
            "rank": rep.rank,
            "r2_single": res.r2_single,
            "r2_identity": res.r2_identity,
            "r2_per_power": res.r2_per_power,
            "group_error": res.group_error,
        }


#: generator name -> key in ``representation.safetensors``
GENERATOR_KEYS: dict[str, str] = {"r": "M", "s": "S"}


def load_representation(inputs: JobResult) -> Tensor:
    """The (d, d) rotation generator ``M`` an :class:`InputsJob` saved."""
    return load_generators(inputs)["r"]


def load_generators(inputs: JobResult) -> dict[str, Tensor]:
    """Every generator an :class:`InputsJob` saved: ``{"r": M}``, and ``"s"`` for D_n."""
    from safetensors.torch import load_file

    saved = load_file(str(inputs.file("representation.safetensors")))
    return {name: saved[key] for name, key in GENERATOR_KEYS.items() if key in saved}


class ReadsInputs(Job):
    """A job that reads one :class:`InputsJob` named by its own fields (``model_name``,
    ``layer``, ``mode``, ``data_seed``, ``representative``, ``group``): that job is its
    dependency, and its hash is part of this job's configuration, so a change of the inputs
    reruns it (``group`` enters the configuration only when it is not C4)."""

    @property
    def inputs(self) -> InputsJob:
        """The inputs job this job reads."""
        return InputsJob(
            self.model_name,  # type: ignore[attr-defined]
            self.layer,  # type: ignore[attr-defined]
            self.mode,  # type: ignore[attr-defined]
            self.data_seed,  # type: ignore[attr-defined]
            self.representative,  # type: ignore[attr-defined]
            group=self.group,  # type: ignore[attr-defined]
        )

    def dependencies(self) -> tuple[Job, ...]:
        return (self.inputs,)

    def config(self) -> dict[str, Any]:
        return {
            **group_config(super().config()),
            "inputs": self.inputs.hash,
            **device_config(),  # nothing on the CPU: the CPU caches keep their hashes
        }
