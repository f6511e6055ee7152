"""Evaluation helpers shared by the notebooks: reconstruction, sparsity and dictionary matching.

All functions take tensors (or arrays convertible to tensors) and return Python floats,
tensors or a small dataclass. Activations and latents may have any leading dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = [
    "MatchResult",
    "dead_fraction",
    "decoder_cosine_matrix",
    "feature_density",
    "density_histogram",
    "fvu",
    "l0",
    "match_dictionaries",
    "mean_max_cosine",
    "mse",
    "cosine_matrix",
]


def _as_tensor(x: Tensor | np.ndarray, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a tensor or array, got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    return x.detach()


def _pair(x: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    x = _as_tensor(x, "x")
    x_hat = _as_tensor(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(
            f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}"
        )
    d = x.shape[-1]
    return x.reshape(-1, d).double(), x_hat.reshape(-1, d).double()


def mse(x: Tensor, x_hat: Tensor) -> float:
    """Mean squared error per element."""
    x, x_hat = _pair(x, x_hat)
    return float((x - x_hat).pow(2).mean())


def fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2."""
    x, x_hat = _pair(x, x_hat)
    if x.shape[0] < 2:
        raise ValueError("fvu needs at least two examples to measure variance")
    total = (x - x.mean(0)).pow(2).sum()
    if total <= 0:
        raise ValueError("fvu is undefined: x has zero variance")
    return float((x - x_hat).pow(2).sum() / total)


def l0(latents: Tensor) -> float:
    """Mean number of non-zero latents per example."""
    z = _as_tensor(latents, "latents")
    return float((z.reshape(-1, z.shape[-1]) != 0).sum(-1).double().mean())


def feature_density(latents: Tensor) -> Tensor:
    """Per-latent firing frequency (d_sae,): the fraction of examples where it is non-zero."""
    z = _as_tensor(latents, "latents")
    return (z.reshape(-1, z.shape[-1]) != 0).double().mean(0)


def dead_fraction(latents: Tensor) -> float:
    """Fraction of latents that never fire on these examples."""
    return float((feature_density(latents) == 0).double().mean())


def density_histogram(
    latents: Tensor, bins: int = 40, min_log10: float = -6.0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Histogram of log10 feature densities: (counts, bin edges, number of dead latents).

    Dead latents (density 0) have no logarithm; they are counted separately.
    """
    if bins <= 0:
        raise ValueError(f"bins must be positive, got {bins!r}")
    dens = feature_density(latents).numpy()
    alive = dens[dens > 0]
    counts, edges = np.histogram(np.log10(alive), bins=bins, range=(min_log10, 0.0))
    return counts, edges, int((dens == 0).sum())


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarities (n_a, n_b) between the rows of ``a`` (n_a, d) and ``b`` (n_b, d)."""
    a = _as_tensor(a, "a")
    b = _as_tensor(b, "b")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a and b must be (n, d) with the same d, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    a = a.double() / a.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b.double() / b.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    return a @ b.T


def decoder_cosine_matrix(W_dec: Tensor) -> Tensor:
    """Cosine similarities (d_sae, d_sae) between decoder rows (SAELens layout (d_sae, d_in))."""
    return cosine_matrix(W_dec, W_dec)


def mean_max_cosine(atoms: Tensor, features: Tensor) -> float:
    """For every true feature (row of ``features``), the best |cosine| over ``atoms``; averaged."""
    return float(cosine_matrix(atoms, features).abs().max(dim=0).values.mean())


@dataclass
class MatchResult:
    """A one-to-one matching of rows of ``a`` to rows of ``b`` maximising total cosine."""

    rows_a: np.ndarray  # indices into a
    rows_b: np.ndarray  # indices into b, paired with rows_a
    cosines: np.ndarray  # cosine of each matched pair
    mean_cosine: float  # mean over the min(n_a, n_b) matched pairs

    def fraction_above(self, threshold: float) -> float:
        """Fraction of matched pairs whose cosine exceeds ``threshold``."""
        return float((self.cosines > threshold).mean()) if len(self.cosines) else 0.0


def match_dictionaries(a: Tensor, b: Tensor, absolute: bool = False) -> MatchResult:
    """Hungarian matching of the rows of two dictionaries on cosine similarity.

    Works for two SAEs' decoders (``sae1.W_dec``, ``sae2.W_dec``) or a decoder against
    ground-truth features. With ``absolute`` the sign of a match is ignored.
    """
    cos = cosine_matrix(a, b)
    score = cos.abs() if absolute else cos
    rows, cols = linear_sum_assignment(score.numpy(), maximize=True)
    matched = score.numpy()[rows, cols]
    return MatchResult(rows_a=rows, rows_b=cols, cosines=matched, mean_cosine=float(matched.mean()))
