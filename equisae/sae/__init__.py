"""Sparse autoencoders: the base class, one config dataclass per class, TopK / ReLU / BatchTopK,
the equivariant family, the trainer and the save format."""

from equisae.sae.adaptive import AdaptiveEquivariantSAE
from equisae.sae.base import (
    ARCHITECTURES,
    LossOutput,
    SAEOutput,
    SparseAutoencoder,
    get_architecture,
    register_architecture,
)
from equisae.sae.batchtopk import BatchTopKSAE
from equisae.sae.canonical import AdaptiveCanonicalSAE, CanonicalEquivariantSAE
from equisae.sae.config import (
    AdaptiveEquivariantConfig,
    BatchTopKConfig,
    CrosscoderConfig,
    EquivariantConfig,
    GroupTopKConfig,
    ReLUConfig,
    SAEConfig,
    TopKConfig,
    WideConfig,
)
from equisae.sae.crosscoder import GroupCrosscoder
from equisae.sae.equivariant import EquivariantSAE
from equisae.sae.evaluate import evaluate_on_orbits, orbit_latents
from equisae.sae.io import load_sae, save_sae
from equisae.sae.relu import ReLUSAE
from equisae.sae.topk import TopKSAE
from equisae.sae.train import TrainConfig, TrainResult, iterate_minibatches, minibatches, train_sae
from equisae.sae.wide import WideSAE

__all__ = [
    "ARCHITECTURES",
    "AdaptiveEquivariantConfig",
    "BatchTopKConfig",
    "CrosscoderConfig",
    "EquivariantConfig",
    "GroupTopKConfig",
    "ReLUConfig",
    "SAEConfig",
    "TopKConfig",
    "WideConfig",
    "AdaptiveCanonicalSAE",
    "AdaptiveEquivariantSAE",
    "CanonicalEquivariantSAE",
    "EquivariantSAE",
    "GroupCrosscoder",
    "WideSAE",
    "evaluate_on_orbits",
    "BatchTopKSAE",
    "LossOutput",
    "ReLUSAE",
    "SAEOutput",
    "SparseAutoencoder",
    "TopKSAE",
    "TrainConfig",
    "TrainResult",
    "get_architecture",
    "iterate_minibatches",
    "load_sae",
    "minibatches",
    "orbit_latents",
    "register_architecture",
    "save_sae",
    "train_sae",
]
