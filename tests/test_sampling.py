"""Tests of the exact grid and the ``auto`` sampler rule."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import optuna
import pytest

from automl.samplers import SAMPLERS, build_sampler
from automl.sampling import (
    GP_MAX_TRIALS,
    MAX_GRID_CELLS,
    MODEL_STARTUP_TRIALS,
    grid_cell,
    grid_size,
    iter_cells,
)
from automl.space import suggest
from automl.spec import SPACE_RULES, SpecError, StudySpec, load_spec

OPTIMIZER = {"type": "categorical", "choices": ["adam", "sgd"]}
MOMENTUM = {"type": "float", "low": 0.8, "high": 0.9, "step": 0.05}
WIDTH = {"type": "int", "low": 16, "high": 48, "step": 16}


def grid_spec(n_trials: int, **params: Any) -> Any:
    return load_spec(
        {
            "name": "grid",
            "sampler": {"name": "grid", "seed": 3},
            "budget": {"n_trials": n_trials},
            "params": params,
        }
    )


def spec_errors(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        load_spec(data)
    return {error.path: error.msg for error in info.value.errors}


def test_grid_spans_conditional_params_only_where_they_apply() -> None:
    spec = grid_spec(9, optimizer=OPTIMIZER, momentum=MOMENTUM, width=WIDTH)
    cells = list(iter_cells(spec))
    # adam: 3 widths; sgd: 3 momenta x 3 widths (momentum belongs to sgd).
    assert len(cells) == grid_size(spec) == 12
    assert sum(1 for cell in cells if cell["optimizer"] == "adam") == 3
    assert all("momentum" not in cell for cell in cells if cell["optimizer"] == "adam")
    assert {cell["momentum"] for cell in cells if "momentum" in cell} == {0.8, 0.85, 0.9}
    assert len({tuple(sorted(cell.items())) for cell in cells}) == 12


def test_an_option_of_every_choice_of_a_conditional_selector_applies_only_with_it() -> None:
    # sgd and rmsprop both have momentum, but the optimizer is searched only for cnn: an
    # rnn trial trains the default (adam), so momentum is neither sampled nor a cell there.
    model = {"type": "categorical", "choices": ["cnn", "rnn"]}
    optimizer = {"type": "categorical", "choices": ["sgd", "rmsprop"], "when": {"model": "cnn"}}
    spec = grid_spec(5, model=model, optimizer=optimizer, momentum=MOMENTUM)
    cells = list(iter_cells(spec))
    assert len(cells) == grid_size(spec) == 2 * 3 + 1
    assert [cell for cell in cells if cell["model"] == "rnn"] == [{"model": "rnn"}]
    assert sorted(spec.conditions("momentum")["optimizer"]) == ["rmsprop", "sgd"]

    # A grid study stored before this rule keeps the cells its tickets were issued by.
    stored = spec.model_dump(mode="json", exclude={"space_rules"})
    old = StudySpec.model_validate_json(json.dumps(stored))
    assert (spec.space_rules, old.space_rules) == (SPACE_RULES, 1)
    assert grid_size(old) == 2 * 3 + 3
    assert sum(1 for cell in iter_cells(old) if cell["model"] == "rnn") == 3

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        config = suggest(trial, spec, seed=0)
        assert ("momentum" in trial.params) == (config.optimizer.name != "adam"), trial.params
        study.tell(trial, 0.5)


def test_study_cells_cover_the_grid_or_sample_it_without_repetition() -> None:
    full = grid_spec(12, optimizer=OPTIMIZER, momentum=MOMENTUM, width=WIDTH)
    assert [grid_cell(full, index) for index in range(12)] == list(iter_cells(full))
    part = grid_spec(5, optimizer=OPTIMIZER, momentum=MOMENTUM, width=WIDTH)
    picked = [grid_cell(part, index) for index in range(5)]
    assert len({tuple(sorted(cell.items())) for cell in picked}) == 5
    assert all(cell in list(iter_cells(full)) for cell in picked)
    assert picked == [grid_cell(part, index) for index in range(5)]  # fixed by the spec
    with pytest.raises(IndexError):
        grid_cell(part, 5)


def test_grid_cells_reproduce_through_fixed_params() -> None:
    spec = grid_spec(12, optimizer=OPTIMIZER, momentum=MOMENTUM, width=WIDTH)
    study = optuna.create_study(sampler=build_sampler("grid", {}, 0))
    for index in range(12):
        cell = grid_cell(spec, index)
        study.enqueue_trial(cell)
        trial = study.ask()
        suggest(trial, spec)
        assert trial.params == cell


def test_grid_refuses_continuous_params_and_too_small_a_grid() -> None:
    errors = spec_errors(
        {
            "name": "g",
            "sampler": {"name": "grid"},
            "params": {"lr": {"type": "float", "low": 0.01, "high": 0.1}, "width": WIDTH},
        }
    )
    assert errors == {
        "params.lr": "grid sampler: is continuous; give it a step or make it categorical"
    }
    errors = spec_errors(
        {
            "name": "g",
            "sampler": {"name": "grid"},
            "budget": {"n_trials": 4},
            "params": {"width": WIDTH},
        }
    )
    assert errors == {
        "budget.n_trials": "the grid has 3 cells, fewer than n_trials (4); use n_trials <= 3"
    }


def test_billion_cell_grid_is_refused_quickly() -> None:
    wide = {"type": "int", "low": 2, "high": 1000}
    errors = spec_errors(
        {
            "name": "g",
            "sampler": {"name": "grid"},
            "params": {"batch_size": wide, "epochs": wide, "seed": wide},
        }
    )
    assert errors == {
        "sampler.name": f"the grid has more than {MAX_GRID_CELLS:,} cells (max_grid_cells); "
        "narrow the space"
    }


@pytest.mark.parametrize(
    ("name", "param"),
    [
        ("weight_decay", {"type": "float", "low": 0.0, "high": 0.5, "step": 1e-12}),  # built
        ("weight_decay", {"type": "float", "low": 0.0, "high": 0.5, "step": 5e-324}),  # inf
        ("seed", {"type": "int", "low": 1, "high": 2**53 - 1}),  # once an OverflowError (500)
    ],
)
def test_one_huge_param_is_counted_not_listed(name: str, param: dict[str, Any]) -> None:
    errors = spec_errors({"name": "g", "sampler": {"name": "grid"}, "params": {name: param}})
    assert errors == {
        "sampler.name": f"the grid has more than {MAX_GRID_CELLS:,} cells (max_grid_cells); "
        "narrow the space"
    }


@pytest.mark.parametrize(
    "param",
    [
        {"type": "int", "low": 0, "high": 50_000_000},  # once 2 GB and 2 s per submit
        {"type": "int", "low": 0, "high": 2**53 - 1},  # once a MemoryError (500)
        {"type": "float", "low": 0.0, "high": 0.5, "step": 5e-324},  # once an OverflowError
    ],
)
def test_auto_counts_a_huge_param_without_listing_it(param: dict[str, Any]) -> None:
    tracemalloc.start()
    try:
        spec = load_spec(
            {
                "name": "a",
                "sampler": {"name": "auto"},
                "budget": {"n_trials": 20},
                "params": {"seed" if param["type"] == "int" else "weight_decay": param},
            }
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert spec.sampler.name == "gp"
    assert peak < 20 * 2**20, f"{peak:,} bytes to choose a sampler"


@pytest.mark.parametrize(
    ("data", "name", "n_trials", "reason"),
    [
        (
            {
                "objectives": [{"metric": "accuracy"}, {"metric": "loss"}],
                "params": {"width": WIDTH},
            },
            "nsga2",
            20,
            "several objectives",
        ),
        (
            {"params": {"optimizer": OPTIMIZER, "width": WIDTH}},
            "grid",
            6,
            "n_trials lowered from 20 to 6",
        ),
        (
            {
                "params": {
                    "lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
                    "width": WIDTH,
                }
            },
            "gp",
            20,
            "Gaussian-process",
        ),
        (
            {
                "budget": {"n_trials": GP_MAX_TRIALS + 1},
                "params": {"lr": {"type": "float", "low": 1e-3, "high": 0.1}},
            },
            "tpe",
            GP_MAX_TRIALS + 1,
            "constant liar",
        ),
        (
            {"params": {"optimizer": OPTIMIZER, "lr": {"type": "float", "low": 1e-3, "high": 0.1}}},
            "tpe",
            20,
            "multivariate TPE",
        ),
        # Found by a tester: gp for 10 trials, all of them its random start-up trials.
        (
            {
                "budget": {"n_trials": MODEL_STARTUP_TRIALS},
                "params": {"lr": {"type": "float", "low": 1e-3, "high": 0.1}},
            },
            "random",
            MODEL_STARTUP_TRIALS,
            f"{MODEL_STARTUP_TRIALS} trials, no more than the {MODEL_STARTUP_TRIALS} random "
            "trials a model-based sampler starts with: random search",
        ),
        (
            {
                "budget": {"n_trials": 8},
                "objectives": [{"metric": "accuracy"}, {"metric": "loss"}],
                "params": {"width": WIDTH},
            },
            "random",
            8,
            "random search",
        ),
        (
            {"budget": {"n_trials": 6}, "params": {"optimizer": OPTIMIZER, "width": WIDTH}},
            "grid",
            6,
            "exact grid",
        ),
        (
            {
                "objectives": [{"metric": "accuracy"}, {"metric": "loss"}],
                "params": {
                    "optimizer": OPTIMIZER,
                    "lr": {"type": "float", "low": 1e-3, "high": 0.1},
                },
            },
            "nsga2",
            20,
            "several objectives: NSGA-II",
        ),
        # Found by a tester: NSGA-II drew every family's own options at random.
        (
            {
                "objectives": [{"metric": "accuracy"}, {"metric": "loss"}],
                "params": {"optimizer": OPTIMIZER, "momentum": MOMENTUM},
            },
            "tpe",
            20,
            "several objectives, conditional params (momentum): multi-objective TPE (NSGA-II "
            "would draw them at random)",
        ),
    ],
)
def test_auto_picks_as_documented(
    data: dict[str, Any], name: str, n_trials: int, reason: str
) -> None:
    spec = load_spec({"name": "auto", "sampler": {"name": "auto", "seed": 1}, **data})
    assert spec.sampler.name == name
    assert spec.sampler.seed == 1
    assert spec.budget.n_trials == n_trials
    assert reason in (spec.sampler.chosen_by or "")
    if name == "tpe":
        assert spec.sampler.options == {"multivariate": True, "group": True, "constant_liar": True}


def test_auto_takes_no_options() -> None:
    errors = spec_errors({"name": "a", "sampler": {"name": "auto", "options": {"x": 1}}})
    assert list(errors) == ["sampler.options.x"]


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_runs_a_few_trials(name: str) -> None:
    params = {"lr": {"type": "float", "low": 1e-3, "high": 0.1, "step": 1e-3}, "width": WIDTH}
    spec = load_spec({"name": "s", "sampler": {"name": name, "seed": 0}, "params": params})
    study = optuna.create_study(sampler=build_sampler(spec.sampler.name, spec.sampler.options, 0))
    for _ in range(4):
        trial = study.ask()
        config = suggest(trial, spec)
        study.tell(trial, config.lr)
    assert len(study.trials) == 4


def test_grid_and_warm_start_do_not_mix() -> None:
    errors = spec_errors(
        {
            "name": "g",
            "sampler": {"name": "grid"},
            "budget": {"n_trials": 3},
            "params": {"width": WIDTH},
            "warm_start": {"studies": [1]},
        }
    )
    assert errors == {"warm_start": "a grid runs each of its cells; drop warm_start"}
    spec = load_spec(
        {
            "name": "a",
            "sampler": {"name": "auto"},
            "params": {"width": WIDTH},
            "warm_start": {"studies": "auto"},
        }
    )
    assert spec.sampler.name != "grid"  # auto picks no grid when a warm start is given


def test_grid_and_enqueue_do_not_mix() -> None:
    grid = {"name": "g", "budget": {"n_trials": 3}, "params": {"width": WIDTH}}
    errors = spec_errors({**grid, "sampler": {"name": "grid"}, "enqueue": [{"width": 16}]})
    assert errors == {"enqueue": "a grid runs each of its cells; drop enqueue"}
    spec = load_spec({**grid, "sampler": {"name": "auto"}, "enqueue": [{"width": 16}]})
    assert spec.sampler.name != "grid"  # auto picks no grid when configurations are given
    assert load_spec({**grid, "sampler": {"name": "auto"}}).sampler.name == "grid"


def test_qmc_draws_conditional_params_afresh_in_every_trial() -> None:
    # Every worker builds QMC with the study's seed (one shared sequence); the params
    # outside the sequence (conditional ones) come from a sampler seeded per trial.
    spec = load_spec(
        {
            "name": "qmc",
            "sampler": {"name": "qmc", "seed": 11},
            "budget": {"n_trials": 8},
            "params": {
                "optimizer": OPTIMIZER,
                "momentum": {"type": "float", "low": 0.5, "high": 0.9},
            },
        }
    )
    study = optuna.create_study()
    momenta = []
    for trial_seed in range(8):
        study.sampler = build_sampler("qmc", {}, 11, trial_seed=trial_seed)
        trial = study.ask()
        suggest(trial, spec, seed=0)
        momenta += [trial.params["momentum"]] if "momentum" in trial.params else []
        study.tell(trial, 0.5)
    assert len(momenta) >= 2
    assert len(set(momenta)) == len(momenta)


def test_grid_values_keep_the_specs_decimals_at_any_scale() -> None:
    # Rounding to 12 digits made every cell of a 1e-13 step 0.0, below the range.
    tiny = {"type": "float", "low": 1e-13, "high": 5e-13, "step": 1e-13}
    cells = list(iter_cells(grid_spec(5, weight_decay=tiny)))
    assert [cell["weight_decay"] for cell in cells] == [1e-13, 2e-13, 3e-13, 4e-13, 5e-13]
    usual = {"type": "float", "low": 0.5, "high": 0.9, "step": 0.1}
    assert [
        c["momentum"]
        for c in iter_cells(grid_spec(5, optimizer=OPTIMIZER, momentum=usual))
        if "momentum" in c
    ] == [0.5, 0.6, 0.7, 0.8, 0.9]


IMBALANCE = {"type": "categorical", "choices": ["none", "focal"]}
LOSS = {"type": "categorical", "choices": ["cross_entropy", "focal"]}
GAMMA = {"type": "float", "low": 1.0, "high": 2.0, "step": 1.0}


def test_loss_params_are_no_cells_and_no_samples_where_imbalance_focal_replaces_the_loss() -> None:
    spec = grid_spec(4, imbalance=IMBALANCE, loss=LOSS, gamma=GAMMA)
    cells = list(iter_cells(spec))
    # none: cross_entropy, focal x 2 gammas; focal: its own loss, one cell (not 3 repeats).
    assert cells == [
        {"imbalance": "none", "loss": "cross_entropy"},
        {"imbalance": "none", "loss": "focal", "gamma": 1.0},
        {"imbalance": "none", "loss": "focal", "gamma": 2.0},
        {"imbalance": "focal"},
    ]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        config = suggest(trial, spec, seed=0)
        focal = config.imbalance.name == "focal"
        assert ("loss" in trial.params) == (not focal), trial.params
        if focal:  # what trains is the strategy's loss; the configured one is the default
            assert set(trial.params) == {"imbalance"} and config.loss.name == "cross_entropy"
        study.tell(trial, 0.5)
