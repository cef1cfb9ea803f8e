"""Tests of spec params <-> Optuna: distributions, conditional suggestion, configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from automl.space import build_config, is_active, suggest, to_distribution
from automl.spec import CategoricalParam, FloatParam, IntParam, StudySpec, load_spec
from automl.train import TrialConfig
from automl.train.trial_config import flat_values

DIGITS_QUICK = Path(__file__).resolve().parents[1] / "search_spaces" / "digits_quick.yaml"
N_TRIALS = 60


def random_study(seed: int = 0) -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))


def spec_with(params: dict[str, Any], **extra: Any) -> StudySpec:
    return load_spec({"name": "space", "params": params, **extra})


CONDITIONAL = {
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "momentum": {"type": "float", "low": 0.5, "high": 0.8, "when": {"optimizer": "sgd"}},
}

# Child listed before its parent, grandchild before both: suggest must order them.
NESTED = {
    "warmup_epochs": {"type": "float", "low": 0.5, "high": 2.0, "when": {"scheduler": "cosine"}},
    "scheduler": {
        "type": "categorical",
        "choices": ["cosine", "step"],
        "when": {"optimizer": "sgd"},
    },
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
}


# --- to_distribution -----------------------------------------------------------------------


def test_categorical_distribution() -> None:
    param = CategoricalParam(type="categorical", choices=["adam", "sgd"])
    assert to_distribution(param) == CategoricalDistribution(["adam", "sgd"])


def test_float_distribution() -> None:
    param = FloatParam(type="float", low=1e-4, high=0.1, log=True)
    assert to_distribution(param) == FloatDistribution(1e-4, 0.1, log=True)


def test_float_distribution_with_step() -> None:
    param = FloatParam(type="float", low=0.0, high=0.5, step=0.25)
    assert to_distribution(param) == FloatDistribution(0.0, 0.5, step=0.25)


def test_int_distribution_casts_bounds_and_step() -> None:
    param = IntParam(type="int", low=16.0, high=48.0, step=16.0)
    distribution = to_distribution(param)
    assert distribution == IntDistribution(16, 48, step=16)
    assert isinstance(distribution, IntDistribution)
    assert all(isinstance(v, int) for v in (distribution.low, distribution.high, distribution.step))


def test_int_distribution_defaults_to_step_one() -> None:
    assert to_distribution(IntParam(type="int", low=1, high=8, log=True)) == IntDistribution(
        1, 8, log=True, step=1
    )


# --- is_active -----------------------------------------------------------------------------


def test_is_active() -> None:
    spec = spec_with(
        {
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
            "lr": {
                "type": "float",
                "low": 0.1,
                "high": 0.9,
                "when": {"optimizer": ["sgd", "rmsprop"]},
            },
            "dropout": {"type": "float", "low": 0.1, "high": 0.5},
        }
    )
    assert is_active(spec, "lr", {"optimizer": "sgd"})
    assert is_active(spec, "lr", {"optimizer": "rmsprop"})
    assert not is_active(spec, "lr", {"optimizer": "adam"})
    assert not is_active(spec, "lr", {})
    assert is_active(spec, "dropout", {})


def test_is_active_needs_every_condition() -> None:
    spec = spec_with(
        {
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "scheduler": {"type": "categorical", "choices": ["cosine", "step"]},
            "lr": {
                "type": "float",
                "low": 0.1,
                "high": 0.9,
                "when": {"optimizer": "sgd", "scheduler": "cosine"},
            },
        }
    )
    assert is_active(spec, "lr", {"optimizer": "sgd", "scheduler": "cosine"})
    assert not is_active(spec, "lr", {"optimizer": "sgd", "scheduler": "step"})
    assert not is_active(spec, "lr", {"optimizer": "sgd"})


def test_entry_options_are_implicitly_conditional_on_their_entry() -> None:
    spec = spec_with(
        {
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
            "momentum": {"type": "float", "low": 0.5, "high": 0.9},
            "nesterov": {"type": "categorical", "choices": [True, False]},
            "beta1": {"type": "float", "low": 0.8, "high": 0.95},
        }
    )
    assert spec.conditions("momentum") == {"optimizer": ["rmsprop", "sgd"]}
    assert spec.conditions("nesterov") == {"optimizer": ["sgd"]}
    assert is_active(spec, "beta1", {"optimizer": "adam"})
    assert not is_active(spec, "beta1", {"optimizer": "sgd"})
    study = random_study(0)
    for _ in range(30):
        trial = study.ask()
        config = suggest(trial, spec)
        chosen = trial.params["optimizer"]
        assert ("momentum" in trial.params) == (chosen in ("sgd", "rmsprop"))
        assert ("beta1" in trial.params) == (chosen == "adam")
        for name in set(trial.params) - {"optimizer"}:
            assert config.optimizer.options[name] == trial.params[name]


# --- suggest -------------------------------------------------------------------------------


def test_suggest_without_params_gives_defaults() -> None:
    trial = random_study().ask()
    config = suggest(trial, load_spec({"name": "empty"}))
    assert config == TrialConfig()
    assert trial.params == {}


def test_suggest_digits_quick() -> None:
    spec = load_spec(DIGITS_QUICK)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        trial = study.ask()
        config = suggest(trial, spec)
        assert isinstance(config, TrialConfig)
        values = flat_values(config)
        assert (config.epochs, config.batch_size, config.scheduler.name) == (6, 64, "cosine")
        assert config.dataset.source == "digits"
        assert config.dataset.options == {"val_fraction": 0.2, "seed": 0}
        assert config.optimizer.name in ("adam", "sgd")
        assert 1e-3 <= config.lr <= 3e-2
        assert config.model.options["width"] in (16, 32, 48)
        assert 0.0 <= config.model.options["dropout"] <= 0.3
        for name, value in trial.params.items():
            assert values[name] == value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conditional_param_only_suggested_when_parent_matches(seed: int) -> None:
    spec = spec_with(CONDITIONAL)
    study = random_study(seed)
    optimizers = set()
    for _ in range(N_TRIALS):
        trial = study.ask()
        config = suggest(trial, spec)
        optimizer = trial.params["optimizer"]
        optimizers.add(optimizer)
        assert ("momentum" in trial.params) == (optimizer == "sgd")
        assert ("momentum" in trial.distributions) == (optimizer == "sgd")
        if optimizer == "sgd":
            assert 0.5 <= config.optimizer.options["momentum"] <= 0.8
            assert config.optimizer.options["momentum"] == trial.params["momentum"]
        else:
            assert "momentum" not in config.optimizer.options  # adam has none
    assert optimizers == {"adam", "sgd"}


def test_conditional_param_with_tpe_sampler() -> None:
    spec = spec_with(CONDITIONAL)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    for index in range(15):
        trial = study.ask()
        suggest(trial, spec)
        assert ("momentum" in trial.params) == (trial.params["optimizer"] == "sgd")
        study.tell(trial, float(index))


def test_nested_conditions_grandchild() -> None:
    spec = spec_with(NESTED)
    study = random_study(3)
    seen = set()
    for _ in range(N_TRIALS):
        trial = study.ask()
        config = suggest(trial, spec)
        params = trial.params
        is_sgd = params["optimizer"] == "sgd"
        assert ("scheduler" in params) == is_sgd
        cosine = is_sgd and params["scheduler"] == "cosine"
        assert ("warmup_epochs" in params) == cosine
        if cosine:
            assert 0.5 <= config.warmup_epochs <= 2.0
        else:
            assert config.warmup_epochs == 0.0
        if not is_sgd:
            assert config.scheduler.name == "constant"
        seen.add((params["optimizer"], params.get("scheduler")))
    assert seen == {("adam", None), ("sgd", "cosine"), ("sgd", "step")}


def test_suggest_asks_parents_before_children() -> None:
    spec = spec_with(NESTED)
    study = random_study(0)
    for _ in range(N_TRIALS):
        trial = study.ask()
        suggest(trial, spec)
        order = list(trial.params)
        if "warmup_epochs" in order:
            assert order == ["optimizer", "scheduler", "warmup_epochs"]
            break
    else:
        pytest.fail("no trial activated the grandchild")


def test_int_param_with_step() -> None:
    spec = spec_with({"width": {"type": "int", "low": 16, "high": 48, "step": 16}})
    study = random_study(0)
    widths = set()
    for _ in range(40):
        trial = study.ask()
        config = suggest(trial, spec)
        assert trial.distributions["width"] == IntDistribution(16, 48, step=16)
        assert isinstance(trial.params["width"], int)
        widths.add(config.model.options["width"])
    assert widths == {16, 32, 48}


def test_int_param_with_log() -> None:
    spec = spec_with({"epochs": {"type": "int", "low": 1, "high": 64, "log": True}})
    study = random_study(0)
    for _ in range(40):
        trial = study.ask()
        config = suggest(trial, spec)
        assert trial.distributions["epochs"] == IntDistribution(1, 64, log=True)
        assert 1 <= config.epochs <= 64
        assert isinstance(config.epochs, int)


def test_float_param_with_log_and_step() -> None:
    spec = spec_with(
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25},
        }
    )
    study = random_study(0)
    for _ in range(30):
        trial = study.ask()
        config = suggest(trial, spec)
        assert trial.distributions["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
        assert 1e-4 <= config.lr <= 1e-1
        assert config.model.options["dropout"] in (0.0, 0.25, 0.5)


def test_categorical_numbers_for_int_hyperparameter() -> None:
    spec = spec_with({"depth": {"type": "categorical", "choices": [1, 3]}})
    study = random_study(0)
    depths = {suggest(study.ask(), spec).model.options["depth"] for _ in range(30)}
    assert depths == {1, 3}


def test_fixed_values_applied() -> None:
    spec = spec_with(
        CONDITIONAL,
        fixed={"epochs": 3, "loss": "focal", "width": 8},
        dataset={"source": "digits", "options": {"val_fraction": 0.3, "seed": 5}},
    )
    trial = random_study(0).ask()
    config = suggest(trial, spec)
    assert (config.epochs, config.loss.name, config.model.options["width"]) == (3, "focal", 8)
    assert config.dataset.options == {"val_fraction": 0.3, "seed": 5}
    assert "epochs" not in trial.params


def test_suggest_respects_fixed_trial_params() -> None:
    """An enqueued configuration is reproduced exactly."""
    spec = spec_with(CONDITIONAL)
    study = random_study(0)
    study.enqueue_trial({"optimizer": "sgd", "momentum": 0.75})
    trial = study.ask()
    config = suggest(trial, spec)
    assert (config.optimizer.name, config.optimizer.options["momentum"]) == ("sgd", 0.75)


# --- build_config --------------------------------------------------------------------------


def test_build_config_combines_dataset_fixed_and_params() -> None:
    spec = spec_with(
        CONDITIONAL,
        fixed={"epochs": 2, "batch_size": 32},
        dataset={"options": {"val_fraction": 0.25}},
    )
    config = build_config(spec, {"optimizer": "sgd", "momentum": 0.6})
    assert config == TrialConfig(
        dataset={"source": "digits", "options": {"val_fraction": 0.25}},
        epochs=2,
        batch_size=32,
        optimizer={"name": "sgd", "options": {"momentum": 0.6}},
    )


def test_build_config_without_params_uses_defaults() -> None:
    config = build_config(load_spec({"name": "x", "fixed": {"lr": 0.01}}), {})
    assert config.lr == 0.01
    assert config.optimizer == TrialConfig().optimizer


def test_build_config_rejects_invalid_values() -> None:
    spec = load_spec({"name": "x"})
    with pytest.raises(ValueError, match="unknown optimizer 'nag'"):
        build_config(spec, {"optimizer": "nag"})


def test_flat_values_round_trip_through_build_config() -> None:
    spec = spec_with(CONDITIONAL, fixed={"width": 16, "hflip.p": 0.5, "loss": "focal"})
    config = build_config(spec, {"optimizer": "sgd", "momentum": 0.7})
    values = flat_values(config)
    assert values["width"] == 16 and values["hflip.p"] == 0.5 and values["gamma"] == 2.0
    assert values["momentum"] == 0.7 and values["optimizer"] == "sgd"
    assert config.augment == {"hflip": {"p": 0.5}}


def test_the_training_seed_applies_unless_the_spec_fixes_or_searches_seed() -> None:
    free = spec_with(CONDITIONAL)
    assert build_config(free, {"optimizer": "adam"}, seed=123).seed == 123
    assert build_config(free, {"optimizer": "adam"}).seed == TrialConfig().seed
    fixed = spec_with(CONDITIONAL, fixed={"seed": 7})
    assert build_config(fixed, {"optimizer": "adam"}, seed=123).seed == 7
    searched = spec_with({**CONDITIONAL, "seed": {"type": "int", "low": 0, "high": 9}})
    trial = random_study(0).ask()
    config = suggest(trial, searched, seed=123)
    assert config.seed == trial.params["seed"] != 123
