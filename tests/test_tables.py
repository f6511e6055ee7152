"""Tests for equisae.tables: escaping, alignment, missing values, rounding."""

from __future__ import annotations

import math

import pytest

from equisae.tables import (
    MISSING,
    as_markdown,
    escape,
    format_number,
    markdown_table,
    mean_sd,
    mean_sd_cell,
)


def _cells(line: str) -> list[str]:
    """Split a Markdown row on unescaped pipes."""
    parts, cur, prev = [], "", ""
    for ch in line.strip()[1:-1]:
        if ch == "|" and prev != "\\":
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
        prev = ch
    return [*parts, cur.strip()]


def test_pipes_in_labels_are_escaped_and_keep_the_column_count():
    table = markdown_table([{"model / layer": "a|b", "x": 1.0}], ["model / layer", "x"])
    head, rule, row = table.splitlines()
    assert "a\\|b" in row
    assert len(_cells(row)) == len(_cells(head)) == len(_cells(rule)) == 2
    assert escape("p|q\nr") == "p\\|q r"
    assert escape("already \\| escaped") == "already \\| escaped"


def test_numeric_columns_right_aligned_text_left_and_override():
    rows = [{"name": "topk", "fvu": 0.1234, "n": 3}, {"name": "adaptive", "fvu": None, "n": 3}]
    rule = markdown_table(rows).splitlines()[1]
    assert _cells(rule) == [":---", "---:", "---:"]
    rule = markdown_table(rows, align={"fvu": "center"}).splitlines()[1]
    assert _cells(rule)[1] == ":---:"
    with pytest.raises(ValueError, match="align values"):
        markdown_table(rows, align={"fvu": "middle"})
    with pytest.raises(KeyError, match="nope"):
        markdown_table(rows, formats={"nope": str})


def test_missing_and_nan_shown_as_dash_and_rounding():
    rows = [{"a": float("nan"), "b": 0.12349, "c": 1234567}, {"b": math.inf}]
    table = markdown_table(rows, ["a", "b", "c"], digits=3)
    first, second = (_cells(line) for line in table.splitlines()[2:])
    assert first == [MISSING, "0.123", "1,234,567"]
    assert second == [MISSING, MISSING, MISSING]
    assert format_number(2.71828, 2) == "2.72"
    assert format_number(-0.0001, 3) == "0.000"  # no "-0.000"
    assert format_number(0.04, 2, signed=True) == "+0.04"
    assert format_number(None) == MISSING


def test_mean_sd_cells():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    assert mean_sd_cell([1.0, 2.0, 3.0], digits=2) == "2.00 ± 1.00"
    assert mean_sd_cell([0.5], digits=1, show_n=True) == "0.5 (n=1)"
    assert mean_sd_cell([0.5], digits=1) == "0.5 (n=1)"  # one seed: no spread, never "± 0.0"
    assert mean_sd_cell([0.2, 0.2, 0.2]) == "0.200 ± 0"  # identical values
    assert mean_sd_cell(mean=0.163, sd=0.0002, n=3) == "0.163 ± <0.001"  # rounds to zero
    assert mean_sd_cell(mean=0.5, sd=0.0, n=1, signed=True) == "+0.500 (n=1)"
    assert mean_sd_cell([float("nan"), None]) == MISSING
    assert mean_sd_cell(mean=0.25, sd=None, digits=2) == "0.25"
    assert mean_sd_cell(mean=0.041, sd=0.007, signed=True) == "+0.041 ± 0.007"


def test_as_markdown_wraps_for_display():
    obj = as_markdown("| a |\n| --- |")
    assert obj.data == "| a |\n| --- |"
