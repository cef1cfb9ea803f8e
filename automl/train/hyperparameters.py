"""The hyperparameter names a study may fix or search, resolved against the registries.

Three kinds of names:

- general training hyperparameters, ``TrialConfig``'s own fields: ``lr``, ``epochs``...;
- selectors, which pick one entry of a registry: ``model``, ``optimizer``, ``scheduler``,
  ``loss``, ``imbalance``;
- entry options. Qualified, ``entry.option`` (``resnet18.stem_stride``, ``hflip.p``),
  or bare, ``option``, which sets that option on every entry the study can choose that
  declares it (``width`` for ``cnn``; ``momentum`` for both ``sgd`` and ``rmsprop``). An
  option applies only while its entry is the one chosen: searching it implies
  ``when: {model: resnet18}``. Augmentation options are always qualified, since every
  augmentation has a ``p``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from automl.registry import Registry, refuse_conversion, value_kind
from automl.shown_values import shown_input, shows_input
from automl.train.trial_config import GENERAL, PIPELINES, SELECTABLE, TrialConfig

GROUPS: dict[str, Registry[Any]] = {**SELECTABLE, **PIPELINES}


class UnknownHyperparameterError(ValueError):
    """A name is no hyperparameter of the study (the message lists the valid ones)."""


@dataclass(frozen=True)
class Hyperparameter:
    """A resolved hyperparameter name.

    Attributes:
        name: As written in the spec.
        group: None for a general hyperparameter, else the selector or pipeline group
            (``model``, ``augment``...).
        option: The option of the entries it sets; None for general ones and selectors.
        entries: The entries that take the option.
    """

    name: str
    group: str | None = None
    option: str | None = None
    entries: tuple[str, ...] = ()

    @property
    def is_selector(self) -> bool:
        """Whether it picks an entry of a registry."""
        return self.group in SELECTABLE and self.option is None

    @property
    def kind(self) -> str:
        """``int``, ``float`` or ``categorical`` (names, booleans, literals)."""
        if self.is_selector:
            return "categorical"
        kind, _ = value_kind(self._fields()[0].annotation)
        return kind if kind in ("int", "float") else "categorical"

    def check(self, value: Any) -> list[str]:
        """Problems with ``value`` for this hyperparameter (empty when it is valid)."""
        if self.is_selector:
            registry = SELECTABLE[self.group]  # type: ignore[index]
            return [] if value in registry else [registry.unknown_message(value)]
        if isinstance(value, float) and not math.isfinite(value):
            return ["Input should be a finite number"]
        problems: list[str] = []
        shown = False
        for field in self._fields():
            try:
                refuse_conversion(field.annotation, value)  # "3" is no epoch count
            except ValueError as exc:
                return [str(exc)]
        refusing = []
        for entry, adapter in zip(self.entries or ("",), self._adapters(), strict=True):
            try:
                adapter.validate_python(value, strict=isinstance(value, bool))
            except ValidationError as exc:
                refusing.append(entry)
                for error in exc.errors(include_url=False):
                    message = error["msg"].removeprefix("Value error, ")
                    if message not in problems:
                        problems.append(message)
                    shown = shown or shows_input(error["type"])
        got = f" (got {shown_input(value)})" if shown else ""
        if problems and len(refusing) < len(self.entries):
            # An option several entries share, whose value only some of them take (a
            # tester's stem_stride 4: resnet18's, not mobilenet_v3_small's).
            taking = [entry for entry in self.entries if entry not in refusing]
            where = (
                f" for {', '.join(refusing)}; to set it for {', '.join(taking)} alone, name "
                f"it {taking[0]}.{self.option}"
            )
            return [f"{problem}{got}{where}" for problem in problems]
        return [f"{problem}{got}" for problem in problems]

    def _fields(self) -> list[FieldInfo]:
        if self.group is None:
            return [TrialConfig.model_fields[self.name]]
        registry = GROUPS[self.group]
        return [registry.get(entry).options.model_fields[self.option] for entry in self.entries]  # type: ignore[index]

    def _adapters(self) -> list[TypeAdapter[Any]]:
        return [
            _adapter(self.group, entry, self.option or self.name) for entry in self.entries or ("",)
        ]


@cache
def _adapter(group: str | None, entry: str, option: str) -> TypeAdapter[Any]:
    if group is None:
        field = TrialConfig.model_fields[option]
    else:
        field = GROUPS[group].get(entry).options.model_fields[option]
    if not field.metadata:
        return TypeAdapter(field.annotation)
    return TypeAdapter(Annotated[field.annotation, *field.metadata])  # type: ignore[name-defined]


Chosen = Mapping[str, Collection[str]]
"""For each selector, the entries a study can choose (its choices, fixed value or default)."""


def default_choices() -> dict[str, list[str]]:
    """The entry each selector takes when a study neither fixes nor searches it."""
    return {group: [TrialConfig.model_fields[group].get_default().name] for group in SELECTABLE}


def resolve(name: str, chosen: Chosen) -> Hyperparameter:
    """Resolves a spec's hyperparameter name.

    Args:
        name: The name as written in the spec.
        chosen: The entries each selector can take in this study.

    Raises:
        UnknownHyperparameterError: If the name is unknown, ambiguous, or names an option
            of an entry the study cannot choose.
    """
    if name in GENERAL:
        return Hyperparameter(name)
    if name in SELECTABLE:
        return Hyperparameter(name, group=name)
    if "." in name:
        return _resolve_qualified(name, chosen)
    owners = {
        group: tuple(
            entry
            for entry in sorted(chosen.get(group, ()))
            if entry in registry and name in registry.get(entry).options.model_fields
        )
        for group, registry in SELECTABLE.items()
    }
    owners = {group: entries for group, entries in owners.items() if entries}
    if len(owners) == 1:
        group, entries = next(iter(owners.items()))
        return Hyperparameter(name, group=group, option=name, entries=entries)
    if owners:
        qualified = [f"{entry}.{name}" for entries in owners.values() for entry in entries]
        raise UnknownHyperparameterError(
            f"{name!r} is ambiguous; name one of: {', '.join(qualified)}"
        )
    raise UnknownHyperparameterError(_unknown_message(name, chosen))


def _resolve_qualified(name: str, chosen: Chosen) -> Hyperparameter:
    entry, _, option = name.partition(".")
    groups = [group for group, registry in GROUPS.items() if entry in registry]
    if not groups:
        raise UnknownHyperparameterError(_unknown_message(name, chosen))
    for group in groups:
        options = GROUPS[group].get(entry).options.model_fields
        if option not in options:
            continue
        if group in SELECTABLE and entry not in chosen.get(group, ()):
            can = ", ".join(sorted(chosen.get(group, ()))) or "none"
            raise UnknownHyperparameterError(
                f"{group} {entry!r} is not one this study can choose ({group}: {can}); "
                f"fix or search {group!r} to include it"
            )
        return Hyperparameter(name, group=group, option=option, entries=(entry,))
    valid = ", ".join(GROUPS[groups[0]].get(entry).options.model_fields) or "none"
    raise UnknownHyperparameterError(
        f"{GROUPS[groups[0]].kind} {entry!r} has no option {option!r}; its options: {valid}"
    )


def valid_names(chosen: Chosen) -> list[str]:
    """Every name a study with these choices may fix or search."""
    names = [*GENERAL, *SELECTABLE]
    for group, registry in SELECTABLE.items():
        for entry in sorted(chosen.get(group, ())):
            if entry in registry:
                names += list(registry.get(entry).options.model_fields)
    for registry in PIPELINES.values():
        for entry in registry.entries():
            names += [f"{entry.name}.{option}" for option in entry.options.model_fields]
    return list(dict.fromkeys(names))


def _unknown_message(name: str, chosen: Chosen) -> str:
    not_chosen = _not_chosen_message(name, chosen)
    if not_chosen is not None:
        return not_chosen
    valid = valid_names(chosen)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown hyperparameter {name!r}{hint}; valid choices: {', '.join(valid)}"


def _not_chosen_message(name: str, chosen: Chosen) -> str | None:
    """Why a bare option of entries the study cannot choose is refused (``beta1`` while
    the optimizer is ``sgd``), or None when no selectable entry declares ``name``: a name
    that exists is no typo, so the message points at the selector instead."""
    owners = {
        group: [entry.name for entry in registry.entries() if name in entry.options.model_fields]
        for group, registry in SELECTABLE.items()
    }
    owners = {group: entries for group, entries in owners.items() if entries}
    if not owners:
        return None
    of = " and of ".join(
        f"{group} {', '.join(sorted(entries))}" for group, entries in owners.items()
    )
    can = "; ".join(
        f"{group}: {', '.join(sorted(chosen.get(group, ()))) or 'none'}" for group in owners
    )
    selectors = " or ".join(repr(group) for group in owners)
    one = "it" if sum(map(len, owners.values())) == 1 else "one of them"
    return (
        f"{name!r} is an option of {of}, which this study cannot choose ({can}); "
        f"fix or search {selectors} to include {one}, or drop {name!r}"
    )


def config_data(
    dataset: Mapping[str, Any], values: Mapping[str, Any], chosen: Chosen
) -> dict[str, Any]:
    """Arranges a trial's flat hyperparameter values into ``TrialConfig`` input.

    Selectors are placed first, so an entry option reaches only the entry actually chosen
    for this trial; a selector without a value (not in the study, or a conditional one
    that is inactive) takes its default entry.

    Raises:
        UnknownHyperparameterError: If a name does not resolve.
    """
    data: dict[str, Any] = {"dataset": dict(dataset)}
    resolved = [resolve(name, chosen) for name in values]
    for hp in resolved:
        if hp.is_selector:
            data[hp.name] = {"name": values[hp.name], "options": {}}
    for group, default in default_choices().items():
        data.setdefault(group, {"name": default[0], "options": {}})
    for hp in resolved:
        value = values[hp.name]
        if hp.group is None:
            data[hp.name] = value
        elif hp.group in PIPELINES:
            for entry in hp.entries:
                data.setdefault(hp.group, {}).setdefault(entry, {})[hp.option] = value
        elif not hp.is_selector and data[hp.group]["name"] in hp.entries:
            data[hp.group]["options"][hp.option] = value
    return data


def flat_config(values: Mapping[str, Any], dataset: Mapping[str, Any] | None = None) -> TrialConfig:
    """Builds a ``TrialConfig`` from flat names, as a spec's ``fixed`` section writes them
    (``{"model": "cnn", "width": 16, "optimizer": "sgd", "momentum": 0.8, "lr": 0.1}``).

    Raises:
        UnknownHyperparameterError: If a name does not resolve.
        pydantic.ValidationError: If a value is out of range.
    """
    chosen = {
        group: [str(values[group])] if group in values else default
        for group, default in default_choices().items()
    }
    source = dict(dataset or {"source": "digits"})
    return TrialConfig.model_validate(config_data(source, values, chosen))
