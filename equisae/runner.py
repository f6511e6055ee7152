"""Typed, configuration-hashed jobs with resumable atomic artifacts, run as a graph on Dask.

A *job* is a frozen dataclass that subclasses :class:`Job`, names its ``kind`` (a folder-safe
string, unique across the package) and a ``version`` (bump it when the job's code changes its
output, so old artifacts are no longer reused), lists the jobs it needs in
:meth:`Job.dependencies`, and computes in :meth:`Job.run`::

    @dataclass(frozen=True)
    class TrainSAE(Job):
        kind: ClassVar[str] = "train-sae"
        version: ClassVar[int] = 1
        layer: str
        k: int
        seed: int = 0

        def dependencies(self) -> tuple[Job, ...]:
            return (ExtractActivations(layer=self.layer),)

        def run(self, workdir: Path, deps: list[JobResult]) -> dict:
            acts = load(deps[0].file("acts.safetensors"))
            ...                                # write any files into ``workdir``
            return {"fvu": fvu, "l0": l0}      # JSON-able metrics

    result = run_sweep([TrainSAE("enc.2", k) for k in (4, 8, 16)])   # Dask LocalCluster
    print(sweep_summary(result))
    result[0].metrics, result[0].path      # JobResult: metrics dict and the artifact folder

Artifacts live in ``<artifacts>/<kind>/<hash>/`` (``artifacts`` defaults to
:func:`equisae.io.artifacts_dir`, i.e. ``$EQUISAE_ARTIFACTS`` or ``./artifacts``) and hold the
job's own files plus ``config.json`` (the configuration), ``metrics.json``, ``run.json`` (wall
time, start and end, host and process; not part of the metrics) and ``manifest.json`` (the sha256 of every other file). A job
is computed in a temporary sibling folder that is renamed into place only when complete, so an
interrupted job leaves no half-written artifact. A folder whose manifest does not match its
files (bad JSON, a missing or altered file) is treated as absent and recomputed.

:func:`run_sweep` runs every missing job and its dependencies (deduplicated by hash) on Dask:
a ``LocalCluster`` of single-threaded worker processes by default, an existing cluster when
given ``scheduler="tcp://host:port"`` (or ``$EQUISAE_SCHEDULER``), or in this process with
``scheduler="serial"``. A job that raises is reported with its configuration and traceback
(:class:`JobFailure`), its dependants are skipped (:class:`JobSkipped`), and every other job
still finishes.

While a job runs, ``$EQUISAE_ARTIFACTS`` is set to the sweep's artifacts root, so library caches
that use :func:`equisae.io.artifacts_dir` (base models, activations) land beside the job
artifacts, on every worker, whatever its working directory.

Numerics: every job runs single-threaded (worker processes set ``torch.set_num_threads(1)``;
serial mode does the same for the duration of each job and restores the setting), and the
global torch/numpy generators are seeded from the job's hash before ``run`` is called, so the
same sweep gives bit-identical metrics serially and on a cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import socket
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from equisae import io, repairs

__all__ = [
    "FORMAT_VERSION",
    "JOB_KINDS",
    "Job",
    "JobFailure",
    "JobResult",
    "JobSkipped",
    "SCHEDULER_ENV",
    "SweepError",
    "SweepResult",
    "artifact_path",
    "check_scheduler",
    "clean_partial_artifacts",
    "job_graph",
    "load_result",
    "run_job",
    "run_sweep",
    "sweep_summary",
    "verify_artifact",
]

#: Version of the artifact layout itself; part of every hash.
FORMAT_VERSION = 1
#: Files the runner writes into every artifact folder; a job must not write these names.
RESERVED_FILES = ("config.json", "metrics.json", "run.json", "manifest.json")
#: Every concrete job class by its ``kind``.
JOB_KINDS: dict[str, type[Job]] = {}

_KIND_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_TMP_PREFIX = io.TMP_PREFIX
#: Environment variable naming the default scheduler (e.g. a cluster's ``tcp://host:port``).
SCHEDULER_ENV = "EQUISAE_SCHEDULER"


class SweepError(RuntimeError):
    """Raised by :meth:`SweepResult.raise_for_failures` and :func:`run_job` when a job failed."""


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A unit of work: a frozen dataclass of configuration fields with a stable content hash.

    Subclasses are ``@dataclass(frozen=True)`` and define the class attributes ``kind`` (folder
    name of its artifacts, lowercase letters, digits, ``-``, ``_`` and ``.``) and ``version``
    (bump it when :meth:`run` changes what it produces). Fields must be JSON-able values
    (numbers, strings, booleans, None, tuples/lists, mappings, nested dataclasses or jobs).
    """

    kind: ClassVar[str] = ""
    version: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            return  # an intermediate base class without its own kind
        kind, version = cls.kind, cls.version
        if not isinstance(kind, str) or not _KIND_PATTERN.match(kind):
            raise ValueError(
                f"{cls.__qualname__}.kind must be a folder-safe lowercase string "
                f"(letters, digits, '-', '_', '.'), got {kind!r}"
            )
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError(f"{cls.__qualname__}.version must be an int >= 0, got {version!r}")
        previous = JOB_KINDS.get(kind)
        if previous is not None and _class_name(previous) != _class_name(cls):
            raise ValueError(
                f"job kind {kind!r} of {_class_name(cls)} is already used by {_class_name(previous)}"
            )
        JOB_KINDS[kind] = cls

    def dependencies(self) -> tuple[Job, ...]:
        """The jobs whose results :meth:`run` needs, in the order it receives them."""
        return ()

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        """Compute: write any files into ``workdir`` and return JSON-able metrics."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement run()")

    def config(self) -> dict[str, Any]:
        """The configuration fields as canonical JSON values (nested jobs by kind and hash)."""
        _check_job_class(type(self))
        return {
            f.name: _canonical(getattr(self, f.name), f"{type(self).__qualname__}.{f.name}")
            for f in dataclasses.fields(self)
        }

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit content hash of kind, version, runner format and fields."""
        cache = getattr(self, "__dict__", None)
        if cache is not None and "_equisae_hash" in cache:
            return cache["_equisae_hash"]
        digest = io.config_hash(
            {
                "kind": self.kind,
                "version": self.version,
                "format": FORMAT_VERSION,
                "config": self.config(),
            }
        )
        if cache is not None:
            cache["_equisae_hash"] = digest
        return digest

    def label(self) -> str:
        """A short human-readable description: ``kind(field=value, ...)``."""
        parts = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{self.kind}({parts})"


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_job_class(cls: type) -> None:
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise ValueError(f"{_class_name(cls)} must be decorated with @dataclass(frozen=True)")
    if not cls.kind:
        raise ValueError(f"{_class_name(cls)} has no 'kind' class attribute")


def _canonical(value: Any, where: str) -> Any:
    """JSON value of a configuration field, rejecting anything without a stable text form."""
    if isinstance(value, Job):
        return {"job": value.kind, "hash": value.hash}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not np.isfinite(value):
            raise ValueError(f"{where} must be a finite float, got {value!r}")
        return value
    if isinstance(value, np.generic):
        return _canonical(value.item(), where)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, f"{where}[{k!r}]") for k, v in sorted(value.items())}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _canonical(getattr(value, f.name), f"{where}.{f.name}")
            for f in dataclasses.fields(value)
        }
    raise ValueError(
        f"{where} has type {type(value).__name__}, which has no stable hash; use numbers, "
        "strings, booleans, None, tuples, mappings or dataclasses of those"
    )


# --------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobResult:
    """A finished job: its metrics and the artifact folder holding its files."""

    job: Job
    metrics: dict[str, Any]
    path: Path
    cached: bool = False
    wall_s: float | None = None

    @property
    def hash(self) -> str:
        return self.job.hash

    def file(self, name: str) -> Path:
        """Path of a file the job wrote; FileNotFoundError if it does not exist."""
        path = self.path / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.job.label()} has no artifact file {name!r} in {self.path}"
            )
        return path


@dataclass(frozen=True)
class JobFailure:
    """A job whose ``run`` raised (or whose worker died)."""

    job: Job
    error: str
    traceback: str


@dataclass(frozen=True)
class JobSkipped:
    """A job not run because a dependency failed or was skipped."""

    job: Job
    blocked_by: str  # the hash of the failed dependency


Outcome = JobResult | JobFailure | JobSkipped


@dataclass
class SweepResult:
    """All outcomes of a sweep; indexing and iteration give the requested jobs' outcomes in order."""

    jobs: list[Job]
    outcomes: dict[str, Outcome]  # by job hash, requested jobs and their dependencies
    computed: list[str] = field(default_factory=list)  # hashes computed in this sweep
    wall_s: float = 0.0
    scheduler: str = "serial"
    repairs: list[repairs.Repair] = field(default_factory=list)  # caches found damaged

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> Outcome:
        return self.outcomes[self.jobs[index].hash]

    def __iter__(self) -> Iterator[Outcome]:
        return (self.outcomes[job.hash] for job in self.jobs)

    @property
    def results(self) -> list[JobResult | None]:
        """The requested jobs' results in order (None where a job failed or was skipped)."""
        return [o if isinstance(o, JobResult) else None for o in self]

    @property
    def failures(self) -> list[JobFailure]:
        return [o for o in self.outcomes.values() if isinstance(o, JobFailure)]

    @property
    def skipped(self) -> list[JobSkipped]:
        return [o for o in self.outcomes.values() if isinstance(o, JobSkipped)]

    @property
    def ok(self) -> bool:
        """True when every job (requested and dependency) finished."""
        return not self.failures and not self.skipped

    @property
    def n_cached(self) -> int:
        return sum(isinstance(o, JobResult) and o.cached for o in self.outcomes.values())

    def raise_for_failures(self) -> None:
        """Raise :class:`SweepError` with the summary if any job failed or was skipped."""
        if not self.ok:
            raise SweepError(sweep_summary(self, tracebacks=True))

    def records(self) -> list[dict[str, Any]]:
        """One flat dict per finished requested job: kind, hash, config fields, then metrics."""
        rows = []
        for outcome in self:
            if isinstance(outcome, JobResult):
                row = {"kind": outcome.job.kind, "hash": outcome.hash, **outcome.job.config()}
                row.update(outcome.metrics)
                rows.append(row)
        return rows


def sweep_summary(result: SweepResult, tracebacks: bool = False) -> str:
    """A few lines for the console: counts per kind, wall time, and every failure."""
    by_kind: dict[str, dict[str, int]] = {}
    totals = {"computed": 0, "cached": 0, "failed": 0, "skipped": 0}
    for outcome in result.outcomes.values():
        status = _status(outcome, result.computed)
        counts = by_kind.setdefault(outcome.job.kind, {})
        counts[status] = counts.get(status, 0) + 1
        totals[status] += 1
    lines = [
        f"sweep: {len(result.jobs)} requested, {len(result.outcomes)} jobs with dependencies: "
        + ", ".join(f"{n} {status}" for status, n in totals.items())
        + f" in {result.wall_s:.1f} s ({result.scheduler})"
    ]
    for kind in sorted(by_kind):
        counts = ", ".join(f"{n} {status}" for status, n in sorted(by_kind[kind].items()))
        lines.append(f"  {kind}: {counts}")
    for failure in result.failures:
        lines.append(f"FAILED {failure.job.label()} [{failure.job.hash}]: {failure.error}")
        if tracebacks:
            lines.append("  " + failure.traceback.rstrip().replace("\n", "\n  "))
    for skip in result.skipped:
        lines.append(
            f"SKIPPED {skip.job.label()} [{skip.job.hash}]: dependency {skip.blocked_by} did not finish"
        )
    lines += repairs.summary_lines(result.repairs)
    return "\n".join(lines)


def _status(outcome: Outcome, computed: Sequence[str]) -> str:
    if isinstance(outcome, JobFailure):
        return "failed"
    if isinstance(outcome, JobSkipped):
        return "skipped"
    return "cached" if outcome.cached or outcome.hash not in computed else "computed"


# --------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------


def _root(artifacts: str | os.PathLike | None) -> Path:
    return Path(artifacts if artifacts is not None else io.artifacts_dir()).expanduser().resolve()


def artifact_path(job: Job, artifacts: str | os.PathLike | None = None) -> Path:
    """``<artifacts>/<kind>/<hash>/``: where ``job``'s files live once it has finished."""
    if not isinstance(job, Job):
        raise ValueError(f"job must be an equisae.runner.Job, got {type(job).__name__}")
    return _root(artifacts) / job.kind / job.hash


def verify_artifact(folder: str | os.PathLike, job: Job | None = None) -> str | None:
    """Check an artifact folder against its manifest; None if intact, else what is wrong."""
    folder = Path(folder)
    problem = io.verify_manifest(folder, required=("metrics.json", "config.json"))
    if problem is not None:
        return problem
    try:
        config = io.read_json(folder / "config.json")
        io.read_json(folder / "metrics.json")
    except (FileNotFoundError, ValueError) as exc:
        return f"{folder}: {exc}"
    if job is not None and (not isinstance(config, dict) or config.get("hash") != job.hash):
        found = config.get("hash") if isinstance(config, dict) else config
        return f"{folder}: config.json hash {found!r} is not {job.hash!r}"
    return None


def load_result(
    job: Job, artifacts: str | os.PathLike | None = None, report: bool = False
) -> JobResult | None:
    """The cached result of ``job`` if its artifact folder exists and is intact, else None.

    With ``report``, a folder that exists but fails verification is reported
    (:func:`equisae.repairs.report`) before the job is recomputed.
    """
    folder = artifact_path(job, artifacts)
    if not folder.is_dir():
        return None
    problem = verify_artifact(folder, job)
    if problem is not None:
        if report:
            repairs.report(folder, problem, f"recomputing {job.label()}")
        return None
    metrics = io.read_json(folder / "metrics.json")
    run_info = io.read_json(folder / "run.json") if (folder / "run.json").is_file() else {}
    return JobResult(job, metrics, folder, cached=True, wall_s=run_info.get("wall_s"))


def clean_partial_artifacts(
    artifacts: str | os.PathLike | None = None, older_than_s: float = 3600.0
) -> list[Path]:
    """Remove temporary folders of interrupted jobs not touched for ``older_than_s`` seconds."""
    root = _root(artifacts)
    removed = []
    now = time.time()
    for tmp in root.glob(f"*/{_TMP_PREFIX}*"):
        if tmp.is_dir() and now - tmp.stat().st_mtime >= older_than_s:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _artifacts_env(root: Path) -> Iterator[None]:
    """Make :func:`equisae.io.artifacts_dir` return the sweep's root while a job runs."""
    previous = os.environ.get(io.ARTIFACTS_ENV)
    os.environ[io.ARTIFACTS_ENV] = str(root)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(io.ARTIFACTS_ENV, None)
        else:
            os.environ[io.ARTIFACTS_ENV] = previous


def _seed_from_hash(job_hash: str) -> None:
    io.seed_everything(int(job_hash[:8], 16))


def _compute(job: Job, root: Path, deps: list[JobResult]) -> JobResult:
    """Run ``job`` in a temporary sibling folder and rename it into place when complete.

    If another worker finished the same job first with an intact artifact, theirs is kept.
    """
    final = root / job.kind / job.hash
    with io.atomic_folder(final, keep=lambda path: verify_artifact(path, job) is None) as tmp:
        _seed_from_hash(job.hash)
        started = time.time()
        start = time.perf_counter()
        metrics = job.run(tmp, deps)
        wall_s = time.perf_counter() - start
        ended = time.time()
        if not isinstance(metrics, Mapping):
            raise ValueError(
                f"{job.label()}.run() must return a dict of metrics, got {type(metrics).__name__}"
            )
        clash = [name for name in RESERVED_FILES if (tmp / name).exists()]
        if clash:
            raise ValueError(f"{job.label()}.run() wrote reserved file names {clash}")
        config = {
            "kind": job.kind,
            "version": job.version,
            "format": FORMAT_VERSION,
            "hash": job.hash,
            "job_class": _class_name(type(job)),
            "config": job.config(),
            "dependencies": [{"kind": d.kind, "hash": d.hash} for d in job.dependencies()],
        }
        io.write_json_atomic(tmp / "config.json", config)
        io.write_json_atomic(tmp / "metrics.json", dict(metrics))
        run_info = {
            "wall_s": wall_s,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "started": started,  # seconds since the epoch (equisae.profile reads them)
            "ended": ended,
            "torch": torch.__version__,
        }
        io.write_json_atomic(tmp / "run.json", run_info)
        io.write_manifest(tmp)
    return JobResult(job, io.read_json(final / "metrics.json"), final, cached=False, wall_s=wall_s)


def _execute(job: Job, root: str, in_worker: bool, *deps: Outcome) -> Outcome:
    """Worker entry point: skip on failed deps, reuse a valid artifact, else compute."""
    for dep in deps:
        if not isinstance(dep, JobResult):
            return JobSkipped(job, dep.job.hash)
    cached = load_result(job, root)
    if cached is not None:
        return cached
    context = contextlib.nullcontext() if in_worker else _single_thread()
    if in_worker:
        torch.set_num_threads(1)
    try:
        with context, _artifacts_env(Path(root)):
            return _compute(job, Path(root), list(deps))
    except Exception as exc:
        return JobFailure(job, f"{type(exc).__name__}: {exc}", traceback.format_exc())


# --------------------------------------------------------------------------------------------
# Graph and scheduling
# --------------------------------------------------------------------------------------------


def job_graph(jobs: Iterable[Job]) -> dict[str, Job]:
    """Every job and its transitive dependencies, deduplicated by hash, dependencies first."""
    order: dict[str, Job] = {}
    visiting: set[str] = set()

    def visit(job: Job, path: tuple[str, ...]) -> None:
        if not isinstance(job, Job):
            raise ValueError(f"sweep entries must be equisae.runner.Job instances, got {job!r}")
        key = job.hash
        if key in order:
            return
        if key in visiting:
            raise ValueError(f"dependency cycle through {job.label()}: {' -> '.join(path)}")
        visiting.add(key)
        deps = job.dependencies()
        if not isinstance(deps, tuple):
            raise ValueError(f"{job.label()}.dependencies() must return a tuple of jobs")
        for dep in deps:
            visit(dep, (*path, dep.kind))
        visiting.discard(key)
        order[key] = job

    for job in jobs:
        visit(job, (job.kind if isinstance(job, Job) else repr(job),))
    return order


def run_sweep(
    jobs: Iterable[Job],
    scheduler: Any = None,
    artifacts: str | os.PathLike | None = None,
    progress: bool = True,
    n_workers: int | None = None,
) -> SweepResult:
    """Run every missing job of ``jobs`` (and its dependencies) and return all outcomes in order.

    ``scheduler``: None (or ``"local"``) for a Dask ``LocalCluster`` of ``n_workers``
    single-threaded processes (default: one per available CPU core, at most one per job to
    compute; when that is a single worker the jobs run in this process instead); an address
    ``"tcp://host:port"`` to use a running Dask scheduler (the artifacts folder must be on a
    filesystem every worker sees at the same path); a ``distributed.Client``; or ``"serial"``
    to run in this process. When ``scheduler`` is None, ``$EQUISAE_SCHEDULER`` (if set) is
    used in its place. When every job is already cached no cluster is started.
    """
    start = time.perf_counter()
    jobs = list(jobs)
    graph = job_graph(jobs)
    root = _root(artifacts)
    if n_workers is not None and n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    if scheduler is None:
        scheduler = os.environ.get(SCHEDULER_ENV) or None
    if scheduler == "local":
        scheduler = None
    if not (
        scheduler is None
        or scheduler == "serial"
        or (isinstance(scheduler, str) and "://" in scheduler)
        or _is_client(scheduler)
    ):
        raise ValueError(
            "scheduler must be None or 'local' (local Dask cluster), 'serial', an address like "
            f"'tcp://host:port' or a distributed.Client, got {scheduler!r}"
        )

    io.remove_stale_tmp(root)  # temporary folders of interrupted jobs
    outcomes: dict[str, Outcome] = {}
    with _repair_log(root) as (log_path, offset):
        for key, job in graph.items():
            cached = load_result(job, root, report=True)
            if cached is not None:
                outcomes[key] = cached
        todo = [key for key in graph if key not in outcomes]
        label = _run_todo(graph, todo, root, outcomes, scheduler, n_workers, progress)
        found = repairs.read_log(log_path)
        found = found[offset:] if offset else found
    return SweepResult(
        jobs=jobs,
        outcomes={key: outcomes[key] for key in graph},
        computed=todo,
        wall_s=time.perf_counter() - start,
        scheduler=label,
        repairs=found,
    )


@contextlib.contextmanager
def _repair_log(root: Path) -> Iterator[tuple[Path, int]]:
    """The repairs log this sweep appends to and how many records it held before: the run's
    log when one collects (``$EQUISAE_REPAIRS``), else a temporary one under ``root``."""
    current = os.environ.get(repairs.REPAIRS_ENV)
    if current:
        yield Path(current), len(repairs.read_log(current))
        return
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{_TMP_PREFIX}repairs-{os.getpid()}-{os.urandom(4).hex()}.jsonl"
    try:
        with repairs.collecting(path):
            yield path, 0
    finally:
        path.unlink(missing_ok=True)


def _run_todo(
    graph: dict[str, Job],
    todo: list[str],
    root: Path,
    outcomes: dict[str, Outcome],
    scheduler: Any,
    n_workers: int | None,
    progress: bool,
) -> str:
    """Compute the jobs in ``todo`` into ``outcomes``; returns the scheduler's label."""
    label = "cached"
    if todo:
        local_workers = n_workers or min(len(todo), _available_cores())
        if scheduler == "serial" or (scheduler is None and local_workers == 1):
            label = "serial" if scheduler == "serial" else "serial (one worker is enough)"
            _run_serial(graph, todo, root, outcomes, progress)
        else:
            if isinstance(scheduler, str):
                check_scheduler(scheduler)
            label = _run_dask(graph, todo, root, outcomes, scheduler, n_workers, progress)
    return label


def run_job(
    job: Job, artifacts: str | os.PathLike | None = None, progress: bool = False
) -> JobResult:
    """Run one job (and its dependencies) in this process; raise :class:`SweepError` on failure."""
    result = run_sweep([job], scheduler="serial", artifacts=artifacts, progress=progress)
    result.raise_for_failures()
    outcome = result[0]
    assert isinstance(outcome, JobResult)
    return outcome


def check_scheduler(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (ConnectionError naming the address and the fix) if no Dask scheduler listens
    at ``address`` (``tcp://host:port``), instead of Dask's long connection timeout."""
    match = re.match(r"^(?:tcp|tls)://\[?([^\]/]+?)\]?:(\d+)/?$", address)
    if match is None:
        raise ValueError(
            f"scheduler address must look like tcp://host:port, got {address!r}; "
            "or use 'serial' or leave it empty for a local cluster"
        )
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConnectionError(
            f"no Dask scheduler reachable at {address} ({reason}); start one with "
            f"'dask scheduler --port {port}' or use --scheduler serial"
        ) from None


def _available_cores() -> int:
    """CPU cores this process may use (respects affinity masks and container CPU sets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _is_client(obj: Any) -> bool:
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    return isinstance(obj, Client)


def _repairs_env() -> dict[str, str]:
    """``$EQUISAE_REPAIRS`` for the workers of a local cluster, when this run collects repairs."""
    path = os.environ.get(repairs.REPAIRS_ENV)
    return {repairs.REPAIRS_ENV: path} if path else {}


def _worklog_env() -> dict[str, str]:
    """``$EQUISAE_WORKLOG`` for the workers of a local cluster, when this run keeps one."""
    from equisae.timing import WORKLOG_ENV

    path = os.environ.get(WORKLOG_ENV)
    return {WORKLOG_ENV: path} if path else {}


def _run_serial(
    graph: dict[str, Job], todo: list[str], root: Path, outcomes: dict[str, Outcome], progress: bool
) -> None:
    for key in tqdm(todo, desc="sweep (serial)", disable=not progress):
        job = graph[key]
        deps = [outcomes[d.hash] for d in job.dependencies()]
        outcomes[key] = _execute(job, str(root), False, *deps)


def _run_dask(
    graph: dict[str, Job],
    todo: list[str],
    root: Path,
    outcomes: dict[str, Outcome],
    scheduler: Any,
    n_workers: int | None,
    progress: bool,
) -> str:
    from distributed import Client, LocalCluster, as_completed

    with contextlib.ExitStack() as stack:
        if _is_client(scheduler):
            client, label = scheduler, f"dask {scheduler.scheduler.address}"
        elif scheduler is None:
            workers = n_workers or min(len(todo), _available_cores())
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",  # scheduler and workers reachable from this machine only
                    dashboard_address="127.0.0.1:0",  # localhost, any free port
                    env={
                        "OMP_NUM_THREADS": "1",
                        "MKL_NUM_THREADS": "1",
                        **_repairs_env(),
                        **_worklog_env(),
                    },
                )
            )
            client = stack.enter_context(Client(cluster))
            label = f"dask LocalCluster, {workers} workers"
        else:
            client = stack.enter_context(Client(scheduler))
            label = f"dask {scheduler}"

        futures: dict[str, Any] = {}
        for key in todo:
            job = graph[key]
            args = [futures.get(d.hash, outcomes.get(d.hash)) for d in job.dependencies()]
            futures[key] = client.submit(
                _execute, job, str(root), True, *args, key=f"{job.kind}-{key}", pure=False
            )
        errors: dict[str, BaseException] = {}
        by_future = {future.key: key for key, future in futures.items()}
        bar = tqdm(total=len(todo), desc="sweep (dask)", disable=not progress)
        unfinished = 0
        for future in as_completed(list(futures.values())):
            key = by_future[future.key]
            if future.status == "finished":
                outcomes[key] = future.result()
            else:  # "error" (a worker died running it) or "cancelled" (the cluster went away)
                try:
                    errors[key] = future.exception()
                except BaseException as exc:  # CancelledError
                    errors[key] = exc
            if not isinstance(outcomes.get(key), JobResult):
                unfinished += 1
                bar.set_postfix(failed_or_skipped=unfinished)
            bar.update(1)
        bar.close()
        for key in todo:  # dask-level errors (a worker died): failed, or skipped if a dep failed
            if key in errors:
                job = graph[key]
                blocked = [
                    d.hash
                    for d in job.dependencies()
                    if not isinstance(outcomes[d.hash], JobResult)
                ]
                if blocked:
                    outcomes[key] = JobSkipped(job, blocked[0])
                else:
                    exc = errors[key]
                    outcomes[key] = JobFailure(
                        job,
                        f"{type(exc).__name__}: {exc}",
                        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                    )
        for future in futures.values():
            future.release()
    return label
