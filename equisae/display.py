"""Notebook display helpers: numbered figures and tables with captions, and text-only output.

The book renders a notebook's Markdown output as MyST (``nb_render_markdown_format: myst`` in
``_config.yml``), so a cell can emit directives. These helpers write those directives:

* :func:`glue_figure` glues a matplotlib figure under a key (myst-nb ``glue``) and displays a
  ``{glue:figure}`` directive with a caption, real alt text and a "Reproduce" line, so the book
  shows a numbered figure instead of a bare image;
* :func:`show_table` displays a Markdown pipe table inside a ``{table}`` directive (numbered,
  captioned), with the same "Reproduce" line;
* :func:`show_text` displays Markdown prose (a verdict, a summary) built in code, for a cell
  tagged ``remove-input`` so that the reader sees only the text.

The ``*_markdown`` functions return the MyST text without displaying anything (tested without a
kernel).
"""

from __future__ import annotations

import re
from typing import Any

from equisae.modes import check_mode

NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
LOCAL_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|root|home|Users)/")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(
            f"name must be lower-case letters, digits and '-' (a MyST label such as "
            f"'fig-03-eigenvalues'), got {name!r}"
        )
    return name


def _check_text(argument: str, text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{argument} must be a non-empty string, got {text!r}")
    if LOCAL_PATH.search(text):
        raise ValueError(f"{argument} must not contain a local path, got {text!r}")
    return text.strip()


def _fence(*texts: str) -> str:
    """A backtick fence longer than any backtick run in ``texts``."""
    longest = max((len(run) for t in texts for run in re.findall(r"`+", t)), default=0)
    return "`" * max(3, longest + 1)


def escape_cell(value: Any) -> str:
    """``value`` as the text of a Markdown table cell: ``|`` escaped, newlines joined."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    return re.sub(r"(?<!\\)\|", r"\\|", text)


def reproduce_command(notebook: str, mode: str) -> str:
    """The command that re-runs one notebook, e.g. ``equisae reproduce --mode full --only 03``."""
    check_mode(mode)
    match = re.match(r"^(\d{2})", str(notebook))
    if match is None:
        raise ValueError(
            f"notebook must start with its two-digit number (e.g. '03'), got {notebook!r}"
        )
    return f"equisae reproduce --mode {mode} --only {match.group(1)}"


def reproduce_line(notebook: str, mode: str) -> str:
    """A Markdown line naming the command that regenerates a figure or table."""
    return f"Reproduce this: `{reproduce_command(notebook, mode)}`"


def figure_markdown(
    name: str, caption: str, alt: str, reproduce: str | None = None, width: str | None = None
) -> str:
    """A ``{glue:figure}`` directive for the glued key ``name`` (also its label)."""
    _check_name(name)
    caption, alt = _check_text("caption", caption), _check_text("alt", alt)
    if "\n" in alt:
        raise ValueError(f"alt must be one line, got {alt!r}")
    body = [caption]
    if reproduce:
        body += ["", _check_text("reproduce", reproduce)]
    fence = _fence(caption, reproduce or "")
    options = [f":alt: {alt}", f":name: {name}"]
    if width:
        options.append(f":width: {width}")
    return "\n".join([f"{fence}{{glue:figure}} {name}", *options, "", *body, fence])


def table_markdown(table: str, caption: str, name: str, reproduce: str | None = None) -> str:
    """A Markdown pipe ``table`` inside a numbered ``{table}`` directive with ``caption``."""
    _check_name(name)
    caption = _check_text("caption", caption)
    if "\n" in caption:
        raise ValueError(f"caption of a table must be one line, got {caption!r}")
    lines = [line for line in table.strip().splitlines() if line.strip()]
    if len(lines) < 2 or not re.match(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$", lines[1]):
        raise ValueError(
            f"table must be a Markdown pipe table (a header line, then '| --- |'), got {table!r}"
        )
    fence = _fence(table, caption)
    out = "\n".join([f"{fence}{{table}} {caption}", f":name: {name}", "", *lines, fence])
    if reproduce:
        out += "\n\n" + _check_text("reproduce", reproduce)
    return out


def settings_text(settings: Any) -> str:
    """A dataclass or mapping of settings as prose, ``"epochs 20, batch size 128, lr 0.003"``:
    what a reader sees instead of a Python repr such as ``TrainSettings(epochs=20, ...)``."""
    import dataclasses

    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        items = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    elif isinstance(settings, dict):
        items = dict(settings)
    else:
        raise ValueError(
            f"settings must be a dataclass instance or a dict, got {type(settings).__name__}"
        )

    def value(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "/".join(value(x) for x in v)
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    return ", ".join(f"{str(k).replace('_', ' ')} {value(v)}" for k, v in items.items())


def _display_markdown(text: str) -> None:
    from IPython.display import Markdown, display

    display(Markdown(text))


def glue_figure(
    name: str,
    fig: Any,
    caption: str,
    alt: str,
    reproduce: str | None = None,
    width: str | None = None,
) -> None:
    """Glue ``fig`` under ``name``, close it, and display it as a numbered, captioned figure.

    Displays a ``{glue:figure}`` directive (see :func:`figure_markdown`); returns nothing, so
    that a call at the end of a cell adds no text output.
    """
    import matplotlib.pyplot as plt
    from myst_nb import glue

    text = figure_markdown(name, caption, alt, reproduce, width)
    glue(name, fig, display=False)
    plt.close(fig)
    _display_markdown(text)


def show_table(table: str, caption: str, name: str, reproduce: str | None = None) -> None:
    """Display a Markdown pipe table as a numbered, captioned table (:func:`table_markdown`)."""
    _display_markdown(table_markdown(table, caption, name, reproduce))


def show_text(text: str) -> None:
    """Display Markdown prose built in code (use in a cell tagged ``remove-input``)."""
    _display_markdown(_check_text("text", text))
