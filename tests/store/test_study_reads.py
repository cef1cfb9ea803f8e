"""Reading studies without their spec's models: directions from the Optuna study, metrics
from the spec's JSON, and the whole spec where the Optuna study is gone."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from automl.spec import StudySpec
from automl.store import (
    Store,
    attrs,
    get_study,
    list_studies,
    optuna_rows,
    study_reads,
    submit_study,
)
from tests.store.conftest import drive

OBJECTIVES = [
    {"objective": {"metric": "loss"}},
    {"objective": {"metric": "accuracy", "direction": "minimize"}},
    {"objective": None, "objectives": [{"metric": "accuracy"}, {"metric": "params"}]},
    {"objective": None},
]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_listings_show_the_specs_directions_and_metrics(
    store: Store,
    tiny_spec: Callable[..., StudySpec],
    objective: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(study_reads, "_HEADS", {})
    spec = tiny_spec(**objective)
    study_id = submit_study(store, spec).id

    detail = get_study(store, study_id)
    [summary] = list_studies(store).data

    assert detail.directions == summary.directions == spec.directions
    assert detail.metrics == summary.metrics == spec.metrics


def test_the_best_value_follows_a_metrics_own_direction(
    store: Store, tiny_spec: Callable[..., StudySpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``loss`` minimizes though the spec names no direction: the listing ranks by the
    direction its Optuna study was created with."""
    monkeypatch.setattr(study_reads, "_HEADS", {})
    study_id = submit_study(store, tiny_spec(objective={"metric": "loss"})).id
    drive(store, study_id, [0.7, 0.2, 0.5])

    assert get_study(store, study_id).best_value == 0.2


def test_a_study_whose_optuna_study_is_gone_still_lists_its_directions(
    store: Store, tiny_spec: Callable[..., StudySpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(study_reads, "_HEADS", {})
    study_id = submit_study(store, tiny_spec(objective={"metric": "loss"})).id
    store.storage.delete_study(study_id)  # outside automl

    assert get_study(store, study_id).directions == ["minimize"]


def test_heads_are_read_once_per_spec(
    store: Store, tiny_spec: Callable[..., StudySpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing asks the Optuna tables only for the specs it has not read before."""
    monkeypatch.setattr(study_reads, "_HEADS", {})
    asked: list[list[int]] = []
    directions_of = study_reads.optuna_rows.directions_of

    def counted(connection: object, study_ids: list[int]) -> dict[int, tuple[str, ...]]:
        asked.append(list(study_ids))
        return directions_of(connection, study_ids)  # type: ignore[arg-type]

    monkeypatch.setattr(study_reads.optuna_rows, "directions_of", counted)
    first = submit_study(store, tiny_spec(name="a")).id  # its answer reads the study
    list_studies(store)
    list_studies(store)
    second = submit_study(store, tiny_spec(name="b", objective={"metric": "loss"})).id
    list_studies(store)

    assert asked == [[first], [second]]


def test_a_study_marked_at_another_time_lends_no_directions(
    store: Store, tiny_spec: Callable[..., StudySpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of another automl study under this one's id (``optuna.copy_study`` copies
    the other's mark, with its time) is not this study's Optuna study."""
    monkeypatch.setattr(study_reads, "_HEADS", {})
    study_id = submit_study(store, tiny_spec(objective={"metric": "loss"})).id
    with store.read() as connection:
        own = optuna_rows.directions_of(connection, [study_id])
    store.storage.set_study_user_attr(study_id, attrs.CREATED_AT, "2020-01-01T00:00:00+00:00")
    with store.read() as connection:
        copied = optuna_rows.directions_of(connection, [study_id])

    assert own == {study_id: ("minimize",)}
    assert copied == {}
    assert get_study(store, study_id).directions == ["minimize"]  # read from the spec


def test_a_pareto_fronts_size_is_found_once_per_completed_trial(
    store: Store, tiny_spec: Callable[..., StudySpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``status`` is polled: the front, read from every completed trial's values, is
    found again only once another trial completed (a reviewer)."""
    objectives = {"objective": None, "objectives": [{"metric": "accuracy"}, {"metric": "loss"}]}
    study_id = submit_study(store, tiny_spec(**objectives, pruner=None)).id
    drive(store, study_id, [(0.9, 0.5), (0.8, 0.3)])
    real, reads = optuna_rows.completed_values, []

    def counted(connection: object, study: int) -> dict[int, list[float]]:
        reads.append(study)
        return real(connection, study)  # type: ignore[arg-type]

    monkeypatch.setattr(optuna_rows, "completed_values", counted)

    sizes = [get_study(store, study_id).pareto_front_size for _ in range(3)]
    drive(store, study_id, [(0.95, 0.2)])  # dominates both
    sizes.append(get_study(store, study_id).pareto_front_size)

    assert sizes == [2, 2, 2, 1]
    assert reads == [study_id, study_id]
