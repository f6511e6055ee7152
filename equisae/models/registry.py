"""The named base autoencoders: which architecture, which constructor settings, which layers."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from equisae.models.cnn import CNNAutoencoder
from equisae.models.gcnn import GCNNAutoencoder
from equisae.models.mlp import MLPAutoencoder
from equisae.models.vit import ViTAutoencoder

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "cnn": CNNAutoencoder,
    "gcnn": GCNNAutoencoder,
    "mlp": MLPAutoencoder,
    "vit": ViTAutoencoder,
}


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its architecture, whether training rotates inputs, and a description."""

    architecture: str
    augment: bool
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)


MODEL_SPECS: dict[str, ModelSpec] = {
    "cnn_canonical": ModelSpec(
        "cnn",
        augment=False,
        description="CNN autoencoder trained on canonical (unrotated) images only",
    ),
    "cnn_augmented": ModelSpec(
        "cnn",
        augment=True,
        description="the same CNN trained with random C4 rotations of its inputs",
    ),
    "gcnn": ModelSpec(
        "gcnn",
        augment=False,
        description="exactly C4-equivariant group-convolutional autoencoder "
        "(trained on canonical images: equivariance comes from the architecture)",
    ),
    "mlp_augmented": ModelSpec(
        "mlp", augment=True, description="MLP autoencoder trained with random C4 rotations"
    ),
    "vit_augmented": ModelSpec(
        "vit",
        augment=True,
        description="patch transformer autoencoder trained with random C4 rotations",
    ),
}

MODEL_NAMES: tuple[str, ...] = tuple(MODEL_SPECS)

# Layers to hook (names as in ``model.named_modules()``): every architecture calls its encoder
# trunk ``encoder`` (output <= 1024 numbers) and its code ``bottleneck``.
LAYERS: dict[str, dict[str, str]] = {
    name: {"bottleneck": "bottleneck", "intermediate": "encoder"} for name in MODEL_NAMES
}


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a named model; KeyError listing the known names otherwise."""
    if name not in MODEL_SPECS:
        raise KeyError(f"unknown model name {name!r}; known models: {', '.join(MODEL_NAMES)}")
    return MODEL_SPECS[name]


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The full constructor configuration of a named model, with ``overrides`` applied
    (without building the model, so the global RNG is left alone)."""
    spec = get_spec(name)
    params = inspect.signature(ARCHITECTURES[spec.architecture].__init__).parameters
    defaults = {k: p.default for k, p in params.items() if k != "self"}
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown overrides {unknown} for model {name!r}; allowed: {sorted(defaults)}"
        )
    config = {**defaults, **spec.defaults, **overrides}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build a freshly initialised model by name (``MODEL_NAMES``); ``overrides`` replace
    constructor arguments (e.g. ``bottleneck_dim=32``). Initialisation uses torch's global RNG."""
    spec = get_spec(name)
    config = model_config(name, **overrides)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return ARCHITECTURES[spec.architecture](**kwargs)


def image_overrides(name: str, in_channels: int, image_size: int) -> dict[str, Any]:
    """Constructor overrides that fit a named model to ``in_channels`` x ``image_size`` images.

    Every architecture takes ``in_channels`` and ``image_size``; the defaults are sized for
    32x32 RGB Shapes. For other sizes the code keeps about the same width: the G-CNN's
    bottleneck (``bottleneck_channels`` x 4 rotations x (image_size/16)^2) gets
    ``4 * (32 / image_size)^2`` channels when that is a whole number (64 numbers), and the
    ViT uses ``image_size / 4``-pixel patches (16 tokens). Raises ValueError naming the model
    and the sizes it accepts (CNN: multiple of 8; G-CNN: multiple of 16; ViT: multiple of 4).
    """
    spec = get_spec(name)
    for arg, value in (("in_channels", in_channels), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    multiple = {"cnn": 8, "gcnn": 16, "vit": 4, "mlp": 1}[spec.architecture]
    if image_size % multiple:
        raise ValueError(
            f"model {name!r} ({spec.architecture}) needs image_size a multiple of {multiple}, "
            f"got {image_size}; resize the images (e.g. image_size={_round_up(image_size, multiple)})"
        )
    out: dict[str, Any] = {"in_channels": in_channels, "image_size": image_size}
    if spec.architecture == "gcnn" and 32 % image_size == 0:
        out["bottleneck_channels"] = 4 * (32 // image_size) ** 2
    if spec.architecture == "vit":
        out["patch_size"] = image_size // 4
    return out


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
