"""Adaptively equivariant TopK SAE: the representation ``M`` is learned with the SAE.

Loss on an orbit batch (METHOD.md section 2), every sum divided by the same ``B * |G| * d_in``
so that the first term is the per-element MSE the trainer reports and the lambdas keep the
relative weights of METHOD.md::

    L = sum_p ||h_p - (M^p W_dec z_p + b_dec)||^2
        + lambda_inv * sum_p ||z_p - mean_q z_q||^2
        + lambda_eq  * sum_p ||(h_p - b) - M^p (h_0 - b)||^2

with ``z_p = TopK(W_enc M^{-p}(h_p - b_dec) + b_enc)`` (each pose canonicalised by the current
``M``) and ``b`` the decoder bias, detached. Concrete choice: the equivariance term is taken on
activations centred at ``b_dec`` (as the least-squares fit of section 1 uses centred
activations); for a G-invariant mean, ``M^p b = b`` and it equals METHOD.md's uncentred term.
The ``lambda_eq`` term is a regression of ``h_p`` on ``h_0`` and pulls ``M`` toward the data's
actual representation; the invariance term makes the encoder agree across poses.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from equisae.sae.base import LossOutput, register_architecture
from equisae.sae.equivariant import EquivariantSAE, _matrix_powers

__all__ = ["AdaptiveEquivariantSAE"]


def _check_weight(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


@register_architecture("adaptive_equivariant_topk")
class AdaptiveEquivariantSAE(EquivariantSAE):
    """Equivariant SAE whose ``M`` is an ``nn.Parameter`` started from ``M`` (default: identity).

    The starting matrix is kept as the buffer ``M_init`` so that :meth:`m_drift` can report how
    far training moved it; :meth:`group_error` says how close ``M`` is to an exact
    representation (``M^n = I``).
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        group_order: int = 4,
        M: Tensor | None = None,
        lambda_inv: float = 1.0,
        lambda_eq: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(d_in, d_sae, k, group_order=group_order, M=M, **kwargs)
        self.lambda_inv = _check_weight("lambda_inv", lambda_inv)
        self.lambda_eq = _check_weight("lambda_eq", lambda_eq)
        start = self.M.clone()
        del self.M  # the buffer of the fixed model becomes a parameter here
        self.M = nn.Parameter(start)
        self.register_buffer("M_init", start.clone())

    def config(self) -> dict[str, Any]:
        return {**super().config(), "lambda_inv": self.lambda_inv, "lambda_eq": self.lambda_eq}

    @property
    def n_fixed_params(self) -> int:
        """The adaptive model has no frozen representation: ``M`` is learned."""
        return 0

    def rep_inverse_powers(self) -> Tensor:
        """``M^{-p}`` taken as ``M^{(n - p) mod n}`` (equal for an exact representation).

        No matrix inverse is needed, so training stays stable when the learned ``M`` passes
        near a singular matrix (the straight path from ``I`` to a representation with a sign
        irrep crosses one); the gap to the true inverse is what :meth:`group_error` measures.
        """
        powers = _matrix_powers(self.M, self.group_order)
        return powers[(-torch.arange(self.group_order)) % self.group_order]

    def m_drift(self) -> float:
        """``||M - M_init||_F / ||M_init||_F``: how far training moved the representation."""
        with torch.no_grad():
            return float((self.M.double() - self.M_init.double()).norm() / self.M_init.norm())

    def loss(self, batch: Tensor, dead_mask: Tensor | None = None) -> LossOutput:
        """Reconstruction + ``lambda_inv`` invariance + ``lambda_eq`` equivariance (module doc)."""
        self.check_orbits(batch)
        n, order, d = batch.shape
        powers = self.rep_powers()  # (G, d, d), differentiable in M
        inverse = self.rep_inverse_powers()
        centred = batch - self.b_dec
        canonical = torch.einsum("pij,bpj->bpi", inverse, centred)  # (B, G, d)
        pre = canonical @ self.W_enc + self.b_enc  # (B, G, d_sae)
        z = self.activation(pre.reshape(n * order, self.d_sae)).reshape(n, order, self.d_sae)
        recon = torch.einsum("pij,bpj->bpi", powers, z @ self.W_dec) + self.b_dec
        norm = float(n * order * d)
        mse = (recon - batch).pow(2).mean()
        inv = (z - z.mean(1, keepdim=True)).pow(2).sum() / norm
        base = batch - self.b_dec.detach()
        eq = (base - torch.einsum("pij,bj->bpi", powers, base[:, 0])).pow(2).sum() / norm
        total = mse + self.lambda_inv * inv + self.lambda_eq * eq
        terms: dict[str, Tensor] = {"mse": mse, "invariance": inv, "equivariance": eq}
        flat_pre = pre.reshape(n * order, self.d_sae)
        residual = (canonical - (z @ self.W_dec).detach()).reshape(n * order, d)
        aux = self.auxk_loss(flat_pre, residual, dead_mask)
        total = self._add_auxk(total, terms, aux)
        return LossOutput(total=total, terms=terms, latents=z, recon=recon, target=batch)
