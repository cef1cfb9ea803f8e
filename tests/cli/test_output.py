"""The CLI's tables and texts: what users' names and values look like on a terminal."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime

import pytest

from automl.cli.output import display_width, printable_json, studies_table, study_text, table
from automl.store import StudyStatus
from automl.store.views import JobState, Page, StudyDetail, StudySummary, TrialCounts


def test_control_characters_in_cells_are_shown_escaped() -> None:
    """Once raw: class names and file names could color or rewrite the terminal."""
    rows = [["\x1b[31mred"], ["multi\nline"], ["\u202eevil"], ["cat 🐱 é"]]
    text = table(("CLASS",), rows)
    assert "\x1b" not in text and "\u202e" not in text
    assert text.splitlines()[2:] == ["\\x1b[31mred", "multi\\nline", "\\u202eevil", "cat 🐱 é"]


def test_wide_and_combining_characters_keep_the_columns_aligned() -> None:
    """Found by a tester: a CJK class name pushed its row's later columns right."""
    nfd = "Gu\u0308ns"  # "Güns" as macOS writes file names: u and a combining diaeresis
    text = table(("CLASS", "RECALL"), [["狗狗", 0.5], [nfd, 0.25], ["cat", 1.0]])

    lines = text.splitlines()
    assert lines[0] == "CLASS  RECALL"
    assert lines[2:] == ["狗狗   0.5", f"{nfd}   0.25", "cat    1"]
    assert [display_width(line) for line in lines[2:]] == [10, 11, 8]  # values at column 7


def _detail(**fields: object) -> StudyDetail:
    """A study's view as an older server may send it (no seed, no warm start)."""
    defaults: dict[str, object] = {
        "id": 9,
        "name": "s",
        "status": StudyStatus.QUEUED,
        "status_reason": None,
        "metrics": ["accuracy"],
        "directions": ["maximize"],
        "n_trials": 4,
        "counts": TrialCounts(waiting=4),
        "best_value": None,
        "seed": None,
    }
    return StudyDetail.model_construct(**{**defaults, **fields})


def test_study_text_counts_cancelled_trials() -> None:
    counts = TrialCounts(complete=1, cancelled=3)
    detail = _detail(status=StudyStatus.CANCELLED, counts=counts)
    assert "seed:" not in study_text(detail)  # a view from an older server has none
    assert "seed:      1234" in study_text(detail.model_copy(update={"seed": 1234}))
    assert "(complete 1, pruned 0, failed 0; running 0, waiting 0, cancelled 3)" in study_text(
        detail
    )


def _summary(study_id: int, project: str) -> StudySummary:
    return StudySummary.model_construct(
        id=study_id,
        name=f"s{study_id}",
        project=project,
        status=StudyStatus.QUEUED,
        n_trials=3,
        counts=TrialCounts(),
        best_value=None,
        created_at=None,
    )


def test_the_studies_table_shows_projects_when_a_study_is_not_in_the_default_one() -> None:
    alone = studies_table(Page[StudySummary](data=[_summary(1, "default")], count=1))
    mixed = studies_table(
        Page[StudySummary](data=[_summary(2, "vision"), _summary(1, "default")], count=2)
    )

    assert alone.splitlines()[0].split() == ["ID", "NAME", "STATUS", "TRIALS", "BEST", "CREATED"]
    header, _, first, second, _ = mixed.splitlines()
    assert header.split()[:4] == ["ID", "NAME", "PROJECT", "STATUS"]
    assert first.split()[:4] == ["2", "s2", "vision", "queued"]
    assert second.split()[:4] == ["1", "s1", "default", "queued"]


def test_json_is_escaped_where_stdout_cannot_print_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a tester: ``extend --json`` under ``PYTHONIOENCODING=ascii`` printed a
    traceback (exit 1) after it had added the trials; a retry added them twice."""
    text = json.dumps({"description": "ünïcödé ✓"}, ensure_ascii=False, indent=2)
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", ascii_out)
    escaped = printable_json(text)
    assert escaped == '{\n  "description": "\\u00fcn\\u00efc\\u00f6d\\u00e9 \\u2713"\n}'
    assert json.loads(escaped) == json.loads(text)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    assert printable_json(text) == text  # readable where it can be printed


def test_a_warm_start_note_written_by_hand_prints_no_traceback() -> None:
    """The note is an Optuna study attribute, which other tools can write."""
    detail = _detail(warm_start={"studies": 3, "enqueued": "two", "dropped": 5, "duplicates": 1})

    last = study_text(detail).splitlines()[-1]

    expected = "warm start: 0 configurations from studies none found; left out: 1 the same"
    assert last == expected + " as one before"


def test_status_says_where_the_test_evaluation_and_the_refit_stand() -> None:
    """A refit held by a killed worker showed nowhere in status while it waited for the
    grace period (an operator could not tell which worker held it)."""
    beat = datetime(2026, 12, 7, 20, 31, 7, tzinfo=UTC)
    detail = _detail(
        test_evaluation=JobState(state="failed", since=beat, note="CUDA error: out of memory"),
        refit=JobState(state="running", worker="w-9", since=beat),
    )

    assert study_text(detail).splitlines()[-2:] == [
        "test split: failed: CUDA error: out of memory",
        "refit:     running on worker w-9 (last beat 20:31:07 UTC)",
    ]
    assert "refit" not in study_text(_detail())


def test_a_multi_objective_study_shows_its_pareto_fronts_size() -> None:
    two = {"metrics": ["accuracy", "params"], "directions": ["maximize", "minimize"]}

    front = study_text(_detail(**two, pareto_front_size=3)).splitlines()
    none_yet = study_text(_detail(**two, pareto_front_size=0))

    assert front[-1] == "best:      3 trials on the Pareto front"
    assert "best:" not in none_yet  # no completed trial yet: as with one objective
    assert "best:" not in study_text(_detail())  # an older server sends no size
