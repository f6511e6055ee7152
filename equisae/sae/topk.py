"""TopK sparse autoencoder (Gao et al. 2024): keep the k largest pre-activations, then ReLU.

Training uses the sparse path of :mod:`equisae.sae.stack` by default: the encoder matrix
product is the only dense one; the decoder reads only the k active rows and the encoder's
backward pass touches only the selected columns. The loss is written once, as
:meth:`TopKSAE.stacked_loss` on stacked weights: :meth:`TopKSAE.loss` runs it on a stack of one
and :func:`equisae.sae.batched.train_many` on S SAEs at once. It gives the same loss and
gradients as the dense formulation (``sparse_training=False``, up to float rounding).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from equisae.sae.base import LossOutput, SparseAutoencoder, register_architecture
from equisae.sae.config import TopKConfig, _check_k  # noqa: F401  (_check_k: imported from here)
from equisae.sae.stack import (
    SparseDecode,
    SparseLossOutput,
    Stack,
    StackedLoss,
    fast_topk,
    stacked_auxk,
    stacked_decode,
    topk_codes,
)

__all__ = [
    "SparseDecode",
    "SparseLossOutput",
    "TopKSAE",
    "fast_topk",
    "topk_activation",
]


def topk_activation(pre_acts: Tensor, k: int) -> Tensor:
    """Zero all but the k largest entries of each row of ``pre_acts``, then apply ReLU."""
    vals, idx = pre_acts.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre_acts).scatter(-1, idx, vals.relu())


@register_architecture("topk")
class TopKSAE(SparseAutoencoder):
    """The default SAE: at most ``k`` (non-negative) active latents per example
    (:class:`~equisae.sae.config.TopKConfig`).

    ``sparse_training`` selects the sparse training path of :meth:`loss` (default); the
    dense path (``False``) computes the same loss with dense matrix products.
    """

    config_class: ClassVar[type[TopKConfig]] = TopKConfig
    variant: ClassVar[str | None] = "topk"

    @property
    def k(self) -> int:
        return self.cfg.k

    @property
    def sparse_training(self) -> bool:
        """Whether :meth:`loss` takes the sparse path: a config field of TopK and wide TopK
        (default True); the other TopK-family configs have no dense path."""
        return bool(getattr(self.cfg, "sparse_training", True))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}"

    def activation(self, pre_acts: Tensor) -> Tensor:
        return topk_activation(pre_acts, self.k)

    def stacks(self) -> bool:
        """Whether :meth:`loss` is :meth:`stacked_loss` (on a stack of one), so that
        ``train_many`` may train this SAE stacked with others of its class: the sparse path of
        an unchanged TopK activation."""
        return self.sparse_training and type(self).activation is TopKSAE.activation

    def check_batch(self, batch: Tensor) -> None:
        """ValueError unless ``batch`` is a training batch of this SAE: (..., d_in)."""
        self._flatten(batch, "batch")

    def loss(self, batch: Tensor, dead_mask: Tensor | None = None) -> LossOutput:
        """As :meth:`SparseAutoencoder.loss`: :meth:`stacked_loss` on a stack of this SAE alone
        (the dense loss of the base class when not :meth:`stacks`)."""
        if not self.stacks():
            return super().loss(batch, dead_mask)
        self.check_batch(batch)
        dead = dead_mask[None] if self._count_dead(dead_mask) else None
        return Stack.of_one(self).loss(batch[None], dead).single(batch, self.d_sae)

    def stacked_loss(self, stack: Stack, batch: Tensor, dead: Tensor | None) -> StackedLoss:
        """Per-element MSE plus ``aux_coef`` AuxK of S SAEs of this class on batches
        (S, ..., d_in); ``dead`` (S, d_sae) or None."""
        target = batch.reshape(stack.s, -1, self.d_in)
        return self._topk_loss(stack, target, target, dead, tuple(batch.shape[1:-1]))

    def _topk_loss(
        self,
        stack: Stack,
        inputs: Tensor,
        target: Tensor,
        dead: Tensor | None,
        latent_lead: tuple[int, ...],
    ) -> StackedLoss:
        """The TopK loss of inputs (S, N, d_in) reconstructing ``target`` (S, N, D)."""
        b_dec = stack["b_dec"]
        centred = inputs - b_dec[:, None, : self.d_in]
        pre, idx, vals = topk_codes(stack, centred)
        recon = stacked_decode(idx, vals, stack["W_dec"]) + b_dec[:, None]
        mse = (recon - target).pow(2).mean((1, 2))
        out = StackedLoss(mse, {"mse": mse}, idx, vals.detach(), recon, target, latent_lead)
        if dead is not None:
            aux = stacked_auxk(stack, centred, pre, dead, target - recon.detach())
            out.add("auxk", stack.per_sae("aux_coef"), aux)
        return out
