"""Study lifecycle and reads: submit, cancel, extend, resume, re-run, enqueue, delete, views.

A study is an Optuna study plus one ``automl_studies`` row (status and budget) and its
tickets (one per unit of budget handed out or enqueued). Every change is a transaction
that locks the study's row; reads use SQL aggregates and pages, never every trial.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import optuna
import sqlalchemy as sa

from automl.config import Limits
from automl.data import dataset_fingerprint
from automl.samplers import SAMPLER_MAX_TRIALS, max_trials_message
from automl.sampling import GridError, grid_size
from automl.spec import (
    MAX_ENQUEUE,
    MAX_NAME_CHARS,
    FieldError,
    SpecError,
    StudySpec,
    check_config,
)
from automl.store import attrs, optuna_rows, tables
from automl.store.artifacts import artifact_lost, remove_quietly
from automl.store.attrs import StudyStatus
from automl.store.best_reads import OPTUNA_STUDY_GONE, read_evaluation, read_refit
from automl.store.evaluations import NO_TEST_SPLIT
from automl.store.faults import first_line, is_lock_conflict, is_transient
from automl.store.leases import end_if_done
from automl.store.projects import (
    DEFAULT_PROJECT,
    check_project_limits,
    check_project_room,
    optuna_study_name,
    project_study_names,
    salted,
)
from automl.store.refits import refit_artifacts
from automl.store.retention import OPTUNA_ARTIFACT_ATTR
from automl.store.shared_artifacts import remove_unshared, shared_keys_of
from automl.store.status import (
    ACTIVE,
    change_status,
    count_errors,
    iso,
    lock_study,
    now,
    request_evaluation,
    request_refit,
)
from automl.store.storage import Store
from automl.store.study_reads import (
    StudyNotFoundError,
    StudyStateError,
    get_study,
    stored_spec_text,
)
from automl.store.tables import (
    DELETING,
    EvaluationState,
    RefitState,
    TicketSource,
    TicketState,
)
from automl.store.views import (
    RefitView,
    StudyDetail,
)
from automl.store.warm_start import plan_warm_start
from automl.wording import counted

NAME_PROBE_BATCH = 20


NAME_WAIT_S = 5.0
"""How long a submission waits for the row of another one that holds the name it wants
(a study created in Optuna but not yet listed) before taking it for a leftover."""

UNMARKED_WAIT_S = 1.0
"""How long a study holding the name may lack automl's ``created_at`` (a submission sets
it right after creating the study) before it counts as another tool's."""


logger = logging.getLogger("automl.store")


# --- submit ------------------------------------------------------------------------------------


def submit_study(
    store: Store,
    spec: StudySpec,
    idempotency_key: str | None = None,
    *,
    project: str = DEFAULT_PROJECT,
    limits: Limits | None = None,
) -> StudyDetail:
    """The study ``submit_or_replay`` creates (or, for a repeated key, created before)."""
    return submit_or_replay(store, spec, idempotency_key, project=project, limits=limits)[0]


def submit_or_replay(
    store: Store,
    spec: StudySpec,
    idempotency_key: str | None = None,
    *,
    project: str = DEFAULT_PROJECT,
    limits: Limits | None = None,
) -> tuple[StudyDetail, bool]:
    """Creates the study of ``spec``: its Optuna study, then, atomically, its automl row;
    with whether it is a repeat's answer (an earlier submission with the same key made it).

    Nothing is queued per trial: workers take units of the budget as they claim them, so
    submitting costs the same for 10 or 100,000 trials. The study becomes visible (to
    listings and workers) only when its row is written; a crash before that leaves an
    Optuna study that the reaper removes later. The name is the spec's, with ``-2``,
    ``-3``... appended when the project already has it (see ``_create_optuna_study``).

    Args:
        store: The store.
        spec: The validated spec.
        idempotency_key: A client's key for this submission, unique within ``project``: a
            repeated submission with the same key returns the first study instead of
            creating another (another project's same key is another submission).
        project: The project the study belongs to (the submitting API key's).
        limits: The per-project limits to enforce (the API's); local commands pass none.

    Raises:
        StudyStateError: If ``idempotency_key`` was used for a different spec.
        ProjectLimitError: If ``project`` is at one of its ``limits``.
        SpecError: If the warm start names a study ``project`` does not have.
    """
    spec_json = spec.model_dump_json(exclude_none=True)
    if idempotency_key is not None:
        existing = _study_with_key(store, idempotency_key, spec_json, project)
        if existing is not None:
            return get_study(store, existing), True
    if limits is not None:
        check_project_limits(store, project, limits)
    fingerprint = _fingerprint(spec)
    # Planned (and its sources checked) before anything is created: a refused warm start
    # leaves no Optuna study behind.
    warm = plan_warm_start(store, spec, fingerprint, project)
    with store.read() as connection:
        # The database's clock: the reaper and other submissions on other machines judge
        # a leftover's age by it.
        created = datetime.fromtimestamp(now(connection), UTC)
    name, optuna_name = _create_optuna_study(store, spec, project, created)
    study_id = store.storage.get_study_id_from_name(optuna_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.load_study(study_name=optuna_name, storage=store.storage)
        study.set_metric_names(spec.metrics)
    store.storage.set_study_user_attr(
        study_id, attrs.SPEC, spec.model_dump(mode="json", exclude_none=True)
    )
    seed = spec.sampler.seed if spec.sampler.seed is not None else secrets.randbits(31)
    if spec.warm_start is not None:
        store.storage.set_study_user_attr(study_id, attrs.WARM_START, warm.note())
    try:
        with store.write() as connection:
            connection.execute(
                tables.studies.insert().values(
                    study_id=study_id,
                    name=name,
                    project=project,
                    status=StudyStatus.QUEUED.value,
                    n_trials=spec.budget.n_trials,
                    issued=len(spec.enqueue) + len(warm.configs),
                    max_retries=spec.budget.max_retries,
                    max_failed=spec.budget.max_failed,
                    failure_limit=spec.budget.max_failed,
                    timeout=spec.budget.timeout,
                    seed=seed,
                    spec=spec_json,
                    dataset_fingerprint=fingerprint,
                    idempotency_key=idempotency_key,
                    created_at=created.timestamp(),
                )
            )
            if spec.enqueue:
                _insert_pending(connection, study_id, TicketSource.ENQUEUED, spec.enqueue)
            if warm.configs:
                _insert_pending(connection, study_id, TicketSource.WARM_START, warm.configs)
            optuna_rows.put_study_attrs(connection, study_id, {attrs.STATUS: "queued"})
    except sa.exc.IntegrityError:
        # Another request with the same idempotency key won the race: answer with its study.
        store.storage.delete_study(study_id)
        existing = None
        if idempotency_key is not None:
            existing = _study_with_key(store, idempotency_key, spec_json, project)
        if existing is None:
            _refuse_a_reused_id(store, study_id)
            raise
        return get_study(store, existing), True
    return get_study(store, study_id), False


def _refuse_a_reused_id(store: Store, study_id: int) -> None:
    """Names the study that holds ``study_id`` in automl's records where Optuna gave the id
    out again (its own SQLite tables do, once that study's Optuna study was deleted
    outside automl): every submission would get the id, and fail, until it is deleted.

    Raises:
        StudyStateError: If automl's records hold ``study_id``.
    """
    with store.read() as connection:
        held = connection.scalar(
            sa.select(tables.studies.c.name).where(tables.studies.c.study_id == study_id)
        )
    if held is not None:
        raise StudyStateError(
            f"study {study_id} ({held}) is still recorded, but its Optuna study was deleted "
            f"outside automl and Optuna gives its id out again: `automl delete {study_id}` "
            f"(after `automl cancel {study_id}` while it is active) removes what is left, "
            "then submit again"
        )


def _study_with_key(store: Store, key: str, spec_json: str, project: str) -> int | None:
    studies = tables.studies
    with store.read() as connection:
        row = connection.execute(
            sa.select(studies.c.study_id, studies.c.spec).where(
                studies.c.idempotency_key == key, studies.c.project == project
            )
        ).first()
    if row is None:
        return None
    if row.spec != spec_json and _canonical(row.spec) != _canonical(spec_json):
        raise StudyStateError(
            f"Idempotency-Key {key!r} was already used for study {row.study_id} "
            "with a different spec"
        )
    return int(row.study_id)


def _canonical(spec_json: str) -> str:
    """A stored spec in a comparable form: the order of keys in free-form mappings
    (``fixed``, options) and ``1`` against ``1.0`` say nothing of what the study runs, nor
    does a field that an earlier version did not store and this one stores at its default
    (``enqueue: []``: a retry across an upgrade)."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    try:
        validated = StudySpec.model_validate_json(spec_json)
        spec = json.loads(validated.model_dump_json(exclude_none=True))
    except ValueError:  # not a spec this version reads: compared as it was stored
        spec = json.loads(spec_json)
    spec.pop("space_rules", None)  # stamped by the version that stored it, not the client
    return json.dumps(walk(spec), sort_keys=True)


def _create_optuna_study(
    store: Store, spec: StudySpec, project: str, created: datetime
) -> tuple[str, str]:
    """Creates the Optuna study, marked automl's (``created_at``) in the same commit;
    returns the study's name and its Optuna name.

    The name is the spec's, then ``-2``, ``-3``... skipping only the names ``project``'s
    own studies hold, so the answer says nothing about another project's names. Optuna's
    names are global: a project's studies other than the default one's are named
    ``project/name`` there (see ``optuna_study_name``). A name whose Optuna name is taken
    anyway (a leftover of a crashed submit, a study made in optuna-dashboard, or a study
    from before project-qualified names) gets a random suffix (``salted``, which still
    counts as the project's), and the next submission moves on to the next number. A
    name that a concurrent submission holds is skipped once its row is written.
    """
    directions = [optuna.study.StudyDirection[d.upper()] for d in spec.directions]
    marked = {attrs.CREATED_AT: created.isoformat()}
    suffix = 1
    while suffix < 100_000:
        numbers = range(suffix, suffix + NAME_PROBE_BATCH)
        batch = [spec.name if n == 1 else numbered_name(spec.name, n) for n in numbers]
        suffix += NAME_PROBE_BATCH
        with store.read() as connection:
            own = project_study_names(connection, project, batch)
            taken = optuna_rows.taken_study_names(
                connection, [optuna_study_name(project, name) for name in batch]
            )
        for name in batch:
            if name in own:
                continue
            optuna_name = optuna_study_name(project, name)
            if optuna_name not in taken and _created(store, directions, optuna_name, marked):
                return name, optuna_name
            if _held_by_a_submission(store, project, name, optuna_name):
                continue
            if _created(store, directions, optuna_name, marked):  # its submission gave it up
                return name, optuna_name
            name = salted(name)
            optuna_name = optuna_study_name(project, name)
            if _created(store, directions, optuna_name, marked):
                return name, optuna_name
    raise StudyStateError(f"no free study name for {spec.name!r}")


def numbered_name(name: str, number: int) -> str:
    """``name-number``, ``name`` cut short where the whole would pass the names' length
    (``MAX_NAME_CHARS``): a 100-character name's second study was 102 characters long."""
    tail = f"-{number}"
    return name[: MAX_NAME_CHARS - len(tail)] + tail


def _held_by_a_submission(store: Store, project: str, name: str, optuna_name: str) -> bool:
    """Whether a submission in flight holds ``name`` for ``project``: its Optuna study
    exists and its row comes within ``NAME_WAIT_S`` (two identical submissions at once are
    ``name`` and ``name-2``, not ``name`` and a random suffix). False if the Optuna study
    goes away meanwhile, or stays without a row (a leftover: at once for one a submission
    created longer ago than the wait, by its ``created_at``)."""
    started = time.monotonic()
    while True:
        with store.read() as connection:
            if project_study_names(connection, project, [name]):
                return True
            if not optuna_rows.taken_study_names(connection, [optuna_name]):
                return False
            created = optuna_rows.study_attr_by_name(connection, optuna_name, attrs.CREATED_AT)
            clock = now(connection)  # the clock its submission read
        waited = time.monotonic() - started
        if created is None:
            # A submission sets it right after creating the study: a study still without
            # it was made with another tool (or by a submit that died at once).
            if waited >= UNMARKED_WAIT_S:
                return False
        elif clock - datetime.fromisoformat(created).timestamp() > NAME_WAIT_S:
            return False  # a leftover of a submit that never wrote its row
        if waited >= NAME_WAIT_S:
            return False
        time.sleep(0.05)


def _created(
    store: Store,
    directions: list[optuna.study.StudyDirection],
    name: str,
    user_attrs: dict[str, Any],
) -> bool:
    """Whether the Optuna study ``name`` was created with ``user_attrs`` (False: the name
    is taken)."""
    try:
        with store.write() as connection:
            optuna_rows.create_study(connection, name, directions, user_attrs)
    except sa.exc.IntegrityError:
        return False
    return True


# --- reads -------------------------------------------------------------------------------------


def submitted_spec(store: Store, study_id: int) -> StudySpec:
    """The spec a study was submitted with.

    Raises:
        StudyNotFoundError: If there is no such automl study.
    """
    return _stored_spec(stored_spec_text(store, study_id))  # the read retries briefly


def _stored_spec(text: str) -> StudySpec:
    # Stored specs were fully checked at submission; only rebuild the model.
    return StudySpec.model_validate_json(text)


# --- lifecycle ---------------------------------------------------------------------------------


def _locked(connection: sa.engine.Connection, study_id: int) -> sa.Row[Any]:
    row = lock_study(connection, study_id)
    if row is None or row.status == DELETING:
        raise StudyNotFoundError(study_id)
    return row


def _locked_to_run(connection: sa.engine.Connection, study_id: int) -> sa.Row[Any]:
    """``_locked``, for a change that queues trials: refused where the study's Optuna
    study is gone (its trials could not be created: it would fail again at once).

    Raises:
        StudyStateError: If the Optuna study was deleted outside automl.
    """
    row = _locked(connection, study_id)
    if not optuna_rows.optuna_study_exists(connection, study_id):
        raise StudyStateError(f"study {study_id}: " + OPTUNA_STUDY_GONE.format(study_id=study_id))
    return row


def cancel_study(store: Store, study_id: int) -> StudyDetail:
    """Cancels a queued or running study: nothing new starts, queued work is dropped.

    Running trials stop at their next heartbeat or epoch end; they and the dropped work
    are kept as ``cancelled`` and run again if the study is resumed.

    Raises:
        StudyNotFoundError: If there is no such study.
        StudyStateError: If the study already ended.
    """
    with store.write() as connection:
        row = _locked(connection, study_id)
        if row.status not in ACTIVE:
            raise StudyStateError(f"study {study_id} is already {row.status}")
        reason = "cancelled by request"
        change_status(connection, row, StudyStatus.CANCELLED, reason, now(connection))
    return get_study(store, study_id)


def fail_without_optuna_study(store: Store, study_id: int) -> bool:
    """Fails an active study whose Optuna study is gone (deleted with another tool): no
    trial of it can run or be read again. Nothing changes if the Optuna study is there.

    Returns:
        Whether the study was failed now.
    """
    with store.write() as connection:
        row = lock_study(connection, study_id)
        if row is None or row.status not in ACTIVE:
            return False
        if optuna_rows.optuna_study_exists(connection, study_id):
            return False
        reason = OPTUNA_STUDY_GONE.format(study_id=study_id)
        return change_status(connection, row, StudyStatus.FAILED, reason, now(connection))


def extend_study(store: Store, study_id: int, add_trials: int) -> StudyDetail:
    """Adds ``add_trials`` to an active study's budget.

    Raises:
        StudyNotFoundError: If there is no such study.
        StudyStateError: If the study ended (resume it instead) or the budget would pass
            the largest allowed.
    """
    with store.write() as connection:
        row = _locked_to_run(connection, study_id)
        if row.status not in ACTIVE:
            # A study that can take no more trials says so, rather than send its user to a
            # resume that would refuse them for that reason (a tester).
            _check_sampler_budget(row, add_trials)
            raise StudyStateError(
                f"study {study_id} is {row.status}; resume it to add trials to an ended study"
            )
        _check_budget(study_id, row.n_trials + add_trials)
        _check_sampler_budget(row, add_trials)
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == study_id)
            .values(n_trials=row.n_trials + add_trials)
        )
    return get_study(store, study_id)


def _check_budget(study_id: int, n_trials: int) -> None:
    limit = Limits().max_trials
    if n_trials > limit:
        message = f"study {study_id} would have {n_trials:,} trials: over the limit of {limit:,}"
        raise SpecError([FieldError(("add_trials",), f"{message} (max_trials)")])


def _check_sampler_budget(row: sa.Row[Any], add_trials: int) -> None:
    """A grid study runs each of its cells once: its budget is the grid, nothing more; a
    brute-force study runs at most one trial per configuration of its space; a study of
    a sampler in ``SAMPLER_MAX_TRIALS`` has at most that many trials."""
    if add_trials <= 0:
        return
    spec = _stored_spec(row.spec)
    most = SAMPLER_MAX_TRIALS.get(spec.sampler.name)
    if most is not None and row.n_trials + add_trials > most:
        message = f"study {row.study_id} has {row.n_trials:,} trials: " + max_trials_message(
            spec.sampler.name
        )
        raise SpecError([FieldError(("add_trials",), message)])
    if spec.sampler.name == "grid":
        runs, whole = spec.budget.n_trials, _finite_space(spec, "grid")
        if whole is None or whole <= runs:
            message = (
                f"study {row.study_id} runs {runs} configurations of an exact grid, each "
                "once: it takes no more trials (submit a new study to search further)"
            )
        else:  # its sample of cells was drawn for its budget, and stays as drawn
            most = min(whole, Limits().max_trials)
            message = (
                f"study {row.study_id} runs {runs} of its grid's {whole} configurations, "
                "drawn once for that budget: it takes no more trials (submit a new study "
                f"with budget.n_trials up to {most}, or use sampler brute_force, whose "
                "budget can grow to its whole space)"
            )
        raise SpecError([FieldError(("add_trials",), message)])
    cells = _finite_space(spec)
    if cells is not None and row.n_trials + add_trials > cells:
        room = max(cells - row.n_trials, 0)
        message = (
            f"study {row.study_id} searches a space of {cells} configurations and has "
            f"{row.n_trials} trials: add at most {room}"
        )
        raise SpecError([FieldError(("add_trials",), message)])


def _finite_space(spec: StudySpec, sampler: str = "brute_force") -> int | None:
    """The configurations a study of ``sampler`` can run (None for other samplers, or one
    stored before its space had to be finite)."""
    if spec.sampler.name != sampler:
        return None
    try:
        return grid_size(spec, Limits().max_grid_cells)
    except GridError:
        return None


def resume_study(
    store: Store, study_id: int, add_trials: int = 0, *, limits: Limits | None = None
) -> StudyDetail:
    """Reopens a cancelled, failed or completed study, optionally with more budget.

    Its cancelled trials are queued again (an interrupted one resumes from its last
    checkpoint), ``add_trials`` fresh trials are added, and ``budget.max_failed`` counts
    failures anew from here. ``budget.timeout`` counts from the restart.

    Args:
        store: The store.
        study_id: The study.
        add_trials: Trials to add to its budget.
        limits: The per-project limits to enforce (the API's); local commands pass none.

    Raises:
        StudyNotFoundError: If there is no such study.
        StudyStateError: If the study is still active, or would have nothing to run.
        ProjectLimitError: If reopening it would take its project over a limit.
    """
    tickets = tables.tickets
    with store.write() as connection:
        row = _locked_to_run(connection, study_id)
        if row.status in ACTIVE:
            raise StudyStateError(
                f"study {study_id} is {row.status}; only cancelled, failed or completed "
                "studies can be resumed"
            )
        if limits is not None:
            check_project_room(connection, row.project, limits, new_study=False)
        n_trials = row.n_trials + add_trials
        _check_budget(study_id, n_trials)
        _check_sampler_budget(row, add_trials)
        requeued = connection.execute(
            tickets.update()
            .where(tickets.c.study_id == study_id, tickets.c.state == TicketState.CANCELLED.value)
            .values(state=TicketState.PENDING.value)
        ).rowcount
        # A cancelled study's trials still stopping: their workers hand them back as due
        # again once they see it resumed (``release``), or carry on if they have not
        # stopped yet. Either way they run: no budget needs adding for them.
        stopping = connection.scalar(
            sa.select(sa.func.count()).where(
                tickets.c.study_id == study_id, tickets.c.state == TicketState.RUNNING.value
            )
        )
        if requeued == 0 and not stopping and n_trials <= row.issued:
            spec = _stored_spec(row.spec)
            cells = spec.budget.n_trials if spec.sampler.name == "grid" else _finite_space(spec)
            if cells is not None and row.n_trials >= cells:
                raise StudyStateError(
                    f"study {study_id} ran each of its {cells} configurations: nothing is "
                    "left to run (submit a new study to search further)"
                )
            raise StudyStateError(
                f"study {study_id} has no trials left to run; resume it with add_trials > 0"
            )
        unstarted = max(0, row.n_trials - row.issued)  # cancelled before they were claimed
        reason = (
            f"resumed: {counted(requeued, 'trial')} re-queued, {unstarted} never started, "
            f"{add_trials} added"
        )
        if stopping:
            reason += f", {stopping} still stopping (they run again)"
        limit = count_errors(connection, study_id) + row.max_failed
        at = now(connection)
        change_status(
            connection,
            row,
            StudyStatus.QUEUED,
            reason,
            at,
            n_trials=n_trials,
            failure_limit=limit,
            deadline=None,
            started_at=None,
        )
    return get_study(store, study_id)


def rerun_failed(store: Store, study_id: int, *, limits: Limits | None = None) -> StudyDetail:
    """Queues every failed trial of the study again, with its params; reopens an ended study.

    A completed study without failed trials whose test evaluation failed (the scoring
    raised, or its claims ended without a result) has its evaluation made due again; one
    with failed trials gets a new evaluation when it completes again.

    Args:
        store: The store.
        study_id: The study.
        limits: The per-project limits to enforce (the API's); local commands pass none.

    Raises:
        StudyNotFoundError: If there is no such study.
        StudyStateError: If the study has no failed trial (nor a failed test evaluation).
        ProjectLimitError: If reopening it would take its project over a limit.
    """
    with store.write() as connection:
        row = _locked_to_run(connection, study_id)
        rerun = _rerun_failed_trials(connection, row, limits)
        if not rerun and not _rerun_failed_evaluation(connection, row):
            raise StudyStateError(
                f"study {study_id} has no failed trials (nor a failed test evaluation)"
            )
    return get_study(store, study_id)


def _rerun_failed_trials(
    connection: sa.engine.Connection, row: sa.Row[Any], limits: Limits | None
) -> int:
    """Queues the study's failed trials again (see ``rerun_failed``); how many."""
    tickets, study_id = tables.tickets, row.study_id
    rerun = connection.execute(
        tickets.update()
        .where(
            tickets.c.study_id == study_id,
            tickets.c.state == TicketState.DONE.value,
            tickets.c.outcome == "fail",
        )
        .values(state=TicketState.PENDING.value, outcome=None, failure=None, retries=0)
    ).rowcount
    if rerun == 0:
        return 0
    if limits is not None and row.status not in ACTIVE:
        check_project_room(connection, row.project, limits, new_study=False)
    limit = count_errors(connection, study_id) + row.max_failed
    if row.status in ACTIVE:
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == study_id)
            .values(failure_limit=limit)
        )
    else:
        change_status(
            connection,
            row,
            StudyStatus.QUEUED,
            f"re-running {counted(rerun, 'failed trial')}",
            now(connection),
            failure_limit=limit,
            deadline=None,
            started_at=None,
        )
    return rerun


def _rerun_failed_evaluation(connection: sa.engine.Connection, row: sa.Row[Any]) -> bool:
    """Makes the test evaluation of a completed study due again if it failed; whether it
    did."""
    if row.status != StudyStatus.COMPLETED.value:
        return False
    evaluations = tables.evaluations
    state = connection.scalar(
        sa.select(evaluations.c.state).where(evaluations.c.study_id == row.study_id)
    )
    if state != EvaluationState.FAILED.value:
        return False
    mirror = request_evaluation(connection, row.study_id, now(connection))
    if optuna_rows.optuna_study_exists(connection, row.study_id):
        optuna_rows.put_study_attrs(connection, row.study_id, {attrs.TEST_EVALUATION: mirror})
    return True


def queue_refit(store: Store, study_id: int) -> RefitView:
    """Queues the refit of an ended study's best configuration (see ``automl.store.refits``).

    Idempotent: a refit already queued, running or done is left as it is and returned; a
    failed one, a done one of a trial that is no longer the best (the study was resumed
    since), or a done one whose weights are gone or damaged, is queued again.

    Raises:
        StudyNotFoundError: If there is no such study.
        StudyStateError: If the study is still active, has several objectives (no single
            best trial to retrain) or no completed trial.
    """
    lost = _refit_weights_lost(store, study_id)  # read before the write lock is taken
    with store.write() as connection:
        row = _locked(connection, study_id)
        if row.status in ACTIVE:
            raise StudyStateError(
                f"study {study_id} is {row.status}; a refit retrains its best trial once it "
                "has ended (wait for it to complete, or cancel it)"
            )
        directions = _stored_spec(row.spec).directions
        if len(directions) > 1:
            raise StudyStateError(
                f"study {study_id} has {len(directions)} objectives: its Pareto front has no "
                "single best trial to refit"
            )
        maximize = directions[0] == "maximize"
        best = optuna_rows.best_trial_number(connection, study_id, maximize)
        if best is None:
            raise StudyStateError(f"study {study_id} has no completed trial to refit")
        evaluation = read_evaluation(connection, study_id)
        if evaluation is not None and NO_TEST_SPLIT in (evaluation.note or ""):
            raise StudyStateError(
                f"study {study_id}'s {evaluation.note}: a refit trains on train + validation "
                "and is scored on the test split (give the dataset one: its option test_fraction, "
                "or test_path where the source has one)"
            )
        current = read_refit(connection, study_id)
        stale = (
            current is not None
            and current.state == RefitState.DONE
            and (current.trial != best or lost)
        )
        if current is not None and current.state != RefitState.FAILED and not stale:
            return current
        mirror = request_refit(connection, study_id, now(connection))
        optuna_rows.put_study_attrs(connection, study_id, {attrs.REFIT: mirror})
        refit = read_refit(connection, study_id)
    assert refit is not None
    return refit


def _refit_weights_lost(store: Store, study_id: int) -> bool:
    """Whether the study's done refit's weights are gone or damaged (their digest): a
    refit asked for again is then queued again, as the only way to serve the study."""
    refits = tables.refits
    with store.read() as connection:
        weights = connection.scalar(
            sa.select(refits.c.weights).where(
                refits.c.study_id == study_id, refits.c.state == RefitState.DONE.value
            )
        )
    return weights is not None and artifact_lost(store.artifacts, weights)


def enqueue_trials(
    store: Store, study_id: int, configs: Sequence[Mapping[str, Any]]
) -> StudyDetail:
    """Queues configurations to run next, taken from the study's remaining budget.

    Each config maps searched param names to values; params it leaves out are proposed
    by the sampler. All are inserted with one statement.

    Raises:
        StudyNotFoundError: If there is no such study.
        SpecError: If a config names an unknown param or a value outside its range
            (paths like ``configs[0].lr``).
        StudyStateError: If the study ended, or its remaining budget is too small.
    """
    if not configs:
        raise SpecError([FieldError(("configs",), "give at least one configuration")])
    if len(configs) > MAX_ENQUEUE:
        raise SpecError([FieldError(("configs",), f"at most {MAX_ENQUEUE} configurations")])
    spec = submitted_spec(store, study_id)
    if spec.sampler.name == "grid":
        message = f"study {study_id} runs each cell of an exact grid once: it takes no configs"
        raise SpecError([FieldError(("configs",), message)])
    errors = [
        error
        for index, config in enumerate(configs)
        for error in check_config(spec, ("configs", index), config)
    ]
    if errors:
        raise SpecError(errors)
    with store.write() as connection:
        row = _locked_to_run(connection, study_id)
        if row.status not in ACTIVE:
            raise StudyStateError(f"study {study_id} is {row.status}; resume it first")
        left = row.n_trials - row.issued
        if len(configs) > left:
            raise StudyStateError(
                f"study {study_id} has {counted(left, 'trial')} of budget left for "
                f"{counted(len(configs), 'configuration')}; extend it first"
            )
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == study_id)
            .values(issued=row.issued + len(configs))
        )
        _insert_pending(connection, study_id, TicketSource.ENQUEUED, configs)
    return get_study(store, study_id)


def _insert_pending(
    connection: sa.engine.Connection,
    study_id: int,
    source: TicketSource,
    configs: Sequence[Mapping[str, Any]],
) -> None:
    """Queues configurations of a study, all in one statement."""
    at = now(connection)
    connection.execute(
        tables.tickets.insert(),
        [
            {
                "study_id": study_id,
                "source": source.value,
                "params": json.dumps(dict(config)),
                "state": TicketState.PENDING.value,
                "created_at": at,
            }
            for config in configs
        ],
    )


def _fingerprint(spec: StudySpec) -> str | None:
    """The dataset's fingerprint (for ``warm_start: auto``), or None if it cannot be listed
    here (the data lives on the workers' machines)."""
    try:
        return dataset_fingerprint(spec.dataset.source, spec.dataset.options)
    except Exception as exc:  # a missing folder here is not a reason to refuse the study
        logger.info("no dataset fingerprint for %s: %s", spec.name, exc)
        return None


def delete_study(store: Store, study_id: int) -> None:
    """Deletes an ended study: its trials, tickets, weights and checkpoints.

    Once the study is marked ``deleting`` it is gone for every reader and the deletion is
    the store's to finish: if workers still stopping its trials keep it from finishing
    now (or the database fails meanwhile), the reaper finishes it.

    Raises:
        StudyNotFoundError: If there is no such study.
        StudyStateError: If the study is still active (cancel it first).
    """
    with store.write() as connection:
        row = _locked(connection, study_id)
        if row.status in ACTIVE:
            raise StudyStateError(f"study {study_id} is {row.status}; cancel it first")
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == study_id)
            .values(status=DELETING)
        )
    try:
        if not finish_deletion(store, study_id):
            logger.info("study %s: still written to; the reaper finishes its deletion", study_id)
    except Exception as exc:
        if not is_transient(exc):
            raise
        logger.warning("study %s: deletion left to the reaper: %s", study_id, first_line(exc))


DELETION_ROUNDS = 5
"""Rounds ``finish_deletion`` tries before leaving the rest to the reaper's next pass."""


def finish_deletion(store: Store, study_id: int) -> bool:
    """Removes a study marked ``deleting``: the shared artifacts (GAN generators) no other
    study uses, its own artifacts, the Optuna study, automl's rows.

    The artifacts go first and the rows after, so a crash between leaves rows that name
    what is left to remove. A worker still stopping one of its trials may add an artifact
    meanwhile (a stop checkpoint, a result's weights): the rows are deleted only in a
    transaction that, holding the study's ticket and trial rows, finds no artifact that
    was not removed; otherwise the new ones are removed and the round starts again. A
    worker's write waiting on those locks then finds its ticket or trial gone, and
    removes what it uploaded.

    Idempotent: the reaper completes a deletion that a crash interrupted. A round whose
    transaction PostgreSQL ends for a deadlock or serialization conflict is tried again.

    Returns:
        Whether the study is gone (False: workers kept adding artifacts or taking locks;
        the reaper's next pass goes on).
    """
    shared = remove_unshared(store, study_id)
    removed: set[str] = set()
    for _ in range(DELETION_ROUNDS):
        with store.read() as connection:
            named = _study_artifacts(connection, study_id)
        for artifact_id in sorted(named - removed):
            remove_quietly(store.artifacts, artifact_id)
        removed |= named
        try:
            with store.write() as connection:
                _lock_study_rows(connection, study_id)
                if not _study_artifacts(connection, study_id) <= removed:
                    continue
                # A trial that recorded a shared artifact since: removed once the rows go.
                late = shared_keys_of(connection, study_id) - shared
                if optuna_rows.optuna_study_exists(connection, study_id):
                    optuna_rows.delete_study(connection, study_id)  # not another tool's
                for table in (tables.tickets, tables.evaluations, tables.refits, tables.studies):
                    connection.execute(table.delete().where(table.c.study_id == study_id))
            if late:
                remove_unshared(store, study_id, late)
            return True
        except sa.exc.DBAPIError as exc:
            if not is_lock_conflict(exc):
                raise
            logger.debug("study %s: deletion round lost a lock conflict: %s", study_id, exc)
    return False


def _study_artifacts(connection: sa.engine.Connection, study_id: int) -> set[str]:
    """Every artifact the study's rows name: checkpoints, refits, the trials' files."""
    checkpoints = connection.scalars(
        sa.select(tables.tickets.c.checkpoint).where(
            tables.tickets.c.study_id == study_id, tables.tickets.c.checkpoint.is_not(None)
        )
    ).all()
    refit = refit_artifacts(connection, study_id)
    if not optuna_rows.optuna_study_exists(connection, study_id):
        return {*checkpoints, *refit}  # the trials under its id are another tool's
    return {*checkpoints, *refit, *_trial_artifacts(connection, study_id)}


def _lock_study_rows(connection: sa.engine.Connection, study_id: int) -> None:
    """Holds the study's row, its Optuna study, its tickets, then its trials until the
    transaction ends: no worker records a checkpoint or adds a trial or a trial's row
    meanwhile. Workers lock in that order too (the study's row before a ticket when they
    settle, release or are reaped; the Optuna study before the ticket when they create a
    trial; a ticket before its trial when they beat with writes), so none waits for the
    deletion while holding what it waits for."""
    studies, tickets = tables.studies, tables.tickets
    connection.execute(
        sa.select(studies.c.study_id).where(studies.c.study_id == study_id).with_for_update()
    ).all()
    optuna_rows.lock_study_row(connection, study_id)
    connection.execute(
        sa.select(tickets.c.ticket_id).where(tickets.c.study_id == study_id).with_for_update()
    ).all()
    optuna_rows.lock_trials(connection, study_id)


def _trial_artifacts(connection: sa.engine.Connection, study_id: int) -> list[str]:
    """Every artifact the study's trials record, sorted: their weights attribute and each
    artifact Optuna's ``upload_artifact`` recorded (weights, model cards)."""
    weights = optuna_rows.trial_attr_values(connection, study_id, attrs.WEIGHTS)
    keys = optuna_rows.trial_system_attr_keys(connection, study_id, OPTUNA_ARTIFACT_ATTR)
    # Optuna's key is the prefix and the artifact's id (its value, a JSON record, says so too).
    return sorted({*weights, *(key.removeprefix(OPTUNA_ARTIFACT_ATTR) for key in keys)})


def end_study_if_done(store: Store, study_id: int) -> StudyStatus:
    """Ends the study if its work is done, its time ran out or it failed too often.

    Raises:
        StudyNotFoundError: If there is no such study.
    """
    status = end_if_done(store, study_id)
    if status is None:
        raise StudyNotFoundError(study_id)
    return status


__all__ = [
    "cancel_study",
    "delete_study",
    "end_study_if_done",
    "enqueue_trials",
    "extend_study",
    "fail_without_optuna_study",
    "finish_deletion",
    "iso",
    "queue_refit",
    "rerun_failed",
    "resume_study",
    "submit_or_replay",
    "submit_study",
    "submitted_spec",
]
