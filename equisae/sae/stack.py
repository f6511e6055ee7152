"""S SAEs of one class as one stacked model, and the sparse pieces their losses are built from.

Every TopK-family SAE writes its training loss once, as ``stacked_loss(stack, batch, dead)``
on a :class:`Stack`: its weights with a leading SAE dimension ``(S, ...)``, per-SAE settings
(``k``, ``aux_coef``, the lambdas) as ``(S,)`` tensors, batches ``(S, ...)`` and dead masks
``(S, d_sae)``. The model's own ``loss`` is that code on a stack of one (:meth:`Stack.of_one`,
views of the model's parameters, so gradients reach them), and
:func:`equisae.sae.batched.train_many` runs it on a stack of S copies (:meth:`Stack.of`): the
two paths share every line of the loss.

The products are sparse: the encoder GEMM is the only dense one; the backward pass of the
selected pre-activations touches only the selected encoder columns
(:class:`BatchedGatherPreacts`) and the decoder reads only the active rows
(:class:`SparseDecode`), latent ``j`` of SAE ``s`` being row ``s d_sae + j`` of the stacked
tables. Per-SAE ``k`` is one top-``k_max`` selection whose positions past each SAE's own ``k``
get weight zero (same selected set).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from equisae.sae.base import LossOutput

if TYPE_CHECKING:
    from equisae.sae.base import SparseAutoencoder

__all__ = [
    "PARAMS",
    "BatchedGatherPreacts",
    "SparseDecode",
    "SparseLossOutput",
    "Stack",
    "StackedLoss",
    "fast_topk",
    "offset_rows",
    "select_topk",
    "stacked_auxk",
    "stacked_decode",
    "topk_codes",
]

#: the weights every SAE has, first in a stack (a model's other parameters follow, by name)
PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")


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


class BatchedGatherPreacts(torch.autograd.Function):
    """Selected pre-activations ``x[s] W_enc[s] + b_enc[s]`` at ``idx``, with sparse gradients.

    ``x`` (S, N, d), ``W_enc`` (S, d, F), ``b_enc`` (S, F), ``idx`` and ``selected`` (S, N, k):
    ``selected`` holds the values, already computed without a graph from the dense product.
    The backward pass touches only the selected encoder columns, as one sparse product over the
    S SAEs laid end to end (latent ``j`` of SAE ``s`` is row ``s F + j``).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, W_enc: Tensor, b_enc: Tensor, idx: Tensor, selected: Tensor
    ) -> Tensor:
        ctx.save_for_backward(x, W_enc, idx)
        return selected.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, W_enc, idx = ctx.saved_tensors
        s, n, k = idx.shape
        d, d_sae = W_enc.shape[1:]
        flat_idx = offset_rows(idx, d_sae).reshape(-1)
        grad = grad.contiguous().reshape(-1)
        grad_b_enc = torch.zeros(s * d_sae, dtype=grad.dtype, device=grad.device)
        grad_b_enc = grad_b_enc.index_add_(0, flat_idx, grad)
        rows = torch.arange(s * n, device=idx.device).repeat_interleave(k)
        sel = torch.sparse_coo_tensor(
            torch.stack([flat_idx, rows]), grad, (s * d_sae, s * n), check_invariants=False
        )
        grad_W_enc = torch.sparse.mm(sel, x.reshape(s * n, d))
        grad_W_enc = grad_W_enc.reshape(s, d_sae, d).transpose(1, 2)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(
                flat_idx.reshape(s * n, k),
                W_enc.transpose(1, 2).reshape(s * d_sae, d),
                per_sample_weights=grad.reshape(s * n, k),
                mode="sum",
            ).reshape(s, n, d)
        return grad_x, grad_W_enc, grad_b_enc.reshape(s, d_sae), None, None


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


def offset_rows(idx: Tensor, d_sae: int) -> Tensor:
    """Latent indices (S, N, k) of each SAE shifted to rows of the stacked (S d_sae, ...) tables."""
    return idx + (torch.arange(idx.shape[0], device=idx.device) * d_sae).view(-1, 1, 1)


def stacked_decode(idx: Tensor, vals: Tensor, W_dec: Tensor) -> Tensor:
    """``sum_j vals[s, n, j] W_dec[s, idx[s, n, j]]`` for every SAE: (S, N, D), no bias."""
    s, n, k = idx.shape
    d_sae, d_out = W_dec.shape[1:]
    out = SparseDecode.apply(
        offset_rows(idx, d_sae).reshape(s * n, k),
        vals.reshape(s * n, k),
        W_dec.reshape(s * d_sae, d_out),
    )
    return out.reshape(s, n, d_out)


def select_topk(pre: Tensor, ks: Sequence[int]) -> tuple[Tensor, Tensor, Tensor | None]:
    """Top-k of each SAE's (S, N, F) pre-activations: (values, indices, keep mask or None).

    With one k for all SAEs this is ``fast_topk(k)``; otherwise ``topk(max k)`` sorted, and
    the mask (S, 1, k_max) keeps each SAE's first ``k_s`` positions.
    """
    k_max = max(ks)
    vals, idx = fast_topk(pre, k_max)
    if min(ks) == k_max:
        return vals, idx, None
    vals, order = vals.sort(dim=-1, descending=True)
    idx = idx.gather(-1, order)
    keep = torch.arange(k_max, device=pre.device) < torch.tensor(ks, device=pre.device).view(
        -1, 1, 1
    )
    return vals, idx, keep


def topk_codes(stack: Stack, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """TopK codes of centred inputs ``x`` (S, N, d): pre-activations (S, N, F, no graph), the
    selected latents (S, N, k) and their ReLU'd values (zero past each SAE's own ``k``)."""
    W_enc, b_enc = stack["W_enc"], stack["b_enc"]
    with torch.no_grad():
        pre = torch.baddbmm(b_enc[:, None], x, W_enc)
        top_vals, idx, keep = select_topk(pre, stack.ks)
    vals = BatchedGatherPreacts.apply(x, W_enc, b_enc, idx, top_vals).relu()
    if keep is not None:
        vals = torch.where(keep, vals, torch.zeros_like(vals))
    return pre, idx, vals


def stacked_auxk(
    stack: Stack,
    x: Tensor,
    pre: Tensor,
    dead: Tensor,
    residual: Tensor,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """AuxK (Gao et al. 2024) of each SAE over its dead columns (0 for one without dead latents).

    The top ``aux_k_for(n_dead)`` dead pre-activations of the centred inputs ``x`` (S, N, d)
    reconstruct the detached ``residual`` (S, N, D), scored by normalised MSE; ``transform``
    maps the (S, N, D) dead-latent reconstruction before it is scored (an orbit SAE's per-pose
    ``rho(g_p)``)."""
    W_enc, b_enc, W_dec = stack["W_enc"], stack["b_enc"], stack["W_dec"]
    n_dead = dead.sum(1)
    k_aux = [
        sae.aux_k_for(int(n)) if n > 0 else 0
        for sae, n in zip(stack.saes, n_dead.tolist(), strict=True)
    ]
    width, k_max = int(n_dead.max()), max(k_aux)
    # dead column indices of each SAE, padded (with column 0 and -inf) to the widest
    order = dead.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :width]
    is_dead = torch.arange(width, device=dead.device) < n_dead[:, None]
    cols = torch.where(is_dead, order, torch.zeros_like(order))
    with torch.no_grad():
        sub = pre.gather(2, cols[:, None].expand(-1, pre.shape[1], -1))
        sub = sub.masked_fill(~is_dead[:, None], float("-inf"))
        dead_vals, pos = sub.topk(k_max, dim=-1, sorted=min(k_aux) != k_max)
        dead_idx = cols.gather(1, pos.reshape(stack.s, -1)).reshape(pos.shape)
    vals = BatchedGatherPreacts.apply(x, W_enc, b_enc, dead_idx, dead_vals).relu()
    keep = torch.arange(k_max, device=dead.device) < torch.tensor(k_aux, device=dead.device).view(
        -1, 1, 1
    )
    vals = torch.where(keep, vals, torch.zeros_like(vals))
    aux_recon = stacked_decode(dead_idx, vals, W_dec)
    if transform is not None:
        aux_recon = transform(aux_recon)
    residual = residual.detach()
    denom = residual.pow(2).sum(-1).clamp_min(1e-12)
    nmse = ((aux_recon - residual).pow(2).sum(-1) / denom).mean(1)
    return torch.nan_to_num(nmse, nan=0.0) * (n_dead > 0)


@dataclass
class StackedLoss:
    """The loss of S SAEs: ``total`` and each term (S,), the selected latents ``idx`` and
    ``vals`` (S, N, k; values detached, zero past each SAE's ``k``), ``recon`` and ``target``
    (S, ...; one SAE's share is the shape of its batch) and the shape of one SAE's latents
    without the last dimension (``latent_lead``)."""

    total: Tensor
    terms: dict[str, Tensor]
    idx: Tensor
    vals: Tensor
    recon: Tensor
    target: Tensor
    latent_lead: tuple[int, ...]

    def add(self, name: str, weight: Tensor, value: Tensor) -> None:
        """Record a term and add ``weight * value`` (both (S,)) to the total."""
        self.terms[name] = value
        self.total = self.total + weight * value

    def single(self, batch: Tensor, d_sae: int) -> SparseLossOutput:
        """The :class:`SparseLossOutput` of a stack of one SAE, whose batch was ``batch``."""
        return SparseLossOutput(
            total=self.total[0],
            terms={name: value[0] for name, value in self.terms.items()},
            recon=self.recon[0].reshape(batch.shape),
            target=batch,
            active_idx=self.idx[0],
            active_vals=self.vals[0],
            latent_shape=(*self.latent_lead, d_sae),
        )


class Stack:
    """The weights of S SAEs of one class with a leading SAE dimension, and their settings.

    ``stack[name]`` is a stacked parameter (``W_enc`` (S, d_in, d_sae), ...; learned generators
    too); :attr:`trained` lists them in a fixed order (:data:`PARAMS` first) for the optimiser;
    :meth:`per_sae` gives a setting of every SAE as an (S,) tensor; :meth:`cached` keeps a
    constant of the stack (a fixed representation) across steps.
    """

    def __init__(self, saes: Sequence[SparseAutoencoder], tensors: dict[str, Tensor]) -> None:
        self.saes = list(saes)
        self.first = self.saes[0]
        self.s = len(self.saes)
        self.tensors = tensors
        self.trained = list(tensors.values())
        self.ks = [getattr(sae, "k", 0) for sae in self.saes]
        self._constants: dict[str, Tensor] = {}

    @staticmethod
    def names(sae: SparseAutoencoder) -> list[str]:
        """The stacked parameters of ``sae``: :data:`PARAMS`, then its others by name."""
        rest = [name for name, _ in sae.named_parameters() if name not in PARAMS]
        return [*PARAMS, *rest]

    @classmethod
    def of(cls, saes: Sequence[SparseAutoencoder]) -> Stack:
        """Copies of the weights of ``saes`` stacked into new leaf tensors (for training)."""
        names = cls.names(saes[0])
        tensors = {
            name: torch.stack([getattr(sae, name).detach() for sae in saes]).requires_grad_(True)
            for name in names
        }
        return cls(saes, tensors)

    @classmethod
    def of_one(cls, sae: SparseAutoencoder) -> Stack:
        """A stack of one: views ``(1, ...)`` of ``sae``'s own parameters (gradients reach them)."""
        return cls([sae], {name: getattr(sae, name).unsqueeze(0) for name in cls.names(sae)})

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    @property
    def device(self) -> torch.device:
        return self.tensors["W_dec"].device

    @property
    def dtype(self) -> torch.dtype:
        return self.tensors["W_dec"].dtype

    def per_sae(self, attr: str) -> Tensor:
        """``getattr(sae, attr)`` of every SAE as an (S,) tensor in the weights' dtype."""
        return self.cached(
            f"per_sae:{attr}",
            lambda: torch.tensor(
                [float(getattr(sae, attr)) for sae in self.saes],
                dtype=self.dtype,
                device=self.device,
            ),
        )

    def cached(self, key: str, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()`` once per stack (for constants: fixed representations, settings)."""
        if key not in self._constants:
            self._constants[key] = compute()
        return self._constants[key]

    def loss(self, batch: Tensor, dead: Tensor | None) -> StackedLoss:
        """The class's own loss (``stacked_loss``) of a stacked batch (S, ...); ``dead``
        (S, d_sae) bool, or None when no SAE has a dead latent."""
        return self.first.stacked_loss(self, batch, dead)  # type: ignore[attr-defined]

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the stacked weights into the S models."""
        for i, sae in enumerate(self.saes):
            for name, tensor in self.tensors.items():
                getattr(sae, name).copy_(tensor[i])
