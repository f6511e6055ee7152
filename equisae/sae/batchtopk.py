"""BatchTopK sparse autoencoder (Bussmann et al. 2024).

In training the ``k * N`` largest activations of the whole (flattened) batch are kept, so
examples share a budget of ``k`` latents on average. At inference a single learned threshold
replaces the batch selection (a JumpReLU): it is the running average of the smallest positive
activation kept by the batch selection, updated at every training forward pass.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from equisae.sae.base import register_architecture
from equisae.sae.config import BatchTopKConfig
from equisae.sae.topk import TopKSAE

__all__ = ["BatchTopKSAE", "batch_topk_activation"]


def batch_topk_activation(pre_acts: Tensor, k: int) -> Tensor:
    """Keep the ``k * N`` largest entries of ReLU(pre_acts) (N, d_sae) over the whole batch."""
    acts = pre_acts.relu()
    flat = acts.reshape(-1)
    n_keep = min(k * pre_acts.shape[0], flat.numel())
    vals, idx = flat.topk(n_keep, sorted=False)
    return torch.zeros_like(flat).scatter(0, idx, vals).reshape(pre_acts.shape)


@register_architecture("batchtopk")
class BatchTopKSAE(TopKSAE):
    """Batch-level top-k in training (``model.train()``), learned threshold in ``model.eval()``."""

    config_class: ClassVar[type[BatchTopKConfig]] = BatchTopKConfig
    variant: ClassVar[str | None] = "batchtopk"

    def __init__(self, *args: Any, **fields: Any) -> None:
        super().__init__(*args, **fields)
        self.register_buffer("threshold", torch.zeros((), dtype=self.W_dec.dtype))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.int64))

    @property
    def threshold_momentum(self) -> float:
        return self.cfg.threshold_momentum

    def activation(self, pre_acts: Tensor) -> Tensor:
        if self.training:
            z = batch_topk_activation(pre_acts, self.k)
            self._update_threshold(z)
            return z
        return torch.where(pre_acts > self.threshold, pre_acts, torch.zeros_like(pre_acts))

    @torch.no_grad()
    def _update_threshold(self, z: Tensor) -> None:
        positive = z[z > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min().to(self.threshold.dtype)
        if int(self.threshold_updates) == 0:
            self.threshold.copy_(smallest)
        else:
            m = self.threshold_momentum
            self.threshold.mul_(1 - m).add_(m * smallest)
        self.threshold_updates.add_(1)

    @torch.no_grad()
    def fold_activation_scale(self, scale: float) -> None:
        super().fold_activation_scale(scale)
        if math.isfinite(scale) and scale > 0:
            self.threshold.div_(scale)
