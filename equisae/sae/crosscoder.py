"""Group crosscoder (Gorton, arXiv:2410.24184): read the pose-0 activation, write every pose.

The encoder is a TopK SAE encoder on ``h_0``; the decoder has one block per group element,
``W_dec`` of shape ``(d_sae, |G| d_in)`` (block ``p`` = ``W_dec[:, p d : (p+1) d]``) and
``b_dec`` of shape ``(|G| d_in,)``; the reconstruction of ``h_p`` is block ``p``. Each block row
is kept at unit norm. Comparing a latent's blocks tells what kind of feature it is: equal
blocks (cosine ~ 1 for every ``p``) mean a G-invariant feature, distinct blocks an equivariant
one (its blocks are the feature's transforms). Applied to a single activation of unknown pose,
the crosscoder treats it as the canonical pose 0.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from equisae.sae.base import (
    SAEOutput,
    _check_orbit_batch,
    register_architecture,
)
from equisae.sae.config import CrosscoderConfig
from equisae.sae.stack import Stack, StackedLoss
from equisae.sae.topk import TopKSAE

__all__ = ["GroupCrosscoder"]


@register_architecture("group_crosscoder")
class GroupCrosscoder(TopKSAE):
    """TopK crosscoder from pose 0 to all ``group_order`` poses of an orbit."""

    config_class: ClassVar[type[CrosscoderConfig]] = CrosscoderConfig
    variant: ClassVar[str | None] = "crosscoder"
    takes_orbits: ClassVar[bool] = True
    pose_convention: ClassVar[str] = "each activation as pose 0"
    reports_oracle_pose: ClassVar[bool] = True

    def __init__(self, *args: Any, **fields: Any) -> None:
        super().__init__(*args, **fields)
        d_sae, group_order, d_in = self.d_sae, self.group_order, self.d_in
        gen = torch.Generator().manual_seed(self.seed + 1)
        dtype = self.W_dec.dtype
        blocks = torch.randn(d_sae, group_order, d_in, generator=gen, dtype=torch.float64)
        blocks[:, 0] = self.W_dec.detach().double()
        blocks = blocks / blocks.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(blocks.reshape(d_sae, group_order * d_in).to(dtype))
        self.b_dec = nn.Parameter(torch.zeros(group_order * d_in, dtype=dtype))

    @property
    def group_order(self) -> int:
        return self.cfg.group_order

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_order={self.group_order}"

    # ------------------------------------------------------------------ blocks
    @property
    def decoder_blocks(self) -> Tensor:
        """Decoder as (d_sae, group_order, d_in)."""
        return self.W_dec.reshape(self.d_sae, self.group_order, self.d_in)

    @property
    def bias_blocks(self) -> Tensor:
        """Decoder bias as (group_order, d_in)."""
        return self.b_dec.reshape(self.group_order, self.d_in)

    @torch.no_grad()
    def block_cosines(self) -> Tensor:
        """Cosine between each latent's block 0 and block ``p``: (d_sae, group_order)."""
        blocks = nn.functional.normalize(self.decoder_blocks, dim=-1)
        return (blocks * blocks[:, :1]).sum(-1)

    @torch.no_grad()
    def invariant_latents(self, threshold: float = 0.9) -> Tensor:
        """Bool (d_sae,): latents whose blocks all have cosine > ``threshold`` with block 0."""
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        return self.block_cosines().min(-1).values > threshold

    def classify_latents(self, threshold: float = 0.9) -> list[str]:
        """``"invariant"`` or ``"equivariant"`` per latent (see :meth:`invariant_latents`)."""
        mask = self.invariant_latents(threshold)
        return ["invariant" if bool(m) else "equivariant" for m in mask]

    # ------------------------------------------------------------------ shapes
    def check_orbits(self, batch: Tensor, name: str = "batch") -> Tensor:
        """Validate an orbit batch ``(B, group_order, d_in)`` and return it."""
        return _check_orbit_batch(batch, self.group_order, self.d_in, name)

    # ------------------------------------------------------------------ the model
    def pre_activations(self, h: Tensor) -> Tensor:
        """``(h - b_dec[block 0]) W_enc + b_enc`` for (..., d_in) inputs taken as pose 0."""
        flat, lead = self._flatten(h)
        pre = torch.addmm(self.b_enc, flat - self.bias_blocks[0], self.W_enc)
        return pre.reshape(*lead, self.d_sae)

    def encode(self, h: Tensor) -> Tensor:
        """Latents (..., d_sae) of activations (..., d_in), each taken as the canonical pose."""
        return self.activation(self.pre_activations(h).reshape(-1, self.d_sae)).reshape(
            *h.shape[:-1], self.d_sae
        )

    def decode(self, z: Tensor, pose: int | None = None) -> Tensor:
        """All poses (..., group_order, d_in) of latents (..., d_sae), or one pose (..., d_in)."""
        flat, lead = self._flatten_latents(z)
        out = torch.addmm(self.b_dec, flat, self.W_dec).reshape(-1, self.group_order, self.d_in)
        if pose is None:
            return out.reshape(*lead, self.group_order, self.d_in)
        if isinstance(pose, bool) or not isinstance(pose, int) or not 0 <= pose < self.group_order:
            raise ValueError(f"pose must be an int in 0..{self.group_order - 1}, got {pose!r}")
        return out[:, pose].reshape(*lead, self.d_in)

    def forward(self, h: Tensor) -> SAEOutput:
        """Encode (..., d_in) as pose 0; ``recon`` holds every pose: (..., group_order, d_in)."""
        flat, lead = self._flatten(h)
        pre = torch.addmm(self.b_enc, flat - self.bias_blocks[0], self.W_enc)
        z = self.activation(pre)
        recon = torch.addmm(self.b_dec, z, self.W_dec)
        return SAEOutput(
            latents=z.reshape(*lead, self.d_sae),
            recon=recon.reshape(*lead, self.group_order, self.d_in),
            pre_acts=pre.reshape(*lead, self.d_sae),
        )

    @torch.no_grad()
    def orbit_outputs(self, acts: Tensor, pose: str = "inferred") -> tuple[Tensor, Tensor, Tensor]:
        """Latents, reconstructions and poses of orbits (N, G, d_in). ``"inferred"``: each
        activation read as the canonical pose 0 and rebuilt with block 0 (how it is deployed);
        ``"oracle"``: every pose of an orbit rebuilt from the latents of its true ``h_0``."""
        self.check_orbits(acts, "acts")
        n, order, d = acts.shape
        z = self.encode(acts.reshape(n * order, d))
        poses = torch.arange(order, device=acts.device).expand(n, order).clone()
        if pose == "oracle":
            recon = self.decode(z.reshape(n, order, -1)[:, 0])
            return z.reshape(n, order, -1), recon, poses
        recon = self.decode(z, pose=0)
        return z.reshape(n, order, -1), recon.reshape(n, order, d), torch.zeros_like(poses)

    def decoder_atoms(self) -> Tensor:
        """Every block of every latent as an atom: (d_sae * |G|, d_in)."""
        return self.decoder_blocks.detach().reshape(-1, self.d_in).clone()

    def check_batch(self, batch: Tensor) -> None:
        """ValueError unless ``batch`` is an orbit batch (B, group_order, d_in)."""
        self.check_orbits(batch)

    def stacked_loss(self, stack: Stack, batch: Tensor, dead: Tensor | None) -> StackedLoss:
        """Per-element MSE of the reconstruction of every pose from ``h_0``, plus AuxK, of S
        crosscoders on orbit batches (S, B, group_order, d_in)."""
        target = batch.reshape(stack.s, batch.shape[1], -1)
        return self._topk_loss(stack, batch[:, :, 0], target, dead, (batch.shape[1],))

    # ------------------------------------------------------------------ training hooks
    def init_from_sample(self, sample: Tensor, method: str = "geometric_median") -> None:
        """Set every bias block from a sample of orbits.

        ``sample`` is ``(B, group_order, d_in)`` or the trainer's flattened ``(B group_order, d_in)``
        (rows in orbit order); block ``p`` gets the median (or mean) of the pose-``p`` rows.
        """
        from equisae.sae.init import geometric_median

        if method == "none":
            return
        if method not in ("geometric_median", "mean"):
            raise ValueError(
                f"b_dec init method must be 'geometric_median', 'mean' or 'none', got {method!r}"
            )
        if sample.ndim == 2 and sample.shape[0] % self.group_order == 0:
            sample = sample.reshape(-1, self.group_order, sample.shape[-1])
        self.check_orbits(sample, "sample")
        centres = [
            geometric_median(sample[:, p]) if method == "geometric_median" else sample[:, p].mean(0)
            for p in range(self.group_order)
        ]
        with torch.no_grad():
            self.b_dec.copy_(torch.cat(centres).to(self.b_dec.dtype))

    def decoder_rows(self, W_dec: Tensor) -> Tensor:
        """``W_dec`` (..., d_sae, group_order d_in) as its unit-norm block rows
        (..., d_sae, group_order, d_in): each block of each latent is kept at unit norm."""
        return W_dec.view(*W_dec.shape[:-1], self.group_order, self.d_in)
