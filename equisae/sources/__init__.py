"""Data sources for the pipeline: Shapes, bundled digits, GalaxyMNIST HDF5 files, image folders.

Every source is an :class:`ImageSource` (images (N, C, H, W), factor labels split into
invariant and equivariant ones, exact orbits under a group); :func:`run_on_source` (in
:mod:`equisae.sources.pipeline`) runs base model, fit of M, SAEs and probes on any of them.
"""

from equisae.sources.base import (
    DEFAULT_FRACTIONS,
    ImageSource,
    as_group,
    resize_images,
    stratified_split_indices,
)
from equisae.sources.digits import (
    DIGIT_CLASSES,
    ROTATION_PAIRS,
    digits_source,
    macro_f1_without,
    rotation_confusion,
)
from equisae.sources.files import (
    GALAXY_MNIST_CLASSES,
    GALAXY_MNIST_FILES,
    IMAGE_EXTENSIONS,
    load_galaxy_mnist,
    load_image_folder,
    read_galaxy_mnist_file,
)
from equisae.sources.shapes import ShapesSource, shapes_source, shapes_splits

__all__ = [
    "DEFAULT_FRACTIONS",
    "DIGIT_CLASSES",
    "GALAXY_MNIST_CLASSES",
    "GALAXY_MNIST_FILES",
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "ROTATION_PAIRS",
    "ShapesSource",
    "as_group",
    "digits_source",
    "load_galaxy_mnist",
    "load_image_folder",
    "macro_f1_without",
    "read_galaxy_mnist_file",
    "resize_images",
    "rotation_confusion",
    "shapes_source",
    "shapes_splits",
    "stratified_split_indices",
]
