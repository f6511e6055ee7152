"""TopK sparse autoencoder (Gao et al. 2024): keep the k largest pre-activations, then ReLU."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from equisae.sae.base import SparseAutoencoder, _check_positive_int, register_architecture

__all__ = ["TopKSAE", "topk_activation"]


def topk_activation(pre_acts: Tensor, k: int) -> Tensor:
    """Zero all but the k largest entries of each row of ``pre_acts``, then apply ReLU."""
    vals, idx = pre_acts.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre_acts).scatter(-1, idx, vals.relu())


def _check_k(k: Any, d_sae: int) -> int:
    _check_positive_int("k", k)
    if k > d_sae:
        raise ValueError(f"k must be at most d_sae={d_sae}, got k={k}")
    return k


@register_architecture("topk")
class TopKSAE(SparseAutoencoder):
    """The default SAE: exactly ``k`` (non-negative) active latents per example."""

    def __init__(self, d_in: int, d_sae: int, k: int, **kwargs: Any) -> None:
        super().__init__(d_in, d_sae, **kwargs)
        self.k = _check_k(k, self.d_sae)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "k": self.k}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}"

    def activation(self, pre_acts: Tensor) -> Tensor:
        return topk_activation(pre_acts, self.k)
