"""The Pareto front of a multi-objective study: the trials Optuna's ``best_trials`` gives,
found from the values alone, with only the front's trials loaded, on each backend."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import optuna
import pytest
import sqlalchemy as sa
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, create_trial

from automl.spec import StudySpec
from automl.store import Store, attrs, best_trials, optuna_rows, submit_study
from automl.store.best_reads import best_trials_of, best_trials_page
from automl.store.pareto import pareto_front

SpecFactory = Callable[..., StudySpec]

METRICS = ["accuracy", "loss", "latency_ms"]  # maximize, minimize, minimize
GRID = [-math.inf, 0.0, 0.25, 0.5, 0.75, 1.0, math.inf]
"""Few distinct values, so that ties and duplicate vectors are common."""


def _vector(rng: random.Random, objectives: int) -> list[float]:
    return [rng.choice(GRID) if rng.random() < 0.6 else rng.random() for _ in range(objectives)]


def _conflicting(rng: random.Random, objectives: int) -> list[float]:
    """Accuracy (maximized) and loss and latency (minimized) that pull against each other,
    from a few values each (ties), now and then infinities (best on one objective and worst
    on another, or worst on one)."""
    accuracy = rng.randrange(11) / 10
    vector = [accuracy, accuracy + rng.choice([0.0, 0.05, 0.1]), float(rng.randrange(4))]
    draw = rng.random()
    if draw < 0.08:
        vector[:2] = [math.inf, math.inf] if draw < 0.04 else [-math.inf, -math.inf]
    elif draw < 0.15:
        worst = rng.randrange(objectives)
        vector[worst] = -math.inf if worst == 0 else math.inf
    return vector[:objectives]


def _optuna_front(directions: Sequence[str], vectors: Sequence[Sequence[float]]) -> list[int]:
    """Indexes of ``vectors`` on the front, as Optuna's public ``best_trials`` says."""
    study = optuna.create_study(directions=list(directions))
    study.add_trials([create_trial(values=list(v)) for v in vectors])
    return sorted(trial.number for trial in study.best_trials)


@pytest.mark.parametrize("objectives", [1, 2, 3, 4])
def test_pareto_front_is_optunas_best_trials(objectives: int) -> None:
    rng = random.Random(objectives)
    for case in range(40):
        directions = [rng.choice(["minimize", "maximize"]) for _ in range(objectives)]
        vectors = [_vector(rng, objectives) for _ in range(rng.randint(1, 60))]
        if case % 4 == 0 and objectives > 1:  # many on the front: opposed first two costs
            vectors = [[v[0], -v[0], *v[2:]] for v in vectors]
            directions = ["minimize"] * objectives
        front = pareto_front(dict(enumerate(vectors)), directions)
        assert sorted(front) == _optuna_front(directions, vectors), (directions, vectors)


def test_duplicates_stand_or_fall_together_and_infinities_compare_as_numbers() -> None:
    vectors = {
        10: [1.0, 1.0],
        11: [1.0, 1.0],  # the same as 10: on the front with it
        12: [2.0, 2.0],
        13: [2.0, 2.0],  # both dominated by 10
        14: [-math.inf, math.inf],  # best first cost, worst second: on the front
        15: [0.0, math.inf],  # dominated by 14
        16: [math.inf, -math.inf],
        17: [math.inf, -math.inf],  # the same as 16
    }
    assert pareto_front(vectors, ["minimize", "minimize"]) == {10, 11, 14, 16, 17}
    flipped = {key: [-v for v in values] for key, values in vectors.items()}
    assert pareto_front(flipped, ["maximize", "maximize"]) == {10, 11, 14, 16, 17}


def test_trials_without_a_place_on_the_front_are_left_out() -> None:
    vectors: dict[int, list[float | None]] = {
        0: [1.0, 1.0],
        1: [0.0, 0.0],  # NaN: would dominate 0 and 2
        2: [2.0, 0.5],
        3: [0.5],  # a value missing
        4: [],
        5: [0.0, None],  # NaN as SQLite stores it (NULL)
    }
    vectors[1][1] = math.nan
    assert pareto_front(vectors, ["minimize", "minimize"]) == {0, 2}
    assert pareto_front({}, ["minimize", "minimize"]) == set()


# --- on the store ------------------------------------------------------------------------------


def _study(store: Store, tiny_spec: SpecFactory, count: int, vectors: list[list[float]]) -> int:
    """A study of ``count`` objectives with one completed trial per vector, each with
    a bulky user attribute (as trials carry histories and per-class reports) and a
    ticket (as automl's workers create them: only those are ranked)."""
    objectives = [{"metric": metric} for metric in METRICS[:count]]
    spec = tiny_spec(objective=None, objectives=objectives, pruner=None)
    study_id = submit_study(store, spec).id
    study = optuna.load_study(
        study_name=store.storage.get_study_name_from_id(study_id), storage=store.storage
    )
    bulky = {"history": [{"epoch": epoch, "loss": 0.5} for epoch in range(20)]}
    study.add_trials(
        [
            create_trial(
                values=vector,
                params={"x": 0.5},
                distributions={"x": FloatDistribution(0, 1)},
                user_attrs={
                    attrs.TICKET: index,
                    attrs.METRICS: {"objective": vector[0]},
                    "automl.history": bulky,
                    "index": index,
                },
            )
            for index, vector in enumerate(vectors)
        ]
    )
    return study_id


def _loaded_by_optuna(store: Store, study_id: int) -> list[FrozenTrial]:
    name = store.storage.get_study_name_from_id(study_id)
    return sorted(
        optuna.load_study(study_name=name, storage=store.storage).best_trials,
        key=lambda trial: trial.number,
    )


@pytest.mark.parametrize("objectives", [2, 3])
def test_best_trials_of_is_optunas_best_trials(
    store: Store, tiny_spec: SpecFactory, objectives: int
) -> None:
    rng = random.Random(objectives)
    vectors = [_conflicting(rng, objectives) for _ in range(150)]
    vectors += [list(vectors[i]) for i in rng.sample(range(150), 30)]  # duplicates
    study_id = _study(store, tiny_spec, objectives, vectors)
    directions = tiny_spec(
        objective=None, objectives=[{"metric": m} for m in METRICS[:objectives]]
    ).directions

    ours = best_trials_of(store, study_id, directions)
    theirs = _loaded_by_optuna(store, study_id)
    assert len(theirs) > 3 and len(theirs) < len(vectors) / 2
    assert [t.number for t in ours] == [t.number for t in theirs]
    for mine, optunas in zip(ours, theirs, strict=True):
        assert mine.values == optunas.values
        assert mine.params == optunas.params
        assert mine.user_attrs == optunas.user_attrs
        assert mine.datetime_complete == optunas.datetime_complete


def test_best_trials_of_loads_the_front_trials_only(store: Store, tiny_spec: SpecFactory) -> None:
    """The attributes of trials off the front are never read: here they would not parse."""
    vectors = [[0.9, 0.5], [0.8, 0.3], [0.7, 0.6], [0.95, 0.9], [0.6, 0.7], [0.8, 0.3]]
    study_id = _study(store, tiny_spec, 2, vectors)
    directions = ["maximize", "minimize"]
    front = [0, 1, 3, 5]
    assert [t.number for t in best_trials_of(store, study_id, directions)] == front

    off_front = [
        store.storage.get_trial_id_from_study_id_trial_number(study_id, number) for number in (2, 4)
    ]
    attributes = optuna_rows.trial_user_attributes
    with store.write() as connection:
        connection.execute(
            attributes.update()
            .where(attributes.c.trial_id.in_(off_front))
            .values(value_json="{not json")
        )
    best = best_trials_of(store, study_id, directions)
    assert [t.number for t in best] == front
    assert [t.user_attrs["index"] for t in best] == front


def test_best_trials_page_through_the_front(store: Store, tiny_spec: SpecFactory) -> None:
    vectors = [[0.9, 0.5], [0.8, 0.3], [0.7, 0.6], [0.95, 0.9], [0.6, 0.7], [0.8, 0.3]]
    study_id = _study(store, tiny_spec, 2, vectors)
    directions = ["maximize", "minimize"]

    pages = [best_trials_page(store, study_id, directions, 3, offset) for offset in (0, 3, 4)]

    assert [([t.number for t in trials], count) for trials, count in pages] == [
        ([0, 1, 3], 4),
        ([5], 4),
        ([], 4),
    ]
    best = best_trials(store, study_id, limit=2, offset=1)
    assert ([t.number for t in best.trials], best.count) == ([1, 3], 4)


def _drop_second_value(connection: sa.engine.Connection, trial_id: int) -> None:
    values = optuna_rows.trial_values
    connection.execute(
        values.delete().where(values.c.trial_id == trial_id, values.c.objective == 1)
    )


def _nan_first_value(connection: sa.engine.Connection, trial_id: int) -> None:
    """A NaN as each backend stores it: SQLite as NULL, PostgreSQL as NaN."""
    values = optuna_rows.trial_values
    connection.execute(
        values.update()
        .where(values.c.trial_id == trial_id, values.c.objective == 0)
        .values(value=sa.literal(math.nan, sa.Float), value_type="FINITE")
    )


@pytest.mark.parametrize("spoil", [_drop_second_value, _nan_first_value], ids=["missing", "nan"])
def test_best_trials_of_leaves_out_a_trial_without_comparable_values(
    store: Store,
    tiny_spec: SpecFactory,
    spoil: Callable[[sa.engine.Connection, int], None],
) -> None:
    study_id = _study(store, tiny_spec, 2, [[0.9, 0.5], [0.99, 0.1], [0.8, 0.3]])
    dominant = store.storage.get_trial_id_from_study_id_trial_number(study_id, 1)
    with store.write() as connection:
        spoil(connection, dominant)
    best = best_trials_of(store, study_id, ["maximize", "minimize"])
    assert [t.number for t in best] == [0, 2]


def test_best_trials_of_no_completed_trial_is_an_empty_front(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _study(store, tiny_spec, 2, [])
    assert best_trials_of(store, study_id, ["maximize", "minimize"]) == []
