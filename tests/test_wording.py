"""Counts in messages (``automl.wording``)."""

from __future__ import annotations

from automl.wording import counted


def test_a_count_of_one_is_singular_and_any_other_plural() -> None:
    assert [counted(n, "trial") for n in (0, 1, 2)] == ["0 trials", "1 trial", "2 trials"]
    assert counted(1, "class", "classes") == "1 class"
    assert counted(3, "class", "classes") == "3 classes"
