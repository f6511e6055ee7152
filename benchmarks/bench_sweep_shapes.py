"""Cost of one SAE training step at the sweeps' real shapes, against the floor of its GEMMs.

Per SAE type of the sweeps (TopK, wide, crosscoder, equivariant, adaptive) at d_in 64,
d_sae 256 (the wide SAE: 4 x 256 latents), k 8, 256 activations per step (orbit SAEs: 64
orbits of 4 poses), stacks of S = 1, 3, 9 SAEs trained by
:func:`equisae.sweeps.saes.train_sweep_saes`, that is ``train_many`` exactly as the sweep jobs
call it (same configs, same batch rule, same dead-latent rule). Reported per cell:

* ``ms_per_sae_step``: CPU time of this thread per SAE-step, from two runs of ``--steps`` and
  ``--short`` steps (their difference, so the one-off set-up cancels) divided by the extra
  steps x S; ``wall_ms_per_sae_step``: the long run's loop wall time (``TrainResult.seconds``)
  per SAE-step;
* ``floor_ms``: CPU time of the five dense products of one SAE's forward and backward pass at
  that SAE's shapes (encoder ``x W_enc``, its weight gradient ``x^T G``, decoder ``Z W_dec``,
  its weight gradient ``Z^T E``, the input gradient ``E W_dec^T``), in the same process;
* ``ratio``: ``ms_per_sae_step / floor_ms`` (both CPU time: on a machine shared with other
  work, time spent waiting for a core is not counted; wall-clock figures are kept beside).

Everything runs on one thread. Each cell is measured ``--repeats`` times (default 3) and the
median is reported, with the load average of the machine before and after (the numbers are
only comparable within one report). Results go to ``benchmarks/out/sweep_shapes.{json,md}``;
``--publish`` also writes the Markdown table to ``benchmarks/results/sweep_shapes.md``.
``--profile VARIANT`` instead runs cProfile over a short stacked run (S = 3) and prints the
top entries (written to ``benchmarks/out/profile_<variant>.txt``).

Run: ``.venv/bin/python benchmarks/bench_sweep_shapes.py [--steps 300] [--publish]``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime
import io as stdio
import os
import platform
import pstats
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from equisae.io import write_json_atomic
from equisae.sae.factory import build_sae, sae_class
from equisae.sweeps.saes import train_sweep_saes
from equisae.sweeps.settings import SAETraining

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RESULTS = HERE / "results"
D_IN = 64
GROUP_ORDER = 4
N_ORBITS = 2048
K = 8
VARIANTS: tuple[str, ...] = ("topk", "wide", "crosscoder", "equivariant", "adaptive")
STACKS: tuple[int, ...] = (1, 3, 9)


def quarter_turn(d: int) -> torch.Tensor:
    """A (d, d) orthogonal matrix of order 4: d/2 planar rotations by 90 degrees."""
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    return torch.block_diag(*[rot] * (d // 2))


def orbit_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Orbit activations (N, 4, d) ``h_p = M^p h_0`` of sparse canonical codes, and ``M``."""
    gen = torch.Generator().manual_seed(seed)
    M = quarter_turn(D_IN)
    feats = torch.randn(4 * D_IN, D_IN, generator=gen)
    feats /= feats.norm(dim=1, keepdim=True)
    idx = torch.rand(N_ORBITS, feats.shape[0], generator=gen).topk(K, dim=1).indices
    vals = torch.rand(N_ORBITS, K, generator=gen) + 0.5
    h0 = torch.einsum("nk,nkd->nd", vals, feats[idx]) + 0.05 * torch.randn(
        N_ORBITS, D_IN, generator=gen
    )
    poses = [h0]
    for _ in range(GROUP_ORDER - 1):
        poses.append(poses[-1] @ M.T)
    return torch.stack(poses, dim=1), M


def timeit(fn: Callable[[], Any], reps: int, warmup: int = 5, block: int = 20) -> float:
    """Median thread CPU time (s) of one call of ``fn``: ``reps`` blocks of ``block`` calls
    after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.thread_time()
        for _ in range(block):
            fn()
        times.append((time.thread_time() - start) / block)
    return statistics.median(times)


def step_shapes(variant: str, training: SAETraining) -> dict[str, int]:
    """Rows the encoder sees per step, d_in, d_sae and decoder width of one SAE of ``variant``."""
    sae = build_sae(variant, D_IN, training.d_sae(D_IN), K, seed=0, M=_rep_for(variant))
    orbits = bool(getattr(type(sae), "takes_orbits", False))
    crosscoder = variant == "crosscoder"
    rows = training.batch_size // GROUP_ORDER if crosscoder else training.batch_size
    d_out = GROUP_ORDER * D_IN if crosscoder else D_IN
    return {"rows": rows, "d_in": D_IN, "d_sae": sae.d_sae, "d_out": d_out, "orbits": orbits}


def _rep_for(variant: str) -> torch.Tensor | None:
    cls = sae_class(variant)
    return quarter_turn(D_IN) if getattr(cls, "is_equivariant", False) else None


def gemm_floor(shapes: dict[str, int], reps: int) -> float:
    """Median time (s) of the five dense products of one SAE step at ``shapes``."""
    gen = torch.Generator().manual_seed(0)
    n, d, f, d_out = shapes["rows"], shapes["d_in"], shapes["d_sae"], shapes["d_out"]
    x = torch.randn(n, d, generator=gen)
    w_enc = torch.randn(d, f, generator=gen)
    w_dec = torch.randn(f, d_out, generator=gen)
    z = torch.zeros(n, f).scatter(1, torch.rand(n, f, generator=gen).topk(K, 1).indices, 1.0)
    g = torch.randn(n, f, generator=gen)
    e = torch.randn(n, d_out, generator=gen)
    return timeit(lambda: (x @ w_enc, x.T @ g, z @ w_dec, z.T @ e, e @ w_dec.T), reps)


def step_time(
    variant: str, s: int, training: SAETraining, acts: torch.Tensor, short: int
) -> tuple[float, float]:
    """(CPU, wall) seconds per SAE-step of ``s`` stacked SAEs of ``variant`` trained as the
    sweeps do: CPU time from the difference of a run of ``training.n_steps`` and one of
    ``short`` steps, wall time from the long run's training loop."""
    M = _rep_for(variant)
    cpu = []
    for n in (short, training.n_steps):
        start = time.thread_time()
        cfg = dataclasses.replace(training, n_steps=n)
        _, results = train_sweep_saes(variant, acts, K, tuple(range(s)), cfg, M=M)
        cpu.append(time.thread_time() - start)
    extra = (training.n_steps - short) * s
    return (cpu[1] - cpu[0]) / extra, results[0].seconds / (training.n_steps * s)


def run(
    steps: int, short: int, repeats: int, floor_reps: int, variants: tuple[str, ...]
) -> dict[str, Any]:
    """Every (variant, S) cell: medians over ``repeats`` of step time, floor and their ratio."""
    torch.set_num_threads(1)
    training = SAETraining(n_steps=steps)
    acts, _ = orbit_data()
    load_before = os.getloadavg()
    rows = []
    for variant in variants:
        shapes = step_shapes(variant, training)
        # one untimed short run first: lazy initialisation must not land in the S = 1 cell
        step_time(variant, 2, SAETraining(n_steps=20), acts, 10)
        for s in STACKS:
            cpu_s, wall_s, floors = [], [], []
            for _ in range(repeats):
                floors.append(gemm_floor(shapes, floor_reps))
                cpu, wall = step_time(variant, s, training, acts, short)
                cpu_s.append(cpu)
                wall_s.append(wall)
            ms, floor_ms = statistics.median(cpu_s) * 1e3, statistics.median(floors) * 1e3
            row = {
                "variant": variant,
                "S": s,
                **shapes,
                "ms_per_sae_step": ms,
                "ms_per_sae_step_all": [t * 1e3 for t in cpu_s],
                "wall_ms_per_sae_step": statistics.median(wall_s) * 1e3,
                "floor_ms": floor_ms,
                "ratio": ms / floor_ms,
            }
            rows.append(row)
            print(
                f"{variant:12s} S={s}: {ms:6.2f} ms/SAE-step, floor {floor_ms:.3f} ms, "
                f"{ms / floor_ms:5.1f}x",
                flush=True,
            )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "threads": torch.get_num_threads(),
        "steps": steps,
        "short_steps": short,
        "repeats": repeats,
        "k": K,
        "batch_size": training.batch_size,
        "rows": rows,
    }


def machine() -> str:
    """A one-line description of this machine: processor, cores, OS, torch."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown page: the setting, then one row per (SAE type, S)."""
    lb = ", ".join(f"{x:.2f}" for x in report["load_average_before"])
    la = ", ".join(f"{x:.2f}" for x in report["load_average_after"])
    lines = [
        "# SAE step cost at the sweeps' shapes",
        "",
        f"Measured {report['date']} on {report['machine']}; one thread; "
        f"runs of {report['steps']} and {report['short_steps']} steps (their difference), "
        f"median of {report['repeats']} per cell, thread CPU time; "
        f"k = {report['k']}, {report['batch_size']} activations per step (orbit SAEs: "
        f"{report['batch_size'] // GROUP_ORDER} orbits of {GROUP_ORDER}). Load average "
        f"(1, 5, 15 min) before: {lb}; after: {la}. Produced by "
        "`benchmarks/bench_sweep_shapes.py`.",
        "",
        "| SAE | d_sae | S stacked | ms per SAE-step (CPU) | floor of its five GEMMs (ms, CPU) "
        "| ratio | ms per SAE-step (wall) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['variant']} | {r['d_sae']} | {r['S']} | {r['ms_per_sae_step']:.2f} | "
            f"{r['floor_ms']:.3f} | {r['ratio']:.1f}x | {r['wall_ms_per_sae_step']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def profile(variant: str, steps: int, top: int = 25) -> str:
    """cProfile of a short stacked run (S = 3) of ``variant``: the top entries by own time."""
    torch.set_num_threads(1)
    training = SAETraining(n_steps=steps)
    acts, _ = orbit_data()
    # a short run first: one-off imports and lazy initialisation stay out of the profile
    train_sweep_saes(variant, acts, K, (0, 1, 2), SAETraining(n_steps=5), M=_rep_for(variant))
    prof = cProfile.Profile()
    prof.enable()
    train_sweep_saes(variant, acts, K, (0, 1, 2), training, M=_rep_for(variant))
    prof.disable()
    buf = stdio.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    parser.add_argument("--short", type=int, default=50, help="steps of the set-up run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell (median)")
    parser.add_argument("--floor-reps", type=int, default=30, help="timed blocks of the GEMMs")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated types")
    parser.add_argument("--publish", action="store_true", help="also write benchmarks/results/")
    parser.add_argument("--profile", metavar="VARIANT", help="profile one type instead")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.profile:
        text = profile(args.profile, args.steps)
        (OUT / f"profile_{args.profile}.txt").write_text(text)
        print(text)
        return
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    if not 0 < args.short < args.steps:
        parser.error(f"--short must be in 1..--steps-1, got {args.short}")
    report = run(args.steps, args.short, args.repeats, args.floor_reps, variants)
    write_json_atomic(OUT / "sweep_shapes.json", report)
    text = markdown(report)
    (OUT / "sweep_shapes.md").write_text(text)
    if args.publish:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "sweep_shapes.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
