"""Evaluation cost of the equivariant SAEs against TopK at the 512-wide intermediate layer.

Pose inference of an equivariant SAE needs every pose's reconstruction of every activation.
``equisae`` computes them with one GEMM per pose set against the cached stack of ``rho(g)``
(``EquivariantSAE.orbit_outputs``); the first release built a per-row (N, d, d) stack and took
about 720x TopK's time here. The script times ``evaluate_on_orbits`` (inferred and oracle pose,
all metrics) for TopK, the fixed-M and adaptive SAEs (raw encoder) and the canonicalising
variant on the same random orbit activations, and prints each time and its ratio to TopK.

Run: ``.venv/bin/python benchmarks/bench_equivariant.py [--d 512] [--orbits 500] [--out F]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from equisae.io import write_json_atomic
from equisae.sae.evaluate import evaluate_on_orbits
from equisae.sae.factory import build_sae


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--d-sae", type=int, default=1024)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--orbits", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(args.d, args.d, generator=gen, dtype=torch.float64))[0]
    blocks = torch.block_diag(
        *[torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)] * (args.d // 2)
    )
    M = (q @ blocks @ q.T).float()  # an exact, orthogonal representation of C4
    h0 = torch.randn(args.orbits, args.d, generator=gen)
    acts = torch.stack([h0 @ torch.linalg.matrix_power(M, p).T for p in range(4)], 1)
    results = {}
    for variant in ("topk", "equivariant", "adaptive", "equivariant_canonical"):
        rep = None if variant == "topk" else M  # TopK has no representation
        sae = build_sae(variant, args.d, args.d_sae, args.k, seed=0, M=rep)
        seconds = _time(lambda sae=sae: evaluate_on_orbits(sae, acts), args.repeats)
        results[variant] = seconds
    for variant, seconds in results.items():
        print(f"{variant:24s} {seconds:8.3f} s   {seconds / results['topk']:6.2f}x TopK")
    if args.out:
        write_json_atomic(args.out, {"args": vars(args), "seconds": results})


if __name__ == "__main__":
    main()
