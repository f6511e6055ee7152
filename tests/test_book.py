"""Tests of the Jupyter Book: configuration, pages, the runnable docs and the built HTML.

* Unmarked tests check the sources: versions agree, the TOC lists existing pages, the API page
  documents every module, citations resolve and the tolerance table matches ``equisae.check``
  (``tests/test_own_model.py`` runs the code on ``book/own_model.md``).
* ``notebooks`` tests need the executed notebooks in ``book/notebooks/``
  (``equisae reproduce --mode quick``).
* ``book`` tests need the built HTML (``_build/html``) and load every page in headless Chromium.
"""

from __future__ import annotations

import functools
import html as html_module
import http.server
import importlib.util
import json
import os
import pkgutil
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml

import equisae
from equisae import check

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
# the built book; EQUISAE_BOOK_HTML points the browser tests at another build
HTML = Path(os.environ.get("EQUISAE_BOOK_HTML", ROOT / "_build" / "html"))
SCREENSHOTS = HTML.parent / "screenshots"
EXECUTED = BOOK / "notebooks"
REQUIRED_STEMS = (
    "01_data",
    "02_base_models",
    "03_linear_representation",
    "04_planted_features",
    "05_frontier",
    "06_probing",
)
# every source notebook (07_digits, 08_dihedral once they exist) is a page of the book
NOTEBOOK_STEMS = tuple(sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
NOTEBOOK_STEMS = NOTEBOOK_STEMS or REQUIRED_STEMS
# {glue:text}`notebooks/NN_x.ipynb::key:fmt` and {glue}`notebooks/NN_x.ipynb::key`
GLUE_REF = re.compile(r"\{glue(?::\w+)?\}`([^`]+?\.ipynb)::([^`:]+)(?::[^`]*)?`")
CITE = re.compile(r"\{cite(?::\w+)?\}`([^`]+)`")


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc["parts"]:
        for chapter in part["chapters"]:
            files += [chapter["file"]] + [s["file"] for s in chapter.get("sections", [])]
    return files


def _pages() -> list[Path]:
    return sorted(BOOK.glob("*.md"))


# ---------------------------------------------------------------------------------------------
# sources


def test_versions_agree() -> None:
    """CITATION.cff, pyproject.toml, equisae.__version__ and the book's displayed version."""
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    config = _config()
    version = equisae.__version__
    assert str(cff["version"]) == version
    assert re.search(r'^version = "([^"]+)"', pyproject, flags=re.M).group(1) == version
    assert config["sphinx"]["config"]["version"] == version
    assert config["sphinx"]["config"]["release"] == version
    assert config["parse"]["myst_substitutions"]["version"] == version
    cite = (BOOK / "cite.md").read_text()
    assert "{{ version }}" in cite
    assert f"version = {{{version}}}" in cite
    bib = (BOOK / "references.bib").read_text()
    assert f"version = {{{version}}}" in bib
    assert cff["cff-version"] == "1.2.0"
    assert "2511.09432" in json.dumps(cff["preferred-citation"])


def test_toc_lists_existing_pages_and_all_notebooks() -> None:
    files = _toc_files()
    assert files[0] == "book/intro"
    assert len(files) == len(set(files)), "a page is listed twice in _toc.yml"
    for stem in (*REQUIRED_STEMS, *NOTEBOOK_STEMS):
        assert f"book/notebooks/{stem}" in files, f"notebooks/{stem}.ipynb is not in _toc.yml"
    assert "book/claims" in files, "the claims ledger page is not in _toc.yml"
    for name in files:
        if name.startswith("book/notebooks/") or name == "book/scaling":
            continue  # executed by `equisae reproduce` / written by the scaling page's owner
        assert (ROOT / f"{name}.md").is_file(), f"_toc.yml lists {name} but {name}.md is missing"
    listed = {Path(f).name for f in files}
    for page in _pages():
        assert page.stem in listed, f"{page} is not in _toc.yml"
    assert (ROOT / "notebooks").is_dir()


def test_every_page_has_one_title() -> None:
    for page in _pages():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        titles = [line for line in text.splitlines() if line.startswith("# ")]
        assert len(titles) == 1, f"{page.name} must have exactly one '# Title', has {titles}"


def test_api_page_documents_every_public_module() -> None:
    text = "\n".join(p.read_text() for p in [BOOK / "api.md", *sorted((BOOK / "api").glob("*.md"))])
    documented = set(re.findall(r"^\.\. automodule:: ([\w.]+)$", text, flags=re.M))
    modules = {m.name for m in pkgutil.walk_packages(equisae.__path__, "equisae.")}
    public = {m for m in modules if not any(part.startswith("_") for part in m.split("."))}
    assert public - documented == set(), "modules missing from book/api.md"
    assert documented - modules == set(), "book/api.md documents modules that do not exist"


def test_citations_resolve_and_bib_entries_are_complete() -> None:
    bib = (BOOK / "references.bib").read_text()
    entries = dict(re.findall(r"@\w+\{([\w-]+),(.*?)\n\}", bib, flags=re.S))
    for key, body in entries.items():
        for field_name in ("author", "title", "year"):
            assert re.search(rf"^\s*{field_name}\s*=", body, flags=re.M), f"{key}: no {field_name}"
    assert "2511.09432" in entries["erdogan2025equivariant"]
    assert "2410.24184" in entries["gorton2024group"]
    assert "2406.04093" in entries["gao2024scaling"]
    assert "2412.06410" in entries["bussmann2024batchtopk"]
    cited = set()
    for page in _pages():
        for group in CITE.findall(page.read_text()):
            cited |= {key.strip() for key in group.split(",")}
    assert cited, "no page cites anything"
    assert cited - set(entries) == set(), "cited keys missing from book/references.bib"


def test_rerun_page_lists_every_tolerance_rule() -> None:
    text = (BOOK / "rerun.md").read_text()
    for rule in (*check.TOLERANCE_RULES, check.DEFAULT_RULE):
        assert rule.description in text, f"book/rerun.md misses the rule {rule.description!r}"


def test_glue_references_point_at_listed_notebooks() -> None:
    """Every cross-notebook glue reference names a notebook in the TOC whose source glues it."""
    files = set(_toc_files())
    refs = [ref for page in _pages() for ref in GLUE_REF.findall(page.read_text())]
    assert refs, "book/results.md should paste numbers from the notebooks"
    for path, key in refs:
        stem = Path(path).stem
        assert f"book/notebooks/{stem}" in files
        source = ROOT / "notebooks" / f"{stem}.ipynb"
        if not source.is_file():
            pytest.skip(f"{source} not written yet")
        code = "\n".join("".join(c["source"]) for c in json.loads(source.read_text())["cells"])
        assert _source_glues(code, key), f"{source.name} does not glue {key!r}, which a page pastes"


def test_cross_notebook_glue_has_a_format_spec() -> None:
    """myst-nb splits the format spec at the last ':', so `path::key` alone loses its key."""
    for page in _pages():
        for body in re.findall(r"\{glue(?::\w+)?\}`([^`]+::[^`]+)`", page.read_text()):
            assert ":" in body.split("::", 1)[1], f"{page.name}: add a format to {body!r} (:d, :s)"


def _source_glues(code: str, key: str) -> bool:
    """Whether notebook code glues ``key``, literally or through an f-string like f"{name}_gap"."""
    for literal in re.findall(r"glue\(\s*f?[\"']([^\"']+)[\"']", code):
        pattern = "".join(
            ".+" if part.startswith("{") else re.escape(part)
            for part in re.split(r"(\{[^}]*\})", literal)
        )
        if re.fullmatch(pattern, key):
            return True
    return False


def test_source_glue_matching() -> None:
    code = 'glue("n_test", 3)\nglue(f"{name}_gap", g, display=False)\nglue( \'d\', 1)'
    assert _source_glues(code, "n_test") and _source_glues(code, "d")
    assert _source_glues(code, "gcnn_gap")
    assert not _source_glues(code, "gcnn_mse") and not _source_glues(code, "n_train")


def _load_docstring_extension():
    path = BOOK / "_ext" / "equisae_docstrings.py"
    spec = importlib.util.spec_from_file_location("equisae_docstrings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstring_extension_escapes_bars_outside_literals() -> None:
    ext = _load_docstring_extension()
    assert ext.escape_bars("orbit (N, |G|, d)") == r"orbit (N, \|G\|, d)"
    assert ext.escape_bars("shape ``(N, |G|, d)`` kept") == "shape ``(N, |G|, d)`` kept"
    assert ext.escape_bars(":math:`|x|` and |x|") == r":math:`|x|` and \|x\|"
    assert ext.escape_bars("| a line block") == "| a line block"
    assert ext.escape_bars("+-----+") == "+-----+"
    lines = ["a |b|", "``|c|``"]
    ext._process_docstring(None, "function", "f", None, None, lines)
    assert lines == [r"a \|b\|", "``|c|``"]


def _load_extension(name: str):
    spec = importlib.util.spec_from_file_location(name, BOOK / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_docstrings_are_reworded_for_the_book() -> None:
    ext = _load_docstring_extension()
    lines = ["Loss (METHOD.md section 2), METHOD.md's term", '(DEVELOPING.md, "x") ends higher']
    ext._process_docstring(None, "module", "m", None, None, lines)
    assert not any(internal_references(line) for line in lines), lines
    assert lines[0] == "Loss (the Method page section 2), the Method page's term"


def _load_book_extension():
    path = BOOK / "_ext" / "equisae_book.py"
    spec = importlib.util.spec_from_file_location("equisae_book", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parameters_cell_shows_the_injected_values() -> None:
    ext = _load_book_extension()
    source = 'mode = "full"\nseed = 0\nlayers = ("a",\n          "b")\n'
    shown = ext.apply_parameters(source, {"mode": "quick", "layers": ["c"]})
    lines = shown.splitlines()
    assert lines[0] == 'mode = "quick"  # set by equisae reproduce (default "full")'
    assert lines[1] == "seed = 0"
    assert lines[2].startswith("layers = ['c']") and len(lines) == 3
    assert ext.apply_parameters(source, {"mode": "full"}) == source
    nb = {
        "metadata": {"papermill": {"parameters": {"mode": "quick"}}},
        "cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": source}],
    }
    out = json.loads(ext.show_injected_parameters(json.dumps(nb)))
    assert out["cells"][0]["source"].startswith('mode = "quick"')


def test_banner_says_quick_builds_are_not_the_published_numbers() -> None:
    ext = _load_book_extension()
    quick = ext.banner_html({"mode": "quick", "commit": "abc1234", "date": "2025-01-02"})
    assert "quick" in quick and "abc1234" in quick and "2025-01-02" in quick
    assert "small CI configuration" in quick and "reference/full/" in quick
    full = ext.banner_html({"mode": "full"})
    assert "published" in full and "small CI" not in full
    assert "unknown" in ext.banner_html({})


def test_build_info_falls_back_to_the_notebooks(tmp_path: Path) -> None:
    ext = _load_book_extension()
    folder = tmp_path / "book" / "notebooks"
    folder.mkdir(parents=True)
    meta = {"papermill": {"parameters": {"mode": "quick"}, "end_time": "2025-03-04T05:06:07"}}
    (folder / "01_x.ipynb").write_text(json.dumps({"metadata": meta, "cells": []}))
    info = ext.read_build_info(tmp_path)
    assert info["mode"] == "quick" and info["date"] == "2025-03-04"
    (folder / "build_info.json").write_text(json.dumps({"mode": "full", "commit": "c0ffee"}))
    info = ext.read_build_info(tmp_path)
    assert info["mode"] == "full" and info["commit"] == "c0ffee"
    assert "| commit | c0ffee |" in ext.build_info_markdown(info)
    assert "| torch | not recorded |" in ext.build_info_markdown(info).replace("PyTorch", "torch")


def test_author_year_labels() -> None:
    from pybtex.database import parse_string

    ext = _load_book_extension()
    bib = parse_string((BOOK / "references.bib").read_text(), "bibtex")
    labels = {key: ext.author_year_label(entry) for key, entry in bib.entries.items()}
    assert labels["erdogan2025equivariant"] == "Erdogan and Lucic, 2025"
    assert labels["bricken2023monosemanticity"] == "Bricken et al., 2023"
    assert labels["equisae2026companion"] == "The equisae developers, 2026"
    assert _config()["sphinx"]["config"]["bibtex_default_style"] == "authoryear"


def test_timings_table_lists_every_notebook_with_both_modes() -> None:
    ext = _load_book_extension()
    table = ext.timings_markdown(ROOT)
    assert table.splitlines()[0] == "| notebook | quick mode | full mode |"
    for stem in REQUIRED_STEMS:
        assert f"| `{stem}` |" in table


def test_profile_directive_renders_the_committed_profile_or_says_there_is_none(
    tmp_path: Path,
) -> None:
    ext = _load_book_extension()
    assert "No profile of a full run" in ext.profile_source_markdown(tmp_path, "full")
    profile = {
        "mode": "full",
        "run": {"started": 1_700_000_000.0, "commit": "abc1234", "device": "cpu"},
        "machine": {"hosts": ["ci"], "cores": 2, "cpu": "a CPU", "python": "3.11"},
        "notebooks": {
            "05_frontier": {
                "wall_s": 100.0,
                "worker_s": 150.0,
                "phases": {"SAE training: topk": 70.0, "notebook overhead": 30.0},
            }
        },
        "book_s": 20.0,
        "outside_run": {"records": 0, "seconds": 0.0},
        "unknown_kinds": {},
        "unrecorded": {},
    }
    path = ext.profile_path(tmp_path, "full")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(profile))
    text = ext.profile_source_markdown(tmp_path, "full")
    assert "on ci (2 cores, a CPU)" in text and "2023-11-14" in text
    assert "| `05_frontier` | 100 | 70 | 30 | 150 | SAE training: topk |" in text
    assert "| book build | 20 |" in text and "| **total** | 120 |" in text
    assert not any(line.startswith("#") for line in text.splitlines())  # no section titles
    assert "{equisae-profile}" in (BOOK / "rerun.md").read_text()


def test_companion_bibtex_has_url_and_version() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    url = cff["url"]
    assert url.startswith("https://")
    for text in ((BOOK / "cite.md").read_text(), (BOOK / "references.bib").read_text()):
        entry = text[text.index("@software{equisae2026companion") :]
        entry = entry[: entry.index("\n}")]
        assert f"url     = {{{url}}}" in entry and f"version = {{{equisae.__version__}}}" in entry
    assert str(cff["date-released"])[:4] in (BOOK / "references.bib").read_text()


def test_zenodo_metadata_matches_the_citation_file() -> None:
    """.zenodo.json is ready for a DOI: title, version, creators, license, the paper's arXiv id."""
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    zenodo = json.loads((ROOT / ".zenodo.json").read_text())
    assert zenodo["version"] == cff["version"] == equisae.__version__
    assert zenodo["title"] == cff["title"] and zenodo["license"] == cff["license"]
    assert [c["name"] for c in zenodo["creators"]] == [a["name"] for a in cff["authors"]]
    related = {r["identifier"] for r in zenodo["related_identifiers"]}
    arxiv = [i["value"] for i in cff["preferred-citation"]["identifiers"] if i["type"] == "other"]
    assert arxiv and arxiv[0] in related


def test_no_cdn_in_the_configuration() -> None:
    config = _config()["sphinx"]["config"]
    assert config["nb_render_markdown_format"] == "myst"
    assert "://" not in config["mathjax_path"]


# ---------------------------------------------------------------------------------------------
# executed notebooks


def _executed(stem: str) -> dict:
    path = EXECUTED / f"{stem}.ipynb"
    if not path.is_file():
        pytest.skip(f"{path} not found: run `equisae reproduce --mode quick` first")
    return json.loads(path.read_text())


def _glued_keys(nb: dict) -> set[str]:
    keys = set()
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            scrap = output.get("metadata", {}).get("scrapbook", {})
            if "name" in scrap:
                keys.add(scrap["name"])
    return keys


@pytest.mark.notebooks
@pytest.mark.parametrize("stem", NOTEBOOK_STEMS)
def test_executed_notebook_hides_injected_parameters(stem: str) -> None:
    nb = _executed(stem)
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected, f"{stem}: papermill injected no parameters cell"
    for cell in injected:
        assert "remove-cell" in cell["metadata"]["tags"]
    first, second = nb["cells"][0], nb["cells"][1]
    first_text = "".join(first["source"])  # a string or a list of lines in .ipynb JSON
    assert first["cell_type"] == "markdown" and first_text.lstrip().startswith("# ")
    assert "parameters" in second["metadata"].get("tags", [])
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"{stem} has error outputs"


@pytest.mark.notebooks
def test_pasted_glue_keys_exist_in_executed_notebooks() -> None:
    refs = [ref for page in _pages() for ref in GLUE_REF.findall(page.read_text())]
    for path, key in refs:
        keys = _glued_keys(_executed(Path(path).stem))
        assert key in keys, f"{path} glues no {key!r} (it glues {sorted(keys)})"


# ---------------------------------------------------------------------------------------------
# one self-contained book with one set of facts

# what a reader of the book cannot follow: the project's internal notes, its issue tracker,
# its release history and the conditions of the machine a number was measured on
INTERNAL = re.compile(
    r"METHOD\.md|DEVELOPING|developer (?:notes|guide)|\bissues?\b|\breleases?\b"
    r"|earlier release|first release|machine shared|shared with other jobs"
    r"|\bintegrator\b|\bsessions?\b",
    re.I,
)
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def internal_references(text: str) -> list[str]:
    """Internal wording in ``text`` (each match with some context)."""
    return [text[max(m.start() - 40, 0) : m.end() + 40] for m in INTERNAL.finditer(text)]


def contradictions(text: str, n_notebooks: int) -> list[str]:
    """Statements that contradict the facts of the companion (count, groups, real images)."""
    found = []
    for match in re.finditer(r"\b(\w+) notebooks\b", text):
        word = match.group(1).lower()
        if word in NUMBER_WORDS and NUMBER_WORDS.index(word) != n_notebooks:
            found.append(f"{match.group(0)!r} (there are {n_notebooks})")
    patterns = (
        r"notebooks only use \$?C_?4",  # notebook 08 uses D4
        r"(?:galaxy|cell) images?,? which we do not reproduce",  # notebook 07 has real images
        r"Claims 2 and 3: probing",  # probing is claim 3a in the ledger
    )
    for pattern in patterns:
        found += [m.group(0) for m in re.finditer(pattern, text, flags=re.I)]
    return found


def _markdown_sources() -> list[tuple[str, str]]:
    """Every page and every notebook Markdown cell (the prose a reader sees)."""
    pages = sorted(BOOK.rglob("*.md"))
    out = [(str(p.relative_to(ROOT)), p.read_text()) for p in pages]
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        out.append((path.name, text))
    return out


def test_internal_and_contradiction_checks_catch_what_they_should() -> None:
    assert internal_references("see METHOD.md, section 2") and internal_references(
        "our first release"
    )
    assert internal_references("(machine shared with other jobs)")
    assert internal_references("the 0.05 the issue asks for")
    assert internal_references("see the DEVELOPING notes") and internal_references("the integrator")
    assert internal_references("rerun in another session")
    assert not internal_references("the method page; 0.05 as required; the data are released")
    assert contradictions("in six notebooks", 8) and not contradictions("in eight notebooks", 8)
    assert contradictions("the notebooks only use $C_4$.", 8)
    assert contradictions("real galaxy and cell images, which we do not reproduce", 8)


def test_sources_are_self_contained_and_agree() -> None:
    n = len(NOTEBOOK_STEMS)
    problems = []
    for name, text in _markdown_sources():
        problems += [f"{name}: internal reference ...{m}..." for m in internal_references(text)]
        problems += [f"{name}: {c}" for c in contradictions(text, n)]
    assert not problems, "\n".join(problems[:30])


def test_method_page_states_the_weights_the_code_uses() -> None:
    """lambda_eq on the base models (sweeps) and in the planted setting, from the settings."""
    from equisae.sweeps.planted import PlantedSettings
    from equisae.sweeps.settings import SAETraining

    method = (BOOK / "method.md").read_text()
    for value in (SAETraining.lambda_eq, PlantedSettings.lambda_eq, SAETraining.lambda_inv):
        assert f"= {value:g}$" in method, f"the Method page does not state the weight {value:g}"


def test_findings_accessor_reads_both_ledger_formats(tmp_path: Path) -> None:
    findings = _load_extension("equisae_findings")
    current = findings.read_findings(ROOT / "reference" / "full" / "claims.json")
    assert current and all(f.verdict for f in current)
    assert current[0].id == "claim-1" and current[0].n_seeds
    plain = [
        {
            "id": "1",
            "title": "Claim 1",
            "label": "",
            "number": "0.950",
            "spread": "± 0.03",
            "n_seeds": 3,
            "setting": "C4",
            "probe": "none",
            "scope": "2 of 10",
            "reason": "ok.",
            "verdict": "mixed",
        },
    ]
    path = tmp_path / "claims.json"
    path.write_text(json.dumps(plain))
    (entry,) = findings.read_findings(path)
    assert (entry.id, entry.number, entry.n_seeds, entry.scope) == ("1", "0.950", 3, "2 of 10")
    html = findings.findings_html([entry])
    assert 'href="claims.html#claim-1"' in html and "n=3" in html and "mixed" in html
    assert findings.anchor("claim3_probing/k1") == "claim-3-probing-k1"
    assert findings.anchor("claim-3a-dense") == "claim-3a-dense"
    assert findings.anchor("planted-recovery") == "planted-recovery"
    path.write_text(json.dumps({"claims": "nope"}))
    with pytest.raises(ValueError, match="claims"):
        findings.read_findings(path)


def _record(day: str, commit: str, mode: str = "full") -> dict[str, str]:
    return {"mode": mode, "commit": commit, "date": f"{day}T10:00:00+00:00"}


def test_run_stamp_gives_the_days_and_commits_the_notebooks_ran() -> None:
    findings = _load_extension("equisae_findings")
    one = {"01_a": _record("2026-11-28", "aaa1111"), "02_b": _record("2026-11-28", "aaa1111")}
    assert findings.run_stamp(one) == {"date": "2026-11-28", "commit": "aaa1111", "mode": "full"}
    two = {"02_b": _record("2026-11-30", "bbb2222"), "01_a": _record("2026-11-28", "aaa1111")}
    stamp = findings.run_stamp(two)
    assert stamp["date"] == "2026-11-28 to 2026-11-30" and stamp["commit"] == "aaa1111, bbb2222"
    assert findings.run_stamp({}) == {} and findings.run_stamp({"x": {"date": "soon"}}) == {}


def _git_commit(root: Path, day: str, *paths: str) -> None:
    import subprocess

    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": f"{day}T12:00:00",
        "GIT_COMMITTER_DATE": f"{day}T12:00:00",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", "add", *paths], cwd=root, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", day], cwd=root, check=True, env=env)


def test_provenance_shows_the_day_the_run_ran_not_the_ledger_rebuild(tmp_path: Path) -> None:
    """The pages of committed numbers name the day of the run (its run record) or, without one,
    the day the results were published; the day the ledger was rebuilt is said apart."""
    import subprocess

    findings = _load_extension("equisae_findings")
    recorded, unrecorded = tmp_path / "recorded", tmp_path / "unrecorded"
    for root in (recorded, unrecorded):
        folder = root / "reference" / "full"
        (folder / "run").mkdir(parents=True)
        (folder / "06_probing.json").write_text("{}")
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        if root == recorded:
            record = {
                "05_f": _record("2026-11-27", "abc1234"),
                "06_p": _record("2026-11-28", "abc1234"),
            }
            (folder / "run" / "notebooks.json").write_text(json.dumps(record))
        _git_commit(root, "2026-11-30", ".")
        (folder / "claims.json").write_text("{}")
        _git_commit(root, "2026-12-03", ".")

    ref = findings.reference_provenance(recorded)
    assert ref["date"] == "2026-11-27 to 2026-11-28" and ref["commit"] == "abc1234"
    assert ref["ledger"] == "2026-12-03" and "published" not in ref
    line = findings.provenance_html("book/claims", {}, ref)
    assert "full-mode run of 2026-11-27 to 2026-11-28" in line and "abc1234" in line
    assert "rebuilt from them on 2026-12-03" in line

    ref = findings.reference_provenance(unrecorded)
    assert "date" not in ref and ref["published"] == "2026-11-30" and ref["ledger"] == "2026-12-03"
    line = findings.provenance_html("book/intro", {}, ref)
    assert "published on 2026-11-30" in line and "not recorded" in line
    assert line.index("2026-11-30") < line.index("2026-12-03")


def test_build_pages_show_the_day_their_notebooks_ran(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BOOK / "_ext"))
    findings = _load_extension("equisae_findings")
    folder = tmp_path / "book" / "notebooks"
    folder.mkdir(parents=True)
    own = {"01_a": _record("2026-12-01", "aaa1111", "quick")}
    own["02_b"] = _record("2026-12-02", "bbb2222", "quick")
    for stem, record in own.items():
        meta = {"equisae": record, "papermill": {"parameters": {"mode": "quick"}}}
        (folder / f"{stem}.ipynb").write_text(json.dumps({"metadata": meta, "cells": []}))
    info = {"mode": "quick", "commit": "bbb2222", "date": "2026-12-09T08:00:00+00:00"}
    (folder / "build_info.json").write_text(json.dumps({**info, "notebooks": own}))
    page = findings.build_provenance(tmp_path, "book/notebooks/01_a")
    assert page == {"mode": "quick", "commit": "aaa1111", "date": "2026-12-01"}
    line = findings.provenance_html("book/notebooks/01_a", page, {"mode": "full"})
    assert "quick-mode run (run on 2026-12-01, commit <code>aaa1111</code>)" in line
    other = findings.build_provenance(tmp_path, "book/method")
    assert other["date"] == "2026-12-01 to 2026-12-02" and "2026-12-09" not in str(other)
    results = findings.provenance_html("book/results", other, {"mode": "full"})
    assert "aaa1111, bbb2222" in results and "headline figure from the committed full" in results


def test_results_files_are_copied_for_download(tmp_path: Path) -> None:
    findings = _load_extension("equisae_findings")
    copied = findings.copy_results(ROOT, tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in copied}
    assert "results/full/claims.json" in names and "results/quick/06_probing.json" in names
    assert findings.count_words(len(NOTEBOOK_STEMS)) in (BOOK / "intro.md").read_text() or (
        "{{ n_notebooks }}" in (BOOK / "intro.md").read_text()
    )


# ---------------------------------------------------------------------------------------------
# built HTML in a real browser, with the network blocked

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
    # no network but localhost: a CDN script or font fails to load and is reported
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
)
# what a reader must never see in a page's text
RAW_PIPE_TABLE = re.compile(r"\|\s*:?-{3,}:?\s*\|")
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|(?<![\\$\w])\$(?!\s)[^$\n]{1,80}(?<!\s)\$(?!\w)")
LOCAL_PATH = re.compile(r"(?<![\w.~])/(?:work|tmp|root|home)/[\w.-]")
PATH_LIKE_ALT = re.compile(r"(^|/)[\w.-]+\.(png|jpe?g|svg|gif)$|^_images/|^/")


def text_problems(text: str) -> list[str]:
    """What a reader would notice in a page's visible prose (code blocks already removed)."""
    problems = []
    for name, pattern in (("raw pipe table", RAW_PIPE_TABLE), ("raw TeX", RAW_TEX)):
        match = pattern.search(text)
        if match:
            start = max(match.start() - 40, 0)
            problems.append(f"{name}: ...{text[start : match.end() + 40]!r}")
    return problems


def path_problems(text: str) -> list[str]:
    """Local absolute paths of a building machine in a page's text (code included)."""
    return [f"local path {m.group(0)!r}" for m in LOCAL_PATH.finditer(text)][:3]


def figure_problems(figures: list[dict]) -> list[str]:
    """Images in the article that are not captioned figures with real alt text."""
    problems = []
    for fig in figures:
        alt = (fig["alt"] or "").strip()
        if not fig["caption"].strip():
            problems.append(f"image without a figure caption: {fig['src']}")
        if len(alt.split()) < 3 or PATH_LIKE_ALT.search(alt):
            problems.append(f"image without real alt text (alt={alt!r}): {fig['src']}")
    return problems


def test_reader_checks_catch_what_they_should() -> None:
    assert text_problems("a | --- | --- | b") and text_problems(r"where \(M^4 = I\) holds")
    assert text_problems("the map $M^p$ for every p") and text_problems(r"see \[x\]")
    assert not text_problems("costs $5 and $10 in total; a | b; R^2 = 0.99")
    assert path_problems("wrote /work/main/results/quick/01.json") and path_problems("/tmp/x")
    assert not path_problems("results/quick/01.json and reference/full/ and ~/tmp/x")
    good = {"src": "a.png", "alt": "Eigenvalues of M against the unit circle", "caption": "F"}
    assert not figure_problems([good])
    assert figure_problems([{**good, "caption": ""}])
    assert figure_problems([{**good, "alt": "_images/abc.png"}])
    assert figure_problems([{**good, "alt": ""}])


def _find_chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def served_book() -> Iterator[str]:
    """``_build/html`` on an http.server at a free localhost port."""
    if not (HTML / "index.html").is_file():
        pytest.skip(f"{HTML} not built: run `jupyter-book build . -W -n --keep-going --all`")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(served_book: str):
    """Headless Chromium via selenium, offline; a failure (not a skip) on CI when missing."""
    found = _find_chromium()
    if found is None:
        message = "headless Chromium not found: apt-get install chromium chromium-driver"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("selenium is not installed")
        pytest.skip("selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _html_pages() -> list[str]:
    # gallery/ is the latent gallery's own page, framed by book/gallery.html (which carries the
    # provenance line); tests/test_gallery.py opens it in the browser
    skip = (
        "_static/",
        "_sources/",
        "_images/",
        "_modules/",
        "gallery/",
        "genindex",
        "search",
        "py-modindex",
    )
    pages = [p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")]
    return sorted(p for p in pages if not p.startswith(skip))


_PAGE_STATE = """
const imgs = Array.from(document.images).map(i => ({
    src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth,
    shown: i.getBoundingClientRect().width, figure: !!i.closest('figure, .cell_output')}));
const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'));
const outputs = document.querySelectorAll('.cell_output').length;
return {imgs: imgs, links: links, outputs: outputs, title: document.title};
"""

# What a reader sees once MathJax has typeset the page (or failed to).
_PAGE_EYES = """
const done = arguments[arguments.length - 1];
let finished = false;
function collect() {
  if (finished) { return; }
  finished = true;
  const article = document.querySelector('article') || document.querySelector('main') || document.body;
  const prose = article.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, mjx-container, .highlight, .headerlink')
       .forEach(e => e.remove());
  const maths = Array.from(article.querySelectorAll('.math'));
  const figures = Array.from(article.querySelectorAll('img')).map(img => {
    const fig = img.closest('figure');
    const cap = fig ? fig.querySelector('figcaption') : null;
    return {src: img.getAttribute('src'), alt: img.getAttribute('alt'),
            caption: cap ? cap.innerText : ''};
  });
  const banner = document.querySelector('.equisae-banner');
  const params = document.querySelector('.tag_parameters');
  done({
    prose: prose.textContent,
    text: article.innerText,
    maths: maths.length,
    typeset: maths.filter(m => m.querySelector('mjx-container')).length,
    mjx: document.querySelectorAll('mjx-container').length,
    figures: figures,
    stderr: article.querySelectorAll('.stderr').length,
    banner: banner ? banner.innerText : null,
    parameters: params ? params.innerText : null,
    height: document.documentElement.scrollHeight,
  });
}
setTimeout(collect, 20000);
if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
  MathJax.startup.promise.then(collect, collect);
} else if (document.querySelector('.math')) {
  setTimeout(collect, 3000);  // MathJax did not load: the check below reports it
} else {
  collect();
}
"""


def _local_target(page_url: str, href: str, base: str) -> Path | None:
    """The file a local href points at, or None for external links and same-page anchors."""
    if href.startswith(("#", "mailto:", "javascript:", "data:")):
        return None
    url = urljoin(page_url, href)
    if not url.startswith(base):
        return None
    path = unquote(urlsplit(url).path)[len(urlsplit(base).path) :]
    target = HTML / path
    return target / "index.html" if path == "" or path.endswith("/") else target


def _console_errors(browser) -> list[str]:
    entries = browser.get_log("browser")
    return [e["message"] for e in entries if e.get("level") == "SEVERE"]


def _built_mode() -> str | None:
    info = EXECUTED / "build_info.json"
    if info.is_file():
        return json.loads(info.read_text()).get("mode")
    modes = set()
    for stem in NOTEBOOK_STEMS:
        path = EXECUTED / f"{stem}.ipynb"
        if path.is_file():
            meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
            modes.add((meta.get("parameters") or {}).get("mode"))
    return modes.pop() if len(modes) == 1 else None


@pytest.mark.book
def test_every_page_loads_with_images_links_and_figures(browser, served_book: str) -> None:
    pages = _html_pages()
    assert "book/results.html" in pages and "book/intro.html" in pages
    for stem in NOTEBOOK_STEMS:
        assert f"book/notebooks/{stem}.html" in pages
    problems: list[str] = []
    notebook_figures = 0
    for page in pages:
        url = served_book + page
        browser.get(url)
        state = browser.execute_script(_PAGE_STATE)
        url = browser.current_url  # index.html redirects to the root page
        if not state["title"]:
            problems.append(f"{page}: empty <title>")
        for img in state["imgs"]:
            if not img["complete"] or img["width"] == 0:
                problems.append(f"{page}: broken image {img['src']}")
            elif img["figure"] and img["shown"] == 0:
                problems.append(f"{page}: figure {img['src']} is not displayed")
        for href in state["links"]:
            target = _local_target(url, href, served_book)
            if target is not None and not target.is_file():
                problems.append(f"{page}: broken link {href}")
        if page.startswith("book/notebooks/"):
            figures = [i for i in state["imgs"] if i["figure"]]
            if not figures:
                problems.append(f"{page}: a notebook page without any rendered figure")
            notebook_figures += len(figures)
    assert not problems, "\n".join(problems[:50])
    assert notebook_figures >= len(NOTEBOOK_STEMS)


@pytest.mark.book
def test_pages_as_a_reader_sees_them_offline(browser, served_book: str) -> None:
    """Math typeset, tables rendered, figures captioned, no JS error, no local path, banners.

    Chromium runs with every host but localhost unresolvable, so anything fetched from a CDN
    fails (and logs a console error). Every page is screenshotted to _build/screenshots/.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    mode = _built_mode()
    problems: list[str] = []
    typeset_pages = 0
    _console_errors(browser)  # drop what earlier tests logged
    for page in _html_pages():
        browser.set_window_size(1280, 1600)
        browser.get(served_book + page)
        seen = browser.execute_async_script(_PAGE_EYES)
        where = f"{page}:"
        if seen["maths"]:
            typeset_pages += 1
            if seen["typeset"] < seen["maths"] or not seen["mjx"]:
                problems.append(
                    f"{where} math not typeset ({seen['typeset']} of {seen['maths']} formulas)"
                )
        problems += [f"{where} {p}" for p in text_problems(seen["prose"])]
        problems += [f"{where} {p}" for p in path_problems(seen["text"])]
        problems += [f"{where} {p}" for p in figure_problems(seen["figures"])]
        if seen["stderr"]:
            problems.append(f"{where} {seen['stderr']} stderr output block(s)")
        errors = [e for e in _console_errors(browser) if "favicon.ico" not in e]
        problems += [f"{where} console error: {e[:300]}" for e in errors]
        if page.startswith("book/notebooks/") or page == "book/results.html":
            if not seen["banner"] or "mode" not in seen["banner"]:
                problems.append(f"{where} no build banner with the build's mode")
            elif mode and mode not in seen["banner"]:
                problems.append(f"{where} the banner does not name the mode {mode!r}")
            elif mode == "quick" and "full" not in seen["banner"]:
                problems.append(f"{where} a quick build's banner must point at the full numbers")
        if page.startswith("book/notebooks/") and mode and seen["parameters"] is not None:
            if f'mode = "{mode}"' not in seen["parameters"]:
                problems.append(
                    f"{where} the parameters cell does not show the mode that ran ({mode!r}): "
                    f"{seen['parameters'][:200]!r}"
                )
        height = min(max(int(seen["height"]), 800), 12000)
        browser.set_window_size(1280, height)
        shot = SCREENSHOTS / (page.removesuffix(".html").replace("/", "_") + ".png")
        if not browser.save_screenshot(str(shot)):
            problems.append(f"{where} no screenshot")
    assert typeset_pages >= 2, "the method and results pages have math"
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:60])


@pytest.mark.book
def test_no_page_loads_anything_from_the_network() -> None:
    """Every script, stylesheet and image of the built book is a local file."""
    external = re.compile(r"<(?:script|link|img)\b[^>]*(?:src|href)=\"(https?:)?//[^\"]+\"")
    found = []
    for page in HTML.rglob("*.html"):
        for match in external.finditer(page.read_text(errors="replace")):
            found.append(f"{page.relative_to(HTML)}: {match.group(0)[:120]}")
    assert not found, "\n".join(found[:20])
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").is_file()


@pytest.mark.book
def test_results_page_screenshot_and_pasted_numbers(browser, served_book: str) -> None:
    browser.get(served_book + "book/results.html")
    pasted = browser.execute_script(
        "return Array.from(document.querySelectorAll('.pasted-text')).map(e => e.textContent);"
    )
    assert pasted, "the results page shows no pasted (glued) numbers"
    for text in pasted:
        assert re.search(r"\d", text), f"pasted value {text!r} is not a number"
    height = browser.execute_script("return document.documentElement.scrollHeight;")
    browser.set_window_size(1280, min(max(int(height), 800), 8000))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "results.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    browser.get(served_book + "book/cite.html")
    assert f"equisae version {equisae.__version__}" in browser.find_element("tag name", "body").text


def _content_pages() -> list[str]:
    """The built pages with content (not the redirect that ``index.html`` is)."""
    return [
        page
        for page in _html_pages()
        if 'http-equiv="refresh"' not in (HTML / page).read_text(errors="replace")[:3000].lower()
    ]


def _visible_text(page_html: str) -> str:
    """The text of a built page's main content (no scripts, styles, tags or navigation)."""
    main = re.search(r"<main\b.*?</main>", page_html, flags=re.S)
    body = main.group(0) if main else page_html
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", body, flags=re.S)
    body = re.sub(r"<[^>]+>", " ", body)
    return re.sub(r"\s+", " ", html_module.unescape(body))


@pytest.mark.book
def test_built_book_is_self_contained_agrees_and_says_its_provenance() -> None:
    """No internal reference or contradiction on any built page; every page names its results."""
    if not (HTML / "index.html").is_file():
        pytest.skip(f"{HTML} not built")
    problems = []
    for page in _content_pages():
        source = (HTML / page).read_text(errors="replace")
        text = _visible_text(source)
        problems += [f"{page}: internal reference ...{m}..." for m in internal_references(text)]
        problems += [f"{page}: {c}" for c in contradictions(text, len(NOTEBOOK_STEMS))]
        if 'class="equisae-provenance"' not in source:
            problems.append(f"{page}: no line saying which results the page shows")
    for mode in ("full", "quick"):
        assert (HTML / "results" / mode / "claims.json").is_file(), f"no {mode} results download"
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])


# Horizontal overflow of the page and of its parts, and the displayed size of every figure
_LAYOUT = """
const article = document.querySelector('article') || document.querySelector('main');
const wide = [];
article.querySelectorAll('table, div.math, mjx-container[display="true"], pre, dl.py > dt')
  .forEach(e => { if (e.scrollWidth > e.clientWidth + 2) {
    // by code points: MathJax's letters are surrogate pairs that a cut would leave invalid
    wide.push(e.tagName.toLowerCase() + ' ' + Array.from(e.innerText || '').slice(0, 60).join(''));
  } });
const figures = Array.from(article.querySelectorAll('figure img, .cell_output img'))
  .filter(i => i.naturalWidth > 0)
  .map(i => ({src: i.getAttribute('src'), natural: i.naturalWidth,
              shown: i.getBoundingClientRect().width}));
return {page: document.documentElement.scrollWidth, view: window.innerWidth,
        wide: wide, figures: figures};
"""
# a 10-point figure label is at least 8 points as displayed when the figure is shown at this
# fraction of its natural size or more (matplotlib's 100 dpi against the browser's 96 px/in)
MIN_FIGURE_SCALE = 0.77
WIDTHS = (1280, 390)


def layout_problems(width: int, state: dict) -> list[str]:
    """What does not fit at ``width`` px: the page scrolls sideways, a table, equation or
    signature needs its own scroll bar (at desktop width), or a figure is shrunk below
    :data:`MIN_FIGURE_SCALE` of its natural size (at desktop width)."""
    problems = []
    if state["page"] > state["view"] + 1:
        problems.append(f"at {width} px the page is {state['page']} px wide")
    if width >= 1000:
        problems += [f"at {width} px scrolls sideways: {w!r}" for w in state["wide"]]
        for fig in state["figures"]:
            scale = fig["shown"] / fig["natural"]
            if scale < MIN_FIGURE_SCALE:
                problems.append(f"figure {fig['src']} shown at {scale:.0%} of its size")
    return problems


def test_layout_checks_catch_what_they_should() -> None:
    fits = {
        "page": 1280,
        "view": 1280,
        "wide": [],
        "figures": [{"src": "a", "natural": 760, "shown": 700}],
    }
    assert not layout_problems(1280, fits)
    phone = {**fits, "page": 390, "view": 390}
    assert not layout_problems(390, phone) and layout_problems(390, {**phone, "page": 520})
    assert layout_problems(1280, {**fits, "wide": ["table | a | b"]})
    assert not layout_problems(390, {**phone, "wide": ["table | a | b"]})
    shrunk = {**fits, "figures": [{"src": "a", "natural": 1400, "shown": 700}]}
    assert layout_problems(1280, shrunk) and not layout_problems(
        390, {**phone, "figures": shrunk["figures"]}
    )


# the width of the article column of the book's theme at 1280 px and at 390 px (measured)
COLUMN_PX = {1280: 674, 390: 341}
_BROKEN_WORDS = """
const broken = [];
document.querySelectorAll('td:first-child').forEach(cell => {
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const re = /\\S+/g;
    let m;
    while ((m = re.exec(node.data)) !== null) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const lines = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
      if (lines.size > 1) { broken.push(m[0]); }
    }
  }
});
const table = document.querySelector('table');
return {broken: broken, scroll: table.scrollWidth, width: table.clientWidth};
"""


def _claims_table_html(column_px: int) -> str:
    """The ledger's summary table of ``reference/full`` as docutils writes a MyST table: roles
    as links, every cell's text in a ``<p>``, inside the claims directive's container."""
    from markdown_it import MarkdownIt

    from equisae.ledger import build_ledger, claims_table

    text = claims_table(build_ledger(ROOT / "reference" / "full"))
    text = re.sub(r"\{(?:ref|doc)\}`([^`<]+?) <([^`>]+)>`", r"[\1](#\2)", text)
    table = MarkdownIt("commonmark").enable("table").render(text)
    table = re.sub(r"<(td|th)([^>]*)>(.*?)</\1>", r"<\1\2><p>\3</p></\1>", table, flags=re.S)
    table = table.replace("<table>", '<table class="table">')
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f'<link rel="stylesheet" href="{(BOOK / "_static" / "equisae.css").as_uri()}"></head>'
        f'<body style="margin:0"><article class="bd-article" style="width:{column_px}px">'
        f'<div class="equisae-generated equisae-claims">{table}'
        "</div></article></body></html>"
    )


@pytest.mark.slow
def test_claims_table_keeps_words_whole_at_the_column_width(tmp_path: Path) -> None:
    """The ledger's summary table in the book's CSS at the column width of a desktop and of a
    phone: no word of the first column is split across lines ("matri x"), and at the desktop
    width the table needs no scroll bar (at phone width it scrolls in its own box)."""
    found = _find_chromium()
    if found is None:
        pytest.skip("headless Chromium not found: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    states = {}
    try:
        for window, column in COLUMN_PX.items():
            page = tmp_path / f"claims_{window}.html"
            page.write_text(_claims_table_html(column))
            driver.get(page.as_uri())
            states[window] = driver.execute_script(_BROKEN_WORDS)
    finally:
        driver.quit()
    for window, state in states.items():
        assert not state["broken"], f"at {window} px, words split: {state['broken'][:10]}"
    desktop = states[1280]
    assert desktop["scroll"] <= desktop["width"] + 2, (
        f"the claims table is {desktop['scroll']} px wide in a {desktop['width']} px column"
    )


@pytest.mark.book
def test_every_page_fits_the_column_at_desktop_and_phone_width(browser, served_book: str) -> None:
    """Measured per page at 1280 and 390 px: see :func:`layout_problems`."""
    problems: list[str] = []
    measured: dict[str, dict] = {}
    for width in WIDTHS:
        browser.set_window_size(width, 1000)
        for page in _content_pages():
            browser.get(served_book + page)
            browser.execute_async_script(_PAGE_EYES)  # wait for MathJax to typeset
            state = browser.execute_script(_LAYOUT)
            measured[f"{width}:{page}"] = state
            problems += [f"{page}: {p}" for p in layout_problems(width, state)]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "layout.json").write_text(json.dumps(measured, indent=1))
    browser.set_window_size(1280, 1600)
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:80])
