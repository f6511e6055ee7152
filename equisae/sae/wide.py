"""Wide TopK SAE: the v2 baseline with ``|G|`` times the latents of the base SAE.

With ``d_base * |G|`` latents and the same ``k``, a regular SAE can afford one latent per pose
of every feature, so it is the fair "more capacity, no symmetry" comparison for the equivariant
SAE. It is trained like the regular SAE, on flattened orbits ``(B |G|, d)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from equisae.sae.base import SparseAutoencoder, _check_positive_int, register_architecture
from equisae.sae.topk import TopKSAE

__all__ = ["WideSAE"]


@register_architecture("wide_topk")
class WideSAE(TopKSAE):
    """A :class:`TopKSAE` with ``d_sae = d_base * group_order`` latents and the same ``k``."""

    variant: ClassVar[str | None] = "wide"
    label: ClassVar[str] = "wide TopK (|G| x latents)"
    colour: ClassVar[str] = "tab:purple"

    _NON_INIT_FIELDS: ClassVar[tuple[str, ...]] = (*SparseAutoencoder._NON_INIT_FIELDS, "d_sae")

    def __init__(self, d_in: int, d_base: int, k: int, group_order: int = 4, **kwargs: Any) -> None:
        self.d_base = _check_positive_int("d_base", d_base)
        self.group_order = _check_positive_int("group_order", group_order)
        super().__init__(d_in, d_base * group_order, k, **kwargs)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "d_base": self.d_base, "group_order": self.group_order}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, d_base={self.d_base}, group_order={self.group_order}"
