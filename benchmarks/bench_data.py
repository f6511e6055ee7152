"""Rendering speed of the Shapes data: images per second for 50,000 canonical 32x32 images.

Run: ``.venv/bin/python benchmarks/bench_data.py [--n 50000] [--threads 1] [--repeats 3]``.
Not a test: it prints numbers and checks nothing.
"""

from __future__ import annotations

import argparse
import time

import torch

from equisae.data import ShapesConfig, equivariance_error, make_shapes, standard_config


def _time(n: int, cfg: ShapesConfig, repeats: int) -> float:
    best = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        make_shapes(n, cfg, seed=r)
        best = min(best, time.perf_counter() - start)
    return best


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
        seconds = _time(args.n, cfg, args.repeats)
        print(f"{label:24s} {seconds:7.2f} s   {args.n / seconds:10.0f} images/s")
    ds = make_shapes(1000, standard_config(), seed=0)
    print(f"max |render(g f) - g render(f)| over 1000 images, D4: {equivariance_error(ds, 'D4')}")


if __name__ == "__main__":
    main()
