"""One factory over the SAE registry, used by every sweep.

A *variant* is the short name a sweep uses (``"topk"``, ``"adaptive"``, ...). Each SAE class
declares its own name as the class attribute ``variant`` next to its other traits
(``takes_orbits``, ``is_equivariant``, ``label``, ``colour``), so adding a variant is one new
file with a registered class and its test: :func:`build_sae` passes each class only the
constructor arguments it accepts.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor

from equisae.sae.base import ARCHITECTURES, SparseAutoencoder

__all__ = ["build_sae", "sae_class", "variant_label", "variant_colour", "variants"]


def variants() -> dict[str, type[SparseAutoencoder]]:
    """Every registered class that declares a sweep ``variant`` name, by that name."""
    import equisae.sae  # noqa: F401  (registers every built-in class)

    out: dict[str, type[SparseAutoencoder]] = {}
    for cls in ARCHITECTURES.values():
        name = getattr(cls, "variant", None)
        if name:
            out[name] = cls
    return out


def sae_class(variant: str) -> type[SparseAutoencoder]:
    """The SAE class of ``variant`` (KeyError listing the known variants otherwise)."""
    known = variants()
    if variant not in known:
        raise KeyError(f"unknown SAE variant {variant!r}; known: {sorted(known)}")
    return known[variant]


def variant_label(variant: str) -> str:
    """The human-readable name of ``variant`` (for legends and tables)."""
    return getattr(sae_class(variant), "label", variant)


def variant_colour(variant: str) -> str:
    """The matplotlib colour of ``variant``."""
    return getattr(sae_class(variant), "colour", "tab:gray")


def build_sae(
    variant: str,
    d_in: int,
    d_sae: int,
    k: int,
    *,
    seed: int = 0,
    group: Any = "C4",
    M: Tensor | None = None,
    generators: dict[str, Tensor] | None = None,
    **hyper: Any,
) -> SparseAutoencoder:
    """An untrained SAE of ``variant``.

    ``k`` goes to the classes that take it (TopK family). ``group`` (a Group or a name) and the representation (``M`` for C_n, or ``generators``
    ``{"r": ..., "s": ...}`` for D_n) go to the classes that take them; equivariant classes with
    a fixed representation require one. ``hyper`` (e.g. ``lambda_inv``, ``lambda_eq``) go to the
    classes whose constructor names them and are ignored by the others.
    """
    from equisae.groups import get_group

    cls = sae_class(variant)
    grp = get_group(group) if isinstance(group, str) else group
    if getattr(cls, "is_equivariant", False) and not getattr(cls, "learns_representation", False):
        if M is None and generators is None:
            raise ValueError(
                f"SAE variant {variant!r} needs the fitted representation: pass M= or generators="
            )
    params = inspect.signature(cls.__init__).parameters
    offered: dict[str, Any] = {
        "k": k,
        "seed": seed,
        "group": grp,
        "group_order": grp.order,
        "M": M,
        "generators": generators,
        **hyper,
    }
    if "group" in params:
        offered.pop("group_order")
    if generators is not None:
        offered.pop("M")
    kwargs = {name: value for name, value in offered.items() if name in params}
    return cls(d_in, d_sae, **kwargs)
