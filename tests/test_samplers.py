"""Tests of the sampler registry: what each sampler accepts is what it can run."""

from __future__ import annotations

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
