"""The canonicalising variant of the equivariant SAEs (a named variant, not the Method page's model).

Instead of encoding each pose from its raw activation, the encoder reads the activation brought
back to pose 0 by the representation, ``c_p = rho(g_p)^-1 (h_p - b_dec)``:

* :class:`CanonicalEquivariantSAE` (fixed representation, ``"equivariant_canonical_topk"``)
  encodes the orbit mean ``mean_p c_p`` once per orbit, so training gives one latent vector
  per orbit (the behaviour of ``EquivariantSAE`` before the Method page's encoder became the default);
* :class:`AdaptiveCanonicalSAE` (learned generators, ``"adaptive_canonical_topk"``) encodes
  every ``c_p`` with the same loss terms as :class:`~equisae.sae.adaptive.AdaptiveEquivariantSAE`,
  ``rho(g)^-1`` taken as ``rho(g^-1)``.

The difference is a finding, not a detail: with the known pose ``c_p`` is just ``h_0 - b_dec``,
so ``z`` is a TopK code of the pose-0 activation and keeps its pose content (orientation,
position); the invariance term is near zero by construction. The raw encoder can only make its
latents invariant by reading the invariant part of the representation.

At evaluation every pose is canonicalised with one GEMM against the stacked ``rho(g)^-T``, each
candidate is encoded and reconstructed, and the pose of least error wins.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from equisae.sae.adaptive import AdaptiveEquivariantSAE
from equisae.sae.base import register_architecture
from equisae.sae.config import AdaptiveEquivariantConfig, GroupTopKConfig
from equisae.sae.equivariant import EquivariantSAE, Pose, _apply_by_pose, _apply_per_pose

__all__ = ["AdaptiveCanonicalSAE", "CanonicalEquivariantSAE"]


class _CanonicalEncoder(EquivariantSAE):
    """Encoding through ``rho(g_p)^-1`` (shared by the fixed and the adaptive variant)."""

    encoder: ClassVar[str] = "canonical"

    def canonicalize(self, h: Tensor, pose: int | Tensor) -> Tensor:
        """``rho(g_p)^-1 (h - b_dec)`` for activations (N, d_in) at pose ``p`` (int or (N,))."""
        idx = self._pose_index(pose, h.shape[0])
        return _apply_by_pose(h - self.b_dec, self.representation_inverse(), idx)

    def _flat_outputs(self, flat: Tensor, pose: Pose) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if pose is not None:
            idx = self._pose_index(
                pose.reshape(-1) if isinstance(pose, Tensor) else pose, len(flat)
            )
            z, pre = self.encode_centred(self.canonicalize(flat, idx))
            return z, self.decode_at(z, idx), pre, idx
        n = flat.shape[0]
        stacked = self._stacked_transposes("rho_inv_T", self.representation_inverse)
        canonical = ((flat - self.b_dec) @ stacked).reshape(n, self.group_order, self.d_in)
        z_all, pre_all = self.encode_centred(canonical)  # (N, G, d_sae)
        recon_all = _apply_per_pose(z_all @ self.W_dec, self.representation()) + self.b_dec
        idx, recon = self._best_pose(flat, recon_all)
        pick = idx.view(-1, 1, 1).expand(-1, 1, self.d_sae)
        return z_all.gather(1, pick).squeeze(1), recon, pre_all.gather(1, pick).squeeze(1), idx

    def _orbit_outputs_oracle(self, acts: Tensor) -> tuple[Tensor, Tensor]:
        canonical = _apply_per_pose(acts - self.b_dec, self.representation_inverse())
        z, _ = self.encode_centred(canonical)
        return z, _apply_per_pose(z @ self.W_dec, self.representation()) + self.b_dec


@register_architecture("equivariant_canonical_topk")
class CanonicalEquivariantSAE(_CanonicalEncoder):
    """Fixed-representation SAE encoding the canonicalised orbit mean (one latent per orbit).

    Its config (:class:`~equisae.sae.config.GroupTopKConfig`) has no ``lambda_inv``: training
    latents are one vector per orbit, invariant by construction.
    """

    config_class: ClassVar[type[GroupTopKConfig]] = GroupTopKConfig
    variant: ClassVar[str | None] = "equivariant_canonical"
    latent_per_orbit: ClassVar[bool] = True


@register_architecture("adaptive_canonical_topk")
class AdaptiveCanonicalSAE(_CanonicalEncoder, AdaptiveEquivariantSAE):
    """Adaptive SAE encoding every pose canonicalised by the learned ``rho(g_p^-1)``."""

    config_class: ClassVar[type[AdaptiveEquivariantConfig]] = AdaptiveEquivariantConfig
    variant: ClassVar[str | None] = "adaptive_canonical"
