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
from equisae.sae import TopKSAE, TrainConfig, minibatches, train_sae

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


def equisae_step_time(
    d: int, d_sae: int, sparse: bool, batch: torch.Tensor, reps: int, warmup: int = 1
) -> float:
    """Median time of one full optimisation step, mirroring ``train_sae``'s inner loop."""
    sae = TopKSAE(d, d_sae, K, sparse_training=sparse)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)

    def step() -> None:
        out = sae.loss(batch)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        sae.remove_parallel_grads()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        sae.normalize_decoder()
        z = out.latents.reshape(-1, d_sae)
        (z != 0).any(0)

    return timeit(step, reps, warmup)


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
    parser.add_argument("--quick", action="store_true", help="only d=128, fewer repetitions")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fvu-steps", type=int, default=100)
    parser.add_argument("--out", type=str, default=None, help="write the figures to this JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {args.threads} threads, load average {load}")
    configs = [(128, 8), (128, 32)] if args.quick else [(128, 8), (128, 32), (1024, 8), (1024, 32)]
    ocs = import_overcomplete_sae()
    if ocs is None:
        print("[skip] overcomplete not importable: no comparison with a public implementation")
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": args.threads,
        "load_average_start": load,
        "batch": BATCH,
        "k": K,
        "configs": [],
    }
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
    report["load_average_end"] = os.getloadavg()
    if args.out:
        write_json_atomic(args.out, report)
    return report


if __name__ == "__main__":
    main()
