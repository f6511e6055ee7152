"""Check that a built book is a self-contained static site: every asset is a local file.

Usage: python book/_ext/check_site.py _build/site
Exits 1, listing the offenders, if any page loads a script, stylesheet, font or image from the
network (an ``http(s)://`` or protocol-relative ``//`` URL in ``src``/``href`` of ``<script>``,
``<link>``, ``<img>``, ``<source>`` or a CSS ``url(...)``), or if MathJax is missing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

TAG_URL = re.compile(
    r"<(?:script|link|img|source|iframe)\b[^>]*?\b(?:src|href)=[\"']((?:https?:)?//[^\"']+)[\"']",
    flags=re.I,
)
CSS_URL = re.compile(r"url\(\s*[\"']?((?:https?:)?//[^\"')]+)", flags=re.I)
CDN = re.compile(r"cdn\.jsdelivr|unpkg\.com|cdnjs|mathjax\.org|polyfill\.io", flags=re.I)


def external_assets(site: Path) -> list[str]:
    """``'page: url'`` for every asset of ``site`` that would be fetched from the network."""
    found = []
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(errors="replace")
        for url in TAG_URL.findall(text):
            found.append(f"{page.relative_to(site)}: {url}")
    for css in sorted(site.rglob("*.css")):
        for url in CSS_URL.findall(css.read_text(errors="replace")):
            found.append(f"{css.relative_to(site)}: {url}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: check_site.py SITE_DIR", file=sys.stderr)
        return 2
    site = Path(argv[0])
    if not (site / "index.html").is_file():
        print(f"error: no index.html in {site}", file=sys.stderr)
        return 2
    problems = external_assets(site)
    if not (site / "_static" / "mathjax" / "tex-chtml.js").is_file():
        problems.append("_static/mathjax/tex-chtml.js is missing (offline math)")
    for line in problems:
        print(line)
    n_pages = len(list(site.rglob("*.html")))
    status = "FAIL" if problems else "ok"
    print(f"{status}: {len(problems)} network asset(s) over {n_pages} pages in {site}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
