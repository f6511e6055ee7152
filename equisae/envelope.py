"""The reproduction envelope: how much each result moves when the numeric environment changes.

Quick mode trains one or two seeds for a few hundred steps; a different CPU (another BLAS
kernel, another vector width) rounds differently, TopK then selects other latents and the
runs drift apart. :func:`build_envelope_runs` measures that drift on this machine: it runs the
quick reproduction (``equisae reproduce --no-book``) once per entry of :data:`ENVIRONMENTS`,
each into its own results and artifacts folders (nothing is shared, the base models are
retrained), and :func:`envelope_from_runs` turns the runs into ``reference/<mode>/envelope.json``:
per numeric leaf the smallest and largest value seen (the reference included) and the
environment that gave each bound; per boolean or label leaf whether it changed across the runs
(leaves that no run moved are left out: the fixed rules judge them).
:mod:`equisae.check` judges a new run against that envelope.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from equisae.io import project_root, read_json, write_json_atomic

__all__ = [
    "EMULATED",
    "ENVIRONMENTS",
    "NUMERIC_ENV_VARS",
    "ENVELOPE_FILE",
    "build_envelope_runs",
    "environment_for",
    "main_envelope",
    "envelope_from_runs",
    "run_in_environment",
]

#: the variables that choose the numeric kernels (cleared for the native run)
NUMERIC_ENV_VARS: tuple[str, ...] = ("MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")

#: The numeric environments of the envelope, by name: the variables each one sets. On an
#: AVX-512 machine each changes the bits of a float32 matmul and of a short training run:
#: oneMKL limited to AVX2 kernels (BLAS: matmul, linear layers), PyTorch's own kernels
#: (convolutions, elementwise, reductions) without vector extensions, and both together.
ENVIRONMENTS: dict[str, dict[str, str]] = {
    "native": {},
    "mkl_avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "aten_default": {"ATEN_CPU_CAPABILITY": "default"},
    "mkl_avx2+aten_default": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "default"},
}

#: the environment that emulates a second machine in CI (it changes the numbers most)
EMULATED = "mkl_avx2+aten_default"

#: the spread of a kind of leaf: this quantile of the ranges of its leaves (zeros included)
FAMILY_QUANTILE = 0.95

#: the envelope's file name inside ``reference/<mode>/``
ENVELOPE_FILE = "envelope.json"


def environment_for(name: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment of the run ``name``: ``base`` (default ``os.environ``) without
    the numeric variables, plus the ones :data:`ENVIRONMENTS` gives ``name``."""
    if name not in ENVIRONMENTS:
        raise KeyError(f"unknown numeric environment {name!r}; known: {', '.join(ENVIRONMENTS)}")
    env = {k: v for k, v in (os.environ if base is None else base).items()}
    for var in NUMERIC_ENV_VARS:
        env.pop(var, None)
    env.update(ENVIRONMENTS[name])
    return env


def run_in_environment(mode: str, name: str, workdir: Path, stream: Any = None) -> Path:
    """Run ``equisae reproduce --mode MODE --no-book`` in the environment ``name`` with its own,
    emptied ``workdir/<name>/results`` and ``workdir/<name>/artifacts``; return its results
    folder."""
    out = stream if stream is not None else sys.stdout
    folder = Path(workdir).resolve() / name
    # a fresh start: cached models of an earlier run would skip this environment's training
    shutil.rmtree(folder, ignore_errors=True)
    env = environment_for(name)
    env["EQUISAE_RESULTS"] = str(folder / "results")
    env["EQUISAE_ARTIFACTS"] = str(folder / "artifacts")
    command = [sys.executable, "-m", "equisae.cli", "reproduce", "--mode", mode, "--no-book"]
    shown = " ".join(f"{k}={v}" for k, v in ENVIRONMENTS[name].items())
    print(f"[{name}] {shown or '(native kernels)'} {' '.join(command[1:])}", file=out, flush=True)
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, cwd=project_root())
    print(f"[{name}] done in {time.perf_counter() - start:.0f} s", file=out, flush=True)
    return folder / "results" / mode


def _complete(results: Path, reference: Path) -> bool:
    return results.is_dir() and all(
        (results / p.name).is_file() for p in reference.glob("*.json") if p.name != ENVELOPE_FILE
    )


def build_envelope_runs(
    mode: str,
    workdir: str | Path,
    reference: str | Path,
    names: Sequence[str] | None = None,
    reuse: bool = False,
    stream: Any = None,
) -> dict[str, Path]:
    """Run the reproduction once per environment (``names``, default all of
    :data:`ENVIRONMENTS`); with ``reuse``, a run whose results folder already holds every
    reference file is kept. Returns ``{environment: results folder}``."""
    names = list(ENVIRONMENTS) if names is None else list(names)
    for name in names:
        if name not in ENVIRONMENTS:
            known = ", ".join(ENVIRONMENTS)
            raise KeyError(f"--env: unknown numeric environment {name!r}; known: {known}")
    runs: dict[str, Path] = {}
    for name in names:
        results = Path(workdir) / name / "results" / mode
        if reuse and _complete(results, Path(reference)):
            runs[name] = results
            continue
        runs[name] = run_in_environment(mode, name, Path(workdir), stream)
    return runs


def envelope_from_runs(
    mode: str,
    reference: str | Path,
    runs: Mapping[str, str | Path],
    out: str | Path | None = None,
) -> dict[str, Any]:
    """The envelope of the reference ``reference`` (a ``reference/<mode>`` folder) from the
    results folders ``runs`` (``{environment: folder}``), written to ``out`` (default
    ``reference/<mode>/envelope.json``) and returned."""
    from equisae.check import collect_leaves

    reference = Path(reference)
    stems = sorted(p.stem for p in reference.glob("*.json") if p.name != ENVELOPE_FILE)
    if not stems:
        raise FileNotFoundError(f"no reference results (*.json) in {reference}")
    from equisae.check import leaf_family

    leaves: dict[str, Any] = {}
    kinds: dict[str, dict[str, Any]] = {}
    n_leaves = 0
    for stem in stems:
        ref_tree = read_json(reference / f"{stem}.json")
        per_env = {"reference": collect_leaves(stem, ref_tree, ref_tree)}
        for name, folder in runs.items():
            path = Path(folder) / f"{stem}.json"
            if not path.is_file():
                raise FileNotFoundError(f"run {name!r} has no {path.name} in {folder}")
            per_env[name] = collect_leaves(stem, ref_tree, read_json(path))
        for path in per_env["reference"]:
            n_leaves += 1
            entry = _leaf_envelope({n: values.get(path) for n, values in per_env.items()})
            if entry is not None:
                leaves[path] = entry
            kind = kinds.setdefault(
                leaf_family(path), {"ranges": [], "changed": set(), "counts": True}
            )
            reference_value = per_env["reference"][path]
            kind["counts"] &= isinstance(reference_value, int) and not isinstance(
                reference_value, bool
            )
            if isinstance(entry, list):
                kind["ranges"].append(entry[1] - entry[0])
            elif isinstance(entry, dict):
                kind["changed"].update(entry["changed_in"])
            elif isinstance(reference_value, (int, float)):
                kind["ranges"].append(0.0)
    envelope = {
        "mode": mode,
        "environments": {name: ENVIRONMENTS.get(name, {}) for name in runs},
        "n_leaves": n_leaves,
        "n_moved": len(leaves),
        "format": "numbers: [min, max, environment of min, environment of max]; booleans and "
        "labels: {values, unstable, changed_in}; leaves that did not move are left out; "
        "families: per kind of leaf (results file and last two named path components) the "
        "family_quantile of the ranges of its numbers and whether any of its booleans or "
        "labels changed",
        "family_quantile": FAMILY_QUANTILE,
        "families": {name: _family(kind) for name, kind in sorted(kinds.items())},
        "leaves": leaves,
    }
    target = Path(out) if out is not None else reference / ENVELOPE_FILE
    write_json_atomic(target, envelope)
    return envelope


def _leaf_envelope(values: Mapping[str, Any]) -> list[Any] | dict[str, Any] | None:
    """One leaf's envelope from ``{environment: value}`` (None where a run lacks the leaf):
    ``[min, max, environment of min, environment of max]`` for numbers, ``{values, unstable,
    changed_in}`` for anything else; None when every run gave the reference's value."""
    numbers = {
        n: float(v)
        for n, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if numbers and len(numbers) == len(values):
        lo = min(numbers, key=numbers.__getitem__)
        hi = max(numbers, key=numbers.__getitem__)
        return None if numbers[lo] == numbers[hi] else [numbers[lo], numbers[hi], lo, hi]
    reference = repr(values["reference"])
    changed = sorted(n for n, v in values.items() if repr(v) != reference)
    if not changed:
        return None
    return {
        "values": sorted({repr(v) for v in values.values()}),
        "unstable": True,
        "changed_in": changed,
    }


def main_envelope(
    mode: str,
    workdir: str | Path | None = None,
    names: Sequence[str] | None = None,
    reuse: bool = False,
    publish: bool = False,
    stream: Any = None,
) -> int:
    """``equisae envelope``: run every environment, optionally publish the native run as the
    reference, write ``reference/<mode>/envelope.json``; 0 on success."""
    from equisae.check import publish_reference, reference_dir

    out = stream if stream is not None else sys.stdout
    root = project_root()
    work = Path(workdir) if workdir is not None else root / "_build" / "envelope"
    reference = reference_dir(mode, root)
    if publish and names is not None and "native" not in names:
        raise ValueError("--publish publishes the native run: include --env native")
    start = time.perf_counter()
    runs = build_envelope_runs(mode, work, reference, names, reuse, out)
    if publish:
        publish_reference(mode, root, source=runs["native"])
        print(f"published the native run as the reference in {reference}", file=out)
    envelope = envelope_from_runs(mode, reference, runs)
    print(
        f"wrote {reference / ENVELOPE_FILE}: {envelope['n_moved']} of {envelope['n_leaves']} "
        f"leaves moved across {len(runs)} run(s) ({time.perf_counter() - start:.0f} s)",
        file=out,
    )
    return 0


def _family(kind: Mapping[str, Any]) -> dict[str, Any]:
    """The pooled envelope of one kind of leaf: the :data:`FAMILY_QUANTILE` of its leaves'
    ranges (for counts, such as how many seeds favour a variant, the largest range: a count
    that moved anywhere can move by as much elsewhere), and whether any of its booleans or
    labels changed (and where)."""
    import numpy as np

    ranges = kind["ranges"]
    if not ranges:
        spread = 0.0
    elif kind["counts"]:
        spread = float(max(ranges))
    else:
        spread = float(np.quantile(ranges, FAMILY_QUANTILE))
    changed = sorted(kind["changed"])
    return {"spread": spread, "n": len(ranges), "unstable": bool(changed), "changed_in": changed}
