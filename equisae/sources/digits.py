"""Handwritten digits bundled with scikit-learn (``sklearn.datasets.load_digits``) as a source.

1,797 grey images of 8x8 pixels (values 0..16, scaled here to [0, 1]), digits 0-9, about 180
per class. The digit class is the invariant factor: rotating a 3 gives a rotated 3.

**Image size.** The images are upsampled by nearest neighbours to 16x16 by default. Nearest
upsampling by a whole factor copies each pixel into a 2x2 block, so it adds and loses no
information and commutes exactly with 90-degree rotations and flips (orbits stay exact). 16 is
the smallest side every base model accepts at its default depth: the CNN halves the image three
times (8x8 would leave a 1x1 map, with no spatial layout left for a rotation to act on) and the
G-CNN four times (it needs a multiple of 16). 32 would cost four times the compute for the same
information. ``image_size=8`` keeps the raw images (MLP, CNN and ViT accept it).

**6 and 9.** A 6 turned by 180 degrees looks much like a 9, so the class is not a function of
the image's orbit: an exactly rotation-invariant feature sees (nearly) the same orbit for a 6 and
a 9 and cannot tell them apart. :func:`rotation_confusion` measures how often a classifier trained
on upright digits calls a turned 6 a 9 (and vice versa); the source also carries the factor
``digit_without_6_9`` (the digit, with 6 and 9 marked -1, i.e. undefined and left out by the
probes), so every probe reports F1 with and without the pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from equisae.sources.base import ImageSource, resize_images

__all__ = [
    "DIGIT_CLASSES",
    "ROTATION_PAIRS",
    "digits_source",
    "macro_f1_without",
    "rotation_confusion",
]

DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
#: Pairs of digit classes related (approximately) by a 180-degree rotation.
ROTATION_PAIRS: tuple[tuple[int, int], ...] = ((6, 9),)
DEFAULT_IMAGE_SIZE = 16


def digits_source(image_size: int = DEFAULT_IMAGE_SIZE) -> ImageSource:
    """The bundled digits as a 1-channel source at ``image_size`` (a multiple of 8; default 16).

    Factors: ``digit`` (0-9) and ``digit_without_6_9`` (the same with 6 and 9 set to -1), both
    invariant. Deterministic: no randomness is involved (splits come from ``split(seed)``).
    """
    from sklearn.datasets import load_digits

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8 (8, 16, 32, ...), got {image_size!r}")
    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]
    images = resize_images(images, image_size)
    digit = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    paired = torch.tensor([d for pair in ROTATION_PAIRS for d in pair])
    without = torch.where(torch.isin(digit, paired), -1, digit)
    return ImageSource(
        name="digits",
        images=images,
        factors={"digit": digit, "digit_without_6_9": without},
        invariant_factors=("digit", "digit_without_6_9"),
        class_names={"digit": DIGIT_CLASSES, "digit_without_6_9": DIGIT_CLASSES},
        metadata={
            "origin": "sklearn.datasets.load_digits",
            "raw_size": 8,
            "upsampling": "nearest" if image_size > 8 else "none",
        },
    )


def macro_f1_without(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    exclude: Sequence[int] = (6, 9),
) -> dict[str, float]:
    """Macro F1 over all classes and over the examples whose true class is not in ``exclude``
    (scored on the remaining classes only)."""
    from sklearn.metrics import f1_score

    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"y_true and y_pred must be equal-length 1-d, got {t.shape}, {p.shape}")
    keep = ~np.isin(t, list(exclude))
    labels = np.setdiff1d(np.unique(t), list(exclude))
    return {
        "all": float(f1_score(t, p, average="macro")),
        "without": float(f1_score(t[keep], p[keep], labels=labels, average="macro")),
    }


def rotation_confusion(
    source: ImageSource | None = None,
    seed: int = 0,
    pairs: Sequence[tuple[int, int]] = ROTATION_PAIRS,
) -> dict[str, Any]:
    """How far the digit class is from rotation-invariant, measured on the pixels.

    A logistic-regression classifier is trained on upright training digits (a seeded 60/20/20
    split) and applied to the test digits turned by 180 degrees. For each pair ``(a, b)``:
    ``"a->b"`` is the share of turned ``a`` classified as ``b`` (and ``"b->a"``); for
    comparison ``"others_to_pair"`` is the share of turned digits of other classes called
    ``a`` or ``b``, and ``upright_accuracy`` is the test accuracy on upright digits.
    """
    from sklearn.linear_model import LogisticRegression

    source = source or digits_source(8)
    splits = source.split(seed)
    train, test = splits["train"], splits["test"]
    x_tr = train.images.reshape(len(train), -1).numpy()
    y_tr = train.factors["digit"].numpy()
    clf = LogisticRegression(max_iter=500, C=0.1).fit(x_tr, y_tr)
    y_te = test.factors["digit"].numpy()
    upright = clf.predict(test.images.reshape(len(test), -1).numpy())
    turned = torch.rot90(test.images, 2, dims=(-2, -1))
    pred = clf.predict(turned.reshape(len(test), -1).numpy())
    out: dict[str, Any] = {"upright_accuracy": float((upright == y_te).mean()), "seed": seed}
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            rows = y_te == x
            out[f"{x}->{y}"] = float((pred[rows] == y).mean()) if rows.any() else float("nan")
        others = ~np.isin(y_te, [a, b])
        out[f"others_to_{a}_{b}"] = float(np.isin(pred[others], [a, b]).mean())
    out["turned_accuracy"] = float((pred == y_te).mean())
    return out
