"""Sphinx extension for the equisae book: make plain-text docstrings safe for reStructuredText.

The library's docstrings write shapes as ``(N, |G|, d)`` and norms as ``|x|``; outside inline
literals reStructuredText reads ``|G|`` as a substitution reference and fails the strict build.
This hook escapes such bars in the text autodoc extracts, leaving inline literals, roles and
interpreted text untouched, so the docstrings read the same in the terminal and in the book.

The book is self-contained: docstrings that point at the project's internal notes (the method
specification, the developer guide, earlier versions of the package) are reworded to point at
the book's own Method page and notebooks (``book_wording``).
"""

from __future__ import annotations

import re
from typing import Any

# inline literals ``...``, roles :name:`...` and interpreted text `...` are kept verbatim
_VERBATIM = re.compile(r"``.+?``|:[\w:.-]+:`[^`]*`|`[^`]*`")


def escape_bars(line: str) -> str:
    """Escape ``|`` outside inline literals/roles, unless the line is an rST table or line block."""
    stripped = line.lstrip()
    if stripped.startswith(("| ", "+-", "+=")) or stripped == "|":
        return line
    out, last = [], 0
    for match in _VERBATIM.finditer(line):
        out.append(line[last : match.start()].replace("|", r"\|"))
        out.append(match.group(0))
        last = match.end()
    out.append(line[last:].replace("|", r"\|"))
    return "".join(out)


# internal references in docstrings -> what a reader of the book can follow (first match wins)
_WORDING = (
    (re.compile(r"\(DEVELOPING\.md[^)]*\)"), "(notebook 05)"),
    (re.compile(r"DEVELOPING\.md"), "notebook 05"),
    (re.compile(r"METHOD\.md's"), "the Method page's"),
    (re.compile(r"METHOD\.md"), "the Method page"),
    (re.compile(r"the first release's"), "an older version's"),
    (re.compile(r"the first release"), "an older version"),
)


def book_wording(line: str) -> str:
    """Reword references to internal notes (``METHOD.md``, ``DEVELOPING.md``, releases)."""
    for pattern, replacement in _WORDING:
        line = pattern.sub(replacement, line)
    return line


def _process_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    lines[:] = [escape_bars(book_wording(line)) for line in lines]


#: module constants whose value is longer than this are documented without it (a long repr such
#: as ``(ToleranceRule(...), ...)`` is unreadable and wider than the page; the docstring says it)
MAX_VALUE_CHARS = 80


def _short_value_documenter() -> Any:
    from sphinx.ext.autodoc import DataDocumenter, Options
    from sphinx.util.inspect import object_description

    class ShortValueDataDocumenter(DataDocumenter):
        """Module data with its value when the value is short, without it otherwise."""

        priority = DataDocumenter.priority + 1

        def add_directive_header(self, sig: str) -> None:
            try:
                long = len(object_description(self.object)) > MAX_VALUE_CHARS
            except Exception:  # an object without a printable value
                long = True
            if long:
                self.options = Options(self.options)
                self.options["no-value"] = True
            super().add_directive_header(sig)

    return ShortValueDataDocumenter


def setup(app: Any) -> dict[str, Any]:
    """Register the docstring hook and the data documenter that drops long values."""
    app.connect("autodoc-process-docstring", _process_docstring)
    app.add_autodocumenter(_short_value_documenter(), override=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
