"""Counts in messages (``automl.wording``)."""

from __future__ import annotations

from automl.wording import as_written, clipped, counted, first_few


def test_a_count_of_one_is_singular_and_any_other_plural() -> None:
    assert [counted(n, "trial") for n in (0, 1, 2)] == ["0 trials", "1 trial", "2 trials"]
    assert counted(1, "class", "classes") == "1 class"
    assert counted(3, "class", "classes") == "3 classes"


def test_values_are_written_as_a_spec_writes_them() -> None:
    """Python's ``True`` and ``None`` read as another language's in a spec's errors."""
    written = as_written([True, None, {"a": False}, ("x", 1.5)])

    assert written == "[true, null, {'a': false}, ['x', 1.5]]"


def test_first_few_names_says_how_many_more() -> None:
    assert first_few(["a", "b"]) == "a, b"
    assert first_few(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"
    assert first_few(["a", "b", "c"], 2) == "a, b and 1 more"


def test_a_long_reason_is_cut_at_a_space() -> None:
    """Found by a tester: a download error was cut at 200 characters mid-word ("... g)")."""
    words = "Tried http://yann.lecun.com/exdb/mnist/ and got nothing back " * 8
    cut = clipped(words.strip())
    assert len(cut) <= 304 and cut.endswith(" ...")
    assert words.startswith(cut.removesuffix(" ...") + " ")
    assert clipped("x" * 400) == "x" * 300 + " ..."
    assert clipped("short") == "short"
