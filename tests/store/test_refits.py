"""The refit of an ended study's best configuration: queued by the spec or on request,
claimed by exactly one worker, stored all or nothing, on each backend."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from automl.spec import StudySpec, validate_spec
from automl.store import (
    RefitLease,
    RefitResult,
    RefitState,
    Store,
    StudyStateError,
    StudyStatus,
    attrs,
    beat_refit,
    best_trials,
    cancel_study,
    claim_refit,
    delete_study,
    end_study_if_done,
    finish_refit,
    get_study,
    lost_refits,
    optuna_rows,
    queue_refit,
    refit_artifact_ids,
    release_refit,
    resume_study,
    served_refit,
    submit_study,
    tables,
)
from automl.store.artifacts import read_checkpoint as read_artifact
from automl.store.status import now, request_refit
from tests.conftest import tiny_spec_data
from tests.store.conftest import drive

SpecFactory = Callable[..., StudySpec]


def _result(store: Store, number: int, name: str, accuracy: float = 0.75) -> RefitResult:
    """A result whose weights and card exist in the artifact store, as a worker leaves them."""
    for artifact_id in (f"{name}.safetensors", f"{name}.json"):
        store.artifacts.write(artifact_id, io.BytesIO(b"x"))
    return RefitResult(
        trial_number=number,
        epochs=2,
        train_samples=100,
        weights=f"{name}.safetensors",
        card=f"{name}.json",
        test_metrics={"accuracy": accuracy},
        test_per_class=[{"class": "0", "recall": accuracy, "support": 4}],
        test_confusion=[[3, 1], [0, 4]],
        test_samples=8,
        duration_s=0.5,
    )


WITH_TEST = {"source": "digits", "options": {"test_fraction": 0.2}}
"""A refit is scored on the test split: a spec without one is refused at submit."""


def _completed(store: Store, spec: StudySpec, outcomes: list) -> int:  # type: ignore[type-arg]
    study_id = submit_study(store, spec).id
    drive(store, study_id, outcomes)
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED
    return study_id


def test_refit_true_queues_a_refit_that_one_worker_claims_and_stores(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(
        store, tiny_spec(budget={"n_trials": 2}, refit=True, dataset=WITH_TEST)
    ).id
    drive(store, study_id, [0.5])
    assert claim_refit(store, "w1") is None  # still running: nothing is due
    drive(store, study_id, [0.9])
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED
    assert best_trials(store, study_id).refit.state == RefitState.QUEUED  # type: ignore[union-attr]

    lease = claim_refit(store, "w1")
    assert lease is not None
    assert (lease.study_id, lease.trial_number, lease.attempt) == (study_id, 1, 1)
    assert claim_refit(store, "w2") is None  # claimed: nobody else gets it
    assert best_trials(store, study_id).refit.state == RefitState.RUNNING  # type: ignore[union-attr]
    assert beat_refit(store, lease)
    shown = get_study(store, study_id).refit  # what status shows
    assert shown is not None and (shown.state, shown.worker) == ("running", "w1")
    assert shown.since is not None
    assert served_refit(store, study_id) is None  # nothing serves before it is done

    result = _result(store, 1, "refit-a")
    assert finish_refit(store, lease, RefitState.DONE, result)
    assert finish_refit(store, lease, RefitState.DONE, result)  # a repeat is fine
    assert not beat_refit(store, lease)  # ended: no longer held
    assert claim_refit(store, "w2") is None
    shown = get_study(store, study_id).refit
    assert shown is not None and (shown.state, shown.worker) == ("done", None)
    assert get_study(store, study_id).test_evaluation.state == "pending"  # type: ignore[union-attr]

    refit = best_trials(store, study_id).refit
    assert refit is not None
    assert (refit.state, refit.trial, refit.epochs) == (RefitState.DONE, 1, 2)
    assert refit.test_metrics == {"accuracy": 0.75}
    assert refit.test_confusion == [[3, 1], [0, 4]]
    assert served_refit(store, study_id) == result
    mirror = store.storage.get_study_user_attrs(study_id)[attrs.REFIT]
    assert (mirror["state"], mirror["trial_number"]) == ("done", 1)


def test_racing_workers_claim_a_refit_exactly_once(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = _completed(
        store, tiny_spec(budget={"n_trials": 1}, refit=True, dataset=WITH_TEST), [0.5]
    )
    barrier = threading.Barrier(8)

    def race(worker: str) -> RefitLease | None:
        barrier.wait()
        return claim_refit(store, worker)

    with ThreadPoolExecutor(8) as pool:
        leases = list(pool.map(race, [f"w{i}" for i in range(8)]))
    won = [lease for lease in leases if lease is not None]
    assert len(won) == 1 and won[0].study_id == study_id


def test_a_stale_claim_is_taken_over_and_the_late_result_refused(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _completed(
        store, tiny_spec(budget={"n_trials": 1}, refit=True, dataset=WITH_TEST), [0.5]
    )
    first = claim_refit(store, "w1")
    assert first is not None
    assert claim_refit(store, "w2", stale_after=3600) is None  # fresh: not taken over
    second = claim_refit(store, "w2", stale_after=-1)  # every claim counts as stale
    assert second is not None and second.attempt == first.attempt + 1

    assert not finish_refit(store, first, RefitState.DONE, _result(store, 0, "late"))
    assert not beat_refit(store, first)
    assert finish_refit(store, second, RefitState.DONE, _result(store, 0, "kept"))
    assert served_refit(store, study_id).weights == "kept.safetensors"  # type: ignore[union-attr]


def test_a_claim_given_back_is_due_at_once_and_costs_no_try(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _completed(
        store, tiny_spec(budget={"n_trials": 1}, refit=True, dataset=WITH_TEST), [0.5]
    )
    for worker in ("w1", "w2", "w3", "w4"):  # more stops than MAX_TRIES claims
        lease = claim_refit(store, worker)
        assert lease is not None, worker
        assert best_trials(store, study_id).refit.state == RefitState.RUNNING  # type: ignore[union-attr]
        assert release_refit(store, lease)
        assert not release_refit(store, lease)  # once
        assert not beat_refit(store, lease)
        refit = best_trials(store, study_id).refit
        assert refit is not None and refit.state == RefitState.QUEUED
    last = claim_refit(store, "w5")
    assert last is not None
    assert finish_refit(store, last, RefitState.DONE, _result(store, 0, "done"))
    assert served_refit(store, study_id).weights == "done.safetensors"  # type: ignore[union-attr]
    assert not release_refit(store, last)  # a finished refit stays finished


def test_a_refit_abandoned_too_often_ends_failed(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = _completed(
        store, tiny_spec(budget={"n_trials": 1}, refit=True, dataset=WITH_TEST), [0.5]
    )
    for worker in ("w1", "w2", "w3"):
        assert claim_refit(store, worker, stale_after=-1) is not None
    assert claim_refit(store, "w4", stale_after=-1) is None
    refit = best_trials(store, study_id).refit
    assert refit is not None and refit.state == RefitState.FAILED
    assert "abandoned" in (refit.note or "")


def test_queue_refit_asks_once_for_an_ended_study_and_refuses_what_cannot_be_refit(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2})).id
    with pytest.raises(StudyStateError, match="is queued"):
        queue_refit(store, study_id)
    cancel_study(store, study_id)
    with pytest.raises(StudyStateError, match="no completed trial"):
        queue_refit(store, study_id)

    done = _completed(store, tiny_spec(budget={"n_trials": 1}), [0.5])
    assert claim_refit(store, "w1") is None  # no refit in the spec: none queued
    assert queue_refit(store, done).state == RefitState.QUEUED
    assert queue_refit(store, done).state == RefitState.QUEUED  # idempotent
    lease = claim_refit(store, "w1")
    assert lease is not None
    assert finish_refit(store, lease, RefitState.FAILED, note="boom")
    assert queue_refit(store, done).state == RefitState.QUEUED  # a failed one runs again

    data = tiny_spec_data(budget={"n_trials": 1})
    del data["objective"]
    data["objectives"] = [{"metric": "accuracy"}, {"metric": "params"}]
    pareto = _completed(store, validate_spec(data), [[0.5, 10.0]])
    with pytest.raises(StudyStateError, match="no single best"):
        queue_refit(store, pareto)


def test_a_new_result_replaces_the_old_artifacts_and_deleting_removes_the_last(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _completed(
        store, tiny_spec(budget={"n_trials": 1}, refit=True, dataset=WITH_TEST), [0.5]
    )
    first = claim_refit(store, "w1")
    assert first is not None and finish_refit(store, first, RefitState.DONE, _result(store, 0, "a"))
    with store.write() as connection:  # asked again (as a completion after a resume does)
        connection.execute(tables.refits.update().values(state=RefitState.QUEUED.value, tries=0))
    second = claim_refit(store, "w1")
    assert second is not None
    assert finish_refit(store, second, RefitState.DONE, _result(store, 0, "b"))
    assert read_artifact(store.artifacts, "a.safetensors") is None
    assert read_artifact(store.artifacts, "a.json") is None
    assert read_artifact(store.artifacts, "b.safetensors") == b"x"

    delete_study(store, study_id)
    assert read_artifact(store.artifacts, "b.safetensors") is None
    with store.read() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(tables.refits)) == 0


def test_a_refit_of_a_trial_no_longer_best_is_not_served_and_can_be_asked_again(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _completed(store, tiny_spec(budget={"n_trials": 1}), [0.5])
    queue_refit(store, study_id)
    lease = claim_refit(store, "w1")
    assert lease is not None and lease.trial_number == 0
    assert finish_refit(store, lease, RefitState.DONE, _result(store, 0, "old"))
    assert served_refit(store, study_id).trial_number == 0  # type: ignore[union-attr]

    resume_study(store, study_id, add_trials=1)  # a better trial arrives
    drive(store, study_id, [0.9])
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED
    assert best_trials(store, study_id).trials[0].number == 1
    assert served_refit(store, study_id) is None  # trial 0's refit no longer serves
    queued = queue_refit(store, study_id)  # asked anew for trial 1
    assert queued.state == RefitState.QUEUED
    # Not trial 0's result, which no longer serves (found by exploratory testing).
    assert (queued.trial, queued.test_metrics, queued.epochs) == (None, None, None)
    lease = claim_refit(store, "w1")
    assert lease is not None and lease.trial_number == 1


def test_claiming_the_refit_of_a_multi_objective_study_reads_no_trial(store: Store) -> None:
    """Its Pareto front has no single best trial: the claim says so without computing it
    (here the trials' attributes would not even parse)."""
    data = tiny_spec_data(budget={"n_trials": 2})
    del data["objective"]
    data["objectives"] = [{"metric": "accuracy"}, {"metric": "params"}]
    study_id = _completed(store, validate_spec(data), [[0.5, 10.0], [0.9, 20.0]])
    attributes = optuna_rows.trial_user_attributes
    with store.write() as connection:  # a refit row left by an older version, say
        request_refit(connection, study_id, now(connection))
        connection.execute(attributes.update().values(value_json="{not json"))
    lease = claim_refit(store, "w1")
    assert lease is not None
    assert (lease.study_id, lease.trial_number) == (study_id, None)


def test_a_spec_refuses_refit_with_several_objectives() -> None:
    data = tiny_spec_data(refit=True)
    del data["objective"]
    data["objectives"] = [{"metric": "accuracy"}, {"metric": "params"}]
    with pytest.raises(Exception, match="refit") as caught:
        validate_spec(data)
    assert "no single best trial" in str(caught.value)


def _written_by(store: Store, study_id: int, attempt: int) -> RefitResult:
    """The files a refit attempt writes under its own names, as the worker names them."""
    weights, card = refit_artifact_ids(study_id, attempt)
    for artifact_id in (weights, card):
        store.artifacts.write(artifact_id, io.BytesIO(b"x"))
    return dataclasses.replace(_result(store, 0, "unused"), weights=weights, card=card)


def _exists(store: Store, artifact_id: str) -> bool:
    return read_artifact(store.artifacts, artifact_id) is not None


def test_files_of_a_refit_killed_before_it_finished_are_removed_by_the_next_result(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """A worker killed -9 after writing its files but before ``finish_refit``."""
    study_id = _completed(
        store, tiny_spec(budget={"n_trials": 1}, refit=True, dataset=WITH_TEST), [0.5]
    )
    killed = claim_refit(store, "w1")
    assert killed is not None
    _written_by(store, study_id, killed.attempt)  # ... and the worker dies here
    takeover = claim_refit(store, "w2", stale_after=-1)
    assert takeover is not None

    kept = _written_by(store, study_id, takeover.attempt)
    assert finish_refit(store, takeover, RefitState.DONE, kept)

    assert not any(_exists(store, a) for a in refit_artifact_ids(study_id, killed.attempt))
    assert all(_exists(store, a) for a in (kept.weights, kept.card))


def test_files_of_a_refit_killed_before_it_finished_go_with_the_study(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _completed(
        store, tiny_spec(budget={"n_trials": 1}, refit=True, dataset=WITH_TEST), [0.5]
    )
    killed = claim_refit(store, "w1")
    assert killed is not None
    orphans = _written_by(store, study_id, killed.attempt)  # ... and the worker dies here

    delete_study(store, study_id)

    assert not any(_exists(store, a) for a in (orphans.weights, orphans.card))


def test_a_refit_finishing_while_its_study_is_deleted_is_refused(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """A reviewer: the result was stored into a study being deleted, whose deletion had
    already listed (and removed) the refit's files, so they outlived it."""
    study_id = _completed(
        store, tiny_spec(budget={"n_trials": 1}, refit=True, dataset=WITH_TEST), [0.5]
    )
    lease = claim_refit(store, "w1")
    assert lease is not None
    with store.write() as connection:
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == study_id)
            .values(status=tables.DELETING)
        )

    assert not finish_refit(store, lease, RefitState.DONE, _result(store, 0, "late"))


def test_a_stored_refit_result_keeps_the_keys_older_apis_read_and_drops_unknown_ones() -> None:
    """Workers and APIs of two versions share a database while one is upgraded."""
    stored = {
        "trial_number": 0,
        "epochs": 1,
        "train_samples": 10,
        "weights": "w",
        "card": None,
        "test_metrics": {"accuracy": 0.5},
        "test_per_class": [],
        "test_confusion": [[1]],
        "test_samples": 1,
        "duration_s": 0.1,
    }
    result = RefitResult.from_json({**stored, "test_most_confused": [], "added_later": 1})
    assert result.to_json() == stored
    # An API of an earlier automl, still up during an upgrade, builds the result from
    # exactly these keys (RefitResult(**data)): a key added here is a 500 there.
    assert set(RefitResult.from_json(stored).to_json()) == set(stored)


def test_lost_refits_counts_silent_claims_of_the_studies_asked_about(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """What ``worker --exit-when-idle`` waits for: a refit whose worker stopped beating."""
    study_id = _completed(store, tiny_spec(refit=True, dataset=WITH_TEST), [0.9, 0.8, 0.7])
    assert lost_refits(store, 0.0) == 0  # queued: no worker holds it
    assert claim_refit(store, "killed") is not None
    time.sleep(0.01)  # the database clock counts milliseconds

    assert lost_refits(store, 3600.0) == 0  # it beat within the hour
    assert lost_refits(store, 0.0) == lost_refits(store, 0.0, study_id) == 1
    assert lost_refits(store, 0.0, study_id + 1) == 0
    assert lost_refits(store, 0.0, exclude={study_id}) == 0  # one the worker left
