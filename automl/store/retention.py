"""Top-k weight retention: only the trials a study keeps hold weights, so disk stays bounded.

A study keeps the weights of its ``keep_weights`` best COMPLETE trials on the first
objective (ties: the lower trial number first, as ``best_trial_id`` orders them) and, with
several objectives, of every trial on the Pareto front besides. Every other trial that
still has weights loses them: a COMPLETE trial that fell out, and a trial that saved
weights but did not complete (the reaper ended it first). A RUNNING trial is never
touched, nor are checkpoints.

Why many workers can run this at once without locks: a trial that is outside the kept set
in some consistent view of the database stays outside it forever. Trials only ever join
the COMPLETE set, with fixed values, so the k trials ranked above it, or the trial that
dominates it, are still there later. A caller reads the trials that have weights first
and the kept set after, on one connection (one SQLite snapshot; on PostgreSQL, a later
statement sees at least what an earlier one saw), so every trial it removes is outside a
view that already contains it. Each removal deletes the artifact, then the trial's
``automl.weights_artifact`` attribute with a compare-and-set; racing callers remove the
same artifact quietly and exactly one of them records why (``automl.weights_removed``).
A crash between the two steps leaves an attribute naming a missing artifact, which the
next pass removes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import sqlalchemy as sa
from optuna.trial import TrialState

from automl.spec import StudySpec
from automl.store import attrs, optuna_rows, tables
from automl.store.artifacts import remove_quietly
from automl.store.pareto import pareto_front
from automl.store.storage import Store
from automl.store.tables import DELETING

logger = logging.getLogger("automl.store")

_ENDED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
OPTUNA_ARTIFACT_ATTR = "artifacts:"
"""Prefix of the trial system attribute where ``upload_artifact`` records an artifact (what
optuna-dashboard lists); Optuna has no public call that removes it."""


def outranked_reason(keep: int) -> str:
    """Why a COMPLETE trial holds no weights: ``keep`` better trials were there first."""
    return f"not among the study's best {keep} (keep_weights)"


MAX_REMEMBERED_STUDIES = 1024
"""How many studies' best trials an ``Outranking`` remembers (the oldest go first)."""


class Outranking:
    """Whether a trial that completes with a value is already out of its single-objective
    study's kept set: ``keep`` of the study's COMPLETE trials rank above it (a better
    finite value, or the same value and a lower number). Such a trial never gets back
    in, so a worker need not save its weights at all.

    Remembers each study's ``keep`` best trials as last read. The set of COMPLETE trials
    only grows, with fixed values, so while those trials are still there, a trial that
    ranks below the last of them is outranked: that check is a lookup of ``keep`` rows
    by primary key, whatever the study's size. Only a trial that might still get in
    ranks the study's trials again (``ORDER BY ... LIMIT``). Checking the remembered
    trials themselves, not just the study's id, keeps this true when a deleted study's
    id is given to a new one (SQLite reuses the highest).

    Args:
        store: The store. Thread-safe.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._top: dict[tuple[int, bool, int], list[tuple[int, float, int]]] = {}
        self._lock = threading.Lock()

    def __call__(self, study_id: int, value: float, number: int, maximize: bool, keep: int) -> bool:
        """Whether the trial numbered ``number`` with ``value`` on the first objective is
        outranked in a study that keeps ``keep`` (at least 1) trials' weights.

        Raises:
            ValueError: If ``keep`` is below 1.
        """
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        key = (study_id, maximize, keep)
        with self._lock:
            known = self._top.get(key)
        if known is not None and _ranks_above(known[-1], value, number, maximize):
            with self.store.read() as connection:
                if optuna_rows.count_still_ranked(connection, study_id, known) == keep:
                    return True
        with self.store.read() as connection:
            top = optuna_rows.top_ranked(connection, study_id, maximize, keep)
        with self._lock:
            self._top.pop(key, None)
            if len(top) == keep:
                self._top[key] = top
                while len(self._top) > MAX_REMEMBERED_STUDIES:
                    del self._top[next(iter(self._top))]
        return len(top) == keep and _ranks_above(top[-1], value, number, maximize)


def _ranks_above(theirs: tuple[int, float, int], value: float, number: int, maximize: bool) -> bool:
    _, their_value, their_number = theirs
    better = their_value > value if maximize else their_value < value
    return better or (their_value == value and their_number < number)


def retain_weights(store: Store, study_id: int) -> list[int]:
    """Deletes the weights of the study's trials outside its kept set (see the module).

    Safe to call from any number of processes at once, at any time; a worker calls it
    after each trial it completes.

    Args:
        store: The store.
        study_id: The study.

    Returns:
        The numbers of the trials whose weights this call removed, in order.
    """
    with store.read() as connection:
        row = connection.execute(
            sa.select(tables.studies.c.status, tables.studies.c.spec).where(
                tables.studies.c.study_id == study_id
            )
        ).first()
        if row is None or row.status == DELETING:
            return []
        spec = StudySpec.model_validate_json(row.spec)
        keep = spec.keep_weights
        if keep == "all":
            return []
        # First what has weights, then what to keep (see the module docstring).
        holding = optuna_rows.trials_with_attr(connection, study_id, attrs.WEIGHTS, _ENDED)
        if not holding:
            return []
        kept = _kept(connection, study_id, spec, keep, holding)
    removed = []
    for trial_id, number, state, artifact_id in holding:
        if trial_id in kept:
            continue
        if state == TrialState.COMPLETE:
            reason = outranked_reason(keep)
        else:
            reason = f"the trial ended {state.name.lower()}"
        if _remove(store, trial_id, artifact_id, reason):
            removed.append(number)
    if removed:
        logger.info("study %s: removed the weights of trials %s", study_id, removed)
    return removed


def _kept(
    connection: sa.engine.Connection,
    study_id: int,
    spec: StudySpec,
    keep: int,
    holding: Sequence[tuple[int, int, TrialState, object]],
) -> set[int]:
    """Ids of the trials among ``holding`` that keep their weights: the ``keep`` best on
    the first objective and, with several objectives, those on the Pareto front (found
    once, from the values of every completed trial: ``automl.store.pareto``)."""
    maximize = spec.directions[0] == "maximize"
    kept = set(optuna_rows.top_trial_ids(connection, study_id, maximize, keep))
    complete = {trial_id for trial_id, _, state, _ in holding if state == TrialState.COMPLETE}
    if len(spec.directions) > 1 and complete - kept:
        values = optuna_rows.completed_values(connection, study_id)
        kept |= pareto_front(values, spec.directions) & complete
    return kept


def _remove(store: Store, trial_id: int, artifact_id: str, reason: str) -> bool:
    """Deletes one trial's weights; True if this call recorded the removal."""
    remove_quietly(store.artifacts, artifact_id)
    with store.write() as connection:
        # The trial's row before its attributes, the order a deletion locks in.
        if not optuna_rows.lock_trial(connection, trial_id):
            return False  # its study was deleted
        if not optuna_rows.drop_trial_attr_if(connection, trial_id, attrs.WEIGHTS, artifact_id):
            return False  # another caller was first
        optuna_rows.drop_trial_system_attr(connection, trial_id, OPTUNA_ARTIFACT_ATTR + artifact_id)
        optuna_rows.put_trial_attrs(connection, trial_id, {attrs.WEIGHTS_REMOVED: reason})
    return True


__all__ = ["Outranking", "outranked_reason", "retain_weights"]
