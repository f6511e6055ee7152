"""The papermill pipeline behind `equisae reproduce`, on throwaway notebooks."""

from __future__ import annotations

import nbformat
import pytest

from equisae import cli
from equisae.device import resolve_device
from equisae.reproduce import (
    NotebookFailed,
    find_notebooks,
    hide_injected_parameters,
    reproduce,
)


def _notebook(path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('mode = "full"\nseed = 0')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setenv("EQUISAE_RESULTS", str(tmp_path / "results"))
    return tmp_path


def test_find_notebooks_orders_and_filters(project) -> None:
    for name in ("02_b", "01_a", "10_c"):
        _notebook(project / "notebooks" / f"{name}.ipynb", "pass")
    assert [p.stem for p in find_notebooks(project)] == ["01_a", "02_b", "10_c"]
    assert [p.stem for p in find_notebooks(project, ["2", "10"])] == ["02_b", "10_c"]
    with pytest.raises(ValueError, match="07"):
        find_notebooks(project, ["07"])


def test_missing_notebooks_folder_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="notebooks"):
        find_notebooks(tmp_path)


@pytest.mark.slow
def test_reproduce_injects_mode_hides_parameters_and_stops_on_failure(project) -> None:
    _notebook(project / "notebooks" / "01_ok.ipynb", "assert mode == 'quick'")
    _notebook(project / "notebooks" / "02_bad.ipynb", "raise RuntimeError('boom in cell')")
    _notebook(project / "notebooks" / "03_never.ipynb", "pass")
    with pytest.raises(NotebookFailed, match=r"02_bad(.|\n)*boom in cell"):
        reproduce("quick", book=False, root=project)
    executed = project / "book" / "notebooks"
    assert (executed / "01_ok.ipynb").is_file()
    assert not (executed / "03_never.ipynb").exists()
    nb = nbformat.read(executed / "01_ok.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    assert "quick" in injected[0].source


def test_hide_injected_parameters_is_idempotent(tmp_path) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("mode = 'quick'")
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells = [cell]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    hide_injected_parameters(path)
    hide_injected_parameters(path)
    tags = nbformat.read(path, as_version=4).cells[0].metadata["tags"]
    assert tags == ["injected-parameters", "remove-cell"]


def test_cli_rejects_unknown_mode(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--mode", "medium"])
    assert "invalid choice" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Failures as a hostile user meets them (fast: papermill replaced by a fake executor)
# --------------------------------------------------------------------------------------------

TOC = """format: jb-book
root: book/intro
chapters:
  - file: book/notebooks/01_a
  - file: book/notebooks/02_b
"""


@pytest.fixture
def fake_papermill(monkeypatch):
    """papermill.execute_notebook stand-in: injects parameters, adds stdout/stderr/widget
    outputs; a body with FAIL writes an error cell and raises, INTERRUPT is Ctrl-C midway."""
    import papermill

    def execute(source, output, parameters, **kwargs):
        nb = nbformat.read(source, as_version=4)
        injected = nbformat.v4.new_code_cell(f"mode = {parameters['mode']!r}")
        injected.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(2, injected)
        last = nb.cells[-1]
        last.outputs = [
            nbformat.v4.new_output("stream", name="stdout", text="kept\n"),
            nbformat.v4.new_output("stream", name="stderr", text="100%|#####| 3/3\n"),
            nbformat.v4.new_output(
                "display_data",
                data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"}},
            ),
        ]
        nb.metadata["widgets"] = {"state": {}}
        if "FAIL" in last.source or "INTERRUPT" in last.source:
            last.outputs = [
                nbformat.v4.new_output("error", ename="RuntimeError", evalue="boom", traceback=[])
            ]
            nbformat.write(nb, output)  # half-written, as papermill leaves it
            if "INTERRUPT" in last.source:
                raise KeyboardInterrupt
            raise papermill.PapermillExecutionError(3, 1, last.source, "RuntimeError", "boom", [])
        nbformat.write(nb, output)

    monkeypatch.setattr(papermill, "execute_notebook", execute)


@pytest.fixture
def book_project(project, fake_papermill):
    (project / "_toc.yml").write_text(TOC)
    _notebook(project / "notebooks" / "01_a.ipynb", "print('a')")
    _notebook(project / "notebooks" / "02_b.ipynb", "print('b')")
    return project


def test_executed_notebook_is_clean_and_build_info_records_the_run(book_project) -> None:
    import json

    reproduce("quick", book=False, root=book_project)
    executed = book_project / "book" / "notebooks"
    nb = nbformat.read(executed / "01_a.ipynb", as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert [o.get("name") for o in outputs] == ["stdout"]  # stderr and widget outputs stripped
    assert "widgets" not in nb.metadata
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "remove-cell" in injected[0].metadata["tags"]
    info = json.loads((executed / "build_info.json").read_text())
    assert set(info) >= {"mode", "commit", "date", "python", "torch", "equisae", "parameters"}
    device = resolve_device("auto").type  # reproduce's default device, recorded with the mode
    assert info["mode"] == "quick" and info["parameters"] == {"mode": "quick", "device": device}
    assert info["date"].endswith("+00:00") and info["commit"]
    assert not [p for p in (book_project / "_build" / "executing").rglob("*") if p.is_file()]


@pytest.mark.parametrize("how", ["fail", "interrupt"])
def test_half_written_notebook_never_reaches_the_book(book_project, how) -> None:
    reproduce("quick", book=False, root=book_project)
    executed = book_project / "book" / "notebooks" / "02_b.ipynb"
    good = executed.read_bytes()
    _notebook(book_project / "notebooks" / "02_b.ipynb", how.upper())
    error = NotebookFailed if how == "fail" else KeyboardInterrupt
    with pytest.raises(error) as info:
        reproduce("quick", only=["02"], book=False, root=book_project)
    assert executed.read_bytes() == good  # the previous complete copy is untouched
    assert not [p for p in (book_project / "_build" / "executing").rglob("*") if p.is_file()]
    if how == "fail":
        message = str(info.value)
        assert "\n" not in message and "02_b" in message and "boom" in message
        assert "--only 02" in message
        assert (book_project / "_build" / "failed" / "02_b.ipynb").is_file()


def test_book_completeness_is_judged_from_the_toc(book_project, monkeypatch) -> None:
    from equisae import reproduce as rep

    built = []
    monkeypatch.setattr(rep, "build_book", lambda root: built.append(root))
    reproduce("quick", root=book_project)
    assert built == [book_project]
    # a stale executed copy without a source is removed, not rendered
    stale = book_project / "book" / "notebooks" / "03_gone.ipynb"
    stale.write_text("{}")
    reproduce("quick", only=["01"], root=book_project)
    assert not stale.exists() and len(built) == 2
    # a toc entry whose source notebook was deleted is an error, even with a stale copy
    (book_project / "notebooks" / "02_b.ipynb").unlink()
    with pytest.raises(FileNotFoundError, match=r"02_b.*_toc.yml"):
        reproduce("quick", only=["01"], root=book_project)
    assert len(built) == 2


def test_garbled_timings_file_is_reported_and_replaced(book_project, capsys) -> None:
    import json

    timings = book_project / "results" / "quick" / "timings" / "notebooks.json"
    timings.parent.mkdir(parents=True)
    timings.write_text("{garbled")
    reproduce("quick", only=["01"], book=False, root=book_project)
    assert "notebooks.json" in capsys.readouterr().out
    assert set(json.loads(timings.read_text())) == {"01_a"}


def _cli(monkeypatch, capsys, argv, root):
    monkeypatch.chdir(root)
    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--only", ""], "--only 03"),
        (["--only", " , "], "--only 03"),
        (["--only", "99"], "--only 99 matches no notebook"),
    ],
)
def test_cli_bad_only_is_one_line(book_project, monkeypatch, capsys, argv, needle) -> None:
    monkeypatch.setattr("equisae.io.project_root", lambda: book_project)
    monkeypatch.setattr("equisae.reproduce.project_root", lambda: book_project)
    code, err = _cli(monkeypatch, capsys, ["reproduce", "--mode", "quick", *argv], book_project)
    assert code == 1 and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (book_project / "book" / "notebooks").exists()  # nothing ran


def test_cli_notebook_and_book_failures_are_one_line(book_project, monkeypatch, capsys) -> None:
    import subprocess

    monkeypatch.setattr("equisae.reproduce.project_root", lambda: book_project)
    _notebook(book_project / "notebooks" / "02_b.ipynb", "FAIL")
    code, err = _cli(monkeypatch, capsys, ["reproduce", "--mode", "quick"], book_project)
    assert code == 1 and "02_b" in err and "boom" in err and err.count("\n") == 1
    _notebook(book_project / "notebooks" / "02_b.ipynb", "pass")

    def broken(*args, **kwargs):
        raise subprocess.CalledProcessError(2, args[0])

    monkeypatch.setattr(subprocess, "run", broken)
    code, err = _cli(monkeypatch, capsys, ["reproduce", "--mode", "quick"], book_project)
    assert code == 1 and "book build failed" in err and "--no-book" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(RuntimeError, match="book build failed"):  # --debug: the real exception
        cli.main(["reproduce", "--mode", "quick", "--debug"])


def test_cli_ctrl_c_exits_130_with_one_line(monkeypatch, capsys) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("equisae.reproduce.reproduce", interrupted)
    assert cli.main(["reproduce", "--mode", "quick"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err


def test_cli_unreachable_scheduler_fails_fast_in_one_line(monkeypatch, capsys) -> None:
    import socket
    import time

    import equisae.sweeps

    def no_jobs(settings):
        raise AssertionError("jobs must not be built before the scheduler is checked")

    monkeypatch.setitem(equisae.sweeps.SWEEPS, "planted", no_jobs)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    code = cli.main(
        ["sweep", "planted", "--mode", "quick", "--scheduler", f"tcp://127.0.0.1:{port}"]
    )
    err = capsys.readouterr().err
    assert time.perf_counter() - start < 5.0
    assert code == 1 and f"127.0.0.1:{port}" in err and "serial" in err
    assert err.count("\n") == 1 and "Traceback" not in err
