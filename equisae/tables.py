"""Markdown tables for the notebooks and the book: escaped labels, formatted numbers, mean +- sd.

Every builder returns a plain string; :func:`as_markdown` wraps one for ``IPython.display``.
Missing or non-finite numbers are shown as :data:`MISSING` (an em dash).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Number
from typing import Any

import numpy as np

MISSING = "—"

__all__ = [
    "MISSING",
    "as_markdown",
    "escape",
    "format_number",
    "format_spread",
    "markdown_table",
    "mean_sd",
    "mean_sd_cell",
]


def escape(label: Any) -> str:
    """A cell-safe label: ``|`` becomes ``\\|`` and newlines become spaces."""
    text = str(label)
    return text.replace("\\|", "|").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def format_number(value: Any, digits: int = 3, signed: bool = False) -> str:
    """``value`` rounded to ``digits`` decimals (integers as integers, with thousands
    separators); None/NaN/inf as :data:`MISSING`; ``signed`` adds a ``+`` to positives."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):+,}" if signed else f"{int(value):,}"
    text = f"{float(value):+.{digits}f}" if signed else f"{float(value):.{digits}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text


def mean_sd(values: Sequence[Any]) -> tuple[float, float, int]:
    """``(mean, sample sd with ddof 1, n)`` of the finite values (sd 0 for one value)."""
    v = np.array([float(x) for x in values if not _is_missing(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def format_spread(sd: Any, digits: int = 3) -> str:
    """A standard deviation as a cell: ``"0.004"``; one that rounds to zero at ``digits``
    reads ``"<0.001"`` (``"0"`` when the values are identical), never a spread of exactly zero
    at that precision; :data:`MISSING` when not finite."""
    if _is_missing(sd):
        return MISSING
    if abs(float(sd)) < 1e-12:  # identical values (up to float rounding)
        return "0"
    shown = format_number(sd, digits)
    return f"<{10.0**-digits:.{digits}f}" if float(shown) == 0.0 else shown


def mean_sd_cell(
    values: Sequence[Any] | None = None,
    digits: int = 3,
    *,
    mean: float | None = None,
    sd: float | None = None,
    n: int | None = None,
    show_n: bool = False,
    signed: bool = False,
) -> str:
    """``"0.123 ± 0.004"`` from raw ``values`` or from ``mean``/``sd`` (``show_n`` adds
    ``" (n=3)"``); :data:`MISSING` when there is no finite value. One value has no spread: it
    reads ``"0.123 (n=1)"``. A spread that rounds to zero reads ``"± <0.001"`` (``"± 0"`` when
    the values are identical), never as a spread of exactly zero at that precision."""
    if values is not None:
        mean, sd, n = mean_sd(values)
    if _is_missing(mean):
        return MISSING
    cell = format_number(mean, digits, signed=signed)
    if n == 1:
        return f"{cell} (n=1)"
    if not _is_missing(sd):
        cell += f" ± {format_spread(sd, digits)}"
    if show_n and n is not None:
        cell += f" (n={n})"
    return cell


def _numeric_column(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None and not (isinstance(v, str) and v == MISSING)]
    return bool(present) and all(
        isinstance(v, Number) and not isinstance(v, (bool, np.bool_)) for v in present
    )


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    formats: Mapping[str, Callable[[Any], str]] | None = None,
    digits: int = 3,
    align: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """A Markdown table of ``rows`` (mappings) over ``columns`` (default: the first row's keys).

    Cells: ``formats[column](value)`` if given, numbers via :func:`format_number` with
    ``digits``, anything else via ``str``; every cell and header is :func:`escape` d. Numeric
    columns are right-aligned (``---:``), others left (``:---``); ``align`` overrides per column
    with ``"left"``, ``"right"`` or ``"center"``. A missing key is shown as :data:`MISSING`.
    """
    if columns is None:
        if not rows:
            raise ValueError("markdown_table needs columns when rows is empty")
        columns = list(rows[0])
    if not columns:
        raise ValueError("markdown_table needs at least one column")
    formats, align, headers = dict(formats or {}), dict(align or {}), dict(headers or {})
    unknown = [c for c in (*formats, *align) if c not in columns]
    if unknown:
        raise KeyError(f"formats/align name columns {unknown} that are not in {list(columns)}")
    rules = {"left": ":---", "right": "---:", "center": ":---:"}
    bad = {c: a for c, a in align.items() if a not in rules}
    if bad:
        raise ValueError(f"align values must be one of {sorted(rules)}, got {bad}")

    def cell(column: str, value: Any) -> str:
        if column in formats:
            return escape(formats[column](value))
        if _is_missing(value) and not isinstance(value, str):
            return MISSING
        if isinstance(value, Number):
            return format_number(value, digits)
        return escape(value)

    head = "| " + " | ".join(escape(headers.get(c, c)) for c in columns) + " |"
    rule_cells = []
    for c in columns:
        default = "right" if _numeric_column([r.get(c) for r in rows]) else "left"
        rule_cells.append(rules[align.get(c, default)])
    rule = "| " + " | ".join(rule_cells) + " |"
    body = ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def as_markdown(text: str) -> Any:
    """``IPython.display.Markdown(text)`` for ``display``/``glue`` in a notebook."""
    from IPython.display import Markdown

    return Markdown(text)
