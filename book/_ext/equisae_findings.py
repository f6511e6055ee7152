"""Sphinx extension for the equisae book: the findings table, provenance lines and downloads.

* ``{equisae-findings}``: one row per claim of the ledger (``reference/full/claims.json``):
  verdict, number with spread and seed count, setting, probe type and a one-line reason, each
  row linked to the claim's anchor on the claims page (``claims.html#claim-<id>``). The ledger
  is read through :func:`read_findings`, the one accessor of this file, which accepts both the
  ledger as ``equisae.ledger`` writes it (``{"claims": [...]}`` with ``values`` per point) and
  a plain list of entries with the fields of :class:`Finding`.
* Provenance: every page gets a line saying which results it shows and when the run that made
  them ran: a notebook page its own run's day and commit, the other pages of the build the days
  and commits of the book's executed notebooks, the pages of committed full-mode numbers the run
  recorded in ``reference/full/run/notebooks.json`` (and, when later, the day its claims ledger
  was rebuilt; a reference published without a run record says so).
* Downloads: the committed results files (``reference/<mode>/*.json``) are copied into the
  built site under ``results/<mode>/`` so that a reader can download them.
"""

from __future__ import annotations

import functools
import html
import json
import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

LEDGER = Path("reference") / "full" / "claims.json"
DOWNLOADS = "results"
# pages that show the numbers of the run the book was built from (they carry the build banner);
# their headline figure is drawn from the committed full-mode reference
BUILD_PAGES = ("book/results",)
NOTEBOOK_PREFIX = "book/notebooks/"
# pages whose numbers come from the committed full-mode reference, whatever the build's mode
REFERENCE_PAGES = ("book/intro", "book/claims")
FIELDS = ("id", "title", "label", "number", "spread", "n_seeds", "setting", "probe", "scope")


@dataclass(frozen=True)
class Finding:
    """One ledger entry as the findings table shows it (numbers already formatted)."""

    id: str
    title: str
    label: str
    number: str
    spread: str
    n_seeds: int | None
    setting: str
    probe: str
    scope: str
    reason: str
    verdict: str


def anchor(claim_id: str) -> str:
    """The claim's anchor on the claims page: a ledger id such as ``claim-3a-dense`` as it is;
    an older id ``claim1`` -> ``claim-1``, ``a/b`` -> ``claim-a-b``."""
    if "-" in str(claim_id):  # the ledger's ids are already the claims page's targets
        return re.sub(r"[^a-z0-9]+", "-", str(claim_id).lower()).strip("-")
    slug = re.sub(r"[^a-z0-9]+", "-", str(claim_id).lower()).strip("-")
    slug = re.sub(r"^claim-?", "", slug) or slug
    return f"claim-{slug}"


def _first_sentence(text: str, limit: int = 120) -> str:
    text = " ".join(str(text or "").split())
    match = re.match(r"(.+?[.;])(\s|$)", text)
    first = match.group(1) if match else text
    if len(first) > limit:
        cut = first[:limit].rsplit(" ", 1)[0]
        # do not cut inside a $...$ formula
        if cut.count("$") % 2:
            cut = cut[: cut.rfind("$")].rstrip()
        first = cut.rstrip(",;:") + " …"
    return first.rstrip(".;:")


def _short_setting(text: str, limit: int = 70) -> str:
    text = " ".join(str(text or "").split())
    first = text.split(";")[0]
    return first if len(first) <= limit else first[:limit].rsplit(" ", 1)[0] + " …"


def _from_ledger_entry(entry: dict[str, Any]) -> Finding:
    """A finding from an entry as ``equisae.ledger`` writes it (``values`` per point)."""
    raw = entry.get("points") or entry.get("values") or []
    points = [v for v in raw if v.get("mean") is not None]
    means = [float(v["mean"]) for v in points]
    seeds = [int(v.get("n_seeds") or v.get("n") or 0) for v in points]
    seeds = [n for n in seeds if n]
    text = str(entry.get("number", ""))
    # differences (SAE minus baseline) carry their sign; levels (an R^2) do not
    signed = bool(re.search(r"minus|difference", text))

    def fmt(value: float) -> str:
        out = f"{value:+.3f}" if signed else f"{value:.3f}"
        return out.replace("-0.000", "0.000").replace("+0.000", "0.000")

    if means:
        number = fmt(statistics.fmean(means))
        if len(means) > 1:
            low, high = fmt(min(means)), fmt(max(means))
            spread = f"{low} to {high} over {len(means)} points"
        else:
            sd = points[0].get("sd")
            spread = f"± {float(sd):.3f}" if sd is not None and (seeds or [0])[0] > 1 else ""
    else:
        number, spread = _first_sentence(entry.get("number", ""), 80) or "—", ""
    statuses = [str(v.get("status", "")) for v in points]
    scope = ""
    if statuses and all(statuses):
        common = max(set(statuses), key=statuses.count)
        scope = f"{statuses.count(common)} of {len(statuses)}: {common}"
    encoder = str(entry.get("encoder") or "")
    label = str(entry.get("variant_label") or "")
    if encoder and not encoder.startswith("raw"):
        label = ", ".join(x for x in (label, f"{encoder} encoder") if x)
    return Finding(
        id=str(entry["id"]),
        title=str(entry.get("title", entry["id"])),
        label=label,
        number=number,
        spread=spread,
        n_seeds=max(seeds) if seeds else None,
        setting=_short_setting(entry.get("setting", "")),
        probe=str(entry.get("probe_type", "")),
        scope=scope,
        reason=_first_sentence(entry.get("sentence", "")),
        verdict=str(entry.get("verdict", "")),
    )


def _from_plain_entry(entry: dict[str, Any]) -> Finding:
    """A finding from an entry that already has the fields of :class:`Finding`."""
    missing = [f for f in ("id", "title", "number") if f not in entry]
    if missing:
        raise ValueError(f"a findings entry lacks {missing}; it has {sorted(entry)}")
    n = entry.get("n_seeds", entry.get("n"))
    return Finding(
        id=str(entry["id"]),
        title=str(entry["title"]),
        label=str(entry.get("label") or ""),
        number=str(entry["number"]),
        spread=str(entry.get("spread") or ""),
        n_seeds=int(n) if n not in (None, "") else None,
        setting=_short_setting(entry.get("setting", "")),
        probe=str(entry.get("probe", entry.get("probe_type", ""))),
        scope=str(entry.get("scope") or ""),
        reason=_first_sentence(entry.get("reason", entry.get("sentence", ""))),
        verdict=str(entry.get("verdict", "")),
    )


def read_findings(path: Path) -> list[Finding]:
    """The ledger at ``path`` as findings, in the ledger's order.

    Accepts ``{"claims": [entry, ...], ...}`` or ``[entry, ...]``, where an entry is either the
    ledger's (``values`` per point, ``probe_type``, ``sentence``) or a plain entry with the
    fields ``id, title, label, number, spread, n_seeds, setting, probe, scope, reason``.
    """
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"the claims ledger {path} does not exist") from None
    entries = data.get("claims") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValueError(
            f"{path} must hold a list of claims or a dict with a 'claims' list, "
            f"got {type(entries).__name__}"
        )
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or "id" not in entry:
            raise ValueError(f"{path}: every claim must be an object with an 'id', got {entry!r}")
        plain = not ({"values", "points"} & set(entry)) and ("reason" in entry or "spread" in entry)
        out.append(_from_plain_entry(entry) if plain else _from_ledger_entry(entry))
    return out


def _math_html(text: str) -> str:
    """Escape ``text`` for HTML, with ``$...$`` as inline math MathJax typesets."""
    parts = re.split(r"(\$[^$]+\$)", text)
    out = []
    for part in parts:
        if len(part) > 2 and part.startswith("$") and part.endswith("$"):
            tex = html.escape(part[1:-1])
            out.append(f'<span class="math notranslate nohighlight">\\({tex}\\)</span>')
        else:
            # raw identifiers (`digit_without_6_9`) read as words
            out.append(html.escape(part).replace("`", "").replace("_", " "))
    return "".join(out)


def _verdict_cell(group: list[Finding]) -> str:
    by_verdict: dict[str, list[str]] = {}
    for f in group:
        by_verdict.setdefault(f.verdict or "no verdict", []).append(f.label)
    if len(by_verdict) == 1:
        return f'<span class="equisae-verdict">{html.escape(next(iter(by_verdict)))}</span>'
    cells = []
    total = len(group)
    for verdict, labels in by_verdict.items():
        named = ", ".join(label for label in labels if label)
        if len(labels) > 3:  # a long list of settings reads as a count
            named = f"{len(labels)} of {total} settings"
        cells.append(
            f'<span class="equisae-verdict">{html.escape(verdict)}</span>'
            + (f" ({html.escape(named)})" if named else "")
        )
    return "<br>".join(cells)


def findings_html(findings: list[Finding], claims_page: str = "claims.html") -> str:
    """One table row per claim (entries with the same title share a row)."""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.title, []).append(f)
    rows = []
    for title, group in groups.items():
        first = group[0]
        seeds = f"n={first.n_seeds}" if first.n_seeds else ""
        detail = "; ".join(x for x in (first.spread, seeds) if x)
        number = html.escape(first.number) + (
            f" <small>({html.escape(detail)})</small>" if detail else ""
        )
        if first.label:
            number = f"{html.escape(first.label)}: {number}"
        if first.scope:
            number += f"<br><small>{html.escape(first.scope)}</small>"
        rows.append(
            "<tr>"
            f'<td><a href="{claims_page}#{anchor(first.id)}">{html.escape(title)}</a></td>'
            f"<td>{_verdict_cell(group)}</td>"
            f"<td>{number}</td>"
            f"<td>{html.escape(first.setting)}<br><small>{html.escape(first.probe)}</small></td>"
            f"<td>{_math_html(first.reason)}</td>"
            "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("claim", "verdict", "number (range, seeds)", "setting and probe", "why")
    )
    return (
        '<div class="equisae-findings"><table class="table equisae-findings-table">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def headline_points(path: Path, title_prefix: str = "Claim 3a") -> dict[str, list[tuple]]:
    """Per-point ``(where, mean, sd)`` of the ledger entries whose title starts with
    ``title_prefix``, keyed by their label (the probe type); empty for a ledger without points."""
    data = json.loads(Path(path).read_text())
    entries = data.get("claims") if isinstance(data, dict) else data
    out: dict[str, list[tuple]] = {}
    for entry in entries or []:
        if not str(entry.get("title", "")).startswith(title_prefix):
            continue
        points = [
            (str(v.get("where", "")), float(v["mean"]), float(v.get("sd") or 0.0))
            for v in entry.get("values") or []
            if v.get("mean") is not None
        ]
        if points:
            out[str(entry.get("variant_label") or entry["id"])] = points
    return out


def headline_figure(points: dict[str, list[tuple]], target: Path) -> Path:
    """The landing page's figure: the adaptive SAE's probing advantage per target and probe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(points)
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(labels) + 1.3), dpi=100)
    wheres = sorted({w for pts in points.values() for w, _, _ in pts})
    markers = dict(zip(wheres, "os^Dvp<>h*", strict=False))
    for row, label in enumerate(labels):
        for i, (where, mean, sd) in enumerate(points[label]):
            y = row + (i - (len(points[label]) - 1) / 2) * 0.1
            ax.errorbar(
                mean,
                y,
                xerr=sd,
                fmt=markers.get(where, "o"),
                ms=5,
                capsize=2,
                color=f"C{wheres.index(where)}",
                label=where if row == 0 else None,
            )
    ax.axvline(0, color="0.4", lw=1)
    ax.set_yticks(range(len(labels)), [f"{label} probe" for label in labels], fontsize=10)
    ax.invert_yaxis()
    ax.set_xlabel(
        "invariant-factor macro F1, adaptive SAE minus TopK (mean ± sd over seeds)", fontsize=10
    )
    ax.tick_params(axis="x", labelsize=10)
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    plt.close(fig)
    return target


class HeadlineFigureDirective(SphinxDirective):
    """``{equisae-headline-figure}``: the headline figure, drawn from the committed ledger."""

    def run(self) -> list[nodes.Node]:
        root = Path(self.env.srcdir)
        path = root / LEDGER
        self.env.note_dependency(str(path))
        points = headline_points(path)
        if not points:
            return []
        name = "equisae-headline.png"
        headline_figure(points, Path(self.env.app.outdir) / "_static" / name)
        static = "../" * self.env.docname.count("/") + f"_static/{name}"
        alt = (
            "Dot plot: for each probe type, the adaptive SAE's invariant-factor F1 minus TopK's "
            "at every base model, with seed error bars, against a zero line"
        )
        caption = (
            "Claim 3a, the paper's headline: the adaptive equivariant SAE's invariant-factor "
            "probing F1 minus TopK's, per probe type and base model (committed full-mode "
            "results). Right of the line, the adaptive SAE's latents classify shape, colour and "
            "scale better."
        )
        figure = (
            f'<figure class="equisae-headline"><img src="{static}" alt="{html.escape(alt)}">'
            f"<figcaption><p>{html.escape(caption)}</p></figcaption></figure>"
        )
        return [nodes.raw("", figure, format="html")]


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


RUN_RECORD = Path("run") / "notebooks.json"  # under results/<mode> and reference/<mode>


def _day(stamp: Any) -> str:
    """``2026-12-03T18:13:20+00:00`` -> ``2026-12-03`` ("" when not a date)."""
    text = str(stamp or "")[:10]
    return text if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else ""


def run_stamp(records: dict[str, Any]) -> dict[str, str]:
    """Mode, commit(s) and date(s) of a run from its notebooks' provenance records (``stem ->
    {"mode", "commit", "date", ...}``, as ``results/<mode>/run/notebooks.json`` holds them):
    one date, or the first and last day when the notebooks ran on several; the commits in the
    order they ran. Empty when no record has a date."""
    ran = sorted(
        (str(r.get("date")), r)
        for r in records.values()
        if isinstance(r, dict) and _day(r.get("date"))
    )
    if not ran:
        return {}
    days = [_day(date) for date, _ in ran]
    commits = list(dict.fromkeys(str(r["commit"]) for _, r in ran if r.get("commit")))
    modes = sorted({str(r["mode"]) for _, r in ran if r.get("mode")})
    out = {"date": days[0] if days[0] == days[-1] else f"{days[0]} to {days[-1]}"}
    if commits:
        out["commit"] = ", ".join(commits) if len(commits) <= 3 else f"{commits[0]} … {commits[-1]}"
    if modes:
        out["mode"] = " and ".join(modes)
    return out


@functools.lru_cache(maxsize=8)
def reference_provenance(root: Path, mode: str = "full") -> dict[str, str]:
    """Which run the committed ``reference/<mode>`` holds: its mode, commit(s) and date(s)
    from the run record published with it (``reference/<mode>/run/notebooks.json``), or, for a
    reference published without one, ``published`` and ``published_commit`` (the day and commit
    that last changed its results files, git log) and no ``date``; ``ledger``: the day
    ``claims.json`` was last rebuilt, when it is not a day of the run (or of its publication)."""
    folder = root / "reference" / mode
    out: dict[str, str] = {"mode": mode}
    try:
        records = json.loads((folder / RUN_RECORD).read_text())
    except (OSError, ValueError):
        records = {}
    out.update(run_stamp(records if isinstance(records, dict) else {}))
    out["mode"] = mode
    results = f"reference/{mode}"
    if "date" not in out:
        line = _git(root, "log", "-1", "--format=%h %cs", "--", results, f":!{results}/claims.json")
        commit, _, day = line.partition(" ")
        if _day(day):
            out["published"], out["published_commit"] = day, commit
    rebuilt = _day(_git(root, "log", "-1", "--format=%cs", "--", f"{results}/claims.json"))
    ran = out.get("date", out.get("published", ""))
    if rebuilt and rebuilt not in ran:
        out["ledger"] = rebuilt
    return out


@functools.lru_cache(maxsize=8)
def book_run_stamp(root: Path) -> dict[str, str]:
    """:func:`run_stamp` of the notebooks this book shows: the records ``equisae reproduce``
    wrote into ``book/notebooks/build_info.json``, else each executed copy's own provenance."""
    from equisae.reproduce import executed_provenance

    folder = root / "book" / "notebooks"
    try:
        records = json.loads((folder / "build_info.json").read_text()).get("notebooks")
    except (OSError, ValueError, AttributeError):
        records = None
    if not isinstance(records, dict) or not run_stamp(records):
        records = {p.stem: executed_provenance(p) for p in sorted(folder.glob("*.ipynb"))}
    return run_stamp(records)


def build_provenance(root: Path, pagename: str) -> dict[str, str]:
    """Which run a page of this build shows: a notebook page its own executed copy's mode,
    commit and day (:func:`equisae_book.page_info`); any other page the days and commits of the
    notebooks the book shows (:func:`book_run_stamp`), else the build information's."""
    from equisae_book import page_info  # the banner's reader (same folder)

    info = {k: str(v) for k, v in page_info(root, pagename).items()}
    out = {k: info[k] for k in ("mode", "commit") if info.get(k)}
    if pagename.startswith(NOTEBOOK_PREFIX):
        if _day(info.get("date")):
            out["date"] = _day(info.get("date"))
        return out
    out.update(book_run_stamp(root))
    if "date" not in out and info.get("date"):
        out["date"] = _day(info["date"]) or info["date"]
    return out


class FindingsDirective(SphinxDirective):
    """``{equisae-findings}``: the findings table from the committed full-mode ledger."""

    def run(self) -> list[nodes.Node]:
        root = Path(self.env.srcdir)
        path = root / LEDGER
        self.env.note_dependency(str(path))
        depth = self.env.docname.count("/")
        claims = "../" * (depth - 1) + "claims.html" if depth else "book/claims.html"
        table = findings_html(read_findings(path), claims)
        return [nodes.raw("", table, format="html")]


def _commits(text: str) -> str:
    label = "commits" if "," in text or "…" in text else "commit"
    return f"{label} <code>{html.escape(text)}</code>"


def provenance_html(pagename: str, build: dict[str, str], reference: dict[str, str]) -> str:
    """The line that says which results a page shows and when the run that made them ran:
    ``reference`` for the pages of committed full-mode numbers (:func:`reference_provenance`),
    ``build`` for the notebook and results pages (:func:`build_provenance`)."""
    if "date" in reference:
        ref = (
            f"the {html.escape(reference['mode'])}-mode run of "
            f"{html.escape(reference['date'])}"
            + (f" ({_commits(reference['commit'])})" if reference.get("commit") else "")
            + f", committed as <code>reference/{html.escape(reference['mode'])}</code>"
        )
    else:
        published = ""
        if reference.get("published"):
            published = f", published on {html.escape(reference['published'])}"
            if reference.get("published_commit"):
                published += f" in {_commits(reference['published_commit'])}"
        ref = (
            f"the committed {html.escape(reference['mode'])}-mode results "
            f"(<code>reference/{html.escape(reference['mode'])}</code>{published}; "
            "the date of the run itself was not recorded)"
        )
    if reference.get("ledger"):
        ref += f"; the claims ledger was rebuilt from them on {html.escape(reference['ledger'])}"
    mode = html.escape(build.get("mode", "unknown"))
    when = build.get("date")
    commit = build.get("commit")
    details = ", ".join(
        x
        for x in (
            f"run on {html.escape(when)}" if when else "run date not recorded",
            _commits(commit) if commit else "",
        )
        if x
    )
    if pagename in REFERENCE_PAGES:
        what = f"The numbers on this page come from {ref}."
    elif pagename.startswith(NOTEBOOK_PREFIX):
        what = f"The numbers on this page come from this notebook's {mode}-mode run ({details})."
    elif pagename in BUILD_PAGES:
        what = (
            f"The numbers on this page come from the {mode}-mode run this book shows "
            f"({details}); its headline figure from {ref}."
        )
    else:
        what = f"This page shows no run's numbers; the book shows a {mode}-mode run ({details})."
    return f'<p class="equisae-provenance">{what}</p>\n'


# on the pages of full-mode numbers, when the book was built in quick mode: their links to the
# notebooks lead to pages with other numbers
QUICK_LINKS_WARNING = (
    '<div class="admonition warning equisae-quick-links"><p class="admonition-title">'
    "Quick build</p><p>The links to notebook pages lead to this book's quick-mode run (fewer "
    "data, other <i>k</i>, one seed), not to the full-mode run whose numbers this page shows; "
    "verdicts there can differ.</p></div>\n"
)


def _page_context(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if doctree is None or "body" not in context:
        return
    root = Path(app.srcdir)
    build = build_provenance(root, pagename)
    reference = reference_provenance(root)
    body = provenance_html(pagename, build, reference)
    if pagename in REFERENCE_PAGES and build.get("mode") == "quick":
        body += QUICK_LINKS_WARNING
    # after the page's title: the reader sees the title first, then where its numbers come from
    page = context["body"]
    end = page.find("</h1>")
    if end >= 0:
        end = page.find("\n", end) + 1 or end + len("</h1>")
        context["body"] = page[:end] + body + page[end:]
    else:
        context["body"] = body + page


def copy_results(root: Path, outdir: Path) -> list[Path]:
    """Copy ``reference/<mode>/*.json`` into ``outdir/results/<mode>/``; the copied files."""
    copied = []
    for source in sorted((root / "reference").glob("*/*.json")):
        target = outdir / DOWNLOADS / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(target)
    return copied


def _build_finished(app: Sphinx, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        copy_results(Path(app.srcdir), Path(app.outdir))


NUMBER_WORDS = (
    "no",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)


def notebook_count(root: Path) -> int:
    """The number of notebooks the companion runs (``notebooks/NN_*.ipynb``)."""
    return len(list((root / "notebooks").glob("[0-9][0-9]_*.ipynb")))


def count_words(n: int) -> str:
    """``8`` -> ``"eight"`` (digits above twelve)."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def _config_inited(app: Sphinx, config: Any) -> None:
    # {{ n_notebooks }} in the pages: counted from the notebooks folder, never typed
    subs = dict(getattr(config, "myst_substitutions", None) or {})
    subs["n_notebooks"] = count_words(notebook_count(Path(app.srcdir)))
    config.myst_substitutions = subs


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the findings directive, the provenance line and the results downloads."""
    app.connect("config-inited", _config_inited)
    app.add_directive("equisae-findings", FindingsDirective)
    app.add_directive("equisae-headline-figure", HeadlineFigureDirective)
    app.connect("html-page-context", _page_context, priority=950)
    app.connect("build-finished", _build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}


__all__ = [
    "FIELDS",
    "Finding",
    "anchor",
    "book_run_stamp",
    "build_provenance",
    "copy_results",
    "findings_html",
    "provenance_html",
    "read_findings",
    "reference_provenance",
    "run_stamp",
]
