"""Loaders for image files a user brings: GalaxyMNIST's HDF5 files and one-folder-per-class trees.

**GalaxyMNIST** (Walmsley et al., https://github.com/mwalmsley/galaxy_mnist) is distributed as
``train_dataset.hdf5`` and ``test_dataset.hdf5`` (its loader keeps them in
``<root>/GalaxyMNIST/raw/``), each with a dataset ``images`` of shape (N, 64, 64, 3), uint8,
channels last, and ``labels`` of shape (N,), integers 0-3 for :data:`GALAXY_MNIST_CLASSES`
(8,000 train and 2,000 test images). :func:`load_galaxy_mnist` reads them into (N, 3, 64, 64)
floats in [0, 1] with the factor ``morphology`` (invariant: a galaxy's morphology does not
depend on how the image is turned).

**Image folders** (MLL23 blood cells and most cell-image sets): ``root/<class>/<image files>``,
PNG, JPEG or TIFF, read with Pillow. The folder name is the class (factor ``label``, classes in
sorted order unless ``classes`` fixes them).

Errors name the problem: a missing file or folder (FileNotFoundError), a wrong HDF5 key
(KeyError listing the keys present), mixed image sizes, non-square images, class folders not
among the expected ``classes``, empty class folders (ValueError).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from equisae.sources.base import ImageSource, resize_images

__all__ = [
    "GALAXY_MNIST_CLASSES",
    "GALAXY_MNIST_FILES",
    "IMAGE_EXTENSIONS",
    "load_galaxy_mnist",
    "load_image_folder",
    "read_galaxy_mnist_file",
]

#: GalaxyMNIST's classes in label order (``galaxy_mnist.GalaxyMNIST.classes``).
GALAXY_MNIST_CLASSES: tuple[str, ...] = (
    "smooth_round",
    "smooth_cigar",
    "edge_on_disk",
    "unbarred_spiral",
)
#: File name of each GalaxyMNIST split.
GALAXY_MNIST_FILES: dict[str, str] = {"train": "train_dataset.hdf5", "test": "test_dataset.hdf5"}
#: Image file suffixes :func:`load_image_folder` reads (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _to_float(array: np.ndarray, what: str) -> Tensor:
    """Pixels to float32 in [0, 1] for integer types (divided by the type's maximum)."""
    if np.issubdtype(array.dtype, np.integer):
        return torch.from_numpy(array.astype(np.float32) / float(np.iinfo(array.dtype).max))
    if np.issubdtype(array.dtype, np.floating) or array.dtype == bool:
        return torch.from_numpy(array.astype(np.float32))
    raise ValueError(f"{what}: pixels must be numbers, got dtype {array.dtype}")


def _check_square(height: int, width: int, what: str) -> None:
    if height != width:
        raise ValueError(
            f"{what}: images must be square for the rotation group, got {height}x{width} "
            "(height x width); crop or pad them to a square first"
        )


def read_galaxy_mnist_file(
    path: str | os.PathLike, image_size: int | None = None, max_images: int | None = None
) -> tuple[Tensor, Tensor]:
    """Images (N, C, H, H) in [0, 1] and labels (N,) int64 from one GalaxyMNIST HDF5 file.

    ``images`` is read as (N, H, W, C) (channels last, as GalaxyMNIST stores it) or (N, H, W);
    ``image_size`` resizes (64 -> 32 averages 2x2 blocks, exact under rotations).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GalaxyMNIST file not found: {path}")
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path} is not an HDF5 file; GalaxyMNIST is read from its HDF5 files "
            "(train_dataset.hdf5, test_dataset.hdf5)"
        )
    with h5py.File(path, "r") as f:
        keys = sorted(f.keys())
        for key in ("images", "labels"):
            if key not in f:
                raise KeyError(
                    f"{path} has no dataset {key!r}; keys present: {keys} "
                    "(GalaxyMNIST stores 'images' (N, 64, 64, 3) uint8 and 'labels' (N,))"
                )
        n_total = f["images"].shape[0]
        n = n_total if max_images is None else min(int(max_images), n_total)
        raw = np.asarray(f["images"][:n])
        labels = np.asarray(f["labels"][:n])
        if f["labels"].shape[0] != n_total:
            raise ValueError(
                f"{path}: 'images' has {n_total} entries but 'labels' has {f['labels'].shape[0]}"
            )
    if raw.ndim == 3:
        raw = raw[..., None]
    if raw.ndim != 4 or raw.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{path}: 'images' must have shape (N, H, W, C) with C in 1, 3 or 4 "
            f"(channels last), got {raw.shape}"
        )
    _check_square(raw.shape[1], raw.shape[2], str(path))
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: 'labels' must be 1-d integers, got {labels.dtype} {labels.shape}"
        )
    images = _to_float(raw, str(path)).permute(0, 3, 1, 2).contiguous()
    if image_size is not None:
        images = resize_images(images, image_size)
    return images, torch.from_numpy(labels.astype(np.int64))


def _galaxy_files(path: Path, splits: Sequence[str]) -> dict[str, Path]:
    if path.is_file():
        return {path.stem.replace("_dataset", ""): path}
    if not path.exists():
        raise FileNotFoundError(f"GalaxyMNIST path not found: {path}")
    places = [path, path / "raw", path / "GalaxyMNIST" / "raw"]
    found: dict[str, Path] = {}
    for split in splits:
        for place in places:
            candidate = place / GALAXY_MNIST_FILES[split]
            if candidate.is_file():
                found[split] = candidate
                break
    missing = [s for s in splits if s not in found]
    if missing:
        names = [GALAXY_MNIST_FILES[s] for s in missing]
        raise FileNotFoundError(
            f"GalaxyMNIST files {names} not found in {[str(p) for p in places]}"
        )
    return found


def load_galaxy_mnist(
    path: str | os.PathLike,
    split: str = "all",
    image_size: int | None = None,
    max_images: int | None = None,
) -> ImageSource:
    """GalaxyMNIST as a source: ``path`` is one HDF5 file or a folder holding
    ``train_dataset.hdf5`` / ``test_dataset.hdf5`` (directly, in ``raw/`` or in
    ``GalaxyMNIST/raw/``). ``split``: ``"train"``, ``"test"`` or ``"all"`` (both files, in
    that order; the factor-free ``metadata["files"]`` records which rows came from which).
    ``max_images`` caps the images read per file.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    wanted = ["train", "test"] if split == "all" else [split]
    files = _galaxy_files(Path(path), wanted)
    images, labels, record = [], [], {}
    for name, file in files.items():
        x, y = read_galaxy_mnist_file(file, image_size, max_images)
        images.append(x)
        labels.append(y)
        record[name] = {"path": str(file), "n_images": int(y.numel())}
    label = torch.cat(labels)
    if label.numel() and (label.min() < 0 or label.max() >= len(GALAXY_MNIST_CLASSES)):
        raise ValueError(
            f"GalaxyMNIST labels must be 0..{len(GALAXY_MNIST_CLASSES) - 1}, got "
            f"{int(label.min())}..{int(label.max())}"
        )
    return ImageSource(
        name="galaxy-mnist",
        images=torch.cat(images),
        factors={"morphology": label},
        invariant_factors=("morphology",),
        class_names={"morphology": GALAXY_MNIST_CLASSES},
        metadata={"files": record, "split": split},
    )


def _read_image(file: Path, channels: int | None) -> np.ndarray:
    """One image file as (H, W, C) with C = ``channels`` (or as stored: 1 for grey, 3 for colour)."""
    from PIL import Image

    with Image.open(file) as img:
        if channels == 1 or (channels is None and img.mode in ("1", "L", "I", "I;16", "F")):
            if img.mode in ("I", "I;16", "F"):
                array = np.asarray(img)
                if array.dtype == np.int32:  # mode "I" holds 16-bit TIFFs as int32
                    array = array.astype(np.uint16) if array.max() < 2**16 else array
            else:
                array = np.asarray(img.convert("L"))
            return array[..., None]
        return np.asarray(img.convert("RGB"))


def _class_folders(root: Path, classes: Sequence[str] | None) -> list[Path]:
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"{root} is a file, not a folder; the folder source reads root/<class>/<images>"
        )
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{root} has no class folders; expected the layout root/<class>/<images>")
    if classes is None:
        return folders
    names = [p.name for p in folders]
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise ValueError(
            f"{root}: unknown class folders {unknown}; expected classes {list(classes)}"
        )
    missing = [c for c in classes if c not in names]
    if missing:
        raise ValueError(f"{root}: expected class folders {missing} are missing (found {names})")
    return [root / c for c in classes]


def load_image_folder(
    root: str | os.PathLike,
    classes: Sequence[str] | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    max_per_class: int | None = None,
    name: str | None = None,
) -> ImageSource:
    """Images in ``root/<class>/<files>`` (PNG, JPEG, TIFF) as a source with factor ``label``.

    ``classes`` fixes the class names and their order (every folder must be one of them);
    by default the folder names in sorted order. ``channels`` forces 1 (grey) or 3 (RGB);
    by default grey files give 1 channel and anything else RGB (3). Every image must be
    square; they must all have one size unless ``image_size`` is given, which resizes each
    image on reading (so large sets fit in memory). ``max_per_class`` reads only the first
    files (sorted by name) of each class.
    """
    root = Path(root)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    folders = _class_folders(root, classes)
    images: list[Tensor] = []
    labels: list[int] = []
    first: tuple[Path, tuple[int, ...]] | None = None
    for index, folder in enumerate(folders):
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise ValueError(
                f"class folder {folder} has no images (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        for file in files[:max_per_class]:
            array = _read_image(file, channels)
            _check_square(array.shape[0], array.shape[1], str(file))
            if first is None:
                first = (file, array.shape)
            elif array.shape[-1] != first[1][-1]:
                raise ValueError(
                    f"mixed channel counts: {first[0]} has {first[1][-1]}, {file} has "
                    f"{array.shape[-1]}; pass channels=1 or channels=3"
                )
            elif image_size is None and array.shape != first[1]:
                raise ValueError(
                    f"mixed image sizes: {first[0]} is {first[1][0]}x{first[1][1]}, {file} is "
                    f"{array.shape[0]}x{array.shape[1]}; pass image_size (--size on the command line) to resize them all"
                )
            x = _to_float(np.ascontiguousarray(array), str(file)).permute(2, 0, 1)[None]
            if image_size is not None:
                x = resize_images(x, image_size)
            images.append(x)
            labels.append(index)
    class_names = tuple(p.name for p in folders)
    meta: dict[str, Any] = {"root": str(root), "max_per_class": max_per_class}
    return ImageSource(
        name=name or root.name,
        images=torch.cat(images),
        factors={"label": torch.tensor(labels, dtype=torch.int64)},
        invariant_factors=("label",),
        class_names={"label": class_names},
        metadata=meta,
    )
