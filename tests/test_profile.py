"""The run profile: records of cached work laid on the notebooks' windows (equisae.profile)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from equisae import io
from equisae.activations import OrbitActivations
from equisae.cli import main
from equisae.profile import (
    OVERHEAD,
    RUNNING,
    Work,
    attribute,
    collect_work,
    notebook_windows,
    profile_markdown,
    profile_run,
)
from equisae.runner import Job, JobResult, run_sweep
from equisae.timing import (
    WORKLOG_FILE,
    Stopwatch,
    collecting,
    logged,
    read_timing,
    read_worklog,
    timed,
    write_timing,
)

T0 = 1_700_000_000.0  # a fixed past moment (seconds since the epoch) the synthetic run starts


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(seconds))


def _runner_folder(
    root: Path, kind: str, name: str, start: float, end: float, pid: int, **extra: Any
) -> None:
    folder = root / kind / name
    folder.mkdir(parents=True)
    config = {"kind": kind, "config": extra.pop("config", {})}
    io.write_json_atomic(folder / "config.json", config)
    io.write_json_atomic(folder / "metrics.json", extra.pop("metrics", {}))
    run = {"wall_s": end - start, "host": "h", "pid": pid, "started": start, "ended": end}
    io.write_json_atomic(folder / "run.json", run)
    io.write_manifest(folder)


def _timed_folder(root: Path, kind: str, name: str, record: dict[str, Any]) -> None:
    folder = root / kind / name
    folder.mkdir(parents=True)
    write_timing(folder, record)
    io.write_manifest(folder)


def _record(phase: str, start: float, end: float, pid: int, **parts: float) -> dict[str, Any]:
    return {"phase": phase, "started": start, "ended": end, "pid": pid, "host": "h", "parts": parts}


def _results(root: Path, walls: dict[str, tuple[float, float]]) -> Path:
    """results/<mode> with run/notebooks.json (start dates) and timings/notebooks.json."""
    results = root / "results" / "full"
    stamps = {
        stem: {"date": _iso(start), "commit": "abc1234"} for stem, (start, _) in walls.items()
    }
    io.write_json_atomic(results / "run" / "notebooks.json", stamps)
    io.write_json_atomic(
        results / "timings" / "notebooks.json", {stem: wall for stem, (_, wall) in walls.items()}
    )
    return results


@pytest.fixture()
def synthetic(tmp_path: Path) -> tuple[Path, Path]:
    """Two notebooks: the first trains a base model nested in an activation extraction, the
    second runs two SAE jobs at once on two workers, a probe and a job of an unknown kind."""
    art = tmp_path / "artifacts"
    # notebook A: [T0, T0 + 100]; activations [T0+10, T0+60] in pid 1 with a base model
    # [T0+20, T0+40] nested in it; the record is shared by two layer folders
    shared = _record("activations", T0 + 10, T0 + 60, 1, data=5.0, extract=25.0)
    _timed_folder(art, "activations", "a1", shared)
    _timed_folder(art, "activations", "a2", shared)
    model = _record("base models", T0 + 20, T0 + 40, 1, data=2.0, train=16.0, evaluate=2.0)
    _timed_folder(art, "models", "m-1", model)
    # notebook B: [T0+100, T0+200]: two SAE jobs [110, 150] on pids 2 and 3 at once
    per_seed = {"0": {"train_seconds": 30.0}, "1": {"train_seconds": 30.0}}
    for name, pid, sae in (("s1", 2, "topk"), ("s2", 3, "adaptive")):
        _runner_folder(
            art,
            "sweep-sae",
            name,
            T0 + 110,
            T0 + 150,
            pid,
            config={"sae_type": sae},
            metrics={"per_seed": per_seed},
        )
    _runner_folder(art, "sweep-probe", "p1", T0 + 150, T0 + 170, 2)
    _runner_folder(art, "brand-new-kind", "x1", T0 + 170, T0 + 180, 3)
    # cached before the run: outside every window
    _runner_folder(art, "sweep-probe", "old", T0 - 500, T0 - 400, 9)
    # an activation folder from before records existed
    (art / "activations" / "legacy").mkdir()
    io.write_json_atomic(art / "activations" / "legacy" / "meta.json", {})
    results = _results(tmp_path, {"01_a": (T0, 100.0), "02_b": (T0 + 100, 100.0)})
    return art, results


def test_phases_add_up_to_each_notebook_wall(synthetic: tuple[Path, Path]) -> None:
    art, results = synthetic
    profile = profile_run("full", art, results, now=T0 + 300)
    assert set(profile["notebooks"]) == {"01_a", "02_b"}
    for nb in profile["notebooks"].values():
        assert sum(nb["phases"].values()) == pytest.approx(nb["wall_s"])
        assert all(v >= 0 for v in nb["phases"].values())


def test_nested_work_goes_to_the_innermost_record(synthetic: tuple[Path, Path]) -> None:
    art, results = synthetic
    phases = profile_run("full", art, results, now=T0 + 300)["notebooks"]["01_a"]["phases"]
    # the base model's 20 s are its own (its data part to the data phase), the other 30 s of
    # the 50 s extraction split data : extract as its parts
    assert phases["base models"] == pytest.approx(20.0 * 18 / 20)
    assert phases["data"] == pytest.approx(20.0 * 2 / 20 + 30.0 * 5 / 30)
    assert phases["activations"] == pytest.approx(30.0 * 25 / 30)
    assert phases[OVERHEAD] == pytest.approx(100.0 - 50.0)  # the shared record counted once


def test_parallel_jobs_share_the_wall_and_split_into_training_and_evaluation(
    synthetic: tuple[Path, Path],
) -> None:
    art, results = synthetic
    nb = profile_run("full", art, results, now=T0 + 300)["notebooks"]["02_b"]
    phases = nb["phases"]
    # 40 s of wall for two 40 s jobs at once: 20 s each, 30 of 40 of it training
    assert phases["SAE training: topk"] == pytest.approx(20.0 * 30 / 40)
    assert phases["SAE training: adaptive"] == pytest.approx(20.0 * 30 / 40)
    assert phases["SAE evaluation and pose inference"] == pytest.approx(2 * 20.0 * 10 / 40)
    assert phases["probes"] == pytest.approx(20.0)
    assert nb["worker_s"] == pytest.approx(40 + 40 + 20 + 10)
    # nested work counts once in its process: 50 s of worker time in notebook A
    nb_a = profile_run("full", art, results, now=T0 + 300)["notebooks"]["01_a"]
    assert nb_a["worker_s"] == pytest.approx(50.0)


def test_unknown_kinds_and_unrecorded_folders_are_reported(synthetic: tuple[Path, Path]) -> None:
    art, results = synthetic
    profile = profile_run("full", art, results, now=T0 + 300)
    assert profile["unknown_kinds"] == {"brand-new-kind": 1}
    assert profile["notebooks"]["02_b"]["phases"]["other: brand-new-kind"] == pytest.approx(10.0)
    assert profile["unrecorded"] == {"activations": 1}
    assert profile["outside_run"] == {"records": 1, "seconds": pytest.approx(100.0)}
    text = profile_markdown(profile)
    assert "brand-new-kind" in text and "`02_b`" in text and "1 records of work" in text


def test_partial_run_ends_the_last_notebook_now_and_profiles_work_after_it(
    tmp_path: Path,
) -> None:
    art = tmp_path / "artifacts"
    _runner_folder(art, "sweep-probe", "p", T0 + 50, T0 + 70, 1)
    results = tmp_path / "results" / "full"
    # no timings yet (an older run writes them at the end): the first notebook ends when the
    # second starts, the second lasts until now
    stamps = {"01_a": {"date": _iso(T0)}, "02_b": {"date": _iso(T0 + 40)}}
    io.write_json_atomic(results / "run" / "notebooks.json", stamps)
    windows = notebook_windows(results, now=T0 + 90)
    assert [(w.name, w.wall, w.finished) for w in windows] == [
        ("01_a", 40.0, True),
        ("02_b", 50.0, False),
    ]
    # with timings written as each notebook finishes, work after the last one is its own row
    io.write_json_atomic(results / "timings" / "notebooks.json", {"01_a": 20.0, "02_b": 10.0})
    profile = profile_run("full", art, results, now=T0 + 90)
    assert profile["notebooks"][RUNNING]["phases"]["probes"] == pytest.approx(20.0)
    assert not profile["run"]["finished"]


def test_attribute_never_exceeds_the_covered_time() -> None:
    gen = torch.Generator().manual_seed(0)
    work = []
    for i in range(30):
        a, length = torch.rand(2, generator=gen).tolist()
        start = T0 + 100 * a
        work.append(
            Work("k", f"k/{i}", start, start + 50 * length, f"h:{i % 3}", {f"p{i % 4}": 1.0})
        )
    phases = attribute(work, T0 + 20, T0 + 80)
    edges = sorted((max(w.started, T0 + 20), min(w.ended, T0 + 80)) for w in work)
    covered, reach = 0.0, T0 + 20
    for a, b in edges:  # the length of the union of the clipped intervals
        if b > reach:
            covered += b - max(a, reach)
            reach = b
    assert sum(phases.values()) == pytest.approx(covered)


@dataclass(frozen=True)
class _Sleep(Job):
    kind: ClassVar[str] = "test-profile-sleep"
    version: ClassVar[int] = 1
    seconds: float = 0.05

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        time.sleep(self.seconds)
        return {}


def test_a_real_runner_job_and_stopwatch_are_profiled(tmp_path: Path) -> None:
    art = tmp_path / "artifacts"
    start = time.time()
    run_sweep([_Sleep(0.2)], scheduler="serial", artifacts=art, progress=False)
    acts = OrbitActivations(torch.randn(3, 4, 2), {}, "C4", "x", "m")
    watch = Stopwatch("activations")
    with watch.part("extract"):
        time.sleep(0.1)
    acts.save(art / "activations" / "f", timing=watch.stop())
    OrbitActivations.load(art / "activations" / "f")  # the record is in the verified manifest
    assert read_timing(art / "activations" / "f")["parts"]["extract"] >= 0.1
    results = tmp_path / "results" / "full"
    io.write_json_atomic(results / "run" / "notebooks.json", {"01_a": {"date": _iso(start - 1)}})
    io.write_json_atomic(results / "timings" / "notebooks.json", {"01_a": time.time() - start + 2})
    profile = profile_run("full", art, results)
    phases = profile["notebooks"]["01_a"]["phases"]
    assert phases["other: test-profile-sleep"] >= 0.19
    assert phases["activations"] >= 0.09
    assert profile["unknown_kinds"] == {"test-profile-sleep": 1}
    assert {w.kind for w in collect_work(art).work} == {"test-profile-sleep", "activations"}


def test_cli_writes_markdown_and_json(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    art, results = synthetic
    out = tmp_path / "out"
    args = ["profile", "--mode", "full", "--artifacts", str(art), "--results", str(results)]
    assert main([*args, "--out", str(out)]) == 0
    data = json.loads((out / "profile_full.json").read_text())
    assert set(data["notebooks"]) == {"01_a", "02_b"}
    assert "# Profile of the full run" in (out / "profile_full.md").read_text()


def test_bad_input_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="artifacts folder"):
        collect_work(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="notebooks.json"):
        notebook_windows(tmp_path)
    with pytest.raises(ValueError, match="phase"):
        Stopwatch("")


def test_uncached_kernel_work_is_logged_and_profiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EQUISAE_WORKLOG", raising=False)
    results = tmp_path / "results" / "full"
    log = results / "run" / WORKLOG_FILE

    @timed("fit of M")
    def fit(x: int) -> int:
        time.sleep(0.1)
        return 2 * x

    start = time.time()
    assert fit(1) == 2 and not log.exists()  # no log set: nothing written
    with collecting(log):
        assert fit(2) == 4
        with logged("probes") as watch, watch.part("dense"):
            time.sleep(0.05)
    assert os.environ.get("EQUISAE_WORKLOG") is None
    assert [r["phase"] for r in read_worklog(log)] == ["fit of M", "probes"]
    io.write_json_atomic(results / "run" / "notebooks.json", {"01_a": {"date": _iso(start - 1)}})
    io.write_json_atomic(results / "timings" / "notebooks.json", {"01_a": time.time() - start + 2})
    (tmp_path / "artifacts").mkdir()
    nb = profile_run("full", tmp_path / "artifacts", results)["notebooks"]["01_a"]
    assert nb["phases"]["fit of M"] >= 0.09 and nb["phases"]["probes"] >= 0.04
    assert sum(nb["phases"].values()) == pytest.approx(nb["wall_s"])
