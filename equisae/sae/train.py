"""A generic SAE trainer: Adam with warm-up and decay, unit-norm decoder, AuxK for dead latents.

``train_sae`` works with any :class:`~equisae.sae.base.SparseAutoencoder` (orbit SAEs included,
since the loss is the model's own ``loss`` method) and any iterable of activation batches.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from equisae.sae.base import LossOutput, SparseAutoencoder
from equisae.sae.init import geometric_median

__all__ = [
    "MetricLog",
    "TrainConfig",
    "TrainResult",
    "activation_scale",
    "check_finite_batch",
    "check_finite_loss",
    "nonfinite_loss_cause",
    "fired_latents",
    "geometric_median",
    "head_sample",
    "iterate_minibatches",
    "lr_factor",
    "minibatches",
    "orbit_training_data",
    "prepare_sae",
    "resolve_n_steps",
    "train_sae",
    "train_step",
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


def lr_factor(step: int, n_steps: int, cfg: TrainConfig) -> float:
    """Linear warm-up, constant, then linear decay to zero over the last decay_fraction."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    decay_steps = int(round(cfg.decay_fraction * n_steps))
    if decay_steps > 0 and step >= n_steps - decay_steps:
        return warm * max(0.0, (n_steps - step) / (decay_steps + 1))
    return warm


def fired_latents(out: LossOutput, d_sae: int) -> tuple[Tensor, int, float] | None:
    """Latents that fired in a batch: (bool mask (d_sae,), rows, mean L0), or None without latents.

    Read from the selected (indices, values) when the loss carries them
    (:class:`~equisae.sae.topk.SparseLossOutput`), so no dense (N, d_sae) pass is needed.
    """
    idx = getattr(out, "active_idx", None)
    if idx is not None:
        nonzero = out.active_vals.reshape(-1, idx.shape[-1]) != 0
        fired = torch.zeros(d_sae, dtype=torch.bool, device=idx.device)
        fired[idx.reshape(nonzero.shape)[nonzero]] = True
        return fired.cpu(), nonzero.shape[0], float(nonzero.sum(-1).double().mean())
    if out.latents is None:
        return None
    nonzero = out.latents.detach().reshape(-1, d_sae) != 0
    return nonzero.any(0).cpu(), nonzero.shape[0], float(nonzero.sum(-1).double().mean())


def _batch_metrics(out: LossOutput, d_sae: int, scale: float = 1.0) -> dict[str, float]:
    """MSE (in input units: divided by ``scale**2``) and FVU of one batch."""
    metrics: dict[str, float] = {}
    if out.recon is not None and out.target is not None:
        target = out.target.detach()
        err = (out.recon.detach() - target).pow(2)
        d = target.shape[-1]
        flat = target.reshape(-1, d)
        var = (flat - flat.mean(0)).pow(2).sum()
        metrics["mse"] = float(err.mean()) / scale**2
        metrics["fvu"] = float(err.sum() / var.clamp_min(1e-12))
    return metrics


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


def train_step(
    sae: SparseAutoencoder,
    optimizer: torch.optim.Optimizer,
    batch: Tensor,
    dead_mask: Tensor | None,
    grad_clip: float | None,
    step: int = 0,
) -> LossOutput:
    """One optimisation step of :func:`train_sae` (no schedule, no bookkeeping).

    Loss, finiteness checks (batch before the loss, loss and gradient norm before the update,
    so a failure leaves the weights untouched), backward, parallel-gradient removal, clipping,
    Adam, decoder renormalisation.
    """
    check_finite_batch(batch, step)
    out = sae.loss(batch, dead_mask=dead_mask)
    check_finite_loss(out.total.detach(), step, sae.parameters(), batch)
    optimizer.zero_grad(set_to_none=True)
    out.total.backward()
    sae.remove_parallel_grads()
    if grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(sae.parameters(), grad_clip)
        if not bool(torch.isfinite(norm)):
            raise FloatingPointError(f"non-finite gradient at step {step} (loss was finite)")
    optimizer.step()
    sae.normalize_decoder()
    return out


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


def _step_row(out: LossOutput, d_sae: int, scale: float, since_fired: Tensor) -> dict[str, float]:
    """Update ``since_fired`` in place from a step's latents; return the step's metrics."""
    row = {"loss": float(out.total.detach())}
    row.update({f"loss_{name}": float(v.detach()) for name, v in out.terms.items()})
    row.update(_batch_metrics(out, d_sae, scale))
    fired = fired_latents(out, d_sae)
    if fired is not None:
        mask, n_rows, row["l0"] = fired
        since_fired += n_rows
        since_fired[mask] = 0
    return row


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

    Steps: b_dec from the geometric median (or mean) of the first ``init_batches`` batches;
    optional normalisation of activations to mean norm sqrt(d_in); Adam with warm-up and
    linear decay; per step the gradient parallel to each decoder row is removed, gradients
    are clipped and decoder rows are renormalised; AuxK on latents dead for ``dead_after``
    examples. Deterministic under ``cfg.seed`` on CPU. A batch, loss or gradient norm that is
    not finite raises FloatingPointError naming the step and the cause, before the update.
    """
    cfg = cfg or TrainConfig()
    if not isinstance(sae, SparseAutoencoder):
        raise ValueError(f"sae must be a SparseAutoencoder, got {type(sae).__name__}")
    n_steps = resolve_n_steps(cfg, batches)
    torch.manual_seed(cfg.seed)
    if device is not None:
        sae.to(device)
    where = sae.W_dec.device
    iterator = (b.to(where) if isinstance(b, Tensor) else b for b in batches)
    head = list(itertools.islice(iterator, cfg.init_batches))
    scale = prepare_sae(sae, head_sample(head, sae.d_in), cfg)
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, n_steps, cfg)
    )
    since_fired = torch.zeros(sae.d_sae, dtype=torch.long)
    log = MetricLog(n_steps, cfg.log_every)
    start = time.perf_counter()
    stream = itertools.chain(head, iterator)
    bar = tqdm(total=n_steps, desc=f"train {sae.architecture}", disable=not progress)
    step = 0
    for step, batch in enumerate(itertools.islice(stream, n_steps)):
        if scale != 1.0:
            batch = batch * scale
        dead = since_fired >= cfg.dead_after
        dead_mask = dead.to(where) if cfg.use_auxk and bool(dead.any()) else None
        out = train_step(sae, optimizer, batch, dead_mask, cfg.grad_clip, step)
        scheduler.step()
        row = _step_row(out, sae.d_sae, scale, since_fired)
        row["dead_fraction"] = float((since_fired >= cfg.dead_after).double().mean())
        logged = log.add(step, row, optimizer.param_groups[0]["lr"])
        if logged is not None:
            log.history[-1].update(training_diagnostics(sae))
            bar.set_postfix({k: f"{logged[k]:.3g}" for k in ("loss", "fvu", "l0") if k in logged})
        bar.update(1)
    bar.close()
    steps_done = step + 1
    if steps_done < n_steps:
        raise ValueError(
            f"batches ran out after {steps_done} of cfg.n_steps={n_steps} steps: give at least "
            "n_steps batches (minibatches(tensor, batch_size, n_steps) makes exactly that many)"
        )
    if scale != 1.0:
        sae.fold_activation_scale(scale)
    sae.eval()
    return TrainResult(
        history=log.history,
        final=dict(log.history[-1]) if log.history else {},
        dead_mask=since_fired >= cfg.dead_after,
        activation_scale=scale,
        n_steps=steps_done,
        seconds=time.perf_counter() - start,
        config=asdict(cfg),
    )
