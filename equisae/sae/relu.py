"""ReLU sparse autoencoder with an L1 penalty (the SAELens "standard" architecture)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from equisae.sae.base import SparseAutoencoder, register_architecture
from equisae.sae.config import ReLUConfig

__all__ = ["ReLUSAE"]


@register_architecture("relu")
class ReLUSAE(SparseAutoencoder):
    """``z = ReLU(pre)``; the loss adds ``l1_coeff * sum_j |z_j| ||W_dec[j]||`` per example."""

    config_class: ClassVar[type[ReLUConfig]] = ReLUConfig
    variant: ClassVar[str | None] = "relu"

    @property
    def l1_coeff(self) -> float:
        return self.cfg.l1_coeff

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, l1_coeff={self.l1_coeff:g}"

    def activation(self, pre_acts: Tensor) -> Tensor:
        return pre_acts.relu()

    def sparsity_loss(self, latents: Tensor) -> dict[str, Tensor]:
        weighted = latents.abs() * self.W_dec.norm(dim=1)
        return {"l1": self.l1_coeff * weighted.sum(-1).mean()}
