"""The study spec: a declarative search space, loaded from YAML or JSON and strictly checked.

Validation runs in two passes. Pydantic checks structure and types (unknown keys are
rejected); ``check_spec`` then checks meaning: registry names, hyperparameter names, ranges
against each hyperparameter's own bounds, conditional parents. Every problem becomes a
``FieldError`` whose path names the offending field, and all problems are reported at once.
"""

from __future__ import annotations

import json
import math
import re
import types
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
)

from automl.config import MAX_ID, Limits
from automl.data import DATASETS
from automl.pruners import PRUNERS, build_pruner, trial_epochs
from automl.registry import (
    MAX_COUNT,
    AppliesWhen,
    EntryOptions,
    ExactModel,
    Registry,
    changes_only_rgb,
    refuse_field_conversion,
    strict_input,
    value_text,
)
from automl.sample_kinds import sample_problems
from automl.samplers import (
    SAMPLER_MAX_TRIALS,
    SAMPLERS,
    SINGLE_OBJECTIVE_SAMPLERS,
    build_sampler,
    max_trials_message,
)
from automl.sampling import check_grid, resolve_auto
from automl.shown_values import shown_input, shows_input
from automl.spec_errors import QUOTE_HINT, FieldError, Loc, SpecError
from automl.spec_summary import DEFAULT_METRIC
from automl.train import METRICS
from automl.train.hyperparameters import (
    GROUPS,
    Hyperparameter,
    UnknownHyperparameterError,
    default_choices,
    resolve,
)
from automl.train.optim import ignores_warmup
from automl.train.trial_config import PIPELINES, SELECTABLE
from automl.wording import as_written

MAX_NAME_CHARS = 100
NAME_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME_CHARS - 1}}}$"
NAME_RULE = (
    f"1-{MAX_NAME_CHARS} ASCII letters, digits, '-', '_' or '.', starting with a letter or digit"
)

Scalar = str | bool | int | float


def _one_choice(value: Any) -> Any:
    """One clear message for a choice that is no scalar (null, NaN, a list), instead of
    one per member of the ``Scalar`` union."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a choice must be a finite number, not {value}")
    if value is None or not isinstance(value, str | int | float):
        kind = "null" if value is None else type(value).__name__
        raise ValueError(f"a choice is a string, number or boolean, not {kind}")
    return value


Choice = Annotated[Scalar, BeforeValidator(_one_choice)]
"""One value of a categorical param."""
StrictInt = Annotated[int, Strict()]
"""An integer that refuses booleans and strings (``n_trials: true`` is an error, not 1)."""


@dataclass(frozen=True)
class OptionVerdict:
    """Where an option of one entry applies, given how a spec sets the option its
    ``APPLIES_WHEN`` condition names: always (the default), never (``never`` says why), or
    where the searched ``parent`` takes one of ``values``."""

    parent: str | None = None
    values: tuple[Scalar, ...] = ()
    never: str | None = None


APPLIES = OptionVerdict()
"""The verdict of an option without a condition, or whose condition always holds."""


_SPEC_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StrictModel(ExactModel):
    """Base of all spec models: unknown keys are errors (``errors_from_pydantic`` lists
    the valid ones), and so are values a field would only take converted (``refit:
    "yes"``, ``timeout: "60"``) when a spec is submitted (``validate_spec``)."""

    model_config = _SPEC_CONFIG


class DatasetSpec(StrictModel):
    """Where the images come from."""

    source: str = Field("digits", description="Registered dataset name.")
    options: dict[str, Any] = Field(default_factory=dict, description="The dataset's options.")


class ObjectiveSpec(StrictModel):
    """A validation metric to optimize."""

    metric: str = DEFAULT_METRIC
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Defaults to the metric's natural direction."
    )

    @property
    def resolved_direction(self) -> str:
        """The direction, defaulting to the metric's own."""
        if self.direction is not None:
            return self.direction
        return METRICS.get(self.metric).factory.direction if self.metric in METRICS else "maximize"


class BudgetSpec(StrictModel):
    """How much search to do."""

    n_trials: StrictInt = Field(20, ge=1, description="Exact number of trials.")
    timeout: float | None = Field(
        None, gt=0, description="Seconds after the study starts; no trial starts later."
    )
    max_failed: StrictInt = Field(
        5, ge=0, le=MAX_COUNT, description="The study fails once more trials fail."
    )
    max_retries: StrictInt = Field(
        2,
        ge=0,
        le=100,
        description="Times a trial whose worker was lost is queued again with the same params.",
    )


class WarmStartSpec(StrictModel):
    """Start from the best configurations of earlier studies (meta-learning)."""

    studies: list[Annotated[StrictInt, Field(ge=0, le=MAX_ID)]] | Literal["auto"] = Field(
        description="Earlier study ids, or auto: completed studies on the same data."
    )
    top_k: StrictInt = Field(
        3, ge=1, le=100, description="Best configurations taken from each earlier study."
    )

    @field_validator("studies", mode="before")
    @classmethod
    def _check_studies(cls, value: Any) -> Any:
        """One clear message instead of one per member of the union."""
        if value == "auto":
            return value
        if not isinstance(value, list):
            raise ValueError(f"{value!r} is neither a list of study ids nor 'auto'")
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= MAX_ID:
                message = f"a whole number from 0 to {MAX_ID}"
                raise ValueError(f"[{index}] {item!r} is not a study id ({message})")
        return value


class SamplerSpec(StrictModel):
    """Which sampler proposes configurations."""

    name: str = "tpe"
    seed: StrictInt | None = Field(
        None,
        ge=0,
        le=2**32 - 1,
        description="The study's seed: of its sampler and of its trials' training seeds "
        "(drawn at submit when absent).",
    )
    options: dict[str, Any] = Field(default_factory=dict)
    chosen_by: str | None = Field(
        None, description="Set by the service when 'auto' picked this sampler: why."
    )


class PrunerSpec(StrictModel):
    """Which Optuna pruner stops unpromising trials early."""

    name: str = "median"
    options: dict[str, Any] = Field(default_factory=dict)


Condition = dict[str, Scalar | list[Scalar]]

MAX_ENQUEUE = 10_000
"""Most configurations one enqueue request (``automl enqueue``) may queue."""
MAX_SPEC_ENQUEUE = 1_000
"""Most configurations a spec's ``enqueue`` may hold: the spec is stored with the study and
read by every claim, so longer lists belong in ``automl enqueue`` requests."""


def _when() -> Any:
    return Field(
        None,
        description="Search this param only while each named categorical parent takes one "
        "of the listed values, e.g. {optimizer: sgd}.",
    )


class _Param(BaseModel):
    # Not a ``StrictModel``: pydantic allows no validator on the discriminator ``type``.
    model_config = _SPEC_CONFIG

    _no_conversion = field_validator(
        "low", "high", "log", "step", mode="before", check_fields=False
    )(classmethod(refuse_field_conversion))

    def explicit_conditions(self) -> dict[str, list[Scalar]]:
        """``when`` with every value turned into a list."""
        when: Condition = getattr(self, "when", None) or {}
        return {
            parent: list(values) if isinstance(values, list) else [values]
            for parent, values in when.items()
        }


class FloatParam(_Param):
    """A real-valued param in ``[low, high]``."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = Field(False, description="Sample on a log scale.")
    step: float | None = Field(None, gt=0, description="Discretization step.")
    when: Condition | None = _when()


class IntParam(_Param):
    """An integer param in ``[low, high]``."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = Field(False, description="Sample on a log scale.")
    step: int | None = Field(None, gt=0, description="Only low, low + step, ...")
    when: Condition | None = _when()


class CategoricalParam(_Param):
    """A param taking one of ``choices``."""

    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1)
    when: Condition | None = _when()


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
"""One searched hyperparameter, by ``type``."""
PARAM_TYPES: dict[str, type[_Param]] = {
    "float": FloatParam,
    "int": IntParam,
    "categorical": CategoricalParam,
}


SPACE_RULES = 5
"""The latest version of the rules that read a spec's space (which params apply where).
A spec stored without ``space_rules`` was submitted under version 1, where an option that
every choice of a conditional selector has applied even where the selector did not; under
version 2 the loss and its options applied even in trials whose searched ``imbalance`` was
``focal``, which replaces the loss; under version 3 an option that its entry's
``APPLIES_WHEN`` ties to another option (``freeze_k`` to ``freeze: first_k``) applied
whatever that option's searched value, and on entries whose fixed or default value of it
ruled the option out; under version 4 an augmentation's options applied where its ``p``
was 0 (``AppliesWhen.since``), and ``warmup_epochs`` where the searched ``scheduler`` warms
up by itself (``one_cycle``)."""

LOSS_REPLACING_IMBALANCE = "focal"
"""The imbalance strategy that trains with its own loss instead of the configured one."""

WARMUP = "warmup_epochs"
"""The param that a schedule rising to the peak by itself (``warms_up``) ignores."""

DECAY_SPLIT = "decay_norm_and_bias"
"""The param that only matters where some weight decays."""


def warms_up(scheduler: str) -> bool:
    """Whether the schedule ``scheduler`` rises to the peak learning rate by itself
    (``one_cycle``) with its default options, so that it ignores ``warmup_epochs``. A
    schedule that cannot be built with its defaults (a plugin's required option) counts
    as one that does not: its own checks report it where the spec chooses it."""
    try:
        return ignores_warmup(scheduler, {})
    except Exception:  # a plugin's factory: any failure means "cannot tell"
        return False


class StudySpec(StrictModel):
    """A whole study: data, objective(s), budget, search algorithm and search space."""

    name: str = Field(pattern=NAME_PATTERN, description=f"Study name: {NAME_RULE}.")
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
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=MAX_SPEC_ENQUEUE,
        description="Configurations to run first, from the budget (known good settings): each "
        "maps searched params to values; the sampler fills in the rest.",
    )
    warm_start: WarmStartSpec | None = Field(
        None,
        description="Earlier studies whose top configurations run next (from the budget).",
    )
    keep_weights: Annotated[int, Field(ge=1, le=MAX_COUNT)] | Literal["all"] = Field(
        3,
        description="Trials that keep their weights: the best k on the first objective "
        "(plus the Pareto front with several objectives); the others' weights are deleted "
        "once they fall out. 'all' keeps every trial's weights.",
    )
    refit: bool = Field(
        False,
        description="Once the study completes, retrain the best trial's configuration on the "
        "training plus validation split up to the epoch whose weights it kept and score it on "
        "the test split; the bundle and predict then serve that model. One objective only.",
    )
    space_rules: int = Field(
        1,  # what a spec stored without the field was read by; a submission gets the latest
        ge=1,
        le=SPACE_RULES,
        description="Version of the rules reading the space, set at submit (the latest) and "
        "kept: a study's conditions and grid cells never change under it.",
        json_schema_extra={"default": SPACE_RULES},
    )

    @field_validator("keep_weights", mode="before")
    @classmethod
    def _check_keep_weights(cls, value: Any) -> Any:
        """One clear message instead of one per member of the union."""
        if value == "all" or (
            isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_COUNT
        ):
            return value
        raise ValueError(f"{value!r} is neither a whole number from 1 to {MAX_COUNT:,} nor 'all'")

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
        """The pruner, defaulting by the number of objectives.

        One objective: ``median`` (Optuna's ``MedianPruner`` defaults), kept after measuring
        it against ``successive_halving`` and ``hyperband`` with
        ``benchmarks/bench_search.py --pruners``: those missed the best trial more often
        (BENCHMARKS.md, "Default pruner"). Several objectives: ``none`` (Optuna cannot
        prune them).
        """
        if self.pruner is not None:
            return self.pruner
        return PrunerSpec(name="median" if len(self.objective_list) == 1 else "none")

    @cached_property
    def chosen(self) -> dict[str, list[str]]:
        """For each selector (``model``, ``optimizer``...), the entries this study can pick:
        its choices when searched (plus the default when the search is conditional), its
        value when fixed, else the default."""
        chosen: dict[str, list[str]] = {}
        for group, default in default_choices().items():
            param = self.params.get(group)
            if isinstance(param, CategoricalParam):
                names = [str(choice) for choice in param.choices]
                chosen[group] = names + (default if param.when and default[0] not in names else [])
            elif group in self.fixed:
                chosen[group] = [str(self.fixed[group])]
            else:
                chosen[group] = default
        return chosen

    def param_order(self) -> list[str]:
        """The params, parents before children (see ``conditional_order``)."""
        return conditional_order(self)

    def hyperparameter(self, name: str) -> Hyperparameter:
        """Resolves a fixed or searched name against the entries this study can choose.

        Raises:
            UnknownHyperparameterError: If the name does not resolve.
        """
        return resolve(name, self.chosen)

    def conditions(self, name: str) -> dict[str, list[Scalar]]:
        """When the param ``name`` applies: its ``when``, plus the selector value(s) its
        entry option implies (``width`` of ``cnn`` applies while ``model`` is ``cnn``), plus
        the values of a searched option of its entry that its entry's ``APPLIES_WHEN``
        needs (``freeze_k`` applies while ``freeze`` is ``first_k``), plus for the loss and
        its options, while ``imbalance`` is searched with ``focal`` (which replaces the
        loss), its other choices.

        An option that every choice of its selector has is implied only when the selector
        is itself conditional: where the selector does not apply, the default entry
        trains, and the option must not be sampled (nor count as a grid cell) for it. An
        entry whose fixed or default value of the option named by ``APPLIES_WHEN`` rules
        the option out is no implied selector value. A study submitted before a rule
        (``space_rules``: 1 before that one, 2 before the loss's, 3 before
        ``APPLIES_WHEN``) keeps its old conditions, so its grid cells stay the ones its
        tickets were issued by."""
        conditions = self.params[name].explicit_conditions()
        try:
            hp = self.hyperparameter(name)
        except UnknownHyperparameterError:
            return conditions  # reported by the checks; nothing is implied
        entries, needed = list(hp.entries), {}
        if hp.option is not None and self.space_rules >= 4:
            entries, needed = self.rule_conditions(hp)
        selector = self.params.get(hp.group or "")
        if hp.option is not None and isinstance(selector, CategoricalParam):
            choices = [str(choice) for choice in selector.choices]
            implied = [entry for entry in entries if entry in choices]
            if len(implied) < len(choices) or (selector.when and self.space_rules >= 2):
                _narrow(conditions, hp.group, implied)  # type: ignore[arg-type]
        for parent, values in needed.items():
            _narrow(conditions, parent, values)
        if hp.group == "loss" and self.space_rules >= 3:
            kept = self._searched_choices_except(
                "imbalance", lambda name: name == LOSS_REPLACING_IMBALANCE
            )
            if kept is not None:
                _narrow(conditions, "imbalance", kept)
        if hp.name == WARMUP and self.space_rules >= 5:
            kept = self._searched_choices_except("scheduler", warms_up)
            if kept is not None:
                _narrow(conditions, "scheduler", kept)
        return conditions

    @cached_property
    def option_settings(self) -> dict[tuple[str, str, str], tuple[str, str]]:
        """Where this spec sets the entry options it names: ``(group, option, entry)`` ->
        ``(section, name)``, the section ``fixed`` or ``params`` and the name it uses."""
        settings: dict[tuple[str, str, str], tuple[str, str]] = {}
        for (section, name), hp in _resolved_names(self):
            if hp.group is not None and hp.option is not None:
                for entry in hp.entries:
                    settings.setdefault((hp.group, hp.option, entry), (str(section), str(name)))
        return settings

    def option_verdicts(self, hp: Hyperparameter) -> dict[str, OptionVerdict]:
        """For each entry whose option ``hp`` sets, where the option applies in this study
        by its entry's ``APPLIES_WHEN`` (``APPLIES`` for a selector or general name)."""
        if hp.group is None or hp.option is None:
            return {}
        return {entry: self._verdict(hp.group, entry, hp.option) for entry in hp.entries}

    def _verdict(self, group: str, entry: str, option: str) -> OptionVerdict:
        """Where ``option`` of ``entry`` applies, from how this study sets the option that
        its condition names: fixed, searched, or left at the entry's default."""
        options = GROUPS[group].get(entry).options
        rule = options.condition_of(option)
        if rule is None or rule.since > self.space_rules:
            return APPLIES
        default = options.model_fields[rule.option].get_default()
        section, name = self.option_settings.get((group, rule.option, entry), ("", ""))
        if section == "params":
            return _searched_verdict(rule, name, self.params[name], default)
        if section != "fixed":
            how = (
                f"{_option_shown(group, entry, rule.option)} is {value_text(default)}, its default"
            )
            return APPLIES if rule.admits(default) else OptionVerdict(never=how)
        value = self.fixed[name]
        if rule.admits(value):
            return APPLIES
        if Hyperparameter(name, group, rule.option, (entry,)).check(value):
            return APPLIES  # the value itself is refused: that error is the one to fix
        return OptionVerdict(never=f"{name} is fixed at {value_text(value)}")

    def rule_conditions(self, hp: Hyperparameter) -> tuple[list[str], dict[str, list[Scalar]]]:
        """The entries whose option ``hp`` can apply, and the values of a searched param
        it needs (only when every one of those entries needs the same: conditions are
        all required, so one entry's need cannot be waived for another's)."""
        verdicts = self.option_verdicts(hp)
        entries = [entry for entry in hp.entries if verdicts[entry].never is None]
        needs = {(verdicts[entry].parent, verdicts[entry].values) for entry in entries}
        if len(needs) == 1:
            parent, values = needs.pop()
            if parent is not None:
                return entries, {parent: list(values)}
        return entries, {}

    def _searched_choices_except(
        self, selector: str, dropped: Callable[[str], bool]
    ) -> list[str] | None:
        """The searched choices of ``selector`` but those ``dropped`` picks (``imbalance:
        focal`` replaces the loss; ``scheduler: one_cycle`` runs its own warmup), or None
        when ``selector`` is not searched with one of them, or is itself conditional:
        where it does not apply, its default trains, which a condition on ``selector``
        would then never let the dependent param be sampled for."""
        param = self.params.get(selector)
        if not isinstance(param, CategoricalParam) or param.when:
            return None
        choices = [str(choice) for choice in param.choices]
        kept = [choice for choice in choices if not dropped(choice)]
        return None if len(kept) == len(choices) else kept


def _searched_verdict(
    rule: AppliesWhen, name: str, param: FloatParam | IntParam | CategoricalParam, default: Any
) -> OptionVerdict:
    """Where an option applies whose condition names the option that ``param`` (spec name
    ``name``) searches. Only a categorical search can be a condition; a range that holds
    values either way is sampled throughout, as a ``when`` cannot name it."""
    if isinstance(param, CategoricalParam):
        admitted = tuple(choice for choice in param.choices if rule.admits(choice))
        some, every = bool(admitted), len(admitted) == len(param.choices)
        searched = f"{name} is searched among {', '.join(map(value_text, param.choices))}"
    else:
        admitted, (some, every) = (), _range_admits(rule, param)
        searched = f"{name} is searched in [{param.low:g}, {param.high:g}]"
    if param.when and rule.admits(default):
        return APPLIES  # where the param does not apply, the default lets the option apply
    if not some:
        if param.when:
            searched += f" and else is {value_text(default)}, its default"
        return OptionVerdict(never=searched)
    if isinstance(param, CategoricalParam) and (param.when or not every):
        return OptionVerdict(parent=name, values=admitted)
    return APPLIES


def _range_admits(rule: AppliesWhen, param: FloatParam | IntParam) -> tuple[bool, bool]:
    """Whether some value of ``param``'s range, and every one, satisfies ``rule``."""
    if rule.above is not None:
        return param.high > rule.above, param.low > rule.above
    inside = [
        value
        for value in rule.values
        if isinstance(value, int | float) and not isinstance(value, bool)
        if param.low <= value <= param.high
    ]
    return bool(inside), param.low == param.high and bool(inside)


def _narrow(conditions: dict[str, list[Scalar]], parent: str, allowed: Sequence[Scalar]) -> None:
    """Restricts ``conditions`` to ``parent`` taking one of ``allowed`` (intersected with
    the values already there)."""
    given = conditions.get(parent)
    conditions[parent] = list(allowed) if given is None else [v for v in given if v in allowed]


# --- loading -------------------------------------------------------------------------------


# YAML 1.1 reads a plain 1e-4 (no dot) as a string; JSON and users read it as a number.
_EXPONENT_NUMBER = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")


_STANDARD_TAG_PREFIX = "tag:yaml.org,2002:"


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing any explicit tag and a mapping that repeats a key."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        # Checked on the parser's event, before the node is built: even the safe loader
        # would construct ``!!binary``, ``!!set``, ``!!timestamp``... and only plain data
        # (implicitly resolved scalars, lists, mappings) is a spec.
        event = self.peek_event()  # type: ignore[no-untyped-call]
        tag = getattr(event, "tag", None)
        if tag is not None:
            shown = (
                tag.replace(_STANDARD_TAG_PREFIX, "!!", 1)
                if tag.startswith(_STANDARD_TAG_PREFIX)
                else tag
            )
            raise yaml.composer.ComposerError(
                None, None, f"tags are not allowed (found {shown})", event.start_mark
            )
        return super().compose_node(parent, index)  # type: ignore[no-untyped-call]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Implicit resolvers apply to plain scalars only: a quoted "1e5" stays a string.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", _EXPONENT_NUMBER, list("-+0123456789")
)


def _load_yaml(text: str) -> Any:
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()  # type: ignore[no-untyped-call]
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def parse_text(text: str, limits: Limits | None = None) -> Any:
    """Parses YAML or JSON text (JSON is a subset of YAML) safely.

    Only plain data is built (no tags), a repeated key is an error, and the document's
    nesting, number of values (aliases count each time they are used, so an alias bomb
    is refused) and string lengths are limited.

    Raises:
        SpecError: If the text is not valid YAML/JSON or breaks a limit.
    """
    limits = limits or Limits()
    _check_flow_depth(text, limits.max_spec_depth)
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([FieldError((), f"invalid YAML/JSON{where}: {problem}")]) from None
    except RecursionError:
        raise SpecError([_too_deep(limits.max_spec_depth)]) from None
    except SpecError:
        raise
    except ValueError as exc:  # an integer of more digits than Python converts
        raise SpecError([FieldError((), f"invalid YAML/JSON: {exc}")]) from None
    return normalize_document(data, limits)


def parse_json(text: str, limits: Limits | None = None) -> Any:
    """Parses JSON text with the same guarantees as ``parse_text``.

    JSON strings stay strings (``"1e-4"`` too): only YAML's plain ``1e-4`` needs reading
    as a number.

    Args:
        text: The JSON text.
        limits: The document limits (default: the ``AUTOML_LIMIT_*`` settings).

    Raises:
        SpecError: If the text is not valid JSON or breaks a limit.
    """
    limits = limits or Limits()
    _check_flow_depth(text, limits.max_spec_depth)

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(pairs)
        if len(found) < len(pairs):  # one pass: an object of 100,000 keys stays cheap
            seen: set[str] = set()
            repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise SpecError([FieldError((), f"invalid JSON: duplicate key {repeated!r}")])
        return found

    try:
        data = json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise SpecError([FieldError((), message)]) from None
    except RecursionError:
        raise SpecError([_too_deep(limits.max_spec_depth)]) from None
    except SpecError:
        raise
    except ValueError as exc:  # an integer of more digits than Python converts
        raise SpecError([FieldError((), f"invalid JSON: {exc}")]) from None
    return normalize_document(data, limits)


def _too_deep(limit: int) -> FieldError:
    return FieldError((), f"the document is nested deeper than {limit} levels (max_spec_depth)")


def _check_flow_depth(text: str, limit: int) -> None:
    """Refuses deeply nested ``[``/``{`` before any parser recurses into them."""
    depth = deepest = 0
    quote = ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                raise SpecError([_too_deep(limit)])
        elif char in "]}":
            depth -= 1


def normalize_document(data: Any, limits: Limits | None = None) -> Any:
    """Enforces the document limits on parsed data (strings stay as they are).

    Raises:
        SpecError: If the document is nested too deeply, has too many values or a string
            that is too long (the error names where).
    """
    limits = limits or Limits()
    count = 0

    def walk(value: Any, loc: Loc) -> Any:
        nonlocal count
        count += 1
        if count > limits.max_spec_values:
            message = f"the document has more than {limits.max_spec_values} values"
            raise SpecError([FieldError((), f"{message} (max_spec_values)")])
        if len(loc) > limits.max_spec_depth:
            raise SpecError([_too_deep(limits.max_spec_depth)])
        if isinstance(value, str):
            if len(value) > limits.max_string_length:
                message = f"longer than {limits.max_string_length} characters (max_string_length)"
                raise SpecError([FieldError(loc, message)])
            _check_unicode(value, loc)
            return value
        if isinstance(value, dict):
            for key in value:
                _check_unicode(str(key), loc, "a key ")
            return {key: walk(item, (*loc, str(key))) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*loc, index)) for index, item in enumerate(value)]
        return value

    return walk(data, ())


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_unicode(text: str, loc: Loc, what: str = "") -> None:
    """Refuses a lone UTF-16 surrogate (JSON's ``"\\ud800"``): no text, no file name and no
    database column can hold one."""
    found = _LONE_SURROGATE.search(text)
    if found is not None:
        code = f"\\u{ord(found.group()):04x}"
        message = f"{what}contains a lone surrogate ({code}), not Unicode text"
        raise SpecError([FieldError(loc, message)])


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


def spec_from_text(text: str, *, is_json: bool) -> StudySpec:
    """Parses and validates a spec's text as the API reads a request body: JSON with
    ``is_json``, else YAML (which reads JSON too). Both parsers refuse what is nested too
    deeply before recursing into it, repeated keys, aliases that multiply values and
    overlong strings (the ``Limits``).

    Raises:
        SpecError: With every problem found, each naming its field path.
    """
    return validate_spec(parse_json(text) if is_json else parse_text(text))


def _looks_like_path(text: str) -> bool:
    if "\n" in text or len(text) > 4096:
        return False
    return text.endswith((".yaml", ".yml", ".json")) or Path(text).is_file()


def validate_spec(data: Any, limits: Limits | None = None) -> StudySpec:
    """Validates parsed YAML/JSON data into a ``StudySpec``.

    Args:
        data: The parsed document.
        limits: What a spec may ask for (default: the ``AUTOML_LIMIT_*`` settings).

    Raises:
        SpecError: With every problem found, each naming its field path.
    """
    limits = limits or Limits()
    if not isinstance(data, Mapping):
        kind = "empty document" if data is None else type(data).__name__
        raise SpecError([FieldError((), f"a spec must be a mapping of fields, got {kind}")])
    if "space_rules" not in data:
        data = {**data, "space_rules": SPACE_RULES}
    with strict_input():
        try:
            spec = StudySpec.model_validate(data)
        except ValidationError as exc:
            raise SpecError(errors_from_pydantic(exc, root=StudySpec)) from None
        errors = check_spec(spec, limits)
    if errors:
        raise SpecError(errors)
    if spec.sampler.name == "auto":
        spec = _resolve_auto(spec, limits)
    return spec


def _resolve_auto(spec: StudySpec, limits: Limits) -> StudySpec:
    """Replaces ``sampler: auto`` by the sampler it picks (and, for a grid, the budget)."""
    name, options, n_trials, reason = resolve_auto(spec, limits.max_grid_cells)
    sampler = SamplerSpec(name=name, seed=spec.sampler.seed, options=options, chosen_by=reason)
    budget = spec.budget.model_copy(update={"n_trials": n_trials})
    return spec.model_copy(update={"sampler": sampler, "budget": budget})


def _takes_nothing(loc: Loc) -> str:
    """How an unknown key of a model without fields is explained: ``gp takes no options``
    for an entry's options (``sampler.options``), else ``it takes no fields``."""
    if len(loc) >= 2 and loc[-2] == "options":
        return "this entry takes no options"
    return "it takes no fields"


def errors_from_pydantic(
    exc: ValidationError, prefix: Loc = (), root: type[BaseModel] = BaseModel
) -> list[FieldError]:
    """Converts pydantic errors to ``FieldError``s with clean paths.

    Union tags are dropped from paths (``params.lr.low``, not ``params.lr.float.low``), and
    an unknown key's message lists the valid keys of the model it appeared in.
    """
    errors: list[tuple[FieldError, str]] = []
    inputs: dict[Loc, str] = {}
    for error in exc.errors(include_url=False):
        loc, _ = _walk(root, tuple(error["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        kind = error["type"]
        if kind == "extra_forbidden":
            _, model = _walk(root, tuple(error["loc"])[:-1])
            valid = ""
            if model is not None:
                fields = ", ".join(model.model_fields)
                nothing = _takes_nothing(prefix + loc)
                valid = f"; valid fields: {fields}" if fields else f"; {nothing}"
            message = f"unknown field {loc[-1]!r}{valid}"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "type")
            given = error.get("ctx", {}).get("tag")
            what = f"unknown param type {given!r}" if given else "missing"
            message = f"{what}; valid choices: {', '.join(PARAM_TYPES)}"
        elif kind == "string_type" and isinstance(error.get("input"), bool | int | float | date):
            given = error["input"]
            shown = given.isoformat() if isinstance(given, date) else shown_input(given)
            message = f"Input should be a valid string, not {shown}; {QUOTE_HINT}"
        elif kind == "string_pattern_mismatch" and loc == ("name",):
            message = f"invalid name {error['input']!r}: use {NAME_RULE}"
        errors.append((FieldError(prefix + loc, message), kind))
        if shows_input(kind) and QUOTE_HINT not in message:
            inputs.setdefault(prefix + loc, shown_input(error.get("input")))
    return [
        FieldError(error.loc, f"{error.msg} (got {inputs[error.loc]})")
        if error.loc in inputs
        else error
        for error in _merge_alternatives(_without_other_branches(errors))
    ]


def _is_type_mismatch(kind: str) -> bool:
    """Whether a pydantic error says the value is of another type (``int_type``,
    ``int_parsing``...), not that a value of the right type breaks a constraint."""
    return kind.endswith(("_type", "_parsing"))


def _without_other_branches(errors: list[tuple[FieldError, str]]) -> list[FieldError]:
    """Drops the type mismatches of a union's branches that the value is not meant for:
    those at a path where another error says what is wrong with a value of the right type
    (``size: 0``: too small, not also "or a valid tuple"), or inside it (``size: [0, 9]``:
    ``size[0]`` too small, not also "a valid integer (got a list)")."""
    constrained = [error.loc for error, kind in errors if not _is_type_mismatch(kind)]
    deeper = [error.loc for error, _ in errors]

    def other_branch(loc: Loc, kind: str) -> bool:
        return _is_type_mismatch(kind) and (
            loc in constrained or any(len(d) > len(loc) and d[: len(loc)] == loc for d in deeper)
        )

    return [error for error, kind in errors if not other_branch(error.loc, kind)]


def _merge_alternatives(errors: list[FieldError]) -> list[FieldError]:
    """One error per path: a value that fits no branch of a union fails each branch at
    the same path (``a valid string``, ``a valid boolean``...), which reads as one."""
    messages: dict[Loc, list[str]] = {}
    for error in errors:
        shown = messages.setdefault(error.loc, [])
        if error.msg not in shown:
            shown.append(error.msg)
    return [FieldError(loc, _one_of(shown)) for loc, shown in messages.items()]


def _one_of(messages: list[str]) -> str:
    """``Input should be a valid string, a valid boolean or a valid list``."""
    if len(messages) == 1:
        return messages[0]
    lead = "Input should be "
    if all(message.startswith(lead) for message in messages):
        rest = [message.removeprefix(lead) for message in messages]
        return f"{lead}{', '.join(rest[:-1])} or {rest[-1]}"
    return "; or ".join(messages)


def _walk(root: type[BaseModel], loc: Loc) -> tuple[Loc, type[BaseModel] | None]:
    """Follows ``loc`` down from ``root`` through models, dicts, lists and unions.

    Returns:
        The path without union tags, and the model found at its end (if any).
    """
    clean: list[str | int] = []
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            current = field.annotation if field is not None else None
            clean.append(part)
            continue
        origin, args = get_origin(current), get_args(current)
        if origin in (dict, list, tuple):
            current = args[-1] if origin is not tuple or not args else _tuple_item(args, part)
            clean.append(part)
        elif origin in (Union, types.UnionType) and part in PARAM_TYPES:
            current = PARAM_TYPES[str(part)]  # a discriminated union's tag: not a path part
        elif origin in (Union, types.UnionType) and isinstance(part, str):
            current = _branch(args, part)  # pydantic's name of a branch: not a path part
        else:
            current = None
            clean.append(part)
    current = _unwrap(current)
    model = current if isinstance(current, type) and issubclass(current, BaseModel) else None
    return tuple(clean), model


def _tuple_item(args: tuple[Any, ...], part: str | int) -> Any:
    """The type of item ``part`` of a tuple typed ``args`` (``tuple[int, ...]`` too)."""
    if len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return args[part] if isinstance(part, int) and 0 <= part < len(args) else None


def _branch(args: tuple[Any, ...], tag: str) -> Any:
    """The branch of a union that pydantic names ``tag`` (``str``, ``list[...]``,
    ``constrained-int``...), or None when it cannot tell."""
    for arg in args:
        unwrapped = _unwrap(arg)
        origin = get_origin(unwrapped)
        name = getattr(origin or unwrapped, "__name__", "")
        if name and (tag == name or tag.startswith(f"{name}[") or tag.endswith(f"-{name}")):
            return arg
    return None


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> X; ``X | None`` -> X."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        return _unwrap(args[0])
    return annotation


# --- meaning -------------------------------------------------------------------------------


def check_spec(spec: StudySpec, limits: Limits | None = None) -> list[FieldError]:
    """Checks what types cannot: limits, names, ranges, conditions. Returns every problem."""
    limits = limits or Limits()
    errors = _check_limits(spec, limits)
    if errors:
        return errors  # refuse oversized requests before doing any work on them
    dataset_errors = _check_dataset(spec.dataset)
    errors += dataset_errors
    errors += _check_objectives(spec)
    errors += _check_refit(spec, dataset_ok=not dataset_errors)
    errors += _check_sampler(spec, limits)
    errors += _check_pruner(spec)
    errors += _check_selectors(spec)
    errors += _check_fixed(spec)
    reaches = _reaches(spec)
    for name, param in spec.params.items():
        errors += _check_param(spec, name, param) or _check_applies(spec, name, reaches)
    errors += _check_one_name_per_option(spec)
    errors += _check_loss_replaced(spec)
    errors += _check_warmup_ignored(spec)
    errors += _check_decay_split_ignored(spec)
    errors += _check_past_the_last_epoch(spec)
    if spec.warm_start is not None and spec.warm_start.studies == []:
        # At submission only: a study stored so before stays readable. A tester's status
        # read "0 configurations from studies none found".
        message = "no study given: list study ids, or 'auto', or drop warm_start"
        errors.append(FieldError(("warm_start", "studies"), message))
    if not dataset_errors:
        errors += _check_rgb_only(spec)
    errors += _check_cycles(spec)
    errors += [FieldError(loc, message) for loc, message in sample_problems(spec)]
    if not errors:  # configurations are checked against a space known to be sound
        errors += _check_enqueue(spec)
    return errors


def _registry_error(loc: Loc, registry: Registry[Any], name: str) -> list[FieldError]:
    return [] if name in registry else [FieldError(loc, registry.unknown_message(name))]


def _check_entry(
    loc: Loc, registry: Registry[Any], name: str, options: Mapping[str, Any]
) -> list[FieldError]:
    """Checks a registry name and the entry's options (``loc.name``, ``loc.options.x``)."""
    if name not in registry:
        return _registry_error((*loc, "name"), registry, name)
    entry = registry.get(name)
    try:
        entry.parse_options(options)
    except ValidationError as exc:
        return errors_from_pydantic(exc, (*loc, "options"), entry.options)
    return _check_option_rules((*loc, "options"), entry.options, options)


def _check_option_rules(
    loc: Loc, options: type[EntryOptions], given: Mapping[str, Any]
) -> list[FieldError]:
    """Refuses an option given in an entry's ``options`` (valid) that its ``APPLIES_WHEN``
    rules out, by the value given to the option it names, or else that option's default
    (no sampler, pruner or dataset declares one yet): it would be ignored."""
    errors = []
    for option in given:
        rule = options.condition_of(option)
        if rule is None:
            continue
        if rule.option in given:
            value, how = given[rule.option], ""
        else:
            value, how = options.model_fields[rule.option].get_default(), ", its default"
        if not rule.admits(value):
            reason = f"{rule.option} is {value_text(value)}{how}"
            message = f"{option!r} applies only where {rule.describe()} ({reason})"
            errors.append(FieldError((*loc, option), f"{message}, so it never applies"))
    return errors


def _check_limits(spec: StudySpec, limits: Limits) -> list[FieldError]:
    over = [
        (("budget", "n_trials"), spec.budget.n_trials, limits.max_trials, "max_trials"),
        (("budget", "timeout"), spec.budget.timeout or 0, limits.max_timeout_s, "max_timeout_s"),
        (("params",), len(spec.params), limits.max_params, "max_params"),
    ]
    for name, param in spec.params.items():
        if isinstance(param, CategoricalParam):
            limit = limits.max_choices
            over.append((("params", name, "choices"), len(param.choices), limit, "max_choices"))
    return [
        FieldError(loc, f"{_number(value)} is over the limit of {_number(limit)} ({setting})")
        for loc, value, limit, setting in over
        if value > limit
    ]


def _number(value: float) -> str:
    if isinstance(value, int):
        # YAML's 0x... reads integers of any size, beyond float and decimal conversion.
        return f"{value:,}" if value.bit_length() <= 64 else "an integer over 64 bits"
    return f"{value:,}" if value.is_integer() else f"{value:g}"


def _check_sampler(spec: StudySpec, limits: Limits) -> list[FieldError]:
    sampler = spec.sampler
    errors = _check_entry(("sampler",), SAMPLERS, sampler.name, sampler.options)
    if errors or sampler.name == "auto":
        return errors
    if sampler.name in SINGLE_OBJECTIVE_SAMPLERS and len(spec.objective_list) > 1:
        return [FieldError(("sampler", "name"), _single_objective_message(sampler.name))]
    if spec.budget.n_trials > SAMPLER_MAX_TRIALS.get(sampler.name, spec.budget.n_trials):
        return [FieldError(("budget", "n_trials"), max_trials_message(sampler.name))]
    if sampler.name in ("grid", "brute_force"):
        if _check_cycles(spec):
            return []  # no grid to count; _check_cycles reports why
        problems = check_grid(spec, limits.max_grid_cells)
        for field in ("warm_start", "enqueue"):
            if getattr(spec, field) and sampler.name == "grid":
                problems.append(((field,), f"a grid runs each of its cells; drop {field}"))
        errors = [FieldError(loc, message) for loc, message in problems]
        if errors or sampler.name == "grid":
            return errors
    return _check_built(
        ("sampler",),
        sampler.name,
        lambda: build_sampler(sampler.name, sampler.options, sampler.seed),
    )


def _single_objective_message(name: str) -> str:
    """Why ``name`` cannot search several objectives, and which samplers can."""
    several = [other for other in SAMPLERS.names() if other not in SINGLE_OBJECTIVE_SAMPLERS]
    return (
        f"{name} optimizes one objective, and this study has several; samplers that take "
        f"several: {', '.join(several)}"
    )


def _check_built(loc: Loc, name: str, build: Callable[[], object]) -> list[FieldError]:
    """Builds the Optuna object to catch option combinations its constructor refuses."""
    try:
        build()
    except (TypeError, ValueError) as exc:
        return [FieldError((*loc, "options"), f"invalid options for {name!r}: {exc}")]
    return []


def _check_dataset(dataset: DatasetSpec) -> list[FieldError]:
    if dataset.source not in DATASETS:
        return _registry_error(("dataset", "source"), DATASETS, dataset.source)
    entry = DATASETS.get(dataset.source)
    try:
        entry.parse_options(dataset.options)
    except ValidationError as exc:
        return errors_from_pydantic(exc, ("dataset", "options"), entry.options)
    return _check_option_rules(("dataset", "options"), entry.options, dataset.options)


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


def _check_refit(spec: StudySpec, dataset_ok: bool) -> list[FieldError]:
    """Refuses a refit that could never run: with several objectives, or (when the
    dataset's options are valid) on a dataset certain to have no test split to score it."""
    if not spec.refit:
        return []
    if len(spec.objective_list) > 1:
        message = "needs one objective: a Pareto front has no single best trial to refit"
        return [FieldError(("refit",), message)]
    hint = _test_split_hint(spec.dataset) if dataset_ok else None
    if hint is not None:
        message = f"needs a test split to score the refit on, and this dataset has none: {hint}"
        return [FieldError(("refit",), message)]
    return []


_TEST_SPLIT_OPTIONS = frozenset({"test_fraction", "test_path"})
"""The dataset options that give a file or digits dataset its test split."""


def _test_split_hint(dataset: DatasetSpec) -> str | None:
    """How to give ``dataset`` (valid options) a test split, or None when it may have one.

    Conservative: a dataset has none for certain only when its options' only test options
    are ``test_fraction`` (0) and ``test_path`` (unset), as for digits and the file
    sources; torchvision's sources (no such option) have their official test split.
    """
    fields = DATASETS.get(dataset.source).options.model_fields
    test_options = {option for option in fields if "test" in option}
    if "test_fraction" not in test_options or not test_options <= _TEST_SPLIT_OPTIONS:
        return None
    value = {
        option: dataset.options.get(option, fields[option].get_default()) for option in test_options
    }
    fraction = value["test_fraction"]
    if not isinstance(fraction, (int, float)) or fraction > 0:
        return None  # a plugin's option of another kind: it may have a test split
    if value.get("test_path") is not None:
        return None
    ways = ["set dataset.options.test_fraction above 0"]
    if "test_path" in test_options:
        ways.append("test_path (test data laid out as path)")
    return " or ".join(ways)


def _check_pruner(spec: StudySpec) -> list[FieldError]:
    pruner = spec.pruner_or_default
    errors = _check_entry(("pruner",), PRUNERS, pruner.name, pruner.options)
    if errors:
        return errors
    if len(spec.objective_list) > 1 and pruner.name != "none":
        return [FieldError(("pruner", "name"), "multi-objective studies cannot prune; use 'none'")]
    built = _check_built(
        ("pruner",), pruner.name, lambda: build_pruner(pruner.name, pruner.options)
    )
    if built or spec.pruner is None:
        return built  # the default pruner of a study too short to prune is no mistake
    return (
        _check_ever_prunes(spec, pruner.name, pruner.options)
        + _check_max_resource(spec)
        + _check_prunes_all(spec)
    )


def _check_max_resource(spec: StudySpec) -> list[FieldError]:
    """Refuses a Hyperband ``max_resource`` past the most epochs a trial trains: the
    brackets whose first rung comes after the last epoch would never prune."""
    pruner = spec.pruner_or_default
    if pruner.name != "hyperband":
        return []
    written = PRUNERS.get(pruner.name).parse_options(pruner.options).model_dump()["max_resource"]
    if not isinstance(written, int):
        return []  # auto: the trials' epochs
    try:
        epochs = trial_epochs(spec)
    except (TypeError, ValueError, OverflowError):
        return []  # epochs that are no whole number: their own check names them
    if written <= epochs:
        return []
    trained = f"{epochs} epoch" + ("" if epochs == 1 else "s")
    message = (
        f"{written} is past the last epoch: trials train at most {trained}, so the brackets "
        f"that first check after epoch {epochs} would never prune; use at most {epochs}, "
        "or auto (the trials' epochs)"
    )
    return [FieldError(("pruner", "options", "max_resource"), message)]


def _check_prunes_all(spec: StudySpec) -> list[FieldError]:
    """Refuses a ``threshold`` pruner whose bound lies past every value the objective's
    metric can take: it would prune every trial (``lower: 2`` with accuracy)."""
    pruner = spec.pruner_or_default
    metric = spec.objective_list[0].metric
    if pruner.name != "threshold" or metric not in METRICS:
        return []
    measure = METRICS.get(metric).factory
    low, high = measure.bounds
    above_low = measure.above_low

    def below_every_value(value: float) -> bool:
        return value < low or (value == low and above_low)

    errors = []
    for option, past in (("lower", lambda v: v > high), ("upper", below_every_value)):
        value = pruner.options.get(option)
        if isinstance(value, int | float) and not isinstance(value, bool) and past(value):
            bounds = f"{'(' if above_low else '['}{low:g}, {high:g}]"
            message = f"{option} {value!r} prunes every trial: {metric} lies in {bounds}"
            errors.append(FieldError(("pruner", "options", option), message))
    return errors


WARMUP_OPTIONS = {"n_warmup_steps": (1, 0), "n_startup_steps": (1, 0), "min_resource": (0, 1)}
"""Pruner options that hold off the first check: the epochs between their value and that
check (``n_warmup_steps: 2`` is first checked at epoch 3, ``min_resource: 2`` at 2), and
their smallest value."""


def _check_ever_prunes(spec: StudySpec, name: str, options: Mapping[str, Any]) -> list[FieldError]:
    """Refuses a pruner the spec names whose options (written or left to their defaults)
    hold off the first check until no epoch is left: no pruner is asked after a trial's
    last epoch, so a first check at or past it never comes."""
    try:
        epochs = trial_epochs(spec)
    except (TypeError, ValueError, OverflowError):
        return []  # epochs that are no whole number: their own check names them
    effective = PRUNERS.get(name).parse_options(options).model_dump()  # defaults, as run
    for option, (offset, smallest) in WARMUP_OPTIONS.items():
        if option not in effective:
            continue
        value = effective[option]
        rate = effective.get("min_early_stopping_rate", 0)
        if value == "auto":  # successive halving estimates it: 1 at the least
            value = 1
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue  # a plugin's option of another kind
        factor = effective.get("reduction_factor", 1) ** rate if option == "min_resource" else 1
        floor = 2 if option == "n_startup_steps" else 1  # wilcoxon compares two epochs
        first = max((value + offset) * factor, floor)
        if first < epochs:
            continue
        if option == "min_resource" and rate and value < epochs:
            option, shown = "min_early_stopping_rate", rate  # the skipped rungs are to blame
            reduction = effective.get("reduction_factor", 1)
            largest = max(r for r in range(rate) if value * reduction**r < epochs)
            remedy = f"use at most {largest}"
        else:
            shown = effective[option]
            largest = (epochs - 1) // factor - offset
            fits = largest >= smallest and max(largest + offset, floor) < epochs
            remedy = f"use at most {largest}" if fits else "train more epochs"
        written = f"{shown}" if option in options else f"{shown} (its default)"
        trained = f"{epochs} epoch" + ("" if epochs == 1 else "s")
        at = f"epoch {first}" if first < 10**6 else "a later epoch than any"
        message = (
            f"{written} leaves no epoch to prune at: trials train at most {trained}, the "
            f"first check would come at {at}, and no pruner is asked after the last; "
            f"{remedy}, or use pruner: none"
        )
        return [FieldError(("pruner", "options", option), message)]
    return []


def _check_selectors(spec: StudySpec) -> list[FieldError]:
    """Checks the entry names that selectors (``model``...) take, fixed or searched."""
    errors: list[FieldError] = []
    for group, registry in SELECTABLE.items():
        if group in spec.fixed:
            value = spec.fixed[group]
            if isinstance(value, (dict, list)):
                kind = type(value).__name__
                choices = ", ".join(registry.names())
                message = f"takes a name, not a {kind}; valid choices: {choices}"
                errors.append(FieldError(("fixed", group), message))
            else:
                errors += _registry_error(("fixed", group), registry, value)
        param = spec.params.get(group)
        if isinstance(param, CategoricalParam):
            for index, choice in enumerate(param.choices):
                errors += _registry_error(("params", group, "choices", index), registry, choice)
        elif param is not None:
            errors.append(
                FieldError(
                    ("params", group, "type"), f"{group!r} takes names; use type: categorical"
                )
            )
    return errors


def _resolved(spec: StudySpec, loc: Loc, name: str) -> Hyperparameter | FieldError | None:
    """``name`` resolved, its error, or None when it may be an option of an entry the spec
    misnamed (``model: resnet99``): that name's error is the one to fix first."""
    try:
        return spec.hyperparameter(name)
    except UnknownHyperparameterError as exc:
        if _may_be_an_option_of_a_misnamed_entry(spec, name):
            return None
        return FieldError(loc, str(exc))


def _may_be_an_option_of_a_misnamed_entry(spec: StudySpec, name: str) -> bool:
    """Whether ``name`` is an option of some entry of a selector whose value names no
    entry (``width`` with ``model: resnet99``)."""
    option = name.rsplit(".", 1)[-1]
    for group, entries in spec.chosen.items():
        registry = SELECTABLE[group]
        if any(entry not in registry for entry in entries) and any(
            option in entry.options.model_fields for entry in registry.entries()
        ):
            return True
    return False


def _check_fixed(spec: StudySpec) -> list[FieldError]:
    errors = []
    for name, value in spec.fixed.items():
        loc: Loc = ("fixed", name)
        hp = _resolved(spec, loc, name)
        if hp is None:
            continue
        if isinstance(hp, FieldError):
            errors.append(hp)
        elif name in spec.params:
            errors.append(FieldError(loc, "is also in params; keep it in one place"))
        elif not hp.is_selector:
            errors += [FieldError(loc, message) for message in _fixed_problems(spec, hp, value)]
    return errors


def _fixed_problems(spec: StudySpec, hp: Hyperparameter, value: Any) -> list[str]:
    """What is wrong with fixing ``hp`` (no selector) at ``value``: the value, or else
    that its entries' ``APPLIES_WHEN`` lets it apply nowhere in this study."""
    problems = hp.check(value)
    never = None if problems else _never_applies_by_rule(spec, hp)
    return [*problems, never] if never else problems


def _resolved_names(spec: StudySpec) -> Iterator[tuple[Loc, Hyperparameter]]:
    """Every fixed and searched name that resolves, with its location (the others are
    reported by the name checks)."""
    for section, names in (("fixed", list(spec.fixed)), ("params", list(spec.params))):
        for name in names:
            try:
                yield (section, name), spec.hyperparameter(name)
            except UnknownHyperparameterError:
                continue


def _check_one_name_per_option(spec: StudySpec) -> list[FieldError]:
    """Refuses two names for one entry's option (``momentum`` and ``sgd.momentum``, fixed
    or searched): only one of them would reach the trial, and the other be ignored."""
    errors = []
    seen: list[Hyperparameter] = []
    for loc, hp in _resolved_names(spec):
        if hp.option is None:
            continue
        for other in seen:
            same = other.name != hp.name and (other.group, other.option) == (hp.group, hp.option)
            shared = sorted(set(hp.entries) & set(other.entries)) if same else []
            if shared:
                message = f"sets {hp.option} of {', '.join(shared)} as {other.name!r} does"
                errors.append(FieldError(loc, f"{message}; keep one"))
                break
        seen.append(hp)
    return errors


def _check_loss_replaced(spec: StudySpec) -> list[FieldError]:
    """Refuses loss settings a study can never use: ``imbalance: focal`` replaces the loss
    (its own ``focal_gamma`` and ``focal_alpha`` set it), so they would be ignored."""
    if spec.chosen.get("imbalance") != [LOSS_REPLACING_IMBALANCE]:
        return []
    message = (
        "imbalance: focal replaces the loss (set its focal_gamma and focal_alpha instead), "
        "so this would be ignored"
    )
    return [FieldError(loc, message) for loc, hp in _resolved_names(spec) if hp.group == "loss"]


def _check_warmup_ignored(spec: StudySpec) -> list[FieldError]:
    """Refuses ``warmup_epochs`` where every scheduler the study can choose warms up by
    itself (``one_cycle``): it would be ignored."""
    named = any(hp.name == WARMUP for _, hp in _resolved_names(spec))
    if not named or not _warmup_ignored(spec):
        return []
    names = ", ".join(spec.chosen["scheduler"])
    message = f"scheduler {names} warms up by itself, so {WARMUP} would be ignored"
    return [FieldError(loc, message) for loc, hp in _resolved_names(spec) if hp.name == WARMUP]


def _check_decay_split_ignored(spec: StudySpec) -> list[FieldError]:
    """Refuses ``decay_norm_and_bias`` where no trial decays any weight (``weight_decay``
    fixed at 0, or left at its default 0): it would be ignored."""
    decay = spec.fixed.get("weight_decay", 0.0)
    if "weight_decay" in spec.params or not isinstance(decay, int | float) or decay != 0:
        return []
    said = "fixed at 0" if "weight_decay" in spec.fixed else "0 unless set"
    message = (
        f"weight_decay is {said}, so {DECAY_SPLIT} would be ignored; set or search "
        "weight_decay, or drop it"
    )
    located = _resolved_names(spec)
    return [FieldError(loc, message) for loc, hp in located if hp.name == DECAY_SPLIT]


def _check_past_the_last_epoch(spec: StudySpec) -> list[FieldError]:
    """Refuses a fixed ``patience`` or ``warmup_epochs`` that no trial reaches the end of:
    early stopping that could never stop a trial, or a warmup during which training ends
    before the learning rate reaches ``lr`` (a tester's ``epochs: 1, warmup_epochs: 5``
    ran without a word, as the pruner settings that could never prune are refused)."""
    patience, warmup = spec.fixed.get("patience"), spec.fixed.get(WARMUP)
    numbers = (int, float)
    if not (isinstance(patience, numbers) and patience > 0) and not (
        isinstance(warmup, numbers) and warmup > 0
    ):
        return []
    try:
        epochs = trial_epochs(spec)
    except (TypeError, ValueError, OverflowError):
        return []  # epochs that are no whole number: their own check names them
    trained = f"trials train at most {epochs} epoch" + ("" if epochs == 1 else "s")
    errors = []
    if isinstance(patience, numbers) and not isinstance(patience, bool) and patience >= epochs:
        message = f"{trained}, so a patience of {patience:g} could never stop one early"
        errors.append(FieldError(("fixed", "patience"), f"{message}; use less, or 0"))
    long = isinstance(warmup, numbers) and not isinstance(warmup, bool) and warmup >= epochs
    if long and not _warmup_ignored(spec):  # an ignored one: _check_warmup_ignored says so
        message = (
            f"{trained}, so a warmup of {warmup:g} epochs would end every one before the "
            "learning rate reaches lr"
        )
        errors.append(FieldError(("fixed", WARMUP), f"{message}; use less than {epochs}"))
    return errors


def _check_rgb_only(spec: StudySpec) -> list[FieldError]:
    """Refuses options that change only RGB images (a color jitter's saturation and hue)
    where the dataset is grayscale: they would be ignored. One fixed at 0 changes nothing
    either way."""
    source = spec.dataset.source
    # A plugin's options may be a bare EntryOptions, which tells no channels.
    channels_of = getattr(DATASETS.get(source).options, "channels_of", None)
    if channels_of is None or channels_of(spec.dataset.options) != 1:
        return []
    errors = []
    for loc, hp in _resolved_names(spec):
        if hp.option is None or (loc[0] == "fixed" and not spec.fixed[loc[1]]):
            continue
        registry = SELECTABLE.get(hp.group or "") or PIPELINES.get(hp.group or "")
        rgb_only = [
            entry
            for entry in hp.entries
            if registry is not None
            and entry in registry
            and changes_only_rgb(registry.get(entry).options.model_fields[hp.option])
        ]
        if rgb_only:
            message = (
                f"{hp.option} of {', '.join(rgb_only)} changes only RGB images, and dataset "
                f"{source!r} is grayscale, so it would be ignored"
            )
            errors.append(FieldError(loc, message))
    return errors


def _warmup_ignored(spec: StudySpec) -> bool:
    """Whether every scheduler the study can choose warms up by itself."""
    return all(warms_up(name) for name in spec.chosen["scheduler"])


def _check_param(spec: StudySpec, name: str, param: Any) -> list[FieldError]:
    loc: Loc = ("params", name)
    hp = _resolved(spec, loc, name)
    if hp is None:
        return []
    if isinstance(hp, FieldError):
        return [hp]
    if hp.is_selector:  # its type and names are checked with the other selectors
        if not isinstance(param, CategoricalParam):
            return []
        return _check_categorical(loc, hp, param) + _check_when(spec, loc, name, param, hp)
    allowed = {"float": {"float", "int", "categorical"}, "int": {"int", "categorical"}}
    if param.type not in allowed.get(hp.kind, {"categorical"}):
        words = {"int": "integers", "float": "numbers"}.get(hp.kind, "names or flags")
        use = "int" if hp.kind == "int" else "categorical"
        return [FieldError((*loc, "type"), f"{name!r} takes {words}; use type: {use}")]
    if isinstance(param, CategoricalParam):
        errors = _check_categorical(loc, hp, param)
    else:
        errors = _check_range(loc, hp, param)
    return errors + _check_when(spec, loc, name, param, hp)


def _check_categorical(loc: Loc, hp: Hyperparameter, param: CategoricalParam) -> list[FieldError]:
    errors: list[FieldError] = []
    # 16 and 16.0 are one choice to Optuna; True and 1 are not.
    distinct = {(isinstance(choice, bool), choice) for choice in param.choices}
    if len(distinct) != len(param.choices):
        errors.append(FieldError((*loc, "choices"), "choices must be unique"))
    if not hp.is_selector:
        for index, choice in enumerate(param.choices):
            errors += [FieldError((*loc, "choices", index), m) for m in hp.check(choice)]
    return errors


def _check_range(loc: Loc, hp: Hyperparameter, param: FloatParam | IntParam) -> list[FieldError]:
    errors: list[FieldError] = []
    if param.low > param.high:
        errors.append(
            FieldError((*loc, "low"), f"low ({param.low:g}) must be <= high ({param.high:g})")
        )
    if param.log:
        if param.low <= 0:
            errors.append(FieldError((*loc, "low"), "must be > 0 when log is true"))
        if param.step is not None and not (isinstance(param, IntParam) and param.step == 1):
            errors.append(FieldError((*loc, "step"), "cannot be combined with log: true"))
    if not errors and param.step is not None:
        errors += _check_step(loc, param)
    if not errors:
        for key in ("low", "high"):
            errors += [FieldError((*loc, key), m) for m in hp.check(getattr(param, key))]
    return errors


def _check_step(loc: Loc, param: FloatParam | IntParam) -> list[FieldError]:
    """Refuses a ``high`` that ``low`` plus whole steps never reaches: Optuna would quietly
    search only up to the last step below it (``step: 4`` on ``[1, 2]`` leaves only 1)."""
    assert param.step is not None
    if isinstance(param, IntParam):
        if (param.high - param.low) % param.step == 0:
            return []
        steps: float = (param.high - param.low) // param.step
    else:
        steps = (param.high - param.low) / param.step
        if not math.isfinite(steps):
            return []  # a step too small to count: the grid and sampler checks name it
        reached = param.low + round(steps) * param.step
        if math.isclose(reached, param.high, rel_tol=1e-12, abs_tol=1e-12):
            return []
    below = param.low + math.floor(steps) * param.step
    above = below + param.step
    message = (
        f"high ({param.high:.12g}) is not low ({param.low:.12g}) plus a whole number of "
        f"steps ({param.step:.12g}): only values up to {below:.12g} would be searched; use "
        f"high: {below:.12g} or {above:.12g}"
    )
    return [FieldError((*loc, "step"), message)]


def _check_when(
    spec: StudySpec, loc: Loc, name: str, param: Any, hp: Hyperparameter
) -> list[FieldError]:
    errors = []
    for parent, values in param.explicit_conditions().items():
        where = (*loc, "when", parent)
        parent_param = spec.params.get(parent)
        if parent == name:
            errors.append(FieldError(where, "a param cannot depend on itself"))
        elif not values:
            message = f"no value of {parent!r} given: the param would never apply"
            errors.append(FieldError(where, message))
        elif parent_param is None:
            errors.append(
                FieldError(where, f"unknown parent {parent!r}; parents must be categorical params")
            )
        elif not isinstance(parent_param, CategoricalParam):
            errors.append(FieldError(where, f"parent {parent!r} must be a categorical param"))
        else:
            valid = [value for value in values if _is_choice(value, parent_param.choices)]
            errors += [
                FieldError(
                    where,
                    f"{_short(value)} is not a choice of {parent!r}; valid choices: "
                    + ", ".join(
                        c if isinstance(c, str) else as_written(c) for c in parent_param.choices
                    ),
                )
                for value in values
                if not _is_choice(value, parent_param.choices)
            ]
            implied = parent == hp.group and hp.option is not None
            if implied and valid and not any(value in hp.entries for value in valid):
                message = f"{name!r} belongs to {', '.join(hp.entries)}, so it never applies"
                errors.append(FieldError(where, message))
    return errors


def _check_applies(spec: StudySpec, name: str, reaches: Reaches) -> list[FieldError]:
    """Refuses a param (otherwise sound) that no trial would sample: one of its conditions,
    implied ones included, leaves its parent no value (``beta1`` of ``adam`` with an
    optimizer searched among ``[sgd]``: where the optimizer is not searched, ``adam``
    trains with its default ``beta1``), or its entries' ``APPLIES_WHEN`` rules it out on
    each of them (``beta`` beside the default ``weighting: inverse``)."""
    try:
        hp = spec.hyperparameter(name)
    except UnknownHyperparameterError:
        return []  # reported by the name checks
    if hp.group == "loss" and spec.chosen["imbalance"] == [LOSS_REPLACING_IMBALANCE]:
        return []  # the loss is replaced in every trial: _check_loss_replaced says so
    if hp.name == WARMUP and _warmup_ignored(spec):
        return []  # _check_warmup_ignored says so
    never = _never_applies_by_rule(spec, hp)
    if never:
        return [FieldError(("params", name), never)]
    for parent, values in spec.conditions(name).items():
        if not values:
            return [FieldError(("params", name), _never_applies(spec, name, hp, parent))]
    never = _never_applies_under_parents(spec, name, reaches)
    return [FieldError(("params", name), never)] if never else []


def _never_applies_under_parents(spec: StudySpec, name: str, reaches: Reaches) -> str | None:
    """Why the param ``name`` applies nowhere that its parents apply, or None: it needs a
    value of a param that its parent's own conditions exclude (``gamma`` searched where
    ``optimizer`` is ``adam``, of the ``focal`` loss, whose ``loss`` is searched only
    where ``optimizer`` is ``sgd``). A sampler would never reach it, and the grid would
    hold no cell with it. ``reaches``: ``_reaches(spec)``."""
    own = spec.conditions(name)
    for parent in own:
        for key, allowed in reaches.get(parent, {}).items():
            wanted = own.get(key)
            if wanted is not None and allowed and not any(v in allowed for v in wanted):
                return (
                    f"{name!r} applies only where {key} is one of {wanted}, but its parent "
                    f"{parent!r} is searched only where {key} is one of {allowed}, so it never "
                    "applies"
                )
    return None


Reaches = dict[str, dict[str, list[Scalar]]]
"""Per param, per param it depends on (its ancestors' included), the values that let it
apply."""


def _reaches(spec: StudySpec) -> Reaches:
    """Where each param applies, its ancestors' conditions included: per param it depends
    on, the values that let it apply. Worked out parents first, each param once (none
    where the conditions form a cycle: ``_check_cycles`` reports it)."""
    try:
        order = conditional_order(spec)
    except ValueError:
        return {}
    reaches: Reaches = {}
    for name in order:
        reach = {key: list(values) for key, values in spec.conditions(name).items()}
        for parent in list(reach):
            for key, allowed in reaches.get(parent, {}).items():
                mine = reach.get(key)
                reach[key] = allowed if mine is None else [v for v in mine if v in allowed]
        reaches[name] = reach
    return reaches


def _never_applies_by_rule(spec: StudySpec, hp: Hyperparameter) -> str | None:
    """Why the fixed or searched option ``hp`` applies on none of its entries, by their
    ``APPLIES_WHEN`` and how the spec sets the option that names (None when it applies
    on one): ``'beta' applies only where weighting is effective_number (weighting is
    inverse, its default), so it never applies``."""
    verdicts = spec.option_verdicts(hp)
    if not verdicts or any(verdict.never is None for verdict in verdicts.values()):
        return None
    reasons = "; ".join(dict.fromkeys(str(verdict.never) for verdict in verdicts.values()))
    return f"{hp.name!r} applies only where {_rule_text(hp)} ({reasons}), so it never applies"


def _rule_text(hp: Hyperparameter) -> str:
    """The ``APPLIES_WHEN`` conditions of ``hp``'s entries, as users read them."""
    group = str(hp.group)
    texts = []
    for entry in hp.entries:
        rule = GROUPS[group].get(entry).options.condition_of(str(hp.option))
        if rule is not None:
            texts.append(rule.describe(_option_shown(group, entry, rule.option)))
    return " or ".join(dict.fromkeys(texts))


def _option_shown(group: str, entry: str, option: str) -> str:
    """An entry's option as a spec names it: ``mixup.p`` for a pipeline's entry (every
    augmentation has a ``p``), else the bare option (``weighting``)."""
    return f"{entry}.{option}" if group in PIPELINES else option


def _never_applies(spec: StudySpec, name: str, hp: Hyperparameter, parent: str) -> str:
    """Why the condition on ``parent`` of the param ``name`` leaves it no value."""
    given = spec.params[name].explicit_conditions().get(parent)
    parent_param = spec.params.get(parent)
    choices = parent_param.choices if isinstance(parent_param, CategoricalParam) else []
    if parent in spec.rule_conditions(hp)[1]:
        return (
            f"{name!r} applies only where {_rule_text(hp)}, and is searched only where "
            f"{parent} is one of {given}, so it never applies"
        )
    if hp.group == "loss" and parent == "imbalance":
        return (
            f"imbalance: {LOSS_REPLACING_IMBALANCE} replaces the loss, and {name!r} is "
            f"searched only where imbalance is one of {given}, so {name!r} never applies"
        )
    if hp.name == WARMUP and parent == "scheduler":
        return f"every scheduler among {given} warms up by itself, so {name!r} never applies"
    if parent == hp.group and hp.option is not None:
        entries = ", ".join(hp.entries)
        return (
            f"{name!r} belongs to {entries}, not a choice of {parent!r} (choices: "
            f"{', '.join(map(str, choices))}), so it never applies"
        )
    return f"no value of {parent!r} lets it apply, so it never applies"


def _check_cycles(spec: StudySpec) -> list[FieldError]:
    try:
        conditional_order(spec)
    except ValueError as exc:
        return [FieldError(("params",), str(exc))]
    return []


def conditional_order(spec: StudySpec) -> list[str]:
    """Orders a spec's params so that every parent comes before its children (stable
    otherwise), counting the conditions that entry options imply.

    Raises:
        ValueError: If the conditions form a cycle.
    """
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError("conditions form a cycle: " + " -> ".join([*chain, name]))
        state[name] = "visiting"
        for parent in spec.conditions(name):
            if parent in spec.params and parent != name:
                visit(parent, [*chain, name])
        state[name] = "done"
        order.append(name)

    for name in spec.params:
        visit(name, [])
    return order


def _check_enqueue(spec: StudySpec) -> list[FieldError]:
    errors = [
        error
        for index, config in enumerate(spec.enqueue)
        for error in check_config(spec, ("enqueue", index), config)
    ]
    if len(spec.enqueue) > spec.budget.n_trials:
        errors.append(
            FieldError(
                ("enqueue",),
                f"{len(spec.enqueue)} configurations for a budget of {spec.budget.n_trials} trials",
            )
        )
    return errors


def check_config(spec: StudySpec, loc: Loc, config: Mapping[str, Any]) -> list[FieldError]:
    """Checks a configuration to enqueue against ``spec``'s (valid) space: every name a
    searched param, every value one it can take, and no param whose condition the
    configuration's own parent values rule out or leave to the sampler (which might never
    ask for it, so its value would be lost). Returns every problem, at ``loc.name``."""
    errors = []
    for name, value in config.items():
        param = spec.params.get(name)
        if param is None:
            where = "is fixed in the spec" if name in spec.fixed else "is not a searched param"
            choices = ", ".join(sorted(spec.params)) or "none"
            errors.append(FieldError((*loc, name), f"{name!r} {where}; searched params: {choices}"))
            continue
        problem = value_problem(param, value)
        if problem is None:
            problem = _ruled_out(spec, name, config)
        if problem:
            errors.append(FieldError((*loc, name), problem))
    return errors


def _ruled_out(spec: StudySpec, name: str, config: Mapping[str, Any]) -> str | None:
    for parent, values in spec.conditions(name).items():
        if parent not in config and parent in spec.params:
            # The sampler would choose the parent, and the value is lost unless it chooses
            # one of these.
            return f"applies only when {parent} is one of {values}: give {parent} too"
        if parent in config and not _is_choice(config[parent], values):
            return f"applies only when {parent} is one of {values}, not {_short(config[parent])}"
    return None


def _is_choice(value: Any, choices: Sequence[Any]) -> bool:
    """Whether ``value`` is one of ``choices`` as Optuna sees them: 16 and 16.0 are one
    choice, True and 1 are not."""
    kind = isinstance(value, bool)
    return any(isinstance(choice, bool) == kind and choice == value for choice in choices)


def value_problem(param: FloatParam | IntParam | CategoricalParam, value: Any) -> str | None:
    """Why ``param`` cannot take ``value`` as Optuna would (wrong type, outside the range,
    off the step grid, not a choice), or None when it can."""
    if isinstance(param, CategoricalParam):
        if _is_choice(value, param.choices):
            return None
        return f"{_short(value)} is not one of {as_written(param.choices)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{_short(value)} is not a number"
    if not param.low <= value <= param.high:  # exact for ints of any size, before any float()
        return f"{_short(value)} is outside [{param.low}, {param.high}]"
    if isinstance(param, IntParam) and isinstance(value, float) and not value.is_integer():
        return f"{value!r} is not an integer"
    if param.step is not None and not _on_grid(param, value):
        return f"{_short(value)} is not on the grid {param.low} + k * {param.step}"
    return None


def _on_grid(param: FloatParam | IntParam, value: float) -> bool:
    """Whether ``value`` (within the range) is ``low + k * step``, as Optuna decides it:
    exactly for integers, within 1e-8 of a step for floats."""
    assert param.step is not None
    if isinstance(param, IntParam):
        return (int(value) - param.low) % param.step == 0
    steps = (value - param.low) / param.step
    return math.isfinite(steps) and abs(steps - round(steps)) < 1e-8


def _short(value: Any, limit: int = 40) -> str:
    if isinstance(value, int) and value.bit_length() > 64:
        return "an integer over 64 bits"  # repr of a huge one can even raise
    text = as_written(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
