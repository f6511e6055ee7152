"""What the latents of an SAE are: an orbit-aware feature gallery and factor-purity metrics.

For an SAE and the orbit activations ``(N, |G|, d)`` of its source images,
:func:`latent_statistics` computes per latent, in batched tensor code (no loop over images):

* ``frequency``: the fraction of activations (every pose of every orbit) where it fires, and a
  ``histogram`` of its non-zero values (``n_bins`` bins from 0 to its largest value);
* the ``n_top`` orbits where it fires most (largest value over the poses), with the pose of that
  value (``top_pose``) and its value at every pose of each such orbit (``top_orbit_values``);
* ``invariance``: ``1 - (sum ||z - mean_p z||^2 / sum ||z||^2) / (1 - 1/|G|)`` over the orbits,
  1 for a latent constant over every orbit, 0 for one that fires at a single pose of each;
* ``pose_selectivity``: ``(s - 1/|G|) / (1 - 1/|G|)`` with ``s`` the largest share of its total
  activation that one pose index carries: 1 for a pose indicator, 0 for an invariant latent;
* per factor (``pose``, the orbit index, is always one) the ``precision`` (the fraction of its
  firings on a class) and ``recall`` (the fraction of the class's activations where it fires) of
  its firing against every class, and the class of best F1 (``best_factor``, ``best_class``);
* ``duplicate_of``: another latent whose firing pattern over (orbit, pose) is this latent's moved
  by a non-identity group element (Jaccard index at least ``duplicate_threshold``, while
  unmoved it is below it): a latent spent on another pose of the same feature;
* ``atoms``: the decoder atom under each group element, ``rho(g) W_dec[j]`` (equivariant SAEs:
  their own representation; other SAEs: a given representation or the atom alone).

:func:`purity_metrics` turns one gallery into the factor-purity fractions, :func:`purity_records`
into flat per-seed records ``(model, layer, sae_type, seed, metric, value)`` for the verdicts.
:func:`job_gallery` computes (or loads from the verified cache) the gallery of a sweep's SAE.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from equisae import io

__all__ = [
    "GALLERY_VERSION",
    "PURITY_METRICS",
    "GallerySettings",
    "LatentGallery",
    "build_gallery",
    "class_name",
    "decoder_atoms_by_element",
    "default_factors",
    "duplicate_latents",
    "factor_matches",
    "job_gallery",
    "latent_statistics",
    "purity_metrics",
    "purity_records",
    "shapes_images",
    "source_gallery",
    "SourceGallery",
]

GALLERY_VERSION = 2
TENSORS_FILE = "gallery.safetensors"
META_FILE = "gallery.json"

#: the per-SAE factor-purity metrics of :func:`purity_metrics`, in table order
PURITY_METRICS: tuple[str, ...] = (
    "alive_fraction",
    "invariant_fraction",
    "pose_selective_fraction",
    "monosemantic_fraction",
    "duplicate_fraction",
    "mean_invariance",
    "weighted_invariance",
    "mean_best_precision",
)


@dataclass(frozen=True)
class GallerySettings:
    """What a gallery keeps and the thresholds of the purity metrics (part of the cache key).

    ``precision_threshold``: a latent is monosemantic when one factor class holds at least this
    share of its firings; ``invariance_threshold`` / ``selectivity_threshold``: the scores above
    which a latent counts as orbit-invariant / pose-selective; ``duplicate_threshold``: the
    Jaccard index of two firing patterns (one moved by a group element) that makes a duplicate.
    """

    n_top: int = 8
    n_bins: int = 20
    precision_threshold: float = 0.9
    invariance_threshold: float = 0.9
    selectivity_threshold: float = 0.5
    duplicate_threshold: float = 0.5
    #: factors whose classes are matched (None: every discrete factor of the source, and pose)
    factors: tuple[str, ...] | None = None
    batch_size: int = 1024

    def __post_init__(self) -> None:
        for name in ("n_top", "n_bins", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GallerySettings.{name} must be a positive int, got {value!r}")
        for name in (
            "precision_threshold",
            "invariance_threshold",
            "selectivity_threshold",
            "duplicate_threshold",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f"GallerySettings.{name} must be in (0, 1], got {value!r}")


@dataclass
class LatentGallery:
    """Per-latent statistics of one SAE on one set of orbits (see the module docstring).

    Tensors have the latent as their first dimension (``d_sae``), except ``atoms``
    ``(|G| or 1, d_sae, d_in)``; ``precision[f]`` and ``recall[f]`` are ``(d_sae, n_classes)``.
    ``best_factor`` indexes ``factor_names``; ``duplicate_of`` is -1 where there is none.
    """

    frequency: Tensor
    histogram: Tensor
    hist_max: Tensor
    top_orbit: Tensor
    top_pose: Tensor
    top_value: Tensor
    top_orbit_values: Tensor
    invariance: Tensor
    energy: Tensor
    pose_selectivity: Tensor
    precision: dict[str, Tensor]
    recall: dict[str, Tensor]
    best_factor: Tensor
    best_class: Tensor
    best_precision: Tensor
    best_recall: Tensor
    duplicate_of: Tensor
    duplicate_element: Tensor
    duplicate_jaccard: Tensor
    atoms: Tensor
    factor_names: list[str]
    group_name: str
    n_orbits: int
    settings: GallerySettings = field(default_factory=GallerySettings)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def d_sae(self) -> int:
        """Number of latents."""
        return int(self.frequency.shape[0])

    @property
    def alive(self) -> Tensor:
        """(d_sae,) bool: the latents that fire at least once on these orbits."""
        return self.frequency > 0

    def best_match(self, latent: int) -> tuple[str, int, float, float]:
        """(factor, class, precision, recall) of ``latent``'s best-F1 factor class."""
        j = int(latent)
        return (
            self.factor_names[int(self.best_factor[j])],
            int(self.best_class[j]),
            float(self.best_precision[j]),
            float(self.best_recall[j]),
        )

    def _tensors(self) -> dict[str, Tensor]:
        out = {
            name: getattr(self, name).contiguous()
            for name in (
                "frequency histogram hist_max top_orbit top_pose top_value top_orbit_values "
                "invariance energy pose_selectivity best_factor best_class best_precision best_recall "
                "duplicate_of duplicate_element duplicate_jaccard atoms"
            ).split()
        }
        for name in self.factor_names:
            out[f"precision.{name}"] = self.precision[name].contiguous()
            out[f"recall.{name}"] = self.recall[name].contiguous()
        return out

    def save(self, folder: str | Path, timing: dict[str, Any] | None = None) -> Path:
        """Write the gallery atomically (safetensors + json + manifest) into ``folder``, with
        ``timing`` (the wall-clock record of :mod:`equisae.timing`) when given."""
        from safetensors.torch import save_file

        folder = Path(folder)
        with io.atomic_folder(folder) as tmp:
            save_file(self._tensors(), str(tmp / TENSORS_FILE))
            meta = {
                "factor_names": self.factor_names,
                "group_name": self.group_name,
                "n_orbits": self.n_orbits,
                "settings": asdict(self.settings),
                "meta": self.meta,
                "version": GALLERY_VERSION,
            }
            io.write_json_atomic(tmp / META_FILE, meta)
            if timing is not None:
                from equisae.timing import write_timing

                write_timing(tmp, timing)
            io.write_manifest(tmp)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> LatentGallery:
        """Read a saved gallery; ValueError naming the problem if its manifest does not match."""
        from safetensors.torch import load_file

        folder = Path(folder)
        problem = io.verify_manifest(folder, required=(TENSORS_FILE, META_FILE))
        if problem is not None:
            if not folder.exists():
                raise FileNotFoundError(problem)
            raise ValueError(f"gallery cache: {problem}")
        meta = io.read_json(folder / META_FILE)
        tensors = load_file(str(folder / TENSORS_FILE))
        names = list(meta["factor_names"])
        settings = dict(meta["settings"])
        if settings.get("factors") is not None:
            settings["factors"] = tuple(settings["factors"])
        plain = {k: v for k, v in tensors.items() if "." not in k}
        return cls(
            **plain,
            precision={n: tensors[f"precision.{n}"] for n in names},
            recall={n: tensors[f"recall.{n}"] for n in names},
            factor_names=names,
            group_name=meta["group_name"],
            n_orbits=int(meta["n_orbits"]),
            settings=GallerySettings(**settings),
            meta=dict(meta.get("meta", {})),
        )


# -------------------------------------------------------------------------------- factors


def default_factors(factors: Mapping[str, Tensor], max_classes: int = 64) -> list[str]:
    """The discrete factors of a source (integer labels, -1 for undefined, 2..``max_classes``
    classes), plus ``pose`` first: the names :func:`factor_matches` matches latents against."""
    names = ["pose"]
    for name, values in factors.items():
        if name == "pose" or values.is_floating_point():
            continue
        top = int(values.max()) if values.numel() else -1
        if 1 <= top < max_classes and int(values.min()) >= -1:
            names.append(name)
    return names


def class_name(factor: str, index: int, group_name: str = "C4") -> str:
    """A readable name of class ``index`` of ``factor`` (Shapes' shape and colour names,
    ``g^p`` for a pose, the index otherwise)."""
    from equisae import data

    if factor == "shape" and 0 <= index < len(data.SHAPES):
        return str(data.SHAPES[index])
    if factor == "colour" and 0 <= index < len(data.COLOURS):
        return str(list(data.COLOURS)[index])
    if factor == "pose":
        return f"pose {index}"
    return f"{factor} {index}"


def _labels(factors: Mapping[str, Tensor], name: str, n: int, order: int) -> Tensor:
    if name == "pose":
        return torch.arange(order).expand(n, order)
    if name not in factors:
        raise KeyError(f"factor {name!r} is not among the source's factors {sorted(factors)}")
    labels = factors[name]
    if tuple(labels.shape) != (n, order):
        raise ValueError(f"factor {name!r} must have shape ({n}, {order}), got {labels.shape}")
    return labels.long()


def factor_matches(
    fired: Tensor, factors: Mapping[str, Tensor], names: Sequence[str]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Precision and recall ``(d_sae, n_classes)`` of firing ``(N, |G|, d_sae)`` (bool) against
    every class of every factor in ``names`` (labels ``(N, |G|)``; -1 is not a class).

    Precision of latent j for class c: firings on c over firings where the factor is defined;
    recall: firings on c over the activations of class c."""
    n, order, d = fired.shape
    f = fired.reshape(n * order, d).double()
    precision, recall = {}, {}
    for name in names:
        y = _labels(factors, name, n, order).reshape(-1)
        valid = y >= 0
        n_classes = int(y.max()) + 1 if bool(valid.any()) else 1
        onehot = torch.zeros(n * order, n_classes, dtype=torch.float64)
        onehot[valid, y[valid]] = 1.0
        counts = f.T @ onehot  # (d, C)
        fired_defined = (f * valid[:, None]).sum(0)  # (d,)
        precision[name] = (counts / fired_defined.clamp_min(1)[:, None]).float()
        recall[name] = (counts / onehot.sum(0).clamp_min(1)[None, :]).float()
    return precision, recall


def _best_matches(
    precision: dict[str, Tensor], recall: dict[str, Tensor], names: Sequence[str]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per latent, the factor index, class, precision and recall of the best-F1 class."""
    best_f1 = best_factor = best_class = best_p = best_r = None
    for i, name in enumerate(names):
        p, r = precision[name], recall[name]
        f1 = 2 * p * r / (p + r).clamp_min(1e-12)
        value, cls = f1.max(1)
        take = value > best_f1 if best_f1 is not None else torch.ones_like(value, dtype=torch.bool)
        pick_p = p.gather(1, cls[:, None]).squeeze(1)
        pick_r = r.gather(1, cls[:, None]).squeeze(1)
        if best_f1 is None:
            best_f1, best_factor, best_class = value, torch.zeros_like(cls), cls
            best_p, best_r = pick_p, pick_r
            continue
        best_f1 = torch.where(take, value, best_f1)
        best_factor = torch.where(take, torch.full_like(cls, i), best_factor)
        best_class = torch.where(take, cls, best_class)
        best_p = torch.where(take, pick_p, best_p)
        best_r = torch.where(take, pick_r, best_r)
    return best_factor, best_class, best_p, best_r  # type: ignore[return-value]


# -------------------------------------------------------------------------------- scores


def invariance_scores(z: Tensor) -> Tensor:
    """Per latent of ``z`` (N, |G|, d): 1 - relative spread over each orbit, rescaled so that a
    latent firing at one pose of each orbit scores 0 and a constant one 1 (NaN if dead)."""
    order = z.shape[1]
    zd = z.double()
    sumsq = zd.pow(2).sum((0, 1))
    spread = (zd - zd.mean(1, keepdim=True)).pow(2).sum((0, 1))
    if order == 1:
        return torch.where(sumsq > 0, 1.0, float("nan")).float()
    ratio = spread / sumsq.clamp_min(1e-300)
    score = (1 - ratio / (1 - 1 / order)).clamp(0, 1)
    return torch.where(sumsq > 0, score, torch.full_like(score, float("nan"))).float()


def pose_selectivity_scores(z: Tensor) -> tuple[Tensor, Tensor]:
    """Per latent of ``z`` (N, |G|, d): the rescaled largest share of its activation carried by
    one pose index (1: a pose indicator, 0: equal at every pose; NaN if dead), and the mass per
    pose ``(d, |G|)``."""
    order = z.shape[1]
    mass = z.double().abs().sum(0).T  # (d, G)
    total = mass.sum(1)
    share = mass.max(1).values / total.clamp_min(1e-300)
    score = (share - 1 / order) / (1 - 1 / order) if order > 1 else torch.ones_like(share)
    score = torch.where(total > 0, score.clamp(0, 1), torch.full_like(score, float("nan")))
    return score.float(), mass.float()


def duplicate_latents(fired: Tensor, table: Tensor, threshold: float) -> tuple[Tensor, ...]:
    """Latents spent on another pose of another latent's feature.

    ``fired`` (N, |G|, d) bool, ``table`` the Cayley table (``table[r, p]`` = g_r g_p). For every
    pair (i, j) and element r, the Jaccard index of i's firing set and j's moved by r (j fires at
    pose ``g_r g_p`` of an orbit where i fires at ``g_p``). Latent i is a duplicate across poses
    of j when some r != e reaches ``threshold`` while r = e does not. Returns ``duplicate_of``
    (d,) (-1: none), the element r and the Jaccard index.
    """
    n, order, d = fired.shape
    f = fired.permute(2, 0, 1).double()  # (d, N, G)
    flat = f.reshape(d, -1)
    sizes = flat.sum(1)
    jac = torch.empty(order, d, d, dtype=torch.float64)
    for r in range(order):  # loop over group elements, not images
        moved = f[:, :, table[r]].reshape(d, -1)  # moved[j, n, p] = fired[j, n, g_r g_p]
        inter = flat @ moved.T
        union = sizes[:, None] + sizes[None, :] - inter
        jac[r] = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))
    eye = torch.eye(d, dtype=torch.bool)
    jac[:, eye] = 0.0
    identity = 0
    moved_only = jac.clone()
    moved_only[identity] = 0.0
    moved_only[:, jac[identity] >= threshold] = 0.0
    best, where = moved_only.permute(1, 0, 2).reshape(d, order * d).max(1)  # over (r, j)
    element, partner = where // d, where % d
    found = best >= threshold
    minus = torch.full_like(partner, -1)
    return (
        torch.where(found, partner, minus),
        torch.where(found, element, minus),
        best.float(),
    )


def latent_statistics(
    z: Tensor,
    factors: Mapping[str, Tensor],
    group_name: str = "C4",
    settings: GallerySettings | None = None,
    atoms: Tensor | None = None,
    meta: Mapping[str, Any] | None = None,
) -> LatentGallery:
    """The :class:`LatentGallery` of latents ``z`` (N, |G|, d_sae) with factor labels (N, |G|).

    ``atoms`` (``(|G| or 1, d_sae, d_in)``, see :func:`decoder_atoms_by_element`) is stored as
    given (an empty tensor when None)."""
    from equisae.groups import get_group

    settings = settings or GallerySettings()
    if not isinstance(z, Tensor) or z.ndim != 3:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"z must have shape (N, |G|, d_sae), got {shape}")
    n, order, d = z.shape
    group = get_group(group_name)
    if group.order != order:
        raise ValueError(f"z has {order} poses but group {group_name} has order {group.order}")
    z = z.float()
    fired = z != 0
    frequency = fired.float().mean((0, 1))
    # histogram of the non-zero values, n_bins from 0 to each latent's largest |value|
    hist_max = z.abs().amax((0, 1))
    bins = settings.n_bins
    pos = (z.abs() / hist_max.clamp_min(1e-30) * bins).floor().long().clamp(0, bins - 1)
    flat_bin = (pos + torch.arange(d) * bins)[fired]
    histogram = torch.bincount(flat_bin, minlength=d * bins).reshape(d, bins).float()
    # the top orbits (largest value over the poses) and the latent along each one's orbit
    n_top = min(settings.n_top, n)
    peak, peak_pose = z.max(1)  # (N, d)
    top_value, top_orbit = peak.topk(n_top, dim=0)  # (n_top, d)
    top_pose = peak_pose.gather(0, top_orbit)
    per_latent = z.permute(2, 0, 1)  # (d, N, G)
    top_orbit_values = per_latent.gather(1, top_orbit.T[:, :, None].expand(d, n_top, order))
    invariance = invariance_scores(z)
    energy = z.double().pow(2).sum((0, 1)).float()
    selectivity, _ = pose_selectivity_scores(z)
    names = list(settings.factors) if settings.factors is not None else default_factors(factors)
    precision, recall = factor_matches(fired, factors, names)
    best_factor, best_class, best_p, best_r = _best_matches(precision, recall, names)
    table = group.cayley_table()
    dup_of, dup_el, dup_j = duplicate_latents(fired, table, settings.duplicate_threshold)
    return LatentGallery(
        frequency=frequency,
        histogram=histogram,
        hist_max=hist_max,
        top_orbit=top_orbit.T.contiguous(),
        top_pose=top_pose.T.contiguous(),
        top_value=top_value.T.contiguous(),
        top_orbit_values=top_orbit_values.contiguous(),
        invariance=invariance,
        energy=energy,
        pose_selectivity=selectivity,
        precision=precision,
        recall=recall,
        best_factor=best_factor,
        best_class=best_class,
        best_precision=best_p,
        best_recall=best_r,
        duplicate_of=dup_of,
        duplicate_element=dup_el,
        duplicate_jaccard=dup_j,
        atoms=atoms.float().contiguous() if atoms is not None else torch.zeros(0, d, 0),
        factor_names=names,
        group_name=group.name,
        n_orbits=int(n),
        settings=settings,
        meta=dict(meta or {}),
    )


# -------------------------------------------------------------------------------- SAEs


@torch.no_grad()
def decoder_atoms_by_element(sae: Any, rho: Tensor | None = None) -> Tensor:
    """``rho(g) W_dec[j]`` for every group element and latent, ``(|G|, d_sae, d_in)``.

    Equivariant SAEs use their own representation (learned for the adaptive ones); another SAE
    uses ``rho`` ``(|G|, d_in, d_in)`` when given (e.g. the fitted representation), otherwise
    its atoms alone come back as ``(1, d_sae, d_in)``."""
    w = sae.W_dec.detach().float()
    if getattr(sae, "is_equivariant", False) and hasattr(sae, "representation"):
        rho = sae.representation().detach()
    if rho is None:
        return w[None].clone()
    if rho.ndim != 3 or rho.shape[1:] != (w.shape[1], w.shape[1]):
        raise ValueError(
            f"rho must have shape (|G|, d_in={w.shape[1]}, d_in={w.shape[1]}), got "
            f"{tuple(rho.shape)}"
        )
    return torch.einsum("gij,kj->gki", rho.float(), w)


def build_gallery(
    sae: Any,
    orbits: Any,
    settings: GallerySettings | None = None,
    rho: Tensor | None = None,
    meta: Mapping[str, Any] | None = None,
) -> LatentGallery:
    """The gallery of ``sae`` on orbit activations (an ``OrbitActivations``: acts (N, |G|, d)
    and factors (N, |G|)), latents in the evaluation's pose convention (pose not given)."""
    from equisae.sae.evaluate import orbit_latents

    settings = settings or GallerySettings()
    acts = orbits.acts
    if acts.shape[-1] != sae.d_in:
        raise ValueError(
            f"the SAE reads d_in={sae.d_in} but the activations of {orbits.model_name}/"
            f"{orbits.layer} have dimension {acts.shape[-1]}"
        )
    z = orbit_latents(sae, acts, "inferred", settings.batch_size)
    atoms = decoder_atoms_by_element(sae, rho)
    return latent_statistics(z, orbits.factors, orbits.group_name, settings, atoms, meta)


def shapes_images(mode: str, seed: int = 0, split: str = "test", representative: str = "fixed"):
    """The canonical images ``(N, C, H, W)`` of a split of the standard Shapes data: those whose
    orbits :func:`equisae.activation_cache.orbit_activations_for` cached."""
    from equisae import data

    sizes = data.dataset_sizes(mode)
    return data.make_splits(sizes, data.standard_config(representative), seed)[split].images


def job_gallery(
    job: Any,
    seed: int,
    split: str = "test",
    settings: GallerySettings | None = None,
    artifacts: str | Path | None = None,
) -> LatentGallery:
    """The gallery of the SAE of ``seed`` in a finished sweep ``SAEJob`` on ``split``'s orbits,
    cached under ``artifacts/gallery/<hash>`` (verified; recomputed if damaged)."""
    from equisae.runner import load_result
    from equisae.sae.io import load_sae
    from equisae.sweeps.saes import sae_folder

    settings = settings or GallerySettings()
    if seed not in job.seeds:
        raise ValueError(f"seed must be one of the job's seeds {job.seeds}, got {seed!r}")
    key = {
        "job": job.hash,
        "seed": int(seed),
        "split": split,
        "settings": asdict(settings),
        "version": GALLERY_VERSION,
    }
    base = Path(artifacts) if artifacts is not None else io.artifacts_dir()
    folder = base / "gallery" / io.config_hash(key)
    try:
        return LatentGallery.load(folder)
    except FileNotFoundError:
        pass
    except ValueError as exc:
        io.log.warning("%s; computing again", exc)
    from equisae.timing import Stopwatch

    watch = Stopwatch("gallery")
    result = load_result(job, artifacts)
    if result is None:
        raise FileNotFoundError(f"{job.label()} has no cached result: run its sweep first")
    sae = load_sae(result.path / sae_folder(seed))
    orbits = job.inputs.split(split)
    meta = {
        "model": job.model_name,
        "layer": job.layer,
        "sae_type": job.sae_type,
        "k": job.k,
        "seed": int(seed),
        "split": split,
        "mode": job.mode,
        "data_seed": job.data_seed,
        "representative": job.representative,
        "sae_folder": str(result.path / sae_folder(seed)),
    }
    gallery = build_gallery(sae, orbits, settings, meta=meta)
    gallery.save(folder, timing=watch.stop())
    return gallery


SOURCES: tuple[str, ...] = ("shapes", "digits", "galaxy-mnist", "folder")


@dataclass
class SourceGallery:
    """What :func:`source_gallery` returns: the gallery, the canonical images of its orbits and
    the base model (its ``decode`` draws the atoms when the layer is the bottleneck)."""

    gallery: LatentGallery
    images: Tensor
    model: Any
    decodes: bool


def source_gallery(
    model: str,
    layer: str,
    sae_path: str | Path,
    source: str = "shapes",
    path: str | Path | None = None,
    mode: str = "quick",
    seed: int = 0,
    split: str = "test",
    settings: GallerySettings | None = None,
    progress: bool = False,
) -> SourceGallery:
    """The gallery of a saved SAE (``equisae.sae.io.save_sae`` folder) on a base model's layer.

    ``source`` ``"shapes"`` reads the standard Shapes split of ``mode`` through the activation
    cache (the base model trained or loaded for ``mode`` and ``seed``); ``"digits"``,
    ``"galaxy-mnist"`` and ``"folder"`` (with ``path``) go through
    :func:`equisae.sources.pipeline.load_source`, the base model trained on that source as
    ``equisae images`` does (small settings when ``mode`` is quick)."""
    from equisae.activation_cache import orbit_activations_for, resolve_layer
    from equisae.sae.io import load_sae

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    folder = Path(sae_path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--sae {folder}: no such folder (expected a saved SAE: cfg.json and "
            "sae_weights.safetensors, as equisae.sae.io.save_sae writes)"
        )
    sae = load_sae(folder)
    module = resolve_layer(model, layer)
    meta = {
        "model": model,
        "layer": layer,
        "sae_type": sae.variant or sae.architecture,
        "seed": int(seed),
        "split": split,
        "source": source,
        "sae_folder": str(folder),
    }
    if source == "shapes":
        from equisae.models import train_or_load

        orbits = orbit_activations_for(model, layer, mode, seed, split, progress=progress)
        images = shapes_images(mode, seed, split)
        net, _ = train_or_load(model, mode, seed, progress=progress)
    else:
        from equisae.activations import orbit_activations
        from equisae.groups import get_group
        from equisae.sources.pipeline import _base_model, load_source, run_sizes

        group = getattr(sae, "group", None) or get_group("C4")
        splits = load_source(source, path).split(seed)
        net, _ = _base_model(model, splits, run_sizes(mode == "quick"), seed, progress)
        orbits = orbit_activations(
            net, splits[split].orbit(group), group, module, model_name=model, progress=progress
        )
        images = splits[split].images
    gallery = build_gallery(sae, orbits, settings, meta=meta)
    return SourceGallery(gallery, images, net, module == "bottleneck")


# -------------------------------------------------------------------------------- metrics


def purity_metrics(gallery: LatentGallery) -> dict[str, Any]:
    """The factor-purity metrics of one gallery, over its alive latents.

    ``invariant_fraction`` (invariance >= the threshold), ``pose_selective_fraction``
    (selectivity >= the threshold), ``monosemantic_fraction`` (best precision >= the threshold),
    ``duplicate_fraction`` (a duplicate across poses of another alive latent), the means of the
    invariance and best precision, ``weighted_invariance`` (the invariance weighted by each
    latent's summed squared activation, equal to ``1 - e / (1 - 1/|G|)`` with ``e`` the
    :func:`equisae.sae.evaluate.latent_equivariance_error` of the same latents: dominated by the
    strong latents, where the plain mean counts every alive latent once), ``alive_fraction``,
    and ``latents_per_class``: how many
    monosemantic latents have each factor class as best match (``"factor=class"`` keys)."""
    s = gallery.settings
    alive = gallery.alive
    n_alive = int(alive.sum())

    def frac(mask: Tensor) -> float:
        return float((mask & alive).sum()) / n_alive if n_alive else float("nan")

    mono = gallery.best_precision >= s.precision_threshold
    out: dict[str, Any] = {
        "n_latents": gallery.d_sae,
        "n_alive": n_alive,
        "alive_fraction": n_alive / gallery.d_sae,
        "invariant_fraction": frac(gallery.invariance >= s.invariance_threshold),
        "pose_selective_fraction": frac(gallery.pose_selectivity >= s.selectivity_threshold),
        "monosemantic_fraction": frac(mono),
        "duplicate_fraction": frac(gallery.duplicate_of >= 0),
        "mean_invariance": float(gallery.invariance[alive].mean()) if n_alive else float("nan"),
        "weighted_invariance": _weighted(gallery.invariance, gallery.energy, alive),
        "mean_best_precision": (
            float(gallery.best_precision[alive].mean()) if n_alive else float("nan")
        ),
    }
    per_class: dict[str, int] = {}
    for j in torch.nonzero(mono & alive).flatten().tolist():
        factor = gallery.factor_names[int(gallery.best_factor[j])]
        label = f"{factor}={class_name(factor, int(gallery.best_class[j]), gallery.group_name)}"
        per_class[label] = per_class.get(label, 0) + 1
    out["latents_per_class"] = dict(sorted(per_class.items()))
    per_factor: dict[str, int] = {}
    for label, count in per_class.items():
        factor = label.split("=", 1)[0]
        per_factor[factor] = per_factor.get(factor, 0) + count
    out["latents_per_factor"] = dict(sorted(per_factor.items()))
    out["thresholds"] = {
        "precision": s.precision_threshold,
        "invariance": s.invariance_threshold,
        "pose_selectivity": s.selectivity_threshold,
        "duplicate_jaccard": s.duplicate_threshold,
    }
    return out


def _weighted(values: Tensor, weights: Tensor, alive: Tensor) -> float:
    """The mean of ``values`` over the alive latents weighted by ``weights`` (NaN if none)."""
    w = weights.double()[alive]
    if not bool(alive.any()) or float(w.sum()) <= 0:
        return float("nan")
    return float((values.double()[alive] * w).sum() / w.sum())


def purity_records(galleries: Iterable[LatentGallery]) -> list[dict[str, Any]]:
    """Flat per-seed records ``{model, layer, sae_type, seed, metric, value}`` of every scalar
    purity metric (:data:`PURITY_METRICS`) and of the latents per factor
    (``metric = "latents_per_factor/<factor>"``), for the verdict functions."""
    rows = []
    for gallery in galleries:
        m = gallery.meta
        base = {key: m.get(key) for key in ("model", "layer", "sae_type", "seed")}
        metrics = purity_metrics(gallery)
        for name in PURITY_METRICS:
            rows.append({**base, "metric": name, "value": metrics[name]})
        for factor in gallery.factor_names:
            count = metrics["latents_per_factor"].get(factor, 0)
            rows.append({**base, "metric": f"latents_per_factor/{factor}", "value": count})
    return rows


def summary_json(gallery: LatentGallery) -> str:
    """A short JSON description of a gallery (what it was computed on and its metrics)."""
    return json.dumps(io.to_jsonable({**gallery.meta, **purity_metrics(gallery)}), indent=2)
