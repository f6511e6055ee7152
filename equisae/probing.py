"""Logistic-regression probes and k-sparse probes of ground-truth factors from features.

Protocol (SAEBench-like, see the book's method page, section "Evaluation"):

- A probe is one ``StandardScaler`` fitted on the training split, then a multinomial
  ``LogisticRegression`` (lbfgs). Its inverse regularisation strength ``C`` is chosen on the
  validation split from a grid, and the score is the macro F1 on the test split. The grid is
  walked with increasing ``C``, each fit warm-started from the previous solution.
- A k-sparse probe first ranks features on the training split only by the absolute difference
  of class means (one-vs-rest, maximum over classes), keeps the top ``k`` and fits a probe on
  just those. ``k = None`` is the dense probe, reported as ``"all"``.
- Chance is the expected macro F1 of a no-information probe (:func:`chance_f1`, about 1/C for C
  balanced classes), or measured by refitting on shuffled labels (:func:`shuffled_label_f1`).
  The majority-class F1 (:func:`majority_class_f1`) is a different, much lower number.
- Labels equal to :data:`UNDEFINED` (-1, e.g. orientation of a C4-symmetric shape) are dropped
  before fitting and scoring.

Any feature matrix can be probed: SAE latents, raw activations, a random dictionary's codes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

UNDEFINED = -1
SPLITS = ("train", "val", "test")
DEFAULT_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
DEFAULT_PROBE_KS: tuple[int | None, ...] = (None, 1, 2, 5, 16)

ArrayLike = np.ndarray | torch.Tensor
Splits = Mapping[str, tuple[ArrayLike, ArrayLike]]


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe.

    ``f1``: test macro F1 at the ``C`` chosen on validation (``val_f1``); ``chance_f1``: the
    expected macro F1 of a no-information probe (:func:`chance_f1`); ``features``: the indices
    a k-sparse probe used (best first), None for a dense probe; ``k``: the probe size.
    """

    f1: float
    val_f1: float
    C: float
    n_train: int
    n_test: int
    n_classes: int
    chance_f1: float
    features: tuple[int, ...] | None = None
    k: int | None = None
    n_val: int | None = None

    @property
    def probe_k(self) -> str:
        """The name this probe size is reported under (``"all"`` or ``"k<k>"``)."""
        return probe_k_name(self.k)

    @property
    def above_chance(self) -> float:
        """Test F1 minus the no-information chance F1."""
        return self.f1 - self.chance_f1

    def to_dict(self) -> dict:
        """Plain JSON-ready values (``features`` as a list, ``probe_k`` added)."""
        out = asdict(self)
        out["features"] = None if self.features is None else list(self.features)
        out["probe_k"] = self.probe_k
        return out


@dataclass(frozen=True)
class SeedSummary:
    """Mean, sample standard deviation (ddof 1, 0 for one value) and count over seeds."""

    mean: float
    sd: float
    n: int

    @property
    def se(self) -> float:
        """Standard error of the mean (``sd / sqrt(n)``)."""
        return self.sd / np.sqrt(self.n) if self.n else float("nan")


def summarize_values(values: Sequence[float]) -> SeedSummary:
    """:class:`SeedSummary` of finite ``values`` (NaN and None are skipped)."""
    v = np.array([float(x) for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return SeedSummary(float("nan"), float("nan"), 0)
    sd = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
    return SeedSummary(float(np.mean(v)), sd, int(v.size))


def aggregate_seeds(results: Sequence[ProbeResult]) -> dict[str, SeedSummary]:
    """Summaries over seeds of one probe setting: ``{"f1", "chance_f1", "above_chance", "C"}``."""
    if not results:
        raise ValueError("aggregate_seeds needs at least one ProbeResult, got none")
    ks = {r.k for r in results}
    if len(ks) > 1:
        raise ValueError(f"results mix probe sizes {sorted(map(str, ks))}; aggregate one size")
    return {
        "f1": summarize_values([r.f1 for r in results]),
        "chance_f1": summarize_values([r.chance_f1 for r in results]),
        "above_chance": summarize_values([r.above_chance for r in results]),
        "C": summarize_values([r.C for r in results]),
    }


# --------------------------------------------------------------------------- validation
def _as_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_labels(y: ArrayLike, name: str) -> np.ndarray:
    y = _as_numpy(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"{name} must be integer class ids, got dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


def _check_pair(x: ArrayLike, y: ArrayLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``(features (N, d) float64, labels (N,) int64)`` for one split."""
    x = _as_numpy(x)
    if x.ndim != 2:
        raise ValueError(f"{split} features must have shape (N, d), got shape {x.shape}")
    y = _check_labels(y, f"{split} labels")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{split} features and labels differ in length: {x.shape[0]} features, "
            f"{y.shape[0]} labels"
        )
    if not np.all(np.isfinite(x)):
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{split} features contain NaN or infinite values ({bad} rows)")
    return x.astype(np.float64, copy=False), y


def defined_mask(labels: ArrayLike) -> np.ndarray:
    """Boolean mask of the examples whose label is defined (not :data:`UNDEFINED`)."""
    return _as_numpy(labels) != UNDEFINED


def _drop_undefined(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = y != UNDEFINED
    return x[keep], y[keep]


def _prepare(splits: Splits) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Validated splits with undefined labels dropped; raises on anything a probe cannot use."""
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise KeyError(f"splits is missing {missing}; expected keys {list(SPLITS)}")
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
    return data


# --------------------------------------------------------------------------- feature ranking
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

    Pass the training split only. Ties are broken by the lower index, so the choice is
    deterministic.
    """
    x = _as_numpy(features)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if x.ndim != 2 or k > x.shape[1]:
        raise ValueError(f"k={k} exceeds the number of features ({x.shape[-1]})")
    scores = class_mean_scores(features, labels)
    return np.argsort(-scores, kind="stable")[:k]


# --------------------------------------------------------------------------- chance
def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def _frequencies(labels: ArrayLike, name: str) -> dict[int, float]:
    y = _check_labels(labels, name)
    y = y[y != UNDEFINED]
    if y.size == 0:
        raise ValueError(f"{name} has no defined labels")
    values, counts = np.unique(y, return_counts=True)
    return {int(v): c / y.size for v, c in zip(values, counts, strict=True)}


def chance_f1(train_labels: ArrayLike, test_labels: ArrayLike) -> float:
    """Expected macro F1 of a no-information probe (undefined labels ignored).

    The probe guesses class c with its training frequency ``p_c``, independently of the input;
    on a test set with class frequencies ``q_c`` its expected per-class F1 is
    ``2 p_c q_c / (p_c + q_c)``, averaged over every class seen in either split (the classes
    sklearn's macro F1 averages over). Balanced classes: exactly ``1 / C``.
    """
    p = _frequencies(train_labels, "train_labels")
    q = _frequencies(test_labels, "test_labels")
    classes = sorted(set(p) | set(q))
    per_class = [
        2 * p.get(c, 0.0) * q.get(c, 0.0) / (p.get(c, 0.0) + q.get(c, 0.0)) for c in classes
    ]
    return float(np.mean(per_class))


def majority_class_f1(train_labels: ArrayLike, test_labels: ArrayLike) -> float:
    """Macro F1 of always predicting the most frequent training class.

    NOT the chance level of a probe (about ``2 / (C (C + 1))`` for C balanced classes, far
    below :func:`chance_f1`); kept as a named reference only.
    """
    p = _frequencies(train_labels, "train_labels")
    majority = max(p, key=lambda c: (p[c], -c))
    y = _check_labels(test_labels, "test_labels")
    y = y[y != UNDEFINED]
    return _macro_f1(y, np.full_like(y, majority))


# --------------------------------------------------------------------------- fitting
def _quiet_fit(model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def _grid_scores(
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
    c_grid: Sequence[float],
    max_iter: int,
    tol: float,
    warm_start: bool,
) -> tuple[float, float, float]:
    """``(C, val F1, test F1)`` at the ``C`` with the best validation F1 (ties: smaller C).

    One scaler fitted on train serves every ``C``. With ``warm_start`` the grid is walked in
    increasing ``C``, each lbfgs fit starting from the previous solution; otherwise every ``C``
    starts from zero (the earlier behaviour, kept for comparison).
    """
    scaler = StandardScaler().fit(data["train"][0])
    x = {s: scaler.transform(data[s][0]) for s in SPLITS}
    y = {s: data[s][1] for s in SPLITS}
    model = LogisticRegression(max_iter=max_iter, tol=tol, warm_start=warm_start)
    best = (float("nan"), -1.0, float("nan"))
    for C in sorted(float(c) for c in c_grid):
        if not warm_start:
            model = LogisticRegression(C=C, max_iter=max_iter, tol=tol)
        model.C = C
        _quiet_fit(model, x["train"], y["train"])
        val = _macro_f1(y["val"], model.predict(x["val"]))
        if val > best[1]:
            best = (C, val, _macro_f1(y["test"], model.predict(x["test"])))
    return best


def fit_probe(
    splits: Splits,
    k: int | None = None,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    max_iter: int = 300,
    tol: float = 1e-4,
    warm_start: bool = True,
) -> ProbeResult:
    """Fit a probe on ``splits["train"]``, pick ``C`` on ``"val"`` and score macro F1 on ``"test"``.

    ``splits`` maps each of ``train``, ``val``, ``test`` to ``(features (N, d), labels (N,))``.
    With ``k`` set, only the ``k`` features chosen by :func:`select_features` on the training
    split are used. Examples labelled :data:`UNDEFINED` are dropped from every split.
    """
    if len(c_grid) == 0:
        raise ValueError("c_grid must contain at least one value of C")
    if any(not np.isfinite(c) or c <= 0 for c in c_grid):
        raise ValueError(f"every C in c_grid must be positive and finite, got {list(c_grid)}")
    data = _prepare(splits)
    chosen = None
    if k is not None:
        chosen = select_features(data["train"][0], data["train"][1], k)
        data = {s: (x[:, chosen], y) for s, (x, y) in data.items()}
    C, val, test = _grid_scores(data, c_grid, max_iter, tol, warm_start)
    y_tr, y_te = data["train"][1], data["test"][1]
    return ProbeResult(
        f1=test,
        val_f1=val,
        C=C,
        n_train=int(y_tr.size),
        n_test=int(y_te.size),
        n_classes=int(np.unique(y_tr).size),
        chance_f1=chance_f1(y_tr, y_te),
        features=None if chosen is None else tuple(int(i) for i in chosen),
        k=None if k is None else int(k),
        n_val=int(data["val"][1].size),
    )


def shuffled_label_f1(
    splits: Splits,
    k: int | None = None,
    n_repeats: int = 3,
    seed: int = 0,
    **probe_kwargs,
) -> SeedSummary:
    """Chance measured: test F1 of probes fitted (and their ``C`` chosen) on shuffled labels.

    The train and validation labels are permuted (seeded, ``n_repeats`` times) so the features
    carry no information about them; the test labels are the real ones. Returns the summary over
    repeats; it should sit near :func:`chance_f1`.
    """
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be at least 1, got {n_repeats}")
    data = _prepare(splits)
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(n_repeats):
        shuffled = {s: (x, rng.permutation(y) if s != "test" else y) for s, (x, y) in data.items()}
        scores.append(fit_probe(shuffled, k=k, **probe_kwargs).f1)
    return summarize_values(scores)


def random_splits(
    features: ArrayLike,
    labels: ArrayLike,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Split rows at random (seeded) into ``train``/``val``/``test`` with the given fractions."""
    x, y = _as_numpy(features), _as_numpy(labels)
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be 3 positive numbers summing to 1, got {fractions}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"features and labels differ in length: {x.shape[0]} vs {y.shape[0]}")
    order = np.random.default_rng(seed).permutation(x.shape[0])
    cut = np.cumsum([int(round(f * x.shape[0])) for f in fractions[:2]])
    parts = np.split(order, cut)
    return {s: (x[idx], y[idx]) for s, idx in zip(SPLITS, parts, strict=True)}


def leakage_probe(
    latents: ArrayLike | Splits,
    poses: ArrayLike | None = None,
    k: int | None = None,
    seed: int = 0,
    **probe_kwargs,
) -> ProbeResult:
    """How well (supposedly invariant) latents predict the pose or an equivariant factor.

    ``latents`` is either a splits mapping (as for :func:`fit_probe`, labels = poses) or a
    ``(N, d)`` matrix with ``poses`` ``(N,)``, then split at random with ``seed``. The result's
    ``f1`` should sit near its ``chance_f1`` for latents that really are invariant.
    """
    if isinstance(latents, Mapping):
        if poses is not None:
            raise ValueError("pass poses inside the splits mapping, not as a separate argument")
        splits = latents
    else:
        if poses is None:
            raise ValueError("poses is required when latents is a single (N, d) matrix")
        splits = random_splits(latents, poses, seed=seed)
    return fit_probe(splits, k=k, **probe_kwargs)


def probe_factors(
    features: Mapping[str, ArrayLike],
    factors: Mapping[str, Mapping[str, ArrayLike]],
    factor_names: Sequence[str],
    probe_ks: Sequence[int | None] = DEFAULT_PROBE_KS,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    max_iter: int = 300,
    tol: float = 1e-4,
    progress: bool = False,
    warm_start: bool = True,
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
            splits, k=k, c_grid=c_grid, max_iter=max_iter, tol=tol, warm_start=warm_start
        )
    return out


def probe_k_name(k: int | None) -> str:
    """The key a probe size is reported under: ``"all"`` or ``"k<k>"``."""
    return "all" if k is None else f"k{k}"
