"""Fault injection: damaged caches, stale pages, tampered SAEs, Ctrl-C and bad flags.

Each test injects one fault a hostile user can cause and checks that the run says so where the
user looks (terminal summary, results, exit code). Small synthetic artifacts only.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import nbformat
import pytest
import torch

from equisae import cli, io
from equisae.runner import Job, JobResult, run_sweep, sweep_summary

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Artifacts and results in a temporary folder, no repairs log inherited, one thread."""
    monkeypatch.setenv("EQUISAE_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("EQUISAE_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("EQUISAE_REPAIRS", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------------
# 1. every repair is visible where the user looks
# --------------------------------------------------------------------------------------------


def test_damaged_model_cache_is_reported_with_the_file(tmp_path) -> None:
    from equisae import repairs
    from equisae.models import TrainSettings, train_or_load

    gen = torch.Generator().manual_seed(0)
    splits = {"train": torch.rand(16, 3, 32, 32, generator=gen), "test": torch.rand(4, 3, 32, 32)}
    settings = TrainSettings(epochs=1, batch_size=8)
    _, info = train_or_load("mlp_augmented", splits=splits, settings=settings, progress=False)
    weights = Path(info["folder"]) / "model.safetensors"
    _flip_last_byte(weights)
    with repairs.collecting(tmp_path / "repairs.jsonl") as log:
        _, again = train_or_load("mlp_augmented", splits=splits, settings=settings, progress=False)
        found = repairs.read_log(log)
    assert again["cached"] is False  # retrained
    assert len(found) == 1 and str(weights) in found[0].problem
    assert "retraining" in found[0].action and "checksum" in found[0].problem


def test_damaged_activation_cache_is_reported_with_the_file(tmp_path, monkeypatch) -> None:
    from equisae import activation_cache, repairs
    from equisae.activations import OrbitActivations

    extractions = []

    def fake_extract(key, progress):
        extractions.append(key.layer)
        acts = OrbitActivations(
            acts=torch.randn(3, 4, 5), factors={}, group_name="C4", layer=key.layer, model_name="m"
        )
        acts.save(key.at(split="train").folder())

    monkeypatch.setattr(activation_cache, "_extract_all", fake_extract)
    first = activation_cache.orbit_activations_for("cnn_augmented", "bottleneck", "quick")
    folder = activation_cache.activation_folder("cnn_augmented", "bottleneck", "quick", 0, "train")
    acts_file = next(p for p in folder.iterdir() if p.suffix == ".safetensors")
    acts_file.write_bytes(acts_file.read_bytes()[:-7])  # truncated
    with repairs.collecting(tmp_path / "repairs.jsonl") as log:
        again = activation_cache.orbit_activations_for("cnn_augmented", "bottleneck", "quick")
        found = repairs.read_log(log)
    assert len(extractions) == 2 and again.acts.shape == first.acts.shape
    assert len(found) == 1 and str(acts_file) in found[0].problem
    assert found[0].action == "extracting again"


@dataclass(frozen=True)
class FaultProbe(Job):
    """A tiny runner job: writes one file and returns a metric."""

    kind: ClassVar[str] = "faults-probe"
    version: ClassVar[int] = 1
    value: int = 1

    def run(self, workdir: Path, deps: list[JobResult]) -> dict[str, Any]:
        (workdir / "out.txt").write_text(str(self.value))
        return {"value": self.value}


def test_edited_runner_artifact_is_listed_by_sweep(tmp_path, monkeypatch, capsys) -> None:
    import equisae.sweeps

    jobs = [FaultProbe(value=v) for v in (1, 2)]
    monkeypatch.setitem(equisae.sweeps.SWEEPS, "planted", lambda settings: jobs)
    argv = ["sweep", "planted", "--mode", "quick", "--scheduler", "serial"]
    assert cli.main(argv) == 0
    art = Path(os.environ["EQUISAE_ARTIFACTS"])
    metrics = art / FaultProbe.kind / jobs[1].hash / "metrics.json"
    metrics.write_text(json.dumps({"value": 99}))  # a hand-edited result
    capsys.readouterr()
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "1 cached, 1 computed" in out.replace("1 computed, 1 cached", "1 cached, 1 computed")
    assert f"{metrics} does not match its checksum" in out and "recomputing" in out
    record = json.loads((tmp_path / "results" / "quick" / "run" / "sweep_planted.json").read_text())
    assert len(record["repairs"]) == 1 and str(metrics) in record["repairs"][0]["problem"]
    # the library result says it too, and an intact rerun has nothing to report
    again = run_sweep(jobs, scheduler="serial", progress=False)
    assert again.repairs == [] and "failed verification" not in sweep_summary(again)


# --------------------------------------------------------------------------------------------
# reproduce on throwaway notebooks (papermill replaced by an executor that runs a "kernel")
# --------------------------------------------------------------------------------------------

TOC = """format: jb-book
root: book/intro
chapters:
  - file: book/notebooks/01_a
  - file: book/notebooks/02_b
"""


def _notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('mode = "full"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Two notebooks and a toc; papermill runs each notebook's last cell in a subprocess."""
    import papermill

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_toc.yml").write_text(TOC)
    _notebook(tmp_path / "notebooks" / "01_a.ipynb", "pass")
    _notebook(tmp_path / "notebooks" / "02_b.ipynb", "pass")

    def execute(source, output, parameters, **kwargs):
        nb = nbformat.read(source, as_version=4)
        body = nb.cells[-1].source
        if "FAIL" in body:
            nbformat.write(nb, output)
            raise papermill.PapermillExecutionError(1, 1, body, "RuntimeError", "boom", [])
        if body != "pass":  # like a kernel: another process, same environment
            subprocess.run([sys.executable, "-c", body], check=True, env=os.environ.copy())
        nbformat.write(nb, output)

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    built: list[Path] = []
    monkeypatch.setattr("equisae.reproduce.build_book", lambda root: built.append(root))
    monkeypatch.setattr("equisae.reproduce._git_commit", lambda root: "c0ffee1")
    return tmp_path, built


def test_reproduce_lists_repairs_made_in_a_kernel(project, capsys) -> None:
    from equisae import repairs
    from equisae.reproduce import reproduce

    root, _ = project
    kernel = (
        "from equisae import repairs; "
        "repairs.report('/a/models/m-1', '/a/models/m-1/model.safetensors does not match its "
        "checksum (altered or truncated)', 'retrained m')"
    )
    _notebook(root / "notebooks" / "02_b.ipynb", kernel)
    reproduce("quick", book=False, root=root)
    out = capsys.readouterr().out
    assert "/a/models/m-1/model.safetensors does not match its checksum" in out
    assert "retrained m" in out
    info = json.loads((root / "book" / "notebooks" / "build_info.json").read_text())
    assert [r["artifact"] for r in info["repairs"]] == ["/a/models/m-1"]
    log = root / "results" / "quick" / "run" / "repairs.jsonl"
    assert len(repairs.read_log(log)) == 1


# --------------------------------------------------------------------------------------------
# 2. provenance per page
# --------------------------------------------------------------------------------------------


def test_stale_notebook_is_named_blocks_the_book_and_leaves_the_ledger(
    project, capsys, monkeypatch
) -> None:
    import equisae.ledger
    from equisae.reproduce import reproduce

    root, built = project
    monkeypatch.setattr(
        equisae.ledger,
        "build_ledger",
        lambda folder=None: {"notebooks_run": ["01_a", "02_b"], "claims": []},
    )
    reproduce("quick", root=root)
    assert built == [root]
    executed = nbformat.read(root / "book" / "notebooks" / "02_b.ipynb", as_version=4)
    stamp = executed.metadata["equisae"]
    assert stamp["mode"] == "quick" and stamp["commit"] == "c0ffee1" and stamp["date"]
    assert len(stamp["source_sha256"]) == 64
    # 02 gets a failing cell: its run fails (nothing copied), then only 01 is rerun
    _notebook(root / "notebooks" / "02_b.ipynb", "FAIL")
    with pytest.raises(RuntimeError, match="02_b"):
        reproduce("quick", only=["02"], root=root)
    capsys.readouterr()
    reproduce("quick", only=["01"], root=root)
    out = capsys.readouterr().out
    assert built == [root]  # the book is not built over a stale page
    assert "stale" in out and "02_b" in out
    info = json.loads((root / "book" / "notebooks" / "build_info.json").read_text())
    assert info["notebooks"]["02_b"]["state"] == "stale"
    assert info["notebooks"]["01_a"]["state"] == "current"
    claims = json.loads((root / "results" / "quick" / "claims.json").read_text())
    assert claims["notebooks_run"] == ["01_a"]


def test_banner_of_a_stale_page_says_so(project) -> None:
    import importlib.util

    from equisae.reproduce import reproduce

    root, _ = project
    reproduce("quick", book=False, root=root)
    spec = importlib.util.spec_from_file_location(
        "equisae_book_faults", ROOT / "book" / "_ext" / "equisae_book.py"
    )
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    _notebook(root / "notebooks" / "02_b.ipynb", "print('changed')")
    page = getattr(ext, "page_info", None)
    assert page is not None, "the banner is not computed per page"
    stale = ext.banner_html(page(root, "book/notebooks/02_b"))
    fresh = ext.banner_html(page(root, "book/notebooks/01_a"))
    assert "Stale" in stale and "c0ffee1" in stale and "Stale" not in fresh


# --------------------------------------------------------------------------------------------
# 3. loading is as strict as constructing
# --------------------------------------------------------------------------------------------


def _equivariant(d: int = 4):
    from equisae.groups import get_group
    from equisae.sae import EquivariantSAE

    rot = get_group("C4")
    theta = torch.tensor(torch.pi / 2)
    block = torch.tensor(
        [[torch.cos(theta), -torch.sin(theta)], [torch.sin(theta), torch.cos(theta)]]
    )
    M = torch.block_diag(*([block] * (d // 2)))
    return EquivariantSAE(d, 8, 2, group=rot, M=M, seed=0)


def test_load_sae_refuses_unverified_unreadable_and_zeroed(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    from equisae.sae import load_sae, save_sae

    sae = _equivariant()
    folder = save_sae(sae, tmp_path / "sae")
    weights = folder / "sae_weights.safetensors"
    # no manifest: refused unless trusted
    (folder / "manifest.json").unlink()
    with pytest.raises(ValueError, match="manifest"):
        load_sae(folder)
    assert load_sae(folder, trust=True).d_sae == 8
    # a truncated file with a matching manifest: the read error names the file
    weights.write_bytes(weights.read_bytes()[:-40])
    io.write_manifest(folder)
    with pytest.raises(ValueError, match=str(weights)):
        load_sae(folder)
    # a zeroed M with a matching manifest: refused as the constructor refuses it
    save_sae(sae, folder)
    state = load_file(str(weights))
    state["M"] = torch.zeros_like(state["M"])
    save_file(state, str(weights))
    io.write_manifest(folder)
    with pytest.raises(ValueError, match=r"M.*singular"):
        load_sae(folder)
    with pytest.raises(ValueError, match="singular"):
        _equivariant().load_state_dict(state)


def test_absurd_fixed_representation_is_refused_at_construction() -> None:
    from equisae.sae import EquivariantSAE

    with pytest.raises(ValueError, match="scale"):
        EquivariantSAE(4, 8, 2, group_order=4, M=1e20 * torch.eye(4))


# --------------------------------------------------------------------------------------------
# 4. clean interrupts and exit codes
# --------------------------------------------------------------------------------------------

CTRL_C_SCRIPT = """
import subprocess, sys
import equisae.cli as cli

CHILD = "import sys, time\\nprint('ready', file=sys.stderr, flush=True)\\ntime.sleep(60)\\n"

def command(args):
    subprocess.run([sys.executable, "-c", CHILD])
    return 0

cli._sweep = command
raise SystemExit(cli.main(["sweep", "planted", "--mode", "quick"]))
"""


def test_ctrl_c_prints_one_line_and_no_child_traceback(tmp_path) -> None:
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    first = proc.stderr.readline()  # the child is running once its line is relayed
    assert first.strip() == "ready", first
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["reproduce", "--mode", "bogus"], "--mode"),
        (["sweep", "nosuch", "--mode", "quick"], "nosuch"),
        (["images", "--source", "digits", "--size", "0"], "--size"),
        (["images", "--source", "nosuch"], "--source"),
    ],
)
def test_usage_errors_exit_1_in_one_line(argv, flag, capsys) -> None:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 1 and flag in err and err.count("\n") == 1 and "usage:" not in err


def test_stale_tmp_folders_are_removed_at_the_start_of_a_run(tmp_path) -> None:
    art = Path(os.environ["EQUISAE_ARTIFACTS"])
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    host = socket.gethostname()
    stale = art / "models" / f".tmp-m-abc~{host}.{pid}-0123abcd"
    live = art / "models" / f".tmp-m-abd~{host}.{os.getpid()}-0123abce"
    old = art / FaultProbe.kind / ".tmp-0123456789abcdef-deadbeef"
    for folder in (stale, live, old):
        folder.mkdir(parents=True)
        (folder / "half.bin").write_bytes(b"\0" * 10)
    long_ago = time.time() - 2 * 3600
    os.utime(old / "half.bin", (long_ago, long_ago))
    os.utime(old, (long_ago, long_ago))
    run_sweep([FaultProbe(value=3)], scheduler="serial", progress=False)
    assert not stale.exists() and not old.exists()
    assert live.exists()  # a writer that is still running keeps its folder


# --------------------------------------------------------------------------------------------
# 5. early, exact validation
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_images_run(monkeypatch):
    """Fail the test if `equisae images` gets as far as loading data or training."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the flags were validated")

    monkeypatch.setattr("equisae.sources.pipeline.main_images", forbidden)


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--source", "digits", "--layer", "nosuch"], ["--layer", "nosuch"]),
        (["--source", "digits", "--model", "nosuch"], ["--model", "nosuch"]),
        (["--source", "folder", "--path", "{file}"], ["--path", "{file}", "is a file"]),
    ],
)
def test_images_flags_are_checked_before_any_work(
    argv, needles, tmp_path, capsys, no_images_run
) -> None:
    file = tmp_path / "not_a_folder.txt"
    file.write_text("x")
    argv = [a.replace("{file}", str(file)) for a in argv]
    code = cli.main(["images", *argv])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    for needle in needles:
        assert needle.replace("{file}", str(file)) in err


def test_size_message_names_the_flag(capsys, monkeypatch) -> None:
    code = cli.main(["images", "--source", "digits", "--size", "12", "--quick"])
    err = capsys.readouterr().err
    assert code == 1 and "--size" in err and "image_size" not in err


def test_bad_files_name_the_path(tmp_path) -> None:
    from equisae.sources.files import load_galaxy_mnist, load_image_folder

    fake = tmp_path / "train_dataset.hdf5"
    fake.write_text("not hdf5 at all")
    with pytest.raises(ValueError, match=f"{fake}.*not an HDF5 file"):
        load_galaxy_mnist(fake)
    with pytest.raises(NotADirectoryError, match=f"{fake}.*is a file"):
        load_image_folder(fake)


def test_full_disk_names_the_path(tmp_path, monkeypatch) -> None:
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "results" / "x.json"
    with pytest.raises(OSError, match=f"no space left to write {target}"):
        io.write_json_atomic(target, {"a": 1})
    with pytest.raises(OSError, match="no space left to write .*folder"):
        with io.atomic_folder(tmp_path / "folder") as tmp:
            io.write_json_atomic(tmp / "f.json", {})


def test_non_finite_or_absurd_input_is_blamed_on_the_input() -> None:
    from equisae.sources.base import ImageSource

    for bad in (float("nan"), 3e38):
        images = torch.rand(4, 1, 8, 8)
        images[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="input images"):
            ImageSource("blobs", images, {"label": torch.zeros(4, dtype=torch.long)}, ("label",))


def test_ledger_message_prints_the_real_results_path(project, capsys, monkeypatch) -> None:
    import equisae.ledger
    from equisae.reproduce import reproduce

    root, _ = project
    monkeypatch.setattr(
        equisae.ledger, "build_ledger", lambda folder=None: {"notebooks_run": [], "claims": []}
    )
    reproduce("quick", only=["01"], book=False, root=root)
    out = capsys.readouterr().out
    assert f"claims ledger: {root / 'results' / 'quick' / 'claims.json'}" in out


def test_nonfinite_loss_names_the_input_the_weights_or_the_learning_rate():
    """A finite step whose loss is not finite blames the input when its square overflows, the
    learning rate when the weights have run away or are ordinary, the weights when they broke."""
    import torch

    from equisae.sae.topk import TopKSAE
    from equisae.sae.train import check_finite_loss, nonfinite_loss_cause

    sae = TopKSAE(8, 16, k=2)
    huge = torch.full((4, 8), 3e18)
    assert nonfinite_loss_cause(sae.parameters(), huge).startswith("the input")
    assert "ordinary size" in nonfinite_loss_cause(sae.parameters(), torch.ones(4, 8))
    with torch.no_grad():
        sae.W_enc.mul_(1e9)
    assert "grown to" in nonfinite_loss_cause(sae.parameters(), torch.ones(4, 8))
    with torch.no_grad():
        sae.b_dec[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"step 3 \(the weights are non-finite"):
        check_finite_loss(torch.tensor(float("inf")), 3, sae.parameters(), torch.ones(4, 8))


@pytest.mark.parametrize("size", [0, -4, 2.5])
def test_every_source_refuses_the_same_bad_image_size_from_python(size, tmp_path):
    """``load_source`` applies one rule to ``image_size`` for every source (0 is not ignored)."""
    from equisae.sources.pipeline import load_source

    for source in ("digits", "folder", "galaxy-mnist"):
        with pytest.raises(ValueError, match="image_size must be a positive int"):
            load_source(source, tmp_path, image_size=size)
