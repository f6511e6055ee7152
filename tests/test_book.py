"""Tests of the Jupyter Book: configuration, pages, the runnable docs and the built HTML.

* Unmarked tests check the sources: versions agree, the TOC lists existing pages, the API page
  documents every module, citations resolve, the tolerance table matches ``equisae.check``, and
  the code on ``book/own_model.md`` runs.
* ``notebooks`` tests need the executed notebooks in ``book/notebooks/``
  (``equisae reproduce --mode quick``).
* ``book`` tests need the built HTML (``_build/html``) and load every page in headless Chromium.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import pkgutil
import re
import shutil
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
NOTEBOOK_STEMS = (
    "01_data",
    "02_base_models",
    "03_linear_representation",
    "04_planted_features",
    "05_frontier",
    "06_probing",
)
# {glue:text}`notebooks/NN_x.ipynb::key:fmt` and {glue}`notebooks/NN_x.ipynb::key`
GLUE_REF = re.compile(r"\{glue(?::\w+)?\}`([^`]+?\.ipynb)::([^`:]+)(?::[^`]*)?`")
CITE = re.compile(r"\{cite(?::\w+)?\}`([^`]+)`")


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc["parts"]:
        files += [chapter["file"] for chapter in part["chapters"]]
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
    for stem in NOTEBOOK_STEMS:
        assert f"book/notebooks/{stem}" in files
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
    text = (BOOK / "api.md").read_text()
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


@pytest.mark.slow
def test_own_model_page_runs() -> None:
    """The code on book/own_model.md, run as one script, produces what the page says."""
    import torch

    text = (BOOK / "own_model.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        namespace: dict = {}
        exec(compile("\n".join(blocks), str(BOOK / "own_model.md"), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    acts, fit, sae, latents = (namespace[k] for k in ("acts", "fit", "sae", "latents"))
    assert tuple(acts.acts.shape) == (600, 4, 32)
    assert len(fit.r2_single) == 4
    assert fit.r2_single[0] == pytest.approx(1.0, abs=1e-6)  # M^0 = I
    assert max(fit.r2_identity[1:]) < min(fit.r2_single[1:])  # M explains more than nothing
    assert 0.0 < namespace["trained"].final["fvu"] < 1.0
    assert tuple(latents.shape) == (100, 64)
    assert int((latents != 0).sum(1).max()) <= sae.k
    assert namespace["poses"].shape == (100,)
    assert "'0', '1', '2', '3', '4', '5', '6'" in text  # the page shows list_layers' output


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
# built HTML in a real browser

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
)


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
    """Headless Chromium via selenium; a failure (not a skip) on CI when it is missing."""
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
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _html_pages() -> list[str]:
    skip = ("_static/", "_sources/", "_images/")
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
