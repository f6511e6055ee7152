"""Your own model in one call: ``equisae.study(model, layers, images=...)``.

From a torch model, the names of the layers to study and canonical images (or an
:class:`~equisae.sources.base.ImageSource`), :func:`study` runs the whole pipeline with the
package's public pieces, per layer:

1. orbit activations of a seeded 60/20/20 split (:func:`equisae.activations.orbit_activations_many`);
2. the fit of M with its held-out R^2 per power, group error and the SAE-ready matrix with its
   rank and conditioning (:func:`equisae.linrep.sae_representation`,
   :func:`equisae.linrep.representation_summary`);
3. the SAE family (default TopK, wide TopK and adaptive equivariant), every seed of one variant
   trained as one stacked model (:func:`equisae.sweeps.saes.train_sweep_saes`, built by
   :func:`equisae.sae.factory.build_sae`), saved with their provenance;
4. the evaluation on the test orbits (FVU, L0, dead fraction, latent equivariance error, pose
   accuracy and the oracle-pose FVU of the equivariant SAEs);
5. probes (dense and k-sparse) of every label you pass, on the raw activations and on each SAE's
   latents, each with its chance F1 (the expected macro F1 of a no-information probe).

With ``out_dir`` everything is cached: the activations, the fit and each variant's SAEs are
folders with a manifest and the configuration hash of what made them; a rerun verifies them and
skips what is done (an interrupted run resumes). ``report.md`` and ``results.json`` are written
at the end. The command line runs the same: ``equisae images --model mypkg.mod:make --layer
head.2 --source folder --path DIR --quick``.

``equisae.study`` is this module's :func:`study` (the package re-exports it under the module's
name); import the module's other names with ``from equisae.study import StudySizes``.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from equisae import io

__all__ = [
    "DEFAULT_SAE_TYPES",
    "LayerStudy",
    "SAECoordinates",
    "StudyResult",
    "StudySizes",
    "is_model_spec",
    "load_model",
    "main_study",
    "study",
    "study_sizes",
    "tensor_digest",
]

#: The SAE family a study trains unless told otherwise (names of equisae.sae.factory).
DEFAULT_SAE_TYPES: tuple[str, ...] = ("topk", "wide", "adaptive")
FORMAT_VERSION = 1
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class StudySizes:
    """How much a study trains: SAE steps, batch, width (``expansion * d`` capped at
    ``max_d_sae``), k, seeds, the probe sizes (None = dense) and the orbits probed per split."""

    n_steps: int = 2000
    batch_size: int = 256
    expansion: int = 4
    max_d_sae: int = 256
    k: int = 8
    seeds: tuple[int, ...] = (0, 1, 2)
    probe_ks: tuple[int | None, ...] = (None, 1, 4)
    max_probe_orbits: int = 400
    lr: float = 4e-3

    def __post_init__(self) -> None:
        for name in ("n_steps", "batch_size", "expansion", "max_d_sae", "k", "max_probe_orbits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StudySizes.{name} must be a positive int, got {value!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"StudySizes.seeds must be distinct seeds, got {self.seeds!r}")


def study_sizes(quick: bool) -> StudySizes:
    """``quick``: a few hundred steps, two seeds (about a minute on a small CNN); else full."""
    if quick:
        return StudySizes(n_steps=300, max_d_sae=128, k=4, seeds=(0, 1), probe_ks=(None, 2))
    return StudySizes()


# --------------------------------------------------------------------------- inputs
def load_model(spec: str, checkpoint: str | None = None) -> nn.Module:
    """A model from ``module:callable`` (imported, called without arguments) or a TorchScript
    file; ``checkpoint`` is a state-dict file loaded into it (``torch.load``, weights only)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model must be 'module:callable' or a TorchScript file, got {spec!r}")
    path = Path(spec)
    if path.suffix in (".pt", ".pth", ".ts", ".jit") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"--model file not found: {path}")
        model = torch.jit.load(str(path), map_location="cpu")
    else:
        if ":" not in spec:
            raise ValueError(
                f"--model {spec!r}: expected 'module:callable' (e.g. mypkg.models:make) or a "
                "TorchScript file (.pt)"
            )
        module_name, attr = spec.split(":", 1)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"--model {spec!r}: cannot import {module_name!r} ({exc})") from exc
        factory = getattr(module, attr, None)
        if factory is None:
            raise ValueError(f"--model {spec!r}: module {module_name!r} has no {attr!r}")
        model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec!r} gave {type(model).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        ckpt = Path(checkpoint)
        if not ckpt.is_file():
            raise FileNotFoundError(f"--checkpoint file not found: {ckpt}")
        state = torch.load(str(ckpt), map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"--checkpoint {ckpt} does not fit the model: {exc}") from exc
    return model.eval()


def is_model_spec(spec: str) -> bool:
    """Whether ``--model`` names your own model (``module:callable`` or a file), not a built-in."""
    return (
        ":" in spec or Path(spec).suffix in (".pt", ".pth", ".ts", ".jit") or Path(spec).is_file()
    )


def tensor_digest(*tensors: Tensor | np.ndarray) -> str:
    """A sha256 (16 hex digits) of the shapes, dtypes and bytes of ``tensors``."""
    digest = hashlib.sha256()
    for t in tensors:
        arr = t.detach().cpu().contiguous().numpy() if isinstance(t, Tensor) else np.asarray(t)
        digest.update(f"{arr.shape}{arr.dtype}".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:16]


def model_digest(model: nn.Module) -> str:
    """A digest of the model's class and every parameter and buffer (its identity in caches)."""
    state = model.state_dict()
    head = f"{type(model).__module__}.{type(model).__qualname__}:{sorted(state)}"
    return hashlib.sha256(
        (head + tensor_digest(*[v.float() for v in state.values()])).encode()
    ).hexdigest()[:16]


def _inputs(
    images: Tensor | None, source: Any, labels: Mapping[str, Any] | None
) -> tuple[Tensor, dict[str, Tensor], dict[str, Any]]:
    """(images, labels, description) from ``images`` and ``labels``, or from a source."""
    if (images is None) == (source is None):
        raise ValueError("give exactly one of images= (N, C, H, W) and source= (an ImageSource)")
    described: dict[str, Any]
    if source is not None:
        images = source.images
        own = {f: source.factors[f] for f in source.invariant_factors}
        described = dict(source.describe())
    else:
        own, described = {}, {"name": "images"}
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (N, C, H, W) tensor, got {shape}")
    n = images.shape[0]
    if n < 20:
        raise ValueError(f"images: need at least 20 images for the 60/20/20 split, got {n}")
    out: dict[str, Tensor] = {k: torch.as_tensor(v) for k, v in own.items()}
    for name, values in (labels or {}).items():
        values = torch.as_tensor(np.asarray(values))
        if values.shape != (n,):
            raise ValueError(
                f"labels[{name!r}] must have shape ({n},) like images, got {tuple(values.shape)}"
            )
        if values.unique().numel() < 2:
            raise ValueError(f"labels[{name!r}] has a single class; a probe needs at least two")
        out[str(name)] = values.long()
    described.update(n_images=n, image_shape=list(images.shape[1:]))
    return images.float(), out, described


def _split(n: int, seed: int) -> dict[str, Tensor]:
    """A seeded 60/20/20 permutation split of ``n`` examples."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a, b = int(0.6 * n), int(0.8 * n)
    return {"train": perm[:a], "val": perm[a:b], "test": perm[b:]}


# --------------------------------------------------------------------------- cache
def _cached(folder: Path | None, key: dict[str, Any]) -> dict[str, Any] | None:
    """The result saved in ``folder`` when it is intact and was made by ``key``, else None."""
    if folder is None or not (folder / RESULT_FILE).is_file():
        return None
    if io.verify_manifest(folder, required=(RESULT_FILE,)) is not None:
        return None
    saved = io.read_json(folder / RESULT_FILE)
    return saved if saved.get("config_hash") == io.config_hash(key) else None


def _save_part(folder: Path, key: dict[str, Any], result: dict[str, Any], write: Any) -> None:
    """Write ``result`` (and what ``write(tmp)`` adds) into ``folder`` atomically, manifested."""
    with io.atomic_folder(folder) as tmp:
        write(tmp)
        io.write_json_atomic(tmp / RESULT_FILE, {**result, "config_hash": io.config_hash(key)})
        io.write_manifest(tmp)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "root"


# --------------------------------------------------------------------------- results
@dataclass
class LayerStudy:
    """Everything :func:`study` found at one layer.

    ``fit``: held-out R^2 per power (``r2_single``, ``r2_identity``, ``r2_per_power``), group
    error, rank, irreps (:class:`~equisae.linrep.LinRepResult` as a dict); ``representation``:
    the SAE-ready M's rank, dropped directions and condition number; ``saes[variant]``: the
    trained SAEs, one per seed; ``metrics[variant]``: per-seed test metrics; ``probes``:
    ``{features: {label: {probe: F1, "chance_f1": ...}}}``.
    """

    layer: str
    acts: dict[str, Any]
    fit: dict[str, Any]
    representation: dict[str, Any]
    M: Tensor
    saes: dict[str, list[Any]] = field(default_factory=dict)
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    probes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Plain JSON: fit, representation, per-variant mean and per-seed metrics, probes."""
        mean = {
            v: {
                key: float(np.mean([m[key] for m in rows]))
                for key in rows[0]
                if isinstance(rows[0][key], (int, float)) and not isinstance(rows[0][key], bool)
            }
            for v, rows in self.metrics.items()
        }
        return io.to_jsonable(
            {
                "layer": self.layer,
                "dim": self.acts["train"].dim,
                "fit": self.fit,
                "representation": self.representation,
                "saes": {
                    v: {"mean": mean[v], "per_seed": rows} for v, rows in self.metrics.items()
                },
                "probes": self.probes,
            }
        )


@dataclass
class StudyResult:
    """What :func:`study` returns: per-layer results, the provenance, the report and timings."""

    layers: dict[str, LayerStudy]
    provenance: dict[str, Any]
    out_dir: Path | None
    seconds: float
    skipped: list[str] = field(default_factory=list)

    def __getitem__(self, layer: str) -> LayerStudy:
        return self.layers[layer]

    def to_dict(self) -> dict[str, Any]:
        """The results JSON (what ``results.json`` holds)."""
        return io.to_jsonable(
            {
                "format_version": FORMAT_VERSION,
                "provenance": self.provenance,
                "layers": {name: ls.summary() for name, ls in self.layers.items()},
                "seconds": self.seconds,
                "cached_parts": self.skipped,
            }
        )

    def report(self) -> str:
        """A Markdown report: the fit, the SAEs (mean over seeds) and the probes with chance."""
        p = self.provenance
        lines = [
            f"# equisae study of {p['model']}",
            "",
            f"{p['data']['n_images']} images ({p['data']['name']}), group {p['group']}, "
            f"split {p['split_sizes']}, data hash `{p['data_hash']}`, model hash "
            f"`{p['model_hash']}`; {self.seconds:.1f} s.",
        ]
        for name, ls in self.layers.items():
            s = ls.summary()
            f, r = s["fit"], s["representation"]
            lines += [
                "",
                f"## Layer `{name}` (d = {s['dim']})",
                "",
                "Held-out R^2 of M^p h(x) for h(g^p x), p = 0.."
                f"{len(f['r2_single']) - 1}: {_nums(f['r2_single'])} (identity map: "
                f"{_nums(f['r2_identity'])}; a separate map per power: "
                f"{_nums(f['r2_per_power'])}); group error {f['group_error']:.3g}.",
                "",
                f"SAE-ready M: rank {r['rank']} of {r['dim']} ({r['dropped']} dropped directions,"
                f" identity there), {r['explained_variance']:.3f} of the variance, condition "
                f"number {r['condition_number']:.3g}. The SAEs train on "
                + (
                    "the activations."
                    if r.get("sae_basis", "full") == "full"
                    else f"the {r['sae_dim']} coordinates of the fit's principal basis."
                ),
                "",
                "| SAE | FVU | L0 | dead | latent equivariance error | pose accuracy | "
                "FVU (oracle pose) |",
                "| --- | --- | --- | --- | --- | --- | --- |",
            ]
            for variant, entry in s["saes"].items():
                m = entry["mean"]
                lines.append(
                    f"| {variant} | {m['fvu']:.4f} | {m['l0']:.2f} | {m['dead_fraction']:.2f} | "
                    f"{m['latent_equivariance_error']:.3f} | {_opt(m.get('pose_accuracy'))} | "
                    f"{_opt(m.get('fvu_oracle_pose'), '.4f')} |"
                )
            if s["probes"]:
                lines += ["", "| features | label | probe | test F1 | chance F1 |"]
                lines.append("| --- | --- | --- | --- | --- |")
                for feats, per in s["probes"].items():
                    for label, scores in per.items():
                        for probe, f1 in scores.items():
                            if probe != "chance_f1":
                                lines.append(
                                    f"| {feats} | {label} | {probe} | {f1:.3f} | "
                                    f"{scores['chance_f1']:.3f} |"
                                )
        return "\n".join(lines) + "\n"

    def print_summary(self) -> None:
        """Print :meth:`report` (the terminal view of the command line)."""
        print(self.report())


def _nums(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def _opt(value: float | None, fmt: str = ".3f") -> str:
    return "" if value is None else format(value, fmt)


# --------------------------------------------------------------------------- the steps
def _activations(
    model: nn.Module,
    images: Tensor,
    labels: dict[str, Tensor],
    rows: dict[str, Tensor],
    group: Any,
    layers: list[str],
    key: dict[str, Any],
    root: Path | None,
    model_name: str,
    progress: bool,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``{layer: {split: OrbitActivations}}``, from the cache where it is intact."""
    from equisae.activations import OrbitActivations, orbit_activations_many

    out: dict[str, dict[str, Any]] = {layer: {} for layer in layers}
    skipped = []
    for split, idx in rows.items():
        folders = {
            layer: None if root is None else root / _safe(layer) / "activations" / split
            for layer in layers
        }
        tag = {layer: io.config_hash({**key, "layer": layer, "split": split}) for layer in layers}
        todo = []
        for layer in layers:
            folder = folders[layer]
            try:
                loaded = OrbitActivations.load(folder) if folder is not None else None
            except (FileNotFoundError, ValueError):
                loaded = None
            if loaded is not None and loaded.metadata.get("config_hash") == tag[layer]:
                out[layer][split] = loaded
                skipped.append(f"{layer}/activations/{split}")
            else:
                todo.append(layer)
        if not todo:
            continue
        ds = SimpleNamespace(images=images[idx], factors={k: v[idx] for k, v in labels.items()})
        fresh = orbit_activations_many(
            model, ds, group, todo, model_name=model_name, progress=progress
        )
        for layer, acts in fresh.items():
            acts.metadata = {"config_hash": tag[layer], "split": split, **key}
            if folders[layer] is not None:
                acts.save(folders[layer])
            out[layer][split] = acts
    return out, skipped


def _fit(acts: dict[str, Any], max_dim: int | None) -> tuple[dict, dict, dict[str, Tensor]]:
    """(fit diagnostics, representation summary, {"M", "basis", "mean"}) of one layer."""
    from equisae.linrep import (
        analyse_linear_representation,
        auto_max_dim,
        representation_summary,
        sae_representation,
    )

    cap = auto_max_dim(acts["train"]) if max_dim is None else max_dim
    rep, M = sae_representation(acts["train"], acts["val"], max_dim=cap)
    _, result = analyse_linear_representation(acts["train"], acts["val"], acts["test"], max_dim=cap)
    keep = (
        "rank",
        "dim",
        "explained_variance",
        "r2_single",
        "r2_identity",
        "r2_per_power",
        "group_error",
        "group_error_weighted",
        "irrep_multiplicities",
    )
    fit = {k: getattr(result, k) for k in keep}
    tensors = {"M": M.float(), "basis": rep.basis.float(), "mean": rep.mean.float()}
    return io.to_jsonable(fit), representation_summary(rep, M), tensors


#: Layers wider than this train their SAEs in the fit's reduced basis by default (``basis="auto"``).
REDUCED_BASIS_ABOVE = 512
BASES = ("auto", "full", "reduced")


@dataclass(frozen=True)
class SAECoordinates:
    """The coordinates the SAEs of a layer see: the activations themselves (``"full"``) or
    their centred coordinates ``(h - mean) B`` in the fit's principal basis (``"reduced"``),
    where the adaptive SAE's M products cost r^2 instead of d^2
    (``benchmarks/bench_wide_adaptive.py`` measures both against TopK)."""

    kind: str
    basis: Tensor | None = None
    mean: Tensor | None = None
    reason: str = ""

    def __call__(self, acts: Tensor) -> Tensor:
        if self.kind == "full":
            return acts
        return (acts - self.mean) @ self.basis


def _sae_coordinates(tensors: dict[str, Tensor], basis: str) -> tuple[SAECoordinates, Tensor]:
    """The SAE coordinates of ``basis`` ("auto": reduced above :data:`REDUCED_BASIS_ABOVE`
    dimensions) and the SAE-ready M in them (full rank either way)."""
    M, B, mean = tensors["M"], tensors["basis"], tensors["mean"]
    d, r = B.shape
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    reason = ""
    if basis == "auto":
        basis = "reduced" if d > REDUCED_BASIS_ABOVE and r < d else "full"
        if basis == "reduced":
            reason = (
                f"{d} dimensions > {REDUCED_BASIS_ABOVE}: the SAEs train in the fit's {r}-dim "
                "principal basis (the adaptive SAE's cost grows as d^2; pass basis='full' to "
                "train on the raw activations)"
            )
    if basis == "full":
        return SAECoordinates("full"), M
    return SAECoordinates("reduced", B, mean, reason), (B.T @ M @ B).contiguous()


def _train_variant(
    variant: str,
    train: Tensor,
    M: Tensor,
    group: Any,
    sizes: StudySizes,
    device: str | torch.device | None,
    progress: bool,
) -> list[Any]:
    """One SAE per seed: stacked on the CPU (:func:`train_sweep_saes`), else one by one on
    ``device`` with :func:`equisae.sae.train.train_sae`."""
    from equisae.sweeps.saes import train_config, train_sweep_saes
    from equisae.sweeps.settings import SAETraining

    training = SAETraining(
        n_steps=sizes.n_steps,
        batch_size=sizes.batch_size,
        lr=sizes.lr,
        expansion=sizes.expansion,
        max_d_sae=sizes.max_d_sae,
    )
    if device is None or torch.device(device).type == "cpu":
        saes, _ = train_sweep_saes(
            variant, train, sizes.k, sizes.seeds, training, M=M, group=group, progress=progress
        )
        return saes
    from equisae.sae.factory import build_sae, sae_class
    from equisae.sae.train import minibatches, orbit_training_data, train_sae

    cls = sae_class(variant)
    data, batch = orbit_training_data(train, getattr(cls, "takes_orbits", False), sizes.batch_size)
    saes = []
    for seed in sizes.seeds:
        equivariant = getattr(cls, "is_equivariant", False)
        sae = build_sae(
            variant, train.shape[-1], training.d_sae(train.shape[-1]), sizes.k,
            seed=seed, group=group, M=M if equivariant else None,
        )  # fmt: skip
        cfg = train_config(training, seed, batch)
        batches = minibatches(data, batch, sizes.n_steps, seed=seed)
        train_sae(sae, batches, cfg, progress=progress, device=device)
        saes.append(sae.cpu())
    return saes


def _metrics(sae: Any, test: Tensor, device: Any) -> dict[str, Any]:
    from equisae.sae.evaluate import evaluate_on_orbits

    m = evaluate_on_orbits(sae, test, device=device)
    sae.cpu()
    keep = (
        "fvu",
        "l0",
        "dead_fraction",
        "latent_equivariance_error",
        "pose_accuracy",
        "fvu_oracle_pose",
        "n_params",
    )
    return {k: m[k] for k in keep if k in m}


def _probes(
    layer_acts: dict[str, Any],
    saes: dict[str, list[Any]],
    label_names: list[str],
    sizes: StudySizes,
    seed: int,
    device: Any,
    coords: Any = None,
) -> dict[str, Any]:
    """Probe F1 and chance F1 of every label on the raw activations and each SAE's latents
    (the SAE of the first seed; the latents with the pose inferred)."""
    from equisae.probing import probe_factors
    from equisae.sae.evaluate import orbit_latents
    from equisae.sweeps.inputs import subsample_orbits

    if not label_names:
        return {}
    lim = sizes.max_probe_orbits
    rows = {s: subsample_orbits(a.n_examples, lim, seed) for s, a in layer_acts.items()}
    labels = {
        s: {f: a.factors[f][rows[s]].reshape(-1).numpy() for f in label_names}
        for s, a in layer_acts.items()
    }
    sets = {"raw": {s: a.acts[rows[s]].reshape(-1, a.dim) for s, a in layer_acts.items()}}
    for variant, seeded in saes.items():
        sets[variant] = {
            s: orbit_latents(seeded[0], coords(a.acts[rows[s]]), device=device).flatten(0, 1)
            for s, a in layer_acts.items()
        }
    out: dict[str, Any] = {}
    for name, feats in sets.items():
        res = probe_factors(
            {s: f.cpu().numpy() for s, f in feats.items()},
            labels,
            label_names,
            probe_ks=sizes.probe_ks,
            c_grid=(0.1, 1.0),
        )
        out[name] = {
            f: {
                **{k: r.f1 for k, r in per.items()},
                "chance_f1": next(iter(per.values())).chance_f1,
            }
            for f, per in res.items()
        }
    return out


def study(
    model: nn.Module,
    layers: str | Sequence[str],
    images: Tensor | None = None,
    *,
    source: Any = None,
    labels: Mapping[str, Any] | None = None,
    group: str = "C4",
    sae_types: Sequence[str] = DEFAULT_SAE_TYPES,
    sizes: StudySizes | None = None,
    quick: bool = False,
    out_dir: str | Path | None = None,
    max_dim: int | None = None,
    basis: str = "auto",
    device: str | torch.device | None = None,
    model_name: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> StudyResult:
    """Fit M, train and evaluate the SAE family and probe ``labels`` at each of ``layers``.

    ``model``: any ``nn.Module`` taking images (its device is used for the forward passes);
    ``layers``: one name or a list (:func:`equisae.activations.list_layers`); ``images``
    ``(N, C, H, W)`` canonical images with ``labels`` ``{name: (N,) class labels}`` (labels of
    the image, the same at every pose), or ``source`` an ImageSource (its invariant factors are
    the labels). ``group``: a cyclic group name (``"C4"``). ``sizes`` (default
    :func:`study_sizes` of ``quick``). ``max_dim`` caps the fit's subspace (None: chosen
    automatically on wide layers, with a warning giving the reason). ``basis``: ``"full"``
    trains the SAEs on the activations, ``"reduced"`` on their coordinates in the fit's
    principal basis (FVU then counts the kept variance; ``representation["explained_variance"]``
    says how much that is), ``"auto"`` reduces layers wider than :data:`REDUCED_BASIS_ABOVE`
    (the adaptive SAE's cost, see :class:`SAECoordinates`). ``device`` trains and
    evaluates the SAEs there (``"cuda"``). With ``out_dir`` every part is cached and a rerun
    skips what is finished; ``report.md`` and ``results.json`` are written there.
    """
    from equisae.activations import get_module
    from equisae.groups import get_group
    from equisae.sae.factory import sae_class
    from equisae.sae.io import load_sae, save_sae

    start = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("layers must name at least one layer")
    for layer in names:
        get_module(model, layer)  # KeyError listing the layers
    try:
        grp = get_group(group) if isinstance(group, str) else group
    except KeyError as err:
        raise ValueError(f"group: {err.args[0]}") from None
    if not grp.name.upper().startswith("C"):
        raise ValueError(f"group must be cyclic, such as 'C4', got {grp.name!r}")
    for variant in sae_types:
        sae_class(variant)  # KeyError listing the variants
    sizes = sizes or study_sizes(quick)
    imgs, label_values, described = _inputs(images, source, labels)
    rows = _split(imgs.shape[0], seed)
    model_name = model_name or type(model).__name__
    provenance = {
        "model": model_name,
        "model_hash": model_digest(model),
        "group": grp.name,
        "data": described,
        "data_hash": tensor_digest(imgs, *label_values.values()),
        "labels": sorted(label_values),
        "split_sizes": {s: len(r) for s, r in rows.items()},
        "seed": seed,
        "equisae_version": __import__("equisae").__version__,
    }
    root = Path(out_dir) if out_dir is not None else None
    base_key = {k: provenance[k] for k in ("model_hash", "group", "data_hash", "seed")}
    base_key["format_version"] = FORMAT_VERSION
    acts, skipped = _activations(
        model, imgs, label_values, rows, grp, names, base_key, root, model_name, progress
    )
    result_layers: dict[str, LayerStudy] = {}
    for layer in names:
        folder = None if root is None else root / _safe(layer)
        fit_key = {**base_key, "layer": layer, "max_dim": max_dim, "part": "fit"}
        cached = _cached(None if folder is None else folder / "fit", fit_key)
        if cached is not None:
            fit, rep_summary = cached["fit"], cached["representation"]
            from safetensors.torch import load_file

            tensors = load_file(str(folder / "fit" / "M.safetensors"))
            skipped.append(f"{layer}/fit")
        else:
            fit, rep_summary, tensors = _fit(acts[layer], max_dim)
            if folder is not None:
                from safetensors.torch import save_file

                def write_m(tmp: Path, tensors: dict = tensors) -> None:
                    flat = {k: v.contiguous() for k, v in tensors.items()}
                    save_file(flat, str(tmp / "M.safetensors"))

                _save_part(
                    folder / "fit", fit_key, {"fit": fit, "representation": rep_summary}, write_m
                )
        coords, M = _sae_coordinates(tensors, basis)
        rep_summary = {**rep_summary, "sae_basis": coords.kind, "sae_dim": int(M.shape[0])}
        if coords.reason:
            print(f"layer {layer!r}: {coords.reason}")
        ls = LayerStudy(layer, acts[layer], fit, rep_summary, M)
        for variant in sae_types:
            key = {**fit_key, "part": variant, "sizes": sizes, "basis": coords.kind}
            part = None if folder is None else folder / "saes" / _safe(variant)
            cached = _cached(part, key)
            if cached is not None:
                ls.saes[variant] = [load_sae(part / f"sae_s{s}") for s in sizes.seeds]
                ls.metrics[variant] = cached["metrics"]
                skipped.append(f"{layer}/saes/{variant}")
                continue
            saes = _train_variant(
                variant, coords(acts[layer]["train"].acts), M, grp, sizes, device, progress
            )
            ls.saes[variant] = saes
            test = coords(acts[layer]["test"].acts)
            ls.metrics[variant] = [_metrics(sae, test, device) for sae in saes]
            if part is not None:
                meta = {
                    "model": model_name,
                    "model_hash": provenance["model_hash"],
                    "layer": layer,
                    "group": grp.name,
                    "data_hash": provenance["data_hash"],
                    "variant": variant,
                    "basis": coords.kind,
                }

                def write(tmp: Path, saes: list[Any] = saes, meta: dict = meta) -> None:
                    for s, sae in zip(sizes.seeds, saes, strict=True):
                        save_sae(sae, tmp / f"sae_s{s}", metadata={**meta, "seed": s})

                _save_part(part, key, {"metrics": ls.metrics[variant]}, write)
        ls.probes = _probes(acts[layer], ls.saes, sorted(label_values), sizes, seed, device, coords)
        result_layers[layer] = ls
    out = StudyResult(result_layers, provenance, root, time.perf_counter() - start, skipped)
    if root is not None:
        io.write_json_atomic(root / "results.json", out.to_dict())
        io.atomic_write_bytes(root / "report.md", out.report().encode())
    return out


def main_study(args: Any, model_spec: str, checkpoint: str | None = None) -> StudyResult:
    """What ``equisae images --model module:callable [--checkpoint F]`` does: load the model
    and the source, run :func:`study` at ``--layer`` (comma-separated for several), write
    ``results.json`` and ``report.md`` (default folder
    ``results/images/<source>-<model>-<quick|full>``) and print the report."""
    from equisae.sources.pipeline import load_source

    if getattr(args, "study", False):
        raise ValueError(
            "--study runs the built-in base models; it does not take --model module:fn"
        )
    model = load_model(model_spec, checkpoint)
    src = load_source(args.source, args.path, args.size)
    mode = "quick" if args.quick else "full"
    name = _safe(model_spec.split(":")[-1] if ":" in model_spec else Path(model_spec).stem)
    out = Path(args.out) if args.out else Path("results") / "images" / f"{src.name}-{name}-{mode}"
    layers = [part.strip() for part in str(args.layer).split(",") if part.strip()]
    result = study(
        model,
        layers,
        source=src,
        quick=args.quick,
        out_dir=out,
        device=getattr(args, "device", None),
        model_name=model_spec,
        seed=args.seed,
        progress=True,
    )
    print(result.report())
    print(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    return result
