"""Tests of the sampler registry: what each sampler accepts is what it can run."""

from __future__ import annotations

import logging
import warnings

import optuna
import pytest

from automl.samplers import SAMPLERS, SINGLE_OBJECTIVE_SAMPLERS, build_sampler
from automl.space import suggest
from automl.spec import SpecError, load_spec

OBJECTIVES = [{"metric": "accuracy"}, {"metric": "loss"}]
PARAMS = {
    "lr": {"type": "float", "low": 1e-3, "high": 0.1, "step": 1e-3},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
}


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_a_sampler_accepted_for_several_objectives_runs_them(name: str) -> None:
    data = {"name": "s", "objectives": OBJECTIVES, "sampler": {"name": name}, "params": PARAMS}
    if name in SINGLE_OBJECTIVE_SAMPLERS:
        with pytest.raises(SpecError, match="optimizes one objective"):
            load_spec(data)
        return
    spec = load_spec(data)
    sampler = build_sampler(spec.sampler.name, spec.sampler.options, 0)
    study = optuna.create_study(directions=spec.directions, sampler=sampler)
    for _ in range(4):
        trial = study.ask()
        config = suggest(trial, spec)
        study.tell(trial, [config.lr, -config.lr])
    assert len(study.trials) == 4


def test_cmaes_really_refuses_several_objectives() -> None:
    sampler = build_sampler("cmaes", {}, 0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    with pytest.raises(ValueError, match="multi-objective"):
        study.optimize(lambda trial: (trial.suggest_float("x", 0, 1), 0.0), n_trials=2)


def multivariate_space(sampler: optuna.samplers.BaseSampler, directions: list[str]) -> dict:
    """The joint search space ``sampler`` models once 12 trials finished (empty unless it
    is multivariate)."""
    study = optuna.create_study(directions=directions, sampler=sampler)
    spec = load_spec({"name": "s", "params": PARAMS})
    for _ in range(12):
        trial = study.ask()
        config = suggest(trial, spec)
        study.tell(trial, [config.lr] * len(directions))
    trial = study.ask()
    return sampler.infer_relative_search_space(study, study._storage.get_trial(trial._trial_id))


@pytest.mark.parametrize("directions", [["maximize"], ["maximize", "minimize"]])
def test_tpe_is_multivariate_as_documented_with_one_objective_or_several(
    directions: list[str],
) -> None:
    # Optuna's own default is multivariate for one objective only.
    spec = load_spec({"name": "s", "sampler": {"name": "tpe"}, "params": PARAMS})
    sampler = build_sampler(spec.sampler.name, spec.sampler.options, 0)
    assert set(multivariate_space(sampler, directions)) == {"lr", "optimizer"}
    independent = build_sampler("tpe", {"multivariate": False}, 0)
    assert multivariate_space(independent, directions) == {}


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_documented_default_reaches_optuna(name: str) -> None:
    entry = SAMPLERS.get(name)
    sampler = build_sampler(name, {}, 0)
    for option, info in entry.options.model_fields.items():
        if hasattr(sampler, f"_{option}"):
            assert getattr(sampler, f"_{option}") == info.get_default(), option


def test_cmaes_keeps_sigma0_without_a_deprecation_warning_per_trial() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler = build_sampler("cmaes", {"sigma0": 0.3}, 0)
    assert isinstance(sampler, optuna.samplers.CmaEsSampler)
    assert sampler._sigma0 == 0.3


CONDITIONAL = {
    **PARAMS,
    "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgd"}},
}


@pytest.mark.parametrize(
    ("name", "options", "drawn"),
    [("cmaes", {}, "categorical"), ("gp", {"n_startup_trials": 1}, "conditional")],
)
def test_a_sampler_draws_what_it_cannot_model_at_random_without_a_warning_per_trial(
    name: str, options: dict[str, int], drawn: str, caplog: pytest.LogCaptureFixture
) -> None:
    spec = load_spec(
        {"name": "s", "sampler": {"name": name, "options": options}, "params": CONDITIONAL}
    )
    assert drawn in SAMPLERS.get(name).description  # what the warning said
    study = optuna.create_study(direction="maximize")
    optuna_logger = logging.getLogger("optuna")
    optuna_logger.addHandler(caplog.handler)
    try:
        for seed in range(6):  # a worker builds the sampler anew for every trial
            study.sampler = build_sampler(spec.sampler.name, spec.sampler.options, seed)
            trial = study.ask()
            study.tell(trial, suggest(trial, spec).lr)
    finally:
        optuna_logger.removeHandler(caplog.handler)
    assert {trial.params["optimizer"] for trial in study.trials} == {"adam", "sgd"}
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
