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

import itertools
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from equisae.device import resolve_device
from equisae.sae.base import SparseAutoencoder, normalize_rows_, remove_parallel_
from equisae.sae.stack import Stack, StackedLoss, offset_rows
from equisae.sae.topk import TopKSAE
from equisae.sae.train import (
    MetricLog,
    TrainConfig,
    TrainResult,
    check_finite_batch,
    head_sample,
    lr_factor,
    minibatches,
    nonfinite_loss_cause,
    prepare_sae,
    resolve_n_steps,
    train_sae,
    training_diagnostics,
)

__all__ = ["can_stack", "stack_key", "train_many"]

ADAM_EPS = 1e-8  # torch.optim.Adam's default, as in train_sae


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


class _Optimiser:
    """Per-SAE Adam, gradient clipping and decoder-row constraints of a :class:`Stack`."""

    def __init__(self, stack: Stack, cfgs: Sequence[TrainConfig]) -> None:
        self.stack = stack
        self.cfgs = cfgs
        dev = stack.device
        self.exp_avg = [torch.zeros_like(p) for p in stack.trained]
        self.exp_avg_sq = [torch.zeros_like(p) for p in stack.trained]
        self.n_updates = 0
        self.beta1 = torch.tensor([c.betas[0] for c in cfgs], dtype=torch.float64, device=dev)
        self.beta2 = torch.tensor([c.betas[1] for c in cfgs], dtype=torch.float64, device=dev)

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Per SAE (and block): drop the decoder gradient along each decoder row."""
        rows = self.stack.first.decoder_rows
        W_dec = self.stack["W_dec"]
        remove_parallel_(rows(W_dec.grad), rows(W_dec))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Per SAE (and block): decoder rows to unit norm."""
        normalize_rows_(self.stack.first.decoder_rows(self.stack["W_dec"]))

    @torch.no_grad()
    def clip_grads(self, step: int) -> None:
        """``clip_grad_norm_`` of each SAE's gradients with its own ``grad_clip``."""
        params, s = self.stack.trained, self.stack.s
        norms = torch.stack([p.grad.reshape(s, -1).norm(dim=1) for p in params], dim=1).norm(dim=1)
        if not bool(torch.isfinite(norms).all()):
            bad = int((~torch.isfinite(norms)).nonzero()[0])
            raise FloatingPointError(
                f"non-finite gradient at step {step} in SAE {bad} (loss was finite)"
            )
        clips = [c.grad_clip for c in self.cfgs]
        if all(c is None for c in clips):
            return
        max_norm = torch.tensor(
            [math.inf if c is None else c for c in clips], dtype=norms.dtype, device=norms.device
        )
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for p in params:
            p.grad.mul_(coef.view(-1, *[1] * (p.ndim - 1)).to(p.dtype))

    @torch.no_grad()
    def adam(self, lrs: Tensor) -> None:
        """One elementwise Adam step (as ``torch.optim.Adam``) with per-SAE lr and betas."""
        self.n_updates += 1
        t = self.n_updates
        # float64 per-SAE constants, cast to each parameter's dtype (as Python scalars would be)
        step_size = lrs / (1 - self.beta1**t)
        bc2_sqrt = (1 - self.beta2**t).sqrt()
        b1, b2 = self.beta1, self.beta2
        for p, m, v in zip(self.stack.trained, self.exp_avg, self.exp_avg_sq, strict=True):
            shape = (-1, *[1] * (p.ndim - 1))
            grad = p.grad
            m.lerp_(grad, (1 - b1).view(shape).to(p.dtype))
            v.mul_(b2.view(shape).to(p.dtype)).addcmul_(
                grad, grad * (1 - b2).view(shape).to(p.dtype)
            )
            denom = (v.sqrt() / bc2_sqrt.view(shape).to(p.dtype)).add_(ADAM_EPS)
            p.sub_(step_size.view(shape).to(p.dtype) * m / denom)


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
    return _train_stacked(saes, streams, cfgs, n_steps_all.pop())


def _train_stacked(
    saes: list[SparseAutoencoder],
    streams: list[Iterable[Tensor]],
    cfgs: list[TrainConfig],
    n_steps: int,
) -> list[TrainResult]:
    """The stacked training loop of :func:`train_many`."""
    iterators: list[Iterator[Tensor]] = []
    scales: list[float] = []
    for sae, batches, c in zip(saes, streams, cfgs, strict=True):
        torch.manual_seed(c.seed)
        it = iter(batches)
        where = sae.W_dec.device  # the batches follow the SAE (no copy on the CPU)
        head = [
            b.to(where) if isinstance(b, Tensor) else b
            for b in itertools.islice(it, c.init_batches)
        ]
        scales.append(prepare_sae(sae, head_sample(head, sae.d_in), c))
        iterators.append(itertools.chain(head, it))
    stack = Stack.of(saes)
    optimiser = _Optimiser(stack, cfgs)
    s, d_sae, dev = stack.s, saes[0].d_sae, stack.device
    diagnosed = callable(getattr(saes[0], "training_diagnostics", None))
    scale_t = torch.tensor(scales, dtype=torch.float64, device=dev)
    dead_after = torch.tensor([c.dead_after for c in cfgs], device=dev)
    use_auxk = torch.tensor([c.use_auxk for c in cfgs], device=dev)
    since_fired = torch.zeros(s, d_sae, dtype=torch.long, device=dev)
    logs = [MetricLog(n_steps, c.log_every) for c in cfgs]
    start = time.perf_counter()
    for step in range(n_steps):
        batch = _next_batch(iterators, step, scale_t, dev)
        dead = (since_fired >= dead_after[:, None]) & use_auxk[:, None]
        has_dead = dead.any(1)
        out = stack.loss(batch, dead if bool(has_dead.any()) else None)
        _check_losses(out.total.detach(), step, stack.trained, batch)
        for p in stack.trained:
            p.grad = None
        out.total.sum().backward()
        optimiser.remove_parallel_grads()
        optimiser.clip_grads(step)
        optimiser.adam(_lrs(cfgs, step, n_steps, dev))
        optimiser.normalize_decoder()
        rows = _step_rows(out, has_dead, scale_t, since_fired, saes[0].d_in)
        dead_frac = (since_fired >= dead_after[:, None]).double().mean(1).tolist()
        next_lrs = _lrs(cfgs, step + 1, n_steps).tolist()
        logged = []
        for i, row in enumerate(rows):
            row["dead_fraction"] = dead_frac[i]
            if logs[i].add(step, row, next_lrs[i]) is not None:
                logged.append(i)
        if logged and diagnosed:  # the model state logged with the metrics (learned generators)
            stack.write_back()
            for i in logged:
                logs[i].history[-1].update(training_diagnostics(saes[i]))
    seconds = time.perf_counter() - start
    stack.write_back()
    results = []
    for i, (sae, c) in enumerate(zip(saes, cfgs, strict=True)):
        if scales[i] != 1.0:
            sae.fold_activation_scale(scales[i])
        sae.eval()
        results.append(
            TrainResult(
                history=logs[i].history,
                final=dict(logs[i].history[-1]) if logs[i].history else {},
                dead_mask=(since_fired[i] >= c.dead_after).cpu(),
                activation_scale=scales[i],
                n_steps=n_steps,
                seconds=seconds,
                config=asdict(c),
            )
        )
    return results


def _lrs(
    cfgs: Sequence[TrainConfig], step: int, n_steps: int, device: torch.device | None = None
) -> Tensor:
    """Each SAE's learning rate at ``step`` (the LambdaLR schedule of ``train_sae``)."""
    return torch.tensor(
        [c.lr * lr_factor(step, n_steps, c) for c in cfgs], dtype=torch.float64, device=device
    )


def _next_batch(
    iterators: list[Iterator[Tensor]], step: int, scales: Tensor, device: torch.device
) -> Tensor:
    """The next batch of every SAE, scaled, stacked (S, ...) on ``device`` and checked."""
    batches = []
    for i, it in enumerate(iterators):
        try:
            batches.append(next(it))
        except StopIteration:
            raise ValueError(f"the batches of SAE {i} ran out at step {step}") from None
    shapes = {tuple(b.shape) for b in batches}
    if len(shapes) != 1:
        raise ValueError(f"all SAEs need batches of one shape at step {step}, got {shapes}")
    stacked = torch.stack(batches).to(device)  # no copy when already there (the CPU)
    if bool((scales != 1.0).any()):
        stacked = stacked * scales.to(stacked.dtype).view(-1, *[1] * (stacked.ndim - 1))
    if not bool(torch.isfinite(stacked).all()):
        for i, b in enumerate(stacked):
            try:
                check_finite_batch(b, step)
            except FloatingPointError as exc:
                raise FloatingPointError(f"{exc} (SAE {i})") from None
    return stacked


def _check_losses(total: Tensor, step: int, params: list[Tensor], batch: Tensor) -> None:
    """FloatingPointError naming the step, the SAE and the cause of a non-finite loss
    (:func:`equisae.sae.train.nonfinite_loss_cause` on that SAE's weights and batch)."""
    finite = torch.isfinite(total)
    if bool(finite.all()):
        return
    i = int((~finite).nonzero()[0])
    cause = nonfinite_loss_cause([p[i] for p in params], batch[i])
    raise FloatingPointError(f"non-finite loss at step {step} in SAE {i} ({cause})")


def _step_rows(
    out: StackedLoss, has_dead: Tensor, scales: Tensor, since_fired: Tensor, d_in: int
) -> list[dict[str, float]]:
    """Per-SAE metric rows (as ``train_sae``'s); updates ``since_fired`` (S, F) in place."""
    s, d_sae = since_fired.shape
    idx, vals = out.idx, out.vals
    nonzero = vals != 0
    fired = torch.zeros(s * d_sae, dtype=torch.bool, device=since_fired.device)
    fired[offset_rows(idx, d_sae)[nonzero]] = True
    since_fired += idx.shape[1]
    since_fired[fired.view(s, d_sae)] = 0
    l0 = nonzero.sum(-1).double().mean(1)
    target = out.target.reshape(s, -1, d_in)
    err = (out.recon.detach().reshape(target.shape) - target).pow(2)
    var = (target - target.mean(1, keepdim=True)).pow(2).sum((1, 2))
    mse = err.mean((1, 2)).double() / scales.double() ** 2
    fvu = err.sum((1, 2)) / var.clamp_min(1e-12)
    cols = {"loss": out.total.detach()}
    cols.update({f"loss_{name}": v.detach() for name, v in out.terms.items()})
    cols.update({"mse": mse, "fvu": fvu, "l0": l0})
    values = {k: v.tolist() for k, v in cols.items()}
    dead_list = has_dead.tolist()
    rows = []
    for i in range(s):
        rows.append({k: v[i] for k, v in values.items() if k != "loss_auxk" or dead_list[i]})
    return rows
