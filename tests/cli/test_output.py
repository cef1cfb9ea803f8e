"""The CLI's tables and texts: what users' names and values look like on a terminal."""

from __future__ import annotations

from automl.cli.output import study_text, table
from automl.store import StudyStatus
from automl.store.views import StudyDetail, TrialCounts


def test_control_characters_in_cells_are_shown_escaped() -> None:
    """Once raw: class names and file names could color or rewrite the terminal."""
    rows = [["\x1b[31mred"], ["multi\nline"], ["\u202eevil"], ["cat 🐱 é"]]
    text = table(("CLASS",), rows)
    assert "\x1b" not in text and "\u202e" not in text
    assert text.splitlines()[2:] == ["\\x1b[31mred", "multi\\nline", "\\u202eevil", "cat 🐱 é"]


def test_study_text_counts_cancelled_trials() -> None:
    counts = TrialCounts(complete=1, cancelled=3)
    detail = StudyDetail.model_construct(
        id=9,
        name="s",
        status=StudyStatus.CANCELLED,
        status_reason=None,
        metrics=["accuracy"],
        directions=["maximize"],
        n_trials=4,
        counts=counts,
        best_value=None,
        seed=None,
    )
    assert "seed:" not in study_text(detail)  # a view from an older server has none
    assert "seed:      1234" in study_text(detail.model_copy(update={"seed": 1234}))
    assert "(complete 1, pruned 0, failed 0; running 0, waiting 0, cancelled 3)" in study_text(
        detail
    )
