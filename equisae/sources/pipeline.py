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

:func:`study_source` is the multi-model, multi-seed version that notebook 07 runs: every base
model of :class:`StudySettings`, every SAE type at several k with all seeds trained as one
batched model, the frontier metrics and the dense / k-sparse probes as flat records in the
formats of :mod:`equisae.verdicts` (the same as the Shapes notebooks 05 and 06), sized by
:func:`study_settings` (``quick`` or ``full``).

Command line: ``equisae images --source digits|galaxy-mnist|folder --path P [--size N]
[--quick] [--study]`` (see :func:`main_images`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from equisae import io
from equisae.modes import SWEEP_SAE_TYPES, check_mode, get_mode
from equisae.sources.base import ImageSource, as_group
from equisae.timing import SAE_EVALUATION, logged

__all__ = [
    "SOURCES",
    "STUDY_SAE_TYPES",
    "RunSizes",
    "StudySettings",
    "format_study",
    "load_source",
    "main_images",
    "run_on_source",
    "run_sizes",
    "study_settings",
    "study_source",
]

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
    """The sizes of the command's two modes: ``quick`` (about a minute on digits) or full
    (:attr:`equisae.modes.Mode.images`)."""
    return RunSizes(**asdict(get_mode("quick" if quick else "full").images))


def load_source(
    source: str, path: str | os.PathLike | None = None, image_size: int | None = None
) -> ImageSource:
    """A source by command-line name: ``digits`` (bundled; ``path`` unused), ``galaxy-mnist``
    (an HDF5 file or its folder) or ``folder`` (``root/<class>/<images>``)."""
    from equisae.sources.digits import DEFAULT_IMAGE_SIZE, digits_source
    from equisae.sources.files import load_galaxy_mnist, load_image_folder

    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0
    ):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if source == "digits":
        return digits_source(DEFAULT_IMAGE_SIZE if image_size is None else image_size)
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
    from equisae.linrep import analyse_linear_representation, auto_max_dim, sae_representation

    cap = auto_max_dim(acts["train"])  # None unless the layer is too wide for the data (warns)
    _, result = analyse_linear_representation(acts["train"], acts["val"], acts["test"], max_dim=cap)
    keep = ("rank", "dim", "explained_variance", "r2_single", "r2_identity", "r2_per_power")
    summary = {k: getattr(result, k) for k in keep}
    summary.update(group_error=result.group_error, irreps=result.irrep_multiplicities)
    _, M = sae_representation(acts["train"], acts["val"], max_dim=cap)
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
        # the whole source, not the training split (n_images counts every split)
        "source": {**train_part.describe(), "n_images": sum(len(p) for p in splits.values())},
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
    study: bool = False,
) -> dict[str, Any]:
    """What ``equisae images`` does: load, run, write ``summary.json`` (default folder
    ``results/images/<source>-<quick|full>``), print a short summary.

    With ``study`` it runs :func:`study_source` instead (the three base models, the SAE family
    with seeds, frontier and probes of notebook 07, sized by :func:`study_settings`) and writes
    ``study.json`` (default folder ``results/images/<source>-study-<quick|full>``), one torch
    and BLAS thread as in :func:`study_source`; ``model`` is then not used.
    """
    src = load_source(source, path, image_size)
    mode = "quick" if quick else "full"
    default = f"{src.name}-study-{mode}" if study else f"{src.name}-{mode}"
    out = Path(out_dir) if out_dir else Path("results") / "images" / default
    if study:
        result = study_source(src, mode, layer=layer, data_seed=seed, out_dir=out, progress=True)
        print(format_study(result))
        print(f"wrote {out / 'study.json'}")
        return result
    summary = run_on_source(
        src, model=model, layer=layer, sizes=run_sizes(quick), out_dir=out, seed=seed, progress=True
    )
    print(format_summary(summary))
    print(f"wrote {out / 'summary.json'}")
    return summary


# ------------------------------------------------------------------------------ the study
#: SAE types of the study, in plotting order (names of :mod:`equisae.sae.factory`).
STUDY_SAE_TYPES: tuple[str, ...] = SWEEP_SAE_TYPES
#: Base models of the study: plain CNN, rotation-augmented CNN, rotation-equivariant G-CNN.
STUDY_MODELS: tuple[str, ...] = ("cnn_canonical", "cnn_augmented", "gcnn")
#: Probing references besides the SAEs: raw activations and an untrained random dictionary.
STUDY_REFERENCES: tuple[str, ...] = ("raw", "random")


@dataclass(frozen=True)
class StudySettings:
    """Everything :func:`study_source` trains and probes, per mode.

    ``models``: base models (each trained once on the training split, cached); ``sae_types``
    at every ``k`` of ``ks`` with all ``seeds`` (one batched model per type and k);
    ``probe_k`` (one of ``ks``): the k whose SAEs are probed (matched L0), with the probe sizes
    ``probe_ks`` (None: dense) on ``max_probe_orbits`` (train, val, test) orbits, each pose of
    an orbit one example; ``eval_orbits`` test orbits for the frontier metrics.
    """

    mode: str
    models: tuple[str, ...] = STUDY_MODELS
    sae_types: tuple[str, ...] = STUDY_SAE_TYPES
    ks: tuple[int, ...] = (4, 8, 16)
    seeds: tuple[int, ...] = (0, 1, 2)
    probe_k: int = 8
    epochs: int = 20
    batch_size: int = 32
    n_steps: int = 600
    sae_batch_size: int = 256
    max_d_sae: int = 128
    expansion: int = 2
    lambda_inv: float = 1.0
    lambda_eq: float = 1.0
    probe_ks: tuple[int | None, ...] = (None, 1, 5)
    max_probe_orbits: tuple[int, int, int] = (240, 80, 240)
    eval_orbits: int = 360
    c_grid: tuple[float, ...] = (0.1, 1.0)
    probe_max_iter: int = 200
    probe_tol: float = 1e-3
    references: tuple[str, ...] = STUDY_REFERENCES

    def __post_init__(self) -> None:
        from equisae.sae.factory import sae_class

        check_mode(self.mode)
        for name in self.sae_types:
            sae_class(name)  # KeyError naming the known variants
        for name in ("models", "sae_types", "ks", "seeds", "probe_ks"):
            if not getattr(self, name):
                raise ValueError(f"StudySettings.{name} must not be empty")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"StudySettings.seeds must be distinct, got {self.seeds}")
        if self.probe_k not in self.ks:
            raise ValueError(f"StudySettings.probe_k={self.probe_k} must be one of ks={self.ks}")
        if any(k < 1 or k > self.max_d_sae for k in self.ks):
            raise ValueError(f"StudySettings.ks must be in 1..max_d_sae={self.max_d_sae}")
        unknown = [r for r in self.references if r not in STUDY_REFERENCES]
        if unknown:
            raise ValueError(f"StudySettings.references {unknown} not in {STUDY_REFERENCES}")
        if len(self.max_probe_orbits) != 3 or min(self.max_probe_orbits) < 1:
            raise ValueError(
                f"StudySettings.max_probe_orbits must be 3 positive ints, got "
                f"{self.max_probe_orbits}"
            )

    @property
    def training(self):
        """The SAE training settings (:class:`equisae.sweeps.settings.SAETraining`)."""
        from equisae.sweeps.settings import SAETraining

        return SAETraining(
            n_steps=self.n_steps,
            batch_size=self.sae_batch_size,
            expansion=self.expansion,
            max_d_sae=self.max_d_sae,
            lambda_inv=self.lambda_inv,
            lambda_eq=self.lambda_eq,
        )


def study_settings(mode: str) -> StudySettings:
    """The study's sizes per mode (:attr:`equisae.modes.Mode.study`), fitted to the 1,797
    digits on a shared two-core CPU.

    ``full`` (a few minutes): three base models, seven SAE types at k in {4, 8, 16}, 3 seeds,
    600 steps, probes of the k = 8 SAEs with dense and 1- and 5-sparse probes. ``quick`` (under
    a minute and a half for notebook 07): the same grid at k in {4, 8}, 2 seeds (so the verdicts
    have a spread to judge by), 120 steps and small probe sets: it shows that everything runs,
    not what the findings are.
    """
    return StudySettings(mode=mode, **asdict(get_mode(mode).study))


def output_equivariance(net: torch.nn.Module, images: torch.Tensor, group: Any) -> float:
    """``mean_p ||f(g^p x) - g^p f(x)||^2 / ||g^p f(x) - mean||^2`` over the non-identity
    elements of ``group`` (0 for an exactly equivariant autoencoder ``net``)."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(images)
            errors = []
            for p in range(1, group.order):
                target = group.act_images(out, p)
                moved = net(group.act_images(images, p))
                sst = ((target - target.mean(dim=0)) ** 2).sum().clamp_min(1e-30)
                errors.append(float(((moved - target) ** 2).sum() / sst))
    finally:
        net.train(was_training)
    return sum(errors) / len(errors)


def _study_base(
    model: str, splits: dict[str, ImageSource], settings: StudySettings, seed: int, group, progress
) -> tuple[torch.nn.Module, dict[str, Any]]:
    sizes = RunSizes(epochs=settings.epochs, batch_size=settings.batch_size)
    net, info = _base_model(model, splits, sizes, seed, progress)
    record = {
        "model": model,
        "test_mse_canonical": info.get("test_mse_canonical"),
        "test_mse_rotated": info.get("test_mse_rotated"),
        "output_equivariance_error": output_equivariance(net, splits["test"].images[:500], group),
        "n_params": info.get("n_params"),
        "train_cpu_seconds": info.get("train_cpu_seconds"),
        "cached": info.get("cached"),
    }
    return net, record


def _linrep_record(model: str, layer: str, acts: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    fit, M = _fit_m(acts)
    record = {"model": model, "layer": layer, "dim": acts["train"].dim, **fit}
    return record, M


def _sae_record(base: dict[str, Any], sae, result, test_acts, M) -> dict[str, Any]:
    from equisae.sae.evaluate import evaluate_on_orbits
    from equisae.sweeps.records import FRONTIER_METRICS
    from equisae.sweeps.saes import final_loss_change

    metrics = evaluate_on_orbits(sae, test_acts)
    metrics.update(
        train_seconds=result.seconds, final_loss_change=final_loss_change(result.history)
    )
    if hasattr(sae, "m_drift"):
        metrics["m_drift"] = sae.m_drift()
    if getattr(sae, "is_equivariant", False):
        metrics["m_group_error"] = sae.group_error()
        metrics["m_distance_to_fit"] = sae.distance_to(M)
    return {**base, **{m: metrics.get(m) for m in FRONTIER_METRICS}, "d_sae": sae.d_sae}


def _probe_sets(acts: dict[str, Any], settings: StudySettings) -> dict[str, Any]:
    """The probe subsample of every split: orbit activations (n, |G|, d) and flat labels."""
    from equisae.sweeps.inputs import subsample_orbits

    out = {}
    for i, split in enumerate(("train", "val", "test")):
        a = acts[split]
        rows = subsample_orbits(a.n_examples, settings.max_probe_orbits[i], seed=i)
        factors = {f: v[rows].reshape(-1).numpy() for f, v in a.factors.items()}
        out[split] = (a.acts[rows], factors)
    return out


def _probe_rows(
    base: dict[str, Any],
    features: dict[str, Any],
    probe_sets: dict[str, Any],
    factors: Sequence[str],
    settings: StudySettings,
) -> list[dict[str, Any]]:
    from equisae.probing import probe_factors

    labels = {s: labels for s, (_, labels) in probe_sets.items()}
    res = probe_factors(
        features,
        labels,
        factors,
        probe_ks=settings.probe_ks,
        c_grid=settings.c_grid,
        max_iter=settings.probe_max_iter,
        tol=settings.probe_tol,
    )
    return [
        {
            **base,
            "features": "latents",
            "factor": factor,
            "probe_k": pk,
            "f1": r.f1,
            "chance_f1": r.chance_f1,
        }
        for factor, per in res.items()
        for pk, r in per.items()
    ]


def _latent_features(sae, probe_sets: dict[str, Any]) -> dict[str, Any]:
    from equisae.sae.evaluate import orbit_latents

    out = {}
    for split, (orbits, _) in probe_sets.items():
        z = orbit_latents(sae, orbits)
        out[split] = z.reshape(-1, z.shape[-1]).numpy()
    return out


def _reference_features(
    name: str, acts: dict[str, Any], probe_sets: dict[str, Any], d_sae: int, k: int
) -> dict[str, Any]:
    from equisae.sweeps.probes import random_dictionary_sae

    if name == "raw":
        return {s: o.reshape(-1, o.shape[-1]).numpy() for s, (o, _) in probe_sets.items()}
    train = acts["train"].acts
    sae = random_dictionary_sae(train.shape[-1], d_sae, k, seed=0, centre=train.mean((0, 1)))
    return _latent_features(sae, probe_sets)


def _study_model(
    model: str,
    net: torch.nn.Module,
    splits: dict[str, ImageSource],
    settings: StudySettings,
    grp,
    layer: str,
    progress: bool,
) -> dict[str, Any]:
    """Fit, SAEs, frontier metrics and probes of one base model."""
    from equisae.sweeps.inputs import subsample_orbits
    from equisae.sweeps.saes import train_sweep_saes

    with logged("activations"):
        acts = _orbit_acts(net, splits, grp, layer, model)
    with logged("fit of M"):
        linrep, M = _linrep_record(model, layer, acts)
    test = acts["test"].acts
    test = test[subsample_orbits(test.shape[0], settings.eval_orbits, seed=0)]
    probe_sets = _probe_sets(acts, settings)
    factors = [*splits["train"].invariant_factors, *splits["train"].equivariant_factors, "pose"]
    training = settings.training
    frontier, probes = [], []
    common = {"model": model, "layer": layer, "representative": "fixed"}
    for sae_type in settings.sae_types:
        for k in settings.ks:
            with logged(f"SAE training: {sae_type}"):
                saes, results = train_sweep_saes(
                    sae_type,
                    acts["train"].acts,
                    k,
                    settings.seeds,
                    training,
                    M=M,
                    group=grp,
                    progress=progress,
                )
            for seed, sae, result in zip(settings.seeds, saes, results, strict=True):
                base = {
                    **common,
                    "sae_type": sae_type,
                    "k": k,
                    "seed": seed,
                    "lambda_inv": training.lambda_inv,
                    "n_steps": training.n_steps,
                }
                with logged(SAE_EVALUATION):
                    frontier.append(_sae_record(base, sae, result, test, M))
                if k == settings.probe_k:
                    with logged("probes"):
                        feats = _latent_features(sae, probe_sets)
                        probes += _probe_rows(base, feats, probe_sets, factors, settings)
    d_sae = training.d_sae(acts["train"].dim)
    for ref in settings.references:
        base = {**common, "sae_type": ref, "k": settings.probe_k if ref == "random" else None}
        base.update(seed=settings.seeds[0], lambda_inv=None, n_steps=None)
        with logged("probes"):
            feats = _reference_features(ref, acts, probe_sets, d_sae, settings.probe_k)
            probes += _probe_rows(base, feats, probe_sets, factors, settings)
    n_rows = {s: int(o.shape[0] * o.shape[1]) for s, (o, _) in probe_sets.items()}
    return {"linrep": linrep, "frontier": frontier, "probes": probes, "probe_rows": n_rows}


def study_source(
    source: ImageSource | Mapping[str, ImageSource],
    settings: StudySettings | str = "quick",
    group: str = "C4",
    layer: str = "bottleneck",
    data_seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    progress: bool = False,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Base models, fit of M, the SAE family with seeds, frontier and probes on ``source``.

    ``source`` is one :class:`ImageSource` (split 60/20/20 under ``data_seed``, stratified by
    its first invariant factor) or ready ``train``/``val``/``test`` sources; ``settings`` a
    :class:`StudySettings` or a mode name. The base models are trained with seed
    ``data_seed`` (cached); the SAEs with the seeds of ``settings``. Probed factors: the
    source's invariant and equivariant factors and ``pose`` (the leakage probe).

    Returns a JSON-able dict: ``source``, ``split_sizes``, ``group``, ``layer``, ``settings``,
    ``base_models`` (one record per model: test MSE upright and rotated, output equivariance
    error), ``linrep`` (one record per model: held-out R^2 per power of M^p, of per-power fits
    and of the identity, group error; for
    :func:`equisae.verdicts.linear_representation_verdict`), ``frontier`` (one record per SAE
    and seed: ``model, layer, sae_type, k, seed, fvu, l0, ...``, for
    :func:`~equisae.verdicts.frontier_verdict`), ``probes`` (one record per SAE or reference,
    seed, factor and probe size: ``model, layer, sae_type, seed, features, factor, probe_k,
    f1, chance_f1``, for :func:`~equisae.verdicts.probing_verdict`), ``probe_rows`` and
    ``seconds`` (per base model and in total). With ``out_dir`` it is also written to
    ``out_dir/study.json``. ``threads`` torch threads are used while it runs (default 1: on a
    shared or small CPU one thread per process is much faster than contended threads, above all
    for the probes' BLAS; None keeps the current setting), then the previous numbers are
    restored.
    """
    if isinstance(settings, str):
        settings = study_settings(settings)
    with _torch_threads(threads):
        return _study(source, settings, group, layer, data_seed, out_dir, progress)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch and BLAS/OpenMP threads (None: unchanged), restoring the
    previous numbers afterwards (BLAS through ``threadpoolctl``, which scikit-learn ships)."""
    from threadpoolctl import threadpool_limits

    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(previous)


def _study(
    source: ImageSource | Mapping[str, ImageSource],
    settings: StudySettings,
    group: str,
    layer: str,
    data_seed: int,
    out_dir: str | os.PathLike | None,
    progress: bool,
) -> dict[str, Any]:
    grp = as_group(group)
    if not grp.name.upper().startswith("C"):
        raise ValueError(
            f"group must be cyclic (e.g. 'C4'): one matrix M and its powers, got {group!r}"
        )
    start = time.perf_counter()
    splits = _splits(source, data_seed)
    out: dict[str, Any] = {"base_models": [], "linrep": [], "frontier": [], "probes": []}
    seconds: dict[str, float] = {}
    for model in settings.models:
        t0 = time.perf_counter()
        net, base = _study_base(model, splits, settings, data_seed, grp, progress)
        out["base_models"].append(base)
        part = _study_model(model, net, splits, settings, grp, layer, progress)
        out["linrep"].append(part["linrep"])
        out["frontier"] += part["frontier"]
        out["probes"] += part["probes"]
        out["probe_rows"] = part["probe_rows"]
        seconds[model] = time.perf_counter() - t0
    train = splits["train"]
    summary = {
        "source": train.describe(),
        "split_sizes": {s: len(p) for s, p in splits.items()},
        "group": grp.name,
        "layer": layer,
        "data_seed": data_seed,
        "settings": asdict(settings),
        "factors": {
            "invariant": list(train.invariant_factors),
            "equivariant": [*train.equivariant_factors, "pose"],
        },
        **out,
        "seconds": {**seconds, "total": time.perf_counter() - start},
    }
    summary = io.to_jsonable(summary)
    if out_dir is not None:
        io.write_json_atomic(Path(out_dir) / "study.json", summary)
    return summary


def format_study(study: Mapping[str, Any]) -> str:
    """A few lines for the terminal: per base model the fit R^2, mean FVU per SAE type at the
    probed k and the dense-probe F1 of the first invariant factor."""
    import numpy as np

    probe_k = study["settings"]["probe_k"]
    factor = study["factors"]["invariant"][0]
    lines = [
        f"{study['source']['name']}: {study['split_sizes']} images, group {study['group']}, "
        f"{len(study['frontier'])} SAEs in {study['seconds']['total']:.0f} s"
    ]
    for lin in study["linrep"]:
        model = lin["model"]
        r2 = ", ".join(f"{r:.3f}" for r in lin["r2_single"])
        lines.append(f"{model}: R^2 of M^p {r2}")
        for t in dict.fromkeys(r["sae_type"] for r in study["probes"] if r["model"] == model):
            fvu = [
                r["fvu"]
                for r in study["frontier"]
                if (r["model"], r["sae_type"], r["k"]) == (model, t, probe_k)
            ]
            f1 = [
                r["f1"]
                for r in study["probes"]
                if (r["model"], r["sae_type"], r["factor"], r["probe_k"])
                == (model, t, factor, "all")
            ]
            fvu_text = f"FVU {np.mean(fvu):.3f}, " if fvu else ""
            lines.append(f"  {t}: {fvu_text}dense F1 {factor} {np.mean(f1):.3f}")
    return "\n".join(lines)
