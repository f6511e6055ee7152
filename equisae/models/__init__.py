"""Base autoencoders with controlled equivariance: registry, layers to hook, cached training."""

from equisae.models.cnn import CNNAutoencoder
from equisae.models.gcnn import GCNNAutoencoder, feature_permutation, rotate_features
from equisae.models.mlp import MLPAutoencoder
from equisae.models.registry import (
    ARCHITECTURES,
    LAYERS,
    MODEL_NAMES,
    MODEL_SPECS,
    ModelSpec,
    build_model,
    get_spec,
    image_overrides,
    model_config,
)
from equisae.models.train import (
    TrainSettings,
    evaluate_reconstruction,
    load_checkpoint,
    random_rotations,
    reconstruction_mse,
    save_checkpoint,
    train_model,
    train_or_load,
    training_settings,
)
from equisae.models.vit import ViTAutoencoder

__all__ = [
    "ARCHITECTURES",
    "CNNAutoencoder",
    "GCNNAutoencoder",
    "LAYERS",
    "MLPAutoencoder",
    "MODEL_NAMES",
    "MODEL_SPECS",
    "ModelSpec",
    "TrainSettings",
    "ViTAutoencoder",
    "build_model",
    "evaluate_reconstruction",
    "feature_permutation",
    "get_spec",
    "image_overrides",
    "load_checkpoint",
    "model_config",
    "random_rotations",
    "reconstruction_mse",
    "rotate_features",
    "save_checkpoint",
    "train_model",
    "train_or_load",
    "training_settings",
]
