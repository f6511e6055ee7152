"""The update of a training step, per SAE: Adam, gradient clipping and the decoder-row constraints.

One implementation for one SAE and for a stack of S (:mod:`equisae.sae.stack`): the weights
are leaf tensors whose first dimension is the SAE (``stacked=True``) or one SAE's own
parameters, seen with a leading dimension of one (``stacked=False``). Each SAE has its own
learning rate, betas, Adam state and ``grad_clip`` (its own gradient norm), as if it were
trained alone with ``torch.optim.Adam`` and ``clip_grad_norm_``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from equisae.sae.base import SparseAutoencoder, normalize_rows_, remove_parallel_

__all__ = ["ADAM_EPS", "SAEOptimiser"]

ADAM_EPS = 1e-8  # torch.optim.Adam's default


class SAEOptimiser:
    """Per-SAE Adam (elementwise, as ``torch.optim.Adam``), clipping and decoder constraints.

    ``params``: the trained leaf tensors, ``W_dec`` among them at index ``w_dec``; ``grad_clips``,
    ``betas``: one per SAE; ``model``: an SAE of the stack (its :meth:`decoder_rows`).
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        *,
        stacked: bool,
        model: SparseAutoencoder,
        grad_clips: Sequence[float | None],
        betas: Sequence[tuple[float, float]],
        w_dec: int = 2,
    ) -> None:
        self.params = list(params)
        self.stacked = stacked
        self.model = model
        self.s = len(grad_clips)
        self.w_dec = w_dec
        dev = self.params[0].device
        self.exp_avg = [torch.zeros_like(self._lead(p)) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(self._lead(p)) for p in self.params]
        self.n_updates = 0
        self.beta1 = torch.tensor([b[0] for b in betas], dtype=torch.float64, device=dev)
        self.beta2 = torch.tensor([b[1] for b in betas], dtype=torch.float64, device=dev)
        self.grad_clips = list(grad_clips)

    def _lead(self, tensor: Tensor) -> Tensor:
        """``tensor`` with its leading SAE dimension (a view of one SAE's own tensor)."""
        return tensor if self.stacked else tensor.unsqueeze(0)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Per SAE (and block): drop the decoder gradient along each decoder row."""
        W_dec = self.params[self.w_dec]
        rows = self.model.decoder_rows
        remove_parallel_(rows(self._lead(W_dec.grad)), rows(self._lead(W_dec)))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Per SAE (and block): decoder rows to unit norm."""
        normalize_rows_(self.model.decoder_rows(self._lead(self.params[self.w_dec])))

    @torch.no_grad()
    def clip_grads(self, step: int) -> None:
        """``clip_grad_norm_`` of each SAE's gradients with its own ``grad_clip``; a
        FloatingPointError naming the step (and the SAE of a stack) for a non-finite norm."""
        grads = [self._lead(p.grad) for p in self.params if p.grad is not None]
        norms = torch.stack([g.reshape(self.s, -1).norm(dim=1) for g in grads], dim=1).norm(dim=1)
        if not bool(torch.isfinite(norms).all()):
            bad = int((~torch.isfinite(norms)).nonzero()[0])
            where = f" in SAE {bad}" if self.stacked else ""
            raise FloatingPointError(f"non-finite gradient at step {step}{where} (loss was finite)")
        if all(c is None for c in self.grad_clips):
            return
        max_norm = torch.tensor(
            [math.inf if c is None else c for c in self.grad_clips],
            dtype=norms.dtype,
            device=norms.device,
        )
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *[1] * (g.ndim - 1)).to(g.dtype))

    @torch.no_grad()
    def adam(self, lrs: Tensor) -> None:
        """One elementwise Adam step with per-SAE learning rates ``lrs`` (S,) and betas."""
        self.n_updates += 1
        t = self.n_updates
        # float64 per-SAE constants, cast to each parameter's dtype (as Python scalars would be)
        step_size = lrs / (1 - self.beta1**t)
        bc2_sqrt = (1 - self.beta2**t).sqrt()
        b1, b2 = self.beta1, self.beta2
        for leaf, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if leaf.grad is None:  # not in this step's graph: skipped, as torch.optim.Adam does
                continue
            p, grad = self._lead(leaf), self._lead(leaf.grad)
            shape = (-1, *[1] * (p.ndim - 1))
            m.lerp_(grad, (1 - b1).view(shape).to(p.dtype))
            v.mul_(b2.view(shape).to(p.dtype)).addcmul_(
                grad, grad * (1 - b2).view(shape).to(p.dtype)
            )
            denom = (v.sqrt() / bc2_sqrt.view(shape).to(p.dtype)).add_(ADAM_EPS)
            p.sub_(step_size.view(shape).to(p.dtype) * m / denom)
