"""equisae.display writes the MyST that makes numbered, captioned figures and tables."""

from __future__ import annotations

import pytest

from equisae import display

TABLE = "| model | R² |\n| --- | ---: |\n| `gcnn` | 1.0000 |"


def test_reproduce_command_names_the_notebook_and_mode() -> None:
    assert display.reproduce_command("03_linear_representation", "quick") == (
        "equisae reproduce --mode quick --only 03"
    )
    assert "`equisae reproduce --mode full --only 06`" in display.reproduce_line("06", "full")
    with pytest.raises(ValueError, match="mode must be one of"):
        display.reproduce_command("03", "medium")
    with pytest.raises(ValueError, match="two-digit number"):
        display.reproduce_command("probing", "full")


def test_figure_markdown_is_a_glue_figure_with_caption_alt_and_label() -> None:
    text = display.figure_markdown(
        "fig-03-eigenvalues", "Eigenvalues of M.", "Scatter plots of eigenvalues", "Reproduce: `x`"
    )
    lines = text.splitlines()
    assert lines[0] == "```{glue:figure} fig-03-eigenvalues"
    assert ":alt: Scatter plots of eigenvalues" in lines
    assert ":name: fig-03-eigenvalues" in lines
    assert lines[lines.index("") + 1] == "Eigenvalues of M."  # the first paragraph: the caption
    assert "Reproduce: `x`" in lines and lines[-1] == "```"


def test_fence_outgrows_backticks_in_the_caption() -> None:
    text = display.figure_markdown("fig-a", "A ```odd``` caption", "an alt text here")
    assert text.startswith("````{glue:figure}") and text.endswith("\n````")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Fig 1"}, "name must be lower-case"),
        ({"caption": " "}, "caption must be a non-empty string"),
        ({"alt": ""}, "alt must be a non-empty string"),
        ({"alt": "two\nlines"}, "alt must be one line"),
        ({"caption": "wrote /work/main/results/x.json"}, "must not contain a local path"),
    ],
)
def test_figure_markdown_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"name": "fig-a", "caption": "A caption.", "alt": "Some alt text"} | kwargs
    with pytest.raises(ValueError, match=message):
        display.figure_markdown(**args)


def test_table_markdown_wraps_a_pipe_table_in_a_numbered_table() -> None:
    text = display.table_markdown(TABLE, "R² per model.", "tbl-03-r2", "Reproduce: `y`")
    lines = text.splitlines()
    assert lines[0] == "```{table} R² per model."
    assert lines[1] == ":name: tbl-03-r2"
    assert lines[3:6] == TABLE.splitlines()
    assert lines[6] == "```" and lines[-1] == "Reproduce: `y`"
    with pytest.raises(ValueError, match="Markdown pipe table"):
        display.table_markdown("just a sentence", "Caption.", "tbl-a")
    with pytest.raises(ValueError, match="one line"):
        display.table_markdown(TABLE, "two\nlines", "tbl-a")


def test_escape_cell_protects_pipes_in_labels() -> None:
    assert display.escape_cell("|G| = 4") == r"\|G\| = 4"
    assert display.escape_cell(r"already \| escaped") == r"already \| escaped"
    assert display.escape_cell("a\nb") == "a b"


def test_show_helpers_display_markdown(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(display, "_display_markdown", shown.append)
    display.show_text("  The verdict: **held**.  ")
    display.show_table(TABLE, "Caption.", "tbl-b")
    assert shown[0] == "The verdict: **held**."
    assert shown[1].startswith("```{table} Caption.")
    with pytest.raises(ValueError, match="text must be a non-empty string"):
        display.show_text("")


def test_glue_figure_glues_closes_and_displays(monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import myst_nb

    glued: list[tuple] = []
    shown: list[str] = []
    monkeypatch.setattr(myst_nb, "glue", lambda *a, **k: glued.append((a, k)))
    monkeypatch.setattr(display, "_display_markdown", shown.append)
    fig = plt.figure()
    assert display.glue_figure("fig-x", fig, "Caption.", "A blank test figure") is None
    assert glued == [(("fig-x", fig), {"display": False})]
    assert not plt.fignum_exists(fig.number)
    assert len(shown) == 1 and shown[0].startswith("```{glue:figure} fig-x")


def test_settings_text_reads_as_prose_not_a_repr() -> None:
    import dataclasses

    import pytest

    from equisae.display import settings_text

    @dataclasses.dataclass
    class TrainSettings:
        epochs: int
        batch_size: int
        lr: float = 3e-3
        sizes: tuple = (2, 4)

    text = settings_text(TrainSettings(20, 128))
    assert text == "epochs 20, batch size 128, lr 0.003, sizes 2/4"
    assert "(" not in text and "=" not in text
    assert settings_text({"train": 2000, "test": 500}) == "train 2000, test 500"
    with pytest.raises(ValueError, match="settings must be"):
        settings_text(TrainSettings)
