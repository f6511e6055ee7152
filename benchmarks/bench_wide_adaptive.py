"""Cost per training step of the adaptive equivariant SAE on a wide layer, against TopK.

The adaptive SAE multiplies by its (d, d) matrix M for every pose, so its step grows as d^2
while TopK's grows as d. The script times both on synthetic C4 orbits of dimension ``--dim``
(an r-dimensional rotation-equivariant signal plus a little noise in every dimension), in the
raw activations and in the r-dimensional principal basis that ``equisae.study`` uses for
layers wider than ``equisae.study.REDUCED_BASIS_ABOVE`` (``basis="auto"``).

Run: ``.venv/bin/python benchmarks/bench_wide_adaptive.py [--dim 2048] [--rank 256] [--steps 20]``
(one torch thread).
"""

from __future__ import annotations

import argparse

import torch

from equisae.sweeps.saes import train_sweep_saes
from equisae.sweeps.settings import SAETraining


def orbits(n: int, d: int, r: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """C4 orbits (n, 4, d) in an r-dim subspace (basis (d, r)) plus noise 0.01."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, r, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(d, r, generator=gen))
    poses = [torch.roll(base, p * r // 4, dims=1) @ q.T for p in range(4)]
    return torch.stack(poses, 1) + 0.01 * torch.randn(n, 4, d, generator=gen), q


def seconds_per_step(variant: str, acts: torch.Tensor, steps: int) -> float:
    training = SAETraining(n_steps=steps, batch_size=256, expansion=4, max_d_sae=256)
    M = torch.eye(acts.shape[-1])
    _, (result,) = train_sweep_saes(variant, acts, 8, (0,), training, M=M)
    return result.seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    acts, basis = orbits(1200, args.dim, args.rank)
    for label, data in (("raw", acts), ("reduced basis", acts @ basis)):
        for variant in ("topk", "adaptive"):
            cost = seconds_per_step(variant, data, args.steps)
            print(f"d={data.shape[-1]:5d} ({label}): {variant:8s} {cost:.3f} s/step")


if __name__ == "__main__":
    main()
