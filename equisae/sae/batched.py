"""Train many SAEs of one shape as one stacked model (seeds, k values, learning rates of a sweep).

:func:`train_many` gives each SAE exactly what :func:`~equisae.sae.train.train_sae` would:
its own batch stream, ``b_dec`` initialisation and activation scale, learning-rate schedule,
Adam state, per-SAE gradient clipping, parallel-gradient removal, decoder renormalisation,
dead-latent tracking, AuxK and metric history. The arithmetic runs on stacked weights
``(S, ...)`` with batched matrix products, so a step costs about as many Python-level operations
as one SAE's step: at sweep sizes, where a step is dominated by per-operation overhead, S SAEs
train several times faster than one after another (``benchmarks/bench_sae.py --batched``).

The stacked path covers the TopK family (:class:`~equisae.sae.topk.TopKSAE`,
:class:`~equisae.sae.wide.WideSAE`, :class:`~equisae.sae.crosscoder.GroupCrosscoder`) and the
equivariant SAEs (:class:`~equisae.sae.equivariant.EquivariantSAE`,
:class:`~equisae.sae.adaptive.AdaptiveEquivariantSAE` and the canonicalising
:class:`~equisae.sae.canonical.CanonicalEquivariantSAE` /
:class:`~equisae.sae.canonical.AdaptiveCanonicalSAE`, C_n and D_n): their orbit losses are
re-implemented on stacked orbit batches (S, B, |G|, d) with per-SAE ``rho`` (S, |G|, d, d);
learned generators are stacked (S, d, d) parameters with their own Adam state, clipped with
the SAE's other gradients. Per-SAE ``k`` is handled with one top-``k_max`` selection whose
positions past each SAE's own ``k`` get weight zero (same selected set). Sums follow
``train_sae``'s order: in float64 the results are equal to 1e-10, in float32 to rounding.
:func:`can_stack` is the one decision point: a subclass that overrides a method the stacked
loss re-implements (or SAEs of different groups or equivariance bases) is trained one by one
with ``train_sae`` (same results, no speed-up).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from equisae.device import resolve_device
from equisae.groups import generator_names
from equisae.sae.adaptive import AdaptiveEquivariantSAE, generator_diagnostics
from equisae.sae.base import SparseAutoencoder
from equisae.sae.canonical import AdaptiveCanonicalSAE, CanonicalEquivariantSAE
from equisae.sae.crosscoder import GroupCrosscoder
from equisae.sae.equivariant import GENERATOR_ATTRS, EquivariantSAE
from equisae.sae.topk import SparseDecode, TopKSAE, fast_topk
from equisae.sae.train import (
    MetricLog,
    TrainConfig,
    TrainResult,
    check_finite_batch,
    head_sample,
    lr_factor,
    minibatches,
    nonfinite_loss_cause,
    prepare_sae,
    resolve_n_steps,
    train_sae,
)

__all__ = ["BatchedGatherPreacts", "can_stack", "train_many"]

PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")
#: orbit losses the stacked path re-implements -> how the encoder reads a pose
ORBIT_LOSSES: dict[Callable[..., Any], str] = {
    EquivariantSAE.loss: "raw",  # also AdaptiveEquivariantSAE (it inherits the loss)
    AdaptiveCanonicalSAE.loss: "canonical",  # rho(g_p)^-1 (h_p - b_dec), every pose
    CanonicalEquivariantSAE.loss: "canonical_mean",  # one latent per orbit from their mean
}
ADAM_EPS = 1e-8  # torch.optim.Adam's default, as in train_sae


class BatchedGatherPreacts(torch.autograd.Function):
    """Stacked :class:`~equisae.sae.topk.GatherPreacts`: selected ``centred[s] W_enc[s] + b_enc[s]``.

    ``centred`` (S, N, d), ``W_enc`` (S, d, F), ``b_enc`` (S, F), ``idx`` and ``selected``
    (S, N, k). The backward pass touches only the selected encoder columns, as one sparse
    product over the S SAEs laid end to end (latent ``j`` of SAE ``s`` is row ``s F + j``).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, centred: Tensor, W_enc: Tensor, b_enc: Tensor, idx: Tensor, selected: Tensor
    ) -> Tensor:
        ctx.save_for_backward(centred, W_enc, idx)
        return selected.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        centred, W_enc, idx = ctx.saved_tensors
        s, n, k = idx.shape
        d, d_sae = W_enc.shape[1:]
        flat_idx = _offset(idx, d_sae).reshape(-1)
        grad = grad.contiguous().reshape(-1)
        grad_b_enc = torch.zeros(s * d_sae, dtype=grad.dtype, device=grad.device)
        grad_b_enc = grad_b_enc.index_add_(0, flat_idx, grad)
        rows = torch.arange(s * n, device=idx.device).repeat_interleave(k)
        sel = torch.sparse_coo_tensor(
            torch.stack([flat_idx, rows]), grad, (s * d_sae, s * n), check_invariants=False
        )
        grad_W_enc = torch.sparse.mm(sel, centred.reshape(s * n, d))
        grad_W_enc = grad_W_enc.reshape(s, d_sae, d).transpose(1, 2)
        grad_centred = F.embedding_bag(
            flat_idx.reshape(s * n, k),
            W_enc.transpose(1, 2).reshape(s * d_sae, d),
            per_sample_weights=grad.reshape(s * n, k),
            mode="sum",
        ).reshape(s, n, d)
        return grad_centred, grad_W_enc, grad_b_enc.reshape(s, d_sae), None, None


def _offset(idx: Tensor, d_sae: int) -> Tensor:
    """Latent indices (S, N, k) of each SAE shifted to rows of the stacked (S d_sae, ...) tables."""
    return idx + (torch.arange(idx.shape[0], device=idx.device) * d_sae).view(-1, 1, 1)


def _stacked_decode(idx: Tensor, vals: Tensor, W_dec: Tensor) -> Tensor:
    """``sum_j vals[s, n, j] W_dec[s, idx[s, n, j]]`` for every SAE: (S, N, D), no bias."""
    s, n, k = idx.shape
    d_sae, d_out = W_dec.shape[1:]
    out = SparseDecode.apply(
        _offset(idx, d_sae).reshape(s * n, k),
        vals.reshape(s * n, k),
        W_dec.reshape(s * d_sae, d_out),
    )
    return out.reshape(s, n, d_out)


def _select(pre: Tensor, ks: list[int]) -> tuple[Tensor, Tensor, Tensor | None]:
    """Top-k of each SAE's (S, N, F) pre-activations: (values, indices, keep mask or None).

    With one k for all SAEs this is ``topk(k)``; otherwise ``topk(max k)`` sorted, and the
    mask (S, 1, k_max) keeps each SAE's first ``k_s`` positions.
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


def can_stack(saes: Sequence[SparseAutoencoder]) -> bool:
    """Whether :func:`train_many` trains ``saes`` as one stacked model (see the module doc)."""
    first = saes[0]
    kind = type(first)
    if not isinstance(first, TopKSAE) or kind.activation is not TopKSAE.activation:
        return False
    if kind.loss not in (TopKSAE.loss, GroupCrosscoder.loss, *ORBIT_LOSSES):
        return False
    if kind.loss in ORBIT_LOSSES and not _orbit_stackable(saes):
        return False
    shapes = {tuple(p.shape for p in _params(sae)) for sae in saes}
    dtypes = {sae.W_dec.dtype for sae in saes}
    groups = {getattr(sae, "group_order", 1) for sae in saes}
    return all(type(s) is kind for s in saes) and len(shapes) == len(dtypes) == len(groups) == 1


def _orbit_stackable(saes: Sequence[Any]) -> bool:
    """Equivariant SAEs stack when their loss is built only from the methods :class:`_OrbitStack`
    re-implements, and they share the group, the learned/fixed representation and (adaptive)
    the equivariance bases; lambdas, k, aux_coef and the generators themselves may differ."""
    kind = type(saes[0])
    if not all(type(sae) is kind for sae in saes):
        return False
    methods = {
        "encode_centred": (EquivariantSAE.encode_centred,),
        "_finish_loss": (EquivariantSAE._finish_loss,),
        "auxk_loss": (SparseAutoencoder.auxk_loss,),
        "representation": (EquivariantSAE.representation,),
    }
    if kind.learns_representation:
        methods["_representation_terms"] = (AdaptiveEquivariantSAE._representation_terms,)
        methods["representation_inverse"] = (AdaptiveEquivariantSAE.representation_inverse,)
    else:
        methods["_representation_terms"] = (EquivariantSAE._representation_terms,)
        methods["representation_inverse"] = (EquivariantSAE.representation_inverse,)
    if any(getattr(kind, name) not in allowed for name, allowed in methods.items()):
        return False
    learned = kind.learns_representation
    keys = {(sae.group.name, getattr(sae, "equivariance_bases", None)) for sae in saes}
    params_ok = all(
        isinstance(gen, torch.nn.Parameter) == learned
        for sae in saes
        for gen in sae.generators().values()
    )
    return len(keys) == 1 and params_ok


def _params(sae: SparseAutoencoder) -> list[Tensor]:
    return [getattr(sae, name) for name in PARAMS]


class _Stack:
    """The stacked weights, Adam state and per-SAE settings of S TopK-family SAEs."""

    def __init__(self, saes: Sequence[TopKSAE], cfgs: Sequence[TrainConfig]) -> None:
        self.saes = saes
        self.cfgs = cfgs
        self.s = len(saes)
        first = saes[0]
        self.crosscoder = isinstance(first, GroupCrosscoder)
        self.group_order = getattr(first, "group_order", 1)
        self.d_in, self.d_sae = first.d_in, first.d_sae
        self.ks = [sae.k for sae in saes]
        self.device = dev = first.W_dec.device
        self.params = [
            torch.stack([p.detach() for p in tensors]).requires_grad_(True)
            for tensors in zip(*(_params(sae) for sae in saes), strict=True)
        ]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.n_updates = 0
        self.aux_coef = torch.tensor(
            [sae.aux_coef for sae in saes], dtype=first.W_dec.dtype, device=dev
        )
        self.beta1 = torch.tensor([c.betas[0] for c in cfgs], dtype=torch.float64, device=dev)
        self.beta2 = torch.tensor([c.betas[1] for c in cfgs], dtype=torch.float64, device=dev)

    def diagnostics(self) -> list[dict[str, float]]:
        """Each SAE's logged model state (``training_diagnostics``): none for the TopK family."""
        return [{} for _ in range(self.s)]

    # ------------------------------------------------------------------ the loss
    def loss(self, batch: Tensor, dead: Tensor | None) -> dict[str, Tensor]:
        """Per-SAE loss terms of a stacked batch (S, ...); ``dead`` (S, F) bool or None."""
        W_enc, b_enc, W_dec, b_dec = self.params[:4]
        s, d = self.s, self.d_in
        if self.crosscoder:
            target = batch.reshape(s, batch.shape[1], -1)
            inputs = batch[:, :, 0]
        else:
            target = batch.reshape(s, -1, d)
            inputs = target
        centred = inputs - b_dec[:, None, :d]
        with torch.no_grad():
            pre = torch.baddbmm(b_enc[:, None], centred, W_enc)
            top_vals, idx, keep = _select(pre, self.ks)
        vals = BatchedGatherPreacts.apply(centred, W_enc, b_enc, idx, top_vals).relu()
        if keep is not None:
            vals = torch.where(keep, vals, torch.zeros_like(vals))
        recon = _stacked_decode(idx, vals, W_dec) + b_dec[:, None]
        mse = (recon - target).pow(2).mean((1, 2))
        terms = {"mse": mse}
        out = {"total": mse, "terms": terms, "idx": idx, "vals": vals.detach()}
        out["recon"], out["target"] = recon.detach(), target
        if dead is not None:
            aux = self._auxk(centred, pre, dead, target - recon.detach())
            terms["auxk"] = aux
            out["total"] = mse + self.aux_coef * aux
        return out

    def _auxk(
        self,
        centred: Tensor,
        pre: Tensor,
        dead: Tensor,
        residual: Tensor,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """AuxK of each SAE over its dead columns (0 for an SAE without dead latents).

        ``transform`` maps the (S, N, D) dead-latent reconstruction before it is scored (the
        per-pose ``rho(g_p)`` of an orbit SAE's ``decode_fn``)."""
        W_enc, b_enc, W_dec, _ = self.params[:4]
        n_dead = dead.sum(1)
        k_aux = [
            sae.aux_k_for(int(n)) if n > 0 else 0
            for sae, n in zip(self.saes, n_dead.tolist(), strict=True)
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
            dead_idx = cols.gather(1, pos.reshape(self.s, -1)).reshape(pos.shape)
        vals = BatchedGatherPreacts.apply(centred, W_enc, b_enc, dead_idx, dead_vals).relu()
        keep = torch.arange(k_max, device=dead.device) < torch.tensor(
            k_aux, device=dead.device
        ).view(-1, 1, 1)
        vals = torch.where(keep, vals, torch.zeros_like(vals))
        aux_recon = _stacked_decode(dead_idx, vals, W_dec)
        if transform is not None:
            aux_recon = transform(aux_recon)
        residual = residual.detach()
        denom = residual.pow(2).sum(-1).clamp_min(1e-12)
        nmse = ((aux_recon - residual).pow(2).sum(-1) / denom).mean(1)
        return torch.nan_to_num(nmse, nan=0.0) * (n_dead > 0)

    # ------------------------------------------------------------------ the update
    def _decoder_rows(self, tensor: Tensor) -> Tensor:
        """(S, F, D) decoder-shaped tensor as unit-norm rows: (S, F, |G|, d) for a crosscoder."""
        if self.crosscoder:
            return tensor.view(self.s, self.d_sae, self.group_order, self.d_in)
        return tensor

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Per SAE (and per block): drop the decoder gradient along each decoder row."""
        w = self._decoder_rows(self.params[2])
        g = self._decoder_rows(self.params[2].grad)
        parallel = (g * w).sum(-1, keepdim=True) / w.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)
        g.sub_(parallel * w)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Per SAE (and per block): decoder rows to unit norm."""
        w = self._decoder_rows(self.params[2])
        w.div_(w.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def clip_grads(self, step: int) -> None:
        """``clip_grad_norm_`` of each SAE's gradients with its own ``grad_clip``."""
        norms = torch.stack(
            [p.grad.reshape(self.s, -1).norm(dim=1) for p in self.params], dim=1
        ).norm(dim=1)
        if not bool(torch.isfinite(norms).all()):
            bad = int((~torch.isfinite(norms)).nonzero()[0])
            raise FloatingPointError(
                f"non-finite gradient at step {step} in SAE {bad} (loss was finite)"
            )
        clips = [c.grad_clip for c in self.cfgs]
        if all(c is None for c in clips):
            return
        max_norm = torch.tensor(
            [math.inf if c is None else c for c in clips], dtype=norms.dtype, device=norms.device
        )
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for p in self.params:
            p.grad.mul_(coef.view(-1, *[1] * (p.ndim - 1)).to(p.dtype))

    @torch.no_grad()
    def adam(self, lrs: Tensor) -> None:
        """One elementwise Adam step (as ``torch.optim.Adam``) with per-SAE lr and betas."""
        self.n_updates += 1
        t = self.n_updates
        # float64 per-SAE constants, cast to each parameter's dtype (as Python scalars would be)
        step_size = lrs / (1 - self.beta1**t)
        bc2_sqrt = (1 - self.beta2**t).sqrt()
        b1, b2 = self.beta1, self.beta2
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            shape = (-1, *[1] * (p.ndim - 1))
            grad = p.grad
            m.lerp_(grad, (1 - b1).view(shape).to(p.dtype))
            v.mul_(b2.view(shape).to(p.dtype)).addcmul_(
                grad, grad * (1 - b2).view(shape).to(p.dtype)
            )
            denom = (v.sqrt() / bc2_sqrt.view(shape).to(p.dtype)).add_(ADAM_EPS)
            p.sub_(step_size.view(shape).to(p.dtype) * m / denom)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the stacked weights into the S models."""
        for i, sae in enumerate(self.saes):
            for name, p in zip(PARAMS, self.params[:4], strict=True):
                getattr(sae, name).copy_(p[i])


def _per_pose(u: Tensor, rho: Tensor) -> Tensor:
    """``rho[s, p] @ u[s, b, p]`` for (S, B, G, d) and (S, G, d, d): one batched product."""
    return torch.einsum("sbpj,spij->sbpi", u, rho)


class _OrbitStack(_Stack):
    """The stacked weights, generators and Adam state of S equivariant SAEs of one class.

    The loss is each class's own orbit loss (``EquivariantSAE.loss``, its adaptive and
    canonicalising variants), written for stacked tensors: batches (S, B, G, d), the
    representation (S, G, d, d) built from per-SAE generators ((S, d, d) parameters with
    their own Adam state when learned, fixed stacks of ``rho`` otherwise).
    """

    def __init__(self, saes: Sequence[TopKSAE], cfgs: Sequence[TrainConfig]) -> None:
        super().__init__(saes, cfgs)
        first: Any = saes[0]
        self.encoder = ORBIT_LOSSES[type(first).loss]
        self.group = first.group
        self.group_order = first.group_order
        self.learned = bool(first.learns_representation)
        self.gen_attrs = [GENERATOR_ATTRS[name] for name in generator_names(first.group)]
        self.inverse_index = list(first._inverse_index)
        dtype = first.W_dec.dtype
        # the canonical-mean variant has no invariance term (and no lambda_inv field)
        weights = [0.0 if self.encoder == "canonical_mean" else sae.lambda_inv for sae in saes]
        self.lambda_inv = torch.tensor(weights, dtype=dtype, device=self.device)
        if self.learned:
            self.gens = [
                torch.stack([getattr(sae, a).detach() for sae in saes]).requires_grad_(True)
                for a in self.gen_attrs
            ]
            self.params += self.gens
            self.gen_starts = [sae.generator_starts() for sae in saes]
            self.gen_names = list(generator_names(first.group))
            self.exp_avg += [torch.zeros_like(g) for g in self.gens]
            self.exp_avg_sq += [torch.zeros_like(g) for g in self.gens]
            self.lambda_eq = torch.tensor(
                [sae.lambda_eq for sae in saes], dtype=dtype, device=self.device
            )
            self.bases = first.equivariance_bases
            self.compose = first._compose_table
        else:
            with torch.no_grad():
                self.rho_fixed = torch.stack([sae.representation().detach() for sae in saes])
                self.rho_inv_fixed = (
                    torch.stack([sae.representation_inverse().detach() for sae in saes])
                    if self.encoder != "raw"
                    else None
                )

    def diagnostics(self) -> list[dict[str, float]]:
        """Each SAE's ``training_diagnostics`` from the stacked generators ({} when fixed)."""
        if not self.learned:
            return [{} for _ in range(self.s)]
        return [
            generator_diagnostics(
                self.group,
                {n: g[i] for n, g in zip(self.gen_names, self.gens, strict=True)},
                starts,
            )
            for i, starts in enumerate(self.gen_starts)
        ]

    def representation(self) -> Tensor:
        """``rho(g)`` of every SAE and element (S, G, d, d), as ``representation_matrices``."""
        if not self.learned:
            return self.rho_fixed
        rot = self.gens[0]
        n = self.group.n if len(self.gens) > 1 else self.group_order
        powers = [torch.eye(self.d_in, dtype=rot.dtype, device=rot.device).expand_as(rot)]
        for _ in range(1, n):
            powers.append(powers[-1] @ rot)
        stacked = torch.stack(powers, dim=1)
        if len(self.gens) == 1:
            return stacked
        return torch.cat([stacked, stacked @ self.gens[1][:, None]], dim=1)

    def loss(self, batch: Tensor, dead: Tensor | None) -> dict[str, Tensor]:
        """Per-SAE orbit loss terms of a stacked orbit batch (S, B, G, d)."""
        W_enc, b_enc, W_dec, b_dec = self.params[:4]
        s, b, g, d = batch.shape
        rho = self.representation()
        centred = batch - b_dec[:, None, None]
        if self.encoder == "raw":
            enc_in = centred
        else:
            inverse = self.rho_inv_fixed if not self.learned else rho[:, self.inverse_index]
            enc_in = _per_pose(centred, inverse)
            if self.encoder == "canonical_mean":
                enc_in = enc_in.mean(2)
        flat = enc_in.reshape(s, -1, d)
        with torch.no_grad():
            pre = torch.baddbmm(b_enc[:, None], flat, W_enc)
            top_vals, idx, keep = _select(pre, self.ks)
        vals = BatchedGatherPreacts.apply(flat, W_enc, b_enc, idx, top_vals).relu()
        if keep is not None:
            vals = torch.where(keep, vals, torch.zeros_like(vals))
        u = _stacked_decode(idx, vals, W_dec)  # (S, N, d), no bias
        if self.encoder == "canonical_mean":
            recon = torch.einsum("sbj,spij->sbpi", u, rho)
        else:
            recon = _per_pose(u.view(s, b, g, d), rho)
        recon = recon + b_dec[:, None, None]
        mse = (recon - batch).pow(2).mean((1, 2, 3))
        terms = {"mse": mse}
        total = mse
        if self.encoder != "canonical_mean":
            z = torch.zeros(s, flat.shape[1], self.d_sae, dtype=vals.dtype, device=vals.device)
            z = z.scatter(-1, idx, vals)
            z = z.view(s, b, g, self.d_sae)
            inv = (z - z.mean(2, keepdim=True)).pow(2).sum((1, 2, 3)) / float(b * g * d)
            terms["invariance"] = inv
            total = total + self.lambda_inv * inv
        if self.learned:
            eq = self._equivariance(batch, b_dec, rho)
            terms["equivariance"] = eq
            total = total + self.lambda_eq * eq
        if dead is not None:
            if self.encoder == "raw":
                residual = (batch - recon.detach()).reshape(s, -1, d)

                def transform(a: Tensor) -> Tensor:
                    return _per_pose(a.view(s, b, g, d), rho).reshape(s, -1, d)

                aux = self._auxk(flat, pre, dead, residual, transform)
            else:
                aux = self._auxk(flat, pre, dead, flat - u.detach())
            terms["auxk"] = aux
            total = total + self.aux_coef * aux
        return {
            "total": total,
            "terms": terms,
            "idx": idx,
            "vals": vals.detach(),
            "recon": recon.detach(),
            "target": batch,
        }

    def _equivariance(self, batch: Tensor, b_dec: Tensor, rho: Tensor) -> Tensor:
        """The adaptive ``lambda_eq`` term of each SAE (``_representation_terms``), b detached."""
        base = batch - b_dec.detach()[:, None, None]
        if self.bases == "canonical":
            pred = torch.einsum("spij,sbj->sbpi", rho, base[:, :, 0])
            return (base - pred).pow(2).sum((1, 2, 3)) / float(batch[0].numel())
        target = base[:, :, self.compose]  # (S, B, p, q, d): h_{g_p g_q}
        pred = torch.einsum("spij,sbqj->sbpqi", rho, base)
        return (target - pred).pow(2).sum((1, 2, 3, 4)) / float(batch[0].numel() * self.group_order)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the stacked weights (and learned generators) into the S models."""
        super().write_back()
        if self.learned:
            for i, sae in enumerate(self.saes):
                for attr, gen in zip(self.gen_attrs, self.gens, strict=True):
                    getattr(sae, attr).copy_(gen[i])


def _batch_streams(
    saes: Sequence[SparseAutoencoder],
    data: Any,
    cfgs: Sequence[TrainConfig],
    batch_size: int | None,
    seeds: Sequence[int] | None,
) -> list[Iterable[Tensor]]:
    """One batch iterable per SAE: given as such, or drawn from a tensor (shared or per SAE)."""
    n = len(saes)
    if isinstance(data, Tensor) or (
        isinstance(data, Sequence) and data and all(isinstance(t, Tensor) for t in data)
    ):
        tensors = [data] * n if isinstance(data, Tensor) else list(data)
        if batch_size is None:
            raise ValueError("batch_size is required when data is a tensor (or a list of them)")
        seeds = [c.seed for c in cfgs] if seeds is None else list(seeds)
        if len(tensors) != n or len(seeds) != n:
            raise ValueError(
                f"need one data tensor and one seed per SAE ({n}), "
                f"got {len(tensors)} tensors and {len(seeds)} seeds"
            )
        return [
            minibatches(t, batch_size, resolve_n_steps(c, None), seed=seed)
            for t, c, seed in zip(tensors, cfgs, seeds, strict=True)
        ]
    if not isinstance(data, Sequence) or len(data) != n:
        raise ValueError(
            f"data must be a tensor, a list of {n} tensors or a list of {n} batch iterables"
        )
    return list(data)


def _configs(cfg: TrainConfig | Sequence[TrainConfig] | None, n: int) -> list[TrainConfig]:
    if cfg is None or isinstance(cfg, TrainConfig):
        return [cfg or TrainConfig()] * n
    cfgs = list(cfg)
    if len(cfgs) != n or not all(isinstance(c, TrainConfig) for c in cfgs):
        raise ValueError(f"cfg must be a TrainConfig or a list of {n} of them, got {cfg!r}")
    return cfgs


def train_many(
    saes: Sequence[SparseAutoencoder],
    data: Tensor | Sequence[Tensor] | Sequence[Iterable[Tensor]],
    cfg: TrainConfig | Sequence[TrainConfig] | None = None,
    *,
    batch_size: int | None = None,
    seeds: Sequence[int] | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> list[TrainResult]:
    """Train ``saes`` in place, each as ``train_sae`` would, as one stacked model when possible.

    ``data``: one batch iterable per SAE (as ``train_sae`` takes), or a tensor (shared) or a
    list of tensors (one per SAE) from which each SAE draws ``minibatches(data, batch_size,
    n_steps, seed)`` with its own seed (``seeds``, default each config's ``seed``). ``cfg``:
    one config for all or one per SAE; they may differ in everything but the number of steps.
    Returns one :class:`TrainResult` per SAE, equal (to float rounding) to ``train_sae``'s.
    ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``, see :func:`equisae.device.resolve_device`):
    the SAEs are moved there and every batch follows them; None keeps them where they are.
    """
    saes = list(saes)
    if not saes or not all(isinstance(s, SparseAutoencoder) for s in saes):
        raise ValueError("saes must be a non-empty list of SparseAutoencoder")
    cfgs = _configs(cfg, len(saes))
    streams = _batch_streams(saes, data, cfgs, batch_size, seeds)
    if device is not None:
        where = resolve_device(device)
        for sae in saes:
            sae.to(where)
    if not can_stack(saes):
        return [
            train_sae(sae, batches, c, progress=progress, device=device)
            for sae, batches, c in zip(saes, streams, cfgs, strict=True)
        ]
    n_steps_all = {resolve_n_steps(c, b) for c, b in zip(cfgs, streams, strict=True)}
    if len(n_steps_all) != 1:
        raise ValueError(f"all SAEs must train for the same number of steps, got {n_steps_all}")
    return _train_stacked(saes, streams, cfgs, n_steps_all.pop())


def _train_stacked(
    saes: list[SparseAutoencoder],
    streams: list[Iterable[Tensor]],
    cfgs: list[TrainConfig],
    n_steps: int,
) -> list[TrainResult]:
    """The stacked training loop of :func:`train_many`."""
    iterators: list[Iterator[Tensor]] = []
    scales: list[float] = []
    for sae, batches, c in zip(saes, streams, cfgs, strict=True):
        torch.manual_seed(c.seed)
        it = iter(batches)
        where = sae.W_dec.device  # the batches follow the SAE (no copy on the CPU)
        head = [
            b.to(where) if isinstance(b, Tensor) else b
            for b in itertools.islice(it, c.init_batches)
        ]
        scales.append(prepare_sae(sae, head_sample(head, sae.d_in), c))
        iterators.append(itertools.chain(head, it))
    orbit = type(saes[0]).loss in ORBIT_LOSSES
    stack = (_OrbitStack if orbit else _Stack)(saes, cfgs)  # type: ignore[arg-type]
    s, d_sae, dev = stack.s, stack.d_sae, stack.device
    scale_t = torch.tensor(scales, dtype=torch.float64, device=dev)
    dead_after = torch.tensor([c.dead_after for c in cfgs], device=dev)
    use_auxk = torch.tensor([c.use_auxk for c in cfgs], device=dev)
    since_fired = torch.zeros(s, d_sae, dtype=torch.long, device=dev)
    logs = [MetricLog(n_steps, c.log_every) for c in cfgs]
    start = time.perf_counter()
    for step in range(n_steps):
        batch = _next_batch(iterators, step, scale_t, dev)
        dead = (since_fired >= dead_after[:, None]) & use_auxk[:, None]
        has_dead = dead.any(1)
        out = stack.loss(batch, dead if bool(has_dead.any()) else None)
        _check_losses(out["total"].detach(), step, stack.params, batch)
        for p in stack.params:
            p.grad = None
        out["total"].sum().backward()
        stack.remove_parallel_grads()
        stack.clip_grads(step)
        stack.adam(_lrs(cfgs, step, n_steps, dev))
        stack.normalize_decoder()
        rows = _step_rows(out, has_dead, scale_t, since_fired, stack.d_in)
        dead_frac = (since_fired >= dead_after[:, None]).double().mean(1).tolist()
        next_lrs = _lrs(cfgs, step + 1, n_steps).tolist()
        logged = []
        for i, row in enumerate(rows):
            row["dead_fraction"] = dead_frac[i]
            if logs[i].add(step, row, next_lrs[i]) is not None:
                logged.append(i)
        if logged:
            diagnostics = stack.diagnostics()
            for i in logged:
                logs[i].history[-1].update(diagnostics[i])
    seconds = time.perf_counter() - start
    stack.write_back()
    results = []
    for i, (sae, c) in enumerate(zip(saes, cfgs, strict=True)):
        if scales[i] != 1.0:
            sae.fold_activation_scale(scales[i])
        sae.eval()
        results.append(
            TrainResult(
                history=logs[i].history,
                final=dict(logs[i].history[-1]) if logs[i].history else {},
                dead_mask=(since_fired[i] >= c.dead_after).cpu(),
                activation_scale=scales[i],
                n_steps=n_steps,
                seconds=seconds,
                config=asdict(c),
            )
        )
    return results


def _lrs(
    cfgs: Sequence[TrainConfig], step: int, n_steps: int, device: torch.device | None = None
) -> Tensor:
    """Each SAE's learning rate at ``step`` (the LambdaLR schedule of ``train_sae``)."""
    return torch.tensor(
        [c.lr * lr_factor(step, n_steps, c) for c in cfgs], dtype=torch.float64, device=device
    )


def _next_batch(
    iterators: list[Iterator[Tensor]], step: int, scales: Tensor, device: torch.device
) -> Tensor:
    """The next batch of every SAE, scaled, stacked (S, ...) on ``device`` and checked."""
    batches = []
    for i, it in enumerate(iterators):
        try:
            batches.append(next(it))
        except StopIteration:
            raise ValueError(f"the batches of SAE {i} ran out at step {step}") from None
    shapes = {tuple(b.shape) for b in batches}
    if len(shapes) != 1:
        raise ValueError(f"all SAEs need batches of one shape at step {step}, got {shapes}")
    stacked = torch.stack(batches).to(device)  # no copy when already there (the CPU)
    if bool((scales != 1.0).any()):
        stacked = stacked * scales.to(stacked.dtype).view(-1, *[1] * (stacked.ndim - 1))
    if not bool(torch.isfinite(stacked).all()):
        for i, b in enumerate(stacked):
            try:
                check_finite_batch(b, step)
            except FloatingPointError as exc:
                raise FloatingPointError(f"{exc} (SAE {i})") from None
    return stacked


def _check_losses(total: Tensor, step: int, params: list[Tensor], batch: Tensor) -> None:
    """FloatingPointError naming the step, the SAE and the cause of a non-finite loss
    (:func:`equisae.sae.train.nonfinite_loss_cause` on that SAE's weights and batch)."""
    finite = torch.isfinite(total)
    if bool(finite.all()):
        return
    i = int((~finite).nonzero()[0])
    cause = nonfinite_loss_cause([p[i] for p in params], batch[i])
    raise FloatingPointError(f"non-finite loss at step {step} in SAE {i} ({cause})")


def _step_rows(
    out: dict[str, Tensor], has_dead: Tensor, scales: Tensor, since_fired: Tensor, d_in: int
) -> list[dict[str, float]]:
    """Per-SAE metric rows (as ``train_sae``'s); updates ``since_fired`` (S, F) in place."""
    s, d_sae = since_fired.shape
    idx, vals = out["idx"], out["vals"]
    nonzero = vals != 0
    fired = torch.zeros(s * d_sae, dtype=torch.bool, device=since_fired.device)
    fired[_offset(idx, d_sae)[nonzero]] = True
    since_fired += idx.shape[1]
    since_fired[fired.view(s, d_sae)] = 0
    l0 = nonzero.sum(-1).double().mean(1)
    target = out["target"].reshape(s, -1, d_in)
    err = (out["recon"].reshape(target.shape) - target).pow(2)
    var = (target - target.mean(1, keepdim=True)).pow(2).sum((1, 2))
    mse = err.mean((1, 2)).double() / scales.double() ** 2
    fvu = err.sum((1, 2)) / var.clamp_min(1e-12)
    cols = {"loss": out["total"].detach()}
    cols.update({f"loss_{name}": v.detach() for name, v in out["terms"].items()})
    cols.update({"mse": mse, "fvu": fvu, "l0": l0})
    values = {k: v.tolist() for k, v in cols.items()}
    dead_list = has_dead.tolist()
    rows = []
    for i in range(s):
        rows.append({k: v[i] for k, v in values.items() if k != "loss_auxk" or dead_list[i]})
    return rows
