"""Adaptively equivariant TopK SAE: the representation's generators are learned with the SAE.

Loss on an orbit batch (the Method page, section 2), every sum divided by the same ``B * |G| * d_in``
so that the first term is the per-element MSE the trainer reports and the lambdas keep the
relative weights of the Method page::

    L = sum_p ||h_p - (rho(g_p) W_dec z_p + b_dec)||^2
        + lambda_inv * sum_p ||z_p - mean_q z_q||^2
        + lambda_eq  * sum_p ||(h_p - b) - rho(g_p) (h_0 - b)||^2

with ``z_p = TopK(W_enc^T (h_p - b_dec) + b_enc)`` (each pose encoded from its raw activation;
the canonicalising variant is :class:`equisae.sae.canonical.AdaptiveCanonicalSAE`) and ``b``
the decoder bias, detached. Concrete choice: the equivariance term is taken on activations
centred at ``b_dec`` (as the least-squares fit of section 1 uses centred activations); for a
G-invariant mean, ``rho(g) b = b`` and it equals the Method page's uncentred term. The ``lambda_eq``
term is a regression of ``h_p`` on ``h_0`` and pulls the generators toward the data's actual
representation; the invariance term makes the encoder agree across poses.

Equivariance bases (``equivariance_bases``). ``"canonical"`` is the term above, the Method page's
``sum_p ||h_p - rho(g_p) h_0||^2`` with the canonical pose as the only base. ``"all"`` takes every
pose in turn as the base and averages, ``(1/|G|) sum_q sum_p ||h_{g_p g_q} - rho(g_p) h_q||^2``
(the canonical pose is an arbitrary choice under the group; each base is one copy of the Method page's
term). The default ``"auto"`` is ``"canonical"`` for C_n and ``"all"`` for D_n, because a
regression only constrains a matrix on the vectors it multiplies: with ``rho(r^k s) = R^k S``
the flip ``S`` multiplies only ``h_0`` in the canonical term, so ``S`` is learned on the span of
the canonical activations alone (in the planted toy with fewer features than dimensions, half
of ``R^d``: a D4 run from the identity learned ``R`` to 0.02 but left ``S`` at relative
distance 1.07 with the term at its noise floor). ``R`` appears in every power and is constrained
on the whole orbit's span. With every pose as a base, ``S`` multiplies every ``h_q`` and both
generators are identified wherever the orbits live (the same run: both under 0.01).

Defaults: ``lambda_inv = 1.0`` and ``lambda_eq = 1.0`` (the value of the experiment sweeps;
earlier versions of this class defaulted to 10.0). ``rho(g)`` is computed once per loss call
from the current generators (``M``, and ``S`` for D_n), never cached while it needs a graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from equisae.groups import Group, generator_names, group_error
from equisae.sae.base import register_architecture
from equisae.sae.config import (
    EQUIVARIANCE_BASES,
    AdaptiveEquivariantConfig,
    resolve_equivariance_bases,
)
from equisae.sae.equivariant import GENERATOR_ATTRS, EquivariantSAE
from equisae.sae.stack import Stack

__all__ = [
    "EQUIVARIANCE_BASES",  # re-exported from equisae.sae.config
    "AdaptiveEquivariantSAE",
    "generator_diagnostics",
    "generator_drift",
    "resolve_equivariance_bases",
]


def generator_drift(now: Mapping[str, Tensor], start: Mapping[str, Tensor]) -> float:
    """``sqrt(sum_g ||A_g - A_g_start||^2 / sum_g ||A_g_start||^2)`` over the named generators."""
    with torch.no_grad():
        diff = sum(float((now[g].double() - start[g].double()).pow(2).sum()) for g in start)
        init = sum(float(start[g].double().pow(2).sum()) for g in start)
    return (diff / init) ** 0.5


def generator_diagnostics(
    group: Group, now: Mapping[str, Tensor], start: Mapping[str, Tensor]
) -> dict[str, float]:
    """``m_drift`` (:func:`generator_drift`) and ``m_group_error`` (the largest relation error)
    of learned generators: the two numbers logged along an adaptive SAE's training."""
    with torch.no_grad():
        gens = {g: mat.detach().cpu() for g, mat in now.items()}
        return {
            "m_drift": generator_drift(gens, start),
            "m_group_error": group_error(group, gens),
        }


@register_architecture("adaptive_equivariant_topk")
class AdaptiveEquivariantSAE(EquivariantSAE):
    """Equivariant SAE whose generator matrices are ``nn.Parameter`` s (default: identity).

    The starting matrices are kept as buffers (``M_init``, and ``S_init`` for D_n) so that
    :meth:`m_drift` can report how far training moved them; :meth:`group_error` says how close
    they are to an exact representation (the relation error of the group).
    """

    config_class: ClassVar[type[AdaptiveEquivariantConfig]] = AdaptiveEquivariantConfig
    variant: ClassVar[str | None] = "adaptive"
    learns_representation: ClassVar[bool] = True

    def __init__(self, *args: Any, **fields: Any) -> None:
        super().__init__(*args, **fields)
        # table[p, q] = g_p g_q: the pose of rho(g_p) applied to pose q
        self.register_buffer("_compose_table", self.group.cayley_table(), persistent=False)
        for name in generator_names(self.group):
            attr = GENERATOR_ATTRS[name]
            start = getattr(self, attr).clone()
            delattr(self, attr)  # the buffer of the fixed model becomes a parameter here
            setattr(self, attr, nn.Parameter(start))
            self.register_buffer(f"{attr}_init", start.clone())

    @property
    def lambda_eq(self) -> float:
        return self.cfg.lambda_eq

    @property
    def equivariance_bases(self) -> str:
        """``"canonical"`` or ``"all"`` (the config stores ``"auto"`` resolved by the group)."""
        return self.cfg.equivariance_bases

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

    def generator_starts(self) -> dict[str, Tensor]:
        """The generators this model started from (the least-squares fit in the sweeps)."""
        return {n: getattr(self, f"{GENERATOR_ATTRS[n]}_init") for n in generator_names(self.group)}

    def m_drift(self) -> float:
        """``||A - A_init||_F / ||A_init||_F`` over all generators: how far training moved them."""
        return generator_drift(self.generators(), self.generator_starts())

    def training_diagnostics(self) -> dict[str, float]:
        """What the trainer logs along training (:func:`generator_diagnostics`)."""
        return generator_diagnostics(self.group, self.generators(), self.generator_starts())

    def stacked_representation_inverse(self, stack: Stack, rho: Tensor) -> Tensor:
        """``rho(g)^-1`` taken as ``rho(g^-1)`` for every SAE of a stack (see
        :meth:`representation_inverse`): (S, order, d_in, d_in)."""
        return rho[:, self._inverse_index]

    def _representation_terms(
        self, stack: Stack, batch: Tensor, rho: Tensor
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """``lambda_eq * sum_p ||(h_p - b) - rho(g_p)(h_0 - b)||^2 / (B |G| d)`` of every SAE
        of a stack (batches (S, B, G, d)), b detached; with ``equivariance_bases="all"`` the
        mean of that over every base pose ``q``."""
        base = batch - stack["b_dec"].detach()[:, None, None]
        if self.equivariance_bases == "canonical":
            pred = torch.einsum("spij,sbj->sbpi", rho, base[:, :, 0])
            eq = (base - pred).pow(2).sum((1, 2, 3)) / float(batch[0].numel())
        else:
            target = base[:, :, self._compose_table]  # (S, B, p, q, d): h_{g_p g_q}
            pred = torch.einsum("spij,sbqj->sbpqi", rho, base)
            eq = (target - pred).pow(2).sum((1, 2, 3, 4)) / float(
                batch[0].numel() * self.group_order
            )
        return {"equivariance": (stack.per_sae("lambda_eq"), eq)}
