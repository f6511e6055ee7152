"""TopK sparse autoencoder (Gao et al. 2024): keep the k largest pre-activations, then ReLU.

Training uses a sparse path by default: the encoder matrix product is the only dense one;
the decoder reads only the k active rows (``F.embedding_bag``) and the encoder's backward
pass touches only the selected columns (:class:`GatherPreacts`). It gives the same loss and
gradients as the dense formulation (up to float rounding) at a fraction of the cost.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from equisae.sae.base import (
    LossOutput,
    SparseAutoencoder,
    _check_positive_int,
    register_architecture,
)

__all__ = ["GatherPreacts", "TopKSAE", "sparse_decode", "topk_activation"]


def topk_activation(pre_acts: Tensor, k: int) -> Tensor:
    """Zero all but the k largest entries of each row of ``pre_acts``, then apply ReLU."""
    vals, idx = pre_acts.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre_acts).scatter(-1, idx, vals.relu())


def _check_k(k: Any, d_sae: int) -> int:
    _check_positive_int("k", k)
    if k > d_sae:
        raise ValueError(f"k must be at most d_sae={d_sae}, got k={k}")
    return k


class GatherPreacts(torch.autograd.Function):
    """Selected pre-activations ``((h - b_dec) W_enc + b_enc)[n, idx[n, j]]`` with sparse grads.

    ``selected`` holds their values, already computed (without a graph) from the dense
    product; the backward pass only touches the selected encoder columns:
    ``grad W_enc[:, j] = sum_{(n, i): idx[n, i] = j} g[n, i] (h_n - b_dec)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        h: Tensor,
        b_dec: Tensor,
        W_enc: Tensor,
        b_enc: Tensor,
        idx: Tensor,
        selected: Tensor,
    ) -> Tensor:
        ctx.save_for_backward(h, b_dec, W_enc, idx)
        return selected.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        h, b_dec, W_enc, idx = ctx.saved_tensors
        n, k = idx.shape
        d_sae = W_enc.shape[1]
        grad = grad.contiguous()
        flat_idx = idx.reshape(-1)
        grad_b_enc = torch.zeros(d_sae, dtype=grad.dtype).index_add_(0, flat_idx, grad.reshape(-1))
        grad_h = grad_b_dec = grad_W_enc = None
        if ctx.needs_input_grad[2]:
            rows = torch.arange(n).repeat_interleave(k)
            sel = torch.sparse_coo_tensor(
                torch.stack([flat_idx, rows]),
                grad.reshape(-1),
                (d_sae, n),
                check_invariants=False,
            )
            grad_W_enc = torch.sparse.mm(sel, h - b_dec).t()
        if ctx.needs_input_grad[1]:
            grad_b_dec = -(W_enc @ grad_b_enc)
        if ctx.needs_input_grad[0]:
            grad_h = F.embedding_bag(
                idx, W_enc.t().contiguous(), per_sample_weights=grad, mode="sum"
            )
        return grad_h, grad_b_dec, grad_W_enc, grad_b_enc, None, None


def sparse_decode(idx: Tensor, vals: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    """``sum_j vals[n, j] W_dec[idx[n, j]] + b_dec``: the decoder reading only active rows."""
    return F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum") + b_dec


@register_architecture("topk")
class TopKSAE(SparseAutoencoder):
    """The default SAE: at most ``k`` (non-negative) active latents per example.

    ``sparse_training`` selects the sparse training path of :meth:`loss` (default); the
    dense path (``False``) computes the same loss with dense matrix products.
    """

    def __init__(
        self, d_in: int, d_sae: int, k: int, sparse_training: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(d_in, d_sae, **kwargs)
        self.k = _check_k(k, self.d_sae)
        self.sparse_training = bool(sparse_training)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "k": self.k, "sparse_training": self.sparse_training}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}"

    def activation(self, pre_acts: Tensor) -> Tensor:
        return topk_activation(pre_acts, self.k)

    def loss(self, batch: Tensor, dead_mask: Tensor | None = None) -> LossOutput:
        """As :meth:`SparseAutoencoder.loss`; sparse matrix products when ``sparse_training``."""
        if not self.sparse_training or type(self).activation is not TopKSAE.activation:
            return super().loss(batch, dead_mask)
        flat, lead = self._flatten(batch, "batch")
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, flat - self.b_dec, self.W_enc)
            top_vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        vals = GatherPreacts.apply(flat, self.b_dec, self.W_enc, self.b_enc, idx, top_vals)
        vals = vals.relu()
        recon = sparse_decode(idx, vals, self.W_dec, self.b_dec)
        mse = (recon - flat).pow(2).mean()
        terms: dict[str, Tensor] = {"mse": mse}
        total = mse
        aux = self._sparse_auxk(flat, pre, flat - recon.detach(), dead_mask)
        total = self._add_auxk(total, terms, aux)
        latents = torch.zeros_like(pre).scatter_(-1, idx, vals.detach())
        return LossOutput(
            total=total,
            terms=terms,
            latents=latents.reshape(*lead, self.d_sae),
            recon=recon.reshape(*lead, self.d_in),
            target=batch,
        )

    def _sparse_auxk(
        self, flat: Tensor, pre: Tensor, residual: Tensor, dead_mask: Tensor | None
    ) -> Tensor | None:
        """The AuxK term of :meth:`SparseAutoencoder.auxk_loss` on the sparse path."""
        n_dead = self._count_dead(dead_mask)
        if n_dead == 0:
            return None
        k_aux = self.aux_k_for(n_dead)
        with torch.no_grad():
            dead_vals, dead_idx = pre.masked_fill(~dead_mask, float("-inf")).topk(
                k_aux, dim=-1, sorted=False
            )
        vals = GatherPreacts.apply(flat, self.b_dec, self.W_enc, self.b_enc, dead_idx, dead_vals)
        aux_recon = F.embedding_bag(
            dead_idx, self.W_dec, per_sample_weights=vals.relu(), mode="sum"
        )
        return self.normalized_aux_error(aux_recon, residual)
