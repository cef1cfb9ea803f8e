"""Workers older than the API, or without its plugins: a study whose stored spec a worker
cannot read goes back to the queue untouched, and the worker leaves it to the others."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from automl.proxy import RemoteCoordinator
from automl.spec import SPACE_RULES, StudySpec
from automl.store import Store, StudyStatus, get_study, submit_study, tables
from automl.worker import SqlCoordinator, Worker, WorkerOptions
from tests.worker.options import fast_options

SpecFactory = Callable[..., StudySpec]

NEWER = "needs a newer automl than this worker"
NO_PLUGIN = "that no installed plugin of this worker registers"


def _options(**overrides: Any) -> WorkerOptions:
    return fast_options(**overrides)


def _restore_spec(store: Store, study_id: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrites the study's stored spec as another automl (a newer one, or one with
    plugins this process lacks) would have stored it."""
    studies = tables.studies
    with store.write() as connection:
        text = connection.scalar(sa.select(studies.c.spec).where(studies.c.study_id == study_id))
        spec = json.loads(text)
        change(spec)
        connection.execute(
            studies.update().where(studies.c.study_id == study_id).values(spec=json.dumps(spec))
        )


def _from_newer_automl(spec: dict[str, Any]) -> None:
    spec["space_rules"] = SPACE_RULES + 1


def _tickets(store: Store, study_id: int) -> list[sa.Row[Any]]:
    tickets = tables.tickets
    with store.read() as connection:
        query = sa.select(tickets).where(tickets.c.study_id == study_id)
        return list(connection.execute(query.order_by(tickets.c.ticket_id)).all())


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _assert_untouched(store: Store, study_id: int) -> None:
    """The study's one claimed ticket is waiting again, no retry or failure counted, and
    no trial was created."""
    [ticket] = _tickets(store, study_id)
    assert (ticket.state, ticket.outcome, ticket.failure, ticket.retries) == (
        "pending",
        None,
        None,
        0,
    )
    assert ticket.worker_id is None and ticket.trial_id is None
    assert store.storage.get_all_trials(study_id) == []
    assert _status(store, study_id) == StudyStatus.RUNNING


def _status(store: Store, study_id: int) -> StudyStatus:
    """Read from its row: this process's reads of a study refuse a spec it cannot read."""
    studies = tables.studies
    with store.read() as connection:
        query = sa.select(studies.c.status).where(studies.c.study_id == study_id)
        return StudyStatus(connection.scalar(query))


def _count_releases(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    released: list[int] = []
    real = SqlCoordinator.release

    def counting(self: SqlCoordinator, lease: Any, *args: Any, **kwargs: Any) -> bool:
        released.append(lease.study_id)
        return real(self, lease, *args, **kwargs)

    monkeypatch.setattr(SqlCoordinator, "release", counting)
    return released


def test_a_study_from_a_newer_automl_is_left_to_other_workers(
    store: Store,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by the tester: an older worker failed such a study within a second (3 trials
    failed, none listed), logging three pydantic errors."""
    newer = submit_study(store, tiny_spec(name="newer", budget={"n_trials": 3, "max_failed": 0}))
    _restore_spec(store, newer.id, _from_newer_automl)
    other = submit_study(store, tiny_spec(name="other", budget={"n_trials": 2})).id
    released = _count_releases(monkeypatch)
    caplog.set_level(logging.INFO, logger="automl.worker")
    order: list[int] = []

    Worker(store, _options(), on_trial_end=lambda s, t, _: order.append(s)).run()

    # Given back once, then never claimed again: the other study ran meanwhile.
    assert released == [newer.id]
    assert order == [other, other]
    assert get_study(store, other).status == StudyStatus.COMPLETED
    _assert_untouched(store, newer.id)
    assert _errors(caplog) == [
        f"study {newer.id} {NEWER} (space rules {SPACE_RULES + 1}, this worker knows "
        f"{SPACE_RULES}): upgrade automl here"
    ]

    # A worker that can read it (here: the spec as this version stores it) runs the
    # whole budget: nothing of it was used up.
    _restore_spec(store, newer.id, lambda spec: spec.update(space_rules=SPACE_RULES))
    Worker(store, _options()).run()
    detail = get_study(store, newer.id)
    assert (detail.status, detail.counts.complete) == (StudyStatus.COMPLETED, 3)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda spec: spec["fixed"].update(model="plugin_net"), "model 'plugin_net'"),
        (lambda spec: spec.update(dataset={"source": "plugin_data"}), "dataset 'plugin_data'"),
        (
            lambda spec: spec["params"].update(
                {"plugin_blur.p": {"type": "float", "low": 0.0, "high": 1.0}}
            ),
            "augmentation 'plugin_blur'",
        ),
        # Found by a plugin author: a plugin upgraded without an option the study sets
        # had every trial fail ("unknown hyperparameter"), each one counted.
        (lambda spec: spec["fixed"].update({"cnn.act": "gelu"}), "option 'cnn.act'"),
    ],
    ids=["model", "dataset", "augmentation", "option"],
)
def test_a_study_naming_a_plugin_not_installed_here_is_left_to_other_workers(
    store: Store,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    change: Callable[[dict[str, Any]], None],
    named: str,
) -> None:
    """Before: its trials were created and failed one by one, each one counted."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 3, "max_failed": 0})).id
    _restore_spec(store, study_id, change)
    released = _count_releases(monkeypatch)
    caplog.set_level(logging.INFO, logger="automl.worker")

    Worker(store, _options()).run()

    assert released == [study_id]
    _assert_untouched(store, study_id)
    assert _errors(caplog) == [
        f"study {study_id} names {named} {NO_PLUGIN}: install the plugin (or a newer automl) here"
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("exit_when_idle", [True, False], ids=["run", "worker-study"])
def test_a_worker_for_one_unreadable_study_exits_instead_of_looping(
    sqlite_store: Store, tiny_spec: SpecFactory, exit_when_idle: bool
) -> None:
    """``automl run`` and ``automl worker --study``: nothing else to do, so no waiting
    (nor claiming and giving back) until the study ends elsewhere."""
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 2, "max_failed": 0})).id
    _restore_spec(sqlite_store, study_id, _from_newer_automl)
    options = _options(study_id=study_id, exit_when_idle=exit_when_idle)

    Worker(sqlite_store, options).run()

    _assert_untouched(sqlite_store, study_id)


def _plugin_study_then_another(store: Store, tiny_spec: SpecFactory) -> tuple[int, int]:
    """An older study naming a plugin not installed here, then a study this worker reads."""
    plugin = submit_study(store, tiny_spec(name="plugin", budget={"n_trials": 3, "max_failed": 0}))
    _restore_spec(store, plugin.id, lambda spec: spec["fixed"].update(model="plugin_net"))
    other = submit_study(store, tiny_spec(name="other", budget={"n_trials": 2}))
    return plugin.id, other.id


@pytest.mark.timeout(120)
def test_through_a_proxy_the_unreadable_study_is_skipped_and_the_next_one_runs(
    store: Store,
    proxy: RemoteCoordinator,
    tiny_spec: SpecFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: the proxy's claim could not skip a study, so each claim took the unreadable
    (oldest) study's ticket again and gave it back, and the worker never reached the next
    study."""
    plugin, other = _plugin_study_then_another(store, tiny_spec)
    caplog.set_level(logging.INFO, logger="automl.worker")

    Worker(None, _options(), coordinator=proxy).run()

    assert _status(store, other) == StudyStatus.COMPLETED
    _assert_untouched(store, plugin)
    assert [ticket.attempt for ticket in _tickets(store, plugin)] == [1]  # claimed once
    assert len(_errors(caplog)) == 1


@pytest.mark.timeout(120)
def test_a_proxy_older_than_the_worker_gets_the_unreadable_ticket_back_each_time(
    store: Store,
    proxy: RemoteCoordinator,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A proxy that ignores ``exclude`` hands the unreadable study out again: its ticket
    goes back at once, never failed, and the worker idles while it is the oldest."""
    plugin, other = _plugin_study_then_another(store, tiny_spec)
    claim = proxy.claim
    monkeypatch.setattr(proxy, "claim", lambda worker, study, exclude=(): claim(worker, study))
    caplog.set_level(logging.INFO, logger="automl.worker")

    Worker(None, _options(), coordinator=proxy).run()

    _assert_untouched(store, plugin)
    # Claimed twice: given back after loading the study, then at once (and idle since).
    assert [ticket.attempt for ticket in _tickets(store, plugin)] == [2]
    assert _status(store, other) == StudyStatus.QUEUED  # never reached
    assert len(_errors(caplog)) == 1


def test_a_broken_spec_still_fails_its_ticket(
    sqlite_store: Store, tiny_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a newer automl's or a missing plugin's spec is left alone: one that no automl
    could read ends its ticket failed, as before."""
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 3, "max_failed": 0})).id
    _restore_spec(sqlite_store, study_id, lambda spec: spec.update(space_rules=0))
    caplog.set_level(logging.INFO, logger="automl.worker")

    Worker(sqlite_store, _options()).run()

    [ticket] = _tickets(sqlite_store, study_id)
    assert (ticket.state, ticket.outcome, ticket.failure) == ("done", "fail", "error")
    assert _status(sqlite_store, study_id) == StudyStatus.FAILED
    assert not _errors(caplog)


def test_a_field_this_automl_does_not_know_marks_a_newer_automls_study(
    sqlite_store: Store, tiny_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A newer automl that adds a field (not a rule) stamps no later ``space_rules``;
    before, this worker failed the study's trials on the unknown field."""
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 2, "max_failed": 0})).id
    _restore_spec(sqlite_store, study_id, lambda spec: spec["budget"].update(max_cost=5))
    caplog.set_level(logging.INFO, logger="automl.worker")

    Worker(sqlite_store, _options()).run()

    _assert_untouched(sqlite_store, study_id)
    assert _errors(caplog) == [
        f"study {study_id} {NEWER} (field 'budget.max_cost', unknown to this worker): "
        "upgrade automl here"
    ]


TEST_SPLIT = {"source": "digits", "options": {"test_fraction": 0.2}}


def _jobs(store: Store, study_id: int) -> dict[str, tuple[str, int, int]]:
    """The study's post-study jobs: state, attempt and tries of each."""
    found = {}
    with store.read() as connection:
        for name, table in (("evaluation", tables.evaluations), ("refit", tables.refits)):
            query = sa.select(table.c.state, table.c.attempt, table.c.tries)
            row = connection.execute(query.where(table.c.study_id == study_id)).first()
            if row is not None:
                found[name] = tuple(row)
    return found


def _without_post_study_jobs(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Workers claim no test evaluation or refit until the returned call undoes it."""
    real = {job: getattr(SqlCoordinator, job) for job in ("claim_evaluation", "claim_refit")}
    for job in real:
        monkeypatch.setattr(SqlCoordinator, job, lambda *args, **kwargs: None)
    return lambda: [monkeypatch.setattr(SqlCoordinator, job, f) for job, f in real.items()]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("through", ["store", "proxy"])
def test_a_newer_automls_test_evaluation_and_refit_are_never_claimed_here(
    store: Store,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    through: str,
) -> None:
    """Before: the worker claimed the job, then failed to read the spec, and the claim
    held it from every worker until it went stale (up to three times, then abandoned).
    Now nothing is claimed, and the next study's job runs."""
    budget = {"n_trials": 1, "max_failed": 0}
    newer = submit_study(
        store, tiny_spec(name="newer", dataset=TEST_SPLIT, budget=budget, refit=True)
    ).id
    other = submit_study(store, tiny_spec(name="other", dataset=TEST_SPLIT, budget=budget)).id
    allow_jobs = _without_post_study_jobs(monkeypatch)
    Worker(store, _options()).run()
    assert _jobs(store, newer) == {"evaluation": ("pending", 0, 0), "refit": ("queued", 0, 0)}
    _restore_spec(store, newer, _from_newer_automl)
    allow_jobs()
    coordinator = request.getfixturevalue("proxy") if through == "proxy" else None
    caplog.set_level(logging.INFO, logger="automl.worker")

    Worker(None if coordinator else store, _options(), coordinator=coordinator).run()

    assert _jobs(store, newer) == {"evaluation": ("pending", 0, 0), "refit": ("queued", 0, 0)}
    assert _jobs(store, other)["evaluation"][0] == "done"
    # Through a proxy, the proxy claims: it checks what its own automl reads, and says so.
    reader, advice = (
        ("the proxy", "upgrade the proxy")
        if coordinator
        else (
            "this worker",
            "upgrade automl here",
        )
    )
    assert _errors(caplog) == [
        f"study {newer} needs a newer automl than {reader} (space rules {SPACE_RULES + 1}, "
        f"{reader} knows {SPACE_RULES}): {advice}"
    ]

    # A worker that reads it runs both.
    _restore_spec(store, newer, lambda spec: spec.update(space_rules=SPACE_RULES))
    Worker(store, _options()).run()
    assert {job: state for job, (state, _, _) in _jobs(store, newer).items()} == {
        "evaluation": "done",
        "refit": "done",
    }


@pytest.mark.timeout(120)
def test_a_proxy_older_than_the_study_says_so_and_the_worker_leaves_it(
    store: Store,
    proxy: RemoteCoordinator,
    tiny_spec: SpecFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The proxy reads the spec for its workers: before, its validation error reached the
    worker as an internal error, and the ticket failed."""
    newer = submit_study(store, tiny_spec(name="newer", budget={"n_trials": 2, "max_failed": 0}))
    _restore_spec(store, newer.id, _from_newer_automl)
    caplog.set_level(logging.INFO, logger="automl.worker")

    Worker(None, _options(), coordinator=proxy).run()

    _assert_untouched(store, newer.id)
    assert _errors(caplog) == [
        f"study {newer.id} needs a newer automl than the proxy (space rules "
        f"{SPACE_RULES + 1}, the proxy knows {SPACE_RULES}): upgrade the proxy"
    ]


def test_the_proxy_hands_on_the_spec_as_stored(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    """Found by a reviewer: the proxy handed on its own dump of the spec, with every
    field of its version; a worker older than the proxy (the upgrade order README gives)
    would take a field it does not know for a newer automl's study, and leave them all."""
    study_id = submit_study(store, tiny_spec()).id
    _restore_spec(store, study_id, lambda spec: spec.pop("keep_weights"))  # an older automl's
    studies = tables.studies
    with store.read() as connection:
        query = sa.select(studies.c.spec).where(studies.c.study_id == study_id)
        stored = json.loads(connection.scalar(query))

    reply, _ = proxy.call("spec", {"study_id": study_id})

    assert reply["spec"] == stored and "keep_weights" not in reply["spec"]
    assert proxy.spec(study_id).keep_weights == 3  # the worker's defaults fill it in
