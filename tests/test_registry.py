"""Tests of the generic ``Registry``: entries with options, descriptions and plugins."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field, ValidationError

from automl import registry as registry_module
from automl.registry import EntryOptions, Registry, UnknownNameError, describe_options


class GearOptions(EntryOptions):
    teeth: int = Field(12, ge=4, le=200, description="Number of teeth.")
    finish: Literal["steel", "brass"] = Field("steel", description="Surface.")
    ratio: float | None = Field(None, gt=0, description="Optional ratio.")


@pytest.fixture
def widgets() -> Registry[Callable[[], str]]:
    registry: Registry[Callable[[], str]] = Registry("widget")
    registry.add("sprocket", lambda: "sprocket", description="A sprocket.")
    registry.add("gear", lambda: "gear", options=GearOptions)
    registry.add("flange", lambda: "flange")
    return registry


def test_register_decorator_returns_target_and_takes_docstring_as_description() -> None:
    registry: Registry[Callable[[], int]] = Registry("thing")

    @registry.register("one")
    def one() -> int:
        """Returns one.

        More text that is not part of the description.
        """
        return 1

    assert one() == 1
    entry = registry.get("one")
    assert entry.factory is one
    assert entry.name == "one"
    assert entry.description == "Returns one."
    assert entry.source == "automl"
    assert "one" in registry
    assert len(registry) == 1


def test_duplicate_add_is_rejected(widgets: Registry[Callable[[], str]]) -> None:
    original = widgets.get("gear")
    with pytest.raises(ValueError, match=r"widget 'gear' is already registered"):
        widgets.add("gear", lambda: "other")
    assert widgets.get("gear") is original


def test_unknown_name_lists_valid_choices_and_suggests(
    widgets: Registry[Callable[[], str]],
) -> None:
    with pytest.raises(UnknownNameError) as info:
        widgets.get("cog")
    assert str(info.value) == "unknown widget 'cog'; valid choices: flange, gear, sprocket"
    with pytest.raises(UnknownNameError, match=r"did you mean 'sprocket'\?"):
        widgets.validate("sprockett")
    assert issubclass(UnknownNameError, ValueError)


@pytest.mark.parametrize(
    ("name", "shown"), [(None, "null"), (True, "true"), (3, "3"), (["gear"], "['gear']")]
)
def test_non_string_names_are_unknown(
    widgets: Registry[Callable[[], str]], name: object, shown: str
) -> None:
    """Shown as a spec writes them: ``unknown widget True`` read as Python."""
    message = f"unknown widget {shown}; valid choices: flange, gear, sprocket"
    with pytest.raises(UnknownNameError) as info:
        widgets.get(name)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_names_sorted_and_membership(widgets: Registry[Callable[[], str]]) -> None:
    assert widgets.names() == ["flange", "gear", "sprocket"]
    assert list(widgets) == ["flange", "gear", "sprocket"]
    assert [entry.name for entry in widgets.entries()] == ["flange", "gear", "sprocket"]
    assert "gear" in widgets and "cog" not in widgets and 5 not in widgets
    assert len(widgets) == 3


def test_parse_options_fills_defaults_and_rejects_bad_values(
    widgets: Registry[Callable[[], str]],
) -> None:
    entry = widgets.get("gear")
    assert entry.parse_options({"teeth": 30}).model_dump() == {
        "teeth": 30,
        "finish": "steel",
        "ratio": None,
    }
    with pytest.raises(ValidationError, match="less than or equal to 200"):
        entry.parse_options({"teeth": 500})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        widgets.get("flange").parse_options({"teeth": 3})


def test_describe_options_reports_type_default_choices_and_range() -> None:
    infos = {info.name: info for info in describe_options(GearOptions)}
    assert infos["teeth"].type == "int"
    assert infos["teeth"].default == 12
    assert infos["teeth"].range == {"ge": 4, "le": 200}
    assert infos["teeth"].description == "Number of teeth."
    assert infos["finish"].type == "categorical"
    assert infos["finish"].choices == ["steel", "brass"]
    assert infos["ratio"].type == "float"
    assert infos["ratio"].range == {"gt": 0}


def test_describe_lists_every_entry(widgets: Registry[Callable[[], str]]) -> None:
    described = {item["name"]: item for item in widgets.describe()}
    assert set(described) == set(widgets.names())
    assert described["sprocket"]["description"] == "A sprocket."
    assert described["sprocket"]["options"] == []
    assert [option["name"] for option in described["gear"]["options"]] == [
        "teeth",
        "finish",
        "ratio",
    ]


@pytest.fixture
def plugin_path(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path holding an installed-looking distribution with entry points."""
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [name for name in sys.modules if name.startswith("acme_widgets")]:
        del sys.modules[name]


def write_distribution(root: Path, group: str, points: dict[str, str], modules: dict[str, str]):
    info = root / "acme_widgets-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-widgets\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


def test_plugins_register_entries_with_their_source_and_broken_ones_are_reported(
    plugin_path: Path,
) -> None:
    registry: Registry[Callable[[], str]] = Registry("widget", group="test.automl.widgets")
    sys.modules["test_widget_registry"] = type(sys)("test_widget_registry")
    sys.modules["test_widget_registry"].REGISTRY = registry  # type: ignore[attr-defined]
    write_distribution(
        plugin_path,
        "test.automl.widgets",
        {"good": "acme_widgets_good", "broken": "acme_widgets_broken", "fn": "acme_widgets_fn:add"},
        {
            "acme_widgets_good": """
                from test_widget_registry import REGISTRY

                @REGISTRY.register("cog")
                def cog():
                    '''A plugin cog.'''
                    return "cog"
            """,
            "acme_widgets_broken": "raise RuntimeError('missing native library')\n",
            "acme_widgets_fn": """
                def add(registry):
                    registry.add("washer", lambda: "washer", description="A washer.")
            """,
        },
    )
    try:
        registry.load_plugins()
        registry.load_plugins()  # idempotent
    finally:
        del sys.modules["test_widget_registry"]
    assert registry.names() == ["cog", "washer"]
    assert registry.get("cog").source == "acme-widgets"
    assert registry.get("cog").description == "A plugin cog."
    assert registry.get("washer").factory() == "washer"
    assert registry.plugin_errors == {"broken": "RuntimeError: missing native library"}


def write_package(root: Path, name: str, points: dict[str, str], modules: dict[str, str]) -> None:
    """Another installed-looking distribution, ``name`` 1.0, with entry points in
    ``test.automl.widgets`` (its module names must start with ``acme_widgets``)."""
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "\n".join(f"{point} = {target}" for point, target in points.items())
    (info / "entry_points.txt").write_text(f"[test.automl.widgets]\n{lines}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def widgets_and_gadgets() -> Iterator[tuple[Registry[str], Registry[str]]]:
    """Two registries whose entry names qualify options, as models' and losses' do; the
    plugins reach them as ``test_widget_registry.WIDGETS`` and ``.GADGETS``."""
    widgets: Registry[str] = Registry("widget", group="test.automl.widgets", qualifies=True)
    gadgets: Registry[str] = Registry("gadget", qualifies=True)
    gadgets.add("cog", "a built-in gadget")
    module = type(sys)("test_widget_registry")
    module.WIDGETS, module.GADGETS = widgets, gadgets  # type: ignore[attr-defined]
    sys.modules["test_widget_registry"] = module
    yield widgets, gadgets
    del sys.modules["test_widget_registry"]
    registry_module._QUALIFYING.remove(widgets)
    registry_module._QUALIFYING.remove(gadgets)


def test_plugins_are_credited_and_kept_apart(
    plugin_path: Path, widgets_and_gadgets: tuple[Registry[str], Registry[str]]
) -> None:
    """Found by a plugin author: a second package's entry point of the same name was
    never loaded; a module's entries in another registry were credited to automl; and a
    plugin model named ``hflip`` took over the augmentation's ``hflip.p``."""
    widgets, gadgets = widgets_and_gadgets
    write_package(
        plugin_path,
        "acme-one",
        {
            "shared": "acme_widgets_one",
            "clash": "acme_widgets_clash",
            "half": "acme_widgets_half",
        },
        {
            "acme_widgets_half": """
                from test_widget_registry import GADGETS, WIDGETS
                WIDGETS.add("early", "w")
                GADGETS.add("early_gadget", "g")
                raise ImportError("no module named torch_blobs")
            """,
            "acme_widgets_one": """
                from test_widget_registry import GADGETS, WIDGETS
                WIDGETS.add("one", "w")
                GADGETS.add("one_gadget", "g")
            """,
            "acme_widgets_clash": """
                from test_widget_registry import WIDGETS
                WIDGETS.add("cog", "a widget that takes a gadget's name")
            """,
        },
    )
    write_package(
        plugin_path,
        "acme-two",
        {"shared": "acme_widgets_two"},
        {"acme_widgets_two": "from test_widget_registry import WIDGETS\nWIDGETS.add('two', 'w')\n"},
    )

    widgets.load_plugins()

    assert widgets.names() == ["one", "two"]
    assert widgets.get("two").source == "acme-two"
    assert gadgets.get("one_gadget").source == "acme-one"
    assert gadgets.get("cog").source == "automl"
    assert widgets.plugin_errors == {
        "clash": "ValueError: widget 'cog': gadget 'cog' is registered too, and a spec's "
        "'cog.OPTION' could not tell the two apart; use another name",
        "half": "ImportError: no module named torch_blobs",
    }
    # A plugin reported as failed leaves nothing a spec could choose.
    assert "early" not in widgets and "early_gadget" not in gadgets


@pytest.mark.parametrize("name", ["my.net", "", " net", "net\n", "-net", "x" * 65, 3])
def test_an_entry_name_a_spec_could_not_write_is_refused(name: object) -> None:
    """Found by a plugin author: ``my.net`` registered, and ``my.net.width`` was unknown."""
    registry: Registry[str] = Registry("widget")
    with pytest.raises(ValueError, match="use 1-64 letters, digits, '_' or '-'"):
        registry.add(name, "w")  # type: ignore[arg-type]


def test_an_entrys_description_writes_literals_as_markdown_and_terminals_do() -> None:
    """Found by a tester: `automl list losses` printed reST's ``class_weights``."""
    registry: Registry[Callable[[], None]] = Registry("thing")

    def documented() -> None:
        """Uses ``x`` twice: ``x``."""

    assert registry.register("documented")(documented) is documented
    assert registry.get("documented").description == "Uses `x` twice: `x`."


def test_what_a_factory_makes_is_checked_naming_the_entry() -> None:
    """Found by a plugin author: a model factory returning None failed later as
    "'NoneType' object has no attribute 'to' (at accel.py:187)"."""
    registry: Registry[Callable[[], object]] = Registry("widget")
    entry = registry.add("cog", lambda: None)

    assert registry.made(entry, 3, int, "a count") == 3
    with pytest.raises(TypeError, match=r"^widget 'cog' \(automl\) made NoneType, not a count$"):
        registry.made(entry, entry.factory(), int, "a count")


def test_an_unknown_name_says_a_plugin_may_add_it_or_failed_to_load() -> None:
    """Found by a plugin author: a study of a plugin's dataset, with the plugin gone,
    said only "unknown dataset 'blobs'"."""
    registry: Registry[str] = Registry("widget", group="test.automl.none")
    registry.add("cog", "c")
    assert registry.unknown_message("blobs") == (
        "unknown widget 'blobs'; valid choices: cog; a plugin's entry needs its package "
        "installed here"
    )
    assert registry.unknown_message("cogg").endswith("valid choices: cog")
    registry.plugin_errors["acme"] = "ImportError: no module named torch_blobs"
    assert registry.unknown_message("blobs").endswith(
        "valid choices: cog; plugins that failed to load here: acme"
    )
