"""TopK sparse autoencoder (Gao et al. 2024): keep the k largest pre-activations, then ReLU.

Training uses a sparse path by default: the encoder matrix product is the only dense one;
the decoder reads only the k active rows (``F.embedding_bag``) and the encoder's backward
pass touches only the selected columns (:class:`GatherPreacts`). It gives the same loss and
gradients as the dense formulation (up to float rounding) at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from equisae.sae.base import LossOutput, SparseAutoencoder, register_architecture
from equisae.sae.config import TopKConfig, _check_k  # noqa: F401  (_check_k: imported from here)

__all__ = [
    "GatherPreacts",
    "SparseDecode",
    "SparseLossOutput",
    "TopKSAE",
    "dead_topk",
    "fast_topk",
    "sparse_decode",
    "topk_activation",
]


#: AuxK runs densely on the dead columns while n_dead <= this factor times k_aux (measured).
DENSE_AUX_FACTOR = 8


def fast_topk(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``x.topk(k, dim=-1, sorted=False)`` (values, indices), faster for small ``k``.

    The row is cut into chunks of ``c`` entries; the k largest entries lie in the k chunks with
    the largest maxima (each such entry's chunk has a maximum at least as large, and at most k
    chunk maxima are among the k largest entries), so two small top-k's replace one wide one.
    The same set as ``torch.topk`` (up to ties), in another order. ``c`` is the largest of
    8, 4, 2 that divides the width ``n`` with ``c * c * k <= 2 n``; else plain ``topk``.
    """
    n = x.shape[-1]
    c = next((c for c in (8, 4, 2) if n % c == 0 and c * c * k <= 2 * n), 0)
    if c == 0 or k * c >= n:
        return x.topk(k, dim=-1, sorted=False)
    lead = x.shape[:-1]
    chunks = x.reshape(*lead, n // c, c)
    top_chunks = chunks.amax(-1).topk(k, dim=-1, sorted=False).indices
    candidates = chunks.gather(-2, top_chunks[..., None].expand(*lead, k, c))
    vals, pos = candidates.reshape(*lead, k * c).topk(k, dim=-1, sorted=False)
    idx = top_chunks.gather(-1, torch.div(pos, c, rounding_mode="floor")) * c + pos % c
    return vals, idx


def topk_activation(pre_acts: Tensor, k: int) -> Tensor:
    """Zero all but the k largest entries of each row of ``pre_acts``, then apply ReLU."""
    vals, idx = pre_acts.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre_acts).scatter(-1, idx, vals.relu())


@dataclass
class SparseLossOutput(LossOutput):
    """A :class:`LossOutput` that also carries the selected latents as (indices, values).

    ``active_idx`` and ``active_vals`` are (N, k): the trainer counts fired latents and L0 from
    them; the dense ``latents`` (N, d_sae) are only built when someone reads them.
    """

    active_idx: Tensor | None = None
    active_vals: Tensor | None = None
    latent_shape: tuple[int, ...] | None = None

    @property  # type: ignore[override]
    def latents(self) -> Tensor | None:
        """Dense latents, scattered from (``active_idx``, ``active_vals``) on first access."""
        if self._latents is None and self.active_idx is not None:
            vals = self.active_vals
            dense = vals.new_zeros(*vals.shape[:-1], self.latent_shape[-1])
            dense.scatter_(-1, self.active_idx, vals)
            self._latents = dense.reshape(self.latent_shape)
        return self._latents

    @latents.setter
    def latents(self, value: Tensor | None) -> None:
        if isinstance(value, property):  # the dataclass default seen through the property
            value = None
        self._latents = value


def dead_topk(pre: Tensor, dead_mask: Tensor, k_aux: int) -> tuple[Tensor, Tensor]:
    """The ``k_aux`` largest pre-activations of the dead columns only: (values, column indices).

    Same selection as ``pre.masked_fill(~dead_mask, -inf).topk(k_aux)`` but over the
    ``n_dead`` dead columns, not all ``d_sae`` of them.
    """
    dead_cols = dead_mask.nonzero().squeeze(1)
    vals, pos = pre.index_select(-1, dead_cols).topk(k_aux, dim=-1, sorted=False)
    return vals, dead_cols[pos]


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
        grad_b_enc = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device)
        grad_b_enc.index_add_(0, flat_idx, grad.reshape(-1))
        grad_h = grad_b_dec = grad_W_enc = None
        if ctx.needs_input_grad[2]:
            rows = torch.arange(n, device=idx.device).repeat_interleave(k)
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


class SparseDecode(torch.autograd.Function):
    """``sum_j vals[n, j] W_dec[idx[n, j]]`` with a sparse weight gradient.

    Forward is ``F.embedding_bag``; backward computes ``grad W_dec`` as one sparse product
    (faster than embedding_bag's sort-based dense backward) and ``grad vals`` with
    embedding_bag's own per-sample-weight gradient.
    """

    @staticmethod
    def forward(ctx: Any, idx: Tensor, vals: Tensor, W_dec: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(idx, vals, W_dec)
        return F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        idx, vals, W_dec = ctx.saved_tensors
        grad_vals = grad_W = None
        if ctx.needs_input_grad[1]:
            with torch.enable_grad():
                v = vals.detach().requires_grad_(True)
                out = F.embedding_bag(idx, W_dec.detach(), per_sample_weights=v, mode="sum")
                (grad_vals,) = torch.autograd.grad(out, v, grad)
        if ctx.needs_input_grad[2]:
            n, k = idx.shape
            sel = torch.sparse_coo_tensor(
                torch.stack(
                    [idx.reshape(-1), torch.arange(n, device=idx.device).repeat_interleave(k)]
                ),
                vals.reshape(-1),
                (W_dec.shape[0], n),
                check_invariants=False,
            )
            grad_W = torch.sparse.mm(sel, grad.contiguous())
        return None, grad_vals, grad_W


def sparse_decode(idx: Tensor, vals: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    """``sum_j vals[n, j] W_dec[idx[n, j]] + b_dec``: the decoder reading only active rows."""
    return SparseDecode.apply(idx, vals, W_dec) + b_dec


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
        """Whether :meth:`loss` takes the sparse path: a config field of TopK and wide TopK;
        subclasses whose config has no such field define their own loss or activation."""
        return bool(getattr(self.cfg, "sparse_training", False))

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
            top_vals, idx = fast_topk(pre, self.k)
        vals = GatherPreacts.apply(flat, self.b_dec, self.W_enc, self.b_enc, idx, top_vals)
        vals = vals.relu()
        recon = sparse_decode(idx, vals, self.W_dec, self.b_dec)
        mse = (recon - flat).pow(2).mean()
        terms: dict[str, Tensor] = {"mse": mse}
        total = mse
        aux = self._sparse_auxk(flat, pre, flat - recon.detach(), dead_mask)
        total = self._add_auxk(total, terms, aux)
        return SparseLossOutput(
            total=total,
            terms=terms,
            recon=recon.reshape(*lead, self.d_in),
            target=batch,
            active_idx=idx,
            active_vals=vals.detach(),
            latent_shape=(*lead, self.d_sae),
        )

    def _sparse_auxk(
        self, flat: Tensor, pre: Tensor, residual: Tensor, dead_mask: Tensor | None
    ) -> Tensor | None:
        """The AuxK term of :meth:`SparseAutoencoder.auxk_loss`, over the dead columns only.

        With few dead latents (``n_dead <= DENSE_AUX_FACTOR * k_aux``) it is computed densely on
        the (N, n_dead) sub-problem (small GEMMs), otherwise with the sparse gather/decode.
        """
        n_dead = self._count_dead(dead_mask)
        if n_dead == 0:
            return None
        k_aux = self.aux_k_for(n_dead)
        if n_dead <= DENSE_AUX_FACTOR * k_aux:
            dead_cols = dead_mask.nonzero().squeeze(1)
            sub_pre = torch.addmm(
                self.b_enc.index_select(0, dead_cols),
                flat - self.b_dec,
                self.W_enc.index_select(1, dead_cols),
            )
            codes = topk_activation(sub_pre, k_aux)
            aux_recon = codes @ self.W_dec.index_select(0, dead_cols)
            return self.normalized_aux_error(aux_recon, residual)
        with torch.no_grad():
            dead_vals, dead_idx = dead_topk(pre, dead_mask, k_aux)
        vals = GatherPreacts.apply(flat, self.b_dec, self.W_enc, self.b_enc, dead_idx, dead_vals)
        aux_recon = SparseDecode.apply(dead_idx, vals.relu(), self.W_dec)
        return self.normalized_aux_error(aux_recon, residual)
