"""Train many SAEs of one shape as one stacked model (seeds, k values, learning rates of a sweep).

:func:`train_many` gives each SAE exactly what :func:`~equisae.sae.train.train_sae` would:
its own batch stream, ``b_dec`` initialisation and activation scale, learning-rate schedule,
Adam state, per-SAE gradient clipping, parallel-gradient removal, decoder renormalisation,
dead-latent tracking, AuxK and metric history. The loss is the class's own, written once on
stacked weights (``stacked_loss`` on a :class:`~equisae.sae.stack.Stack`, the code the model's
``loss`` runs on a stack of one); the weights are stacked ``(S, ...)`` and the arithmetic uses
batched products, so a step costs about as many Python-level operations as one SAE's step: at
sweep sizes, where a step is dominated by per-operation overhead, S SAEs train several times
faster than one after another (``benchmarks/bench_sae.py --batched``).

:func:`can_stack` is the one decision point: SAEs of one class whose loss is its stacked loss
(the TopK family: TopK, wide, crosscoder and the equivariant SAEs, C_n and D_n) and which agree
on the shapes, dtype, device, group and, for learned representations, the equivariance bases
(:meth:`stack_key`) train stacked; others are trained one by one with ``train_sae`` (same
results, no speed-up). Per-SAE ``k``, lambdas, ``aux_coef`` and generators may differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from equisae.device import resolve_device
from equisae.sae.base import SparseAutoencoder
from equisae.sae.topk import TopKSAE
from equisae.sae.train import (
    TrainConfig,
    TrainResult,
    minibatches,
    resolve_n_steps,
    train_sae,
    train_saes,
)

__all__ = ["can_stack", "stack_key", "train_many"]


def stack_key(sae: SparseAutoencoder) -> tuple | None:
    """What SAEs must share to train as one stack, or None when ``sae`` cannot be stacked
    (its loss is not its ``stacked_loss``): the class, the shapes, dtype and device of its
    parameters, and (equivariant SAEs) the group, the equivariance bases and which
    generators are learned."""
    if not isinstance(sae, TopKSAE) or type(sae).loss is not TopKSAE.loss or not sae.stacks():
        return None
    params = tuple((n, tuple(p.shape), p.dtype, str(p.device)) for n, p in sae.named_parameters())
    group = getattr(sae, "group", None)
    learned = ()
    if group is not None:
        learned = tuple(isinstance(g, torch.nn.Parameter) for g in sae.generators().values())
        if any(learned) != bool(sae.learns_representation) or len(set(learned)) > 1:
            return None
    return (
        type(sae),
        params,
        None if group is None else group.name,
        getattr(sae, "equivariance_bases", None),
        learned,
    )


def can_stack(saes: Sequence[SparseAutoencoder]) -> bool:
    """Whether :func:`train_many` trains ``saes`` as one stacked model (see the module doc)."""
    keys = {stack_key(sae) for sae in saes}
    return len(keys) == 1 and None not in keys


def _batch_streams(
    saes: Sequence[SparseAutoencoder],
    data: Any,
    cfgs: Sequence[TrainConfig],
    batch_size: int | None,
    seeds: Sequence[int] | None,
) -> list[Iterable[Tensor]]:
    """One batch iterable per SAE: given as such, or drawn from a tensor (shared or per SAE)."""
    n = len(saes)
    if isinstance(data, Tensor) or (
        isinstance(data, Sequence) and data and all(isinstance(t, Tensor) for t in data)
    ):
        tensors = [data] * n if isinstance(data, Tensor) else list(data)
        if batch_size is None:
            raise ValueError("batch_size is required when data is a tensor (or a list of them)")
        seeds = [c.seed for c in cfgs] if seeds is None else list(seeds)
        if len(tensors) != n or len(seeds) != n:
            raise ValueError(
                f"need one data tensor and one seed per SAE ({n}), "
                f"got {len(tensors)} tensors and {len(seeds)} seeds"
            )
        return [
            minibatches(t, batch_size, resolve_n_steps(c, None), seed=seed)
            for t, c, seed in zip(tensors, cfgs, seeds, strict=True)
        ]
    if not isinstance(data, Sequence) or len(data) != n:
        raise ValueError(
            f"data must be a tensor, a list of {n} tensors or a list of {n} batch iterables"
        )
    return list(data)


def _configs(cfg: TrainConfig | Sequence[TrainConfig] | None, n: int) -> list[TrainConfig]:
    if cfg is None or isinstance(cfg, TrainConfig):
        return [cfg or TrainConfig()] * n
    cfgs = list(cfg)
    if len(cfgs) != n or not all(isinstance(c, TrainConfig) for c in cfgs):
        raise ValueError(f"cfg must be a TrainConfig or a list of {n} of them, got {cfg!r}")
    return cfgs


def train_many(
    saes: Sequence[SparseAutoencoder],
    data: Tensor | Sequence[Tensor] | Sequence[Iterable[Tensor]],
    cfg: TrainConfig | Sequence[TrainConfig] | None = None,
    *,
    batch_size: int | None = None,
    seeds: Sequence[int] | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> list[TrainResult]:
    """Train ``saes`` in place, each as ``train_sae`` would, as one stacked model when possible.

    ``data``: one batch iterable per SAE (as ``train_sae`` takes), or a tensor (shared) or a
    list of tensors (one per SAE) from which each SAE draws ``minibatches(data, batch_size,
    n_steps, seed)`` with its own seed (``seeds``, default each config's ``seed``). ``cfg``:
    one config for all or one per SAE; they may differ in everything but the number of steps.
    Returns one :class:`TrainResult` per SAE, equal (to float rounding) to ``train_sae``'s.
    ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``, see :func:`equisae.device.resolve_device`):
    the SAEs are moved there and every batch follows them; None keeps them where they are.
    """
    saes = list(saes)
    if not saes or not all(isinstance(s, SparseAutoencoder) for s in saes):
        raise ValueError("saes must be a non-empty list of SparseAutoencoder")
    cfgs = _configs(cfg, len(saes))
    streams = _batch_streams(saes, data, cfgs, batch_size, seeds)
    if device is not None:
        where = resolve_device(device)
        for sae in saes:
            sae.to(where)
    if not can_stack(saes):
        return [
            train_sae(sae, batches, c, progress=progress, device=device)
            for sae, batches, c in zip(saes, streams, cfgs, strict=True)
        ]
    n_steps_all = {resolve_n_steps(c, b) for c, b in zip(cfgs, streams, strict=True)}
    if len(n_steps_all) != 1:
        raise ValueError(f"all SAEs must train for the same number of steps, got {n_steps_all}")
    return train_saes(saes, streams, cfgs, n_steps_all.pop(), stacked=True, progress=progress)
