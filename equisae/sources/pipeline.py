"""The whole pipeline on any :class:`~equisae.sources.base.ImageSource`: ``run_on_source``.

Steps (each one the package's public API, so the same code runs on Shapes, digits, GalaxyMNIST
or an image folder): seeded stratified splits; a base autoencoder trained on the training
images (cached under ``artifacts_dir()/models`` by a digest of the images,
:func:`equisae.models.train_or_load`); orbit activations of every split at ``layer``; the
least-squares fit of one matrix M (:mod:`equisae.linrep`: held-out R^2 per power, group error);
a TopK and an adaptive equivariant SAE trained on the training orbits
(:func:`equisae.sweeps.saes.train_sweep_saes`); FVU and L0 on the test orbits; probes of every
invariant factor on the raw activations and on each SAE's latents (dense and k-sparse); a JSON
summary ``summary.json`` in ``out_dir``.

Command line: ``equisae images --source digits|galaxy-mnist|folder --path P [--size N]
[--quick]`` (see :func:`main_images`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from equisae import io
from equisae.sources.base import ImageSource, as_group

__all__ = ["RunSizes", "SOURCES", "load_source", "main_images", "run_on_source", "run_sizes"]

#: Source names the command line accepts.
SOURCES: tuple[str, ...] = ("digits", "galaxy-mnist", "folder")


@dataclass(frozen=True)
class RunSizes:
    """How much of everything :func:`run_on_source` trains: base-model epochs and batch size,
    SAE steps, width and k, probe sizes and the cap on orbits per split used by the probes."""

    epochs: int = 20
    batch_size: int = 32
    sae_steps: int = 1000
    sae_batch_size: int = 256
    d_sae: int = 256
    k: int = 8
    probe_ks: tuple[int | None, ...] = (None, 1, 5)
    max_probe_orbits: int = 400
    lambda_inv: float = 1.0
    lambda_eq: float = 1.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "sae_steps", "sae_batch_size", "d_sae", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RunSizes.{name} must be a positive int, got {value!r}")
        if self.k > self.d_sae:
            raise ValueError(f"RunSizes.k ({self.k}) must be <= d_sae ({self.d_sae})")


def run_sizes(quick: bool) -> RunSizes:
    """The sizes of the command's two modes: ``quick`` (about a minute on digits) or full."""
    if quick:
        return RunSizes(epochs=4, sae_steps=200, d_sae=128, k=4, probe_ks=(None, 2))
    return RunSizes()


def load_source(
    source: str, path: str | os.PathLike | None = None, image_size: int | None = None
) -> ImageSource:
    """A source by command-line name: ``digits`` (bundled; ``path`` unused), ``galaxy-mnist``
    (an HDF5 file or its folder) or ``folder`` (``root/<class>/<images>``)."""
    from equisae.sources.digits import DEFAULT_IMAGE_SIZE, digits_source
    from equisae.sources.files import load_galaxy_mnist, load_image_folder

    if source == "digits":
        return digits_source(image_size or DEFAULT_IMAGE_SIZE)
    if path is None:
        raise ValueError(f"source {source!r} needs a path (--path) to the files")
    if source == "galaxy-mnist":
        return load_galaxy_mnist(path, image_size=image_size)
    if source == "folder":
        return load_image_folder(path, image_size=image_size)
    raise ValueError(f"source must be one of {SOURCES}, got {source!r}")


def _splits(source: ImageSource | Mapping[str, ImageSource], seed: int) -> dict[str, ImageSource]:
    if isinstance(source, ImageSource):
        return source.split(seed)
    missing = [s for s in ("train", "val", "test") if s not in source]
    if missing:
        raise KeyError(f"source splits are missing {missing}; got {sorted(source)}")
    return {s: source[s] for s in ("train", "val", "test")}


def _base_model(model: str, splits: dict[str, ImageSource], sizes: RunSizes, seed: int, progress):
    from equisae.models import TrainSettings, image_overrides, train_or_load

    train = splits["train"]
    overrides = image_overrides(model, train.channels, train.image_size)
    settings = TrainSettings(epochs=sizes.epochs, batch_size=sizes.batch_size)
    images = {s: part.images for s, part in splits.items()}
    return train_or_load(
        model, "full", seed, progress, overrides=overrides, splits=images, settings=settings
    )


def _orbit_acts(net, splits, group, layer: str, model: str) -> dict[str, Any]:
    from equisae.activation_cache import resolve_layer
    from equisae.activations import orbit_activations

    module = resolve_layer(model, layer)
    return {
        s: orbit_activations(
            net, part.orbit(group), group, module, model_name=model, progress=False
        )
        for s, part in splits.items()
    }


def _fit_m(acts: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor]:
    from equisae.linrep import analyse_linear_representation, sae_representation

    _, result = analyse_linear_representation(acts["train"], acts["val"], acts["test"])
    keep = ("rank", "dim", "explained_variance", "r2_single", "r2_identity", "r2_per_power")
    summary = {k: getattr(result, k) for k in keep}
    summary.update(group_error=result.group_error, irreps=result.irrep_multiplicities)
    _, M = sae_representation(acts["train"], acts["val"])
    return summary, M


def _probe(features: dict[str, torch.Tensor], labels, factors, probe_ks) -> dict[str, Any]:
    from equisae.probing import probe_factors

    res = probe_factors(features, labels, factors, probe_ks=probe_ks, c_grid=(0.1, 1.0))
    out = {f: {k: r.f1 for k, r in per.items()} for f, per in res.items()}
    out["chance_f1"] = {f: next(iter(per.values())).chance_f1 for f, per in res.items()}
    return out


def _probe_all(saes: dict[str, Any], acts, factors, sizes: RunSizes, seed: int) -> dict[str, Any]:
    from equisae.sae.evaluate import orbit_latents
    from equisae.sweeps.inputs import subsample_orbits

    limits = {"train": sizes.max_probe_orbits, "val": sizes.max_probe_orbits // 2}
    limits["test"] = sizes.max_probe_orbits
    rows = {s: subsample_orbits(a.n_examples, limits[s], seed) for s, a in acts.items()}
    labels = {
        s: {f: a.factors[f][rows[s]].reshape(-1).numpy() for f in factors} for s, a in acts.items()
    }
    sets = {"raw": {s: a.acts[rows[s]].reshape(-1, a.dim) for s, a in acts.items()}}
    for name, sae in saes.items():
        sets[name] = {
            s: orbit_latents(sae, a.acts[rows[s]]).reshape(len(rows[s]) * a.group_order, -1)
            for s, a in acts.items()
        }
    return {
        name: _probe({s: f.numpy() for s, f in feats.items()}, labels, factors, sizes.probe_ks)
        for name, feats in sets.items()
    }


def run_on_source(
    source: ImageSource | Mapping[str, ImageSource],
    group: str = "C4",
    model: str = "cnn_augmented",
    layer: str = "bottleneck",
    sizes: RunSizes | None = None,
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
    sae_types: Sequence[str] = ("topk", "adaptive"),
    progress: bool = False,
) -> dict[str, Any]:
    """Run base model, fit of M, SAEs and probes on ``source``; return (and write) the summary.

    ``source`` is one :class:`ImageSource` (split 60/20/20 under ``seed``, stratified by its
    first invariant factor) or a dict of ready ``train``/``val``/``test`` sources. ``group``
    must be cyclic (the fit and the equivariant SAEs use the powers of one matrix). The summary
    holds the source description, base-model test MSE, the fit (R^2 per power, group error),
    per SAE FVU/L0/dead fraction on the test orbits and the probe F1 of every invariant factor
    on the raw activations and on each SAE's latents, plus timings. With ``out_dir`` it is
    written to ``out_dir/summary.json``.
    """
    from equisae.sae.evaluate import evaluate_on_orbits
    from equisae.sweeps.saes import train_sweep_saes
    from equisae.sweeps.settings import SAETraining

    sizes = sizes or RunSizes()
    grp = as_group(group)
    if not grp.name.upper().startswith("C"):
        raise ValueError(
            f"group must be cyclic (e.g. 'C4'): one matrix M and its powers, got {group!r}"
        )
    start = time.perf_counter()
    splits = _splits(source, seed)
    net, info = _base_model(model, splits, sizes, seed, progress)
    acts = _orbit_acts(net, splits, grp, layer, model)
    fit, M = _fit_m(acts)
    d_in = acts["train"].dim
    training = SAETraining(
        n_steps=sizes.sae_steps,
        batch_size=sizes.sae_batch_size,
        expansion=max(1, -(-sizes.d_sae // d_in)),
        max_d_sae=sizes.d_sae,
        lambda_inv=sizes.lambda_inv,
        lambda_eq=sizes.lambda_eq,
    )
    saes, frontier = {}, {}
    for sae_type in sae_types:
        (sae,), (result,) = train_sweep_saes(
            sae_type, acts["train"].acts, sizes.k, (seed,), training, M=M, progress=progress
        )
        metrics = evaluate_on_orbits(sae, acts["test"].acts)
        keep = ("fvu", "l0", "dead_fraction", "latent_equivariance_error", "pose_accuracy")
        frontier[sae_type] = {k: metrics[k] for k in keep if k in metrics}
        frontier[sae_type].update(train_seconds=result.seconds, d_sae=sae.d_sae)
        saes[sae_type] = sae
    train_part = splits["train"]
    factors = list(train_part.invariant_factors)
    summary = {
        "source": train_part.describe(),
        "split_sizes": {s: len(p) for s, p in splits.items()},
        "group": grp.name,
        "model": model,
        "layer": layer,
        "seed": seed,
        "sizes": asdict(sizes),
        "base_model": {
            k: info.get(k) for k in ("test_mse_canonical", "test_mse_rotated", "n_params", "cached")
        },
        "activation_dim": d_in,
        "linear_representation": fit,
        "saes": frontier,
        "probes": _probe_all(saes, acts, factors, sizes, seed),
        "seconds": time.perf_counter() - start,
    }
    summary = io.to_jsonable(summary)
    if out_dir is not None:
        io.write_json_atomic(Path(out_dir) / "summary.json", summary)
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few lines for the terminal: fit R^2, SAE FVU and dense probe F1 per factor."""
    lines = [
        f"{summary['source']['name']}: {summary['split_sizes']} images, {summary['model']}/"
        f"{summary['layer']} (d={summary['activation_dim']}), group {summary['group']}",
        "R^2 of M^p h(x) for h(g^p x): "
        + ", ".join(f"{r:.3f}" for r in summary["linear_representation"]["r2_single"]),
    ]
    for name, m in summary["saes"].items():
        lines.append(f"{name}: FVU {m['fvu']:.3f}, L0 {m['l0']:.1f}")
    for feats, per in summary["probes"].items():
        dense = {f: v["all"] for f, v in per.items() if f != "chance_f1"}
        lines.append(
            f"probe F1 (dense) on {feats}: " + ", ".join(f"{f} {v:.3f}" for f, v in dense.items())
        )
    lines.append(f"{summary['seconds']:.1f} s")
    return "\n".join(lines)


def main_images(
    source: str,
    path: str | None,
    image_size: int | None,
    quick: bool,
    out_dir: str | os.PathLike | None = None,
    model: str = "cnn_augmented",
    layer: str = "bottleneck",
    seed: int = 0,
) -> dict[str, Any]:
    """What ``equisae images`` does: load, run, write ``summary.json`` (default folder
    ``results/images/<source>-<quick|full>``), print a short summary."""
    src = load_source(source, path, image_size)
    out = (
        Path(out_dir)
        if out_dir
        else Path("results") / "images" / f"{src.name}-{'quick' if quick else 'full'}"
    )
    summary = run_on_source(
        src, model=model, layer=layer, sizes=run_sizes(quick), out_dir=out, seed=seed, progress=True
    )
    print(format_summary(summary))
    print(f"wrote {out / 'summary.json'}")
    return summary
