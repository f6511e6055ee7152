"""Equivariant TopK SAE with a fixed group representation ``M`` (METHOD.md section 2).

Latents are G-invariant and the reconstruction of the pose-``p`` activation is
``M^p W_dec z + b_dec``. Design choice: the latent of an orbit is computed from its
*canonicalised* activations, ``c = mean_p M^{-p} (h_p - b_dec)``, encoded once by the TopK
encoder. When ``M`` is an exact representation of the data, every ``M^{-p}(h_p - b_dec)`` is the
same vector, so the latents are invariant by construction (the mean only averages noise away).
A single activation with a known pose is encoded from ``M^{-p}(h - b_dec)``; with an unknown pose
the pose is inferred as ``p_hat = argmin_p ||h - (M^p W_dec z_p + b_dec)||``.

``M`` is a frozen buffer here (e.g. the least-squares fit of ``equisae.linrep``, or the planted
``R`` of ``equisae.toy``); :class:`~equisae.sae.adaptive.AdaptiveEquivariantSAE` learns it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from equisae.sae.base import (
    LossOutput,
    SAEOutput,
    _check_orbit_batch,
    _check_positive_int,
    register_architecture,
)
from equisae.sae.topk import TopKSAE

__all__ = ["EquivariantSAE", "Pose"]

#: A pose: one int for every row, or a (N,) long tensor, or None to infer it.
Pose = int | Tensor | None


def _matrix_powers(mat: Tensor, n: int) -> Tensor:
    out = [torch.eye(mat.shape[0], dtype=mat.dtype, device=mat.device)]
    for _ in range(1, n):
        out.append(out[-1] @ mat)
    return torch.stack(out)


@register_architecture("equivariant_topk")
class EquivariantSAE(TopKSAE):
    """TopK SAE with G-invariant latents and reconstruction ``M^p W_dec z + b_dec``.

    ``M`` (d_in, d_in) is a buffer (not trained, not counted in :attr:`n_params`; it is saved
    with the weights). ``loss`` takes orbit batches ``(B, group_order, d_in)``; ``encode``,
    ``decode`` and ``forward`` take single activations ``(..., d_in)`` with an optional pose.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        group_order: int = 4,
        M: Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(d_in, d_sae, k, **kwargs)
        self.group_order = _check_positive_int("group_order", group_order)
        self.register_buffer("M", self._checked_rep(M).to(self.W_dec.dtype))

    # ------------------------------------------------------------------ representation
    def _checked_rep(self, M: Tensor | None) -> Tensor:
        """A detached copy of ``M`` (identity if None); the caller casts it to the model dtype."""
        if M is None:
            return torch.eye(self.d_in)
        if not isinstance(M, Tensor):
            M = torch.as_tensor(M)
        if M.shape != (self.d_in, self.d_in):
            raise ValueError(
                f"M must have shape (d_in, d_in) = ({self.d_in}, {self.d_in}), got {tuple(M.shape)}"
            )
        if not torch.isfinite(M).all():
            raise ValueError("M contains non-finite values")
        return M.detach().clone()

    def rep(self) -> Tensor:
        """The representation matrix ``M`` (d_in, d_in) used by the model."""
        return self.M

    def rep_powers(self) -> Tensor:
        """``M^p`` for ``p = 0 .. group_order-1``: (group_order, d_in, d_in)."""
        return _matrix_powers(self.rep(), self.group_order)

    def rep_inverse_powers(self) -> Tensor:
        """``M^{-p}`` for ``p = 0 .. group_order-1`` (``M`` must be invertible)."""
        return _matrix_powers(torch.linalg.inv(self.rep()), self.group_order)

    def group_error(self) -> float:
        """``||M^n - I||_F / ||I||_F`` with ``n`` the group order (0 for an exact representation)."""
        with torch.no_grad():
            m = self.rep().double()
            power = torch.linalg.matrix_power(m, self.group_order)
            eye = torch.eye(self.d_in, dtype=torch.float64)
            return float((power - eye).norm() / eye.norm())

    def distance_to(self, R: Tensor) -> float:
        """Relative Frobenius distance ``||M - R|| / ||R||`` to a reference representation."""
        if R.shape != (self.d_in, self.d_in):
            raise ValueError(f"R must have shape ({self.d_in}, {self.d_in}), got {tuple(R.shape)}")
        with torch.no_grad():
            return float((self.rep().double() - R.double()).norm() / R.double().norm())

    @property
    def n_fixed_params(self) -> int:
        """Scalars of the frozen representation (given to the model, not learned)."""
        return sum(b.numel() for name, b in self.named_buffers() if name == "M")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "group_order": self.group_order}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_order={self.group_order}"

    # ------------------------------------------------------------------ shapes
    def check_orbits(self, batch: Tensor, name: str = "batch") -> Tensor:
        """Validate an orbit batch ``(B, group_order, d_in)`` and return it."""
        return _check_orbit_batch(batch, self.group_order, self.d_in, name)

    def _pose_index(self, pose: int | Tensor, n: int) -> Tensor:
        if isinstance(pose, Tensor):
            if pose.shape not in ((n,), ()):
                raise ValueError(f"pose must be an int or a ({n},) tensor, got {tuple(pose.shape)}")
            idx = pose.long().expand(n) if pose.ndim == 0 else pose.long()
        elif isinstance(pose, int) and not isinstance(pose, bool):
            idx = torch.full((n,), pose, dtype=torch.long)
        else:
            raise ValueError(f"pose must be an int, a tensor or None, got {type(pose).__name__}")
        if n and (idx.min() < 0 or idx.max() >= self.group_order):
            raise ValueError(
                f"pose values must be in 0..{self.group_order - 1}, got {idx.min()}..{idx.max()}"
            )
        return idx

    # ------------------------------------------------------------------ the model
    def canonicalize(self, h: Tensor, pose: int | Tensor) -> Tensor:
        """``M^{-p}(h - b_dec)`` for activations (N, d_in) at pose ``p`` (int or (N,) tensor)."""
        idx = self._pose_index(pose, h.shape[0])
        inv = self.rep_inverse_powers()[idx]  # (N, d, d)
        return torch.einsum("nij,nj->ni", inv, h - self.b_dec)

    def canonicalize_orbits(self, batch: Tensor) -> Tensor:
        """Orbit batch (B, G, d_in) -> ``mean_p M^{-p}(h_p - b_dec)`` (B, d_in)."""
        self.check_orbits(batch)
        return torch.einsum("pij,bpj->bi", self.rep_inverse_powers(), batch - self.b_dec) / (
            self.group_order
        )

    def encode_canonical(self, c: Tensor) -> tuple[Tensor, Tensor]:
        """Latents and pre-activations of canonical, centred activations ``c`` (N, d_in)."""
        pre = c @ self.W_enc + self.b_enc
        return self.activation(pre), pre

    def decode_at(self, z: Tensor, pose: int | Tensor) -> Tensor:
        """``M^p W_dec z + b_dec`` for latents (N, d_sae) at pose ``p`` (int or (N,) tensor)."""
        idx = self._pose_index(pose, z.shape[0])
        return torch.einsum("nij,nj->ni", self.rep_powers()[idx], z @ self.W_dec) + self.b_dec

    def decode_orbits(self, z: Tensor) -> Tensor:
        """Reconstruct every pose: latents (B, d_sae) -> (B, group_order, d_in)."""
        return torch.einsum("pij,bj->bpi", self.rep_powers(), z @ self.W_dec) + self.b_dec

    @torch.no_grad()
    def infer_pose(self, h: Tensor) -> Tensor:
        """``p_hat = argmin_p ||h - (M^p W_dec z_p + b_dec)||`` for activations (..., d_in)."""
        flat, lead = self._flatten(h)
        errors = []
        for p in range(self.group_order):
            z, _ = self.encode_canonical(self.canonicalize(flat, p))
            errors.append((self.decode_at(z, p) - flat).pow(2).sum(-1))
        return torch.stack(errors, -1).argmin(-1).reshape(lead)

    def _forward_flat(self, flat: Tensor, pose: Pose) -> tuple[Tensor, Tensor, Tensor]:
        if pose is None:
            pose = self.infer_pose(flat)
        elif isinstance(pose, Tensor):
            pose = pose.reshape(-1)
        z, pre = self.encode_canonical(self.canonicalize(flat, pose))
        return z, self.decode_at(z, pose), pre

    def encode(self, h: Tensor, pose: Pose = None) -> Tensor:
        """Invariant latents (..., d_sae) of activations (..., d_in) at ``pose`` (None: inferred)."""
        flat, lead = self._flatten(h)
        z, _, _ = self._forward_flat(flat, pose)
        return z.reshape(*lead, self.d_sae)

    def decode(self, z: Tensor, pose: int | Tensor = 0) -> Tensor:
        """Reconstruction (..., d_in) of latents (..., d_sae) at ``pose`` (default 0)."""
        flat, lead = self._flatten_latents(z)
        if isinstance(pose, Tensor):
            pose = pose.reshape(-1)
        return self.decode_at(flat, pose).reshape(*lead, self.d_in)

    def forward(self, h: Tensor, pose: Pose = None) -> SAEOutput:
        """Encode and decode activations (..., d_in) at ``pose`` (None: inferred per row)."""
        flat, lead = self._flatten(h)
        z, recon, pre = self._forward_flat(flat, pose)
        return SAEOutput(
            latents=z.reshape(*lead, self.d_sae),
            recon=recon.reshape(*lead, self.d_in),
            pre_acts=pre.reshape(*lead, self.d_sae),
        )

    # ------------------------------------------------------------------ training
    def loss(self, batch: Tensor, dead_mask: Tensor | None = None) -> LossOutput:
        """Orbit loss on (B, G, d_in): per-element MSE of ``M^p W_dec z + b_dec`` against every
        ``h_p``, with one invariant latent vector per orbit, plus AuxK on the canonical residual."""
        self.check_orbits(batch)
        c = self.canonicalize_orbits(batch)
        z, pre = self.encode_canonical(c)
        recon = self.decode_orbits(z)
        mse = (recon - batch).pow(2).mean()
        terms: dict[str, Tensor] = {"mse": mse}
        total = mse
        aux = self.auxk_loss(pre, c - (z @ self.W_dec).detach(), dead_mask)
        total = self._add_auxk(total, terms, aux)
        return LossOutput(total=total, terms=terms, latents=z, recon=recon, target=batch)
