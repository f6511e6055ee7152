"""Cached orbit activations of the named base models: the one way notebooks get activations.

:func:`orbit_activations_for` builds the standard Shapes splits of a run mode, trains (or loads)
the base model, and extracts the activations of every split's orbit under the group (C4 by
default, or ``group="D4"``) at the model's hooked layers. The results are cached under ``artifacts_dir()/activations/<hash>/``, one folder per
(split, layer), keyed by everything that determines them (model configuration, training
settings, data configuration and sizes, seed, split, layer, group). A rerun loads them,
checking each folder's sha256 manifest: a damaged or truncated cache is reported in one line
naming the file and extracted again.
On a cache miss, all splits and all hooked layers of the model are extracted in one go, so
asking for the next split or layer is a load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from equisae import io
from equisae.activations import OrbitActivations, orbit_activations_many
from equisae.device import current_device, device_config
from equisae.modes import check_mode
from equisae.timing import Stopwatch

#: the default group (the paper's C4); ``group=`` of the functions below chooses another
GROUP_NAME = "C4"
SPLITS: tuple[str, ...] = ("train", "val", "test")
CACHE_VERSION = 1


def resolve_layer(model_name: str, layer: str) -> str:
    """The module name of ``layer``: a role of ``LAYERS[model_name]`` (``"bottleneck"``,
    ``"intermediate"``) or already a module name of that model."""
    from equisae.models import LAYERS, get_spec

    get_spec(model_name)  # KeyError for an unknown model
    roles = LAYERS[model_name]
    if layer in roles:
        return roles[layer]
    if layer in roles.values():
        return layer
    raise KeyError(
        f"unknown layer {layer!r} for model {model_name!r}; use one of the roles "
        f"{sorted(roles)} or the module names {sorted(set(roles.values()))}"
    )


def _group_name(group: str) -> str:
    """The canonical name of ``group`` (``"C4"``, ``"D4"``, ...); KeyError/ValueError if unknown."""
    from equisae.groups import get_group

    if not isinstance(group, str):
        raise ValueError(f"group must be a group name like 'C4' or 'D4', got {group!r}")
    return get_group(group).name


def _check_args(mode: str, split: str, seed: int) -> None:
    check_mode(mode)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")


@dataclass(frozen=True)
class ActivationKey:
    """Which orbit activations: one split of the standard data of ``mode`` (data seed ``seed``,
    canonical ``representative``) under ``group``, at ``layer`` of the base model
    ``model_name``. ``layer`` is a role of ``equisae.models.LAYERS[model_name]`` or its module
    name; both name the same cache folder."""

    model_name: str
    layer: str
    mode: str
    seed: int = 0
    split: str = "train"
    representative: str = "fixed"
    group: str = GROUP_NAME

    def __post_init__(self) -> None:
        _check_args(self.mode, self.split, self.seed)

    def at(self, *, layer: str | None = None, split: str | None = None) -> ActivationKey:
        """The same activations at another ``layer`` or of another ``split``."""
        return replace(
            self,
            layer=self.layer if layer is None else layer,
            split=self.split if split is None else split,
        )

    def config(self) -> dict[str, Any]:
        """Everything that determines these activations (hashed into the cache folder)."""
        from equisae import data
        from equisae.models import model_config, training_settings
        from equisae.models import train as model_train

        return {
            "model_name": self.model_name,
            "model": model_config(self.model_name),
            "training": asdict(training_settings(self.mode)),
            "model_cache_version": getattr(model_train, "CACHE_VERSION", None),
            "data": io.to_jsonable(data.standard_config(self.representative)),
            "sizes": data.dataset_sizes(self.mode),
            "mode": self.mode,
            "seed": int(self.seed),
            "split": self.split,
            "layer": resolve_layer(self.model_name, self.layer),
            "group": _group_name(self.group),
            "version": CACHE_VERSION,
            # the run's device off the CPU (a GPU's base model and forward passes differ in the
            # last bits); nothing on the CPU, so the CPU caches keep their hashes
            **device_config(),
        }

    def folder(self) -> Path:
        """The cache folder of these activations."""
        return io.artifacts_dir() / "activations" / io.config_hash(self.config())


def activation_key(
    model_name: str,
    layer: str,
    mode: str,
    seed: int,
    split: str,
    representative: str = "fixed",
    group: str = GROUP_NAME,
) -> dict[str, Any]:
    """:meth:`ActivationKey.config` of these arguments (hashed into the cache folder)."""
    return ActivationKey(model_name, layer, mode, seed, split, representative, group).config()


def activation_folder(
    model_name: str,
    layer: str,
    mode: str,
    seed: int,
    split: str,
    representative: str = "fixed",
    group: str = GROUP_NAME,
) -> Path:
    """The cache folder of one split's orbit activations at one layer."""
    return ActivationKey(model_name, layer, mode, seed, split, representative, group).folder()


def orbit_activations_for(
    model_name: str,
    layer: str,
    mode: str,
    seed: int = 0,
    split: str = "train",
    progress: bool = True,
    representative: str = "fixed",
    group: str = GROUP_NAME,
) -> OrbitActivations:
    """Orbit activations (N, |G|, d) of a split of the standard data for a named base model.

    ``layer`` is a role of ``equisae.models.LAYERS[model_name]`` (``"bottleneck"`` or
    ``"intermediate"``) or its module name. The model is trained or loaded with
    ``equisae.models.train_or_load(model_name, mode, seed)``; the data are
    ``equisae.data.make_splits(dataset_sizes(mode), standard_config(representative), seed)``:
    ``representative`` ``"fixed"`` (default: pose 0 is orientation 0) or ``"random"``.
    ``group`` names the group whose orbits are taken (``"C4"``, the default, or ``"D4"``: 8
    poses, rotations then flips, with factors transformed by ``equisae.data.orbit``); it is part
    of the cache key.
    """
    key = ActivationKey(model_name, layer, mode, seed, split, representative, group)
    return load_activations(key, progress)


def load_activations(key: ActivationKey, progress: bool = True) -> OrbitActivations:
    """The orbit activations of ``key``, from the verified cache or extracted (and cached)."""
    key = replace(key, layer=resolve_layer(key.model_name, key.layer), group=_group_name(key.group))
    folder = key.folder()
    try:
        return OrbitActivations.load(folder)
    except FileNotFoundError:
        pass
    except ValueError as exc:
        from equisae import repairs

        repairs.report(folder, str(exc), "extracting again")
    _extract_all(key, progress)
    return OrbitActivations.load(folder)


def _extract_all(key: ActivationKey, progress: bool) -> None:
    """Extract and cache every split at every hooked layer of the model (and ``key.layer``)."""
    from equisae import data
    from equisae.groups import get_group
    from equisae.models import LAYERS, train_or_load

    model_name = key.model_name
    # one wall-clock record per split, shared by its layers' folders; the first also covers
    # the data (a base model trained here keeps its own record, nested in this one)
    watch = Stopwatch("activations")
    model, info = train_or_load(model_name, key.mode, key.seed, progress=progress)
    model.to(current_device())  # the forward passes run on the run's device (a no-op on the CPU)
    group = get_group(key.group)
    layers = list(dict.fromkeys([*LAYERS[model_name].values(), key.layer]))
    sizes = data.dataset_sizes(key.mode)
    with watch.part("data"):
        splits = data.make_splits(sizes, data.standard_config(key.representative), key.seed)
    for split in tqdm(SPLITS, desc=f"activations of {model_name}", disable=not progress):
        with watch.part("extract"):
            per_layer = orbit_activations_many(
                model, splits[split], group, layers, model_name=model_name, progress=False
            )
        record = watch.stop()
        for layer, acts in per_layer.items():
            config = key.at(layer=layer, split=split).config()
            acts.metadata = {"key": config, "model_folder": info.get("folder")}
            acts.save(io.artifacts_dir() / "activations" / io.config_hash(config), timing=record)
        watch = Stopwatch("activations")


def output_equivariance_error(
    model_name: str,
    mode: str,
    seed: int = 0,
    split: str = "test",
    max_examples: int = 500,
    progress: bool = True,
) -> float:
    """How far a base autoencoder's output is from C4-equivariant, independent of any fit.

    ``mean_p ||f(g^p x) - g^p f(x)||^2 / ||g^p f(x) - mean||^2`` over p = 1..3 and the first
    ``max_examples`` images of ``split`` (0 for an exactly equivariant model).
    """
    import torch

    from equisae import data
    from equisae.groups import get_group
    from equisae.models import train_or_load

    _check_args(mode, split, seed)
    if max_examples < 2:
        raise ValueError(f"max_examples must be >= 2, got {max_examples}")
    model, _ = train_or_load(model_name, mode, seed, progress=progress)
    size = data.dataset_sizes(mode)[split]
    images = data.make_splits({split: size}, data.standard_config(), seed)[split].images
    images = images[:max_examples]
    group = get_group(GROUP_NAME)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(images)
            errors = []
            for p in range(1, group.order):
                target = group.act_images(out, p)
                moved = model(group.act_images(images, p))
                sst = ((target - target.mean(dim=0)) ** 2).sum()
                errors.append(float(((moved - target) ** 2).sum() / sst))
    finally:
        model.train(was_training)
    return sum(errors) / len(errors)
