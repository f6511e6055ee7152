"""Training throughput of the TopK SAE against the matrix-product floor and a public baseline.

For each (d_in, expansion) the script measures, in one process and on the same data:

* the bare dense matrix products a dense TopK step cannot avoid: encoder forward
  ``x W_enc``, encoder weight gradient ``x^T G``, decoder forward ``Z W_dec``, decoder weight
  gradient ``Z^T E`` and decoder input gradient ``E W_dec^T`` (the "GEMM floor");
* one full optimisation step of ``equisae`` (loss, backward, parallel-gradient removal,
  clipping, Adam, decoder renormalisation) on the sparse path and on the dense path;
* end-to-end ``train_sae`` throughput (activations per second);
* if the ``overcomplete`` package is importable, its ``TopKSAE`` trained with its own
  ``train_sae`` on the same batches (throughput), and a short FVU comparison at equal k,
  steps, batch size and learning rate.

Run: ``.venv/bin/python benchmarks/bench_sae.py [--quick] [--out results.json]``.
``overcomplete`` pulls torchvision through its top-level ``__init__``; this script imports
only its ``overcomplete.sae`` subpackage (which needs ``einops``), so a side environment with
``pip install --no-deps overcomplete einops`` on top of this project's torch is enough.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import torch

from equisae.io import write_json_atomic
from equisae.metrics import fvu
from equisae.sae import (
    AdaptiveCanonicalSAE,
    AdaptiveEquivariantSAE,
    CanonicalEquivariantSAE,
    EquivariantSAE,
    TopKSAE,
    TrainConfig,
    minibatches,
    train_sae,
)
from equisae.sae.batched import can_stack, train_many
from equisae.sae.optim import SAEOptimiser
from equisae.sae.train import _OwnWeights, _step_rows

BATCH = 4096
K = 32


def timeit(fn: Callable[[], Any], reps: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def planted_data(d: int, n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Sparse sums of 4 d unit features (k of them active per row) plus small noise."""
    gen = torch.Generator().manual_seed(seed)
    n_features = 4 * d
    feats = torch.randn(n_features, d, generator=gen)
    feats /= feats.norm(dim=1, keepdim=True)
    out = torch.empty(n, d)
    for start in range(0, n, 4096):
        m = min(4096, n - start)
        idx = torch.rand(m, n_features, generator=gen).topk(k, dim=1).indices
        vals = torch.rand(m, k, generator=gen) + 0.5
        out[start : start + m] = torch.einsum("mk,mkd->md", vals, feats[idx])
    return out + 0.05 * torch.randn(n, d, generator=gen)


def gemm_floor(d: int, d_sae: int, reps: int, warmup: int = 1) -> dict[str, float]:
    """Median times of the five dense products of a dense TopK step (seconds)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, d, generator=gen)
    w_enc = torch.randn(d, d_sae, generator=gen)
    w_dec = torch.randn(d_sae, d, generator=gen)
    z = torch.zeros(BATCH, d_sae).scatter(
        1, torch.rand(BATCH, d_sae, generator=gen).topk(K, 1).indices, 1.0
    )
    e = torch.randn(BATCH, d, generator=gen)
    times = {
        "enc_fwd": timeit(lambda: x @ w_enc, reps, warmup),
        "enc_wgrad": timeit(lambda: x.T @ z, reps, warmup),
        "dec_fwd": timeit(lambda: z @ w_dec, reps, warmup),
        "dec_wgrad": timeit(lambda: z.T @ e, reps, warmup),
        "dec_xgrad": timeit(lambda: e @ w_dec.T, reps, warmup),
    }
    times["total"] = sum(times.values())
    return times


def _floor_fn(d: int, d_sae: int) -> Callable[[], Any]:
    """The five dense products of a dense TopK step (see :func:`gemm_floor`), as one call."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, d, generator=gen)
    w_enc = torch.randn(d, d_sae, generator=gen)
    w_dec = torch.randn(d_sae, d, generator=gen)
    z = torch.zeros(BATCH, d_sae).scatter(
        1, torch.rand(BATCH, d_sae, generator=gen).topk(K, 1).indices, 1.0
    )
    e = torch.randn(BATCH, d, generator=gen)
    return lambda: (x @ w_enc, x.T @ z, z @ w_dec, z.T @ e, e @ w_dec.T)


def _equisae_step_fn(
    d: int, d_sae: int, sparse: bool, batch: torch.Tensor, dead_fraction: float = 0.0
) -> Callable[[], None]:
    """One ``train_sae`` step: loss, backward, the update (parallel-gradient removal, clipping,
    Adam, decoder renormalisation) and the metric row with its fired-latent bookkeeping.

    ``dead_fraction`` of the latents are marked dead, so AuxK runs as in training.
    """
    sae = TopKSAE(d, d_sae, K, sparse_training=sparse)
    own = _OwnWeights(sae)
    opt = SAEOptimiser(
        own.trained, stacked=False, model=sae, grad_clips=[1.0], betas=[(0.9, 0.999)]
    )
    n_dead = int(round(dead_fraction * d_sae))
    dead = (torch.arange(d_sae) >= d_sae - n_dead)[None] if n_dead else None
    has_dead = torch.tensor([dead is not None])
    since_fired = torch.zeros(1, d_sae, dtype=torch.long)
    lr = torch.tensor([1e-4], dtype=torch.float64)
    scale = torch.ones(1, dtype=torch.float64)
    stacked = batch[None]

    def step() -> None:
        out = own.loss(stacked, dead)
        opt.zero_grad()
        out.total.sum().backward()
        opt.remove_parallel_grads()
        opt.clip_grads(0)
        opt.adam(lr)
        opt.normalize_decoder()
        _step_rows(out, has_dead, scale, since_fired, d)

    return step


def equisae_step_time(
    d: int,
    d_sae: int,
    sparse: bool,
    batch: torch.Tensor,
    reps: int,
    warmup: int = 1,
    dead_fraction: float = 0.0,
) -> float:
    """Median time of one ``train_sae`` step (see :func:`_equisae_step_fn`)."""
    return timeit(_equisae_step_fn(d, d_sae, sparse, batch, dead_fraction), reps, warmup)


def _overcomplete_step_fn(
    ocs: types.ModuleType, d: int, d_sae: int, batch: torch.Tensor
) -> Callable[[], None]:
    """One step of overcomplete's TopKSAE (loss, backward, clip, Adam)."""
    torch.manual_seed(0)
    model = ocs.TopKSAE(d, nb_concepts=d_sae, top_k=K, device="cpu")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        _, _, x_hat = model(batch)
        (batch - x_hat).pow(2).mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def interleaved(
    fns: dict[str, Callable[[], Any]], reps: int, warmup: bool = True
) -> dict[str, float]:
    """Median times of several functions timed in turn, round after round (one warm-up each
    unless ``warmup`` is False).

    Interleaving makes the ratios robust to the machine's load drifting during the run.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values() if warmup else ():
        fn()
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def step_vs_floor(
    ocs: types.ModuleType | None, threads: list[int], reps: int, dead_fraction: float
) -> list[dict[str, Any]]:
    """TopK step / GEMM floor at d 128, d_sae 1024 with dead latents, per thread count."""
    d, d_sae = 128, 1024
    batch = planted_data(d, BATCH, K)
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        fns = {
            "floor": _floor_fn(d, d_sae),
            "step": _equisae_step_fn(d, d_sae, True, batch, dead_fraction),
            "step_no_dead": _equisae_step_fn(d, d_sae, True, batch, 0.0),
        }
        if ocs is not None:
            fns["overcomplete"] = _overcomplete_step_fn(ocs, d, d_sae, batch)
        t = interleaved(fns, reps)
        floor, step = t["floor"], t["step"]
        row: dict[str, Any] = {
            "threads": n_threads,
            "d_in": d,
            "d_sae": d_sae,
            "dead_fraction": dead_fraction,
            "gemm_floor_s": floor,
            "step_s": step,
            "step_over_floor": step / floor,
            "step_no_dead_over_floor": t["step_no_dead"] / floor,
        }
        text = (
            f"[step] {n_threads} thread(s): floor {floor * 1e3:.1f} ms, step "
            f"({dead_fraction:.0%} dead) {step * 1e3:.1f} ms -> step/floor {step / floor:.2f} "
            f"(no dead: {t['step_no_dead'] / floor:.2f})"
        )
        if ocs is not None:
            oc = t["overcomplete"]
            row["overcomplete_step_s"] = oc
            row["overcomplete_over_equisae"] = oc / step
            text += f" | overcomplete step {oc * 1e3:.1f} ms ({oc / step:.2f}x ours)"
        print(text, flush=True)
        rows.append(row)
    return rows


#: SAE classes of the batched benchmark (the sweeps' types that train_many stacks)
BATCHED_KINDS: dict[str, Any] = {
    "topk": TopKSAE,
    "equivariant": EquivariantSAE,
    "adaptive": AdaptiveEquivariantSAE,
    "equivariant_canonical": CanonicalEquivariantSAE,
    "adaptive_canonical": AdaptiveCanonicalSAE,
}


def _quarter_turn(d: int) -> torch.Tensor:
    """A (d, d) representation of C4: 2x2 blocks of the quarter turn (d even)."""
    block = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    return torch.block_diag(*[block] * (d // 2))


def _batched_setup(kind: str, d: int, batch: int, k: int) -> tuple[Any, torch.Tensor, int]:
    """(SAE factory, training tensor, rows per step) for one kind at sweep sizes.

    Equivariant kinds train on C4 orbits ``M^p h`` of the planted data, ``batch // 4`` orbits
    per step (the sweeps' ``orbit_training_data``), with ``M`` the quarter turn (the fixed
    models' representation; the adaptive ones start from it too).
    """
    cls = BATCHED_KINDS[kind]
    data = planted_data(d, 16 * batch, k)
    if not cls.takes_orbits:
        return lambda seed: cls(d, 256, k, seed=seed), data, batch
    M = _quarter_turn(d)
    powers = torch.stack([torch.linalg.matrix_power(M, p) for p in range(4)])
    orbits = torch.einsum("pij,nj->npi", powers, data[: 4 * batch])
    return lambda seed: cls(d, 256, k, group="C4", M=M, seed=seed), orbits, batch // 4


def _time_batched(
    make: Callable[[int], Any], data: torch.Tensor, rows: int, cfg: TrainConfig, s: int, reps: int
) -> dict[str, float]:
    """Interleaved times of training ``s`` SAEs one by one and with ``train_many``."""
    seeds = list(range(s))
    n_steps = cfg.n_steps or 1

    def sequential() -> None:
        for seed in seeds:
            train_sae(make(seed), minibatches(data, rows, n_steps, seed=seed), cfg, progress=False)

    def batched() -> None:
        train_many([make(seed) for seed in seeds], data, cfg, batch_size=rows, seeds=seeds)

    return interleaved({"sequential": sequential, "batched": batched}, reps, warmup=False)


def batched_vs_sequential(
    sizes: list[int], n_steps: int, reps: int = 3, kinds: tuple[str, ...] = ("topk",)
) -> list[dict[str, Any]]:
    """SAEs per second: ``train_many`` vs ``train_sae`` one by one (d 64, d_sae 256, batch 256
    activations: 64 orbits x 4 poses for the equivariant kinds), per kind and number of SAEs."""
    d, batch, k = 64, 256, 8
    cfg = TrainConfig(n_steps=n_steps, warmup_steps=10, dead_after=4 * batch)
    rows = []
    for kind in kinds:
        make, data, rows_per_step = _batched_setup(kind, d, batch, k)
        stacked = can_stack([make(0), make(1)])
        for s in sizes:
            t = _time_batched(make, data, rows_per_step, cfg, s, reps)
            t_seq, t_bat = t["sequential"], t["batched"]
            row = {
                "kind": kind,
                "stacked": stacked,
                "n_saes": s,
                "n_steps": n_steps,
                "sequential_saes_per_s": s / t_seq,
                "batched_saes_per_s": s / t_bat,
                "speedup": t_seq / t_bat,
            }
            print(
                f"[batched] {kind:22s} S={s:3d}, {n_steps} steps: one by one "
                f"{s / t_seq:.3f} SAEs/s, batched {s / t_bat:.3f} SAEs/s -> x{t_seq / t_bat:.2f}",
                flush=True,
            )
            rows.append(row)
    return rows


def import_overcomplete_sae() -> types.ModuleType | None:
    """``overcomplete.sae`` without the package ``__init__`` (which needs torchvision)."""
    spec = importlib.util.find_spec("overcomplete")
    if spec is None or not spec.submodule_search_locations:
        return None
    if "overcomplete" not in sys.modules:
        pkg = types.ModuleType("overcomplete")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["overcomplete"] = pkg
    try:
        import overcomplete.sae as ocs  # noqa: PLC0415
    except ImportError as exc:
        print(f"[skip] overcomplete is installed but overcomplete.sae does not import: {exc}")
        return None
    return ocs


def overcomplete_train(
    ocs: types.ModuleType, d: int, d_sae: int, batches: list[torch.Tensor], lr: float
) -> tuple[Any, float]:
    """Train overcomplete's TopKSAE with its own trainer; returns (model, seconds)."""
    torch.manual_seed(0)
    model = ocs.TopKSAE(d, nb_concepts=d_sae, top_k=K, device="cpu")
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def criterion(x, x_hat, pre_codes, codes, dictionary):  # noqa: ANN001
        return (x - x_hat).pow(2).mean()

    start = time.perf_counter()
    ocs.train_sae(model, batches, criterion, opt, nb_epochs=1, clip_grad=1.0, monitoring=0)
    return model.eval(), time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and sizes")
    parser.add_argument("--threads", type=int, default=2, help="threads of --throughput")
    parser.add_argument("--throughput", action="store_true", help="also the d/expansion grid")
    parser.add_argument("--dead-fraction", type=float, default=0.1)
    parser.add_argument("--batched-steps", type=int, default=200)
    parser.add_argument(
        "--batched-only", action="store_true", help="only batched vs one by one, every kind"
    )
    parser.add_argument(
        "--batched-sizes", type=int, nargs="+", default=None, help="numbers of SAEs (3 6)"
    )
    parser.add_argument(
        "--batched-kinds", nargs="+", choices=sorted(BATCHED_KINDS), default=list(BATCHED_KINDS)
    )
    parser.add_argument("--fvu-steps", type=int, default=100)
    parser.add_argument("--out", type=str, default=None, help="write the figures to this JSON")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, load average {load}")
    ocs = import_overcomplete_sae()
    if ocs is None:
        print(
            "[skip] overcomplete not importable (pip install --no-deps overcomplete einops): "
            "no comparison with a public implementation"
        )
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "load_average_start": load,
        "batch": BATCH,
        "k": K,
    }
    reps = 5 if args.quick else 9
    if not args.batched_only:
        report["step_vs_floor"] = step_vs_floor(ocs, [1, 2], reps, args.dead_fraction)
    torch.set_num_threads(1)
    report["batched"] = batched_vs_sequential(
        args.batched_sizes or [3, 6],
        args.batched_steps,
        1 if args.quick else 3,
        tuple(args.batched_kinds),
    )
    if args.throughput:
        throughput(args, ocs, report)
    report["load_average_end"] = os.getloadavg()
    if args.out:
        write_json_atomic(args.out, report)
    return report


def throughput(args: argparse.Namespace, ocs: types.ModuleType | None, report: dict) -> None:
    """Step/floor over a (d, expansion) grid, ``train_sae`` throughput, FVU vs overcomplete."""
    torch.set_num_threads(args.threads)
    report["threads"] = args.threads
    report["configs"] = []
    configs = [(128, 8), (128, 32)] if args.quick else [(128, 8), (128, 32), (1024, 8), (1024, 32)]
    for d, expansion in configs:
        d_sae = d * expansion
        big = d * d_sae >= 1024 * 8192
        reps = 1 if big else (3 if args.quick else 5)
        warmup = 0 if big else 1  # a d=1024 product is long enough to time without warm-up
        data = planted_data(d, BATCH * (reps + 2), K)
        batch = data[:BATCH]
        row: dict[str, Any] = {"d_in": d, "expansion": expansion, "d_sae": d_sae}
        floor = gemm_floor(d, d_sae, reps, warmup)
        row["gemm_floor_s"] = floor
        row["sparse_step_s"] = equisae_step_time(d, d_sae, True, batch, reps + 1 - warmup)
        row["dense_step_s"] = equisae_step_time(d, d_sae, False, batch, reps, warmup)
        best = min(row["sparse_step_s"], row["dense_step_s"])
        row["best_path"] = "sparse" if row["sparse_step_s"] <= row["dense_step_s"] else "dense"
        row["ratio_best_step_to_floor"] = best / floor["total"]
        row["ratio_dense_step_to_floor"] = row["dense_step_s"] / floor["total"]
        n_steps = reps + 2
        sae = TopKSAE(d, d_sae, K)
        cfg = TrainConfig(n_steps=n_steps, warmup_steps=1, log_every=n_steps)
        result = train_sae(sae, minibatches(data, BATCH, n_steps), cfg, progress=False)
        row["train_sae_acts_per_s"] = BATCH * n_steps / result.seconds
        if ocs is not None:
            batches = [data[i * BATCH : (i + 1) * BATCH] for i in range(n_steps)]
            _, seconds = overcomplete_train(ocs, d, d_sae, batches, 1e-4)
            row["overcomplete_acts_per_s"] = BATCH * n_steps / seconds
            row["speedup_vs_overcomplete"] = (
                row["train_sae_acts_per_s"] / row["overcomplete_acts_per_s"]
            )
        print(
            f"d={d:5d} x{expansion:<3d} floor {floor['total']:.3f}s | step sparse "
            f"{row['sparse_step_s']:.3f}s dense {row['dense_step_s']:.3f}s | best/floor "
            f"{row['ratio_best_step_to_floor']:.2f} | train_sae {row['train_sae_acts_per_s']:.0f}"
            " acts/s"
            + (
                f" | overcomplete {row['overcomplete_acts_per_s']:.0f} acts/s "
                f"(x{row['speedup_vs_overcomplete']:.2f})"
                if ocs is not None
                else ""
            ),
            flush=True,
        )
        report["configs"].append(row)

    # reconstruction quality at equal k, steps, batch and learning rate
    d, expansion = 128, 8
    steps = args.fvu_steps
    data = planted_data(d, BATCH * 8, K, seed=1)
    held_out = planted_data(d, BATCH, K, seed=2)
    lr = 1e-3
    sae = TopKSAE(d, d * expansion, K)
    cfg = TrainConfig(n_steps=steps, lr=lr, warmup_steps=max(1, steps // 20), log_every=steps)
    result = train_sae(sae, minibatches(data, BATCH, steps, seed=0), cfg, progress=False)
    with torch.no_grad():
        quality = {"steps": steps, "lr": lr, "equisae_fvu": fvu(held_out, sae(held_out).recon)}
    quality["equisae_seconds"] = result.seconds
    if ocs is not None:
        batches = list(minibatches(data, BATCH, steps, seed=0))
        model, seconds = overcomplete_train(ocs, d, d * expansion, batches, lr)
        with torch.no_grad():
            quality["overcomplete_fvu"] = fvu(held_out, model(held_out)[2])
        quality["overcomplete_seconds"] = seconds
    print(f"FVU on held-out data, d=128 x8, k={K}, {steps} steps: {quality}")
    report["fvu_comparison"] = quality


if __name__ == "__main__":
    main()
