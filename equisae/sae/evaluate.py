"""One evaluation for every SAE type on orbit activations ``(N, |G|, d)``.

Pose conventions (every reconstruction number says which one it used):

* regular SAEs (TopK, ReLU, wide, ...) need no pose: each activation is encoded and decoded;
* equivariant SAEs (fixed or adaptive ``M``) infer the pose of each activation,
  ``p_hat = argmin_p ||h - (M^p W_dec z + b_dec)||`` (``fvu_inferred_pose``, the headline
  ``fvu``); with the true pose given they report ``fvu_oracle_pose`` as a labelled extra;
* the group crosscoder treats each activation as the canonical pose 0 and reconstructs it with
  block 0 (``fvu``); reconstructing every pose of an orbit from its true ``h_0`` is its
  ``fvu_oracle_pose``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from equisae.metrics import fvu
from equisae.sae.base import SparseAutoencoder

__all__ = [
    "POSE_MODES",
    "decoder_atoms",
    "evaluate_on_orbits",
    "fvu",
    "latent_equivariance_error",
    "orbit_latents",
    "orbit_reconstructions",
]

POSE_MODES = ("inferred", "oracle")


def latent_equivariance_error(latents: Tensor) -> float:
    """Relative spread of latents across the poses of each orbit, ``(N, |G|, d_sae)`` ->
    ``sum_n sum_p ||z_p - mean_q z_q||^2 / sum_n sum_p ||z_p||^2`` (0: invariant latents)."""
    if latents.ndim != 3:
        raise ValueError(f"latents must have shape (N, |G|, d_sae), got {tuple(latents.shape)}")
    z = latents.double()
    spread = (z - z.mean(1, keepdim=True)).pow(2).sum()
    return float(spread / z.pow(2).sum().clamp_min(1e-30))


def _check_acts(sae: SparseAutoencoder, acts: Tensor) -> None:
    if not isinstance(sae, SparseAutoencoder):
        raise ValueError(f"sae must be a SparseAutoencoder, got {type(sae).__name__}")
    if not isinstance(acts, Tensor) or acts.ndim != 3 or acts.shape[-1] != sae.d_in:
        shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
        raise ValueError(f"acts must have shape (N, |G|, d_in={sae.d_in}), got {shape}")
    order = getattr(sae, "group_order", None)
    if sae.takes_orbits and acts.shape[1] != order:
        raise ValueError(
            f"acts has {acts.shape[1]} poses but {type(sae).__name__} has group_order={order}"
        )


def _check_pose(pose: str) -> None:
    if pose not in POSE_MODES:
        raise ValueError(f"pose must be one of {POSE_MODES}, got {pose!r}")


@torch.no_grad()
def orbit_reconstructions(
    sae: SparseAutoencoder,
    acts: Tensor,
    pose: str = "inferred",
    batch_size: int = 1024,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Latents (N, G, d_sae), reconstructions (N, G, d) and poses used (N, G) for orbit
    activations, under the pose convention of the module docstring.

    Each chunk of ``acts`` is moved to ``device`` (default: where the SAE is; the SAE itself is
    moved when ``device`` is given) and the results come back to the CPU."""
    _check_acts(sae, acts)
    _check_pose(pose)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if device is not None:
        sae.to(device)
    where = sae.W_dec.device
    was_training = sae.training
    sae.eval()
    parts = [
        tuple(t.cpu() for t in sae.orbit_outputs(acts[i : i + batch_size].to(where), pose))
        for i in tqdm(range(0, acts.shape[0], batch_size), desc="evaluate", disable=not progress)
    ]
    sae.train(was_training)
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


def orbit_latents(
    sae: SparseAutoencoder,
    acts: Tensor,
    pose: str = "inferred",
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> Tensor:
    """Per-activation latents (N, |G|, d_sae) of orbit activations (see module docstring)."""
    return orbit_reconstructions(sae, acts, pose, batch_size, device=device)[0]


def decoder_atoms(sae: SparseAutoencoder) -> Tensor:
    """The decoder directions of any SAE as (n_atoms, d_in) (the model's own ``decoder_atoms``:
    rows of ``W_dec``, and for the crosscoder every block of every latent)."""
    return sae.decoder_atoms()


@torch.no_grad()
def evaluate_on_orbits(
    sae: SparseAutoencoder,
    acts: Tensor,
    batch_size: int = 1024,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Reconstruction, sparsity and invariance metrics of ``sae`` on orbits ``(N, |G|, d)``.

    ``device`` as in :func:`orbit_reconstructions` (the metrics are computed on the CPU).

    Returns ``fvu`` and ``mse`` (headline, pose not given: see the module docstring for each
    model's convention, named in ``pose``), ``l0`` (mean active latents per activation),
    ``dead_fraction`` (latents that never fire here), ``n_params`` (trainable) and
    ``n_fixed_params`` (a frozen ``M``), ``latent_equivariance_error`` (relative spread of the
    latents over each orbit's poses); orbit SAEs add ``fvu_inferred_pose`` or ``fvu`` under
    their convention and ``fvu_oracle_pose``; equivariant SAEs add ``pose_accuracy``.
    """
    z, recon, poses = orbit_reconstructions(sae, acts, "inferred", batch_size, progress, device)
    fired = (z != 0).reshape(-1, z.shape[-1])
    out: dict[str, Any] = {
        "fvu": fvu(acts, recon),
        "mse": float((recon.double() - acts.double()).pow(2).mean()),
        "l0": float(fired.sum(-1).double().mean()),
        "dead_fraction": float((~fired.any(0)).double().mean()),
        "n_params": int(sae.n_params),
        "n_fixed_params": int(getattr(sae, "n_fixed_params", 0)),
        "latent_equivariance_error": latent_equivariance_error(z),
        "architecture": sae.architecture,
    }
    out["pose"] = sae.pose_convention
    if sae.reports_oracle_pose:
        _, recon_oracle, _ = orbit_reconstructions(sae, acts, "oracle", batch_size, device=device)
        out["fvu_oracle_pose"] = fvu(acts, recon_oracle)
    if sae.is_equivariant:
        true_pose = torch.arange(acts.shape[1]).expand_as(poses)
        out["fvu_inferred_pose"] = out["fvu"]
        out["pose_accuracy"] = float((poses == true_pose).double().mean())
    return out
