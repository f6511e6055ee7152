"""ReLU sparse autoencoder with an L1 penalty (the SAELens "standard" architecture)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from equisae.sae.base import SparseAutoencoder, _check_finite_nonnegative, register_architecture

__all__ = ["ReLUSAE"]


@register_architecture("relu")
class ReLUSAE(SparseAutoencoder):
    """``z = ReLU(pre)``; the loss adds ``l1_coeff * sum_j |z_j| ||W_dec[j]||`` per example."""

    variant: ClassVar[str | None] = "relu"
    label: ClassVar[str] = "ReLU + L1"
    colour: ClassVar[str] = "tab:brown"

    def __init__(self, d_in: int, d_sae: int, l1_coeff: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(d_in, d_sae, **kwargs)
        self.l1_coeff = _check_finite_nonnegative("l1_coeff", l1_coeff)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "l1_coeff": self.l1_coeff}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, l1_coeff={self.l1_coeff:g}"

    def activation(self, pre_acts: Tensor) -> Tensor:
        return pre_acts.relu()

    def sparsity_loss(self, latents: Tensor) -> dict[str, Tensor]:
        weighted = latents.abs() * self.W_dec.norm(dim=1)
        return {"l1": self.l1_coeff * weighted.sum(-1).mean()}
