"""Pins the SQL automl runs on Optuna's tables against the installed Optuna's real schema.

If an Optuna release renames a table, a column or an enum value these statements use,
these tests fail on both backends before anything else does.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from automl.store import Store, attrs, optuna_rows, running_trial_template, tables
from tests.conftest import recorded_statements


def _study(store: Store, name: str, direction: str = "maximize") -> tuple[optuna.Study, int]:
    study = optuna.create_study(storage=store.storage, study_name=name, direction=direction)
    return study, store.storage.get_study_id_from_name(name)


def test_fail_running_trial_is_a_compare_and_set(store: Store) -> None:
    study, _ = _study(store, "cas")
    running, finished = study.ask(), study.ask()
    study.tell(finished, 1.0)

    with store.write() as connection:
        assert optuna_rows.fail_running_trial(connection, running._trial_id, {"k": "v"})
        assert not optuna_rows.fail_running_trial(connection, running._trial_id, {"k": "w"})
        assert not optuna_rows.fail_running_trial(connection, finished._trial_id, {"k": "x"})
        assert optuna_rows.trial_state(connection, finished._trial_id) == TrialState.COMPLETE
        assert optuna_rows.trial_attr(connection, running._trial_id, "k") == "v"
        assert optuna_rows.trial_state(connection, 987_654) is None

    failed = store.storage.get_trial(running._trial_id)
    assert failed.state == TrialState.FAIL
    assert failed.datetime_complete is not None and failed.duration is not None
    assert failed.duration.total_seconds() >= 0
    assert failed.user_attrs == {"k": "v"}
    assert store.storage.get_trial(finished._trial_id).user_attrs == {}


def test_a_running_trial_is_created_as_optuna_creates_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "CET-01")  # local time an hour ahead of UTC
    time.tzset()
    try:
        _create_beside_optuna(store)
    finally:
        monkeypatch.undo()
        time.tzset()


def _create_beside_optuna(store: Store) -> None:
    study, study_id = _study(store, "create")
    template = running_trial_template(
        {"lease": "1:1", "nested": {"a": [1, 2]}},
        {"fixed_params": {"lr": 0.01}},
        {1: 0.5, 2: float("nan"), 3: float("inf")},
    )
    by_optuna = store.storage.create_new_trial(study_id, template)
    with store.write() as connection:  # another tool's study: not automl's to add to
        assert (
            optuna_rows.create_running_trial(
                connection, study_id, user_attrs={}, system_attrs={}, steps={}
            )
            is None
        )
    study.set_user_attr("automl.created_at", "2026-01-01T00:00:00+00:00")
    with store.write() as connection:
        created = optuna_rows.create_running_trial(
            connection,
            study_id,
            user_attrs=template.user_attrs,
            system_attrs=template.system_attrs,
            steps=template.intermediate_values,
        )
        assert created is not None
        trial_id, number = created
        assert trial_id != by_optuna and number == 1
        empty: dict[str, Any] = {}
        assert (
            optuna_rows.create_running_trial(
                connection, 987_654, user_attrs=empty, system_attrs=empty, steps={}
            )
            is None
        )

    ours, theirs = store.storage.get_trial(trial_id), store.storage.get_trial(by_optuna)
    for field in ("state", "user_attrs", "system_attrs", "params", "values"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.datetime_start is not None and theirs.datetime_start is not None
    assert abs(ours.datetime_start - theirs.datetime_start) < timedelta(seconds=60)
    assert ours.intermediate_values[1] == 0.5 and ours.intermediate_values[3] == float("inf")
    assert ours.intermediate_values[2] != ours.intermediate_values[2]  # NaN
    assert study.ask().number == 2  # Optuna numbers on after it
    study.tell(number, 0.7)  # and can end it
    assert store.storage.get_trial(trial_id).state == TrialState.COMPLETE


def test_a_running_trial_ends_as_optuna_ends_it(store: Store) -> None:
    study = optuna.create_study(
        storage=store.storage, study_name="end", directions=["maximize", "minimize"]
    )
    ours, theirs, pruned, done = (study.ask() for _ in range(4))
    values = [float("inf"), -0.5]
    store.storage.set_trial_state_values(theirs._trial_id, TrialState.COMPLETE, values)
    store.storage.set_trial_state_values(done._trial_id, TrialState.COMPLETE, [1.0, 1.0])
    with store.write() as connection:
        assert optuna_rows.end_running_trial(
            connection, ours._trial_id, TrialState.COMPLETE, values
        )
        assert optuna_rows.end_running_trial(connection, pruned._trial_id, TrialState.PRUNED, None)
        assert not optuna_rows.end_running_trial(  # compare-and-set: already ended
            connection, done._trial_id, TrialState.FAIL, None
        )

    mine, reference = (store.storage.get_trial(t._trial_id) for t in (ours, theirs))
    assert (mine.state, mine.values) == (reference.state, reference.values)
    assert mine.datetime_complete is not None and reference.datetime_complete is not None
    assert abs(mine.datetime_complete - reference.datetime_complete).total_seconds() < 60
    ended = store.storage.get_trial(pruned._trial_id)
    assert (ended.state, ended.values) == (TrialState.PRUNED, None)
    assert store.storage.get_trial(done._trial_id).values == [1.0, 1.0]
    assert [t.number for t in study.best_trials] == [mine.number, reference.number]


def test_put_attrs_replace_and_are_read_by_optuna(store: Store) -> None:
    study, study_id = _study(store, "attrs")
    trial = study.ask()
    study.set_user_attr("keep", 1)
    with store.write() as connection:
        optuna_rows.put_study_attrs(connection, study_id, {"status": "queued", "n": [1, 2]})
        optuna_rows.put_study_attrs(connection, study_id, {"status": "running"})
        optuna_rows.put_trial_attrs(connection, trial._trial_id, {"a": {"b": None}})
    assert store.storage.get_study_user_attrs(study_id) == {
        "keep": 1,
        "status": "running",
        "n": [1, 2],
    }
    assert store.storage.get_trial_user_attrs(trial._trial_id) == {"a": {"b": None}}


def _ask(study: optuna.Study) -> optuna.Trial:
    """A trial as automl's workers create and end them (with a ticket and a recorded
    result: only those are ranked)."""
    trial = study.ask()
    trial.set_user_attr(attrs.TICKET, trial.number)
    trial.set_user_attr(attrs.METRICS, {"accuracy": 0.5})
    return trial


def test_counts_pages_and_best_values(store: Store) -> None:
    high, high_id = _study(store, "high")
    low, low_id = _study(store, "low", "minimize")
    for value in (0.3, 0.9, 0.5):
        high.tell(_ask(high), value)
    high.tell(_ask(high), state=TrialState.FAIL)
    _ask(high)
    for value in (4.0, 2.0):
        low.tell(_ask(low), value)
    low.tell(low.ask(), 1.0)  # not automl's: never the best

    with store.read() as connection:
        assert optuna_rows.count_trials(connection, high_id) == 5
        assert optuna_rows.count_trials(connection, high_id, TrialState.COMPLETE) == 3
        assert optuna_rows.count_trials(connection, high_id, TrialState.RUNNING) == 1
        ids = optuna_rows.page_trial_ids(connection, high_id, None, limit=2, offset=1)
        running = optuna_rows.page_trial_ids(connection, high_id, TrialState.RUNNING, 10, 0)
        best = optuna_rows.best_values(connection, [high_id], [low_id])
        best_high = optuna_rows.best_trial_id(connection, high_id, maximize=True)
        best_low = optuna_rows.best_trial_id(connection, low_id, maximize=False)
        taken = optuna_rows.taken_study_names(connection, ["high", "nope", "low"])
    assert [store.storage.get_trial(i).number for i in ids] == [1, 2]
    assert [store.storage.get_trial(i).number for i in running] == [4]
    assert best == {high_id: 0.9, low_id: 2.0}
    assert store.storage.get_trial(best_high).value == 0.9
    assert store.storage.get_trial(best_low).value == 2.0
    assert taken == {"high", "low"}


def test_directions_are_read_of_studies_marked_automls(store: Store) -> None:
    """By objective, and only where ``automl.created_at`` marks the study automl's."""
    optuna.create_study(
        storage=store.storage, study_name="two", directions=["minimize", "maximize"]
    ).set_user_attr(attrs.CREATED_AT, "2026-01-01T00:00:00+00:00")
    _study(store, "unmarked", "minimize")
    two, unmarked = (store.storage.get_study_id_from_name(n) for n in ("two", "unmarked"))

    with store.read() as connection:
        found = optuna_rows.directions_of(connection, [two, unmarked, 999])

    assert found == {two: ("minimize", "maximize")}


def test_running_trials_are_found_by_a_user_attribute(store: Store) -> None:
    study, study_id = _study(store, "lease")
    mine, other, done = study.ask(), study.ask(), study.ask()
    mine.set_user_attr("automl.lease", "7:1")
    other.set_user_attr("automl.lease", "7:2")
    done.set_user_attr("automl.lease", "7:1")
    study.tell(done, 1.0)
    with store.read() as connection:
        found = optuna_rows.running_trials_with_attr(connection, study_id, "automl.lease", "7:1")
    assert found == [mine._trial_id]


def test_half_created_studies_are_marked_without_a_row_a_trial_or_another_record(
    store: Store,
) -> None:
    known, known_id = _study(store, "known")
    orphan, orphan_id = _study(store, "orphan")
    _study(store, "plain")
    known.set_user_attr("automl.created_at", "2026-01-01T00:00:00+00:00")
    orphan.set_user_attr("automl.created_at", "2026-01-02T00:00:00+00:00")
    copied, _ = _study(store, "copied")  # a copy of an automl study: its trials stay
    copied.set_user_attr("automl.created_at", "2026-01-03T00:00:00+00:00")
    copied.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    recorded, _ = _study(store, "recorded")  # a copy from before its first trial
    recorded.set_user_attr("automl.created_at", "2026-01-04T00:00:00+00:00")
    recorded.set_user_attr("automl.status", "queued")
    noted, noted_id = _study(store, "noted")  # attributes not automl's do not count
    noted.set_user_attr("automl.created_at", "2026-01-05T00:00:00+00:00")
    noted.set_user_attr("automlx", 1)
    with store.write() as connection:
        connection.execute(
            tables.studies.insert().values(
                study_id=known_id,
                name="known",
                status="queued",
                n_trials=1,
                max_retries=0,
                max_failed=0,
                failure_limit=0,
                seed=0,
                spec="{}",
                created_at=0.0,
            )
        )
    with store.read() as connection:
        found = optuna_rows.half_created_studies(connection, sa.select(tables.studies.c.study_id))
    assert found == {
        orphan_id: "2026-01-02T00:00:00+00:00",
        noted_id: "2026-01-05T00:00:00+00:00",
    }


def test_load_trials_matches_optuna(store: Store) -> None:
    study, _ = _study(store, "load")
    first = study.ask()
    first.suggest_float("lr", 1e-4, 1e-1, log=True)
    first.suggest_categorical("optimizer", ["adam", "sgd"])
    first.suggest_int("width", 8, 64, step=8)
    first.report(0.5, 1)
    first.report(float("inf"), 2)
    first.set_user_attr("metrics", {"accuracy": 0.5})
    study.tell(first, 0.75)
    second = study.ask()
    study.tell(second, state=TrialState.FAIL)
    running = study.ask()
    ids = [running._trial_id, first._trial_id, second._trial_id]

    with store.read() as connection:
        loaded = optuna_rows.load_trials(connection, [*ids, 987_654])

    assert [t._trial_id for t in loaded] == ids  # in the order asked; unknown ids skipped
    for ours in loaded:
        theirs = store.storage.get_trial(ours._trial_id)
        for field in ("number", "state", "values", "params", "distributions", "user_attrs"):
            assert getattr(ours, field) == getattr(theirs, field), field
        assert ours.intermediate_values == theirs.intermediate_values
        assert ours.datetime_start == theirs.datetime_start
        assert ours.datetime_complete == theirs.datetime_complete


def test_a_page_of_trials_matches_loading_its_ids(store: Store) -> None:
    study, study_id = _study(store, "page")
    for index in range(5):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_categorical("optimizer", ["adam", "sgd"])
        trial.report(0.1 * index, 1)
        trial.set_user_attr("automl.metrics", {"accuracy": 0.5})
        trial.set_user_attr("automl.history", [{"loss": 1.0}] * 50)
        if index != 3:
            study.tell(trial, 0.1 * index)
    other, _ = _study(store, "other")
    other.tell(other.ask(), 1.0)

    with store.read() as connection:
        ids = optuna_rows.page_trial_ids(connection, study_id, None, limit=3, offset=1)
        page, total = optuna_rows.load_trial_page(connection, study_id, None, limit=3, offset=1)
        running, running_total = optuna_rows.load_trial_page(
            connection, study_id, TrialState.RUNNING, 10, 0
        )
        loaded = optuna_rows.load_trials(connection, ids)
        lean, _ = optuna_rows.load_trial_page(
            connection, study_id, None, 10, 0, user_attr_keys=["automl.metrics", "absent"]
        )
        nothing = optuna_rows.load_trial_page(connection, study_id, None, 10, 5)
        unlisted = optuna_rows.load_trial_page(
            connection, study_id, None, 10, 0, where=[sa.false()]
        )

    assert [t.number for t in page] == [1, 2, 3]
    assert (total, running_total) == (5, 1)
    assert [t.number for t in running] == [3]
    for ours, theirs in zip(page, loaded, strict=True):
        for field in ("number", "state", "values", "params", "distributions", "user_attrs"):
            assert getattr(ours, field) == getattr(theirs, field), field
        assert list(ours.params) == ["lr", "optimizer"]  # in the order they were suggested
        assert ours.intermediate_values == theirs.intermediate_values
        assert ours.datetime_start == theirs.datetime_start
    assert [t.user_attrs for t in lean] == [{"automl.metrics": {"accuracy": 0.5}}] * 5
    assert nothing == unlisted == ([], None)


def test_the_rows_a_study_deletion_covers_are_every_table_of_optunas_that_refers_to_one(
    store: Store,
) -> None:
    """A table a later Optuna adds under trials or studies fails this first."""
    inspector = sa.inspect(store.engine)
    refers: dict[str, set[str]] = {"trials": set(), "studies": set()}
    for name in inspector.get_table_names():
        for key in inspector.get_foreign_keys(name):
            if key["referred_table"] in refers and not name.startswith("automl_"):
                refers[key["referred_table"]].add(name)

    assert refers["trials"] == {table.name for table in optuna_rows.TRIAL_ROWS}
    assert refers["studies"] == {"trials", *(table.name for table in optuna_rows.STUDY_ROWS)}


def test_deleting_a_study_removes_all_its_rows_in_statements_per_table(store: Store) -> None:
    def filled(name: str, n: int) -> int:
        study, study_id = _study(store, name)
        study.set_user_attr("owner", "me")
        study.set_metric_names(["accuracy"])
        for index in range(n):
            trial = study.ask()
            trial.suggest_float("lr", 1e-4, 1e-1, log=True)
            trial.report(0.5, 1)
            trial.set_user_attr("metrics", {"accuracy": 0.5})
            store.storage.record_heartbeat(trial._trial_id)
            study.tell(trial, 0.5 + index / 100)
        return study_id

    small, large, kept = filled("small", 1), filled("large", 12), filled("kept", 2)
    before = _rows_of(store)
    statements: list[int] = []
    for study_id in (small, large):
        with recorded_statements(store.engine) as counted, store.write() as connection:
            optuna_rows.delete_study(connection, study_id)
        statements.append(len(counted))
        with store.write() as connection:
            optuna_rows.delete_study(connection, study_id)  # again: nothing left, no error

    assert statements[0] == statements[1]
    assert [s.study_name for s in store.storage.get_all_studies()] == ["kept"]
    after = _rows_of(store)
    assert after["trials"] == 2 and after["trial_heartbeats"] == 2 and after["studies"] == 1
    assert all(after[name] < count for name, count in before.items() if count)
    assert len(store.storage.get_all_trials(kept)) == 2


def _rows_of(store: Store) -> dict[str, int]:
    """Rows in each of Optuna's tables."""
    names = ["studies", "trials"] + [
        t.name for t in optuna_rows.TRIAL_ROWS + optuna_rows.STUDY_ROWS
    ]
    with store.read() as connection:
        return {name: connection.scalar(sa.text(f"SELECT count(*) FROM {name}")) for name in names}
