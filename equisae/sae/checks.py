"""Finiteness checks of SAE training: a batch, a loss, and why a loss went non-finite."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["RUNAWAY_WEIGHT", "check_finite_batch", "check_finite_loss", "nonfinite_loss_cause"]


def _nonfinite_cause(tensor: Tensor) -> str | None:
    """'contains NaN' / 'contains inf' (with a count), or None when ``tensor`` is all finite."""
    if bool(torch.isfinite(tensor).all()):
        return None
    n_nan = int(torch.isnan(tensor).sum())
    n_inf = int(torch.isinf(tensor).sum())
    parts = [f"{n} {what}" for n, what in ((n_nan, "NaN"), (n_inf, "inf")) if n]
    return "contains " + " and ".join(parts) + " values"


def check_finite_batch(batch: Tensor, step: int) -> None:
    """FloatingPointError naming ``step`` when ``batch`` holds NaN or inf."""
    cause = _nonfinite_cause(batch)
    if cause is not None:
        raise FloatingPointError(
            f"non-finite batch at step {step} (batch {cause}): clean or drop those activations"
        )


#: weights larger than this (in absolute value) have run away: the learning rate is at fault
RUNAWAY_WEIGHT = 1e6


def nonfinite_loss_cause(params: Iterable[Tensor], batch: Tensor | None = None) -> str:
    """Which of the weights, the input or the learning rate made a finite step's loss
    non-finite: non-finite weights; an input so large that its square overflows its dtype;
    weights that have run away (above :data:`RUNAWAY_WEIGHT`); otherwise the learning rate."""
    params = [p.detach() for p in params]
    if any(not bool(torch.isfinite(p).all()) for p in params):
        return "the weights are non-finite: an earlier update diverged; lower the learning rate"
    if batch is not None and batch.numel():
        largest = float(batch.detach().abs().max())
        limit = math.sqrt(torch.finfo(batch.dtype).max) / max(1, batch.shape[-1])
        if largest > limit:
            return (
                f"the input: activations up to {largest:.3g} overflow {batch.dtype} when "
                f"squared (at most about {limit:.3g}); rescale or clean them"
            )
    biggest = max((float(p.abs().max()) for p in params if p.numel()), default=0.0)
    if biggest > RUNAWAY_WEIGHT:
        return f"the learning rate: the weights have grown to {biggest:.3g}; lower it"
    return "the learning rate: finite input and weights of ordinary size; lower it"


def check_finite_loss(
    total: Tensor, step: int, params: Iterable[Tensor], batch: Tensor | None = None
) -> None:
    """FloatingPointError naming ``step`` and the likely cause when the loss is not finite
    (:func:`nonfinite_loss_cause`)."""
    if bool(torch.isfinite(total)):
        return
    cause = nonfinite_loss_cause(params, batch)
    raise FloatingPointError(f"non-finite loss at step {step} ({cause})")
