"""Tests of the generic ``Registry``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from automl.registry import Registry, UnknownNameError


@pytest.fixture
def widgets() -> Registry[Callable[[], str]]:
    registry: Registry[Callable[[], str]] = Registry("widget")
    registry.add("sprocket", lambda: "sprocket")
    registry.add("gear", lambda: "gear")
    registry.add("flange", lambda: "flange")
    return registry


def test_register_decorator_returns_entry_and_registers_it() -> None:
    registry: Registry[Callable[[], int]] = Registry("thing")

    @registry.register("one")
    def one() -> int:
        return 1

    assert one() == 1
    assert registry.get("one") is one
    assert "one" in registry
    assert len(registry) == 1


def test_add_then_get_returns_same_entry(widgets: Registry[Callable[[], str]]) -> None:
    entry = widgets.get("gear")
    assert entry() == "gear"
    assert widgets.get("gear") is entry


def test_duplicate_add_is_rejected(widgets: Registry[Callable[[], str]]) -> None:
    original = widgets.get("gear")
    with pytest.raises(ValueError, match=r"widget 'gear' is already registered"):
        widgets.add("gear", lambda: "other")
    assert widgets.get("gear") is original


def test_duplicate_register_decorator_is_rejected(widgets: Registry[Callable[[], str]]) -> None:
    with pytest.raises(ValueError, match="already registered"):

        @widgets.register("sprocket")
        def again() -> str:  # pragma: no cover - never registered
            return "again"


def test_get_unknown_name_lists_valid_choices(widgets: Registry[Callable[[], str]]) -> None:
    with pytest.raises(UnknownNameError) as info:
        widgets.get("cog")
    message = str(info.value)
    assert message.startswith("unknown widget 'cog'")
    assert message.endswith("valid choices: flange, gear, sprocket")
    assert "did you mean" not in message


def test_get_unknown_name_suggests_close_name(widgets: Registry[Callable[[], str]]) -> None:
    with pytest.raises(UnknownNameError, match=r"did you mean 'sprocket'\?"):
        widgets.get("sprockett")


def test_unknown_name_error_is_a_value_error() -> None:
    assert issubclass(UnknownNameError, ValueError)


@pytest.mark.parametrize("name", [None, 3, ["gear"]])
def test_get_non_string_name_raises_unknown_name(
    widgets: Registry[Callable[[], str]], name: object
) -> None:
    with pytest.raises(UnknownNameError, match="valid choices: flange, gear, sprocket"):
        widgets.get(name)  # type: ignore[arg-type]


def test_validate_returns_registered_name(widgets: Registry[Callable[[], str]]) -> None:
    assert widgets.validate("flange") == "flange"


def test_validate_rejects_unknown_name(widgets: Registry[Callable[[], str]]) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown widget 'flang'.*did you mean 'flange'"):
        widgets.validate("flang")


def test_names_are_sorted_regardless_of_insertion_order(
    widgets: Registry[Callable[[], str]],
) -> None:
    assert widgets.names() == ["flange", "gear", "sprocket"]
    assert list(widgets) == ["flange", "gear", "sprocket"]


def test_contains_and_len(widgets: Registry[Callable[[], str]]) -> None:
    assert "gear" in widgets
    assert "cog" not in widgets
    assert 5 not in widgets
    assert len(widgets) == 3


def test_empty_registry() -> None:
    registry: Registry[int] = Registry("nothing")
    assert registry.names() == []
    assert len(registry) == 0
    with pytest.raises(UnknownNameError, match=r"unknown nothing 'x'; valid choices: $"):
        registry.get("x")


def test_registries_are_independent() -> None:
    first: Registry[int] = Registry("first")
    second: Registry[int] = Registry("second")
    first.add("a", 1)
    second.add("a", 2)
    assert first.get("a") == 1
    assert second.get("a") == 2
