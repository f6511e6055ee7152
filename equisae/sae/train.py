"""The SAE trainer: Adam with warm-up and decay, unit-norm decoder, AuxK for dead latents.

One loop, :func:`train_saes`, trains one SAE on its own weights through its own ``loss``
(:func:`train_sae`: any :class:`~equisae.sae.base.SparseAutoencoder`, orbit SAEs included, on
any iterable of activation batches) or S SAEs of one class as one stack through their
``stacked_loss`` (:func:`equisae.sae.batched.train_many`); the update is
:class:`~equisae.sae.optim.SAEOptimiser` either way. Minibatches (:mod:`equisae.sae.minibatch`)
and the finiteness checks (:mod:`equisae.sae.checks`) are re-exported here.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from equisae.sae.base import LossOutput, SparseAutoencoder
from equisae.sae.checks import (
    check_finite_batch,
    check_finite_loss,
    nonfinite_loss_cause,
)
from equisae.sae.init import geometric_median
from equisae.sae.minibatch import iterate_minibatches, minibatches, orbit_training_data
from equisae.sae.optim import SAEOptimiser
from equisae.sae.stack import Stack, StackedLoss, offset_rows

__all__ = [
    "MetricLog",
    "TrainConfig",
    "TrainResult",
    "activation_scale",
    "check_finite_batch",
    "as_stacked",
    "check_finite_loss",
    "nonfinite_loss_cause",
    "geometric_median",
    "head_sample",
    "iterate_minibatches",
    "lr_factor",
    "minibatches",
    "orbit_training_data",
    "prepare_sae",
    "resolve_n_steps",
    "train_sae",
    "train_saes",
    "training_diagnostics",
]

B_DEC_INITS = ("geometric_median", "mean", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Trainer settings.

    ``n_steps`` None means "as many steps as the iterable has" (it must then have a length);
    when both are given they must agree (a mismatch is an error, never a silently shorter
    schedule). The default ``lr`` 4e-3 is the rate the project's learning-rate study found
    best for TopK SAEs at these sizes (a study of learning rate and training length on the sweeps' shapes).
    The learning rate rises linearly over ``warmup_steps``, stays at ``lr``, and decays
    linearly to zero over the last ``decay_fraction`` of the steps. A latent is dead when it
    has not fired on the last ``dead_after`` examples (rows of the flattened latents).
    ``normalize_activations`` scales inputs to mean norm sqrt(d_in) during training and folds
    the scale back into the weights at the end.
    """

    n_steps: int | None = None
    lr: float = 4e-3
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 50
    decay_fraction: float = 0.2
    grad_clip: float | None = 1.0
    b_dec_init: str = "geometric_median"
    init_batches: int = 4
    geometric_median_iters: int = 20
    normalize_activations: bool = True
    dead_after: int = 20_000
    use_auxk: bool = True
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_steps is not None and (not isinstance(self.n_steps, int) or self.n_steps <= 0):
            raise ValueError(f"n_steps must be a positive integer or None, got {self.n_steps!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite positive number, got {self.lr!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not 0 <= self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip!r}")
        if self.b_dec_init not in B_DEC_INITS:
            raise ValueError(f"b_dec_init must be one of {B_DEC_INITS}, got {self.b_dec_init!r}")
        if self.init_batches <= 0:
            raise ValueError(f"init_batches must be positive, got {self.init_batches!r}")
        if self.dead_after <= 0:
            raise ValueError(f"dead_after must be positive, got {self.dead_after!r}")
        if self.log_every <= 0:
            raise ValueError(f"log_every must be positive, got {self.log_every!r}")


@dataclass
class TrainResult:
    """What :func:`train_sae` returns.

    ``history``: one dict per logged step (step, lr, loss, the loss terms as ``loss_<name>``,
    mse in input units, fvu, l0, dead_fraction). ``final``: the same metrics averaged over the last logging window.
    ``dead_mask``: latents dead at the end. ``activation_scale``: the input scale used in
    training (already folded into the weights; 1.0 without normalisation).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    dead_mask: Tensor | None = None
    activation_scale: float = 1.0
    n_steps: int = 0
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)


def activation_scale(sample: Tensor) -> float:
    """The factor that gives the (N, d) rows of ``sample`` mean norm sqrt(d)."""
    mean_norm = float(sample.detach().double().norm(dim=-1).mean())
    if not (mean_norm > 0 and math.isfinite(mean_norm)):
        raise ValueError(f"cannot normalise activations with mean norm {mean_norm!r}")
    return math.sqrt(sample.shape[-1]) / mean_norm


def lr_factor(step: int, n_steps: int, cfg: TrainConfig) -> float:
    """Linear warm-up, constant, then linear decay to zero over the last decay_fraction."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    decay_steps = int(round(cfg.decay_fraction * n_steps))
    if decay_steps > 0 and step >= n_steps - decay_steps:
        return warm * max(0.0, (n_steps - step) / (decay_steps + 1))
    return warm


def resolve_n_steps(cfg: TrainConfig, batches: Any) -> int:
    """``cfg.n_steps``, or ``len(batches)`` when it is None (ValueError if that is impossible).

    When both are known they must agree: ``TrainConfig(n_steps=50)`` with
    ``minibatches(..., n_steps=20)`` raises instead of running 20 steps of a 50-step schedule.
    """
    if cfg.n_steps is not None:
        length = None
        if batches is not None and hasattr(batches, "__len__"):
            length = len(batches)
        if length == 0:
            raise ValueError("batches is empty")
        if length is not None and length != cfg.n_steps:
            raise ValueError(
                f"cfg.n_steps={cfg.n_steps} but batches holds {length} batches: give the step "
                "count once (TrainConfig(n_steps=None) takes it from the batches)"
            )
        return cfg.n_steps
    try:
        n_steps = len(batches)
    except TypeError:
        raise ValueError(
            "cfg.n_steps is None and batches has no len(): give n_steps explicitly"
        ) from None
    if n_steps <= 0:
        raise ValueError("batches is empty")
    return n_steps


def head_sample(head: list[Any], d_in: int) -> Tensor:
    """The first batches, checked (tensors, last dim ``d_in``, finite) and flattened to (N, d_in)."""
    if not head:
        raise ValueError("batches is empty")
    for i, b in enumerate(head):
        if not isinstance(b, Tensor):
            raise ValueError(f"batch {i} must be a torch.Tensor, got {type(b).__name__}")
        if b.shape[-1] != d_in:
            raise ValueError(f"batches must have last dimension d_in={d_in}, got {b.shape[-1]}")
        check_finite_batch(b, i)
    return torch.cat([b.reshape(-1, b.shape[-1]) for b in head])


def prepare_sae(sae: SparseAutoencoder, sample: Tensor, cfg: TrainConfig) -> float:
    """Before training: the activation scale, ``b_dec`` from ``sample``, unit decoder rows.

    Returns the scale (1.0 without ``cfg.normalize_activations``); puts ``sae`` in train mode.
    """
    scale = activation_scale(sample) if cfg.normalize_activations else 1.0
    sae.train()
    sae.init_from_sample(sample * scale, cfg.b_dec_init)
    sae.normalize_decoder()
    return scale


def training_diagnostics(sae: SparseAutoencoder) -> dict[str, float]:
    """Model state logged with the metrics (a learned representation's drift and group error;
    ``{}`` for models without a ``training_diagnostics`` method)."""
    diagnose = getattr(sae, "training_diagnostics", None)
    return diagnose() if callable(diagnose) else {}


class MetricLog:
    """Per-step metric rows averaged over windows of ``log_every`` steps into ``history``."""

    def __init__(self, n_steps: int, log_every: int) -> None:
        self.n_steps = n_steps
        self.log_every = log_every
        self.history: list[dict[str, float]] = []
        self.window: list[dict[str, float]] = []

    def add(self, step: int, row: dict[str, float], lr: float) -> dict[str, float] | None:
        """Record step ``step``'s row; at a logging step return the logged (averaged) row."""
        self.window.append(row)
        if (step + 1) % self.log_every != 0 and step + 1 != self.n_steps:
            return None
        window = self.window
        mean_row = {k: sum(r.get(k, 0.0) for r in window) / len(window) for k in window[-1]}
        mean_row["dead_fraction"] = row["dead_fraction"]
        self.history.append({"step": step + 1, "lr": lr, **mean_row})
        self.window = []
        return mean_row


def as_stacked(out: LossOutput, d_sae: int) -> StackedLoss:
    """One SAE's :class:`LossOutput` as a :class:`~equisae.sae.stack.StackedLoss` of one: the
    selected latents of a sparse loss, or every latent of dense ones (their non-zeros fire)."""
    idx = getattr(out, "active_idx", None)
    if idx is not None:
        k = idx.shape[-1]
        idx, vals = idx.reshape(1, -1, k), out.active_vals.detach().reshape(1, -1, k)
    else:
        if out.latents is None:
            raise ValueError("the loss must give its latents (LossOutput.latents) to train on")
        vals = out.latents.detach().reshape(1, -1, d_sae)
        idx = torch.arange(d_sae, device=vals.device).expand_as(vals)
    return StackedLoss(
        total=out.total[None],
        terms={name: value[None] for name, value in out.terms.items()},
        idx=idx,
        vals=vals,
        recon=out.recon[None],
        target=out.target[None],
        latent_lead=tuple(vals.shape[1:-1]),
    )


class _OwnWeights:
    """One SAE trained on its own parameters through its own ``loss`` (any class)."""

    def __init__(self, sae: SparseAutoencoder) -> None:
        self.saes = [sae]
        self.trained = [getattr(sae, name) for name in Stack.names(sae)]

    def loss(self, batch: Tensor, dead: Tensor | None) -> StackedLoss:
        sae = self.saes[0]
        out = sae.loss(batch[0], dead_mask=None if dead is None else dead[0])
        return as_stacked(out, sae.d_sae)

    def write_back(self) -> None:
        """Nothing to copy: the weights are the model's."""


def _step_rows(
    out: StackedLoss, has_dead: Tensor, scales: Tensor, since_fired: Tensor, d_in: int
) -> list[dict[str, float]]:
    """Per-SAE metric rows: the loss and its terms (``loss_<name>``; AuxK only for SAEs with
    dead latents), MSE in input units, FVU, L0; updates ``since_fired`` (S, F) in place."""
    s, d_sae = since_fired.shape
    idx, vals = out.idx, out.vals
    nonzero = vals != 0
    fired = torch.zeros(s * d_sae, dtype=torch.bool, device=since_fired.device)
    fired[offset_rows(idx, d_sae)[nonzero]] = True
    since_fired += idx.shape[1]
    since_fired[fired.view(s, d_sae)] = 0
    l0 = nonzero.sum(-1).double().mean(1)
    target = out.target.detach().reshape(s, -1, d_in)
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


def _lrs(
    cfgs: Sequence[TrainConfig], step: int, n_steps: int, device: torch.device | None = None
) -> Tensor:
    """Each SAE's learning rate at ``step``: ``lr * lr_factor(step)``."""
    return torch.tensor(
        [c.lr * lr_factor(step, n_steps, c) for c in cfgs], dtype=torch.float64, device=device
    )


def _next_batch(
    iterators: list[Iterator[Tensor]],
    step: int,
    n_steps: int,
    scales: Tensor,
    device: torch.device,
) -> Tensor:
    """The next batch of every SAE, scaled, stacked (S, ...) on ``device`` and checked."""
    batches = []
    for i, it in enumerate(iterators):
        try:
            batches.append(next(it))
        except StopIteration:
            who = f"the batches of SAE {i}" if len(iterators) > 1 else "batches"
            raise ValueError(
                f"{who} ran out after {step} of cfg.n_steps={n_steps} steps: give at least "
                "n_steps batches (minibatches(tensor, batch_size, n_steps) makes exactly that many)"
            ) from None
    shapes = {tuple(b.shape) for b in batches}
    if len(shapes) != 1:
        raise ValueError(f"all SAEs need batches of one shape at step {step}, got {shapes}")
    if len(batches) == 1:
        stacked = batches[0].unsqueeze(0).to(device)
    else:
        stacked = torch.stack(batches).to(device)  # no copy when already there (the CPU)
    if bool((scales != 1.0).any()):
        stacked = stacked * scales.to(stacked.dtype).view(-1, *[1] * (stacked.ndim - 1))
    if not bool(torch.isfinite(stacked).all()):
        for i, b in enumerate(stacked):
            try:
                check_finite_batch(b, step)
            except FloatingPointError as exc:
                raise FloatingPointError(
                    f"{exc} (SAE {i})" if len(iterators) > 1 else str(exc)
                ) from None
    return stacked


def _check_losses(
    total: Tensor, step: int, params: list[Tensor], batch: Tensor, named: bool
) -> None:
    """FloatingPointError naming the step (the SAE when ``named``) and the cause of a
    non-finite loss (:func:`nonfinite_loss_cause` on that SAE's weights and batch)."""
    finite = torch.isfinite(total)
    if bool(finite.all()):
        return
    i = int((~finite).nonzero()[0])
    weights = [p[i] for p in params] if named else params
    cause = nonfinite_loss_cause(weights, batch[i])
    where = f" in SAE {i}" if named else ""
    raise FloatingPointError(f"non-finite loss at step {step}{where} ({cause})")


def train_saes(
    saes: Sequence[SparseAutoencoder],
    streams: Sequence[Iterable[Tensor]],
    cfgs: Sequence[TrainConfig],
    n_steps: int,
    *,
    stacked: bool,
    progress: bool = False,
) -> list[TrainResult]:
    """The training loop of :func:`train_sae` (one SAE, ``stacked=False``: its own weights
    and ``loss``) and of :func:`equisae.sae.batched.train_many` (``stacked=True``: S SAEs of
    one class as a :class:`~equisae.sae.stack.Stack`, their ``stacked_loss``).

    Per SAE: ``b_dec`` and the activation scale from its first ``init_batches`` batches; per
    step the batch is checked, the loss computed and checked, then backward, parallel-gradient
    removal, clipping, Adam with its schedule, decoder renormalisation, dead-latent tracking
    and the metric row; the weights are written back and the scale folded in at the end.
    """
    iterators: list[Iterator[Tensor]] = []
    scales: list[float] = []
    for sae, batches, c in zip(saes, streams, cfgs, strict=True):
        torch.manual_seed(c.seed)
        where = sae.W_dec.device  # the batches follow the SAE (no copy on the CPU)
        it = (b.to(where) if isinstance(b, Tensor) else b for b in batches)
        head = list(itertools.islice(it, c.init_batches))
        scales.append(prepare_sae(sae, head_sample(head, sae.d_in), c))
        iterators.append(itertools.chain(head, it))
    model = Stack.of(saes) if stacked else _OwnWeights(saes[0])
    optimiser = SAEOptimiser(
        model.trained,
        stacked=stacked,
        model=saes[0],
        grad_clips=[c.grad_clip for c in cfgs],
        betas=[c.betas for c in cfgs],
    )
    s, d_sae, d_in = len(saes), saes[0].d_sae, saes[0].d_in
    dev = saes[0].W_dec.device
    diagnosed = callable(getattr(saes[0], "training_diagnostics", None))
    scale_t = torch.tensor(scales, dtype=torch.float64, device=dev)
    dead_after = torch.tensor([c.dead_after for c in cfgs], device=dev)
    use_auxk = torch.tensor([c.use_auxk for c in cfgs], device=dev)
    since_fired = torch.zeros(s, d_sae, dtype=torch.long, device=dev)
    logs = [MetricLog(n_steps, c.log_every) for c in cfgs]
    name = saes[0].architecture + (f" x{s}" if stacked else "")
    bar = tqdm(total=n_steps, desc=f"train {name}", disable=not progress)
    start = time.perf_counter()
    for step in range(n_steps):
        batch = _next_batch(iterators, step, n_steps, scale_t, dev)
        dead = (since_fired >= dead_after[:, None]) & use_auxk[:, None]
        has_dead = dead.any(1)
        out = model.loss(batch, dead if bool(has_dead.any()) else None)
        _check_losses(out.total.detach(), step, model.trained, batch, stacked)
        optimiser.zero_grad()
        out.total.sum().backward()
        optimiser.remove_parallel_grads()
        optimiser.clip_grads(step)
        optimiser.adam(_lrs(cfgs, step, n_steps, dev))
        optimiser.normalize_decoder()
        rows = _step_rows(out, has_dead, scale_t, since_fired, d_in)
        dead_frac = (since_fired >= dead_after[:, None]).double().mean(1).tolist()
        next_lrs = _lrs(cfgs, step + 1, n_steps).tolist()
        logged = []
        for i, row in enumerate(rows):
            row["dead_fraction"] = dead_frac[i]
            if logs[i].add(step, row, next_lrs[i]) is not None:
                logged.append(i)
        if logged and diagnosed:  # the model state logged with the metrics (learned generators)
            model.write_back()
            for i in logged:
                logs[i].history[-1].update(training_diagnostics(saes[i]))
        if logged and s == 1:
            last = logs[0].history[-1]
            bar.set_postfix({k: f"{last[k]:.3g}" for k in ("loss", "fvu", "l0") if k in last})
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    model.write_back()
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


def train_sae(
    sae: SparseAutoencoder,
    batches: Iterable[Tensor],
    cfg: TrainConfig | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train ``sae`` in place on ``batches`` (each (..., d_in), or whatever ``sae.loss`` takes).

    ``device`` (e.g. ``"cuda"``): the SAE is moved there and every batch is moved there as it
    is drawn (the batches may stay on the CPU); ``None`` trains where the SAE already is.

    Steps (:func:`train_saes`): b_dec from the geometric median (or mean) of the first
    ``init_batches`` batches; optional normalisation of activations to mean norm sqrt(d_in);
    Adam with warm-up and linear decay; per step the gradient parallel to each decoder row is
    removed, gradients are clipped and decoder rows are renormalised; AuxK on latents dead for
    ``dead_after`` examples. Deterministic under ``cfg.seed`` on CPU. A batch, loss or gradient
    norm that is not finite raises FloatingPointError naming the step and the cause, before
    the update. The same loop as ``train_many``: ``train_sae(sae)`` equals ``train_many([sae])``.
    """
    cfg = cfg or TrainConfig()
    if not isinstance(sae, SparseAutoencoder):
        raise ValueError(f"sae must be a SparseAutoencoder, got {type(sae).__name__}")
    n_steps = resolve_n_steps(cfg, batches)
    if device is not None:
        sae.to(device)
    return train_saes([sae], [batches], [cfg], n_steps, stacked=False, progress=progress)[0]
