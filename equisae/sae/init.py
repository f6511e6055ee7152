"""Initialisation helpers shared by the SAE classes and the trainer: the decoder-bias centre."""

from __future__ import annotations

from torch import Tensor

__all__ = ["geometric_median"]


def geometric_median(points: Tensor, n_iter: int = 20, eps: float = 1e-8) -> Tensor:
    """Geometric median of (N, d) points by Weiszfeld iterations, started at the mean (float64)."""
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"points must have shape (N>0, d), got {tuple(points.shape)}")
    x = points.detach().double()
    median = x.mean(0)
    for _ in range(n_iter):
        weights = 1.0 / (x - median).norm(dim=1).clamp_min(eps)
        new = (weights[:, None] * x).sum(0) / weights.sum()
        if (new - median).norm() <= eps * (1 + median.norm()):
            median = new
            break
        median = new
    return median
