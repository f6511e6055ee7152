"""Where the time of a reproduction goes: seconds per phase and notebook, read from the artifacts.

Every piece of cached work leaves a wall-clock record beside its artifact: the runner's
``run.json`` for each job (``wall_s``, ``started``/``ended`` and the process), and the
``timing.json`` of :mod:`equisae.timing` for base models, activations and galleries, and the
run's log of uncached kernel work (``results/<mode>/run/work.jsonl``: fits, the image-source
study). The
notebooks' start times are in ``results/<mode>/run/notebooks.json`` and their wall times in
``results/<mode>/timings/notebooks.json``. :func:`profile_run` lays the records on each
notebook's time window and shares every second of it among the work running then:

* within one process the innermost record gets the time (a base model trained while
  activations were extracted is *base models*, not *activations*);
* records running at once in different processes (Dask workers) share the time equally;
* a record's share is split over its parts in proportion to their seconds (a ``sweep-sae``
  job: training of its SAE type, then evaluation and pose inference);
* what no record covers is the notebook's overhead: kernel work that leaves no artifact
  (fits, verdicts, figures, tables), start-up and waiting.

So the phases of a notebook add up to its wall time exactly. Artifacts written before the run
(cached) fall in no window and are counted apart; a kind of artifact this module does not know is
profiled under ``other: <kind>`` and listed, never dropped. Older artifacts without start times
are placed by their end time and duration (runner jobs: ``finished`` and ``wall_s``; base
models: the manifest's modification time and ``train_seconds``); activations written before
their records existed are counted as unrecorded.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from equisae import io
from equisae.timing import SAE_EVALUATION, WORKLOG_FILE, read_timing, read_worklog

__all__ = [
    "OVERHEAD",
    "Collected",
    "Window",
    "Work",
    "attribute",
    "collect_work",
    "notebook_windows",
    "profile_markdown",
    "profile_run",
    "run_phases",
    "write_profile",
]

#: the phase of a notebook's wall time that no record covers
OVERHEAD = "notebook overhead"
#: the label of the work after the last finished notebook of a run still going
RUNNING = "(after the last finished notebook)"
#: phases of the runner's job kinds (those whose time is split are handled in :func:`_runner`)
RUNNER_PHASES = {
    "sweep-inputs": "inputs: activations and fit of M",
    "sweep-probe": "probes",
    "sweep-probe-reference": "probes",
}
PLANTED_EVALUATION = "planted: evaluation"
#: artifact folders that are not runner jobs, by the top-level folder name
KNOWN_FOLDERS = ("models", "activations", "gallery")


@dataclass(frozen=True)
class Work:
    """One record of cached work: its interval, its process and how its time divides."""

    kind: str
    source: str  # the artifact folder, relative to the artifacts root
    started: float  # seconds since the epoch
    ended: float
    process: str | None  # "host:pid"; None when unknown (then never nested)
    parts: Mapping[str, float]  # phase -> weight (seconds); the share splits in proportion

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class Window:
    """A notebook's time window in the run (``finished`` is False for the one still running)."""

    name: str
    started: float
    ended: float
    finished: bool = True

    @property
    def wall(self) -> float:
        return self.ended - self.started


@dataclass
class Collected:
    """What :func:`collect_work` found: the records, and what it could not time."""

    work: list[Work] = field(default_factory=list)
    unknown_kinds: dict[str, int] = field(default_factory=dict)  # kind -> folders
    unrecorded: dict[str, int] = field(default_factory=dict)  # kind -> folders without a record


# --------------------------------------------------------------------------- records


def _timestamp(text: str) -> float:
    """Seconds since the epoch of an ISO date (``+00:00`` or ``+0000``; naive means UTC)."""
    text = text.strip()
    if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = text[:-2] + ":" + text[-2:]
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _process(record: Mapping[str, Any]) -> str | None:
    pid = record.get("pid")
    return None if pid is None else f"{record.get('host', '?')}:{pid}"


def _interval(run: Mapping[str, Any]) -> tuple[float, float] | None:
    """``(started, ended)`` of a runner ``run.json``: exact when recorded, else from
    ``finished`` (whole seconds) and ``wall_s``."""
    if isinstance(run.get("started"), (int, float)) and isinstance(run.get("ended"), (int, float)):
        return float(run["started"]), float(run["ended"])
    wall, finished = run.get("wall_s"), run.get("finished")
    if not isinstance(wall, (int, float)) or not isinstance(finished, str):
        return None
    try:
        ended = _timestamp(finished)
    except ValueError:
        return None
    return ended - float(wall), ended


def _stacked_train_seconds(metrics: Mapping[str, Any]) -> float | None:
    """Training seconds of a ``sweep-sae`` job: its seeds train as one stacked model, so each
    seed's ``train_seconds`` is the same whole (the largest, should they differ)."""
    per_seed = metrics.get("per_seed")
    if not isinstance(per_seed, Mapping):
        return None
    found = [
        float(m["train_seconds"])
        for m in per_seed.values()
        if isinstance(m, Mapping) and isinstance(m.get("train_seconds"), (int, float))
    ]
    return max(found) if found else None


def _split(total: float, train: float | None, train_phase: str, rest_phase: str) -> dict:
    if train is None:
        return {train_phase: total}
    train = min(max(train, 0.0), total)
    return {train_phase: train, rest_phase: total - train}


def _runner(kind: str, config: Mapping[str, Any], metrics: Mapping[str, Any], total: float):
    """The parts of a runner job's time, and whether its kind is known."""
    fields = config.get("config", {}) if isinstance(config.get("config"), Mapping) else {}
    if kind == "sweep-sae":
        phase = f"SAE training: {fields.get('sae_type', '?')}"
        return _split(total, _stacked_train_seconds(metrics), phase, SAE_EVALUATION), True
    if kind == "planted":
        train = metrics.get("train_seconds")
        train = float(train) if isinstance(train, (int, float)) else None
        phase = f"planted: training {fields.get('model', '?')}"
        return _split(total, train, phase, PLANTED_EVALUATION), True
    if kind in RUNNER_PHASES:
        return {RUNNER_PHASES[kind]: total}, True
    return {f"other: {kind}": total}, False


def _timing_work(kind: str, source: str, record: Mapping[str, Any]) -> Work | None:
    """A :mod:`equisae.timing` record as :class:`Work` (parts named ``<phase>: <part>``, except
    the data, which is its own phase)."""
    try:
        started, ended = float(record["started"]), float(record["ended"])
    except (KeyError, TypeError, ValueError):
        return None
    phase = str(record.get("phase", kind))
    raw = record.get("parts") if isinstance(record.get("parts"), Mapping) else {}
    parts: dict[str, float] = {}
    for name, seconds in raw.items():
        if isinstance(seconds, (int, float)) and seconds > 0:
            key = "data" if name == "data" else phase
            parts[key] = parts.get(key, 0.0) + float(seconds)
    return Work(kind, source, started, ended, _process(record), parts or {phase: ended - started})


def _read(path: Path) -> Any:
    try:
        return io.read_json(path)
    except (OSError, ValueError):
        return None


def _legacy_model(folder: Path, source: str) -> Work | None:
    """A base model saved before timing records: ``train_seconds`` ending at the manifest's
    modification time, process unknown."""
    metrics = _read(folder / "metrics.json")
    seconds = metrics.get("train_seconds") if isinstance(metrics, Mapping) else None
    marker = folder / io.MANIFEST_FILE
    if not isinstance(seconds, (int, float)) or not marker.is_file():
        return None
    ended = marker.stat().st_mtime
    return Work("models", source, ended - float(seconds), ended, None, {"base models": 1.0})


def collect_work(artifacts: str | os.PathLike) -> Collected:
    """Every timed piece of work under ``artifacts`` (``<artifacts>/<kind>/<folder>/``)."""
    root = Path(artifacts)
    if not root.is_dir():
        raise FileNotFoundError(f"artifacts folder {root} does not exist (give --artifacts)")
    out = Collected()
    seen: set[tuple[Any, ...]] = set()  # one record shared by several folders counts once
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if kind_dir.name.startswith(io.TMP_PREFIX):
            continue
        for folder in sorted(p for p in kind_dir.iterdir() if p.is_dir()):
            if folder.name.startswith(io.TMP_PREFIX):
                continue
            source = f"{kind_dir.name}/{folder.name}"
            work = _folder_work(kind_dir.name, folder, source, out)
            if work is None:
                continue
            key = (work.kind, work.started, work.ended, work.process)
            if key not in seen:
                seen.add(key)
                out.work.append(work)
    return out


def _folder_work(name: str, folder: Path, source: str, out: Collected) -> Work | None:
    config = _read(folder / "config.json")
    run = _read(folder / "run.json") if (folder / "run.json").is_file() else None
    if isinstance(config, Mapping) and isinstance(run, Mapping) and "kind" in config:
        kind = str(config["kind"])
        interval = _interval(run)
        if interval is None:
            out.unrecorded[kind] = out.unrecorded.get(kind, 0) + 1
            return None
        metrics = _read(folder / "metrics.json")
        parts, known = _runner(
            kind, config, metrics if isinstance(metrics, Mapping) else {}, interval[1] - interval[0]
        )
        if not known:
            out.unknown_kinds[kind] = out.unknown_kinds.get(kind, 0) + 1
        return Work(kind, source, *interval, _process(run), parts)
    record = read_timing(folder)
    if record is not None:
        work = _timing_work(name, source, record)
        if work is not None:
            if name not in KNOWN_FOLDERS:
                out.unknown_kinds[name] = out.unknown_kinds.get(name, 0) + 1
            return work
    if name == "models":
        work = _legacy_model(folder, source)
        if work is not None:
            return work
    if name not in KNOWN_FOLDERS:
        out.unknown_kinds[name] = out.unknown_kinds.get(name, 0) + 1
    out.unrecorded[name] = out.unrecorded.get(name, 0) + 1
    return None


# --------------------------------------------------------------------------- windows


def notebook_windows(results: str | os.PathLike, now: float | None = None) -> list[Window]:
    """The time window of every notebook of the run in ``results`` (``results/<mode>``).

    A notebook starts at the date in ``run/notebooks.json`` and lasts its wall time in
    ``timings/notebooks.json`` when that file was written after it started (the same run),
    else until the next notebook started. The last finished notebook without a wall time
    lasts until ``now`` (not finished).
    """
    results = Path(results)
    provenance = _read(results / "run" / "notebooks.json")
    if not isinstance(provenance, Mapping) or not provenance:
        raise FileNotFoundError(
            f"no notebook run recorded in {results / 'run' / 'notebooks.json'}; run "
            "`equisae reproduce` first (or give the results folder of a run)"
        )
    starts = []
    for stem, stamp in provenance.items():
        date = stamp.get("date") if isinstance(stamp, Mapping) else None
        if isinstance(date, str):
            try:
                starts.append((_timestamp(date), stem))
            except ValueError:
                continue
    starts.sort()
    timings_path = results / "timings" / "notebooks.json"
    timings = _read(timings_path) if timings_path.is_file() else None
    written = timings_path.stat().st_mtime if timings_path.is_file() else float("-inf")
    windows = []
    for i, (start, stem) in enumerate(starts):
        wall = timings.get(stem) if isinstance(timings, Mapping) else None
        if isinstance(wall, (int, float)) and written >= start:
            windows.append(Window(stem, start, start + float(wall)))
        elif i + 1 < len(starts):
            windows.append(Window(stem, start, starts[i + 1][0]))
        else:
            windows.append(Window(stem, start, max(start, now or start), finished=False))
    return windows


# --------------------------------------------------------------------------- attribution


def attribute(work: Sequence[Work], start: float, end: float) -> dict[str, float]:
    """Seconds per phase of ``work`` inside ``[start, end]``: each moment goes to the innermost
    record of each process running then, shared equally between processes, and each record's
    share is split over its parts. The sum is the time some record covers (at most the span)."""
    clipped = [
        (max(w.started, start), min(w.ended, end), w)
        for w in work
        if min(w.ended, end) > max(w.started, start)
    ]
    # a sweep over the start and end times (ends first at a tie), with the records running
    share: dict[int, float] = defaultdict(float)
    events = sorted(
        [(a, 1, i) for i, (a, _, _) in enumerate(clipped)]
        + [(b, 0, i) for i, (_, b, _) in enumerate(clipped)]
    )
    running: set[int] = set()
    previous = None
    for moment, is_start, i in events:
        if running and previous is not None and moment > previous:
            innermost: dict[Any, tuple[float, float, int]] = {}
            for j in running:
                w = clipped[j][2]
                group = w.process if w.process is not None else ("record", j)
                rank = (w.started, -w.seconds, j)  # the latest start is the innermost
                if group not in innermost or rank > innermost[group]:
                    innermost[group] = rank
            for _, _, j in innermost.values():
                share[j] += (moment - previous) / len(innermost)
        previous = moment
        if is_start:
            running.add(i)
        else:
            running.discard(i)
    phases: dict[str, float] = defaultdict(float)
    for i, seconds in share.items():
        parts = clipped[i][2].parts
        total = sum(parts.values())
        for phase, weight in parts.items():
            phases[phase] += seconds * (weight / total if total > 0 else 1.0 / len(parts))
    return dict(phases)


def _busy_seconds(work: Sequence[Work], start: float, end: float) -> float:
    """Seconds inside ``[start, end]`` that each process spent on recorded work, added over
    the processes (a record nested in another of its process counts once): above the span,
    the work ran in parallel."""
    by_process: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    for i, w in enumerate(work):
        a, b = max(w.started, start), min(w.ended, end)
        if b > a:
            by_process[w.process if w.process is not None else ("record", i)].append((a, b))
    total = 0.0
    for intervals in by_process.values():
        reach = float("-inf")
        for a, b in sorted(intervals):
            if b > reach:
                total += b - max(a, reach)
                reach = b
    return total


def profile_run(
    mode: str,
    artifacts: str | os.PathLike | None = None,
    results: str | os.PathLike | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The profile of the run of ``mode``: seconds per phase for each notebook (adding up to its
    wall time), the book build, work outside the run, and what could not be timed."""
    from equisae.modes import check_mode

    check_mode(mode)
    artifacts = Path(artifacts) if artifacts is not None else io.artifacts_dir()
    results = Path(results) if results is not None else io.results_dir(mode)
    found = collect_work(artifacts)
    for i, record in enumerate(read_worklog(results / "run" / WORKLOG_FILE)):
        work = _timing_work("worklog", f"run/{WORKLOG_FILE}#{i + 1}", record)
        if work is not None:
            found.work.append(work)
    latest = max((w.ended for w in found.work), default=None)
    moment = now if now is not None else max(latest or 0.0, datetime.datetime.now().timestamp())
    windows = notebook_windows(results, now=moment)
    last = windows[-1].ended
    later = [w.ended for w in found.work if w.started >= last]
    if later:  # a notebook still running (or stopped) after the last one that finished
        windows.append(Window(RUNNING, last, max(later), finished=False))
    notebooks = {}
    inside = [False] * len(found.work)
    for window in windows:
        phases = attribute(found.work, window.started, window.ended)
        recorded = sum(phases.values())
        phases[OVERHEAD] = max(0.0, window.wall - recorded)
        members = [
            i
            for i, w in enumerate(found.work)
            if min(w.ended, window.ended) > max(w.started, window.started)
        ]
        for i in members:
            inside[i] = True
        notebooks[window.name] = {
            "started": window.started,
            "wall_s": window.wall,
            "finished": window.finished,
            "phases": dict(sorted(phases.items(), key=lambda kv: -kv[1])),
            "worker_s": _busy_seconds([found.work[i] for i in members], *_span(window)),
            "records": len(members),
        }
    outside = [w for w, hit in zip(found.work, inside, strict=True) if not hit]
    book = _read(results / "timings" / "book.json")
    provenance = _read(results / "run" / "notebooks.json") or {}
    first = next(iter(provenance.values()), {}) if isinstance(provenance, Mapping) else {}
    return {
        "mode": mode,
        "run": {
            "started": min((w.started for w in windows), default=None),
            "commit": first.get("commit") if isinstance(first, Mapping) else None,
            "device": first.get("device", "cpu") if isinstance(first, Mapping) else "cpu",
            "finished": all(w.finished for w in windows),
        },
        "machine": _machine(found.work),
        "notebooks": notebooks,
        "book_s": book.get("seconds") if isinstance(book, Mapping) else None,
        "outside_run": {"records": len(outside), "seconds": sum(w.seconds for w in outside)},
        "unknown_kinds": dict(sorted(found.unknown_kinds.items())),
        "unrecorded": dict(sorted(found.unrecorded.items())),
    }


def _span(window: Window) -> tuple[float, float]:
    return window.started, window.ended


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine(work: Sequence[Work]) -> dict[str, Any]:
    hosts = sorted({w.process.rsplit(":", 1)[0] for w in work if w.process})
    return {
        "hosts": hosts or [socket.gethostname()],
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- output


def _date(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _s(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def run_phases(profile: Mapping[str, Any]) -> dict[str, float]:
    """Seconds per phase over every notebook of a profile, largest first."""
    total: dict[str, float] = defaultdict(float)
    for nb in profile["notebooks"].values():
        for phase, seconds in nb["phases"].items():
            total[phase] += seconds
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def profile_markdown(profile: Mapping[str, Any], heading: str | None = "###") -> str:
    """Markdown of a profile: the machine, a summary per notebook, the largest phases of the
    run and a table per notebook (titled by ``heading``, or by a bold line when None, for
    pages where the tables sit inside a directive)."""
    run, machine = profile["run"], profile["machine"]
    notebooks = profile["notebooks"]
    state = "" if run.get("finished", True) else " (still running when profiled)"
    lines = [
        f"The {profile['mode']} run of {_date(run.get('started'))}{state}, commit "
        f"`{run.get('commit') or 'unknown'}`, device {run.get('device', 'cpu')}, on "
        f"{', '.join(machine['hosts'])} ({machine['cores']} cores, {machine['cpu']}).",
        "",
        "| notebook | wall (s) | recorded work (s) | overhead (s) | worker-seconds | largest phase |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    total = 0.0
    for name, nb in notebooks.items():
        phases = nb["phases"]
        recorded = nb["wall_s"] - phases.get(OVERHEAD, 0.0)
        work = {k: v for k, v in phases.items() if k != OVERHEAD}
        top = max(work, key=work.get) if work else "none"
        label = name if nb.get("finished", True) or name == RUNNING else f"{name} and later"
        lines.append(
            f"| `{label}` | {_s(nb['wall_s'])} | {_s(recorded)} | "
            f"{_s(phases.get(OVERHEAD, 0.0))} | {_s(nb['worker_s'])} | {top} |"
        )
        total += nb["wall_s"]
    if profile.get("book_s") is not None:
        lines.append(f"| book build | {_s(profile['book_s'])} | | | | |")
        total += float(profile["book_s"])
    lines += [f"| **total** | {_s(total)} | | | | |", ""]
    lines.append(
        "Each notebook's phases add up to its wall time: every second goes to the innermost "
        "record of cached work running then (shared between Dask workers running at once); "
        f"*{OVERHEAD}* is the time no record covers (kernel work that leaves no artifact, "
        "figures, start-up). Worker-seconds add up, over the processes, the time each spent on "
        "recorded work, so above the recorded work they show work done in parallel."
    )
    phases = run_phases(profile)
    walls = sum(phases.values())
    if walls > 0:
        top = ", ".join(
            f"{phase} {_s(seconds)} s ({seconds / walls:.0%})"
            for phase, seconds in list(phases.items())[:5]
        )
        lines += ["", f"The largest phases of the run's {_s(walls)} s of notebooks: {top}."]
    notes = _notes(profile)
    if notes:
        lines += ["", *notes]
    for name, nb in notebooks.items():
        title = f"`{name}` ({_s(nb['wall_s'])} s)"
        lines += ["", f"{heading} {title}" if heading else f"**{title}**", ""]
        lines += ["| phase | seconds | share |", "| --- | ---: | ---: |"]
        for phase, seconds in nb["phases"].items():
            share = seconds / nb["wall_s"] if nb["wall_s"] > 0 else 0.0
            lines.append(f"| {phase} | {_s(seconds)} | {share:.0%} |")
    return "\n".join(lines) + "\n"


def _notes(profile: Mapping[str, Any]) -> list[str]:
    notes = []
    outside = profile.get("outside_run", {})
    if outside.get("records"):
        notes.append(
            f"- {outside['records']} records of work done outside this run's notebooks "
            f"({_s(outside['seconds'])} s; cached before it) are not counted."
        )
    for kind, n in profile.get("unknown_kinds", {}).items():
        notes.append(f"- Unknown artifact kind `{kind}`: {n} folder(s), profiled as `other`.")
    for kind, n in profile.get("unrecorded", {}).items():
        notes.append(
            f"- `{kind}`: {n} folder(s) without a timing record (written before records "
            f"existed); their time is in the phase that made them or in the overhead."
        )
    return notes


def write_profile(profile: Mapping[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``profile_<mode>.json`` and ``profile_<mode>.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"profile_{profile['mode']}"
    json_path = io.write_json_atomic(out_dir / f"{stem}.json", dict(profile))
    title = f"# Profile of the {profile['mode']} run\n\n"
    md_path = out_dir / f"{stem}.md"
    io.atomic_write_bytes(md_path, (title + profile_markdown(profile, "##")).encode())
    return json_path, md_path
