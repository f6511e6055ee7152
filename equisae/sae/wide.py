"""Wide TopK SAE: the v2 baseline with ``|G|`` times the latents of the base SAE.

With ``d_base * |G|`` latents and the same ``k``, a regular SAE can afford one latent per pose
of every feature, so it is the fair "more capacity, no symmetry" comparison for the equivariant
SAE. It is trained like the regular SAE, on flattened orbits ``(B |G|, d)``.
"""

from __future__ import annotations

from typing import ClassVar

from equisae.sae.base import register_architecture
from equisae.sae.config import WideConfig
from equisae.sae.topk import TopKSAE

__all__ = ["WideSAE"]


@register_architecture("wide_topk")
class WideSAE(TopKSAE):
    """A :class:`TopKSAE` with ``d_sae = d_base * group_order`` latents and the same ``k``
    (:class:`~equisae.sae.config.WideConfig`: ``WideSAE(d_in, d_base, k, group_order=4)``)."""

    config_class: ClassVar[type[WideConfig]] = WideConfig
    variant: ClassVar[str | None] = "wide"

    @property
    def d_base(self) -> int:
        return self.cfg.d_base

    @property
    def group_order(self) -> int:
        return self.cfg.group_order

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, d_base={self.d_base}, group_order={self.group_order}"
