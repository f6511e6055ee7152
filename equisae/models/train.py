"""Seeded, cached training of the base autoencoders.

A trained model lives in ``artifacts_dir()/models/<name>-<hash>/`` as ``model.safetensors``
beside ``config.json`` (everything the hash covers), ``metrics.json`` (test errors, training
curve, timing) and ``manifest.json`` (sha256 of each file, checked on every load: a damaged or
truncated checkpoint is reported in one line naming the file and retrained). The hash covers the model configuration, training settings, data configuration
and sizes (or a digest of explicitly given data) and the seed, so a rerun loads instead of
retraining.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from equisae import io
from equisae.device import current_device, device_config, resolve_device
from equisae.models.registry import build_model, get_spec, model_config
from equisae.modes import check_mode, get_mode
from equisae.timing import Stopwatch, write_timing

CACHE_VERSION = 2  # bump whenever architecture code or training code changes results
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings: Adam, linear warm-up then cosine learning-rate decay."""

    epochs: int
    batch_size: int
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(f"epochs and batch sizes must be >= 1, got {self}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def training_settings(mode: str) -> TrainSettings:
    """Training settings per mode: ``quick`` (seconds per model) or ``full``; the sizes are
    :attr:`equisae.modes.Mode.base_training`."""
    sizes = get_mode(mode).base_training
    return TrainSettings(epochs=sizes.epochs, batch_size=sizes.batch_size)


def _warmup_cosine(total_steps: int, warmup_fraction: float):
    """Learning-rate factor: linear warm-up over ``warmup_fraction`` of the steps, then cosine."""
    warmup = max(1, int(round(warmup_fraction * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def random_rotations(images: Tensor, generator: torch.Generator) -> Tensor:
    """Rotate each image by an independent uniformly random multiple of 90 degrees."""
    powers = torch.randint(0, 4, (images.shape[0],), generator=generator)
    out = images.clone()
    for p in range(1, 4):
        mask = powers == p
        if mask.any():
            out[mask] = torch.rot90(images[mask], p, dims=(-2, -1))
    return out


def _device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s first parameter lives (the CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _check_images(images: Tensor, what: str) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{what} must be a (N, C, H, W) tensor, got {shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{what} is empty")


@torch.no_grad()
def reconstruction_mse(model: nn.Module, images: Tensor, batch_size: int = 512) -> float:
    """Mean squared reconstruction error of ``model`` over ``images``."""
    _check_images(images, "images")
    was_training = model.training
    model.eval()
    total = 0.0
    where = _device_of(model)
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(where)  # no copy on the CPU
        total += torch.sum((model(batch) - batch) ** 2).item()
    model.train(was_training)
    return total / images.numel()


@torch.no_grad()
def evaluate_reconstruction(
    model: nn.Module, images: Tensor, batch_size: int = 512
) -> dict[str, float]:
    """Reconstruction MSE on canonical images and averaged over the three non-trivial rotations."""
    canonical = reconstruction_mse(model, images, batch_size)
    rotated = [
        reconstruction_mse(model, torch.rot90(images, p, dims=(-2, -1)), batch_size)
        for p in range(1, 4)
    ]
    return {
        "test_mse_canonical": canonical,
        "test_mse_rotated": sum(rotated) / 3.0,
        "test_mse_per_rotation": [canonical, *rotated],
    }


def train_model(
    model: nn.Module,
    train_images: Tensor,
    settings: TrainSettings,
    augment: bool,
    seed: int,
    val_images: Tensor | None = None,
    progress: bool = True,
    desc: str = "training",
    device: str | torch.device | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` in place to reconstruct ``train_images`` (MSE, Adam, cosine decay).

    With ``augment`` every batch is rotated by random multiples of 90 degrees. Shuffling and
    rotations come from a generator seeded with ``seed``. Returns the training curve: mean loss
    per epoch (``train_loss``), per step (``step_loss``) and, if given, validation MSE per epoch.
    ``device``: the model is moved there and each batch follows it (shuffling and rotations
    stay on the CPU, so the batches are the same on every device); None: where the model is.
    """
    _check_images(train_images, "train_images")
    if device is not None:
        model.to(resolve_device(device))
    where = _device_of(model)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    n = train_images.shape[0]
    steps_per_epoch = math.ceil(n / settings.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _warmup_cosine(settings.epochs * steps_per_epoch, settings.warmup_fraction)
    )
    history: dict[str, list[float]] = {"train_loss": [], "step_loss": [], "val_loss": []}
    model.train()
    bar = tqdm(total=settings.epochs * steps_per_epoch, desc=desc, disable=not progress)
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=gen)
        epoch_total = 0.0
        for start in range(0, n, settings.batch_size):
            batch = train_images[order[start : start + settings.batch_size]]
            if augment:
                batch = random_rotations(batch, gen)
            batch = batch.to(where)  # no copy on the CPU
            loss = torch.mean((model(batch) - batch) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            value = loss.item()
            history["step_loss"].append(value)
            epoch_total += value * batch.shape[0]
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
        history["train_loss"].append(epoch_total / n)
        if val_images is not None:
            history["val_loss"].append(reconstruction_mse(model, val_images))
            model.train()
    bar.close()
    model.eval()
    return history


def save_checkpoint(
    model: nn.Module,
    folder: str | os.PathLike,
    config: dict,
    metrics: dict,
    timing: dict | None = None,
) -> Path:
    """Write weights, config, metrics and a sha256 manifest atomically into ``folder``
    (with ``timing``, also the wall-clock record of :mod:`equisae.timing`).

    If ``folder`` already holds an intact checkpoint (another process finished first), it is
    kept; a damaged one is replaced.
    """
    folder = Path(folder)
    with io.atomic_folder(folder, keep=lambda path: verify_checkpoint(path) is None) as tmp:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        io.write_json_atomic(tmp / CONFIG_FILE, config)
        io.write_json_atomic(tmp / METRICS_FILE, metrics)
        if timing is not None:
            write_timing(tmp, timing)
        io.write_manifest(tmp)
    return folder


def verify_checkpoint(folder: str | os.PathLike) -> str | None:
    """None if ``folder`` is an intact checkpoint, else one line naming the damaged file."""
    return io.verify_manifest(folder, required=(WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE))


def load_checkpoint(folder: str | os.PathLike) -> tuple[nn.Module, dict, dict]:
    """Load ``(model, config, metrics)`` from a checkpoint folder written by :func:`save_checkpoint`.

    Raises FileNotFoundError when there is no checkpoint and ValueError (naming the file) when
    it fails its manifest check or cannot be read.
    """
    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"no model checkpoint at {weights}")
    problem = verify_checkpoint(folder)
    if problem is not None:
        raise ValueError(f"damaged model checkpoint: {problem}")
    config = io.read_json(folder / CONFIG_FILE)
    metrics = io.read_json(folder / METRICS_FILE)
    try:
        model = build_model(config["name"], **config["model"])
        model.load_state_dict(load_file(str(weights)))
    except Exception as exc:  # safetensors errors, shape mismatches, bad config
        raise ValueError(f"cannot load model checkpoint {weights}: {exc}") from exc
    model.eval()
    return model, config, metrics


def _tensor_digest(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _default_data(mode: str, seed: int) -> tuple[dict[str, Any], Any]:
    """The data description the hash covers and a thunk that builds the splits."""
    from equisae import data

    sizes = data.dataset_sizes(mode)
    # Base models see every orientation of every shape (the "random" representative), so the
    # fixed and random settings of the SAE experiments read the same base models.
    cfg = data.standard_config(representative="random")
    description = {"config": io.to_jsonable(cfg), "sizes": dict(sizes), "seed": seed}
    return description, lambda: data.make_splits(sizes, cfg, seed)


def _images(split: Any, name: str) -> Tensor:
    images = getattr(split, "images", split)
    _check_images(images, f"splits[{name!r}]")
    return images


def train_or_load(
    name: str,
    mode: str = "quick",
    seed: int = 0,
    progress: bool = True,
    *,
    overrides: dict[str, Any] | None = None,
    splits: dict[str, Any] | None = None,
    settings: TrainSettings | None = None,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a named model on the Shapes data of ``mode`` (or load it from the cache).

    ``splits`` replaces the standard data (a dict with ``train``/``test`` and optionally ``val``,
    each a ``ShapesDataset`` or an image tensor); ``settings`` replaces ``training_settings(mode)``;
    ``overrides`` replace constructor arguments. Returns ``(model, info)`` where ``info`` holds
    ``cached`` (True when loaded), ``train_seconds`` (wall) and ``train_cpu_seconds`` (CPU time
    of the process, the better measure on a busy machine) of the original training,
    ``test_mse_canonical``,
    ``test_mse_rotated``, ``n_params``, ``history`` and the checkpoint ``folder``.
    ``device``: where a model is trained (None: the run's device,
    :func:`equisae.device.current_device`); a model trained off the CPU has its own cache
    entry (:func:`equisae.device.device_config`). The model is returned on the CPU.
    """
    where = current_device() if device is None else resolve_device(device)
    spec = get_spec(name)
    check_mode(mode)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    overrides = dict(overrides or {})
    settings = settings or training_settings(mode)
    model_cfg = model_config(name, **overrides)
    if splits is None:
        data_description, make = _default_data(mode, seed)
    else:
        missing = {"train", "test"} - set(splits)
        if missing:
            raise KeyError(f"splits is missing {sorted(missing)}; got keys {sorted(splits)}")
        parts = [_images(splits[k], k) for k in sorted(splits)]
        data_description = {"digest": _tensor_digest(*parts), "splits": sorted(splits)}
        make = lambda: splits  # noqa: E731
    config = {
        "name": name,
        "architecture": spec.architecture,
        "augment": spec.augment,
        "model": model_cfg,
        "training": asdict(settings),
        "data": data_description,
        "seed": seed,
        "version": CACHE_VERSION,
        **device_config(where),  # nothing on the CPU: the CPU caches keep their hashes
    }
    folder = io.artifacts_dir() / "models" / f"{name}-{io.config_hash(config)}"
    if folder.exists():
        start = time.perf_counter()
        try:
            model, _, metrics = load_checkpoint(folder)
        except (FileNotFoundError, ValueError) as exc:
            from equisae import repairs

            repairs.report(folder, str(exc), f"retraining {name}")
        else:
            info = {**metrics, "cached": True, "load_seconds": time.perf_counter() - start}
            return model, {**info, "folder": str(folder), "config": config}

    watch = Stopwatch("base models")
    with watch.part("data"):
        data_splits = make()
    train_images = _images(data_splits["train"], "train")
    test_images = _images(data_splits["test"], "test")
    val_images = _images(data_splits["val"], "val") if "val" in data_splits else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(name, **overrides)
    start, cpu_start = time.perf_counter(), time.process_time()
    with watch.part("train"):
        history = train_model(
            model,
            train_images,
            settings,
            augment=spec.augment,
            seed=seed,
            val_images=val_images,
            progress=progress,
            desc=f"training {name}",
            device=where,
        )
    train_seconds = time.perf_counter() - start
    train_cpu_seconds = time.process_time() - cpu_start
    with watch.part("evaluate"):
        errors = evaluate_reconstruction(model, test_images, settings.eval_batch_size)
    metrics = {
        "name": name,
        "n_params": sum(p.numel() for p in model.parameters()),
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "history": history,
        **errors,
    }
    if where.type != "cpu":
        metrics["device"] = where.type
        model.to("cpu")
    save_checkpoint(model, folder, config, metrics, watch.stop())
    info = {**metrics, "cached": False, "load_seconds": 0.0}
    return model, {**info, "folder": str(folder), "config": config}
