"""Tests of the experiment runner: hashing, atomic artifacts, resuming, failures, Dask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cloudpickle
import pytest
import torch
from safetensors.torch import load_file, save_file

from equisae import io, runner
from equisae.runner import (
    Job,
    JobFailure,
    JobResult,
    JobSkipped,
    SweepError,
    artifact_path,
    load_result,
    run_job,
    run_sweep,
    sweep_summary,
    verify_artifact,
)

# Worker processes cannot import this test module, so its job classes travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _mark(marker_dir: str, job: Job) -> None:
    """Record one execution of ``job`` (to count how often the runner really ran it)."""
    Path(marker_dir).mkdir(parents=True, exist_ok=True)
    (Path(marker_dir) / f"{job.kind}-{job.hash}-{uuid.uuid4().hex}").touch()


def _count(marker_dir: Path, job: Job | None = None) -> int:
    if not marker_dir.is_dir():
        return 0
    pattern = "*" if job is None else f"{job.kind}-{job.hash}-*"
    return len(list(marker_dir.glob(pattern)))


@dataclass(frozen=True)
class MakeData(Job):
    """Planted regression data: y = x @ w_true + noise, written as safetensors."""

    kind: ClassVar[str] = "test-data"
    version: ClassVar[int] = 1
    marker_dir: str
    n: int = 96
    d: int = 6
    seed: int = 0

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        _mark(self.marker_dir, self)
        # Library caches inside a job land in the sweep's artifacts root.
        assert workdir.parent == io.artifacts_dir() / self.kind
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.n, self.d, generator=gen)
        w_true = torch.randn(self.d, 1, generator=gen)
        y = x @ w_true + 0.01 * torch.randn(self.n, 1, generator=gen)
        save_file({"x": x, "y": y, "w_true": w_true}, str(workdir / "data.safetensors"))
        return {"y_var": y.var().item()}


@dataclass(frozen=True)
class TrainModel(Job):
    """Train a tiny torch model from a seed on MakeData's output; writes its weights."""

    kind: ClassVar[str] = "test-train"
    version: ClassVar[int] = 1
    marker_dir: str
    hidden: int = 8
    seed: int = 0
    steps: int = 60
    fail_if_exists: str = ""  # a path; the job raises while that file exists (not in results)

    def dependencies(self) -> tuple[Job, ...]:
        return (MakeData(self.marker_dir),)

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        data = load_file(str(deps[0].file("data.safetensors")))
        if self.fail_if_exists and Path(self.fail_if_exists).exists():
            raise RuntimeError(f"tripwire {self.fail_if_exists} present")
        _mark(self.marker_dir, self)
        torch.manual_seed(self.seed)
        model = torch.nn.Sequential(
            torch.nn.Linear(data["x"].shape[1], self.hidden),
            torch.nn.Tanh(),
            torch.nn.Linear(self.hidden, 1),
        )
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(self.steps):
            loss = ((model(data["x"]) - data["y"]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        save_file(model.state_dict(), str(workdir / "weights.safetensors"))
        return {"loss": loss.item(), "first_weight": model[0].weight[0, 0].item()}


@dataclass(frozen=True)
class Evaluate(Job):
    """Depends on a TrainModel job: checks its weights are there and recomputes its loss."""

    kind: ClassVar[str] = "test-eval"
    version: ClassVar[int] = 1
    train: TrainModel

    def dependencies(self) -> tuple[Job, ...]:
        return (self.train.dependencies()[0], self.train)

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        _mark(self.train.marker_dir, self)
        data = load_file(str(deps[0].file("data.safetensors")))
        weights = load_file(str(deps[1].file("weights.safetensors")))
        hidden = torch.tanh(data["x"] @ weights["0.weight"].T + weights["0.bias"])
        pred = hidden @ weights["2.weight"].T + weights["2.bias"]
        return {
            "mse": ((pred - data["y"]) ** 2).mean().item(),
            "train_loss": deps[1].metrics["loss"],
        }


@dataclass(frozen=True)
class BadMetrics(Job):
    kind: ClassVar[str] = "test-bad-metrics"
    version: ClassVar[int] = 1
    reserved: bool = False

    def run(self, workdir: Path, deps: list[JobResult]) -> Any:
        if self.reserved:
            (workdir / "metrics.json").write_text("{}")
            return {}
        return [1, 2, 3]


@dataclass(frozen=True)
class CrashWorker(Job):
    """Kills the worker process it runs on (only ever run on a cluster), after ``after``."""

    kind: ClassVar[str] = "test-crash"
    version: ClassVar[int] = 1
    after: tuple[Job, ...] = ()

    def dependencies(self) -> tuple[Job, ...]:
        return self.after

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        os._exit(3)


@dataclass(frozen=True)
class AfterCrash(Job):
    kind: ClassVar[str] = "test-after-crash"
    version: ClassVar[int] = 1
    crash: CrashWorker

    def dependencies(self) -> tuple[Job, ...]:
        return (self.crash,)

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        return {}


def _sweep(marker_dir: Path, tripwire: Path | None = None) -> list[Job]:
    trains = [
        TrainModel(str(marker_dir), hidden=h, seed=s, fail_if_exists=str(tripwire or ""))
        if (h, s) == (4, 1)
        else TrainModel(str(marker_dir), hidden=h, seed=s)
        for h in (4, 8)
        for s in (0, 1)
    ]
    return [*trains, *(Evaluate(t) for t in trains)]


class _NoCluster:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a Dask cluster or client was started")


def _forbid_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    import distributed

    monkeypatch.setattr(distributed, "LocalCluster", _NoCluster)
    monkeypatch.setattr(distributed, "Client", _NoCluster)


def _metrics(result: runner.SweepResult) -> list[dict[str, Any] | None]:
    return [o.metrics if isinstance(o, JobResult) else None for o in result]


# --------------------------------------------------------------------------------------------
# Hashes and job definitions
# --------------------------------------------------------------------------------------------


def test_hash_is_stable_across_processes(tmp_path: Path) -> None:
    job = Evaluate(TrainModel(str(tmp_path), hidden=5, seed=3))
    code = (
        "import test_runner as t;"
        f"print(t.Evaluate(t.TrainModel({str(tmp_path)!r}, hidden=5, seed=3)).hash)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == job.hash
    assert len(job.hash) == 16 and int(job.hash, 16) >= 0


def test_hash_depends_on_fields_kind_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    base = TrainModel("m", hidden=4, seed=0)
    assert TrainModel("m", hidden=4, seed=0).hash == base.hash
    assert TrainModel("m", hidden=4, seed=1).hash != base.hash
    assert TrainModel("m", hidden=5, seed=0).hash != base.hash
    assert Evaluate(base).hash != Evaluate(TrainModel("m", hidden=4, seed=1)).hash
    assert MakeData("m", seed=0).hash != TrainModel("m").hash  # different kind

    @dataclass(frozen=True)
    class SameFieldsOtherKind(Job):
        kind: ClassVar[str] = "test-other-kind"
        version: ClassVar[int] = 1
        marker_dir: str
        hidden: int = 4
        seed: int = 0
        steps: int = 60
        fail_if_exists: str = ""

    assert SameFieldsOtherKind("m").hash != base.hash
    monkeypatch.setattr(TrainModel, "version", 2)
    assert TrainModel("m", hidden=4, seed=0).hash != base.hash


def test_bad_job_definitions_and_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):

        @dataclass(frozen=True)
        class BadKind(Job):
            kind: ClassVar[str] = "Has Spaces"

    with pytest.raises(ValueError, match="already used"):

        @dataclass(frozen=True)
        class DuplicateKind(Job):
            kind: ClassVar[str] = "test-train"

    with pytest.raises(ValueError, match="version"):

        @dataclass(frozen=True)
        class BadVersion(Job):
            kind: ClassVar[str] = "test-bad-version"
            version: ClassVar[int] = -1

    @dataclass(frozen=True)
    class TensorField(Job):
        kind: ClassVar[str] = "test-tensor-field"
        version: ClassVar[int] = 1
        weights: Any = None

    with pytest.raises(ValueError, match="weights"):
        _ = TensorField(torch.zeros(2)).hash
    with pytest.raises(ValueError, match="finite"):
        _ = TensorField(float("nan")).hash

    @dataclass(frozen=True)
    class Cycle(Job):
        kind: ClassVar[str] = "test-cycle"
        version: ClassVar[int] = 1

        def dependencies(self) -> tuple[Job, ...]:
            return (self,)

    with pytest.raises(ValueError, match="cycle"):
        run_sweep([Cycle()], scheduler="serial", artifacts=tmp_path)
    with pytest.raises(ValueError, match="Job"):
        run_sweep(["not a job"], scheduler="serial", artifacts=tmp_path)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="scheduler"):
        run_sweep([MakeData(str(tmp_path))], scheduler="threads", artifacts=tmp_path)
    with pytest.raises(ValueError, match="n_workers"):
        run_sweep([MakeData(str(tmp_path))], n_workers=0, artifacts=tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing.bin"):
        run_job(MakeData(str(tmp_path / "m")), artifacts=tmp_path).file("nothing.bin")


# --------------------------------------------------------------------------------------------
# Artifacts, caching and resuming (serial)
# --------------------------------------------------------------------------------------------


def test_artifact_layout_and_cache_reuse(tmp_path: Path) -> None:
    markers, art = tmp_path / "markers", tmp_path / "art"
    jobs = _sweep(markers)
    first = run_sweep(jobs, scheduler="serial", artifacts=art, progress=False)
    assert first.ok and len(first) == len(jobs) and len(first.outcomes) == 9
    assert _count(markers) == 9  # 1 data + 4 trainings + 4 evaluations, data shared once
    for job, outcome in zip(jobs, first, strict=True):
        assert isinstance(outcome, JobResult) and outcome.job == job and not outcome.cached
        assert outcome.path == artifact_path(job, art) == art / job.kind / job.hash
        config = json.loads((outcome.path / "config.json").read_text())
        assert config["hash"] == job.hash and config["config"] == job.config()
        manifest = json.loads((outcome.path / "manifest.json").read_text())
        assert {"config.json", "metrics.json", "run.json"} <= set(manifest["files"])
        assert verify_artifact(outcome.path, job) is None
    assert not list(art.glob("*/.tmp-*"))  # no temporary folders left behind
    # Evaluate recomputes the trained model's loss from the saved weights (one more step of
    # Adam happened after the last recorded loss, so it differs slightly but stays close).
    for outcome in first.results[4:]:
        assert (
            outcome is not None and outcome.metrics["mse"] < 2 * outcome.metrics["train_loss"] + 0.1
        )

    rows = first.records()
    assert [row["hash"] for row in rows] == [job.hash for job in jobs]
    assert rows[0]["hidden"] == 4 and rows[0]["loss"] == first[0].metrics["loss"]

    second = run_sweep(jobs, scheduler="serial", artifacts=art, progress=False)
    assert _count(markers) == 9  # nothing recomputed
    assert second.computed == [] and second.n_cached == 9
    assert all(isinstance(o, JobResult) and o.cached for o in second)
    assert _metrics(second) == _metrics(first)
    assert "9 cached" in sweep_summary(second)


def test_cached_sweep_starts_no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _sweep(tmp_path / "markers")
    run_sweep(jobs, scheduler="serial", artifacts=tmp_path / "art", progress=False)
    _forbid_clusters(monkeypatch)
    result = run_sweep(jobs, artifacts=tmp_path / "art", progress=False)
    assert result.ok and result.scheduler == "cached"


def test_scheduler_from_environment_and_single_worker_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_clusters(monkeypatch)
    one = run_sweep([MakeData(str(tmp_path / "m"))], artifacts=tmp_path / "a", progress=False)
    assert one.ok and one.scheduler == "serial (one worker is enough)"
    monkeypatch.setenv(runner.SCHEDULER_ENV, "serial")
    many = run_sweep(_sweep(tmp_path / "m"), artifacts=tmp_path / "a", progress=False)
    assert many.ok and many.scheduler == "serial" and len(many.computed) == 8
    monkeypatch.setenv(runner.SCHEDULER_ENV, "nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        run_sweep(_sweep(tmp_path / "m"), artifacts=tmp_path / "a", progress=False)


def test_failure_reported_dependants_skipped_others_finish(tmp_path: Path) -> None:
    markers, tripwire = tmp_path / "markers", tmp_path / "tripwire"
    tripwire.touch()
    jobs = _sweep(markers, tripwire)
    result = run_sweep(jobs, scheduler="serial", artifacts=tmp_path / "art", progress=False)
    failing = jobs[1]  # TrainModel(hidden=4, seed=1) has the tripwire
    assert isinstance(result[1], JobFailure) and result[1].job == failing
    assert "tripwire" in result[1].error and "Traceback" in result[1].traceback
    assert "test_runner.py" in result[1].traceback
    assert isinstance(result[5], JobSkipped) and result[5].blocked_by == failing.hash
    others = [o for i, o in enumerate(result) if i not in (1, 5)]
    assert all(isinstance(o, JobResult) for o in others)
    assert not result.ok and result.results[1] is None and result.results[5] is None
    summary = sweep_summary(result)
    assert f"FAILED {failing.label()}" in summary and "hidden=4, seed=1" in summary
    assert "SKIPPED test-eval" in summary and "1 failed, 1 skipped" in summary
    with pytest.raises(SweepError, match="tripwire"):
        result.raise_for_failures()
    assert not (tmp_path / "art" / failing.kind / failing.hash).exists()
    assert not list((tmp_path / "art").glob("*/.tmp-*"))


def test_interrupted_sweep_reruns_only_missing_jobs(tmp_path: Path) -> None:
    markers, tripwire, art = tmp_path / "markers", tmp_path / "tripwire", tmp_path / "art"
    tripwire.touch()
    jobs = _sweep(markers, tripwire)
    run_sweep(jobs, scheduler="serial", artifacts=art, progress=False)
    assert _count(markers) == 7  # data, 3 trainings, 3 evaluations
    # Simulate a worker killed mid-write: a half-written temporary folder for the failed job
    # and a final folder of a never-finished evaluation without manifest.
    half = art / jobs[1].kind / f".tmp-{jobs[1].hash}-deadbeef"
    half.mkdir()
    (half / "weights.safetensors").write_bytes(b"\x00" * 10)
    torn = art / jobs[5].kind / jobs[5].hash
    torn.mkdir(parents=True)
    (torn / "metrics.json").write_text('{"mse": 0.0')
    assert load_result(jobs[1], art) is None and load_result(jobs[5], art) is None
    tripwire.unlink()
    before = {job.hash: _count(markers, job) for job in jobs}
    result = run_sweep(jobs, scheduler="serial", artifacts=art, progress=False)
    assert result.ok
    assert sorted(result.computed) == sorted([jobs[1].hash, jobs[5].hash])
    for job in jobs:
        expected = before[job.hash] + (1 if job in (jobs[1], jobs[5]) else 0)
        assert _count(markers, job) == expected, job.label()
    assert _count(markers) == 9
    assert verify_artifact(torn, jobs[5]) is None  # replaced by a complete artifact
    assert runner.clean_partial_artifacts(art, older_than_s=3600) == []  # too recent
    assert half.exists()
    assert runner.clean_partial_artifacts(art, older_than_s=0) == [half]
    assert not half.exists()


@pytest.mark.parametrize("damage", ["bad_json", "missing_weights", "flipped_byte", "no_manifest"])
def test_corrupted_artifact_is_detected_and_recomputed(tmp_path: Path, damage: str) -> None:
    markers, art = tmp_path / "markers", tmp_path / "art"
    job = TrainModel(str(markers), hidden=4, seed=0)
    good = run_job(job, artifacts=art)
    folder = good.path
    if damage == "bad_json":
        (folder / "metrics.json").write_text("{not json")
    elif damage == "missing_weights":
        (folder / "weights.safetensors").unlink()
    elif damage == "flipped_byte":
        blob = bytearray((folder / "weights.safetensors").read_bytes())
        blob[-1] ^= 0xFF
        (folder / "weights.safetensors").write_bytes(bytes(blob))
    else:
        (folder / "manifest.json").unlink()
    assert verify_artifact(folder, job) is not None
    assert load_result(job, art) is None
    again = run_job(job, artifacts=art)
    assert not again.cached and again.metrics == good.metrics
    assert _count(markers, job) == 2  # trained twice: once originally, once after the damage
    assert verify_artifact(folder, job) is None


def test_job_contract_violations_are_failures(tmp_path: Path) -> None:
    result = run_sweep(
        [BadMetrics(), BadMetrics(reserved=True)], scheduler="serial", artifacts=tmp_path
    )
    assert isinstance(result[0], JobFailure) and "dict of metrics" in result[0].error
    assert isinstance(result[1], JobFailure) and "reserved" in result[1].error
    assert not list(tmp_path.glob("*/*"))  # nothing written, not even temporary folders


def test_serial_mode_restores_thread_setting_and_environment(tmp_path: Path) -> None:
    before, env = torch.get_num_threads(), os.environ.get(io.ARTIFACTS_ENV)
    run_job(MakeData(str(tmp_path / "m")), artifacts=tmp_path / "art")
    assert torch.get_num_threads() == before
    assert os.environ.get(io.ARTIFACTS_ENV) == env


# --------------------------------------------------------------------------------------------
# Dask
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cluster_matches_serial_bit_for_bit(tmp_path: Path) -> None:
    import dask
    from distributed import LocalCluster

    markers, tripwire = tmp_path / "markers", tmp_path / "tripwire"
    tripwire.touch()
    jobs = _sweep(markers, tripwire)
    serial = run_sweep(jobs, scheduler="serial", artifacts=tmp_path / "serial", progress=False)
    crash = CrashWorker(after=tuple(jobs))  # runs last, alone: kills its worker process
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
    ):
        parallel = run_sweep(
            [*jobs, crash, AfterCrash(crash)],
            scheduler=cluster.scheduler_address,
            artifacts=tmp_path / "dask",
            progress=False,
        )
        assert parallel.scheduler.startswith("dask tcp://")
        # Failures and skips come back the same way from the workers.
        assert isinstance(parallel[1], JobFailure) and "tripwire" in parallel[1].error
        assert isinstance(parallel[5], JobSkipped)
        # A job was never run after a dependency failed, so the crash job is skipped here ...
        assert isinstance(parallel[8], JobSkipped) and isinstance(parallel[9], JobSkipped)
        # ... and when its dependencies all finish, the dead worker is reported as a failure.
        tripwire.unlink()
        crash = CrashWorker(after=tuple(jobs[:1]))
        died = run_sweep(
            [*jobs[:1], crash, AfterCrash(crash)],
            scheduler=cluster.scheduler_address,
            artifacts=tmp_path / "dask",
            progress=False,
        )
        assert isinstance(died[1], JobFailure) and "KilledWorker" in died[1].error
        assert isinstance(died[2], JobSkipped) and died[2].blocked_by == crash.hash
        resumed = run_sweep(
            jobs, scheduler=cluster.scheduler_address, artifacts=tmp_path / "dask", progress=False
        )
    assert _metrics(parallel)[: len(jobs)] == _metrics(serial)  # None for the failed/skipped
    assert _metrics(resumed)[:1] + _metrics(resumed)[2:5] + _metrics(resumed)[6:] == (
        _metrics(serial)[:1] + _metrics(serial)[2:5] + _metrics(serial)[6:]
    )
    assert sorted(resumed.computed) == sorted([jobs[1].hash, jobs[5].hash]) and resumed.ok
    # Every file the jobs wrote (weights included) is byte-identical to the serial run.
    for outcome in resumed:
        assert isinstance(outcome, JobResult)
        manifest = json.loads((outcome.path / "manifest.json").read_text())["files"]
        other = tmp_path / "serial" / outcome.job.kind / outcome.hash / "manifest.json"
        if other.is_file():
            reference = json.loads(other.read_text())["files"]
            for name in manifest:
                if name != "run.json":
                    assert manifest[name] == reference[name], (outcome.job.label(), name)


@pytest.mark.slow
def test_default_local_cluster_respects_dependencies(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    jobs = _sweep(markers)
    result = run_sweep(jobs, artifacts=tmp_path / "art", progress=False, n_workers=2)
    assert result.ok and result.scheduler == "dask LocalCluster, 2 workers"
    assert _count(markers) == 9  # the shared data job ran once although four jobs need it
    # Each evaluation read its model's weights and data, so they existed when it ran.
    for outcome in result.results[4:]:
        assert (
            outcome is not None
            and outcome.metrics["train_loss"]
            == result.outcomes[outcome.job.train.hash].metrics["loss"]
        )
    serial = run_sweep(jobs, scheduler="serial", artifacts=tmp_path / "serial", progress=False)
    assert _metrics(serial) == _metrics(result)


def test_local_cluster_and_dashboard_listen_on_localhost_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distributed

    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)
            raise RuntimeError("recorded")

    monkeypatch.setattr(distributed, "LocalCluster", Recorder)
    jobs = [MakeData(str(tmp_path / "m"), seed=s) for s in range(2)]
    with pytest.raises(RuntimeError, match="recorded"):
        run_sweep(jobs, artifacts=tmp_path / "a", progress=False, n_workers=2)
    assert seen["host"] == "127.0.0.1"
    assert str(seen["dashboard_address"]).startswith("127.0.0.1:")


def test_unreachable_scheduler_fails_fast_with_the_address_and_the_fix(tmp_path: Path) -> None:
    import socket
    import time

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=f"{address}.*--scheduler serial"):
        run_sweep([MakeData(str(tmp_path / "m"))], scheduler=address, artifacts=tmp_path / "a")
    assert time.perf_counter() - start < 5.0  # not Dask's 30 s connection timeout
    with pytest.raises(ValueError, match="tcp://host:port"):
        runner.check_scheduler("tcp://no-port")
