"""Logistic-regression probes and k-sparse probes of ground-truth factors from features.

A probe is ``StandardScaler + LogisticRegression``; its inverse regularisation strength ``C`` is
chosen on the validation split from a small grid, and the score is the macro F1 on the test
split. A k-sparse probe first picks ``k`` features on the training split by the absolute
difference of class means (one-vs-rest, maximum over classes) and then fits a probe on just
those. Labels equal to :data:`UNDEFINED` (-1, e.g. orientation of a C4-symmetric shape) are
dropped before fitting and scoring.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

UNDEFINED = -1
SPLITS = ("train", "val", "test")
DEFAULT_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
DEFAULT_PROBE_KS: tuple[int | None, ...] = (None, 1, 2, 5, 16)

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe: test macro F1, the chosen ``C`` and the features it used."""

    f1: float
    val_f1: float
    C: float
    n_train: int
    n_test: int
    n_classes: int
    chance_f1: float
    features: tuple[int, ...] | None = None  # indices for k-sparse probes, None for all


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_pair(x: ArrayLike, y: ArrayLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``(features (N, d) float64, labels (N,) int64)`` for one split."""
    x = _as_numpy(x)
    y = _as_numpy(y)
    if x.ndim != 2:
        raise ValueError(f"{split} features must have shape (N, d), got shape {x.shape}")
    if y.ndim != 1:
        raise ValueError(f"{split} labels must have shape (N,), got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{split} features and labels differ in length: {x.shape[0]} features, "
            f"{y.shape[0]} labels"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{split} features contain NaN or infinite values")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"{split} labels must be integer class ids, got dtype {y.dtype}")
    return x.astype(np.float64, copy=False), y.astype(np.int64, copy=False)


def defined_mask(labels: ArrayLike) -> np.ndarray:
    """Boolean mask of the examples whose label is defined (not :data:`UNDEFINED`)."""
    return _as_numpy(labels) != UNDEFINED


def _drop_undefined(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = y != UNDEFINED
    return x[keep], y[keep]


def class_mean_scores(features: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Per-feature score ``max_c |mean(x | y = c) - mean(x | y != c)|`` (undefined labels dropped).

    For two classes this is the absolute difference of the two class means.
    """
    x, y = _check_pair(features, labels, "train")
    x, y = _drop_undefined(x, y)
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(
            f"need at least 2 classes to score features, got classes {classes.tolist()}"
        )
    scores = np.zeros(x.shape[1])
    for c in classes:
        inside = y == c
        diff = np.abs(x[inside].mean(axis=0) - x[~inside].mean(axis=0))
        scores = np.maximum(scores, diff)
    return scores


def select_features(features: ArrayLike, labels: ArrayLike, k: int) -> np.ndarray:
    """Indices of the ``k`` features with the highest :func:`class_mean_scores`, best first.

    Ties are broken by the lower index, so the choice is deterministic.
    """
    x = _as_numpy(features)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if x.ndim != 2 or k > x.shape[1]:
        raise ValueError(f"k={k} exceeds the number of features ({x.shape[-1]})")
    scores = class_mean_scores(features, labels)
    return np.argsort(-scores, kind="stable")[:k]


def _fit_one(x: np.ndarray, y: np.ndarray, C: float, max_iter: int, tol: float):
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, tol=tol))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def chance_f1(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Macro F1 of always predicting the most frequent training class (a chance reference)."""
    values, counts = np.unique(train_labels, return_counts=True)
    majority = values[np.argmax(counts)]
    return _macro_f1(test_labels, np.full_like(test_labels, majority))


def fit_probe(
    splits: Mapping[str, tuple[ArrayLike, ArrayLike]],
    k: int | None = None,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> ProbeResult:
    """Fit a probe on ``splits["train"]``, pick ``C`` on ``"val"`` and score macro F1 on ``"test"``.

    ``splits`` maps each of ``train``, ``val``, ``test`` to ``(features (N, d), labels (N,))``.
    With ``k`` set, only the ``k`` features chosen by :func:`select_features` on the training
    split are used. Examples labelled :data:`UNDEFINED` are dropped from every split.
    """
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise KeyError(f"splits is missing {missing}; expected keys {list(SPLITS)}")
    if not c_grid:
        raise ValueError("c_grid must contain at least one value of C")
    data = {s: _drop_undefined(*_check_pair(*splits[s], split=s)) for s in SPLITS}
    dims = {s: data[s][0].shape[1] for s in SPLITS}
    if len(set(dims.values())) != 1:
        raise ValueError(f"splits have different feature dimensions: {dims}")
    for s in SPLITS:
        if data[s][0].shape[0] == 0:
            raise ValueError(f"{s} split has no examples with a defined label")
    classes = np.unique(data["train"][1])
    if classes.size < 2:
        raise ValueError(
            f"train labels contain a single class ({classes.tolist()}); a probe needs at least 2"
        )

    chosen = None
    if k is not None:
        chosen = select_features(data["train"][0], data["train"][1], k)
        data = {s: (x[:, chosen], y) for s, (x, y) in data.items()}

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (data[s] for s in SPLITS)
    best_c, best_val, best_model = None, -1.0, None
    for C in c_grid:
        model = _fit_one(x_tr, y_tr, float(C), max_iter, tol)
        val = _macro_f1(y_va, model.predict(x_va))
        if val > best_val:
            best_c, best_val, best_model = float(C), val, model
    test = _macro_f1(y_te, best_model.predict(x_te))
    return ProbeResult(
        f1=test,
        val_f1=best_val,
        C=best_c,
        n_train=int(y_tr.size),
        n_test=int(y_te.size),
        n_classes=int(classes.size),
        chance_f1=chance_f1(y_tr, y_te),
        features=None if chosen is None else tuple(int(i) for i in chosen),
    )


def probe_factors(
    features: Mapping[str, ArrayLike],
    factors: Mapping[str, Mapping[str, ArrayLike]],
    factor_names: Sequence[str],
    probe_ks: Sequence[int | None] = DEFAULT_PROBE_KS,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    max_iter: int = 300,
    tol: float = 1e-4,
    progress: bool = False,
) -> dict[str, dict[str, ProbeResult]]:
    """Probe every factor with every probe size; returns ``{factor: {probe_k_name: result}}``.

    ``features[split]`` is ``(N, d)``; ``factors[split][name]`` is ``(N,)``. Probe sizes larger
    than ``d`` are skipped; ``None`` (all features) is reported under the name ``"all"``.
    """
    for s in SPLITS:
        if s not in features:
            raise KeyError(f"features is missing split {s!r}")
        if s not in factors:
            raise KeyError(f"factors is missing split {s!r}")
        for name in factor_names:
            if name not in factors[s]:
                raise KeyError(f"factor {name!r} not in the {s} factors {sorted(factors[s])}")
    d = _as_numpy(features["train"]).shape[-1]
    jobs = [(name, k) for name in factor_names for k in probe_ks if k is None or k <= d]
    out: dict[str, dict[str, ProbeResult]] = {name: {} for name in factor_names}
    for name, k in tqdm(jobs, desc="probes", disable=not progress):
        splits = {s: (features[s], factors[s][name]) for s in SPLITS}
        out[name][probe_k_name(k)] = fit_probe(
            splits, k=k, c_grid=c_grid, max_iter=max_iter, tol=tol
        )
    return out


def probe_k_name(k: int | None) -> str:
    """The key a probe size is reported under: ``"all"`` or ``"k<k>"``."""
    return "all" if k is None else f"k{k}"
