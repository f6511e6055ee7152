"""Adaptively equivariant TopK SAE: the representation's generators are learned with the SAE.

Loss on an orbit batch (METHOD.md section 2), every sum divided by the same ``B * |G| * d_in``
so that the first term is the per-element MSE the trainer reports and the lambdas keep the
relative weights of METHOD.md::

    L = sum_p ||h_p - (rho(g_p) W_dec z_p + b_dec)||^2
        + lambda_inv * sum_p ||z_p - mean_q z_q||^2
        + lambda_eq  * sum_p ||(h_p - b) - rho(g_p) (h_0 - b)||^2

with ``z_p = TopK(W_enc^T (h_p - b_dec) + b_enc)`` (each pose encoded from its raw activation;
the canonicalising variant is :class:`equisae.sae.canonical.AdaptiveCanonicalSAE`) and ``b``
the decoder bias, detached. Concrete choice: the equivariance term is taken on activations
centred at ``b_dec`` (as the least-squares fit of section 1 uses centred activations); for a
G-invariant mean, ``rho(g) b = b`` and it equals METHOD.md's uncentred term. The ``lambda_eq``
term is a regression of ``h_p`` on ``h_0`` and pulls the generators toward the data's actual
representation; the invariance term makes the encoder agree across poses.

Defaults: ``lambda_inv = 1.0`` and ``lambda_eq = 1.0`` (the value of the experiment sweeps;
earlier versions of this class defaulted to 10.0). ``rho(g)`` is computed once per loss call
from the current generators (``M``, and ``S`` for D_n), never cached while it needs a graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from equisae.groups import Group, generator_names
from equisae.sae.base import _check_finite_nonnegative, register_architecture
from equisae.sae.equivariant import GENERATOR_ATTRS, EquivariantSAE

__all__ = ["AdaptiveEquivariantSAE"]


def _check_weight(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return _check_finite_nonnegative(name, value)


@register_architecture("adaptive_equivariant_topk")
class AdaptiveEquivariantSAE(EquivariantSAE):
    """Equivariant SAE whose generator matrices are ``nn.Parameter`` s (default: identity).

    The starting matrices are kept as buffers (``M_init``, and ``S_init`` for D_n) so that
    :meth:`m_drift` can report how far training moved them; :meth:`group_error` says how close
    they are to an exact representation (the relation error of the group).
    """

    variant: ClassVar[str | None] = "adaptive"

    label: ClassVar[str] = "adaptive equivariant"
    colour: ClassVar[str] = "tab:red"
    learns_representation: ClassVar[bool] = True

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        group_order: int | None = None,
        M: Tensor | None = None,
        lambda_inv: float = 1.0,
        lambda_eq: float = 1.0,
        *,
        group: Group | str | None = None,
        generators: Mapping[str, Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        lambda_inv = _check_weight("lambda_inv", lambda_inv)
        super().__init__(
            d_in, d_sae, k, group_order, M, lambda_inv, group=group, generators=generators, **kwargs
        )
        self.lambda_eq = _check_weight("lambda_eq", lambda_eq)
        for name in generator_names(self.group):
            attr = GENERATOR_ATTRS[name]
            start = getattr(self, attr).clone()
            delattr(self, attr)  # the buffer of the fixed model becomes a parameter here
            setattr(self, attr, nn.Parameter(start))
            self.register_buffer(f"{attr}_init", start.clone())

    def config(self) -> dict[str, Any]:
        return {**super().config(), "lambda_eq": self.lambda_eq}

    @property
    def n_fixed_params(self) -> int:
        """The adaptive model has no frozen representation: the generators are learned."""
        return 0

    def representation_inverse(self) -> Tensor:
        """``rho(g)^-1`` taken as ``rho(g^-1)`` (equal for an exact representation).

        No matrix inverse is needed, so training stays stable when a learned generator passes
        near a singular matrix (the straight path from ``I`` to a representation with a sign
        irrep crosses one); the gap to the true inverse is what :meth:`group_error` measures.
        """
        return self.representation()[self._inverse_index]

    def m_drift(self) -> float:
        """``||A - A_init||_F / ||A_init||_F`` over all generators: how far training moved them."""
        with torch.no_grad():
            diff = init = 0.0
            for name in generator_names(self.group):
                attr = GENERATOR_ATTRS[name]
                now, start = getattr(self, attr).double(), getattr(self, f"{attr}_init").double()
                diff += float((now - start).pow(2).sum())
                init += float(start.pow(2).sum())
            return (diff / init) ** 0.5

    def _representation_terms(self, batch: Tensor, rho: Tensor) -> dict[str, tuple[float, Tensor]]:
        """``lambda_eq * sum_p ||(h_p - b) - rho(g_p)(h_0 - b)||^2 / (B |G| d)``, b detached."""
        base = batch - self.b_dec.detach()
        pred = torch.einsum("pij,bj->bpi", rho, base[:, 0])
        eq = (base - pred).pow(2).sum() / float(batch.numel())
        return {"equivariance": (self.lambda_eq, eq)}
