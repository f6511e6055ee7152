"""Probing the SAEs of a sweep: dense and k-sparse probes per factor, with references.

Features per SAE are its latents computed as the model is deployed (equivariant SAEs infer the
pose). Besides the ground-truth factors of the data, every split carries ``pose``: the index
``p`` of the activation in its orbit. A probe of invariant latents for ``pose`` is the
*leakage* probe of the Method page, section 3 (it should sit at chance). References: the raw
activations and an untrained random-dictionary SAE of the same size and ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from equisae.device import current_device
from equisae.modes import check_mode
from equisae.runner import Job, JobResult
from equisae.sweeps.inputs import (
    DEFAULT_GROUP,
    InputsJob,
    ReadsInputs,
    check_group,
    subsample_orbits,
)
from equisae.sweeps.saes import SAEJob, sae_folder
from equisae.sweeps.settings import (
    LAYER_ROLES,
    REPRESENTATIVES,
    ProbeSettings,
    SAETraining,
    check_choice,
)

__all__ = [
    "REFERENCES",
    "ProbeJob",
    "ReferenceProbeJob",
    "pose_conditioned_features",
    "random_dictionary_sae",
]

REFERENCES: tuple[str, ...] = ("raw", "random")
#: the factor that is the orbit index p of an activation (added to every split)
POSE_FACTOR = "pose"


def random_dictionary_sae(d_in: int, d_sae: int, k: int, seed: int, centre: Tensor | None = None):
    """The untrained reference: a TopK SAE with random unit decoder rows and encoder = decoder^T.

    ``centre`` (d_in,) sets ``b_dec`` (the training mean), so the random directions read
    centred activations like a trained SAE does.
    """
    from equisae.sae.topk import TopKSAE

    sae = TopKSAE(d_in, d_sae, k, seed=seed)  # W_dec random unit rows, W_enc = W_dec^T
    if centre is not None:
        if centre.shape != (d_in,):
            raise ValueError(f"centre must have shape ({d_in},), got {tuple(centre.shape)}")
        with torch.no_grad():
            sae.b_dec.copy_(centre.float())
    return sae.eval()


def _split_arrays(inputs: InputsJob, settings: ProbeSettings) -> dict[str, Any]:
    """The probe subsample of each split: orbit activations (n, |G|, d) and factors (n, |G|)."""
    out = {}
    for i, split in enumerate(("train", "val", "test")):
        acts = inputs.split(split)
        factors = dict(acts.factors)
        n, order = acts.acts.shape[:2]
        factors[POSE_FACTOR] = torch.arange(order).expand(n, order)
        missing = [f for f in settings.factors if f not in factors]
        if missing:
            raise KeyError(f"factors {missing} not in the activations' factors {sorted(factors)}")
        idx = subsample_orbits(n, settings.max_orbits[i], settings.subsample_seed + i)
        out[split] = (acts.acts[idx], {f: factors[f][idx] for f in settings.factors})
    return out


def _one_hot(poses: Tensor, order: int) -> Tensor:
    return torch.nn.functional.one_hot(poses.long().reshape(-1), order).float()


def pose_conditioned_features(latents: Tensor, poses: Tensor, order: int) -> np.ndarray:
    """Latents (rows, d_sae) placed in the block of their pose, plus the one-hot pose.

    Returns (rows, order * d_sae + order): ``z`` outer ``e_p`` flattened, then ``e_p``. An
    equivariant factor such as the quadrant is ``(q_0 + p) mod |G|``: it needs the invariant
    code *and* the pose together, which a linear probe can read from the outer product but not
    from ``z`` and ``e_p`` side by side.
    """
    if latents.ndim != 2 or poses.reshape(-1).shape[0] != latents.shape[0]:
        raise ValueError(
            f"latents must be (rows, d_sae) with one pose per row, got {tuple(latents.shape)} "
            f"and {tuple(poses.shape)}"
        )
    onehot = _one_hot(poses, order)
    blocks = (onehot[:, :, None] * latents[:, None, :]).reshape(latents.shape[0], -1)
    return torch.cat([blocks, onehot], dim=1).numpy()


def _feature_sets(sae: Any, splits: dict[str, Any], with_pose: bool) -> dict[str, dict]:
    """Features per feature set and split: (rows, d_sae) latents, optionally + one-hot pose."""
    from equisae.sae.evaluate import orbit_reconstructions

    sets: dict[str, dict[str, np.ndarray]] = {"latents": {}}
    if with_pose:
        sets["latents+pose"] = {}
    for split, (acts, _) in splits.items():
        z, _, poses = orbit_reconstructions(sae, acts, pose="inferred", device=current_device())
        flat = z.reshape(-1, z.shape[-1])
        sets["latents"][split] = flat.numpy()
        if with_pose:
            sets["latents+pose"][split] = pose_conditioned_features(flat, poses, acts.shape[1])
    return sets


def _probe_all(sets: dict[str, dict], splits: dict[str, Any], settings: ProbeSettings) -> dict:
    from equisae.probing import probe_factors

    labels = {
        s: {f: v.reshape(-1).numpy() for f, v in fac.items()} for s, (_, fac) in splits.items()
    }
    f1: dict[str, Any] = {}
    chance: dict[str, float] = {}
    for name, features in sets.items():
        factors = settings.factors if name == "latents" else settings.pose_factors
        res = probe_factors(
            features,
            labels,
            [f for f in factors if f in settings.factors],
            probe_ks=settings.probe_ks,
            c_grid=settings.c_grid,
            max_iter=settings.max_iter,
            tol=settings.tol,
        )
        f1[name] = {f: {pk: r.f1 for pk, r in per.items()} for f, per in res.items()}
        chance.update({f: next(iter(per.values())).chance_f1 for f, per in res.items()})
    rows = {s: int(next(iter(labels[s].values())).shape[0]) for s in labels}
    return {"f1": f1, "chance_f1": chance, "n_rows": rows}


@dataclass(frozen=True)
class ProbeJob(Job):
    """Probe every factor on the latents of one trained SAE (equivariant SAEs: also + pose)."""

    kind: ClassVar[str] = "sweep-probe"
    version: ClassVar[int] = 3
    sae: SAEJob
    seed: int
    settings: ProbeSettings = field(default_factory=ProbeSettings)

    def __post_init__(self) -> None:
        if self.seed not in self.sae.seeds:
            raise ValueError(f"seed {self.seed} is not one of the SAE job's seeds {self.sae.seeds}")

    def dependencies(self) -> tuple[Job, ...]:
        return (self.sae,)

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        from equisae.sae.io import load_sae

        sae = load_sae(deps[0].path / sae_folder(self.seed))
        splits = _split_arrays(self.sae.inputs, self.settings)
        sets = _feature_sets(sae, splits, getattr(sae, "is_equivariant", False))
        l0 = deps[0].metrics["per_seed"][str(self.seed)].get("l0")
        return {**_probe_all(sets, splits, self.settings), "l0": l0}


@dataclass(frozen=True)
class ReferenceProbeJob(ReadsInputs):
    """Probes on raw activations or on an untrained random-dictionary TopK SAE."""

    kind: ClassVar[str] = "sweep-probe-reference"
    version: ClassVar[int] = 2
    model_name: str
    layer: str
    reference: str
    k: int
    seed: int
    mode: str
    training: SAETraining = field(default_factory=SAETraining)
    settings: ProbeSettings = field(default_factory=ProbeSettings)
    data_seed: int = 0
    representative: str = "fixed"
    #: the group of the orbits ("C4" or "D4"; hashed unless C4)
    group: str = DEFAULT_GROUP

    def __post_init__(self) -> None:
        check_group(self.group)
        check_choice("reference", self.reference, REFERENCES)
        check_choice("layer", self.layer, LAYER_ROLES)
        check_choice("representative", self.representative, REPRESENTATIVES)
        check_mode(self.mode)

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        splits = _split_arrays(self.inputs, self.settings)
        if self.reference == "raw":
            sets = {
                "latents": {s: a.reshape(-1, a.shape[-1]).numpy() for s, (a, _) in splits.items()}
            }
            return {
                **_probe_all(sets, splits, self.settings),
                "l0": float(splits["train"][0].shape[-1]),
            }
        train = self.inputs.split("train").acts
        d = train.shape[-1]
        sae = random_dictionary_sae(
            d, self.training.d_sae(d), self.k, self.seed, centre=train.reshape(-1, d).mean(0)
        )
        sets = _feature_sets(sae, splits, with_pose=False)
        return {**_probe_all(sets, splits, self.settings), "l0": float(self.k)}
