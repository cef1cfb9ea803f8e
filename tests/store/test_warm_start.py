"""Warm start: earlier studies' best configurations queued first; both backends."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, FloatDistribution

from automl.cli.output import study_text
from automl.spec import SpecError, StudySpec
from automl.store import (
    Store,
    StudyDetail,
    attrs,
    end_study_if_done,
    finish,
    get_study,
    submit_study,
    tables,
)
from tests.store.conftest import complete_trial, start_trial

SpecFactory = Callable[..., StudySpec]

OPTIMIZER = CategoricalDistribution(["adam", "sgd"])
LR = FloatDistribution(1e-3, 1e-1, log=True)
MOMENTUM = FloatDistribution(0.5, 0.9)


def finished_study(store: Store, tiny_spec: SpecFactory, results: list[tuple[dict, float]]) -> int:
    """A completed study whose trials had these params and accuracies."""
    spec = tiny_spec(name="earlier", budget={"n_trials": len(results), "max_failed": 0})
    study_id = submit_study(store, spec).id
    distributions = {"optimizer": OPTIMIZER, "lr": LR, "momentum": MOMENTUM}
    for params, value in results:
        lease, trial_id = start_trial(store, study_id)
        for name, param_value in params.items():
            distribution = distributions[name]
            internal = distribution.to_internal_repr(param_value)
            store.storage.set_trial_param(trial_id, name, internal, distribution)
        complete_trial(store.storage, trial_id, [value])
        finish(store, lease, "complete")
    end_study_if_done(store, study_id)
    assert get_study(store, study_id).status == "completed"
    return study_id


def queued(store: Store, study_id: int) -> list[tuple[str, dict[str, Any]]]:
    with store.read() as connection:
        rows = connection.execute(
            sa.select(tables.tickets.c.source, tables.tickets.c.params)
            .where(tables.tickets.c.study_id == study_id)
            .order_by(tables.tickets.c.ticket_id)
        ).all()
    return [(source, json.loads(params)) for source, params in rows]


RESULTS = [
    ({"optimizer": "sgd", "lr": 0.05, "momentum": 0.8}, 0.97),
    ({"optimizer": "adam", "lr": 0.002}, 0.95),
    ({"optimizer": "sgd", "lr": 0.09, "momentum": 0.6}, 0.99),
    ({"optimizer": "adam", "lr": 0.08}, 0.50),
]


OPTIMIZER_PARAM = {"type": "categorical", "choices": ["adam", "sgd"]}


def warm_started(
    store: Store, tiny_spec: SpecFactory, param: tuple[str, dict[str, Any]], **overrides: Any
) -> tuple[int, StudyDetail]:
    """An earlier study with ``RESULTS``, and a later one searching ``optimizer`` and
    ``param`` that warm-starts from it; returns the earlier id and the later study."""
    earlier = finished_study(store, tiny_spec, RESULTS)
    overrides["warm_start"] = {"studies": [earlier], **overrides.get("warm_start", {})}
    name, spec = param
    later = tiny_spec(name="later", params={"optimizer": OPTIMIZER_PARAM, name: spec}, **overrides)
    return earlier, submit_study(store, later)


def test_top_configurations_are_queued_first_from_the_budget(
    store: Store, tiny_spec: SpecFactory
) -> None:
    lr = {"type": "float", "low": 1e-3, "high": 0.06, "log": True}  # 0.09 falls out
    earlier, study = warm_started(
        store,
        tiny_spec,
        ("lr", lr),
        budget={"n_trials": 5, "max_failed": 0},
        warm_start={"top_k": 3},
    )
    assert queued(store, study.id) == [
        ("warm_start", {"optimizer": "sgd"}),  # best trial: its lr is outside, momentum unsearched
        ("warm_start", {"optimizer": "sgd", "lr": 0.05}),
        ("warm_start", {"optimizer": "adam", "lr": 0.002}),
    ]
    assert study.counts.waiting == 5  # three queued configurations plus two fresh units
    note = store.storage.get_study_user_attrs(study.id)[attrs.WARM_START]
    assert note["studies"] == [earlier] and note["enqueued"] == 3
    assert any("lr=0.09 is outside this space" in line for line in note["dropped"])
    assert any("momentum is not searched here" in line for line in note["dropped"])


def test_the_specs_own_configurations_run_before_the_warm_start_and_share_the_budget(
    store: Store, tiny_spec: SpecFactory
) -> None:
    earlier = finished_study(store, tiny_spec, RESULTS)
    spec = tiny_spec(
        name="later",
        budget={"n_trials": 3, "max_failed": 0},
        enqueue=[{"lr": 0.004}, {"optimizer": "adam", "lr": 0.001}],
        warm_start={"studies": [earlier], "top_k": 3},
    )
    study = submit_study(store, spec)
    assert queued(store, study.id) == [
        ("enqueued", {"lr": 0.004}),
        ("enqueued", {"optimizer": "adam", "lr": 0.001}),
        ("warm_start", {"optimizer": "sgd", "momentum": 0.6}),  # the best (its lr is outside)
    ]  # then the budget is spent: the other two earlier configurations do not run
    assert study.counts.waiting == 3
    note = store.storage.get_study_user_attrs(study.id)[attrs.WARM_START]
    assert note["enqueued"] == 1


def test_auto_finds_completed_studies_on_the_same_data(
    store: Store, tiny_spec: SpecFactory
) -> None:
    earlier = finished_study(store, tiny_spec, RESULTS[:2])
    other_data = tiny_spec(name="other", dataset={"source": "digits", "options": {"seed": 5}})
    submit_study(store, other_data)  # different split, never completed: not a source
    study = submit_study(store, tiny_spec(name="auto", warm_start={"studies": "auto"}))
    note = store.storage.get_study_user_attrs(study.id)[attrs.WARM_START]
    assert note["studies"] == [earlier]
    assert [source for source, _ in queued(store, study.id)] == ["warm_start"] * 2


def test_values_off_the_new_step_grid_are_dropped_as_the_spec_would_refuse_them(
    store: Store, tiny_spec: SpecFactory
) -> None:
    momentum = {"type": "float", "low": 0.5, "high": 0.9, "step": 0.2, "when": {"optimizer": "sgd"}}
    _, study = warm_started(store, tiny_spec, ("momentum", momentum), warm_start={"top_k": 2})
    assert queued(store, study.id) == [("warm_start", {"optimizer": "sgd"})]  # both the same
    note = store.storage.get_study_user_attrs(study.id)[attrs.WARM_START]
    assert (note["enqueued"], note["duplicates"]) == (1, 1)
    assert any("momentum=0.6 is outside this space" in line for line in note["dropped"])
    assert any("momentum=0.8 is outside this space" in line for line in note["dropped"])


def test_configurations_left_the_same_or_left_empty_are_counted_not_silently_lost(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Once top_k=4 queued one configuration and the note did not say why not four."""
    earlier = finished_study(store, tiny_spec, RESULTS)
    spec = tiny_spec(
        name="later",
        params={
            "optimizer": {"type": "categorical", "choices": ["sgd", "rmsprop"]},  # no adam
            "lr": {"type": "float", "low": 0.01, "high": 0.06, "log": True},
        },
        enqueue=[{"optimizer": "sgd", "lr": 0.05}],
        warm_start={"studies": [earlier], "top_k": 4},
    )
    study = submit_study(store, spec)
    assert queued(store, study.id) == [
        ("enqueued", {"optimizer": "sgd", "lr": 0.05}),
        ("warm_start", {"optimizer": "sgd"}),  # the best: lr=0.09 is outside
    ]  # the second best is the enqueued one once momentum is dropped; the adam ones are empty
    note = store.storage.get_study_user_attrs(study.id)[attrs.WARM_START]
    assert note["enqueued"] == 1
    assert (note["duplicates"], note["nothing_fits"], note["over_budget"]) == (1, 2, 0)
    # A tester: only Optuna's study attributes said what the warm start took.
    assert study.warm_start == get_study(store, study.id).warm_start == note
    assert study_text(study).splitlines()[-1] == (
        f"warm start: 1 configuration from studies {earlier}; left out: 1 the same as one "
        f"before, 2 with no param this space takes; {len(note['dropped'])} param values dropped"
    )


def test_unknown_earlier_study_is_named(store: Store, tiny_spec: SpecFactory) -> None:
    with pytest.raises(SpecError) as info:
        submit_study(store, tiny_spec(warm_start={"studies": [987654]}))
    [error] = info.value.errors
    assert (error.path, error.msg) == ("warm_start.studies[0]", "study 987654 not found")
    assert store.storage.get_all_studies() == [], "refused, yet an Optuna study was created"


def test_another_projects_study_is_no_source(store: Store, tiny_spec: SpecFactory) -> None:
    # Study ids are sequential: naming one, or ``auto`` on the same data, must not copy
    # another project's best configurations into the submitter's study.
    theirs = finished_study(store, tiny_spec, RESULTS[:2])  # project "default"
    with pytest.raises(SpecError) as info:
        submit_study(store, tiny_spec(warm_start={"studies": [theirs]}), project="b")
    [error] = info.value.errors
    assert (error.path, error.msg) == ("warm_start.studies[0]", f"study {theirs} not found")
    auto = submit_study(store, tiny_spec(warm_start={"studies": "auto"}), project="b")
    assert store.storage.get_study_user_attrs(auto.id)[attrs.WARM_START]["studies"] == []
    assert queued(store, auto.id) == []


def test_a_value_whose_condition_fails_in_the_new_space_is_named_among_the_dropped(
    store: Store, tiny_spec: SpecFactory
) -> None:
    lr = {"type": "float", "low": 1e-3, "high": 0.1, "log": True, "when": {"optimizer": "adam"}}
    _, study = warm_started(store, tiny_spec, ("lr", lr), warm_start={"top_k": 2})
    assert queued(store, study.id)[0] == ("warm_start", {"optimizer": "sgd"})  # lr: adam only
    note = store.storage.get_study_user_attrs(study.id)[attrs.WARM_START]
    assert any("lr=0.09 does not apply here (see optimizer)" in line for line in note["dropped"])
    assert any("lr=0.05 does not apply here (see optimizer)" in line for line in note["dropped"])


def three_finished_studies(store: Store, tiny_spec: SpecFactory) -> list[int]:
    """Three completed studies (ids ascending), each with two configurations of its own."""
    return [
        finished_study(
            store,
            tiny_spec,
            [({"optimizer": "adam", "lr": lr}, 0.9), ({"optimizer": "adam", "lr": 2 * lr}, 0.8)],
        )
        for lr in (0.001, 0.003, 0.004)
    ]


def test_configurations_are_queued_in_the_order_the_studies_are_listed(
    store: Store, tiny_spec: SpecFactory
) -> None:
    first, second, third = three_finished_studies(store, tiny_spec)
    listed = [third, first, second]
    spec = tiny_spec(
        name="later",
        budget={"n_trials": 5, "max_failed": 0},
        warm_start={"studies": listed, "top_k": 1},
    )
    study = submit_study(store, spec)
    assert queued(store, study.id) == [
        ("warm_start", {"optimizer": "adam", "lr": 0.004}),
        ("warm_start", {"optimizer": "adam", "lr": 0.001}),
        ("warm_start", {"optimizer": "adam", "lr": 0.003}),
    ]
    note = store.storage.get_study_user_attrs(study.id)[attrs.WARM_START]
    assert note["studies"] == listed
    assert (note["over_budget"], note["over_budget_from"]) == (0, {})


def test_configurations_past_the_budget_are_counted_by_study_not_silently_lost(
    store: Store, tiny_spec: SpecFactory
) -> None:
    first, second, third = three_finished_studies(store, tiny_spec)
    spec = tiny_spec(
        name="later",
        budget={"n_trials": 3, "max_failed": 0},
        warm_start={"studies": [third, first, second], "top_k": 2},
    )
    study = submit_study(store, spec)
    assert queued(store, study.id) == [
        ("warm_start", {"optimizer": "adam", "lr": 0.004}),
        ("warm_start", {"optimizer": "adam", "lr": 0.008}),
        ("warm_start", {"optimizer": "adam", "lr": 0.001}),
    ]
    note = store.storage.get_study_user_attrs(study.id)[attrs.WARM_START]
    assert note["enqueued"] == 3
    assert note["over_budget"] == 3
    assert note["over_budget_from"] == {str(first): 1, str(second): 2}
    assert list(note["over_budget_from"]) == [str(first), str(second)]  # in listed order
