"""How each SAE variant is drawn and named: one table per variant, kept out of the model classes.

A new variant adds one row here (its legend label and matplotlib colour); a registered variant
without a row is drawn in grey under its own name.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "ENCODER_LABELS",
    "VARIANT_STYLE",
    "VariantStyle",
    "encoder_label",
    "variant_colour",
    "variant_label",
]


class VariantStyle(NamedTuple):
    """The legend label and the matplotlib colour of one SAE variant."""

    label: str
    colour: str


#: sweep variant name (``SparseAutoencoder.variant``) -> its style
VARIANT_STYLE: dict[str, VariantStyle] = {
    "topk": VariantStyle("TopK", "tab:blue"),
    "relu": VariantStyle("ReLU + L1", "tab:brown"),
    "batchtopk": VariantStyle("BatchTopK", "tab:cyan"),
    "wide": VariantStyle("wide TopK (|G| x latents)", "tab:purple"),
    "crosscoder": VariantStyle("group crosscoder", "tab:green"),
    "equivariant": VariantStyle("equivariant (fixed M)", "tab:orange"),
    "equivariant_canonical": VariantStyle("equivariant, canonicalising (fixed M)", "tab:olive"),
    "adaptive": VariantStyle("adaptive equivariant", "tab:red"),
    "adaptive_canonical": VariantStyle("adaptive equivariant, canonicalising", "tab:pink"),
}


#: the two encoders of the equivariant SAEs, as every table, figure and the ledger name them:
#: the raw encoder encodes each pose from its own activation (its latents are only as invariant
#: as lambda_inv makes them); the canonicalising one encodes M^{-p} h_p (invariant by
#: construction)
ENCODER_LABELS: dict[str, str] = {
    "raw": "raw (each pose encoded from its own activation)",
    "canonical": "canonicalising",
}


def encoder_label(encoder: str) -> str:
    """The name of an equivariant SAE's ``encoder`` (``"raw"`` or ``"canonical"``)."""
    if encoder not in ENCODER_LABELS:
        raise KeyError(f"encoder must be one of {sorted(ENCODER_LABELS)}, got {encoder!r}")
    return ENCODER_LABELS[encoder]


def _style(variant: str) -> VariantStyle:
    """The style of a registered ``variant`` (KeyError listing the known variants otherwise)."""
    from equisae.sae.factory import sae_class

    sae_class(variant)  # KeyError for a name that is no SAE variant
    return VARIANT_STYLE.get(variant, VariantStyle(variant, "tab:gray"))


def variant_label(variant: str) -> str:
    """The human-readable name of ``variant`` (for legends and tables)."""
    return _style(variant).label


def variant_colour(variant: str) -> str:
    """The matplotlib colour of ``variant``."""
    return _style(variant).colour
