"""Summaries of the planted-features runs: the models compared, their metrics, means over seeds.

Shared by the sweep (:mod:`equisae.sweeps.planted`), which writes the records, and the figures
(:mod:`equisae.plots.planted`), which draw them, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from equisae.modes import SWEEP_SAE_TYPES

__all__ = ["METRICS", "MODEL_TYPES", "series", "summarize"]

#: The models compared on planted features, in plotting order (names of equisae.sae.factory).
MODEL_TYPES: tuple[str, ...] = SWEEP_SAE_TYPES
#: Headline metrics of every job (the notebook's results file holds each per setting and seed).
METRICS: tuple[str, ...] = (
    "recovery",
    "detection_f1",
    "top1_detection",
    "fvu",
    "l0",
    "n_params",
)


def summarize(
    records: Sequence[dict[str, Any]], metrics: Sequence[str] = METRICS
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``{model: {metric: {str(n_features): {"mean", "std", "per_seed"}}}}``: the mean and
    standard deviation (ddof 0) over seeds of every metric, per setting, with the seed values
    (in seed order)."""
    if not records:
        raise ValueError("no planted records to summarise")
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    models = [m for m in MODEL_TYPES if any(r["model"] == m for r in records)]
    for model in models:
        rows = sorted((r for r in records if r["model"] == model), key=lambda r: r["seed"])
        counts = sorted({r["n_features"] for r in rows})
        out[model] = {}
        for metric in metrics:
            missing = [r["seed"] for r in rows if metric not in r]
            if missing:
                raise KeyError(f"metric {metric!r} missing from {model} records (seeds {missing})")
            out[model][metric] = {}
            for n in counts:
                values = [float(r[metric]) for r in rows if r["n_features"] == n]
                out[model][metric][str(n)] = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values)),
                    "per_seed": values,
                }
    return out


def series(summary: dict, model: str, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n_features, mean, std)`` arrays of one model and metric from :func:`summarize`."""
    try:
        per_n = summary[model][metric]
    except KeyError:
        raise KeyError(f"no {metric!r} for model {model!r} in the planted summary") from None
    counts = sorted(per_n, key=int)
    return (
        np.array([int(n) for n in counts]),
        np.array([per_n[n]["mean"] for n in counts]),
        np.array([per_n[n]["std"] for n in counts]),
    )
