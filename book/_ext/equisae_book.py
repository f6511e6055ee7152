"""Sphinx extension for the equisae book: what a reader sees beyond the pages' own text.

* **Offline math**: MathJax 3 is copied from the installed ``django-static-mathjax`` wheel (a
  PyPI package that ships MathJax's ``es5`` build) into ``_static/mathjax/``; ``mathjax_path``
  in ``_config.yml`` points at it, so no page loads anything from a CDN.
* **Build banner**: every notebook page and the results page start with the build's mode,
  commit and date (from ``book/notebooks/build_info.json``, written by ``equisae reproduce``;
  without it, from the notebooks' papermill metadata). In quick mode the banner says that these
  are the small CI configuration and where the published (full) numbers are.
* **The parameters that ran**: papermill's injected cell stays hidden; the visible
  ``parameters`` cell is rewritten at read time to the values that were injected.
* **Author-year bibliography**: the pybtex style ``authoryear`` labels entries
  "Erdogan and Lucic, 2025" to match the author-year citations.
* **No thebe scripts**: thebe is off, but sphinx-thebe registers its configuration script on
  every read pass (``const THEBE_JS_URL`` declared twice is a JS error); they are dropped.
* Directives ``{equisae-timings}`` (run time per notebook, quick and full, from
  ``reference/*/timings/notebooks.json``), ``{equisae-profile}`` (seconds per phase and
  notebook, from ``benchmarks/results/profile_<mode>.json``) and ``{equisae-build-info}``
  (environment stamp).
* Directive ``{equisae-claims}`` (the claims ledger of :mod:`equisae.ledger`, read from
  ``reference/full`` so that the page does not change with the build mode; when the full
  reference predates the current schema, this build's own results, under a labelled notice).
  Its argument picks the part: ``summary`` (with the notice), ``design``, ``calibration`` (the
  A/A test of the verdict rule), ``details`` or ``extended``.
* **The latent gallery**: the offline page notebook 09 writes to ``results/<mode>/gallery`` is
  copied to ``gallery/`` of the built site, where ``book/gallery.md`` frames it.
"""

from __future__ import annotations

import ast
import html
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

NOTEBOOK_PREFIX = "book/notebooks/"
BANNER_PAGES = ("book/results",)
INFO_FILE = Path("book") / "notebooks" / "build_info.json"
INFO_KEYS = ("mode", "commit", "date", "python", "torch", "equisae")
# the parts of MathJax's es5 build that tex-chtml.js loads (fonts, TeX extensions, menu)
MATHJAX_PARTS = ("tex-chtml.js", "input", "output/chtml", "ui", "a11y", "adaptors")
PUBLISHED = (
    "The published numbers come from <b>full</b> mode: the committed results in "
    "<code>reference/full/</code> of the repository, and the book built from them by "
    "<code>make publish</code>."
)


# ---------------------------------------------------------------------------------------------
# build information


def read_build_info(srcdir: Path) -> dict[str, str]:
    """``build_info.json`` if present, otherwise what the executed notebooks and git tell."""
    path = srcdir / INFO_FILE
    info: dict[str, str] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
            info = {k: str(v) for k, v in loaded.items() if v is not None}
        except (OSError, ValueError):
            info = {}
    if "mode" not in info:
        modes = {
            str(_papermill(nb).get("parameters", {}).get("mode"))
            for nb in sorted((srcdir / "book" / "notebooks").glob("*.ipynb"))
        } - {"None"}
        if len(modes) == 1:
            info["mode"] = modes.pop()
        elif modes:
            info["mode"] = " and ".join(sorted(modes))
    if "commit" not in info:
        commit = _git(srcdir, "rev-parse", "--short", "HEAD")
        if commit:
            dirty = _git(srcdir, "status", "--porcelain", "--untracked-files=no")
            info["commit"] = commit + (" (with local changes)" if dirty else "")
    if "date" not in info:
        ends = [
            str(_papermill(nb).get("end_time", ""))[:10]
            for nb in (srcdir / "book" / "notebooks").glob("*.ipynb")
        ]
        ends = [e for e in ends if e]
        if ends:
            info["date"] = max(ends)
    return info


def _papermill(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()).get("metadata", {}).get("papermill", {}) or {}
    except (OSError, ValueError):
        return {}


def _git(cwd: Path, *args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def banner_html(info: dict[str, str]) -> str:
    """The banner shown on top of the notebook pages and the results page."""
    mode = info.get("mode", "unknown")
    parts = [f"Built in <b>{html.escape(mode)}</b> mode"]
    if info.get("commit"):
        parts.append(f"from commit <code>{html.escape(info['commit'])}</code>")
    if info.get("date"):
        parts.append(f"on {html.escape(info['date'])}")
    first = " ".join(parts) + "."
    if info.get("stale"):
        first += f" <b>Stale</b>: {html.escape(info['stale'])}; rerun it."
    versions = ", ".join(
        f"{key} {html.escape(info[key])}" for key in ("equisae", "python", "torch") if info.get(key)
    )
    if versions:
        first += f" Versions: {versions}."
    if mode == "quick":
        kind, extra = (
            "warning",
            " These are the numbers of the <b>small CI configuration</b> (quick mode): fewer "
            "data, models and seeds, so they are not the published numbers, and a verdict may "
            "differ from the published one. " + PUBLISHED,
        )
    elif mode == "full":
        kind, extra = "note", " These are the published (full-mode) numbers."
    else:
        kind, extra = "warning", " The build mode is unknown. " + PUBLISHED
    return (
        f'<div class="admonition {kind} equisae-banner" role="note">'
        f'<p class="admonition-title">Build</p><p>{first}{extra}</p></div>\n'
    )


# ---------------------------------------------------------------------------------------------
# the parameters cell that ran


def apply_parameters(source: str, parameters: dict[str, Any]) -> str:
    """``source`` of a parameters cell with top-level assignments replaced by ``parameters``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    lines = source.splitlines()
    for node in reversed(tree.body):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name) or target.id not in parameters:
            continue
        default = " ".join((ast.get_source_segment(source, node.value) or "").split())
        value = repr(parameters[target.id])
        if isinstance(parameters[target.id], str):
            value = json.dumps(parameters[target.id])
        if value == default:
            continue
        indent = lines[node.lineno - 1][: node.col_offset]
        new = f"{indent}{target.id} = {value}  # set by equisae reproduce (default {default})"
        lines[node.lineno - 1 : node.end_lineno] = [new]
    return "\n".join(lines) + ("\n" if source.endswith("\n") else "")


def show_injected_parameters(text: str) -> str:
    """Notebook JSON whose visible ``parameters`` cell shows papermill's injected values."""
    try:
        nb = json.loads(text)
    except ValueError:
        return text
    parameters = nb.get("metadata", {}).get("papermill", {}).get("parameters") or {}
    if not parameters:
        return text
    changed = False
    for cell in nb.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") == "code" and "parameters" in tags:
            source = cell["source"]
            source = "".join(source) if isinstance(source, list) else source
            new = apply_parameters(source, parameters)
            if new != source:
                cell["source"] = new
                changed = True
    return json.dumps(nb) if changed else text


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname.startswith(NOTEBOOK_PREFIX) and source and source[0].lstrip().startswith("{"):
        source[0] = show_injected_parameters(source[0])


# ---------------------------------------------------------------------------------------------
# author-year bibliography labels


def _last_names(person: Any) -> str:
    return " ".join(str(n).replace("{", "").replace("}", "") for n in person.last_names) or (
        " ".join(str(n).replace("{", "").replace("}", "") for n in person.first_names)
    )


def author_year_label(entry: Any) -> str:
    """'Cohen and Welling, 2016', 'Bricken et al., 2023' for a pybtex entry."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_names(p) for p in persons]
    if any(str(p) == "others" for p in persons):
        names = [n for n in names if n != "others"] + ["others"]
    if not names:
        who = entry.fields.get("title", entry.key)[:20]
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2 and names[1] != "others":
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels 'Author and Author, year'; a, b, ... appended when two entries share one."""

    def format_labels(self, sorted_entries):
        labels = [author_year_label(e) for e in sorted_entries]
        seen: dict[str, int] = {}
        for label in labels:
            seen[label] = seen.get(label, 0) + 1
        suffix: dict[str, int] = {}
        for label in labels:
            if seen[label] > 1:
                suffix[label] = suffix.get(label, 0) + 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[suffix[label] - 1]
            else:
                yield label


class AuthorYearStyle(PlainStyle):
    """pybtex's plain style with author-year labels, sorted by author, year and title."""

    default_label_style = "authoryear"


register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle)
register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


# ---------------------------------------------------------------------------------------------
# directives: run times and environment stamp


def timings_markdown(root: Path) -> str:
    """A Markdown table of the committed run time per notebook, quick and full."""
    found = {}
    for mode in ("quick", "full"):
        path = root / "reference" / mode / "timings" / "notebooks.json"
        found[mode] = json.loads(path.read_text()) if path.is_file() else {}
    stems = sorted(set(found["quick"]) | set(found["full"]))
    if not stems:
        return "No run times are committed yet (`reference/*/timings/notebooks.json`)."

    def cell(mode: str, stem: str) -> str:
        value = found[mode].get(stem)
        return "n/a" if value is None else f"{float(value):,.0f} s"

    lines = ["| notebook | quick mode | full mode |", "| --- | ---: | ---: |"]
    lines += [f"| `{stem}` | {cell('quick', stem)} | {cell('full', stem)} |" for stem in stems]
    total = {m: sum(float(v) for v in found[m].values()) for m in ("quick", "full")}
    lines.append(
        "| **total** | "
        + " | ".join(f"{total[m]:,.0f} s" if found[m] else "n/a" for m in ("quick", "full"))
        + " |"
    )
    return "\n".join(lines)


def profile_path(root: Path, mode: str = "full") -> Path:
    """The committed profile of a run of ``mode`` (written by ``equisae profile``)."""
    return root / "benchmarks" / "results" / f"profile_{mode}.json"


def profile_source_markdown(root: Path, mode: str = "full") -> str:
    """The committed profile of a run as Markdown (:func:`equisae.profile.profile_markdown`)."""
    from equisae.profile import profile_markdown

    path = profile_path(root, mode)
    if not path.is_file():
        return (
            f"No profile of a {mode} run is committed yet (`equisae profile --mode {mode}` "
            f"writes `benchmarks/results/profile_{mode}.json`)."
        )
    return profile_markdown(json.loads(path.read_text()), heading=None)


def build_info_markdown(info: dict[str, str]) -> str:
    """A Markdown table of the build's mode, commit, date and versions."""
    labels = {
        "mode": "mode",
        "commit": "commit",
        "date": "date",
        "python": "Python",
        "torch": "PyTorch",
        "equisae": "equisae",
    }
    lines = ["| | |", "| --- | --- |"]
    for key in INFO_KEYS:
        lines.append(f"| {labels[key]} | {info.get(key, 'not recorded')} |")
    return "\n".join(lines)


class _MarkdownDirective(SphinxDirective):
    has_content = False
    # the classes of the container the Markdown is parsed into (book/_static/equisae.css)
    classes: tuple[str, ...] = ("equisae-generated",)

    def markdown(self) -> str:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.container(classes=list(self.classes))
        self.state.nested_parse(StringList(self.markdown().splitlines()), 0, container)
        return [container]


class TimingsDirective(_MarkdownDirective):
    """``{equisae-timings}``: run time per notebook in quick and full mode."""

    def markdown(self) -> str:
        return timings_markdown(Path(self.env.srcdir))


class ProfileDirective(_MarkdownDirective):
    """``{equisae-profile}`` (argument: ``full``, the default, or ``quick``): seconds per
    phase and notebook of the committed profile of that run."""

    optional_arguments = 1

    def markdown(self) -> str:
        mode = self.arguments[0] if self.arguments else "full"
        if mode not in ("quick", "full"):
            raise self.error(f"equisae-profile takes 'quick' or 'full', got {mode!r}")
        root = Path(self.env.srcdir)
        self.env.note_dependency(str(profile_path(root, mode)))
        return profile_source_markdown(root, mode)


class BuildInfoDirective(_MarkdownDirective):
    """``{equisae-build-info}``: the build's mode, commit, date and versions."""

    def markdown(self) -> str:
        return build_info_markdown(read_build_info(Path(self.env.srcdir)))


# ---------------------------------------------------------------------------------------------
# the claims ledger

CLAIMS_PARTS = ("summary", "design", "calibration", "details", "extended")


def claims_source(root: Path, mode: str | None) -> tuple[Any, str]:
    """The ledger to show and a notice (empty when it is the published ``reference/full``)."""
    from equisae.ledger import LedgerSchemaError, build_ledger

    reason = ""
    try:
        return build_ledger(root / "reference" / "full"), ""
    except LedgerSchemaError:
        reason = "`reference/full` has not been republished under the current method yet"
    except FileNotFoundError:
        reason = "`reference/full` is absent"
    shown = mode if mode in ("quick", "full") else "quick"
    try:
        ledger = build_ledger(root / "results" / shown)
    except (LedgerSchemaError, FileNotFoundError) as exc:
        return (
            None,
            f"{reason}, and this build's `results/{shown}` cannot be read either: {str(exc).replace(str(root) + '/', '')}",
        )
    notice = f"{reason}; showing this build's {shown} numbers"
    if shown == "quick":
        notice += (
            " (the small CI configuration: one seed, short training, so most verdicts are "
            "undecided)"
        )
    return ledger, notice + "."


def claims_markdown(root: Path, part: str, mode: str | None, pages: Any = True) -> str:
    """MyST for one part of the ledger page (see :data:`CLAIMS_PARTS`); ``pages``: the notebook
    stems that have a page in this book (others are named, not linked), or True for all."""
    from equisae.ledger import calibration_table, claim_details, claims_table, design_table

    if part not in CLAIMS_PARTS:
        raise ValueError(
            f"equisae-claims: the argument must be one of {CLAIMS_PARTS}, got {part!r}"
        )
    if part == "extended":
        from equisae.io import read_json
        from equisae.sweeps.extended import extended_markdown, extended_results_path

        path = extended_results_path(root, "full", published=True)
        return extended_markdown(read_json(path) if path.is_file() else None)
    ledger, notice = claims_source(root, mode)
    out = []
    if notice and part == "summary":
        out += [":::{warning}", notice, ":::", ""]
    if ledger is None:
        return "\n".join(out) or "The claims ledger could not be built."
    if part == "summary":
        source = f"`{ledger['source']}` ({ledger['mode']} mode)"
        out += [f"Numbers from {source}.", "", claims_table(ledger, pages)]
    elif part == "design":
        out.append(design_table(ledger))
    elif part == "calibration":
        out.append(calibration_table(ledger))
    else:
        out += ["\n\n".join(claim_details(c, pages) for c in ledger["claims"])]
    return "\n".join(out)


class ClaimsDirective(_MarkdownDirective):
    """``{equisae-claims} summary|design|calibration|details|extended``: the claims ledger
    (reference/full)."""

    required_arguments = 1
    classes = ("equisae-generated", "equisae-claims")

    def markdown(self) -> str:
        root = Path(self.env.srcdir)
        self.env.note_dependency(str(root / "reference" / "full" / "06_probing.json"))
        extended = root / "reference" / "extended" / "intermediate_layers.json"
        if extended.is_file():
            self.env.note_dependency(str(extended))
        pages = {
            doc.removeprefix(NOTEBOOK_PREFIX)
            for doc in self.env.found_docs
            if doc.startswith(NOTEBOOK_PREFIX)
        }
        mode = read_build_info(root).get("mode")
        return claims_markdown(root, self.arguments[0], mode, pages)


# ---------------------------------------------------------------------------------------------
# HTML: banner, scripts, MathJax files


def _page_context(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    # pydata-sphinx-theme logs "Got invalid theme mode" (a console error) when this is empty
    if not context.get("default_mode"):
        context["default_mode"] = "auto"
    scripts = context.get("script_files")
    if scripts is not None:
        kept = []
        for script in scripts:
            body = getattr(script, "attributes", {}).get("body", "") or ""
            if "THEBE_JS_URL" in body or str(script).endswith("sphinx-thebe.js"):
                continue
            kept.append(script)
        context["script_files"] = kept
    if doctree is None or "body" not in context:
        return
    if pagename.startswith(NOTEBOOK_PREFIX) or pagename in BANNER_PAGES:
        info = page_info(Path(app.srcdir), pagename)
        context["body"] = banner_html(info) + context["body"]


def page_info(srcdir: Path, pagename: str) -> dict[str, str]:
    """The banner's information for one page: a notebook page shows the mode, commit and date
    its own executed copy ran from (and ``stale`` when its source changed since)."""
    info = read_build_info(srcdir)
    if not pagename.startswith(NOTEBOOK_PREFIX):
        return info
    from equisae.reproduce import executed_provenance, notebook_state

    stem = pagename.removeprefix(NOTEBOOK_PREFIX)
    own = executed_provenance(srcdir / f"{pagename}.ipynb")
    info.update({k: str(own[k]) for k in ("mode", "commit", "date") if own.get(k)})
    if notebook_state(srcdir, stem) == "stale":
        info["stale"] = f"notebooks/{stem}.ipynb changed since this page was executed"
    return info


def mathjax_source() -> Path:
    """The ``es5`` folder of MathJax 3 shipped by the ``django-static-mathjax`` package."""
    spec = importlib.util.find_spec("mathjax")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        es5 = Path(location) / "static" / "mathjax" / "es5"
        if (es5 / "tex-chtml.js").is_file():
            return es5
    raise FileNotFoundError(
        "MathJax 3 not found: install django-static-mathjax (pip install -e .), which ships "
        "mathjax/static/mathjax/es5/tex-chtml.js"
    )


def copy_mathjax(target: Path) -> None:
    """Copy the parts of MathJax's es5 build that the book uses into ``target``."""
    source = mathjax_source()
    for part in MATHJAX_PARTS:
        src, dst = source / part, target / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def gallery_source(srcdir: Path) -> Path | None:
    """The latent gallery notebook 09 wrote (``results/<mode>/gallery``, the build's mode, else
    the newest of the two modes), or None when no run wrote one."""
    import os

    base = Path(os.environ.get("EQUISAE_RESULTS", srcdir / "results"))
    mode = read_build_info(srcdir).get("mode")
    modes = [mode] if mode in ("quick", "full") else ["full", "quick"]
    found = [base / m / "gallery" for m in modes if (base / m / "gallery" / "index.html").is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _build_finished(app: Sphinx, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        copy_mathjax(Path(app.outdir) / "_static" / "mathjax")
        gallery = gallery_source(Path(app.srcdir))
        if gallery is not None:  # the book's gallery page frames <outdir>/gallery/index.html
            shutil.copytree(gallery, Path(app.outdir) / "gallery", dirs_exist_ok=True)


def _config_inited(app: Sphinx, config: Any) -> None:
    mathjax_source()  # fail early, naming the package, when MathJax is not installed


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", _config_inited)
    app.connect("source-read", _source_read)
    app.connect("html-page-context", _page_context, priority=900)
    app.connect("build-finished", _build_finished)
    app.add_directive("equisae-timings", TimingsDirective)
    app.add_directive("equisae-build-info", BuildInfoDirective)
    app.add_directive("equisae-profile", ProfileDirective)
    app.add_directive("equisae-claims", ClaimsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}


__all__ = [
    "apply_parameters",
    "author_year_label",
    "banner_html",
    "build_info_markdown",
    "claims_markdown",
    "claims_source",
    "copy_mathjax",
    "gallery_source",
    "profile_source_markdown",
    "read_build_info",
    "show_injected_parameters",
    "timings_markdown",
]
