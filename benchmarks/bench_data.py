"""Rendering speed of the Shapes data: images per second for 50,000 canonical 32x32 images.

Run: ``.venv/bin/python benchmarks/bench_data.py [--n 50000] [--threads 1] [--repeats 3]``.
Not a test: it prints numbers and checks nothing.
"""

from __future__ import annotations

import argparse
import time

import torch

from equisae.data import ShapesConfig, equivariance_error, make_shapes, standard_config


def _time(n: int, cfg: ShapesConfig, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU (process) seconds over ``repeats`` runs."""
    best_wall = best_cpu = float("inf")
    for r in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        make_shapes(n, cfg, seed=r)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu


def main() -> None:
    """Print images/second for the standard config and a plain (no cue, no noise) one."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000, help="images per run")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = {"standard (cue + noise)": standard_config(), "plain": ShapesConfig()}
    print(f"torch {torch.__version__}, {args.threads} thread(s), n = {args.n}")
    for label, cfg in configs.items():
        wall, cpu = _time(args.n, cfg, args.repeats)
        print(
            f"{label:24s} wall {wall:6.2f} s ({args.n / wall:8.0f} images/s)   "
            f"cpu {cpu:6.2f} s ({args.n / cpu:8.0f} images/s)"
        )
    ds = make_shapes(1000, standard_config(), seed=0)
    print(f"max |render(g f) - g render(f)| over 1000 images, D4: {equivariance_error(ds, 'D4')}")


if __name__ == "__main__":
    main()
