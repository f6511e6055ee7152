"""One frozen config dataclass per SAE class (as SAELens and sparsify do).

A config holds every hyperparameter of one SAE class and nothing else: the fields a class does
not use do not exist on its config, so a misspelt or foreign field is an error naming it and
listing the valid ones (:meth:`SAEConfig.create`). Validation runs in ``__post_init__``. Tensors
(an equivariant SAE's generator matrices) are not config fields: they are passed to the
constructor beside the config. Each SAE class names its config as ``config_class``;
``sae.cfg`` is the instance it was built from and ``sae.config()`` its JSON form.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, field, fields
from numbers import Integral
from typing import Any, ClassVar, TypeVar

import torch

from equisae.groups import get_group

__all__ = [
    "DTYPES",
    "EQUIVARIANCE_BASES",
    "AdaptiveEquivariantConfig",
    "BatchTopKConfig",
    "CrosscoderConfig",
    "EquivariantConfig",
    "GroupTopKConfig",
    "ReLUConfig",
    "SAEConfig",
    "TopKConfig",
    "WideConfig",
    "resolve_equivariance_bases",
]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

#: which poses serve as the base ``h_q`` of the ``lambda_eq`` term ("auto": by group)
EQUIVARIANCE_BASES = ("auto", "canonical", "all")

_C = TypeVar("_C", bound="SAEConfig")


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_finite_nonnegative(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite int or float >= 0 (ValueError otherwise)."""
    if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_weight(name: str, value: Any) -> float:
    """A loss weight: a finite number >= 0 that is not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return _check_finite_nonnegative(name, value)


def _check_k(k: Any, d_sae: int) -> int:
    _check_positive_int("k", k)
    if k > d_sae:
        raise ValueError(f"k must be at most d_sae={d_sae}, got k={k}")
    return k


def resolve_equivariance_bases(bases: str, group: Any) -> str:
    """``"canonical"`` or ``"all"``: ``bases``, with ``"auto"`` resolved by ``group`` (``"all"``
    for a group with a reflection, D_n; ``"canonical"`` for C_n, the Method page's term)."""
    if bases not in EQUIVARIANCE_BASES:
        raise ValueError(f"equivariance_bases must be one of {EQUIVARIANCE_BASES}, got {bases!r}")
    if bases != "auto":
        return bases
    has_flip = any(group.is_reflection(a) for a in group.elements())
    return "all" if has_flip else "canonical"


@dataclass(frozen=True)
class SAEConfig:
    """Fields of every SAE: sizes, the initialisation seed, the dtype and the AuxK settings.

    ``seed`` seeds the decoder's random unit rows (and the encoder, their transpose);
    ``aux_k`` (default ``d_in // 2``) and ``aux_coef`` set the AuxK term of Gao et al. (2024).
    """

    d_in: int
    d_sae: int
    _: KW_ONLY
    seed: int = 0
    dtype: str = "float32"
    aux_k: int | None = None
    aux_coef: float = 1.0 / 32.0

    #: fields older versions wrote to cfg.json that this class no longer has (dropped on read)
    legacy_fields: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        _check_positive_int("d_in", self.d_in)
        _check_positive_int("d_sae", self.d_sae)
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        self._set("seed", int(self.seed))
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.aux_k is not None:
            _check_positive_int("aux_k", self.aux_k)
        self._set("aux_coef", _check_finite_nonnegative("aux_coef", self.aux_coef))

    def _set(self, name: str, value: Any) -> None:
        """Normalise a field of this frozen instance (only from ``__post_init__``)."""
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The fields a caller sets (constructor arguments), in order."""
        return tuple(f.name for f in fields(cls) if f.init)

    @classmethod
    def check_names(cls, names: Any) -> None:
        """ValueError naming every name in ``names`` that is not a field of this config."""
        unknown = sorted(set(names) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} field(s) {unknown}; valid fields: {list(cls.field_names())}"
            )

    @classmethod
    def create(cls: type[_C], *args: Any, **kwargs: Any) -> _C:
        """``cls(*args, **kwargs)``, with unknown or missing fields as a ValueError naming them."""
        cls.check_names(kwargs)
        try:
            return cls(*args, **kwargs)
        except TypeError as err:  # missing or surplus positional arguments
            raise ValueError(f"{cls.__name__}: {err}; fields: {list(cls.field_names())}") from None

    def to_dict(self) -> dict[str, Any]:
        """Every field (also derived ones such as WideConfig's ``d_sae``): JSON-able values."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        """The config of :meth:`to_dict`'s dictionary (or a cfg.json's fields).

        Derived values given (WideConfig's ``d_sae``, an equivariant config's ``group_order``)
        must agree with the rebuilt config; :attr:`legacy_fields` of older files are dropped;
        any other unknown key is an error.
        """
        if not isinstance(data, dict):
            raise ValueError(f"config must be a dict, got {type(data).__name__}")
        derived = {k: v for k, v in data.items() if isinstance(getattr(cls, k, None), property)}
        derived |= {f.name: data[f.name] for f in fields(cls) if not f.init and f.name in data}
        rest = {k: v for k, v in data.items() if k not in derived and k not in cls.legacy_fields}
        cfg = cls.create(**rest)
        for name, value in derived.items():
            if getattr(cfg, name) != value:
                raise ValueError(
                    f"{cls.__name__}: {name}={value!r} does not match the other fields "
                    f"(they give {name}={getattr(cfg, name)!r})"
                )
        return cfg


@dataclass(frozen=True)
class TopKConfig(SAEConfig):
    """TopK (Gao et al. 2024): ``k`` active latents; ``sparse_training`` picks the sparse loss."""

    k: int
    _: KW_ONLY
    sparse_training: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_k(self.k, self.d_sae)
        if not isinstance(self.sparse_training, bool):
            raise ValueError(f"sparse_training must be a bool, got {self.sparse_training!r}")


@dataclass(frozen=True)
class BatchTopKConfig(SAEConfig):
    """BatchTopK: ``k`` latents per example on average; the threshold's running-average rate."""

    k: int
    _: KW_ONLY
    threshold_momentum: float = 0.01

    legacy_fields: ClassVar[tuple[str, ...]] = ("sparse_training",)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_k(self.k, self.d_sae)
        m = self.threshold_momentum
        if isinstance(m, bool) or not (isinstance(m, (int, float)) and 0 < m <= 1):
            raise ValueError(f"threshold_momentum must be in (0, 1], got {m!r}")
        self._set("threshold_momentum", float(m))


@dataclass(frozen=True)
class ReLUConfig(SAEConfig):
    """ReLU SAE with an L1 penalty of weight ``l1_coeff``."""

    l1_coeff: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("l1_coeff", _check_finite_nonnegative("l1_coeff", self.l1_coeff))


@dataclass(frozen=True)
class WideConfig(SAEConfig):
    """Wide TopK: ``d_sae = d_base * group_order`` latents (derived, not set) and the same ``k``."""

    d_sae: int = field(init=False)
    d_base: int
    k: int
    _: KW_ONLY
    sparse_training: bool = True
    group_order: int = 4

    def __post_init__(self) -> None:
        _check_positive_int("d_base", self.d_base)
        _check_positive_int("group_order", self.group_order)
        self._set("d_sae", self.d_base * self.group_order)
        super().__post_init__()
        _check_k(self.k, self.d_sae)
        if not isinstance(self.sparse_training, bool):
            raise ValueError(f"sparse_training must be a bool, got {self.sparse_training!r}")


@dataclass(frozen=True)
class CrosscoderConfig(SAEConfig):
    """Group crosscoder: a TopK encoder (``k``) and one decoder block per pose."""

    k: int
    group_order: int = 4

    legacy_fields: ClassVar[tuple[str, ...]] = ("sparse_training",)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_k(self.k, self.d_sae)
        _check_positive_int("group_order", self.group_order)


@dataclass(frozen=True)
class GroupTopKConfig(SAEConfig):
    """A TopK SAE with a group (``"C4"``, ``"D4"``, ...): the canonicalising equivariant SAE,
    whose latents are one vector per orbit (no invariance weight)."""

    k: int
    _: KW_ONLY
    group: str = "C4"

    legacy_fields: ClassVar[tuple[str, ...]] = ("sparse_training", "lambda_inv")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_k(self.k, self.d_sae)
        if not isinstance(self.group, str):
            raise ValueError(f"group must be a group name like 'C4' or 'D4', got {self.group!r}")
        self._set("group", get_group(self.group).name)

    @property
    def group_order(self) -> int:
        """The number of elements of :attr:`group`."""
        return get_group(self.group).order

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        """As :meth:`SAEConfig.from_dict`; the oldest files name only ``group_order`` (C_n)."""
        if isinstance(data, dict) and "group" not in data and "group_order" in data:
            data = {**data, "group": f"C{data['group_order']}"}
        return super().from_dict(data)


@dataclass(frozen=True)
class EquivariantConfig(GroupTopKConfig):
    """The equivariant SAE of the Method page: ``lambda_inv`` weighs the latents' invariance term."""

    _: KW_ONLY
    lambda_inv: float = 1.0

    legacy_fields: ClassVar[tuple[str, ...]] = ("sparse_training",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("lambda_inv", _check_weight("lambda_inv", self.lambda_inv))


@dataclass(frozen=True)
class AdaptiveEquivariantConfig(EquivariantConfig):
    """Learned representation: ``lambda_eq`` weighs the equivariance term, taken on the
    ``equivariance_bases`` poses (``"auto"`` is resolved by the group and stored resolved)."""

    _: KW_ONLY
    lambda_eq: float = 1.0
    equivariance_bases: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("lambda_eq", _check_weight("lambda_eq", self.lambda_eq))
        resolved = resolve_equivariance_bases(self.equivariance_bases, get_group(self.group))
        self._set("equivariance_bases", resolved)
