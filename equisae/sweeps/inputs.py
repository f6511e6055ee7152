"""The inputs of every SAE of a sweep: cached orbit activations and the fitted representation.

:class:`InputsJob` caches the orbit activations of every split of one (base model, layer, data
seed, representative) and fits the representation ``M`` the fixed-M SAEs use and the adaptive
SAEs start from (:func:`equisae.linrep.sae_representation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from equisae.runner import Job, JobResult
from equisae.sweeps.settings import LAYER_ROLES, REPRESENTATIVES, check_choice, check_mode

__all__ = ["InputsJob", "load_representation", "orbit_split", "subsample_orbits"]

SPLITS: tuple[str, ...] = ("train", "val", "test")


def orbit_split(
    model_name: str, layer: str, mode: str, seed: int, split: str, representative: str = "fixed"
):
    """Orbit activations (``OrbitActivations``) of one split, from the verified cache."""
    from equisae import activation_cache

    check_choice("layer", layer, LAYER_ROLES)
    return activation_cache.orbit_activations_for(
        model_name, layer, mode, seed, split, progress=False, representative=representative
    )


def subsample_orbits(n: int, limit: int, seed: int) -> Tensor:
    """Sorted indices of ``min(n, limit)`` orbits, chosen without replacement under ``seed``."""
    if n <= limit:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:limit].sort().values


@dataclass(frozen=True)
class InputsJob(Job):
    """Cache the orbit activations of every split and fit the representation ``M`` on them."""

    kind: ClassVar[str] = "sweep-inputs"
    version: ClassVar[int] = 4
    model_name: str
    layer: str
    mode: str
    data_seed: int = 0
    representative: str = "fixed"
    #: M for the SAEs is fitted in the principal subspace holding this fraction of the variance
    rep_variance: float = 0.99

    def __post_init__(self) -> None:
        check_choice("layer", self.layer, LAYER_ROLES)
        check_choice("representative", self.representative, REPRESENTATIVES)
        check_mode(self.mode)
        if not 0 < self.rep_variance <= 1:
            raise ValueError(f"rep_variance must be in (0, 1], got {self.rep_variance!r}")

    def split(self, split: str):
        """The orbit activations of ``split`` that this job's SAEs train or are tested on."""
        return orbit_split(
            self.model_name, self.layer, self.mode, self.data_seed, split, self.representative
        )

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        from safetensors.torch import save_file

        from equisae.linrep import analyse_linear_representation, sae_representation

        acts = {s: self.split(s) for s in SPLITS}
        rep, res = analyse_linear_representation(acts["train"], acts["val"], acts["test"])
        sae_rep, M = sae_representation(acts["train"], acts["val"], self.rep_variance)
        save_file({"M": M.contiguous()}, str(workdir / "representation.safetensors"))
        return {
            "sae_rep_rank": sae_rep.rank,
            "sae_rep_min_abs_eigenvalue": float(
                torch.linalg.eigvals(sae_rep.M_reduced).abs().min()
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


def load_representation(inputs: JobResult) -> Tensor:
    """The (d, d) representation matrix an :class:`InputsJob` saved."""
    from safetensors.torch import load_file

    return load_file(str(inputs.file("representation.safetensors")))["M"]
