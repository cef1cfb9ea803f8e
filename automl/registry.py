"""A small generic registry: the one place that maps names to entries of one kind.

Models, losses, optimizers, schedulers, augmentations, imbalance strategies, metrics,
datasets, samplers and pruners each get one ``Registry``. An entry is a factory plus the
pydantic model of its options (type, default, range and description of every option), so
the spec checks, ``/registries`` and the README tables are all generated from one place::

    class CnnOptions(EntryOptions):
        width: int = Field(32, ge=1, le=512, description="Channels of the first block.")

    @MODELS.register("cnn", options=CnnOptions)
    def build_cnn(opts: CnnOptions, shape: tuple[int, ...], num_classes: int) -> nn.Module:
        \"\"\"A small configurable CNN.\"\"\"

Third-party packages add entries with the same ``register`` call from a module named by a
Python entry point in the registry's ``group`` (see ``load_plugins``).
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import inspect
import json
import logging
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import (
    Annotated,
    Any,
    ClassVar,
    Generic,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

import annotated_types
from pydantic import (
    BaseModel,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from automl.config import MAX_ID
from automl.spec_errors import QUOTE_HINT
from automl.wording import as_written

logger = logging.getLogger("automl.registry")

T = TypeVar("T")
V = TypeVar("V")

BUILTIN_SOURCE = "automl"


class UnknownNameError(ValueError):
    """Raised when a name is not registered; the message lists the valid choices."""


MAX_COUNT = MAX_ID
"""Bound of every option that counts trials or epochs: far beyond any use (a study runs
at most ``max_trials``, a trial 10,000 epochs), below what a larger count meets (a C long
or SQLite integer overflow)."""


_STRICT_INPUT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "automl_strict_input", default=False
)


@contextlib.contextmanager
def strict_input() -> Iterator[None]:
    """Within it, ``ExactModel`` fields refuse what they would only take converted: what a
    user submits (specs, request bodies). Outside it they convert as pydantic does, so a
    study stored before these checks (``n_startup_trials: "10"``) still runs."""
    token = _STRICT_INPUT.set(True)
    try:
        yield
    finally:
        _STRICT_INPUT.reset(token)


def within_strict_input() -> bool:
    """Whether the values being validated are a user's input (``strict_input``)."""
    return _STRICT_INPUT.get()


def refuse_field_conversion(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A before-validator body: ``refuse_conversion`` for the field ``info`` names."""
    if info.field_name is not None:
        refuse_conversion(cls.model_fields[info.field_name].annotation, value)
    return value


class ExactModel(BaseModel):
    """A model whose fields, within ``strict_input``, refuse values they would only take
    converted (``"3"`` or ``true`` as a number, ``"yes"`` or ``1`` as a flag)."""

    _no_conversion = field_validator("*", mode="before")(classmethod(refuse_field_conversion))


@dataclass(frozen=True)
class AppliesWhen:
    """When an option of an entry matters at all: only while another option of the same
    entry takes one of ``values`` or, given ``above``, is a number above it.

    Attributes:
        option: The option it depends on (``weighting``).
        values: The values of ``option`` under which it applies (``("effective_number",)``).
        above: Instead of ``values``: it applies only while ``option`` is above this.
        since: The version of a study's space rules (``automl.spec.SPACE_RULES``) from
            which the condition holds: a study submitted before keeps sampling the option
            everywhere, so its conditions and grid cells never change.
    """

    option: str
    values: tuple[Any, ...] = ()
    above: float | None = None
    since: int = 4

    def admits(self, value: Any) -> bool:
        """Whether the option applies where ``option`` is ``value``."""
        if self.above is not None:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            return number and value > self.above
        # True == 1 in Python, but no flag is a number.
        return any(
            isinstance(value, bool) == isinstance(allowed, bool) and value == allowed
            for allowed in self.values
        )

    def describe(self, shown: str | None = None) -> str:
        """The condition as users read it: ``weighting is effective_number``.

        Args:
            shown: The option's name as the spec writes it (default: ``option``), such as
                ``mixup.p`` where every entry of a pipeline has a ``p``.
        """
        name = shown or self.option
        if self.above is not None:
            return f"{name} is above {self.above:g}"
        return f"{name} is {' or '.join(value_text(v) for v in self.values)}"


def value_text(value: Any) -> str:
    """A value as a spec writes it: ``inverse``, ``0.0``, ``true``, ``null``."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


RECORDED = "recorded"
"""Validation context key: true when a configuration is read back from a trial, so what
it names outside the store (its dataset's files, a pretrained checkpoint) is not checked
again: the trial is done with them (``automl.train.trial_config.stored_config``)."""

RGB_ONLY: dict[str, Any] = {"rgb_only": True}
"""Marks an option that changes only RGB images (``json_schema_extra=RGB_ONLY``): a spec
that sets it on a grayscale dataset is refused, since it would be ignored."""


def changes_only_rgb(field: FieldInfo) -> bool:
    """Whether an option's field is marked ``RGB_ONLY``."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("rgb_only") is True


class EntryOptions(ExactModel):
    """Base of an entry's options: every field typed, ranged and described; unknown keys
    are errors, and so are numbers that are not finite and (``strict_input``) values a
    field would only take converted."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    SAMPLES: ClassVar[frozenset[str] | None] = None
    """The samples the entry works on: ``images`` (C, H, W), ``clips`` (T, C, H, W) or
    both; None for its registry's rule (``automl.sample_kinds``)."""

    APPLIES_WHEN: ClassVar[Mapping[str, AppliesWhen]] = {}
    """Options that matter only for some values of another option of the entry, each with
    its condition (``beta`` only while ``weighting`` is ``effective_number``). A study
    searches such an option only where its condition holds, and refuses it where it never
    can (``automl.spec``). Checked when the class is defined."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Refuses a subclass whose ``APPLIES_WHEN`` is wrong (``rule_problems``)."""
        super().__pydantic_init_subclass__(**kwargs)
        problems = rule_problems(cls)
        if problems:
            raise TypeError(f"{cls.__name__}.APPLIES_WHEN: {'; '.join(problems)}")

    @classmethod
    def condition_of(cls, option: str) -> AppliesWhen | None:
        """The condition under which ``option`` applies, or None when it always does."""
        return cls.APPLIES_WHEN.get(option)


def rule_problems(options: type[EntryOptions]) -> list[str]:
    """What is wrong with the ``APPLIES_WHEN`` of ``options``: an unknown option, one
    that depends on itself, a value its option cannot take, or ``above`` on no number."""
    fields = options.model_fields
    problems = []
    for option, rule in options.APPLIES_WHEN.items():
        if option not in fields or rule.option not in fields or option == rule.option:
            problems.append(f"{option!r} -> {rule.option!r} names no other option")
            continue
        annotation = fields[rule.option].annotation
        if rule.above is not None:
            if rule.values or value_kind(annotation)[0] not in ("int", "float"):
                problems.append(f"{option!r}: 'above' needs a number option and no values")
        elif not rule.values:
            problems.append(f"{option!r}: no value of {rule.option!r} lets it apply")
        for value in rule.values:
            try:
                _adapter(annotation).validate_python(value, strict=True)
            except ValidationError:
                problems.append(f"{option!r}: {value!r} is no value of {rule.option!r}")
    return problems


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered entry.

    Attributes:
        name: The name specs use.
        factory: What the entry provides (usually a factory function).
        options: The pydantic model of the entry's options.
        description: One line for users (``/registries``, ``automl list``, README).
        source: ``automl`` for built-in entries, else the plugin's distribution name.
    """

    name: str
    factory: T
    options: type[EntryOptions] = EntryOptions
    description: str = ""
    source: str = BUILTIN_SOURCE

    def parse_options(
        self, options: Mapping[str, Any] | None = None, context: Mapping[str, Any] | None = None
    ) -> EntryOptions:
        """Validates ``options`` with the entry's options model (defaults filled in);
        ``context`` reaches its validators (``RECORDED``).

        Raises:
            pydantic.ValidationError: If an option is unknown or out of range.
        """
        return self.options.model_validate(dict(options or {}), context=context)


@dataclass(frozen=True)
class OptionInfo:
    """What users need to know about one option of an entry."""

    name: str
    type: str
    default: Any = None
    choices: list[Any] | None = None
    range: dict[str, float] = field(default_factory=dict)
    description: str = ""
    required: bool = False


ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""What an entry's name may be: no ``.``, which qualifies an option (``cnn.width``)."""

_QUALIFYING: list[Registry[Any]] = []
"""The registries whose entry names qualify options in a spec (``hflip.p``)."""

_source = contextvars.ContextVar("automl_registering_source", default=BUILTIN_SOURCE)
"""The package whose import registers entries now, in whichever registry: a plugin
module may add a model and a loss."""

_added: contextvars.ContextVar[list[tuple[Registry[Any], str]] | None] = contextvars.ContextVar(
    "automl_registered_entries", default=None
)
"""The entries a plugin's import has registered so far, to take back if it fails."""


class Registry(Generic[T]):
    """Maps names to entries of one kind.

    Args:
        kind: What the entries are, e.g. ``"model"``; used in messages.
        group: Entry-point group that plugins use to add entries, e.g. ``"automl.models"``.
        qualifies: Whether a spec names an entry's options after the entry
            (``sgd.momentum``): a plugin's entry may then not take a name that another
            such registry has.
    """

    def __init__(self, kind: str, group: str | None = None, *, qualifies: bool = False) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, Entry[T]] = {}
        self.plugin_errors: dict[str, str] = {}
        """Plugins of this registry that failed to load: entry-point name -> error."""
        self._plugins_seen: set[tuple[str, str, str]] = set()
        if qualifies:
            _QUALIFYING.append(self)

    def register(
        self,
        name: str,
        *,
        options: type[EntryOptions] = EntryOptions,
        description: str | None = None,
    ) -> Callable[[T], T]:
        """Returns a decorator that registers its argument under ``name``.

        ``description`` defaults to the first line of the decorated object's docstring.

        Raises:
            ValueError: If ``name`` is already registered.
        """

        def decorator(target: T) -> T:
            self.add(name, target, options=options, description=description)
            return target

        return decorator

    def add(
        self,
        name: str,
        target: T,
        *,
        options: type[EntryOptions] = EntryOptions,
        description: str | None = None,
    ) -> Entry[T]:
        """Registers ``target`` under ``name`` and returns its entry.

        Raises:
            ValueError: If ``name`` is already registered.
        """
        if not isinstance(name, str) or not ENTRY_NAME.fullmatch(name):
            raise ValueError(
                f"{self.kind} name {as_written(name)}: use 1-64 letters, digits, '_' or '-', "
                "starting with a letter or digit"
            )
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        source = _source.get()
        if source != BUILTIN_SOURCE and self in _QUALIFYING:
            for other in _QUALIFYING:
                if other is not self and name in other:
                    raise ValueError(
                        f"{self.kind} {name!r}: {other.kind} {name!r} is registered too, and "
                        f"a spec's '{name}.OPTION' could not tell the two apart; use another "
                        "name"
                    )
        if description is None:
            # A docstring's reST literals (``x``) as Markdown's and a terminal's (`x`).
            description = (inspect.getdoc(target) or "").strip().split("\n")[0]
            description = description.replace("``", "`")
        entry = Entry(name, target, options, description, source)
        self._entries[name] = entry
        added = _added.get()
        if added is not None:
            added.append((self, name))
        return entry

    def get(self, name: str) -> Entry[T]:
        """Returns the entry registered under ``name``.

        Raises:
            UnknownNameError: If nothing is registered under ``name``.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.unknown_message(name)) from None

    def made(self, entry: Entry[T], value: V, expected: type | tuple[type, ...], wanted: str) -> V:
        """``value``, which ``entry``'s factory made, once it is an ``expected``: a
        plugin's factory that returns something else would fail far from it, in words
        that never name it.

        Raises:
            TypeError: If ``value`` is no ``expected``; the message names the entry, its
                package and ``wanted``.
        """
        if not isinstance(value, expected):
            raise TypeError(
                f"{self.kind} {entry.name!r} ({entry.source}) made {type(value).__name__}, "
                f"not {wanted}"
            )
        return value

    def validate(self, name: str) -> str:
        """Returns ``name`` if registered (usable as a pydantic ``AfterValidator``).

        Raises:
            UnknownNameError: If nothing is registered under ``name``.
        """
        self.get(name)
        return name

    def names(self) -> list[str]:
        """Returns the registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        """Returns the entries, sorted by name."""
        return [self._entries[name] for name in self.names()]

    def unknown_message(self, name: object) -> str:
        """Builds the error message for an unknown ``name``, with the valid choices."""
        message = f"unknown {self.kind} {as_written(name)}"
        close = []
        if isinstance(name, str):
            close = difflib.get_close_matches(name, self._entries, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        message += f"; valid choices: {', '.join(self.names())}"
        if self.plugin_errors:
            failed = ", ".join(sorted(self.plugin_errors))
            message += f"; plugins that failed to load here: {failed}"
        elif not close and self.group is not None:
            message += "; a plugin's entry needs its package installed here"
        return message

    def load_plugins(self) -> None:
        """Imports the modules that the entry points of ``group`` name; they register here.

        A plugin that fails to import or to register is logged and kept in
        ``plugin_errors`` under its entry-point name; it never stops the caller.
        """
        if self.group is None:
            return
        for point in metadata.entry_points(group=self.group):
            distribution = point.dist.name if point.dist is not None else point.value
            # Two packages may give their entry points one name: each is loaded.
            seen = (distribution, point.name, point.value)
            if seen in self._plugins_seen:
                continue
            self._plugins_seen.add(seen)
            added: list[tuple[Registry[Any], str]] = []
            try:
                with _registering_as(distribution, added):
                    loaded = point.load()
                    if callable(loaded) and not isinstance(loaded, types.ModuleType):
                        loaded(self)
            except Exception as exc:
                # What it registered before failing goes too: it was reported as failed,
                # yet specs could still choose those entries.
                for registry, name in added:
                    registry._entries.pop(name, None)
                message = f"{type(exc).__name__}: {exc}"
                self.plugin_errors[point.name] = message
                logger.warning("%s plugin %r failed to load: %s", self.kind, point.name, message)

    def describe(self) -> list[dict[str, Any]]:
        """Every entry with its description, source and options, for users."""
        return [
            {
                "name": entry.name,
                "description": entry.description,
                "source": entry.source,
                "options": [vars(info) for info in describe_options(entry.options)],
            }
            for entry in self.entries()
        ]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


BOUND_SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def range_text(bounds: Mapping[str, float], separator: str = " ", space: str = "") -> str:
    """An option's bounds as users read them: ``>=0 <=4294967295`` (integers exactly)."""
    return separator.join(
        f"{BOUND_SYMBOLS[key]}{space}{value if isinstance(value, int) else f'{value:g}'}"
        for key, value in bounds.items()
    )


def describe_options(options: type[BaseModel]) -> list[OptionInfo]:
    """Describes each field of an options model: type, default, choices, range, text."""
    return [_describe_field(name, info) for name, info in options.model_fields.items()]


def _describe_field(name: str, info: FieldInfo) -> OptionInfo:
    kind, choices = value_kind(info.annotation)
    if kind == "any":
        kind = type_text(info.annotation)
    bounds: dict[str, float] = {}
    for constraint in info.metadata:
        for key in ("ge", "gt", "le", "lt"):
            value = getattr(constraint, key, None)
            if value is not None and isinstance(constraint, annotated_types.BaseMetadata):
                bounds[key] = value
    required = info.default is PydanticUndefined and info.default_factory is None
    default = None if required else info.get_default(call_default_factory=True)
    return OptionInfo(
        name=name,
        type=kind,
        default=default,
        choices=choices,
        range=bounds,
        description=info.description or "",
        required=required,
    )


def type_text(annotation: Any) -> str:
    """An annotation as users read it: ``int or [int, int]``, ``int or auto``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_text(args[0])
    if origin is Literal:
        return " or ".join(map(str, args))
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(arg) for arg in args if arg is not type(None))
    if origin is tuple:
        shown = [type_text(arg) for arg in args if arg is not Ellipsis]
        return f"[{shown[0]}, ...]" if Ellipsis in args else f"[{', '.join(shown)}]"
    if origin is list:
        return f"list of {type_text(args[0])}" if args else "list"
    return getattr(annotation, "__name__", "any")


def value_kind(annotation: Any) -> tuple[str, list[Any] | None]:
    """The kind of values an annotation takes (``int``, ``float``, ``bool``, ``str``,
    ``categorical`` for a ``Literal``) and, for literals, the choices. ``X | None`` is X."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "categorical", list(get_args(annotation))
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return value_kind(members[0])
        kinds = {value_kind(member)[0] for member in members}
        return (kinds.pop() if len(kinds) == 1 else "any"), None
    if annotation in (bool, int, float, str):
        return annotation.__name__, None
    return "any", None


_KIND_WORDS = {
    "int": "a valid integer",
    "float": "a valid number",
    "bool": "a valid boolean",
    "str": "a valid string",
}


def refuse_conversion(annotation: Any, value: Any) -> None:
    """Refuses a string, boolean or integer that a field of type ``annotation`` would take
    only by converting it: ``"3"`` or ``true`` as a number, ``"yes"`` or ``1`` as a flag.
    Pydantic's lax mode converts these; a spec means what it says. Floats are left to
    the field (``3.0`` is a whole number), as is anything the field refuses anyway (its
    own message is the better one).

    Raises:
        ValueError: Naming what the field takes.
    """
    if not _STRICT_INPUT.get() or isinstance(value, float) or not isinstance(value, str | int):
        return
    if isinstance(value, bool) and not _admits_bool(annotation):
        # A strict Literal[1, 2] takes True (True == 1); no flag is a number.
        raise ValueError(_refusal(annotation, value))
    adapter = _adapter(annotation)
    try:
        adapter.validate_python(value, strict=True)
        return
    except ValidationError:
        pass
    try:
        adapter.validate_python(value)
    except ValidationError:
        return
    raise ValueError(_refusal(annotation, value))


def _refusal(annotation: Any, value: Any) -> str:
    """``Input should be a valid string, not true``, and for a string field given
    something else, how YAML came to read it so."""
    expected = _expected(annotation)
    hint = f"; {QUOTE_HINT}" if "a valid string" in expected and not isinstance(value, str) else ""
    return f"Input should be {expected}, not {json.dumps(value)}{hint}"


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _adapter(annotation: Any) -> TypeAdapter[Any]:
    # Keyed by the annotation's text: some (``Annotated`` with a ``Field``) are unhashable.
    key = repr(annotation)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(annotation)
    return _ADAPTERS[key]


def _admits_bool(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Literal:
        return any(type(choice) is bool for choice in get_args(annotation))
    if origin in (Union, types.UnionType):
        return any(_admits_bool(member) for member in get_args(annotation))
    if origin is Annotated:
        return _admits_bool(get_args(annotation)[0])
    return annotation is bool or annotation is Any or value_kind(annotation)[0] == "any"


def _expected(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " or ".join(repr(choice) for choice in get_args(annotation))
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        return " or ".join(_expected(member) for member in members)
    if origin is Annotated:
        return _expected(get_args(annotation)[0])
    kind, _ = value_kind(annotation)
    return _KIND_WORDS.get(kind, f"a valid {kind}")


def validation_messages(exc: ValidationError) -> list[tuple[tuple[str | int, ...], str]]:
    """``(loc, message)`` pairs of a pydantic error, without pydantic's decorations."""
    return [
        (tuple(error["loc"]), error["msg"].removeprefix("Value error, "))
        for error in exc.errors(include_url=False)
    ]


@contextlib.contextmanager
def _registering_as(source: str, added: list[tuple[Registry[Any], str]]) -> Iterator[None]:
    """Entries registered meanwhile, in any registry, come from ``source``; each is
    listed in ``added``."""
    tokens = (_source.set(source), _added.set(added))
    try:
        yield
    finally:
        _source.reset(tokens[0])
        _added.reset(tokens[1])
