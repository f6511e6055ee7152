"""One factory over the SAE registry, used by every sweep.

A *variant* is the short name a sweep uses (``"topk"``, ``"adaptive"``, ...). Each SAE class
declares its name as the class attribute ``variant`` and its hyperparameters as one config
dataclass, ``config_class`` (:mod:`equisae.sae.config`). :func:`build_sae` builds a variant
from its config, or from the config's fields, strictly: a field the variant's config does not
have is a ValueError naming it and listing the valid ones, never dropped. Legends and colours
live in :mod:`equisae.plots.style` (re-exported here as :func:`variant_label` and
:func:`variant_colour`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from equisae.plots.style import variant_colour, variant_label
from equisae.sae.base import ARCHITECTURES, SparseAutoencoder
from equisae.sae.config import SAEConfig

__all__ = [
    "build_sae",
    "config_fields",
    "sae_class",
    "sae_config",
    "shared_hyper",
    "variant_colour",
    "variant_label",
    "variants",
]


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


def config_fields(variant: str) -> tuple[str, ...]:
    """The hyperparameters ``variant`` has: the fields of its config class."""
    return sae_class(variant).config_class.field_names()


def shared_hyper(variant: str, **settings: Any) -> dict[str, Any]:
    """The sweep-wide ``settings`` that ``variant``'s config has (e.g. ``lambda_eq`` only for
    the adaptive variants), for a sweep that trains many variants with one set of loss weights.

    A name that is a field of no registered variant is a ValueError (a misspelling), so only
    settings meant for other variants are left out.
    """
    every = {name for cls in variants().values() for name in cls.config_class.field_names()}
    unknown = sorted(set(settings) - every)
    if unknown:
        raise ValueError(
            f"{unknown} is a hyperparameter of no SAE variant; known ones: {sorted(every)}"
        )
    own = set(config_fields(variant))
    return {name: value for name, value in settings.items() if name in own}


def sae_config(
    variant: str,
    d_in: int,
    d_sae: int,
    k: int | None = None,
    *,
    seed: int = 0,
    group: Any = "C4",
    **hyper: Any,
) -> SAEConfig:
    """The config of ``variant`` from the convenience fields (see :func:`build_sae`)."""
    from equisae.groups import get_group

    cls = sae_class(variant)
    config_class = cls.config_class
    names = set(config_class.field_names())
    config_class.check_names(hyper)  # unknown or misspelt hyperparameters name themselves
    derived = sorted({"d_base", "group_order"} & set(hyper))
    if derived:
        raise ValueError(
            f"{derived} of SAE variant {variant!r} come from d_sae and group=; do not pass them"
        )
    grp = get_group(group) if isinstance(group, str) else group
    fields: dict[str, Any] = {"d_in": d_in, "seed": seed, **hyper}
    if "d_base" in names:  # wide: d_sae is the base width, times |G| latents
        fields["d_base"] = d_sae
    else:
        fields["d_sae"] = d_sae
    if "k" in names:
        if k is None:
            raise ValueError(f"SAE variant {variant!r} needs k (its config has a k field)")
        fields["k"] = k
    if "group" in names:
        fields["group"] = grp.name
    elif "group_order" in names:
        fields["group_order"] = grp.order
    return config_class.create(**fields)


def build_sae(
    variant: str,
    config: SAEConfig | int,
    d_sae: int | None = None,
    k: int | None = None,
    *,
    seed: int | None = None,
    group: Any = None,
    M: Tensor | None = None,
    generators: Mapping[str, Tensor] | None = None,
    **hyper: Any,
) -> SparseAutoencoder:
    """An untrained SAE of ``variant``.

    ``build_sae(variant, config)`` builds from the variant's config dataclass.
    ``build_sae(variant, d_in, d_sae, k, seed=..., group=..., **hyper)`` builds that config from
    exactly these fields: ``seed`` always reaches the model; ``group`` (a Group or a name) goes
    to the configs with a group (or a ``group_order``: the crosscoder, the wide SAE, whose
    ``d_sae`` is the base width times ``|G|``); ``k`` is required by every config with a ``k``
    and ignored by those without one (the ReLU SAE), so one sweep grid of ``k`` serves every
    variant; every ``hyper`` must be a field of the variant's config (else a ValueError naming
    it and listing the valid fields). The representation is a tensor, not a config field:
    ``M`` (C_n) or ``generators`` (``{"r": ..., "s": ...}``, D_n) go to the equivariant
    classes, which require one when their representation is fixed.
    """
    cls = sae_class(variant)
    if isinstance(config, SAEConfig):
        extra = {"d_sae": d_sae, "k": k, "seed": seed, "group": group, **hyper}
        given = sorted(name for name, value in extra.items() if value is not None)
        if given:
            raise ValueError(
                f"build_sae({variant!r}, config) takes the config alone (its fields are set "
                f"there), but also got {given}"
            )
    else:
        if d_sae is None:
            raise ValueError(f"build_sae({variant!r}, d_in, d_sae, k): d_sae is missing")
        config = sae_config(
            variant,
            config,
            d_sae,
            k,
            seed=0 if seed is None else seed,
            group="C4" if group is None else group,
            **hyper,
        )
    if not getattr(cls, "is_equivariant", False):
        if M is not None or generators is not None:
            raise ValueError(
                f"SAE variant {variant!r} has no group representation: drop M= and generators="
            )
        return cls(config)
    if M is None and generators is None and not getattr(cls, "learns_representation", False):
        raise ValueError(
            f"SAE variant {variant!r} needs the fitted representation: pass M= or generators="
        )
    return cls(config, M=M, generators=generators)
