"""Minibatches for SAE training: seeded random batches of a tensor, and orbit data per SAE kind."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["iterate_minibatches", "minibatches", "orbit_training_data"]


def iterate_minibatches(
    tensor: Tensor, batch_size: int, n_steps: int, seed: int = 0
) -> Iterator[Tensor]:
    """Yield ``n_steps`` random minibatches of ``tensor`` (N, ...) along dim 0, epoch by epoch.

    Each epoch is a fresh permutation from a generator seeded with ``seed``; the last partial
    batch of an epoch is dropped unless the whole tensor is smaller than one batch.
    """
    if not isinstance(tensor, Tensor) or tensor.ndim == 0 or tensor.shape[0] == 0:
        raise ValueError("tensor must be a torch.Tensor with at least one row")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps <= 0:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    n = tensor.shape[0]
    size = min(batch_size, n)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    while True:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n - size + 1, size):
            yield tensor[perm[start : start + size]]
            step += 1
            if step >= n_steps:
                return


class _Minibatches:
    """An iterable with a length, so train_sae can size its schedule from it."""

    def __init__(self, tensor: Tensor, batch_size: int, n_steps: int, seed: int) -> None:
        self.args = (tensor, batch_size, n_steps, seed)
        next(iterate_minibatches(*self.args))  # validate eagerly

    def __iter__(self) -> Iterator[Tensor]:
        return iterate_minibatches(*self.args)

    def __len__(self) -> int:
        return self.args[2]


def minibatches(tensor: Tensor, batch_size: int, n_steps: int, seed: int = 0) -> _Minibatches:
    """Like :func:`iterate_minibatches` but re-iterable and with ``len()``."""
    return _Minibatches(tensor, batch_size, n_steps, seed)


def orbit_training_data(acts: Tensor, orbit_model: bool, batch_size: int) -> tuple[Tensor, int]:
    """The training data and rows per step for an SAE fed from orbit activations (N, |G|, d).

    ``batch_size`` counts activations per step. An orbit SAE (``orbit_model``) trains on whole
    orbits, ``batch_size // |G|`` (at least 1) per step; any other SAE on the flattened
    activations (N |G|, d), ``batch_size`` per step. Either way every step sees about the same
    number of activations.
    """
    if not isinstance(acts, Tensor) or acts.ndim != 3:
        shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
        raise ValueError(f"acts must have shape (N, |G|, d), got {shape}")
    n, order, d = acts.shape
    if orbit_model:
        return acts, max(1, batch_size // order)
    return acts.reshape(n * order, d), batch_size
