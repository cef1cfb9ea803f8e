"""Tests of the study spec: loading, structure and meaning checks, error paths."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from automl.data import DATASETS
from automl.pruners import build_pruner
from automl.samplers import build_sampler
from automl.space import build_config
from automl.spec import (
    FieldError,
    SpecError,
    StudySpec,
    conditional_order,
    load_spec,
    parse_json,
    parse_text,
    validate_spec,
)
from automl.spec_errors import MAX_LISTED_ERRORS
from automl.train.trial_config import stored_config

SEARCH_SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
DIGITS_QUICK = SEARCH_SPACES / "digits_quick.yaml"


def spec_errors(source: Any) -> list[FieldError]:
    """Loads ``source``, expecting a ``SpecError``; returns its errors."""
    with pytest.raises(SpecError) as info:
        load_spec(source)
    assert info.value.errors, "a SpecError must carry at least one FieldError"
    return info.value.errors


def with_params(**params: Any) -> dict[str, Any]:
    return {"name": "x", "params": params}


OPTIMIZER = {"type": "categorical", "choices": ["adam", "sgd"]}
MOMENTUM_IF_SGD = {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgd"}}


# --- valid specs ---------------------------------------------------------------------------


def test_minimal_spec_gets_defaults() -> None:
    spec = load_spec({"name": "x"})
    assert spec.name == "x"
    assert spec.dataset.source == "digits"
    assert spec.params == {}
    assert spec.fixed == {}
    assert spec.budget.n_trials == 20
    assert spec.sampler.name == "tpe"
    assert spec.metrics == ["accuracy"]
    assert spec.directions == ["maximize"]
    assert spec.pruner is None
    assert spec.pruner_or_default.name == "median"


def test_digits_quick_example_loads() -> None:
    spec = load_spec(DIGITS_QUICK)
    assert spec.name == "digits-quick"
    assert spec.dataset.options == {"val_fraction": 0.2, "seed": 0}
    assert spec.budget.n_trials == 8
    assert spec.sampler.seed == 42
    assert spec.pruner_or_default.name == "median"
    assert spec.fixed == {"epochs": 6, "batch_size": 64, "scheduler": "cosine"}
    assert list(spec.params) == ["optimizer", "lr", "momentum", "width", "dropout"]
    assert spec.params["lr"].low == pytest.approx(1e-3)
    assert spec.params["lr"].log is True
    assert spec.params["momentum"].explicit_conditions() == {"optimizer": ["sgd"]}
    assert spec.conditions("momentum") == {"optimizer": ["sgd"]}
    assert spec.params["width"].step == 16


def test_spec_path_given_as_string() -> None:
    assert load_spec(str(DIGITS_QUICK)).name == "digits-quick"


def test_json_text() -> None:
    text = json.dumps(
        {
            "name": "from-json",
            "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}},
        }
    )
    spec = load_spec(text)
    assert spec.name == "from-json"
    assert spec.params["lr"].low == pytest.approx(1e-4)


def test_yaml_text_reads_exponent_without_dot_as_float() -> None:
    text = "name: y\nparams:\n  lr: {type: float, low: 1e-4, high: 1E-1, log: true}\n"
    spec = load_spec(text)
    assert spec.params["lr"].low == pytest.approx(1e-4)
    assert spec.params["lr"].high == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("text", "path", "shown"),
    [
        ("name: yes\n", "name", "true"),
        ("name: 0x10\n", "name", "16"),
        ("name: x\ndescription: 2024-01-01\n", "description", "2024-01-01"),
        ("name: x\ndescription: off\n", "description", "false"),
    ],
)
def test_a_yaml_scalar_read_as_another_type_where_a_string_goes_says_to_quote_it(
    text: str, path: str, shown: str
) -> None:
    """Found by a tester: ``name: yes`` said only "Input should be a valid str, not true",
    and a date "a valid string (got date)"."""
    with pytest.raises(SpecError) as raised:
        load_spec(text)
    [error] = raised.value.errors
    assert str(error) == (
        f"{path}: Input should be a valid string, not {shown}; quote it in YAML, which reads "
        "unquoted yes, no, on, off, true and false as booleans, 2024-01-01 as a date and 0x10 "
        "as a number"
    )
    quoted = text.replace(f"{path}: {shown}", f"{path}: '{shown}'")
    if shown == "16":
        quoted = text.replace("0x10", "'0x10'")
    elif shown in ("true", "false"):
        quoted = text.replace(": yes", ": 'yes'").replace(": off", ": 'off'")
    assert getattr(load_spec(quoted), path) in {"yes", "0x10", "2024-01-01", "off"}


def test_parse_text_number_forms() -> None:
    data = parse_text("a: 1e-4\nb: -2e3\nc: 1.5\nd: 12\ne: v1e2\nf: 1.2.3\n")
    assert data == {"a": 1e-4, "b": -2000.0, "c": 1.5, "d": 12, "e": "v1e2", "f": "1.2.3"}
    assert isinstance(data["a"], float)
    assert isinstance(data["d"], int)


def test_multi_objective_spec() -> None:
    spec = load_spec({"name": "pareto", "objectives": [{"metric": "accuracy"}, {"metric": "loss"}]})
    assert spec.metrics == ["accuracy", "loss"]
    assert spec.directions == ["maximize", "minimize"]
    assert spec.pruner_or_default.name == "none"


def test_explicit_direction_overrides_metric_default() -> None:
    spec = load_spec({"name": "x", "objective": {"metric": "accuracy", "direction": "minimize"}})
    assert spec.directions == ["minimize"]


def test_multi_objective_with_pruner_none_is_valid() -> None:
    spec = load_spec(
        {
            "name": "x",
            "objectives": [{"metric": "accuracy"}, {"metric": "loss"}],
            "pruner": {"name": "none"},
        }
    )
    assert spec.pruner_or_default.name == "none"


def test_int_log_with_step_one_is_valid() -> None:
    spec = load_spec(
        with_params(epochs={"type": "int", "low": 1, "high": 8, "log": True, "step": 1})
    )
    assert spec.params["epochs"].log is True


def test_int_hyperparameter_as_categorical_is_valid() -> None:
    spec = load_spec(with_params(width={"type": "categorical", "choices": [16, 32]}))
    assert spec.params["width"].choices == [16, 32]


def test_condition_with_list_of_values() -> None:
    spec = load_spec(
        with_params(
            optimizer={"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
            momentum={**MOMENTUM_IF_SGD, "when": {"optimizer": ["sgd", "rmsprop"]}},
        )
    )
    assert spec.conditions("momentum") == {"optimizer": ["sgd", "rmsprop"]}


def test_spec_is_frozen() -> None:
    spec = load_spec({"name": "x"})
    with pytest.raises(ValueError, match="frozen"):
        spec.name = "y"  # type: ignore[misc]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"name": "x"}, id="minimal"),
        pytest.param(
            {"name": "m", "objectives": [{"metric": "accuracy"}, {"metric": "loss"}]},
            id="multi-objective",
        ),
        pytest.param(
            {
                "name": "c",
                "fixed": {"epochs": 2, "loss": "focal"},
                "sampler": {"name": "random", "seed": 3},
                "params": {"optimizer": OPTIMIZER, "momentum": MOMENTUM_IF_SGD},
            },
            id="conditional",
        ),
    ],
)
def test_stored_form_round_trips(data: dict[str, Any]) -> None:
    """The store keeps ``model_dump(mode="json", exclude_none=True)``; it must reload equal."""
    spec = load_spec(data)
    stored = json.loads(json.dumps(spec.model_dump(mode="json", exclude_none=True)))
    assert stored["name"] == data["name"]
    assert validate_spec(stored) == spec


def test_validate_spec_accepts_mapping() -> None:
    assert validate_spec({"name": "x"}).name == "x"


@pytest.mark.parametrize(("data", "kind"), [([1, 2], "list"), (None, "empty document"), (3, "int")])
def test_validate_spec_rejects_non_mapping(data: Any, kind: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_spec(data)
    assert info.value.errors == [FieldError((), f"a spec must be a mapping of fields, got {kind}")]
    assert str(info.value) == f"a spec must be a mapping of fields, got {kind}"


# --- invalid specs: one problem each, with its exact path ------------------------------------

INVALID_CASES: list[Any] = [
    pytest.param(
        {"name": "x", "bogus": 1},
        "bogus",
        ["unknown field 'bogus'", "valid fields:", "params"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        with_params(lr={"type": "float", "low": 1e-3, "lowe": 1e-3, "high": 0.1}),
        "params.lr.lowe",
        ["unknown field 'lowe'", "valid fields: type, low, high, log, step, when"],
        id="unknown-param-key",
    ),
    pytest.param(
        {"name": "x", "budget": {"n_trial": 3}},
        "budget.n_trial",
        ["unknown field 'n_trial'", "n_trials"],
        id="unknown-budget-key",
    ),
    pytest.param(
        {"name": "x", "sampler": {"name": "random", "options": {"seed": 1}}},
        "sampler.options.seed",
        ["unknown field 'seed'; this entry takes no options"],
        id="option-of-an-entry-without-options",
    ),
    pytest.param(
        {"name": "x", "sampler": {"nmae": "tpe"}},
        "sampler.nmae",
        ["unknown field"],
        id="unknown-sampler-key",
    ),
    pytest.param(
        with_params(lr={"type": "float", "low": "abc", "high": 0.1}),
        "params.lr.low",
        ["valid number"],
        id="low-not-number",
    ),
    pytest.param(
        {"name": "x", "budget": {"n_trials": "many"}},
        "budget.n_trials",
        ["valid integer"],
        id="n-trials-not-int",
    ),
    pytest.param(
        {"name": "x", "budget": {"n_trials": 0}},
        "budget.n_trials",
        ["greater than or equal to 1"],
        id="n-trials-zero",
    ),
    pytest.param(
        {"name": "x", "budget": {"n_trials": 10**6}},
        "budget.n_trials",
        ["1,000,000 is over the limit of 100,000 (max_trials)"],
        id="n-trials-too-many",
    ),
    pytest.param(
        {"name": "x", "budget": {"timeout": 0}},
        "budget.timeout",
        ["greater than 0"],
        id="timeout-zero",
    ),
    pytest.param({"name": 5}, "name", ["valid string"], id="name-not-string"),
    pytest.param({"name": "bad name!"}, "name", ["letters, digits"], id="name-bad-characters"),
    pytest.param(
        {"name": "x", "fixed": "no"}, "fixed", ["valid dictionary"], id="fixed-not-mapping"
    ),
    pytest.param(with_params(lr="x"), "params.lr", ["valid dictionary"], id="param-not-mapping"),
    pytest.param(
        with_params(lr={"type": "weird", "low": 0.1, "high": 0.2}),
        "params.lr.type",
        ["unknown param type 'weird'", "valid choices: float, int, categorical"],
        id="param-type-unknown",
    ),
    pytest.param(
        {"name": "x", "objective": {"metric": "accuracy", "direction": "up"}},
        "objective.direction",
        ["'maximize' or 'minimize'"],
        id="direction-unknown",
    ),
    pytest.param(
        with_params(lr={"type": "float", "low": 0.1, "high": 0.01}),
        "params.lr.low",
        ["low (0.1) must be <= high (0.01)"],
        id="low-above-high",
    ),
    pytest.param(
        with_params(lr={"type": "float", "low": 0, "high": 0.01, "log": True}),
        "params.lr.low",
        ["must be > 0 when log is true"],
        id="log-low-zero",
    ),
    pytest.param(
        with_params(warmup_epochs={"type": "float", "low": -1, "high": 2, "log": True}),
        "params.warmup_epochs.low",
        ["must be > 0 when log is true"],
        id="log-low-negative",
    ),
    pytest.param(
        with_params(dropout={"type": "float", "low": 0.0, "high": 0.25, "step": 0.1}),
        "params.dropout.step",
        ["high (0.25) is not low (0) plus a whole number of steps (0.1)", "use high: 0.2 or 0.3"],
        id="float-step-misses-high",
    ),
    pytest.param(
        with_params(depth={"type": "int", "low": 1, "high": 2, "step": 4}),
        "params.depth.step",
        ["only values up to 1 would be searched; use high: 1 or 5"],
        id="int-step-past-high",
    ),
    pytest.param(
        with_params(lr={"type": "float", "low": 1e-3, "high": 0.1, "log": True, "step": 0.01}),
        "params.lr.step",
        ["cannot be combined with log"],
        id="float-log-with-step",
    ),
    pytest.param(
        with_params(epochs={"type": "int", "low": 1, "high": 9, "log": True, "step": 2}),
        "params.epochs.step",
        ["cannot be combined with log"],
        id="int-log-with-step-2",
    ),
    pytest.param(
        with_params(epochs={"type": "int", "low": 1, "high": 9, "step": 0}),
        "params.epochs.step",
        ["greater than 0"],
        id="step-zero",
    ),
    pytest.param(
        with_params(width={"type": "int", "low": 1.5, "high": 8}),
        "params.width.low",
        ["valid integer, got a number with a fractional part"],
        id="int-fractional-low",
    ),
    pytest.param(
        with_params(width={"type": "int", "low": 1, "high": 8.5}),
        "params.width.high",
        ["valid integer, got a number with a fractional part"],
        id="int-fractional-high",
    ),
    pytest.param(
        with_params(width={"type": "int", "low": 8, "high": 64, "step": 2.5}),
        "params.width.step",
        ["valid integer, got a number with a fractional part"],
        id="int-fractional-step",
    ),
    pytest.param(
        with_params(lr={"type": "float", "high": 0.1}),
        "params.lr.low",
        ["Field required"],
        id="range-missing-low",
    ),
    pytest.param(
        with_params(width={"type": "int", "low": 8}),
        "params.width.high",
        ["Field required"],
        id="range-missing-high",
    ),
    pytest.param(
        with_params(lr={"type": "float", "low": 0.1, "high": 1, "choices": [0.1]}),
        "params.lr.choices",
        ["unknown field 'choices'", "valid fields: type, low, high, log, step, when"],
        id="range-with-choices",
    ),
    pytest.param(
        with_params(lr={"type": "float", "low": 0.1, "high": 20}),
        "params.lr.high",
        ["less than or equal to 10"],
        id="high-beyond-hyperparameter-bound",
    ),
    pytest.param(
        with_params(dropout={"type": "float", "low": -0.5, "high": 0.5}),
        "params.dropout.low",
        ["greater than or equal to 0"],
        id="low-beyond-hyperparameter-bound",
    ),
    pytest.param(
        with_params(optimizer={"type": "categorical"}),
        "params.optimizer.choices",
        ["Field required"],
        id="categorical-without-choices",
    ),
    pytest.param(
        with_params(optimizer={"type": "categorical", "choices": []}),
        "params.optimizer.choices",
        ["at least 1 item"],
        id="categorical-empty-choices",
    ),
    pytest.param(
        with_params(optimizer={"type": "categorical", "choices": ["adam", "adam"]}),
        "params.optimizer.choices",
        ["choices must be unique"],
        id="duplicate-choices",
    ),
    pytest.param(
        with_params(optimizer={"type": "categorical", "choices": ["adam"], "low": 1}),
        "params.optimizer.low",
        ["unknown field 'low'", "valid fields: type, choices, when"],
        id="categorical-with-low",
    ),
    pytest.param(
        with_params(optimizer={"type": "categorical", "choices": ["adam"], "log": True}),
        "params.optimizer.log",
        ["unknown field 'log'"],
        id="categorical-with-log",
    ),
    pytest.param(
        with_params(optimizer={"type": "categorical", "choices": ["adam", "adm"]}),
        "params.optimizer.choices[1]",
        [
            "unknown optimizer 'adm'",
            "did you mean 'adam'",
            "valid choices: adam, adamw, rmsprop, sgd",
        ],
        id="unknown-optimizer-choice",
    ),
    pytest.param(
        with_params(
            dropout={"type": "float", "low": 0.1, "high": 0.5, "when": {"optimizer": None}}
        ),
        "params.dropout.when.optimizer",
        ["Input should be a valid string, a valid boolean", " or a valid list"],
        id="condition-value-fits-no-branch",  # was five errors under pydantic's branch names
    ),
    pytest.param(
        {"name": "x", "fixed": {"model": {"width": 8}}},
        "fixed.model",
        ["takes a name, not a dict", "valid choices: cnn"],
        id="fixed-model-as-a-mapping",
    ),
    pytest.param(
        {"name": "x", "fixed": {"optimizer": ["adam"]}},
        "fixed.optimizer",
        ["takes a name, not a list", "valid choices: adam"],
        id="fixed-optimizer-as-a-list",
    ),
    pytest.param(
        with_params(model={"type": "categorical", "choices": ["cnnn"]}),
        "params.model.choices[0]",
        ["unknown model 'cnnn'", "valid choices: cnn"],
        id="unknown-model-choice",
    ),
    pytest.param(
        with_params(loss={"type": "categorical", "choices": ["cross_entropy", "focall"]}),
        "params.loss.choices[1]",
        ["unknown loss 'focall'", "did you mean 'focal'", "valid choices: cross_entropy, focal"],
        id="unknown-loss-choice",
    ),
    pytest.param(
        with_params(scheduler={"type": "categorical", "choices": ["cosin"]}),
        "params.scheduler.choices[0]",
        ["unknown scheduler 'cosin'", "valid choices: constant, cosine, linear, one_cycle, step"],
        id="unknown-scheduler-choice",
    ),
    pytest.param(
        with_params(width={"type": "categorical", "choices": [16, 1.5]}),
        "params.width.choices[1]",
        ["fractional part"],
        id="fractional-int-choice",
    ),
    pytest.param(
        with_params(width={"type": "categorical", "choices": [16, True]}),
        "params.width.choices[1]",
        ["valid integer"],
        id="bool-int-choice",
    ),
    pytest.param(
        {"name": "x", "sampler": {"name": "tp"}},
        "sampler.name",
        [
            "unknown sampler 'tp'",
            "did you mean 'tpe'",
            "valid choices: auto, brute_force, cmaes, gp, grid, nsga2, qmc, random, tpe",
        ],
        id="unknown-sampler",
    ),
    pytest.param(
        {"name": "x", "sampler": {"options": {"bogus": 1}}},
        "sampler.options.bogus",
        ["unknown field 'bogus'", "valid fields: n_startup_trials"],
        id="bad-sampler-options",
    ),
    pytest.param(
        {"name": "x", "sampler": {"options": {"n_startup_trials": "abc"}}},
        "sampler.options.n_startup_trials",
        ["valid integer"],
        id="sampler-option-wrong-type",
    ),
    pytest.param(
        {"name": "x", "sampler": {"options": {"multivariate": False, "group": True}}},
        "sampler.options",
        ["invalid options for 'tpe'", "multivariate"],
        id="sampler-options-refused-together",
    ),
    pytest.param(
        {"name": "x", "pruner": {"name": "mediam"}},
        "pruner.name",
        ["unknown pruner 'mediam'", "did you mean 'median'", "hyperband"],
        id="unknown-pruner",
    ),
    pytest.param(
        {"name": "x", "pruner": {"options": {"bogus": 1}}},
        "pruner.options.bogus",
        ["unknown field 'bogus'", "n_warmup_steps"],
        id="bad-pruner-options",
    ),
    pytest.param(
        {"name": "x", "pruner": {"name": "threshold"}},
        "pruner.options",
        ["invalid options for 'threshold'", "lower or upper"],
        id="pruner-options-refused-by-optuna",
    ),
    pytest.param(
        {"name": "x", "objective": {"metric": "acuracy"}},
        "objective.metric",
        ["unknown metric 'acuracy'", "did you mean 'accuracy'", "balanced_accuracy"],
        id="unknown-metric",
    ),
    pytest.param(
        {"name": "x", "objectives": [{"metric": "accuracy"}, {"metric": "f1"}]},
        "objectives[1].metric",
        ["unknown metric 'f1'", "macro_f1"],
        id="unknown-metric-in-objectives",
    ),
    pytest.param(
        {"name": "x", "objectives": [{"metric": "loss"}, {"metric": "loss"}]},
        "objectives",
        ["only once"],
        id="duplicate-objective-metric",
    ),
    pytest.param(
        {"name": "x", "objectives": []},
        "objectives",
        ["at least one objective"],
        id="empty-objectives",
    ),
    pytest.param(
        {"name": "x", "dataset": {"source": "digit"}},
        "dataset.source",
        [
            "unknown dataset 'digit'",
            "did you mean 'digits'",
            "valid choices: cifar10, cifar100, digits,",
        ],
        id="unknown-dataset",
    ),
    pytest.param(
        {"name": "x", "dataset": {"options": {"val_fraction": 1.5}}},
        "dataset.options.val_fraction",
        ["less than 1"],
        id="dataset-option-out-of-range",
    ),
    pytest.param(
        {"name": "x", "dataset": {"options": {"val_frac": 0.1}}},
        "dataset.options.val_frac",
        ["unknown field 'val_frac'; valid fields: val_fraction, test_fraction, seed"],
        id="dataset-option-unknown",
    ),
    pytest.param(
        {"name": "x", "fixed": {"epoch": 3}},
        "fixed.epoch",
        ["unknown hyperparameter 'epoch'", "did you mean 'epochs'", "valid choices:", "batch_size"],
        id="fixed-unknown-hyperparameter",
    ),
    pytest.param(
        {"name": "x", "fixed": {"optimizer": "adm"}},
        "fixed.optimizer",
        ["unknown optimizer 'adm'", "valid choices: adam, adamw, rmsprop, sgd"],
        id="fixed-unknown-optimizer",
    ),
    pytest.param(
        {"name": "x", "fixed": {"width": "wide"}},
        "fixed.width",
        ["valid integer"],
        id="fixed-wrong-type",
    ),
    pytest.param(
        {"name": "x", "fixed": {"width": True}},
        "fixed.width",
        ["valid integer"],
        id="fixed-bool-for-int",
    ),
    pytest.param(
        {"name": "x", "fixed": {"dropout": 1.0}},
        "fixed.dropout",
        ["less than 1"],
        id="fixed-out-of-range",
    ),
    pytest.param(
        {
            "name": "x",
            "fixed": {"lr": 0.1},
            "params": {"lr": {"type": "float", "low": 0.01, "high": 1}},
        },
        "fixed.lr",
        ["also in params"],
        id="fixed-and-searched",
    ),
    pytest.param(
        with_params(lre={"type": "float", "low": 0.1, "high": 1}),
        "params.lre",
        ["unknown hyperparameter 'lre'", "did you mean 'lr'", "valid choices:"],
        id="param-unknown-hyperparameter",
    ),
    pytest.param(
        with_params(width={"type": "float", "low": 8, "high": 64}),
        "params.width.type",
        ["takes integers", "use type: int"],
        id="float-type-for-int-hyperparameter",
    ),
    pytest.param(
        with_params(optimizer={"type": "float", "low": 0, "high": 1}),
        "params.optimizer.type",
        ["takes names", "use type: categorical"],
        id="range-type-for-name-hyperparameter",
    ),
    pytest.param(
        with_params(lr={"type": "float", "low": 0.01, "high": 0.1, "when": {"optimizer": "sgd"}}),
        "params.lr.when.optimizer",
        ["unknown parent 'optimizer'", "categorical"],
        id="when-unknown-parent",
    ),
    pytest.param(
        with_params(momentum=MOMENTUM_IF_SGD),
        "params.momentum",
        [
            "'momentum' is an option of optimizer rmsprop, sgd",
            "which this study cannot choose (optimizer: adam)",
            "or drop 'momentum'",
        ],
        id="option-of-an-entry-not-chosen",
    ),
    pytest.param(
        with_params(
            optimizer={"type": "categorical", "choices": ["adam", "sgd"]},
            beta1={"type": "float", "low": 0.8, "high": 0.9, "when": {"optimizer": "sgd"}},
        ),
        "params.beta1.when.optimizer",
        ["'beta1' belongs to adam, so it never applies"],
        id="option-conditioned-away-from-its-entry",
    ),
    pytest.param(
        {"name": "x", "fixed": {"resnet.depth": 3}},
        "fixed.resnet.depth",
        ["unknown hyperparameter 'resnet.depth'"],
        id="qualified-unknown-entry",
    ),
    pytest.param(
        {"name": "x", "fixed": {"cnn.wdth": 3}},
        "fixed.cnn.wdth",
        ["model 'cnn' has no option 'wdth'", "its options: width, depth"],
        id="qualified-unknown-option",
    ),
    pytest.param(
        {"name": "x", "fixed": {"sgd.momentum": 0.5}},
        "fixed.sgd.momentum",
        ["optimizer 'sgd' is not one this study can choose (optimizer: adam)"],
        id="qualified-entry-not-chosen",
    ),
    pytest.param(
        {"name": "x", "fixed": {"hflip.p": 1.5}},
        "fixed.hflip.p",
        ["less than or equal to 1"],
        id="augmentation-option-out-of-range",
    ),
    pytest.param(
        with_params(
            lr={"type": "float", "low": 0.01, "high": 0.1},
            dropout={"type": "float", "low": 0.1, "high": 0.5, "when": {"lr": 0.05}},
        ),
        "params.dropout.when.lr",
        ["parent 'lr' must be a categorical param"],
        id="when-non-categorical-parent",
    ),
    pytest.param(
        with_params(
            optimizer=OPTIMIZER, momentum={**MOMENTUM_IF_SGD, "when": {"optimizer": "adamw"}}
        ),
        "params.momentum.when.optimizer",
        ["'adamw' is not a choice of 'optimizer'", "valid choices: adam, sgd"],
        id="when-value-not-a-choice",
    ),
    pytest.param(
        with_params(
            optimizer=OPTIMIZER,
            momentum={**MOMENTUM_IF_SGD, "when": {"optimizer": ["sgd", "rmsprop"]}},
        ),
        "params.momentum.when.optimizer",
        ["'rmsprop' is not a choice"],
        id="when-list-value-not-a-choice",
    ),
    pytest.param(
        with_params(lr={"type": "float", "low": 0.01, "high": 0.1, "when": {"lr": 0.05}}),
        "params.lr.when.lr",
        ["cannot depend on itself"],
        id="when-self",
    ),
    pytest.param(
        with_params(
            optimizer={**OPTIMIZER, "when": {"loss": "focal"}},
            loss={
                "type": "categorical",
                "choices": ["focal", "cross_entropy"],
                "when": {"optimizer": "adam"},
            },
        ),
        "params",
        ["conditions form a cycle", "optimizer -> loss -> optimizer"],
        id="when-cycle",
    ),
    pytest.param(
        {
            "name": "x",
            "objectives": [{"metric": "accuracy"}, {"metric": "loss"}],
            "pruner": {"name": "median"},
        },
        "pruner.name",
        ["multi-objective studies cannot prune", "'none'"],
        id="pruner-on-multi-objective",
    ),
    pytest.param(
        {"name": "x", "objective": {"metric": "accuracy"}, "objectives": [{"metric": "loss"}]},
        "objectives",
        ["either 'objective' or 'objectives', not both"],
        id="objective-and-objectives",
    ),
    pytest.param("- a\n- b\n", "(spec)", ["must be a mapping", "got list"], id="yaml-list-text"),
    pytest.param(
        "just a string", "(spec)", ["must be a mapping", "got str"], id="yaml-scalar-text"
    ),
    pytest.param("", "(spec)", ["must be a mapping", "empty document"], id="empty-text"),
]


@pytest.mark.parametrize(("data", "path", "fragments"), INVALID_CASES)
def test_invalid_spec_names_field_path(data: Any, path: str, fragments: list[str]) -> None:
    errors = spec_errors(data)
    assert [error.path for error in errors] == [path], errors
    for fragment in fragments:
        assert fragment in errors[0].msg


def test_an_option_that_fits_no_branch_of_its_union_is_one_error_at_its_path() -> None:
    """Once ``size: {}`` was two errors, at ``size.constrained-int`` and
    ``size.tuple[constrained-int, constrained-int]``."""
    data = {"name": "x", "dataset": {"source": "image_folder", "options": {"path": "p"}}}
    data["dataset"]["options"]["size"] = {}
    size = [e for e in spec_errors(data) if e.path.startswith("dataset.options.size")]
    data["dataset"]["options"]["size"] = [0, "a"]
    items = [e for e in spec_errors(data) if e.path.startswith("dataset.options.size")]

    assert [(e.path, e.msg) for e in size] == [
        ("dataset.options.size", "Input should be a valid integer or a valid tuple (got a mapping)")
    ]
    # Found by a tester: a list also said "Input should be a valid integer (got a list)".
    assert [(e.path, e.msg) for e in items] == [
        ("dataset.options.size[0]", "Input should be greater than or equal to 1 (got 0)"),
        (
            "dataset.options.size[1]",
            'Input should be a valid integer, unable to parse string as an integer (got "a")',
        ),
    ]
    data["dataset"]["options"]["size"] = 0  # the integer's error alone: not "or a valid tuple"
    [zero] = [e for e in spec_errors(data) if e.path.startswith("dataset.options.size")]
    assert zero.msg == "Input should be greater than or equal to 1 (got 0)"


@pytest.mark.parametrize(
    ("path", "value", "shown"),
    [
        ("budget.n_trials", "many", '"many"'),
        ("budget.n_trials", 2.5, "2.5"),
        ("budget.n_trials", [3], "a list"),
        ("budget.max_failed", -1, "-1"),
        ("budget.n_trials", "many" * 25, '"' + "many" * 10 + '..."'),
        ("budget.n_trials", 10**60 + 0.5, "1e+60"),
        ("budget.max_failed", -(10**100), "-1" + "0" * 38 + "..."),
        ("budget.n_trials", "é" * 30, '"' + "\\u00e9" * 30 + '"'),
        ("fixed.precision", "fp64", '"fp64"'),
    ],
)
def test_a_wrong_type_or_value_error_shows_the_value_given(
    path: str, value: object, shown: str
) -> None:
    data: dict[str, Any] = {"name": "x", "dataset": {"source": "digits"}, "budget": {}}
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value

    errors = [e for e in spec_errors(data) if e.path == path]

    assert len(errors) == 1 and errors[0].msg.endswith(f" (got {shown})"), errors


@pytest.mark.parametrize(
    ("epochs", "path"),
    [
        ({"fixed": {"epochs": "many"}}, "fixed.epochs"),
        ({"fixed": {"epochs": [3]}}, "fixed.epochs"),
        ({"fixed": {"epochs": float("inf")}}, "fixed.epochs"),
        ({"params": {"epochs": {"type": "categorical", "choices": [2, "x"]}}}, "params.epochs"),
    ],
)
def test_epochs_that_are_no_whole_number_are_an_error_with_a_pruner(
    epochs: dict[str, Any], path: str
) -> None:
    """Once a ValueError from the pruner's check of its warm-up (a 500 over the API)."""
    data = {"name": "x", "dataset": {"source": "digits"}, **epochs}
    data["pruner"] = {"name": "median", "options": {"n_warmup_steps": 1}}
    errors = spec_errors(data)
    assert errors and all(error.path.startswith(path) for error in errors), errors


def test_invalid_yaml_reports_line_number() -> None:
    errors = spec_errors("name: x\nparams:\n  lr: {type: float\n")
    assert len(errors) == 1
    assert errors[0].path == "(spec)"
    assert errors[0].msg.startswith("invalid YAML/JSON at line 4, column 1")


def test_invalid_yaml_mapping_values_line_and_column() -> None:
    errors = spec_errors("name: x\n  bad: : :\n")
    assert "at line 2, column 6" in errors[0].msg


def test_invalid_json_text_reports_line_number() -> None:
    errors = spec_errors('{"name": "x",\n "params": {\n')
    assert errors[0].path == "(spec)"
    assert "invalid YAML/JSON at line 3" in errors[0].msg


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    errors = spec_errors(missing)
    assert errors == [FieldError((), f"spec file not found: {missing}")]


def test_missing_file_given_as_string() -> None:
    errors = spec_errors("no/such/spec.json")
    assert errors[0].msg == "spec file not found: no/such/spec.json"


def test_file_with_errors_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("name: x\nsampler: {name: tp}\n", encoding="utf-8")
    assert [error.path for error in spec_errors(path)] == ["sampler.name"]


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00name: x")
    errors = spec_errors(path)
    assert errors[0].path == "(spec)"
    assert "cannot read spec file" in errors[0].msg


# --- many problems at once -----------------------------------------------------------------


def test_all_meaning_errors_reported_at_once() -> None:
    data = {
        "name": "x",
        "dataset": {"source": "digit"},
        "objective": {"metric": "acuracy"},
        "sampler": {"name": "tp"},
        "pruner": {"name": "mediam"},
        "fixed": {"epoch": 3},
        "params": {
            "lr": {"type": "float", "low": 0.1, "high": 0.01},
            "optimizer": {"type": "categorical", "choices": ["sgd", "adm"]},
            "momentum": {**MOMENTUM_IF_SGD, "when": {"optimizer": "nag"}},
        },
    }
    with pytest.raises(SpecError) as info:
        load_spec(data)
    paths = [error.path for error in info.value.errors]
    assert paths == [
        "dataset.source",
        "objective.metric",
        "sampler.name",
        "pruner.name",
        "params.optimizer.choices[1]",
        "fixed.epoch",
        "params.lr.low",
        "params.momentum.when.optimizer",
    ]
    message = str(info.value)
    for path in paths:
        assert f"{path}: " in message


def test_all_structure_errors_reported_at_once() -> None:
    data = {
        "name": "x",
        "budget": {"n_trials": 0},
        "sampler": {"seed": "s"},
        "params": {
            "lr": {"type": "weird"},
            "width": {"type": "int", "lowe": 3},
        },
    }
    paths = {error.path for error in spec_errors(data)}
    assert paths == {
        "budget.n_trials",
        "sampler.seed",
        "params.lr.type",
        "params.width.lowe",
        "params.width.low",
        "params.width.high",
    }


def test_several_errors_in_one_param() -> None:
    errors = spec_errors(with_params(lr={"type": "float"}))
    assert [(e.path, e.msg) for e in errors] == [
        ("params.lr.low", "Field required"),
        ("params.lr.high", "Field required"),
    ]


def test_low_above_high_and_nonpositive_log_low_both_reported() -> None:
    errors = spec_errors(
        with_params(warmup_epochs={"type": "float", "low": 0, "high": -1, "log": True})
    )
    assert [e.path for e in errors] == ["params.warmup_epochs.low", "params.warmup_epochs.low"]
    assert "must be <= high" in errors[0].msg
    assert "must be > 0 when log is true" in errors[1].msg


def test_unknown_key_does_not_hide_other_errors() -> None:
    paths = {
        error.path for error in spec_errors({"name": "x", "bogus": 1, "budget": {"n_trials": 0}})
    }
    assert paths == {"bogus", "budget.n_trials"}


def test_every_unknown_key_is_reported() -> None:
    paths = {error.path for error in spec_errors({"name": "x", "colour": 1, "size": 2})}
    assert paths == {"colour", "size"}


def test_thousands_of_problems_list_the_first_fifty_and_count_the_rest() -> None:
    """Found by a tester: 19,000 unknown keys (a 957 KB spec) were answered with 7 MB of
    errors, each listing the valid keys."""
    errors = spec_errors({"name": "x", **{f"key{i}": i for i in range(2_000)}})

    assert len(errors) == MAX_LISTED_ERRORS + 1
    assert [error.path for error in errors[:3]] == ["key0", "key1", "key2"]
    assert str(errors[-1]) == "and 1950 more problems, not listed: fix these first"
    assert len(str(SpecError(errors))) < 20_000


def test_numerically_equal_choices_are_duplicates() -> None:
    errors = spec_errors(with_params(width={"type": "categorical", "choices": [16, 16.0]}))
    assert [e.path for e in errors] == ["params.width.choices"]


# --- FieldError, SpecError, conditional_order ----------------------------------------------


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        ((), "(spec)"),
        (("name",), "name"),
        (("params", "lr", "low"), "params.lr.low"),
        (("params", "optimizer", "choices", 1), "params.optimizer.choices[1]"),
        (("objectives", 0, "metric"), "objectives[0].metric"),
    ],
)
def test_field_error_path(loc: tuple[str | int, ...], path: str) -> None:
    error = FieldError(loc, "problem")
    assert error.path == path
    assert str(error) == (f"{path}: problem" if loc else "problem")


def test_spec_error_message_joins_errors() -> None:
    error = SpecError([FieldError(("a",), "one"), FieldError(("b", 0), "two")])
    assert str(error) == "a: one; b[0]: two"
    assert str(SpecError([FieldError((), "whole spec")])) == "whole spec"
    assert isinstance(error, ValueError)


def test_conditional_order_puts_parents_first() -> None:
    spec = load_spec(
        with_params(
            warmup_epochs={"type": "float", "low": 0, "high": 2, "when": {"scheduler": "cosine"}},
            momentum={"type": "float", "low": 0.5, "high": 0.9},
            scheduler={
                "type": "categorical",
                "choices": ["cosine", "step"],
                "when": {"optimizer": "sgd"},
            },
            optimizer={"type": "categorical", "choices": ["adam", "sgd"]},
            lr={"type": "float", "low": 0.01, "high": 0.1},
        )
    )
    order = conditional_order(spec)
    assert sorted(order) == sorted(spec.params)
    assert order.index("optimizer") < order.index("scheduler") < order.index("warmup_epochs")
    # momentum belongs to sgd: its implied parent comes first too.
    assert order.index("optimizer") < order.index("momentum")
    # Unconditional params keep their relative order.
    assert order.index("optimizer") < order.index("lr")


# --- hostile and oversized input -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({"name": "x", "budget": {"n_trials": True}}, "budget.n_trials", "valid integer"),
        ({"name": "x", "budget": {"n_trials": "3"}}, "budget.n_trials", "valid integer"),
        ({"name": "x", "sampler": {"seed": False}}, "sampler.seed", "valid integer"),
        (
            with_params(lr={"type": "float", "low": float("nan"), "high": 0.1}),
            "params.lr.low",
            "finite number",
        ),
        (
            with_params(lr={"type": "float", "low": 0.01, "high": float("inf")}),
            "params.lr.high",
            "finite number",
        ),
        ({"name": "x", "fixed": {"lr": float("nan")}}, "fixed.lr", "finite number"),
        ({"name": "x", "budget": {"timeout": 10**9}}, "budget.timeout", "(max_timeout_s)"),
    ],
)
def test_hostile_values_are_named(data: dict[str, Any], path: str, fragment: str) -> None:
    errors = spec_errors(data)
    assert [error.path for error in errors] == [path], errors
    assert fragment in errors[0].msg


BIG = 2**70
"""Above every 64-bit integer column and C long: must be refused at submit, not in a trial."""


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({"name": "x", "fixed": {"epochs": "3"}}, "fixed.epochs", 'valid integer, not "3"'),
        ({"name": "x", "fixed": {"lr": "0.01"}}, "fixed.lr", 'valid number, not "0.01"'),
        ({"name": "x", "fixed": {"restore_best": "yes"}}, "fixed.restore_best", "valid boolean"),
        ({"name": "x", "fixed": {"restore_best": 1}}, "fixed.restore_best", "valid boolean"),
        ({"name": "x", "fixed": {"width": True}}, "fixed.width", "valid integer, not true"),
        ({"name": "x", "refit": "yes"}, "refit", 'valid boolean, not "yes"'),
        ({"name": "x", "budget": {"timeout": "60"}}, "budget.timeout", "valid number"),
        (
            with_params(epochs={"type": "int", "low": "1", "high": 3}),
            "params.epochs.low",
            "valid integer",
        ),
        (
            with_params(lr={"type": "float", "low": 0.001, "high": 0.1, "log": "true"}),
            "params.lr.log",
            "valid boolean",
        ),
        (
            with_params(epochs={"type": "categorical", "choices": ["1", 2]}),
            "params.epochs.choices[0]",
            "valid integer",
        ),
        (
            {"name": "x", "sampler": {"name": "tpe", "options": {"n_startup_trials": "5"}}},
            "sampler.options.n_startup_trials",
            "valid integer",
        ),
        (
            {"name": "x", "sampler": {"name": "tpe", "options": {"multivariate": 1}}},
            "sampler.options.multivariate",
            "valid boolean, not 1",
        ),
        (
            {"name": "x", "pruner": {"name": "hyperband", "options": {"max_resource": "3"}}},
            "pruner.options.max_resource",
            "valid integer or 'auto'",
        ),
        (
            {"name": "x", "dataset": {"source": "digits", "options": {"val_fraction": "0.2"}}},
            "dataset.options.val_fraction",
            "valid number",
        ),
    ],
)
def test_values_that_would_need_converting_are_refused(
    data: dict[str, Any], path: str, fragment: str
) -> None:
    """A spec means what it says: "3" is no epoch count and "yes" no flag (pydantic's lax
    mode would convert both)."""
    errors = spec_errors(data)
    assert [error.path for error in errors] == [path], errors
    assert fragment in errors[0].msg


def test_a_misnamed_entry_is_the_one_error_of_its_options() -> None:
    """``model: resnet99`` once also called ``width`` and ``dropout`` unknown: options of
    the model the user meant."""
    errors = spec_errors(
        {
            "name": "x",
            "fixed": {"model": "resnet99"},
            "params": {"width": {"type": "int", "low": 8, "high": 16}},
        }
    )
    assert [error.path for error in errors] == ["fixed.model"], errors
    assert "unknown model 'resnet99'" in errors[0].msg


def test_an_empty_condition_is_refused() -> None:
    """``when: {optimizer: []}`` once made momentum silently never searched."""
    errors = spec_errors(
        with_params(
            optimizer={"type": "categorical", "choices": ["adam", "sgd"]},
            momentum={"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": []}},
        )
    )
    assert [error.path for error in errors] == ["params.momentum.when.optimizer"], errors
    assert "would never apply" in errors[0].msg


def test_a_flag_is_no_literal_number() -> None:
    """A strict ``Literal[1, 2]`` takes ``true`` (``True == 1``)."""
    errors = spec_errors(
        {"name": "x", "fixed": {"model": "mobilenet_v3_small", "stem_stride": True}}
    )
    assert [error.path for error in errors] == ["fixed.stem_stride"], errors
    assert "not true" in errors[0].msg


def test_a_study_stored_before_these_checks_still_runs() -> None:
    """Options are stored as written and parsed again by every worker: what submission
    refuses now, a worker still converts, so older studies keep running."""
    stored = StudySpec.model_validate_json(
        json.dumps(
            {
                "name": "old",
                "sampler": {"name": "tpe", "options": {"n_startup_trials": "3", "multivariate": 1}},
                "pruner": {"name": "median", "options": {"n_warmup_steps": "1"}},
                "dataset": {"source": "digits", "options": {"seed": "1"}},
            }
        )
    )
    sampler = build_sampler(stored.sampler.name, stored.sampler.options, seed=0)
    assert sampler._n_startup_trials == 3
    build_pruner(stored.pruner.name, stored.pruner.options)
    assert DATASETS.get("digits").parse_options(stored.dataset.options).seed == 1
    with pytest.raises(SpecError, match="valid integer"):
        validate_spec(stored.model_dump(mode="json"))


def test_whole_floats_and_exponent_strings_still_count_as_numbers() -> None:
    """YAML 1.1 reads ``1e-5`` (no dot) as a string; the spec reads it as the number."""
    text = (
        "name: x\nfixed: {epochs: 3.0, lr: 1}\n"
        "params:\n  weight_decay: {type: float, low: 1e-5, high: 1e-2}\n"
    )
    spec = validate_spec(parse_text(text))
    assert spec.fixed == {"epochs": 3.0, "lr": 1}
    assert spec.params["weight_decay"].low == 1e-5


@pytest.mark.parametrize(
    ("pruner", "epochs", "message"),
    [
        (
            {"name": "median", "options": {"n_warmup_steps": 2}},
            3,
            "2 leaves no epoch to prune at: trials train at most 3 epochs, the first check "
            "would come at epoch 3, and no pruner is asked after the last; use at most 1, or "
            "use pruner: none",
        ),
        (
            {"name": "successive_halving", "options": {"min_resource": 2}},
            2,
            "use at most 1, or use pruner: none",
        ),
        (
            {"name": "hyperband", "options": {"min_resource": 1}},
            1,
            "trials train at most 1 epoch, the first check would come at epoch 1, and no "
            "pruner is asked after the last; train more epochs, or use pruner: none",
        ),
    ],
)
def test_a_pruner_set_to_check_no_epoch_is_refused(
    pruner: dict[str, Any], epochs: int, message: str
) -> None:
    option = next(iter(pruner["options"]))
    [error] = spec_errors({"name": "x", "pruner": pruner, "fixed": {"epochs": epochs}})
    assert error.path == f"pruner.options.{option}"
    assert message in error.msg
    # One epoch more gives the pruner an epoch to judge.
    assert load_spec({"name": "x", "pruner": pruner, "fixed": {"epochs": epochs + 1}}).pruner


def test_a_hyperband_max_resource_past_the_last_epoch_is_refused() -> None:
    """Left alone once: ``max_resource: 100`` with 5 epochs was accepted, and the brackets
    whose first rung comes after epoch 5 (most of them) never pruned."""
    pruner = {"name": "hyperband", "options": {"max_resource": 100}}
    searched = {"epochs": {"type": "int", "low": 2, "high": 5}}

    [error] = spec_errors({"name": "x", "pruner": pruner, "params": searched})

    assert error.path == "pruner.options.max_resource"
    assert error.msg.startswith("100 is past the last epoch: trials train at most 5 epochs")
    assert "use at most 5, or auto" in error.msg
    fitting = {"name": "hyperband", "options": {"max_resource": 5}}
    assert load_spec({"name": "x", "pruner": fitting, "params": searched}).pruner


@pytest.mark.parametrize(
    ("pruner", "epochs", "path", "message"),
    [
        (
            {"name": "median"},
            1,
            "n_warmup_steps",
            "0 (its default) leaves no epoch to prune at: trials train at most 1 epoch",
        ),
        (
            {"name": "wilcoxon", "options": {"p_threshold": 1.0}},
            3,
            "n_startup_steps",
            "2 (its default) leaves no epoch to prune at: trials train at most 3 epochs, the "
            "first check would come at epoch 3, and no pruner is asked after the last; use "
            "at most 1, or use pruner: none",
        ),
        (  # wilcoxon compares two epochs: at 2 epochs no startup value can work
            {"name": "wilcoxon", "options": {"n_startup_steps": 0}},
            2,
            "n_startup_steps",
            "first check would come at epoch 2, and no pruner is asked after the last; train "
            "more epochs, or use pruner: none",
        ),
        (
            {
                "name": "successive_halving",
                "options": {"min_resource": 1, "reduction_factor": 2, "min_early_stopping_rate": 3},
            },
            4,
            "min_early_stopping_rate",
            "3 leaves no epoch to prune at: trials train at most 4 epochs, the first check "
            "would come at epoch 8, and no pruner is asked after the last; use at most 1",
        ),
        (  # 'auto' is estimated, but never below 1
            {"name": "successive_halving"},
            1,
            "min_resource",
            "auto (its default) leaves no epoch to prune at: trials train at most 1 epoch",
        ),
        (  # a whole number written as a float is run as one
            {"name": "median", "options": {"n_warmup_steps": 2.0}},
            3,
            "n_warmup_steps",
            "2 leaves no epoch to prune at",
        ),
    ],
)
def test_a_named_pruner_whose_defaults_check_no_epoch_is_refused(
    pruner: dict[str, Any], epochs: int, path: str, message: str
) -> None:
    """Found by a tester: only options written in the spec were checked; the same values
    left to their defaults were accepted, and the pruner silently never pruned."""
    [error] = spec_errors({"name": "x", "pruner": pruner, "fixed": {"epochs": epochs}})
    assert error.path == f"pruner.options.{path}"
    assert message in error.msg


def test_the_default_pruner_of_a_study_too_short_to_prune_is_no_mistake() -> None:
    assert load_spec({"name": "x", "fixed": {"epochs": 1}}).pruner is None


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({"name": "x", "budget": {"max_failed": BIG}}, "budget.max_failed", "2147483647"),
        ({"name": "x", "keep_weights": BIG}, "keep_weights", "from 1 to 2,147,483,647"),
        ({"name": "x", "warm_start": {"studies": [1, BIG]}}, "warm_start.studies", "[1]"),
        ({"name": "x", "warm_start": {"studies": [-1]}}, "warm_start.studies", "not a study id"),
        ({"name": "x", "warm_start": {"studies": "x"}}, "warm_start.studies", "nor 'auto'"),
        ({"name": "x", "warm_start": {"studies": []}}, "warm_start.studies", "no study given"),
        (
            {"name": "x", "dataset": {"source": "digits", "options": {"seed": BIG}}},
            "dataset.options.seed",
            "4294967295",
        ),
        (
            {"name": "x", "dataset": {"source": "digits", "options": {"seed": -1}}},
            "dataset.options.seed",
            "greater than or equal to 0",
        ),
        (
            {"name": "x", "sampler": {"name": "tpe", "options": {"n_ei_candidates": BIG}}},
            "sampler.options.n_ei_candidates",
            "1000000",
        ),
        (
            {"name": "x", "sampler": {"name": "nsga2", "options": {"population_size": 2**62}}},
            "sampler.options.population_size",
            "2147483647",
        ),
        (
            {"name": "x", "pruner": {"name": "median", "options": {"n_warmup_steps": BIG}}},
            "pruner.options.n_warmup_steps",
            "2147483647",
        ),
        (
            {
                "name": "x",
                "pruner": {"name": "successive_halving", "options": {"min_resource": BIG}},
            },
            "pruner.options.min_resource",
            "from 1 to 2147483647 nor 'auto'",
        ),
        (
            {
                "name": "x",
                "pruner": {
                    "name": "hyperband",
                    "options": {"min_resource": 100, "max_resource": 2},
                },
            },
            "pruner.options",
            "min_resource (100) is above max_resource (2)",
        ),
        (
            {"name": "x", "pruner": {"name": "threshold", "options": {"lower": float("nan")}}},
            "pruner.options.lower",
            "finite number",
        ),
    ],
)
def test_numbers_no_trial_could_use_are_refused(
    data: dict[str, Any], path: str, fragment: str
) -> None:
    """Accepted before, these failed every trial (an overflow, sklearn's seed range), or
    stored NaN as null, changing what the pruner does."""
    errors = spec_errors(data)
    assert [error.path for error in errors] == [path], errors
    assert fragment in errors[0].msg


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        (r'{"name": "x", "description": "a\ud800b"}', "description", "lone surrogate (\\ud800)"),
        (r'{"name": "x", "fixed": {"l\udfffr": 0.1}}', "fixed", "a key contains a lone"),
        ('name: x\ndescription: "a\\ud800"\n', "description", "lone surrogate"),
    ],
)
def test_lone_surrogates_are_refused_where_they_are(text: str, path: str, fragment: str) -> None:
    """No database column, file name or JSON encoder takes a lone surrogate: refused at
    parse time, not a 500 when stored."""
    with pytest.raises(SpecError) as raised:
        parse_text(text) if text.startswith("name:") else parse_json(text)
    errors = raised.value.errors
    assert [error.path for error in errors] == [path], errors
    assert fragment in errors[0].msg


def test_paired_surrogates_are_text() -> None:
    assert parse_json(r'{"description": "\ud83d\ude00"}') == {"description": "\U0001f600"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: x\nname: y\n", "duplicate key 'name'"),
        ("name: x\nbudget: {n_trials: 2, n_trials: 3}\n", "duplicate key 'n_trials'"),
        ("name: x\nfixed: {lr: .nan}\n", "finite number"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 16 levels (max_spec_depth)"),
        ("{" * 50 + "}" * 50, "nested deeper than 16 levels"),
        (
            "name: x\na: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(
                f"{key}: &{key} [{', '.join([f'*{previous}'] * 10)}]\n"
                for previous, key in zip("abcd", "bcde", strict=True)
            ),
            "more than 20000 values (max_spec_values)",
        ),
        ("name: x\ndescription: " + "a" * 5_000 + "\n", "longer than 4000 characters"),
        ('{"name": "x", "name": "y"}', "duplicate key 'name'"),
    ],
)
def test_hostile_documents_are_refused(text: str, fragment: str) -> None:
    errors = spec_errors(text)
    assert fragment in str(SpecError(errors))


@pytest.mark.parametrize(
    ("text", "found", "where"),
    [
        ("name: !!binary aGVsbG8=\n", "!!binary", "line 1, column 7"),
        ("name: x\nfixed: !!set {epochs, width}\n", "!!set", "line 2, column 8"),
        ("name: x\ndescription: !!timestamp 2001-12-14\n", "!!timestamp", "line 2, column 14"),
        ("name: !!str x\n", "!!str", "line 1, column 7"),
        ("name: x\nfixed: !!map {epochs: 1}\n", "!!map", "line 2, column 8"),
        ("!!map\nname: x\n", "!!map", "line 1, column 1"),
        ("name: x\nparams:\n  a: !!omap [b: 1]\n", "!!omap", "line 3, column 6"),
        ("name: x\ntags: !!seq [a]\n", "!!seq", "line 2, column 7"),
        ("name: !!python/object/apply:os.system [id]\n", "!!python/object/apply:os.system", ""),
        ("name: !custom x\n", "!custom", "line 1, column 7"),
        ("name: ! x\n", "found !)", "line 1, column 7"),
        ("%TAG !e! tag:example.com,2000:\n---\nname: !e!x x\n", "tag:example.com,2000:x", ""),
    ],
)
def test_explicit_tags_are_refused_with_their_place(text: str, found: str, where: str) -> None:
    [error] = spec_errors(text)
    assert error.path == "(spec)"
    assert "tags are not allowed" in error.msg
    assert found in error.msg and where in error.msg, error.msg


def test_implicit_scalars_still_resolve() -> None:
    data = parse_text("a: 12\nb: 0x1f\nc: .5\nd: ~\ne: true\nf: 1e-4\ng: '!!str'\nh: [x, {y: 1}]\n")
    assert data == {
        "a": 12,
        "b": 31,
        "c": 0.5,
        "d": None,
        "e": True,
        "f": 1e-4,
        "g": "!!str",
        "h": ["x", {"y": 1}],
    }


def test_json_parser_has_the_same_guards() -> None:
    from automl.spec import parse_json

    with pytest.raises(SpecError, match="duplicate key 'a'"):
        parse_json('{"a": 1, "a": 2}')
    with pytest.raises(SpecError, match="nested deeper"):
        parse_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SpecError, match="invalid JSON at line 1, column 2"):
        parse_json("{")
    assert parse_json('{"lr": 1e-3}') == {"lr": 1e-3}


def test_overlong_integers_and_wide_objects_are_refused_cheaply() -> None:
    from automl.spec import parse_json

    # More digits than Python converts is a ValueError, which once answered 500.
    with pytest.raises(SpecError, match="invalid JSON: Exceeds the limit"):
        parse_json('{"a": ' + "9" * 5_000 + "}")
    with pytest.raises(SpecError, match="invalid YAML/JSON: Exceeds the limit"):
        parse_text("a: " + "9" * 5_000)
    # Hexadecimal has no digit limit: the integer is read, and the limit names it.
    [error] = spec_errors("name: x\nbudget: {n_trials: 0x" + "f" * 5_000 + "}\n")
    assert error.path == "budget.n_trials"
    assert error.msg == "an integer over 64 bits is over the limit of 100,000 (max_trials)"
    # 80,000 keys fit in a 1 MB body; a duplicate check quadratic in them took minutes.
    wide = "{" + ",".join(f'"k{index}": 0' for index in range(80_000)) + ', "k7": 1}'
    with pytest.raises(SpecError, match="duplicate key 'k7'"):
        parse_json(wide)


def test_limits_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOML_LIMIT_MAX_PARAMS", "1")
    monkeypatch.setenv("AUTOML_LIMIT_MAX_CHOICES", "2")
    errors = spec_errors(
        with_params(
            optimizer={"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
            lr={"type": "float", "low": 0.01, "high": 0.1},
        )
    )
    assert {(e.path, e.msg) for e in errors} == {
        ("params", "2 is over the limit of 1 (max_params)"),
        ("params.optimizer.choices", "3 is over the limit of 2 (max_choices)"),
    }


def test_missing_pretrained_checkpoint_is_named_at_submit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOML_DATA_ROOT", str(tmp_path))
    errors = spec_errors({"name": "x", "fixed": {"pretrained": "weights/missing.safetensors"}})
    assert [e.path for e in errors] == ["fixed.pretrained"]
    assert "not found under the data root" in errors[0].msg
    errors = spec_errors({"name": "x", "fixed": {"pretrained": "../../etc/passwd.pt"}})
    assert [e.path for e in errors] == ["fixed.pretrained"]


@pytest.mark.parametrize(("given", "kept"), [(None, 3), (1, 1), (10, 10), ("all", "all")])
def test_keep_weights(given: Any, kept: Any) -> None:
    data: dict[str, Any] = {"name": "x"} if given is None else {"name": "x", "keep_weights": given}
    spec = load_spec(data)
    assert spec.keep_weights == kept
    # What the store keeps (without nulls) reads back the same.
    assert load_spec(json.loads(spec.model_dump_json(exclude_none=True))).keep_weights == kept


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "some", None])
def test_keep_weights_errors_name_the_field(bad: Any) -> None:
    [error] = spec_errors({"name": "x", "keep_weights": bad})
    assert error.path == "keep_weights"
    assert error.msg == f"{bad!r} is neither a whole number from 1 to 2,147,483,647 nor 'all'"


ENQUEUE_SPACE: dict[str, Any] = {
    "name": "x",
    "budget": {"n_trials": 3},
    "fixed": {"epochs": 2},
    "params": {
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        "width": {"type": "int", "low": 8, "high": 32, "step": 8},
    },
}


def enqueue_errors(space: dict[str, Any], configs: Any) -> dict[str, str]:
    """The spec errors of ``space`` with ``configs`` enqueued, message by path."""
    return {e.path: e.msg for e in spec_errors({**space, "enqueue": configs})}


def test_enqueued_configurations_are_kept_in_order() -> None:
    configs = [{"optimizer": "sgd", "lr": 0.01, "width": 16}, {"lr": 0.002}]
    spec = load_spec({**ENQUEUE_SPACE, "enqueue": configs})
    assert spec.enqueue == configs
    assert load_spec(json.loads(spec.model_dump_json(exclude_none=True))).enqueue == configs
    assert load_spec(ENQUEUE_SPACE).enqueue == []


def test_every_bad_enqueued_value_is_named() -> None:
    configs = [
        {"lr": 0.5, "width": 12},
        {"epochs": 3, "nope": 1},
        {"optimizer": "adamx", "width": 8.5},
        {"lr": "fast", "width": True},
    ]
    assert enqueue_errors(ENQUEUE_SPACE, configs) == {
        "enqueue[0].lr": "0.5 is outside [0.001, 0.1]",
        "enqueue[0].width": "12 is not on the grid 8 + k * 8",
        "enqueue[1].epochs": "'epochs' is fixed in the spec; searched params: lr, optimizer, width",
        "enqueue[1].nope": "'nope' is not a searched param; searched params: lr, optimizer, width",
        "enqueue[2].optimizer": "'adamx' is not one of ['adam', 'sgd']",
        "enqueue[2].width": "8.5 is not an integer",
        "enqueue[3].lr": "'fast' is not a number",
        "enqueue[3].width": "true is not a number",  # as JSON and YAML write it
        "enqueue": "4 configurations for a budget of 3 trials",
    }


@pytest.mark.parametrize("bad", ["lr=0.01", [1, 2], [{"lr": 0.01}, "x"]])
def test_enqueue_must_be_a_list_of_mappings(bad: Any) -> None:
    errors = spec_errors({**ENQUEUE_SPACE, "enqueue": bad})
    assert all(e.path.startswith("enqueue") for e in errors) and errors


def test_enqueued_values_are_judged_as_optuna_judges_them() -> None:
    space = {
        **ENQUEUE_SPACE,
        "budget": {"n_trials": 4},
        "params": {
            "dropout": {"type": "float", "low": 0.0, "high": 0.9, "step": 0.1},
            "width": {"type": "categorical", "choices": [8, 16]},
            "depth": {"type": "int", "low": 1, "high": 4},
        },
    }
    good = [{"dropout": 0.3}, {"dropout": 0.7, "width": 16.0}, {"depth": 2.0}]
    assert load_spec({**space, "enqueue": good}).enqueue == good
    bad = [
        {"dropout": 0.35, "width": True},
        {"depth": 10**400, "width": [8]},
        {"depth": 2.5, "width": {"a": 8}},
        {"dropout": float("nan"), "depth": float("inf"), "width": [True, None]},
    ]
    assert enqueue_errors(space, bad) == {
        "enqueue[0].dropout": "0.35 is not on the grid 0.0 + k * 0.1",
        "enqueue[0].width": "true is not one of [8, 16]",
        "enqueue[1].depth": "an integer over 64 bits is outside [1, 4]",
        "enqueue[1].width": "[8] is not one of [8, 16]",
        "enqueue[2].depth": "2.5 is not an integer",
        "enqueue[2].width": "{'a': 8} is not one of [8, 16]",
        "enqueue[3].dropout": "nan is outside [0.0, 0.9]",
        "enqueue[3].depth": "inf is outside [1, 4]",
        "enqueue[3].width": "[true, null] is not one of [8, 16]",  # as a spec writes them
    }


def test_an_enqueued_param_its_own_parents_rule_out_is_named() -> None:
    space = {
        "name": "x",
        "params": {
            "model": {"type": "categorical", "choices": ["cnn", "resnet18"]},
            "width": {"type": "int", "low": 8, "high": 32},  # applies to cnn only
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgd"}},
        },
    }
    fine = [{"optimizer": "sgd", "momentum": 0.7, "model": "cnn", "width": 8}, {"model": "cnn"}]
    assert load_spec({**space, "enqueue": fine}).enqueue == fine
    bad = [
        {"optimizer": "adam", "momentum": 0.7},
        {"model": "resnet18", "width": 16},
        {"optimizer": ["sgd"], "momentum": 0.7},
        {"momentum": 0.7},  # the sampler would pick the optimizer, and adam drops it
        {"width": 16, "optimizer": "sgd"},
    ]
    assert enqueue_errors(space, bad) == {
        "enqueue[0].momentum": "applies only when optimizer is one of ['sgd'], not 'adam'",
        "enqueue[1].width": "applies only when model is one of ['cnn'], not 'resnet18'",
        "enqueue[2].optimizer": "['sgd'] is not one of ['adam', 'sgd']",
        "enqueue[2].momentum": "applies only when optimizer is one of ['sgd'], not ['sgd']",
        "enqueue[3].momentum": "applies only when optimizer is one of ['sgd']: give optimizer too",
        "enqueue[4].width": "applies only when model is one of ['cnn']: give model too",
    }


def test_a_spec_enqueues_at_most_a_thousand_configurations() -> None:
    many = [{"lr": 0.01}] * 1001
    errors = spec_errors({**ENQUEUE_SPACE, "budget": {"n_trials": 2000}, "enqueue": many})
    assert [e.path for e in errors] == ["enqueue"]
    assert "at most 1000" in errors[0].msg


def test_enqueued_values_on_huge_grids_and_yaml_integers_get_messages() -> None:
    space = {
        "name": "x",
        "budget": {"n_trials": 4},
        "params": {
            "seed": {"type": "int", "low": 0, "high": 2**40, "step": 2},
            "div_factor": {"type": "float", "low": 1.0, "high": 1e308, "step": 1e-300},
        },
        "fixed": {"scheduler": "one_cycle"},
    }
    bad = [{"seed": 2**39 + 1}, {"div_factor": 1e308}]
    assert enqueue_errors(space, bad) == {
        "enqueue[0].seed": f"{2**39 + 1} is not on the grid 0 + k * 2",
        "enqueue[1].div_factor": "1e+308 is not on the grid 1.0 + k * 1e-300",
    }
    assert load_spec({**space, "enqueue": [{"seed": 2**39}]}).enqueue == [{"seed": 2**39}]
    huge = "0x" + "f" * 4000  # YAML reads hex integers of any size; their repr cannot
    text = "name: x\nbudget: {n_trials: 2}\nparams: {seed: {type: int, low: 0, high: 9}}\n"
    errors = spec_errors(parse_text(text + f"enqueue: [{{seed: {huge}}}]\n"))
    assert [(e.path, e.msg) for e in errors] == [
        ("enqueue[0].seed", "an integer over 64 bits is outside [0, 9]")
    ]


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ({"fixed": {"precision": "half"}}, "fixed.precision"),
        (
            {"params": {"precision": {"type": "categorical", "choices": ["fp32", "half"]}}},
            "params.precision.choices[1]",
        ),
    ],
)
def test_an_unknown_precision_is_named(where: dict[str, Any], path: str) -> None:
    [error] = spec_errors({"name": "x", **where})
    assert (error.path, error.msg) == (
        path,
        """Input should be 'auto', 'fp32' or 'bf16' (got "half")""",
    )
    assert load_spec({"name": "x", "fixed": {"precision": "bf16"}}).fixed["precision"] == "bf16"


@pytest.mark.parametrize(
    ("fixed", "path", "message"),
    [
        ({"restore_best": "maybe"}, "fixed.restore_best", "valid boolean"),
        ({"imbalance": "gan", "gan_seed": -1}, "fixed.gan_seed", "greater than or equal to 0"),
        ({"imbalance": "gan", "gan_seed": 2**40}, "fixed.gan_seed", "less than or equal to"),
        ({"seed": 2**53}, "fixed.seed", "less than or equal to 9007199254740991"),
        ({"seed": -1}, "fixed.seed", "greater than or equal to 0"),
        ({"precise_bn": -1}, "fixed.precise_bn", "greater than or equal to 0"),
        ({"precise_bn": "all"}, "fixed.precise_bn", "valid integer"),
        ({"precise_bn": 10**7}, "fixed.precise_bn", "less than or equal to 1000000"),
    ],
)
def test_bad_restore_best_and_seed_values_are_named(
    fixed: dict[str, Any], path: str, message: str
) -> None:
    [error] = spec_errors({"name": "x", "fixed": fixed})
    assert error.path == path and message in error.msg


def test_a_searched_seed_beyond_what_torch_takes_is_named() -> None:
    # Beyond 2**53 Optuna's float storage rounds a searched seed (and torch.manual_seed
    # refuses one above 2**64 - 1: such a seed once failed every trial at training time).
    searched = {"seed": {"type": "int", "low": 0, "high": 2**64}}
    [error] = spec_errors({"name": "x", "params": searched})
    assert error.path == "params.seed.high" and "less than or equal to" in error.msg
    assert load_spec({"name": "x", "fixed": {"seed": 2**53 - 1}}).fixed["seed"] == 2**53 - 1


def test_a_searched_precise_bn_beyond_its_bound_is_named() -> None:
    searched = {"precise_bn": {"type": "int", "low": 0, "high": 2_000_000}}
    [error] = spec_errors({"name": "x", "params": searched})
    assert error.path == "params.precise_bn.high" and "less than or equal to" in error.msg


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ({"fixed": {"batch_size": 1}}, "fixed.batch_size"),
        (
            {"params": {"batch_size": {"type": "int", "low": 1, "high": 64}}},
            "params.batch_size.low",
        ),
        (
            {"params": {"batch_size": {"type": "categorical", "choices": [32, 1]}}},
            "params.batch_size.choices[1]",
        ),
    ],
)
def test_a_batch_size_of_one_is_refused(where: dict[str, Any], path: str) -> None:
    # Batch norm cannot train on a batch of one: such a batch size failed every trial of
    # resnet18, mobilenet_v3_small, efficientnet_b0 and fast_resnet at training time.
    [error] = spec_errors({"name": "x", **where})
    assert error.path == path and "greater than or equal to 2" in error.msg
    assert load_spec({"name": "x", "fixed": {"batch_size": 2}}).fixed["batch_size"] == 2


def test_a_trial_recorded_with_a_batch_of_one_still_loads() -> None:
    # Before batches of one were refused, a cnn or rnn without batch norm trained with
    # one: its recorded configuration must still serve its model.
    assert stored_config({"batch_size": 1}).batch_size == 1
    with pytest.raises(pydantic.ValidationError):
        stored_config({"batch_size": 0})
    # A study stored with it (its trials draw 1) still builds its trials' configurations.
    stored = StudySpec.model_validate({"name": "old", "fixed": {"batch_size": 1}})
    assert build_config(stored, {}).batch_size == 1


@pytest.mark.parametrize(
    ("fixed", "params", "path", "message"),
    [
        (
            {"sgd.momentum": 0.5},
            {"momentum": {"type": "float", "low": 0.5, "high": 0.9}},
            "params.momentum",
            "sets momentum of sgd as 'sgd.momentum' does; keep one",
        ),
        (
            {},
            {
                "momentum": {"type": "float", "low": 0.5, "high": 0.9},
                "sgd.momentum": {"type": "float", "low": 0.1, "high": 0.2},
            },
            "params.sgd.momentum",
            "sets momentum of sgd as 'momentum' does; keep one",
        ),
        ({"width": 8, "cnn.width": 16}, {}, "fixed.cnn.width", "sets width of cnn as 'width'"),
    ],
)
def test_one_option_named_twice_is_refused(
    fixed: dict[str, Any], params: dict[str, Any], path: str, message: str
) -> None:
    # Only one of the two names reached the trial; the other was silently ignored.
    optimizer = {"type": "categorical", "choices": ["sgd", "adam"]}
    [error] = spec_errors(
        {"name": "x", "fixed": fixed, "params": {"optimizer": optimizer, **params}}
    )
    assert error.path == path and message in error.msg
    fine = {"momentum": {"type": "float", "low": 0.5, "high": 0.9}, "optimizer": optimizer}
    assert load_spec({"name": "x", "fixed": {"adam.beta1": 0.9}, "params": fine}).params


def test_a_choice_that_is_no_scalar_gets_one_message() -> None:
    errors = spec_errors(
        {
            "name": "x",
            "params": {
                "dropout": {"type": "categorical", "choices": [0, 0.5, None]},
                "lr": {"type": "categorical", "choices": [float("nan"), [1]]},
            },
        }
    )
    assert {e.path: e.msg for e in errors} == {
        "params.dropout.choices[2]": "a choice is a string, number or boolean, not null",
        "params.lr.choices[0]": "a choice must be a finite number, not nan",
        "params.lr.choices[1]": "a choice is a string, number or boolean, not list",
    }


def test_loss_settings_that_imbalance_focal_replaces_are_refused() -> None:
    fixed = {"imbalance": "focal", "loss": "focal", "gamma": 0.5, "label_smoothing": 0.2}
    errors = spec_errors({"name": "x", "fixed": fixed})
    assert [e.path for e in errors] == ["fixed.loss", "fixed.gamma", "fixed.label_smoothing"]
    assert all("imbalance: focal replaces the loss" in e.msg for e in errors)
    # Searched, the strategy may be another one, which uses the loss.
    searched = {"imbalance": {"type": "categorical", "choices": ["focal", "class_weights"]}}
    fixed = {"loss": "focal", "gamma": 0.5}
    assert load_spec({"name": "x", "fixed": fixed, "params": searched}).fixed == fixed
    assert load_spec({"name": "x", "fixed": {"imbalance": "focal", "focal_gamma": 1.0}})


# --- found by exploratory testing ----------------------------------------------------------


def test_cmaes_with_several_objectives_is_refused_at_submit() -> None:
    # Optuna's CmaEsSampler fails every trial of a study with several objectives.
    objectives = [{"metric": "accuracy"}, {"metric": "loss"}]
    [error] = spec_errors({"name": "x", "objectives": objectives, "sampler": {"name": "cmaes"}})
    assert error.path == "sampler.name"
    assert error.msg.startswith("cmaes optimizes one objective")
    assert "samplers that take several: auto, brute_force, gp, grid, nsga2" in error.msg
    assert "cmaes" not in error.msg.split(":", 1)[1]
    assert load_spec({"name": "x", "sampler": {"name": "cmaes"}}).sampler.name == "cmaes"


def test_a_gp_study_of_more_trials_than_gp_can_model_is_refused_at_submit() -> None:
    """Found by a tester: gp refits to every completed trial before each new one (cubic):
    a trial took 8 s of CPU at 1,000 trials and 60 s at 2,000 (24 s and 4 minutes on a
    loaded 2-core machine), and a 20,000-trial study was accepted."""
    spec = {"name": "x", "sampler": {"name": "gp"}}
    [error] = spec_errors({**spec, "budget": {"n_trials": 1001}})

    assert error.path == "budget.n_trials"
    assert error.msg.startswith("sampler gp refits its model to every completed trial")
    assert error.msg.endswith("at most 1,000 trials; use tpe for a longer search")
    assert load_spec({**spec, "budget": {"n_trials": 1000}}).budget.n_trials == 1000
    assert load_spec({"name": "x", "budget": {"n_trials": 1001}}).budget.n_trials == 1001


def test_an_option_of_an_entry_its_conditional_selector_never_takes_is_refused() -> None:
    # adam trains only where the optimizer is not searched (rnn), with its default beta1:
    # beta1 was never sampled, yet the spec was accepted.
    params = {
        "model": {"type": "categorical", "choices": ["cnn", "rnn"]},
        "optimizer": {"type": "categorical", "choices": ["sgd"], "when": {"model": "cnn"}},
        "beta1": {"type": "float", "low": 0.5, "high": 0.6},
    }
    [error] = spec_errors({"name": "x", "params": params})
    assert error.path == "params.beta1"
    assert error.msg == (
        "'beta1' belongs to adam, not a choice of 'optimizer' (choices: sgd), so it never applies"
    )
    params["optimizer"]["choices"] = ["sgd", "adam"]
    assert load_spec({"name": "x", "params": params}).conditions("beta1") == {"optimizer": ["adam"]}


IMBALANCE_AND_LOSS = {
    "imbalance": {"type": "categorical", "choices": ["none", "focal"]},
    "loss": {"type": "categorical", "choices": ["cross_entropy", "focal"]},
    "gamma": {"type": "float", "low": 0.0, "high": 3.0},
    "label_smoothing": {"type": "float", "low": 0.0, "high": 0.2},
}


def test_the_loss_applies_only_where_a_searched_imbalance_is_not_focal() -> None:
    # imbalance: focal trains with its own loss: the loss params would be sampled and ignored.
    spec = load_spec({"name": "x", "params": IMBALANCE_AND_LOSS})
    assert spec.conditions("loss") == {"imbalance": ["none"]}
    assert spec.conditions("gamma") == {"loss": ["focal"], "imbalance": ["none"]}
    assert spec.conditions("label_smoothing") == {"imbalance": ["none"]}
    assert spec.param_order().index("imbalance") < spec.param_order().index("loss")
    # A study stored before this rule keeps its conditions.
    stored = spec.model_dump(mode="json") | {"space_rules": 2}
    assert StudySpec.model_validate_json(json.dumps(stored)).conditions("loss") == {}


def test_a_loss_param_that_only_focal_imbalances_would_use_is_refused() -> None:
    explicit = {**IMBALANCE_AND_LOSS["gamma"], "when": {"imbalance": "focal"}}
    [error] = spec_errors({"name": "x", "params": {**IMBALANCE_AND_LOSS, "gamma": explicit}})
    assert error.path == "params.gamma"
    assert error.msg == (
        "imbalance: focal replaces the loss, and 'gamma' is searched only where imbalance "
        "is one of ['focal'], so 'gamma' never applies"
    )
    only_focal = {"type": "categorical", "choices": ["focal"]}
    params = {**IMBALANCE_AND_LOSS, "imbalance": only_focal}
    errors = spec_errors({"name": "x", "params": params})
    assert [e.path for e in errors] == ["params.loss", "params.gamma", "params.label_smoothing"]
    assert all("replaces the loss (set its focal_gamma" in e.msg for e in errors), errors


def test_warmup_beside_a_scheduler_that_warms_up_by_itself_is_refused() -> None:
    # Found by exploratory testing: one_cycle ignores warmup_epochs, which was accepted,
    # sampled and recorded all the same.
    message = "scheduler one_cycle warms up by itself, so warmup_epochs would be ignored"
    [error] = spec_errors({"name": "x", "fixed": {"scheduler": "one_cycle", "warmup_epochs": 1.0}})
    assert (error.path, error.msg) == ("fixed.warmup_epochs", message)
    warmup = {"type": "float", "low": 0.0, "high": 2.0}
    [error] = spec_errors(
        {"name": "x", "fixed": {"scheduler": "one_cycle"}, "params": {"warmup_epochs": warmup}}
    )
    assert (error.path, error.msg) == ("params.warmup_epochs", message)
    schedulers = {"type": "categorical", "choices": ["one_cycle", "cosine"]}
    only_one_cycle = {**warmup, "when": {"scheduler": "one_cycle"}}
    [error] = spec_errors(
        {"name": "x", "params": {"scheduler": schedulers, "warmup_epochs": only_one_cycle}}
    )
    assert error.msg == (
        "every scheduler among ['one_cycle'] warms up by itself, so 'warmup_epochs' never applies"
    )


def test_decay_norm_and_bias_without_weight_decay_is_refused() -> None:
    split = {"decay_norm_and_bias": False}
    [error] = spec_errors({"name": "x", "fixed": split})
    assert (error.path, error.msg) == (
        "fixed.decay_norm_and_bias",
        "weight_decay is 0 unless set, so decay_norm_and_bias would be ignored; set or "
        "search weight_decay, or drop it",
    )
    [error] = spec_errors({"name": "x", "fixed": {**split, "weight_decay": 0}})
    assert error.msg.startswith("weight_decay is fixed at 0, so decay_norm_and_bias")
    searched = {"decay_norm_and_bias": {"type": "categorical", "choices": [True, False]}}
    [error] = spec_errors({"name": "x", "params": searched})
    assert error.path == "params.decay_norm_and_bias"
    decay = {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}
    spec = load_spec({"name": "x", "fixed": {**split, "weight_decay": 0.05}})
    assert spec.fixed["decay_norm_and_bias"] is False
    load_spec({"name": "x", "fixed": split, "params": {"weight_decay": decay}})


def test_warmup_is_searched_only_where_the_scheduler_does_not_warm_up_by_itself() -> None:
    schedulers = {"type": "categorical", "choices": ["one_cycle", "cosine", "linear"]}
    params = {"scheduler": schedulers, "warmup_epochs": {"type": "float", "low": 0.0, "high": 2.0}}
    spec = load_spec({"name": "x", "params": params})
    assert spec.conditions("warmup_epochs") == {"scheduler": ["cosine", "linear"]}
    assert spec.param_order() == ["scheduler", "warmup_epochs"]
    stored = spec.model_dump(mode="json") | {"space_rules": 4}
    assert StudySpec.model_validate_json(json.dumps(stored)).conditions("warmup_epochs") == {}


def test_a_conditional_imbalance_implies_nothing_for_the_loss() -> None:
    """Where a conditional imbalance does not apply, no strategy trains and the loss
    counts: a condition on imbalance would never let the loss be sampled there."""
    model = {"type": "categorical", "choices": ["cnn", "rnn"]}
    only_focal = {"type": "categorical", "choices": ["focal"], "when": {"model": "cnn"}}
    spec = load_spec(
        {"name": "x", "params": {**IMBALANCE_AND_LOSS, "imbalance": only_focal, "model": model}}
    )
    assert spec.conditions("label_smoothing") == {}
    on_the_loss = {"type": "categorical", "choices": ["none", "focal"], "when": {"loss": "focal"}}
    spec = load_spec({"name": "x", "params": {**IMBALANCE_AND_LOSS, "imbalance": on_the_loss}})
    assert spec.conditions("loss") == {}  # no cycle imbalance -> loss -> imbalance


def test_refit_on_a_dataset_without_test_split_is_refused_at_submit() -> None:
    [error] = spec_errors({"name": "x", "refit": True, "dataset": {"source": "digits"}})
    assert error.path == "refit"
    assert error.msg == (
        "needs a test split to score the refit on, and this dataset has none: set "
        "dataset.options.test_fraction above 0"
    )
    dataset = {"source": "digits", "options": {"test_fraction": 0.2}}
    assert load_spec({"name": "x", "refit": True, "dataset": dataset}).refit


def _image_folder(root: Path, name: str) -> str:
    """A folder of two classes of one 4x4 PNG each, under ``root``."""
    from PIL import Image

    for label in ("a", "b"):
        (root / name / label).mkdir(parents=True)
        Image.new("L", (4, 4), 0 if label == "a" else 255).save(root / name / label / "0.png")
    return name


def test_refit_on_an_image_folder_needs_a_test_path_or_fraction(data_root: Path) -> None:
    options = {"path": _image_folder(data_root, "train"), "size": 4}
    spec = {"name": "x", "refit": True, "dataset": {"source": "image_folder", "options": options}}
    [error] = spec_errors(spec)
    assert error.path == "refit"
    assert error.msg.endswith(
        "set dataset.options.test_fraction above 0 or test_path (test data laid out as path)"
    )
    options["test_path"] = _image_folder(data_root, "test")
    assert load_spec(spec).refit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name: "1e5"\n', {"name": "1e5"}),
        ("name: '12e4'\n", {"name": "12e4"}),
        ('{"name": "12e4"}', {"name": "12e4"}),
        ('dataset: {options: {path: "1e3"}}\n', {"dataset": {"options": {"path": "1e3"}}}),
        ("lr: 1e-3\nn: [2E+2, '3e1']\n", {"lr": 1e-3, "n": [200.0, "3e1"]}),
    ],
)
def test_only_plain_yaml_exponent_scalars_become_numbers(text: str, expected: Any) -> None:
    assert parse_text(text) == expected


def test_json_strings_that_look_like_exponents_stay_strings() -> None:
    assert parse_json('{"name": "12e4", "lr": 1e-3}') == {"name": "12e4", "lr": 1e-3}
    assert load_spec('name: "1e5"\n').name == "1e5"
    assert validate_spec(parse_json('{"name": "12e4"}')).name == "12e4"


def test_a_when_value_is_a_choice_as_optuna_sees_it() -> None:
    # True and 1 are not one choice: {batch_norm: 1} once counted as batch_norm: true.
    batch_norm = {"type": "categorical", "choices": [True, False]}
    dropout = {"type": "float", "low": 0.0, "high": 0.5, "when": {"batch_norm": 1}}
    [error] = spec_errors({"name": "x", "params": {"batch_norm": batch_norm, "dropout": dropout}})
    assert error.path == "params.dropout.when.batch_norm"
    assert error.msg == "1 is not a choice of 'batch_norm'; valid choices: true, false"
    dropout["when"] = {"batch_norm": [True, 1]}
    [error] = spec_errors({"name": "x", "params": {"batch_norm": batch_norm, "dropout": dropout}})
    assert error.msg == "1 is not a choice of 'batch_norm'; valid choices: true, false"
    width = {"type": "categorical", "choices": [16, 32]}
    dropout["when"] = {"width": 16.0}  # 16 and 16.0 are one choice
    assert load_spec({"name": "x", "params": {"width": width, "dropout": dropout}})


@pytest.mark.parametrize(
    ("params", "refused", "message"),
    [
        (
            {
                "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
                "loss": {
                    "type": "categorical",
                    "choices": ["cross_entropy", "focal"],
                    "when": {"optimizer": "sgd"},
                },
                "gamma": {"type": "float", "low": 1, "high": 2, "when": {"optimizer": "adam"}},
            },
            "gamma",
            "'gamma' applies only where optimizer is one of ['adam'], but its parent 'loss' is "
            "searched only where optimizer is one of ['sgd'], so it never applies",
        ),
        (
            {
                "model": {"type": "categorical", "choices": ["cnn", "rnn"]},
                "optimizer": {
                    "type": "categorical",
                    "choices": ["adam", "sgd"],
                    "when": {"model": "cnn"},
                },
                "momentum": {"type": "float", "low": 0.1, "high": 0.9, "when": {"model": "rnn"}},
            },
            "momentum",
            "'momentum' applies only where model is one of ['rnn'], but its parent 'optimizer' "
            "is searched only where model is one of ['cnn'], so it never applies",
        ),
    ],
    ids=["implied-parent", "explicit-parent"],
)
def test_a_param_excluded_by_its_parents_conditions_is_refused(
    params: dict[str, Any], refused: str, message: str
) -> None:
    """Found by a tester: accepted, then never sampled (its entry trained with the
    default), while ``enqueue`` already refused such a configuration."""
    errors = spec_errors({"name": "x", "params": params})
    assert [(error.path, error.msg) for error in errors] == [(f"params.{refused}", message)]


def test_color_options_of_rgb_images_alone_are_refused_on_a_grayscale_dataset(
    data_root: Path,
) -> None:
    """Found by a tester: saturation and hue of color_jitter on grayscale images were
    accepted, recorded in every trial's configuration, and did nothing."""
    jitter = {"color_jitter.p": 1.0, "color_jitter.hue": 0.2, "color_jitter.saturation": 0}
    searched = {"color_jitter.saturation": {"type": "float", "low": 0.1, "high": 0.5}}
    folder = {"path": _image_folder(data_root, "shapes"), "size": 4, "channels": "grayscale"}
    gray_folder = {"source": "image_folder", "options": folder}
    rgb_folder = {"source": "image_folder", "options": {**folder, "channels": "rgb"}}

    [fixed] = spec_errors({"name": "x", "fixed": jitter})
    [param] = spec_errors({"name": "x", "fixed": {"color_jitter.p": 1.0}, "params": searched})
    [folder_error] = spec_errors({"name": "x", "dataset": gray_folder, "fixed": jitter})

    assert fixed.path == "fixed.color_jitter.hue"  # saturation 0 changes nothing either way
    assert fixed.msg == (
        "hue of color_jitter changes only RGB images, and dataset 'digits' is grayscale, "
        "so it would be ignored"
    )
    assert param.path == "params.color_jitter.saturation"
    assert folder_error.path == "fixed.color_jitter.hue"
    assert "dataset 'image_folder' is grayscale" in folder_error.msg
    assert load_spec({"name": "x", "dataset": rgb_folder, "fixed": jitter}).fixed == jitter
    assert load_spec({"name": "x", "fixed": {"color_jitter.p": 1.0}})  # defaults: no error
    channels = {name: DATASETS.get(name).options.channels_of({}) for name in DATASETS.names()}
    assert channels["mnist"] == channels["fashion_mnist"] == channels["digits"] == 1
    assert channels["cifar10"] == channels["cifar100"] == channels["image_folder"] == 3


def test_a_plugin_dataset_whose_options_tell_no_channels_still_validates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review: a plugin's dataset options may be a bare EntryOptions (no ``channels_of``):
    every spec naming it raised AttributeError (a 500 through the API)."""
    from automl.registry import EntryOptions

    class PluginOptions(EntryOptions):
        """Options of a plugin's dataset."""

    digits = DATASETS.get("digits")
    plugin = dataclasses.replace(digits, name="plugin_data", options=PluginOptions)
    monkeypatch.setitem(DATASETS._entries, "plugin_data", plugin)
    jitter = {"color_jitter.p": 1.0, "color_jitter.hue": 0.2}

    spec = load_spec({"name": "x", "dataset": {"source": "plugin_data"}, "fixed": jitter})

    assert spec.dataset.source == "plugin_data"


def test_the_schemas_defaults_are_what_a_spec_that_leaves_them_out_gets() -> None:
    """Found by a tester: clients generated from the OpenAPI schema send every default it
    names, and ``space_rules`` said 1 where a submission without it gets the latest rules:
    such a client's studies were read by the oldest rules, without a word."""
    properties = StudySpec.model_json_schema()["properties"]
    defaults = {name: field["default"] for name, field in properties.items() if "default" in field}

    assert defaults["space_rules"] > 1
    assert validate_spec({"name": "x", **defaults}) == validate_spec({"name": "x"})


@pytest.mark.parametrize(
    ("fixed", "path", "message"),
    [
        (
            {"epochs": 1, "warmup_epochs": 5},
            "fixed.warmup_epochs",
            "trials train at most 1 epoch, so a warmup of 5 epochs would end every one "
            "before the learning rate reaches lr; use less than 1",
        ),
        (
            {"epochs": 3, "patience": 3},
            "fixed.patience",
            "trials train at most 3 epochs, so a patience of 3 could never stop one early; "
            "use less, or 0",
        ),
    ],
)
def test_a_fixed_patience_or_warmup_past_the_last_epoch_is_refused(
    fixed: dict[str, Any], path: str, message: str
) -> None:
    """Found by a tester: they ran without a word, while pruner settings that could never
    prune are refused."""
    [error] = spec_errors({"name": "x", "fixed": fixed})
    assert (error.path, error.msg) == (path, message)
    searched = {"epochs": {"type": "int", "low": 2, "high": 8}}
    assert load_spec({"name": "x", "fixed": {"patience": 3}, "params": searched})
