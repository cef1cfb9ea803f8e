"""The study spec: a declarative search space, loaded from YAML or JSON and strictly checked.

Validation runs in two passes. Pydantic checks structure and types (unknown keys are
rejected); ``check_spec`` then checks meaning: registry names, ranges against each
hyperparameter's own bounds, conditional parents. Every problem becomes a ``FieldError``
whose path names the offending field, and all problems are reported at once.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from automl.data import DATASETS
from automl.pruners import PRUNERS, build_pruner
from automl.samplers import SAMPLERS, build_sampler
from automl.train import HYPERPARAMETERS, METRICS, TrialConfig

MAX_TRIALS = 100_000
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

Scalar = str | bool | int | float
Number = Annotated[float, AfterValidator(lambda v: int(v) if v.is_integer() else v)]
"""A float that keeps whole numbers as ints (``step: 16`` stays 16 in the stored spec)."""
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class FieldError:
    """One problem in a spec, at a field path such as ``("params", "lr", "low")``."""

    loc: Loc
    msg: str

    @property
    def path(self) -> str:
        """The path as text, e.g. ``params.optimizer.choices[1]``."""
        text = ""
        for part in self.loc:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text or "(spec)"

    def __str__(self) -> str:
        return f"{self.path}: {self.msg}" if self.loc else self.msg


class SpecError(ValueError):
    """A spec failed to load or validate; ``errors`` lists every problem found."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(error) for error in errors))


class StrictModel(BaseModel):
    """Base of all spec models: unknown keys are errors (``errors_from_pydantic`` lists
    the valid ones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(StrictModel):
    """Where the images come from."""

    source: str = Field("digits", description="Registered dataset name.")
    options: dict[str, Any] = Field(default_factory=dict, description="The dataset's options.")


class ObjectiveSpec(StrictModel):
    """A validation metric to optimize."""

    metric: str = "accuracy"
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Defaults to the metric's natural direction."
    )

    @property
    def resolved_direction(self) -> str:
        """The direction, defaulting to the metric's own."""
        if self.direction is not None:
            return self.direction
        return METRICS.get(self.metric).direction if self.metric in METRICS else "maximize"


class BudgetSpec(StrictModel):
    """How much search to do."""

    n_trials: int = Field(20, ge=1, le=MAX_TRIALS, description="Exact number of trials.")
    timeout: float | None = Field(
        None, gt=0, description="Seconds after the study starts; no trial starts later."
    )
    max_failed: int = Field(5, ge=0, description="The study fails once more trials fail.")
    max_retries: int = Field(
        2,
        ge=0,
        le=100,
        description="Times a trial whose worker was lost is queued again with the same params.",
    )


class SamplerSpec(StrictModel):
    """Which Optuna sampler proposes configurations."""

    name: str = "tpe"
    seed: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerSpec(StrictModel):
    """Which Optuna pruner stops unpromising trials early."""

    name: str = "median"
    options: dict[str, Any] = Field(default_factory=dict)


class ParamSpec(StrictModel):
    """One searched hyperparameter.

    ``float`` and ``int`` take ``low``/``high`` (inclusive), ``log`` and ``step``;
    ``categorical`` takes ``choices``. ``when`` makes the parameter conditional: it is
    searched only while every named parent (a categorical parameter) takes one of the
    listed values, e.g. ``when: {optimizer: sgd}``.
    """

    type: Literal["float", "int", "categorical"]
    low: Number | None = None
    high: Number | None = None
    log: bool = False
    step: Number | None = None
    choices: list[Scalar] | None = None
    when: dict[str, Scalar | list[Scalar]] | None = None

    def conditions(self) -> dict[str, list[Scalar]]:
        """``when`` with every value turned into a list."""
        return {
            parent: list(values) if isinstance(values, list) else [values]
            for parent, values in (self.when or {}).items()
        }


class StudySpec(StrictModel):
    """A whole study: data, objective(s), budget, search algorithm and search space."""

    name: Annotated[str, Field(description="Study name; a suffix is added if taken.")]
    description: str = ""
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    objective: ObjectiveSpec | None = None
    objectives: list[ObjectiveSpec] | None = Field(
        None, description="Several objectives for a multi-objective (Pareto) study."
    )
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec | None = Field(
        None, description="Defaults to median for one objective, none for several."
    )
    fixed: dict[str, Any] = Field(default_factory=dict, description="Hyperparameters held fixed.")
    params: dict[str, ParamSpec] = Field(default_factory=dict, description="The search space.")

    @property
    def objective_list(self) -> list[ObjectiveSpec]:
        """The objectives, whichever of ``objective``/``objectives`` was given."""
        if self.objectives:
            return list(self.objectives)
        return [self.objective or ObjectiveSpec()]

    @property
    def directions(self) -> list[str]:
        """One direction per objective."""
        return [objective.resolved_direction for objective in self.objective_list]

    @property
    def metrics(self) -> list[str]:
        """One metric name per objective."""
        return [objective.metric for objective in self.objective_list]

    @property
    def pruner_or_default(self) -> PrunerSpec:
        """The pruner, defaulting by the number of objectives."""
        if self.pruner is not None:
            return self.pruner
        return PrunerSpec(name="median" if len(self.objective_list) == 1 else "none")

    def to_json(self) -> str:
        """The spec as canonical JSON (as stored with the study)."""
        return self.model_dump_json(exclude_none=True)


# --- loading -------------------------------------------------------------------------------


# YAML 1.1 reads 1e-4 (no dot) as a string; JSON and users read it as a number.
_EXPONENT_NUMBER = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")


def _exponents_as_floats(value: Any) -> Any:
    if isinstance(value, str) and _EXPONENT_NUMBER.match(value):
        return float(value)
    if isinstance(value, dict):
        return {key: _exponents_as_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_exponents_as_floats(item) for item in value]
    return value


def parse_text(text: str) -> Any:
    """Parses YAML or JSON text (JSON is a subset of YAML) safely.

    Raises:
        SpecError: If the text is not valid YAML/JSON.
    """
    try:
        return _exponents_as_floats(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([FieldError((), f"invalid YAML/JSON{where}: {problem}")]) from None


def load_spec(source: str | Path | Mapping[str, Any]) -> StudySpec:
    """Loads and validates a spec from a file path, YAML/JSON text or a mapping.

    A ``str`` that names an existing file, or ends in .yaml/.yml/.json, is read as a path.

    Raises:
        SpecError: With every problem found, each naming its field path.
    """
    if isinstance(source, Mapping):
        return validate_spec(source)
    if isinstance(source, Path) or _looks_like_path(source):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError([FieldError((), f"spec file not found: {path}")]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError([FieldError((), f"cannot read spec file {path}: {exc}")]) from None
        return validate_spec(parse_text(text))
    return validate_spec(parse_text(source))


def _looks_like_path(text: str) -> bool:
    if "\n" in text or len(text) > 4096:
        return False
    return text.endswith((".yaml", ".yml", ".json")) or Path(text).is_file()


def validate_spec(data: Any) -> StudySpec:
    """Validates parsed YAML/JSON data into a ``StudySpec``.

    Raises:
        SpecError: With every problem found, each naming its field path.
    """
    if not isinstance(data, Mapping):
        kind = "empty document" if data is None else type(data).__name__
        raise SpecError([FieldError((), f"a spec must be a mapping of fields, got {kind}")])
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(errors_from_pydantic(exc, root=StudySpec)) from None
    errors = check_spec(spec)
    if errors:
        raise SpecError(errors)
    return spec


def errors_from_pydantic(
    exc: ValidationError, prefix: Loc = (), root: type[BaseModel] = BaseModel
) -> list[FieldError]:
    """Converts pydantic errors to ``FieldError``s with clean paths.

    An unknown key's message lists the valid keys of the model it appeared in, found by
    walking ``root``'s fields along the error's path.
    """
    errors = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        message = _clean_message(error["msg"])
        if error["type"] == "extra_forbidden":
            model = _model_at(root, loc[:-1])
            valid = f"; valid fields: {', '.join(model.model_fields)}" if model else ""
            message = f"unknown field {loc[-1]!r}{valid}"
        errors.append(FieldError(prefix + loc, message))
    return errors


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class found at ``loc`` below ``root`` (through dicts, lists, unions)."""
    current: Any = root
    parts = list(loc)
    while parts:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(parts.pop(0)))
            if field is None:
                return None
            current = field.annotation
            continue
        origin, args = get_origin(current), get_args(current)
        if origin in (dict, list):
            parts.pop(0)  # a key or an index
            current = args[-1]
        elif args:  # Optional[...] / Union: the first model among the members
            current = next((a for a in args if _is_model_container(a)), None)
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _is_model_container(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return get_origin(annotation) in (dict, list) and _is_model_container(get_args(annotation)[-1])


def _clean_message(message: str) -> str:
    return message.removeprefix("Value error, ")


# --- meaning -------------------------------------------------------------------------------


def check_spec(spec: StudySpec) -> list[FieldError]:
    """Checks what types cannot: names, ranges, conditions. Returns every problem found."""
    errors: list[FieldError] = []
    if not NAME_PATTERN.match(spec.name):
        errors.append(
            FieldError(
                ("name",),
                "must be 1-100 letters, digits, '-', '_' or '.', starting with a letter or digit",
            )
        )
    errors += _check_dataset(spec.dataset)
    errors += _check_objectives(spec)
    errors += _check_sampler(spec.sampler)
    errors += _check_pruner(spec)
    errors += _check_fixed(spec)
    for name, param in spec.params.items():
        errors += _check_param(name, param, spec.params)
    errors += _check_cycles(spec.params)
    return errors


def _registry_error(loc: Loc, registry: Any, name: str) -> list[FieldError]:
    return [] if name in registry else [FieldError(loc, registry.unknown_message(name))]


def _check_dataset(dataset: DatasetSpec) -> list[FieldError]:
    if dataset.source not in DATASETS:
        return _registry_error(("dataset", "source"), DATASETS, dataset.source)
    try:
        DATASETS.get(dataset.source).options.model_validate(dataset.options)
    except ValidationError as exc:
        return errors_from_pydantic(
            exc, ("dataset", "options"), DATASETS.get(dataset.source).options
        )
    return []


def _check_objectives(spec: StudySpec) -> list[FieldError]:
    if spec.objective is not None and spec.objectives is not None:
        return [FieldError(("objectives",), "give either 'objective' or 'objectives', not both")]
    if spec.objectives is not None:
        if not spec.objectives:
            return [FieldError(("objectives",), "must list at least one objective")]
        located = [(("objectives", i, "metric"), o.metric) for i, o in enumerate(spec.objectives)]
        if len({o.metric for o in spec.objectives}) != len(spec.objectives):
            return [FieldError(("objectives",), "each metric may appear only once")]
    else:
        located = [(("objective", "metric"), spec.objective_list[0].metric)]
    errors: list[FieldError] = []
    for loc, metric in located:
        errors += _registry_error(loc, METRICS, metric)
    return errors


def _check_sampler(sampler: SamplerSpec) -> list[FieldError]:
    if sampler.name not in SAMPLERS:
        return _registry_error(("sampler", "name"), SAMPLERS, sampler.name)
    try:
        build_sampler(sampler.name, sampler.options, sampler.seed)
    except (TypeError, ValueError) as exc:
        return [FieldError(("sampler", "options"), _option_message(sampler.name, exc))]
    return []


def _check_pruner(spec: StudySpec) -> list[FieldError]:
    pruner = spec.pruner_or_default
    if pruner.name not in PRUNERS:
        return _registry_error(("pruner", "name"), PRUNERS, pruner.name)
    if len(spec.objective_list) > 1 and pruner.name != "none":
        return [FieldError(("pruner", "name"), "multi-objective studies cannot prune; use 'none'")]
    try:
        build_pruner(pruner.name, pruner.options)
    except (TypeError, ValueError) as exc:
        return [FieldError(("pruner", "options"), _option_message(pruner.name, exc))]
    return []


def _option_message(name: str, exc: Exception) -> str:
    return f"invalid options for {name!r}: {exc}"


def _check_fixed(spec: StudySpec) -> list[FieldError]:
    errors = []
    for name, value in spec.fixed.items():
        if name not in HYPERPARAMETERS:
            errors.append(FieldError(("fixed", name), _unknown_hyperparameter(name)))
        elif name in spec.params:
            errors.append(FieldError(("fixed", name), "is also in params; keep it in one place"))
        else:
            errors += _check_value(("fixed", name), name, value)
    return errors


def _unknown_hyperparameter(name: str) -> str:
    close = difflib.get_close_matches(name, HYPERPARAMETERS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    valid = ", ".join(sorted(HYPERPARAMETERS))
    return f"unknown hyperparameter {name!r}{hint}; valid choices: {valid}"


@cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    field = TrialConfig.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, *field.metadata])  # type: ignore[name-defined]


def _field_kind(name: str) -> str:
    annotation = TrialConfig.model_fields[name].annotation
    return {int: "int", float: "float"}.get(annotation, "categorical")  # type: ignore[arg-type]


def _check_value(loc: Loc, name: str, value: Any) -> list[FieldError]:
    try:
        _field_adapter(name).validate_python(value, strict=isinstance(value, bool))
    except ValidationError as exc:
        messages = (_clean_message(e["msg"]) for e in exc.errors(include_url=False))
        return [FieldError(loc, "; ".join(messages))]
    return []


def _check_param(name: str, param: ParamSpec, params: Mapping[str, ParamSpec]) -> list[FieldError]:
    loc: Loc = ("params", name)
    if name not in HYPERPARAMETERS:
        return [FieldError(loc, _unknown_hyperparameter(name))]
    kind = _field_kind(name)
    allowed = {"float": {"float", "int", "categorical"}, "int": {"int", "categorical"}}
    if param.type not in allowed.get(kind, {"categorical"}):
        return [
            FieldError(
                (*loc, "type"),
                f"{name!r} takes {_kind_words(kind)}; use type: "
                + ("int" if kind == "int" else "categorical"),
            )
        ]
    if param.type == "categorical":
        errors = _check_categorical(loc, name, param)
    else:
        errors = _check_range(loc, name, param)
    return errors + _check_when(loc, name, param, params)


def _kind_words(kind: str) -> str:
    return {"int": "integers", "float": "numbers"}.get(kind, "names")


def _check_categorical(loc: Loc, name: str, param: ParamSpec) -> list[FieldError]:
    errors = [
        FieldError((*loc, key), "not allowed for type categorical; use choices")
        for key in ("low", "high", "step")
        if getattr(param, key) is not None
    ]
    if param.log:
        errors.append(FieldError((*loc, "log"), "not allowed for type categorical"))
    if not param.choices:
        return [*errors, FieldError((*loc, "choices"), "a categorical param needs choices")]
    # 16 and 16.0 are one choice to Optuna; True and 1 are not.
    distinct = {(isinstance(choice, bool), choice) for choice in param.choices}
    if len(distinct) != len(param.choices):
        errors.append(FieldError((*loc, "choices"), "choices must be unique"))
    for index, choice in enumerate(param.choices):
        errors += _check_value((*loc, "choices", index), name, choice)
    return errors


def _check_range(loc: Loc, name: str, param: ParamSpec) -> list[FieldError]:
    errors: list[FieldError] = []
    if param.choices is not None:
        errors.append(FieldError((*loc, "choices"), f"not allowed for type {param.type}"))
    for key in ("low", "high"):
        if getattr(param, key) is None:
            article = "an" if param.type == "int" else "a"
            errors.append(FieldError((*loc, key), f"{article} {param.type} param needs {key}"))
    if errors:
        return errors
    low, high = param.low, param.high
    assert low is not None and high is not None
    if param.type == "int":
        for key in ("low", "high", "step"):
            value = getattr(param, key)
            if value is not None and value != int(value):
                errors.append(FieldError((*loc, key), f"must be an integer, got {value}"))
    if low > high:
        errors.append(FieldError((*loc, "low"), f"low ({low:g}) must be <= high ({high:g})"))
    if param.step is not None and param.step <= 0:
        errors.append(FieldError((*loc, "step"), "must be > 0"))
    if param.log:
        if low <= 0:
            errors.append(FieldError((*loc, "low"), "must be > 0 when log is true"))
        if param.step is not None and not (param.type == "int" and param.step == 1):
            errors.append(FieldError((*loc, "step"), "cannot be combined with log: true"))
    if not errors:
        errors += _check_value((*loc, "low"), name, int(low) if param.type == "int" else low)
        errors += _check_value((*loc, "high"), name, int(high) if param.type == "int" else high)
    return errors


def _check_when(
    loc: Loc, name: str, param: ParamSpec, params: Mapping[str, ParamSpec]
) -> list[FieldError]:
    errors = []
    for parent, values in param.conditions().items():
        where = (*loc, "when", parent)
        parent_param = params.get(parent)
        if parent == name:
            errors.append(FieldError(where, "a param cannot depend on itself"))
        elif parent_param is None:
            errors.append(
                FieldError(where, f"unknown parent {parent!r}; parents must be categorical params")
            )
        elif parent_param.type != "categorical":
            errors.append(FieldError(where, f"parent {parent!r} must be a categorical param"))
        else:
            choices = parent_param.choices or []
            for value in values:
                if value not in choices:
                    errors.append(
                        FieldError(
                            where,
                            f"{value!r} is not a choice of {parent!r}; valid choices: "
                            + ", ".join(map(str, choices)),
                        )
                    )
    return errors


def _check_cycles(params: Mapping[str, ParamSpec]) -> list[FieldError]:
    try:
        conditional_order(params)
    except ValueError as exc:
        return [FieldError(("params",), str(exc))]
    return []


def conditional_order(params: Mapping[str, ParamSpec]) -> list[str]:
    """Orders params so that every parent comes before its children (stable otherwise).

    Raises:
        ValueError: If the ``when`` conditions form a cycle.
    """
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError("conditions form a cycle: " + " -> ".join([*chain, name]))
        state[name] = "visiting"
        for parent in params[name].conditions():
            if parent in params and parent != name:
                visit(parent, [*chain, name])
        state[name] = "done"
        order.append(name)

    for name in params:
        visit(name, [])
    return order


def spec_from_json(text: str) -> StudySpec:
    """Reads a spec stored by ``StudySpec.to_json`` (trusted: no second check)."""
    return StudySpec.model_validate(json.loads(text))
