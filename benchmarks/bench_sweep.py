"""Wall time of one quick sweep run serially and on a 2-worker Dask LocalCluster.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_sweep.py                 # the planted sweep if it exists
    .venv/bin/python benchmarks/bench_sweep.py --sweep synthetic --workers 2

Each run starts from an empty temporary artifacts folder, so nothing is cached, and the
parallel time includes starting and stopping the cluster. A third run repeats the sweep on
the parallel run's artifacts to time a fully cached sweep (no cluster is started). The figures
and the machine's load average go to ``benchmarks/out/bench_sweep.json``. The numbers depend
on the machine and on whatever else runs on it: compare them only within one report.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from equisae import io
from equisae.modes import MODES
from equisae.runner import Job, JobResult, SweepResult, run_sweep, sweep_summary


@dataclass(frozen=True)
class SyntheticActivations(Job):
    """Sparse sums of random unit features: the input of the synthetic SAE trainings."""

    kind: ClassVar[str] = "bench-activations"
    version: ClassVar[int] = 1
    n: int = 2048
    d: int = 64
    n_features: int = 128
    active: int = 4
    seed: int = 0

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        from safetensors.torch import save_file

        gen = torch.Generator().manual_seed(self.seed)
        features = torch.nn.functional.normalize(
            torch.randn(self.n_features, self.d, generator=gen), dim=1
        )
        idx = torch.rand(self.n, self.n_features, generator=gen).argsort(dim=1)[:, : self.active]
        coeff = torch.zeros(self.n, self.n_features).scatter_(
            1, idx, torch.rand(self.n, self.active, generator=gen) + 0.5
        )
        save_file(
            {"acts": coeff @ features, "features": features}, str(workdir / "acts.safetensors")
        )
        return {"n": self.n, "d": self.d}


@dataclass(frozen=True)
class SyntheticTopKSAE(Job):
    """A small TopK SAE trained with Adam on :class:`SyntheticActivations`."""

    kind: ClassVar[str] = "bench-topk-sae"
    version: ClassVar[int] = 1
    data: SyntheticActivations
    k: int = 4
    d_sae: int = 256
    steps: int = 300
    seed: int = 0

    def dependencies(self) -> tuple[Job, ...]:
        return (self.data,)

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(deps[0].file("acts.safetensors")))
        acts, features = tensors["acts"], tensors["features"]
        gen = torch.Generator().manual_seed(self.seed)
        w_dec = torch.nn.Parameter(torch.randn(self.d_sae, acts.shape[1], generator=gen) * 0.1)
        w_enc = torch.nn.Parameter(w_dec.detach().T.clone())
        b_dec = torch.nn.Parameter(acts.mean(0).clone())
        opt = torch.optim.Adam([w_enc, w_dec, b_dec], lr=3e-3)
        for _ in range(self.steps):
            batch = acts[torch.randint(0, acts.shape[0], (256,), generator=gen)]
            pre = (batch - b_dec) @ w_enc
            top = pre.topk(self.k, dim=1)
            z = torch.zeros_like(pre).scatter(1, top.indices, top.values.relu())
            loss = ((z @ w_dec + b_dec - batch) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                w_dec /= w_dec.norm(dim=1, keepdim=True)
        with torch.no_grad():
            pre = (acts - b_dec) @ w_enc
            top = pre.topk(self.k, dim=1)
            z = torch.zeros_like(pre).scatter(1, top.indices, top.values.relu())
            fvu = ((z @ w_dec + b_dec - acts) ** 2).sum() / ((acts - acts.mean(0)) ** 2).sum()
            recovery = (features @ w_dec.T).max(dim=1).values.mean()
        save_file(
            {
                "W_enc": w_enc.detach().contiguous(),
                "W_dec": w_dec.detach(),
                "b_dec": b_dec.detach(),
            },
            str(workdir / "sae_weights.safetensors"),
        )
        return {"fvu": fvu.item(), "recovery": recovery.item()}


def synthetic_sweep() -> list[Job]:
    """2 data sets x 3 values of k x 2 seeds = 12 SAE trainings (and 2 data jobs)."""
    return [
        SyntheticTopKSAE(SyntheticActivations(seed=data_seed), k=k, seed=seed)
        for data_seed in (0, 1)
        for k in (2, 4, 8)
        for seed in (0, 1)
    ]


def resolve_sweep(name: str) -> str:
    """``auto`` is the planted sweep when :mod:`equisae.sweeps` defines it, else synthetic."""
    from equisae.sweeps import SWEEPS

    if name == "auto":
        return "planted" if "planted" in SWEEPS else "synthetic"
    if name != "synthetic" and name not in SWEEPS:
        raise KeyError(f"unknown sweep {name!r}; known: synthetic, {', '.join(sorted(SWEEPS))}")
    return name


def build_jobs(name: str, mode: str) -> list[Job]:
    """The jobs of sweep ``name``: ``synthetic`` or a key of ``SWEEPS``."""
    from equisae.sweeps import sweep_jobs

    if name == "synthetic":
        return synthetic_sweep()
    return list(sweep_jobs(name, mode))


def _timed(jobs: list[Job], scheduler: str | None, artifacts: Path, workers: int) -> SweepResult:
    return run_sweep(jobs, scheduler=scheduler, artifacts=artifacts, n_workers=workers)


def cluster_overhead(workers: int) -> float:
    """Seconds to start a LocalCluster like the runner's, import torch on it, and stop it."""
    from distributed import Client, LocalCluster

    start = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__("torch").get_num_threads())
    return time.perf_counter() - start


def _job_seconds(result: SweepResult) -> float:
    return sum(o.wall_s or 0.0 for o in result.outcomes.values() if isinstance(o, JobResult))


def _is_timing(key: str) -> bool:
    return any(word in key for word in ("seconds", "time", "wall"))


def _metrics(result: SweepResult, timings: bool = True) -> list[dict[str, Any] | None]:
    """Each job's metrics; without the keys that are wall-clock timings if ``timings`` is off."""
    return [
        {k: v for k, v in o.metrics.items() if timings or not _is_timing(k)}
        if isinstance(o, JobResult)
        else None
        for o in result
    ]


def _differences(a: SweepResult, b: SweepResult) -> list[str]:
    """``"<job hash>: <metric>"`` for every metric that differs between two runs."""
    out = []
    for job, x, y in zip(a.jobs, _metrics(a), _metrics(b), strict=True):
        if x is None or y is None:
            if x is not y:
                out.append(f"{job.hash}: finished in one run only")
            continue
        out.extend(
            f"{job.hash}: {key}" for key in sorted(set(x) | set(y)) if x.get(key) != y.get(key)
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="auto", help="auto (planted if defined), synthetic, ...")
    parser.add_argument("--mode", default="quick", choices=MODES)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/out/bench_sweep.json")
    args = parser.parse_args()

    torch.set_num_threads(1)
    name = resolve_sweep(args.sweep)
    jobs = build_jobs(name, args.mode)
    report: dict[str, Any] = {
        "sweep": name,
        "mode": args.mode,
        "n_jobs": len(jobs),
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "load_average_before": list(os.getloadavg()),
    }
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        serial = _timed(jobs, "serial", Path(tmp) / "serial", 1)
        print(sweep_summary(serial))
        parallel = _timed(jobs, None, Path(tmp) / "parallel", args.workers)
        print(sweep_summary(parallel))
        start = time.perf_counter()
        cached = _timed(jobs, None, Path(tmp) / "parallel", args.workers)
        cached_s = time.perf_counter() - start
        print(sweep_summary(cached))
    report.update(
        {
            "n_jobs_with_dependencies": len(serial.outcomes),
            "serial_s": serial.wall_s,
            "parallel_s": parallel.wall_s,
            "parallel_scheduler": parallel.scheduler,
            "speedup": serial.wall_s / parallel.wall_s,
            "cached_rerun_s": cached_s,
            "cached_rerun_scheduler": cached.scheduler,
            "serial_job_seconds": _job_seconds(serial),
            "parallel_job_seconds": _job_seconds(parallel),
            "cluster_overhead_s": cluster_overhead(args.workers),
            "identical_metrics": _metrics(serial) == _metrics(parallel),
            "differing_metrics": _differences(serial, parallel),
            "identical_metrics_except_timings": (
                _metrics(serial, timings=False) == _metrics(parallel, timings=False)
            ),
            "all_ok": serial.ok and parallel.ok,
            "load_average_after": list(os.getloadavg()),
        }
    )
    io.write_json_atomic(args.out, report)
    keys = ("sweep", "n_jobs_with_dependencies", "serial_s", "parallel_s", "speedup")
    keys += ("serial_job_seconds", "parallel_job_seconds", "cluster_overhead_s")
    for key in keys:
        print(f"{key}: {report[key]}")
    print(f"cached rerun: {cached_s:.2f} s ({cached.scheduler})")
    print(
        f"identical metrics: {report['identical_metrics']} "
        f"(except timing keys: {report['identical_metrics_except_timings']})"
    )
    print("differing metrics:", report["differing_metrics"][:20])
    print(
        f"load average before {report['load_average_before']}, after {report['load_average_after']}"
    )


if __name__ == "__main__":
    main()
