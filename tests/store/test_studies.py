"""Study lifecycle and reads; every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

import automl.store.studies as studies_module
from automl.spec import SpecError, StudySpec
from automl.store import (
    FailureKind,
    Lease,
    LeaseLostError,
    NoBestTrialError,
    Store,
    StudyNotFoundError,
    StudyStateError,
    StudyStatus,
    TrialNotFoundError,
    TrialWrites,
    attrs,
    best_trials,
    cancel_study,
    claim,
    delete_study,
    end_study_if_done,
    enqueue_trials,
    extend_study,
    finish_and_settle,
    get_frozen_trial,
    get_status,
    get_study,
    get_trial,
    list_studies,
    list_trials,
    load_state_dict,
    optuna_rows,
    record_checkpoint,
    release,
    remove_orphans,
    rerun_failed,
    resume_study,
    save_model_card,
    save_weights,
    submit_study,
    submitted_spec,
    tables,
    write_checkpoint,
    write_trial,
)
from automl.store.shared_artifacts import shared_artifact_id, shared_use_attr
from tests.conftest import recorded_statements, store_at
from tests.store.conftest import drive, end_trial, start_trial

SpecFactory = Callable[..., StudySpec]


def _tickets(store: Store, study_id: int) -> list[tuple[str, str | None]]:
    with store.read() as connection:
        rows = connection.execute(
            sa.select(tables.tickets.c.state, tables.tickets.c.outcome)
            .where(tables.tickets.c.study_id == study_id)
            .order_by(tables.tickets.c.ticket_id)
        ).all()
    return [(state, outcome) for state, outcome in rows]


def _set_deadline(store: Store, study_id: int, seconds_from_now: float) -> None:
    with store.write() as connection:
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == study_id)
            .values(deadline=tables.db_now() + seconds_from_now)
        )


# --- submit ------------------------------------------------------------------------------------


def test_submit_creates_a_queued_study_without_per_trial_rows(
    store: Store, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(budget={"n_trials": 5000, "max_failed": 1})
    detail = submit_study(store, spec)

    assert (detail.name, detail.status, detail.n_trials) == ("tiny", StudyStatus.QUEUED, 5000)
    assert detail.counts.waiting == 5000
    assert detail.counts.finished == detail.counts.running == 0
    assert detail.best_value is None and detail.started_at is None
    assert detail.spec["budget"]["n_trials"] == 5000
    assert submitted_spec(store, detail.id) == spec
    assert _tickets(store, detail.id) == []  # budget units are issued as workers claim
    assert store.storage.get_all_trials(detail.id) == []
    # Optuna (and optuna-dashboard) sees the study, its spec and its status.
    user_attrs = store.storage.get_study_user_attrs(detail.id)
    assert user_attrs[attrs.STATUS] == "queued"
    assert user_attrs[attrs.SPEC]["name"] == "tiny"


def test_the_study_shows_its_seed_given_or_drawn_at_submit(
    store: Store, tiny_spec: SpecFactory
) -> None:
    given = submit_study(store, tiny_spec(sampler={"name": "random", "seed": 7}))
    assert given.seed == 7 and get_study(store, given.id).seed == 7
    drawn = submit_study(store, tiny_spec(sampler={"name": "random"}))
    assert drawn.spec["sampler"].get("seed") is None
    assert drawn.seed is not None and 0 <= drawn.seed < 2**31


def test_names_get_suffixes(store: Store, tiny_spec: SpecFactory) -> None:
    optuna.create_study(storage=store.storage, study_name="tiny-2")  # a plain Optuna study
    names = [submit_study(store, tiny_spec()).name for _ in range(4)]
    assert names[0] == "tiny" and names[2:] == ["tiny-3", "tiny-4"]
    # Not the project's own name: a random suffix, as for another project's study.
    assert re.fullmatch(r"tiny-2-[0-9a-f]{12}", names[1]), names


def test_idempotency_key_returns_the_first_study(store: Store, tiny_spec: SpecFactory) -> None:
    first = submit_study(store, tiny_spec(), idempotency_key="abc")
    again = submit_study(store, tiny_spec(), idempotency_key="abc")
    other = submit_study(store, tiny_spec(), idempotency_key="xyz")

    assert again.id == first.id and again.name == first.name
    assert other.id != first.id
    assert list_studies(store).count == 2
    with pytest.raises(StudyStateError, match="'abc' was already used for study"):
        submit_study(store, tiny_spec(name="changed"), idempotency_key="abc")


def test_an_idempotent_retry_may_order_keys_and_write_numbers_differently(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Once a retry serialized by another client (YAML sorts keys; 1.0 for 1) was a 409."""
    first = submit_study(
        store, tiny_spec(fixed={"epochs": 1, "batch_size": 64}), idempotency_key="k"
    )
    again = submit_study(
        store, tiny_spec(fixed={"batch_size": 64, "epochs": 1.0}), idempotency_key="k"
    )
    assert again.id == first.id
    with pytest.raises(StudyStateError, match="with a different spec"):
        submit_study(store, tiny_spec(fixed={"batch_size": 32, "epochs": 1}), idempotency_key="k")
    # A retry across an upgrade: the stored spec carries the earlier version's space_rules,
    # and lacks a field added since (a 409 once, from a study submitted before `enqueue`).
    with store.write() as connection:
        stored = json.loads(connection.scalar(sa.select(tables.studies.c.spec)))
        del stored["enqueue"]
        connection.execute(
            tables.studies.update().values(spec=json.dumps(stored | {"space_rules": 1}))
        )
    retried = submit_study(
        store, tiny_spec(fixed={"epochs": 1, "batch_size": 64}), idempotency_key="k"
    )
    assert retried.id == first.id


def test_half_created_study_is_invisible_and_removed_by_the_reaper(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """A submit that died after creating the Optuna study leaves nothing visible."""
    created = datetime.now(UTC) - timedelta(hours=1)
    orphan = optuna.create_study(storage=store.storage, study_name="tiny")
    orphan_id = store.storage.get_study_id_from_name("tiny")
    orphan.set_user_attr(attrs.CREATED_AT, created.isoformat())
    young = optuna.create_study(storage=store.storage, study_name="young")
    young.set_user_attr(attrs.CREATED_AT, datetime.now(UTC).isoformat())
    plain = optuna.create_study(storage=store.storage, study_name="plain")

    assert list_studies(store).count == 0
    assert claim(store, "w") is None
    with pytest.raises(StudyNotFoundError):
        get_study(store, orphan_id)

    assert remove_orphans(store, min_age_s=600) == [orphan_id]
    names = {s.study_name for s in store.storage.get_all_studies()}
    assert names == {"young", plain.study_name}  # the in-flight submit and plain Optuna stay
    assert submit_study(store, tiny_spec()).name == "tiny"  # the name is free again


def test_copies_and_renames_of_automl_studies_are_never_taken_for_half_created_ones(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Found by a tester: a study copied with ``optuna.copy_study`` (13 trials) or renamed
    in optuna-dashboard carries automl's creation mark, had no row of automl's under its
    id, and was deleted by the next sweep; a mark of another type stopped every sweep."""
    queued = submit_study(store, tiny_spec(name="queued"))
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    with store.write() as connection:  # as if submitted an hour ago
        optuna_rows.put_study_attrs(connection, queued.id, {attrs.CREATED_AT: hour_ago})
    source = optuna.load_study(study_name="queued", storage=store.storage)
    source.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    optuna.copy_study(
        from_study_name="queued",
        from_storage=store.storage,
        to_storage=store.storage,
        to_study_name="backup",
    )
    empty = optuna.create_study(storage=store.storage, study_name="empty-copy")
    for key, value in source.user_attrs.items():  # a copy made before any trial ran
        empty.set_user_attr(key, value)
    odd = optuna.create_study(storage=store.storage, study_name="odd-mark")
    odd.set_user_attr(attrs.CREATED_AT, 12)

    assert remove_orphans(store, min_age_s=600) == []

    names = {study.study_name for study in store.storage.get_all_studies()}
    assert names == {"queued", "backup", "empty-copy", "odd-mark"}


def test_a_submit_cut_off_after_its_first_commit_leaves_what_the_reaper_removes(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: a submit whose connection was cut after the Optuna study was
    created, and before it was marked automl's, left a study that nothing removed (196 of
    them in optuna-dashboard at 10% lost commits)."""

    def cut(*args: object, **kwargs: object) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(optuna.study.Study, "set_metric_names", cut)  # the next commit
    with pytest.raises(sa.exc.OperationalError):
        submit_study(store, tiny_spec())
    [left] = store.storage.get_all_studies()
    left_id = store.storage.get_study_id_from_name(left.study_name)
    monkeypatch.undo()

    assert list_studies(store).count == 0
    assert remove_orphans(store, min_age_s=0) == [left_id]
    assert store.storage.get_all_studies() == []


def test_a_submit_cut_off_at_its_row_leaves_what_the_reaper_removes(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer: the spec and the warm-start note are written before the row; a submit
    cut off in the row's commit left a study the sweep took for a copy, for good."""

    put_study_attrs = optuna_rows.put_study_attrs

    def cut(connection: sa.engine.Connection, study_id: int, values: dict[str, Any]) -> None:
        if attrs.STATUS in values:  # the status, in the row's transaction
            raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))
        put_study_attrs(connection, study_id, values)

    monkeypatch.setattr(optuna_rows, "put_study_attrs", cut)
    with pytest.raises(sa.exc.OperationalError):
        submit_study(store, tiny_spec())
    [left] = store.storage.get_all_studies()
    left_id = store.storage.get_study_id_from_name(left.study_name)
    monkeypatch.undo()
    assert attrs.SPEC in left.user_attrs

    assert list_studies(store).count == 0
    assert remove_orphans(store, min_age_s=0) == [left_id]
    assert store.storage.get_all_studies() == []


def test_a_submit_that_writes_its_row_after_the_sweep_found_it_keeps_its_study(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer: the sweep deleted what it had found without looking again, so a submit
    slow to write its row lost its Optuna study (and its study then failed as deleted)."""
    study_id = submit_study(store, tiny_spec()).id
    real = optuna_rows.half_created_studies
    found_before_the_row = {study_id: (datetime.now(UTC) - timedelta(hours=1)).isoformat()}
    scans: list[object] = []

    def stale_scan(connection: sa.engine.Connection, known: Any, among: Any = None) -> Any:
        scans.append(among)
        return found_before_the_row if among is None else real(connection, known, among)

    monkeypatch.setattr(optuna_rows, "half_created_studies", stale_scan)

    assert remove_orphans(store, min_age_s=0) == []

    assert scans == [None, [study_id]]  # looked again, under the lock
    assert get_study(store, study_id).status == StudyStatus.QUEUED


def test_a_submit_given_a_recorded_id_again_names_the_study_to_delete(
    tmp_path: Path, tiny_spec: SpecFactory
) -> None:
    """A reviewer: on a SQLite file whose tables Optuna created, an automl study deleted in
    optuna-dashboard gave its id to the next submission, whose row then clashed with the
    old one's: a 500 for every submit until the old study was deleted."""
    url = f"sqlite:///{tmp_path / 'optuna-made.db'}"
    optuna.storages.RDBStorage(url)  # Optuna's tables first: no AUTOINCREMENT
    store = store_at(url, tmp_path)
    try:
        first = submit_study(store, tiny_spec(name="first")).id
        store.storage.delete_study(first)  # outside automl

        with pytest.raises(StudyStateError, match=rf"`automl delete {first}` \(after"):
            submit_study(store, tiny_spec(name="second"))

        cancel_study(store, first)
        delete_study(store, first)
        assert submit_study(store, tiny_spec(name="second")).name == "second"
    finally:
        store.close()


def test_optunas_own_study_and_automls_agree(store: Store) -> None:
    """automl creates its Optuna studies by SQL (with their mark, in one commit): Optuna
    reads them as its own."""
    directions = [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    with store.write() as connection:
        study_id = optuna_rows.create_study(connection, "ours", directions, {"a": [1, "b"]})
    store.storage.create_new_study(directions, "theirs")
    with pytest.raises(sa.exc.IntegrityError), store.write() as connection:
        optuna_rows.create_study(connection, "theirs", directions, {})

    ours = optuna.load_study(study_name="ours", storage=store.storage)
    theirs = optuna.load_study(study_name="theirs", storage=store.storage)
    assert store.storage.get_study_id_from_name("ours") == study_id
    assert ours.directions == theirs.directions == directions
    assert ours.user_attrs == {"a": [1, "b"]}
    ours.tell(ours.ask(), [0.5, 2.0])
    assert ours.best_trials[0].values == [0.5, 2.0]


# --- reads -------------------------------------------------------------------------------------


def test_unknown_study_raises_study_not_found(store: Store) -> None:
    missing = 987_654
    for call in (
        lambda: get_study(store, missing),
        lambda: get_status(store, missing),
        lambda: submitted_spec(store, missing),
        lambda: cancel_study(store, missing),
        lambda: extend_study(store, missing, 1),
        lambda: resume_study(store, missing),
        lambda: rerun_failed(store, missing),
        lambda: enqueue_trials(store, missing, [{}]),
        lambda: delete_study(store, missing),
        lambda: best_trials(store, missing),
        lambda: list_trials(store, missing),
        lambda: get_trial(store, missing, 0),
        lambda: end_study_if_done(store, missing),
    ):
        with pytest.raises(StudyNotFoundError, match=f"study {missing} not found"):
            call()


def test_list_studies_pages_newest_first_and_filters(store: Store, tiny_spec: SpecFactory) -> None:
    ids = [submit_study(store, tiny_spec(name=f"s{i}")).id for i in range(3)]
    cancel_study(store, ids[1])

    first = list_studies(store, limit=2)
    assert (first.count, [s.id for s in first.data]) == (3, [ids[2], ids[1]])
    assert [s.id for s in list_studies(store, limit=2, offset=2).data] == [ids[0]]
    queued = list_studies(store, status=StudyStatus.QUEUED)
    assert (queued.count, [s.id for s in queued.data]) == (2, [ids[2], ids[0]])
    assert list_studies(store, status=StudyStatus.COMPLETED).count == 0


def test_counts_and_best_value_come_from_tickets_and_trials(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 6, "max_failed": 5})).id
    drive(store, study_id, [0.5, 0.9, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING])

    detail = get_study(store, study_id)
    counts = detail.counts
    assert (counts.complete, counts.pruned, counts.fail, counts.running) == (2, 1, 1, 1)
    assert (counts.waiting, counts.finished) == (1, 4)
    assert detail.best_value == pytest.approx(0.9)
    assert detail.status == StudyStatus.RUNNING and detail.started_at is not None
    assert list_studies(store).data[0].best_value == pytest.approx(0.9)


def test_list_trials_reads_one_page_in_number_order(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 5, "max_failed": 5})).id
    drive(store, study_id, [0.7, TrialState.FAIL, 0.9, TrialState.RUNNING])

    listed = list_trials(store, study_id)
    assert listed.count == 4
    assert [t.number for t in listed.data] == [0, 1, 2, 3]
    assert [t.state for t in listed.data] == ["complete", "fail", "complete", "running"]
    assert listed.data[1].failure == "error"
    assert listed.data[0].ticket is not None
    complete = list_trials(store, study_id, state=TrialState.COMPLETE)
    assert (complete.count, [t.number for t in complete.data]) == (2, [0, 2])
    page = list_trials(store, study_id, limit=2, offset=1)
    assert (page.count, [t.number for t in page.data]) == (4, [1, 2])
    past_the_end = list_trials(store, study_id, limit=2, offset=10)
    assert (past_the_end.count, past_the_end.data) == (4, [])
    with store.write() as connection:  # a study being deleted is no longer listed
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == study_id)
            .values(status=tables.DELETING)
        )
    with pytest.raises(StudyNotFoundError):
        list_trials(store, study_id)


def test_list_trials_without_per_epoch_values_keeps_a_pruned_value(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Left out, the per-epoch values are null, but a pruned trial's value, its last
    epoch's, is still read (only that one of its steps)."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 3})).id
    pruned, complete = drive(store, study_id, [TrialState.RUNNING, TrialState.RUNNING])
    curves = [[0.3, 0.6, 0.4], [0.5, 0.8]]
    for (_, trial_id), values in zip([pruned, complete], curves, strict=True):
        for step, value in enumerate(values, start=1):
            store.storage.set_trial_intermediate_value(trial_id, step, value)
    end_trial(store, *pruned, TrialState.PRUNED)
    end_trial(store, *complete, 0.8)

    whole = list_trials(store, study_id)
    lean = list_trials(store, study_id, intermediate_values=False)

    assert [t.intermediate_values for t in whole.data] == [
        {1: 0.3, 2: 0.6, 3: 0.4},
        {1: 0.5, 2: 0.8},
    ]
    assert [t.intermediate_values for t in lean.data] == [None, None]
    assert [t.values for t in lean.data] == [[0.4], [0.8]] == [t.values for t in whole.data]
    assert lean.count == whole.count == 2


def test_get_trial_by_number(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec()).id
    lease, trial_id = start_trial(store, study_id)
    store.storage.set_trial_user_attr(trial_id, attrs.METRICS, {"accuracy": 0.75})
    store.storage.set_trial_intermediate_value(trial_id, 1, 0.75)
    end_trial(store, lease, trial_id, 0.75)

    detail = get_trial(store, study_id, 0)
    assert (detail.number, detail.state, detail.values) == (0, "complete", [pytest.approx(0.75)])
    assert detail.metrics == {"accuracy": 0.75}
    assert detail.intermediate_values == {1: pytest.approx(0.75)}
    assert detail.weights_available is False
    assert get_frozen_trial(store, study_id, 0).user_attrs[attrs.LEASE] == lease.key
    with pytest.raises(TrialNotFoundError, match=f"study {study_id} has no trial 99"):
        get_trial(store, study_id, 99)


def test_best_trials(store: Store, tiny_spec: SpecFactory) -> None:
    maximize = submit_study(store, tiny_spec(budget={"n_trials": 4, "max_failed": 1})).id
    with pytest.raises(NoBestTrialError):
        best_trials(store, maximize)
    drive(store, maximize, [0.5, 0.9, 0.7, TrialState.FAIL])
    [trial] = best_trials(store, maximize).trials
    assert (trial.number, trial.values) == (1, [pytest.approx(0.9)])

    minimize = submit_study(store, tiny_spec(name="m", objective={"metric": "loss"})).id
    drive(store, minimize, [0.5, 0.2, 0.7])
    assert [t.number for t in best_trials(store, minimize).trials] == [1]
    detail = get_study(store, minimize)
    assert (detail.best_value, detail.pareto_front_size) == (pytest.approx(0.2), None)


def test_best_trials_of_multi_objective_is_the_pareto_front(
    store: Store, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(
        objective=None,
        objectives=[{"metric": "accuracy"}, {"metric": "loss"}],
        budget={"n_trials": 4, "max_failed": 1},
        pruner=None,
    )
    study_id = submit_study(store, spec).id
    assert get_study(store, study_id).pareto_front_size == 0
    drive(store, study_id, [(0.9, 0.5), (0.8, 0.3), (0.7, 0.6), (0.95, 0.9)])
    best = best_trials(store, study_id)
    assert best.directions == ["maximize", "minimize"]
    assert [t.number for t in best.trials] == [0, 1, 3]
    detail = get_study(store, study_id)
    assert (detail.best_value, detail.pareto_front_size) == (None, 3)


# --- settle ------------------------------------------------------------------------------------


def test_settle_completes_when_every_unit_ended(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 3, "max_failed": 1})).id
    assert end_study_if_done(store, study_id) == StudyStatus.QUEUED
    drive(store, study_id, [0.5, TrialState.PRUNED])
    assert end_study_if_done(store, study_id) == StudyStatus.RUNNING
    drive(store, study_id, [TrialState.FAIL])  # one failure is allowed
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED

    detail = get_study(store, study_id)
    assert (detail.status_reason, detail.counts.finished) == ("all trials finished", 3)
    assert detail.finished_at is not None
    assert store.storage.get_study_user_attrs(study_id)[attrs.STATUS] == "completed"
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED  # idempotent


def test_only_error_failures_count_toward_max_failed(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 6, "max_failed": 1})).id
    drive(store, study_id, [FailureKind.WORKER_LOST, FailureKind.OUT_OF_MEMORY, TrialState.FAIL])
    assert end_study_if_done(store, study_id) == StudyStatus.RUNNING
    drive(store, study_id, [TrialState.FAIL])
    assert end_study_if_done(store, study_id) == StudyStatus.FAILED

    detail = get_study(store, study_id)
    assert detail.status_reason == "2 trials failed (max_failed is 1)"
    # The 2 units never handed out were dropped when it failed (a resume runs them).
    assert (detail.counts.fail, detail.counts.waiting, detail.counts.cancelled) == (4, 0, 2)
    assert claim(store, "w", study_id) is None


def test_timeout_stops_claims_then_completes_once_nothing_runs(
    store: Store, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(budget={"n_trials": 5, "max_failed": 1, "timeout": 3600})
    study_id = submit_study(store, spec).id
    lease, trial_id = start_trial(store, study_id)
    _set_deadline(store, study_id, -1)

    assert claim(store, "w", study_id) is None  # no trial starts after the deadline
    assert end_study_if_done(store, study_id) == StudyStatus.RUNNING  # one still runs
    end_trial(store, lease, trial_id, 0.5)
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED
    detail = get_study(store, study_id)
    assert detail.status_reason == "timeout reached"
    assert (detail.counts.complete, detail.counts.waiting) == (1, 0)


# --- lifecycle ---------------------------------------------------------------------------------


def test_cancel_leaves_nothing_waiting(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 6, "max_failed": 1})).id
    enqueue_trials(store, study_id, [{"lr": 0.005}, {"lr": 0.002}])
    drive(store, study_id, [0.5, TrialState.RUNNING])

    detail = cancel_study(store, study_id)
    assert (detail.status, detail.status_reason) == (StudyStatus.CANCELLED, "cancelled by request")
    assert detail.counts.waiting == 0
    # The budget never handed out counts as cancelled (a tester found counts summing to
    # less than n_trials): a resume runs it.
    assert (detail.counts.cancelled, detail.counts.running, detail.counts.complete) == (4, 1, 1)
    assert claim(store, "w") is None
    assert {t.state for t in store.storage.get_all_trials(study_id)} <= {
        TrialState.COMPLETE,
        TrialState.RUNNING,
    }
    with pytest.raises(StudyStateError, match="already cancelled"):
        cancel_study(store, study_id)


def test_extend_adds_budget_to_an_active_study(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 1})).id
    assert extend_study(store, study_id, 2).n_trials == 3
    drive(store, study_id, [0.1, 0.2, 0.3])
    assert claim(store, "w", study_id) is None
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED
    with pytest.raises(StudyStateError, match="resume it"):
        extend_study(store, study_id, 1)


def test_a_gp_study_grows_to_gps_limit_and_no_further(store: Store, tiny_spec: SpecFactory) -> None:
    """gp's cost per trial grows with the cube of the history: neither extend nor resume
    may take a gp study past the trials it can model."""
    spec = tiny_spec(sampler={"name": "gp"}, budget={"n_trials": 999, "max_failed": 1})
    study_id = submit_study(store, spec).id
    assert extend_study(store, study_id, 1).n_trials == 1000
    with pytest.raises(SpecError) as refused:
        extend_study(store, study_id, 1)
    cancel_study(store, study_id)
    with pytest.raises(SpecError, match="at most 1,000 trials"):
        resume_study(store, study_id, add_trials=1)

    [error] = refused.value.errors
    assert error.path == "add_trials"
    assert error.msg.startswith("study 1 has 1,000 trials: sampler gp refits its model")
    assert get_study(store, study_id).n_trials == 1000
    assert resume_study(store, study_id).n_trials == 1000  # its own budget runs again


def test_resume_requeues_cancelled_work_and_adds_budget(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 4, "max_failed": 1})).id
    enqueue_trials(store, study_id, [{"lr": 0.003}, {"lr": 0.004}])
    drive(store, study_id, [0.5])  # runs the first config
    assert cancel_study(store, study_id).counts.cancelled == 3  # an enqueued one, 2 unissued
    with pytest.raises(StudyStateError, match="only cancelled, failed or completed"):
        resume_study(store, submit_study(store, tiny_spec(name="other")).id)

    detail = resume_study(store, study_id, add_trials=2)
    assert detail.status == StudyStatus.QUEUED
    assert (detail.n_trials, detail.counts.waiting, detail.counts.cancelled) == (6, 5, 0)
    assert detail.status_reason == "resumed: 1 trial re-queued, 2 never started, 2 added"
    assert detail.finished_at is None
    lease = claim(store, "w", study_id)
    assert lease is not None and lease.params == {"lr": 0.004}  # the cancelled config first
    assert get_status(store, study_id) == StudyStatus.RUNNING


def test_resume_right_after_a_cancel_counts_the_trials_still_stopping(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Found by a tester: a resume before the workers had stopped their cancelled trials
    was refused ("no trials left to run; resume it with add_trials > 0"); a few seconds
    later the same resume was accepted."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2})).id
    (first, _), _ = drive(store, study_id, [TrialState.RUNNING, TrialState.RUNNING])
    cancel_study(store, study_id)

    detail = resume_study(store, study_id)

    assert detail.status == StudyStatus.QUEUED
    assert detail.status_reason == (
        "resumed: 0 trials re-queued, 0 never started, 0 added, 2 still stopping (they run again)"
    )
    # The worker that saw the cancel hands its trial back: due again, as the study is active.
    assert release(store, first, FailureKind.CANCELLED, "stopping", requeue=True)
    assert get_study(store, study_id).counts.waiting == 1
    assert claim(store, "w", study_id) is not None


def test_resume_of_a_finished_study_needs_more_budget(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    drive(store, study_id, [0.5])
    end_study_if_done(store, study_id)
    with pytest.raises(StudyStateError, match="add_trials > 0"):
        resume_study(store, study_id)
    assert resume_study(store, study_id, add_trials=1).counts.waiting == 1


def test_resume_of_a_failed_study_counts_failures_anew(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 4, "max_failed": 0})).id
    drive(store, study_id, [TrialState.FAIL])
    assert end_study_if_done(store, study_id) == StudyStatus.FAILED
    resume_study(store, study_id)
    drive(store, study_id, [0.5])
    assert end_study_if_done(store, study_id) == StudyStatus.RUNNING  # not failed again at once


def test_rerun_failed_requeues_failed_trials_and_reopens(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_failed": 5})).id
    with pytest.raises(StudyStateError, match="no failed trials"):
        rerun_failed(store, study_id)
    drive(store, study_id, [0.5, TrialState.FAIL])
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED

    detail = rerun_failed(store, study_id)
    assert (detail.status, detail.counts.waiting, detail.counts.fail) == (StudyStatus.QUEUED, 1, 0)
    assert detail.status_reason == "re-running 1 failed trial"
    drive(store, study_id, [0.7])
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED
    assert get_study(store, study_id).counts.complete == 2


def test_enqueue_takes_budget_and_runs_before_the_sampler(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 3, "max_failed": 1})).id
    detail = enqueue_trials(store, study_id, [{"optimizer": "sgd", "lr": 0.002}, {"lr": 0.003}])
    assert detail.counts.waiting == 3
    leases = [claim(store, f"w{i}", study_id) for i in range(4)]
    assert [lease.params if lease else None for lease in leases] == [
        {"optimizer": "sgd", "lr": 0.002},
        {"lr": 0.003},
        None,  # a fresh unit: the sampler proposes
        None,  # nothing left
    ]
    assert [lease.source for lease in leases if lease] == ["enqueued", "enqueued", "sampler"]
    with pytest.raises(StudyStateError, match="0 trials of budget left for 1 configuration;"):
        enqueue_trials(store, study_id, [{"lr": 0.004}])


def test_enqueue_checks_every_config(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 5})).id
    configs = [
        {"lr": 0.5},
        {"epochs": 3},
        {"optimizer": "adamx", "nope": 1},
        {"lr": "x"},
        {"optimizer": "adam", "momentum": 0.7},
    ]
    with pytest.raises(SpecError) as info:
        enqueue_trials(store, study_id, configs)
    found = {error.path: error.msg for error in info.value.errors}
    assert set(found) == {
        "configs[0].lr",
        "configs[1].epochs",
        "configs[2].optimizer",
        "configs[2].nope",
        "configs[3].lr",
        "configs[4].momentum",
    }
    assert "outside [0.001, 0.01]" in found["configs[0].lr"]
    assert "is fixed in the spec" in found["configs[1].epochs"]
    assert "searched params: lr, momentum, optimizer" in found["configs[2].nope"]
    assert "applies only when optimizer is one of ['sgd']" in found["configs[4].momentum"]
    assert get_study(store, study_id).counts.waiting == 5  # nothing was queued
    cancel_study(store, study_id)
    with pytest.raises(StudyStateError, match="resume it first"):
        enqueue_trials(store, study_id, [{"lr": 0.005}])


def test_a_deleted_studys_id_is_never_given_again(store: Store, tiny_spec: SpecFactory) -> None:
    """SQLite gave the highest id again once its study was deleted: a script, warm start
    or export naming the old study then silently reached the new one."""
    first = submit_study(store, tiny_spec(name="first")).id
    second = submit_study(store, tiny_spec(name="second")).id
    cancel_study(store, second)
    delete_study(store, second)

    third = submit_study(store, tiny_spec(name="third")).id

    assert third > second > first
    with pytest.raises(StudyNotFoundError):
        get_study(store, second)


def test_delete_removes_the_study_its_trials_and_artifacts(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    with pytest.raises(StudyStateError, match="cancel it first"):
        delete_study(store, study_id)
    lease, trial_id = start_trial(store, study_id)
    study = optuna.load_study(study_name="tiny", storage=store.storage)
    trial = optuna.Trial(study, trial_id)
    save_weights(store.storage, trial, {"w": torch.ones(3)}, store.artifacts)
    weights_id = store.storage.get_trial(trial_id).user_attrs[attrs.WEIGHTS]
    end_trial(store, lease, trial_id, 0.5)
    end_study_if_done(store, study_id)
    assert load_state_dict(get_frozen_trial(store, study_id, 0), store.artifacts)["w"].sum() == 3

    delete_study(store, study_id)

    with pytest.raises(StudyNotFoundError):
        get_study(store, study_id)
    assert store.storage.get_all_studies() == []
    assert _tickets(store, study_id) == []
    with pytest.raises(optuna.artifacts.exceptions.ArtifactNotFound):
        store.artifacts.open_reader(weights_id)
    assert submit_study(store, tiny_spec()).name == "tiny"


def _study_with_artifacts(
    store: Store, tiny_spec: SpecFactory, name: str, n_trials: int
) -> tuple[int, list[str]]:
    """A cancelled study whose ``n_trials`` ended trials each hold weights and a model card
    (both recorded by Optuna's ``upload_artifact``) and whose one running trial's ticket
    holds a checkpoint; returns its id and every artifact it owns."""
    spec = tiny_spec(name=name, budget={"n_trials": n_trials + 1, "max_failed": n_trials})
    study_id = submit_study(store, spec).id
    study = optuna.load_study(study_name=name, storage=store.storage)
    owned = []
    for _ in range(n_trials):
        lease, trial_id = start_trial(store, study_id)
        trial = optuna.Trial(study, trial_id)
        owned.append(save_weights(store.storage, trial, {"w": torch.ones(2)}, store.artifacts))
        owned.append(save_model_card(trial, {"trial": trial.number}, store.artifacts))
        end_trial(store, lease, trial_id, 0.5)
    lease, _ = start_trial(store, study_id)
    checkpoint = write_checkpoint(store.artifacts, study_id, lease.ticket_id, b"state")
    record_checkpoint(store, lease, checkpoint, 1)
    owned.append(checkpoint)
    cancel_study(store, study_id)
    return study_id, owned


def _exists(store: Store, artifact_id: str) -> bool:
    try:
        store.artifacts.open_reader(artifact_id).close()
    except optuna.artifacts.exceptions.ArtifactNotFound:
        return False
    return True


def test_delete_removes_every_artifact_of_the_study_and_no_other(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id, owned = _study_with_artifacts(store, tiny_spec, "doomed", n_trials=3)
    _, kept = _study_with_artifacts(store, tiny_spec, "kept", n_trials=1)
    assert len(set(owned)) == 7 and all(_exists(store, artifact) for artifact in owned)

    delete_study(store, study_id)

    assert [artifact for artifact in owned if _exists(store, artifact)] == []
    assert all(_exists(store, artifact) for artifact in kept)


def _study_using(store: Store, tiny_spec: SpecFactory, name: str, keys: list[str]) -> int:
    """An ended study that recorded using the shared artifacts ``keys``."""
    study_id = submit_study(store, tiny_spec(name=name, budget={"n_trials": 1})).id
    for key in keys:
        store.storage.set_study_system_attr(study_id, shared_use_attr(key), True)
    lease, trial_id = start_trial(store, study_id)
    end_trial(store, lease, trial_id, 0.5)
    end_study_if_done(store, study_id)
    return study_id


def test_a_shared_generator_goes_with_the_last_study_that_used_it(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Left alone before: GAN generators (up to 214 MB each) stayed in the store for good."""
    shared = {key: shared_artifact_id(key) for key in ("gan-a-0-400", "gan-b-0-400", "gan-c-0-9")}
    for artifact_id in shared.values():
        store.artifacts.write(artifact_id, io.BytesIO(b"generator"))
    first = _study_using(store, tiny_spec, "first", ["gan-a-0-400", "gan-b-0-400"])
    second = _study_using(store, tiny_spec, "second", ["gan-a-0-400"])

    delete_study(store, first)
    assert [key for key, artifact in shared.items() if _exists(store, artifact)] == [
        "gan-a-0-400",  # the second study uses it
        "gan-c-0-9",  # no deleted study used it
    ]
    delete_study(store, second)
    assert [key for key, artifact in shared.items() if _exists(store, artifact)] == ["gan-c-0-9"]


def test_shared_generators_of_studies_deleted_at_once_or_recorded_late_go_too(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a second review: two deletions at once each kept the generator for the
    other, and a use recorded while the study was deleted kept it for good."""
    for key in ("gan-both-0-1", "gan-late-0-1"):
        store.artifacts.write(shared_artifact_id(key), io.BytesIO(b"generator"))
    first = _study_using(store, tiny_spec, "first", ["gan-both-0-1"])
    second = _study_using(store, tiny_spec, "second", ["gan-both-0-1"])
    with store.write() as connection:  # being deleted by another process
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == second)
            .values(status=tables.DELETING)
        )
    real = studies_module.remove_unshared

    def then_a_late_use(store: Store, study_id: int, keys: Any = None) -> set[str]:
        looked = real(store, study_id, keys)
        if keys is None:  # the first pass: a cancelled trial records its use just after
            store.storage.set_study_system_attr(first, shared_use_attr("gan-late-0-1"), True)
        return looked

    monkeypatch.setattr(studies_module, "remove_unshared", then_a_late_use)
    delete_study(store, first)

    assert not _exists(store, shared_artifact_id("gan-both-0-1"))
    assert not _exists(store, shared_artifact_id("gan-late-0-1"))


def _cancelled_with_a_running_ticket(
    store: Store, tiny_spec: SpecFactory
) -> tuple[int, Lease, int]:
    """A cancelled study whose one trial still runs (its worker has not stopped yet), its
    ticket holding a checkpoint; returns the study's id, the lease and the trial's id."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    lease, trial_id = start_trial(store, study_id)
    record_checkpoint(store, lease, write_checkpoint(store.artifacts, study_id, 1, b"1"), 1)
    cancel_study(store, study_id)
    return study_id, lease, trial_id


def test_a_checkpoint_recorded_while_the_study_is_deleted_is_removed_with_it(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the tester: a worker stopping a cancelled study's trial recorded its stop
    checkpoint after the deletion had listed the study's artifacts, and the file outlived
    the study (so did a result's weights and model card)."""
    study_id, lease, _ = _cancelled_with_a_running_ticket(store, tiny_spec)
    remove = studies_module.remove_quietly
    late: list[str] = []

    def then_a_stop_checkpoint(artifacts: Any, artifact_id: str) -> None:
        remove(artifacts, artifact_id)
        if not late:  # the worker's stop checkpoint lands between the list and the rows
            late.append(write_checkpoint(store.artifacts, study_id, lease.ticket_id, b"2"))
            record_checkpoint(store, lease, late[0], 2)

    monkeypatch.setattr(studies_module, "remove_quietly", then_a_stop_checkpoint)
    delete_study(store, study_id)

    assert late and not _exists(store, late[0])
    assert _tickets(store, study_id) == []
    with pytest.raises(LeaseLostError):  # and a checkpoint after that is refused
        record_checkpoint(store, lease, write_checkpoint(store.artifacts, study_id, 1, b"3"), 3)


def _during_the_deletion(
    monkeypatch: pytest.MonkeyPatch, call: Callable[[], Any], wait_s: float
) -> tuple[dict[str, Any], list[threading.Thread]]:
    """Makes the next deletion run ``call`` in a thread once it holds the study's locks,
    and wait up to ``wait_s`` for it; returns what ``call`` returned or raised
    (``result``/``error``, and ``waited``: still running after the wait) and the thread."""
    lock = studies_module._lock_study_rows
    outcome: dict[str, Any] = {}
    threads: list[threading.Thread] = []

    def run() -> None:
        try:
            outcome["result"] = call()
        except Exception as exc:
            outcome["error"] = exc

    def then_call(connection: sa.engine.Connection, locked: int) -> None:
        lock(connection, locked)
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(timeout=wait_s)
        outcome["waited"] = thread.is_alive()
        threads.append(thread)

    monkeypatch.setattr(studies_module, "_lock_study_rows", then_call)
    return outcome, threads


def test_a_trial_write_during_the_deletion_waits_for_it_then_finds_the_trial_gone(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the tester: on PostgreSQL a worker's write to a trial landed between the
    deletion's statements (a foreign key violation: HTTP 500 to ``DELETE``)."""
    study_id, _, trial_id = _cancelled_with_a_running_ticket(store, tiny_spec)
    writes = TrialWrites(user_attrs={"late": 1})
    outcome, threads = _during_the_deletion(
        monkeypatch, lambda: write_trial(store, trial_id, writes), wait_s=1.0
    )

    delete_study(store, study_id)
    threads[0].join(timeout=30)

    assert outcome["waited"]
    assert isinstance(outcome.get("error"), UpdateFinishedTrialError), outcome
    with pytest.raises(StudyNotFoundError):
        get_study(store, study_id)
    assert store.storage.get_all_studies() == []


@pytest.mark.parametrize("call", ["release", "finish_and_settle"])
def test_a_worker_ending_its_ticket_during_the_deletion_waits_for_it_without_deadlock(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """A reviewer: the deletion locked tickets before the study's row, workers the other
    way round, and PostgreSQL ended one of them for a deadlock."""
    study_id, lease, _ = _cancelled_with_a_running_ticket(store, tiny_spec)

    def end_ticket() -> Any:
        if call == "release":
            return release(store, lease, FailureKind.CANCELLED, "stopping")
        return finish_and_settle(store, lease, "complete")

    outcome, threads = _during_the_deletion(monkeypatch, end_ticket, wait_s=1.5)
    delete_study(store, study_id)
    threads[0].join(timeout=30)

    assert store.storage.get_all_studies() == []
    with pytest.raises(StudyNotFoundError):
        get_study(store, study_id)
    if call == "release":
        assert outcome.get("result") is False, outcome  # the lease is gone with the study
    else:
        assert isinstance(outcome.get("error"), LeaseLostError), outcome


@contextmanager
def _counting_statements(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records the statements run on the store's engines, leaving out those of removing one
    artifact (the artifact store removes one at a time, and a larger study has more)."""
    with recorded_statements(store.engine, store.read_engine) as statements:
        remove = store.artifacts.remove

        def uncounted(artifact_id: str) -> None:
            before = len(statements)
            try:
                remove(artifact_id)
            finally:
                del statements[before:]

        with monkeypatch.context() as patched:
            patched.setattr(store.artifacts, "remove", uncounted)
            yield statements


def test_delete_runs_as_many_statements_for_a_large_study_as_for_a_small_one(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither finding what to remove nor removing the study's rows may go trial by trial
    (a 10k-trial study was ~50k queries and Optuna's row-by-row deletion, inside one DELETE
    request)."""
    small, _ = _study_with_artifacts(store, tiny_spec, "small", n_trials=1)
    large, _ = _study_with_artifacts(store, tiny_spec, "large", n_trials=6)

    with _counting_statements(store, monkeypatch) as for_small:
        delete_study(store, small)
    with _counting_statements(store, monkeypatch) as for_large:
        delete_study(store, large)

    assert len(for_large) == len(for_small), "\n".join(for_large)
