"""One study's finished trials in a worker's memory, without their bulky attributes.

Samplers and pruners read every trial of a study before each trial, so workers (and
``automl proxy``) keep the finished ones (``automl.store.study_caches``). Optuna's own
cache keeps each trial whole, every user attribute included: the per-epoch history alone
is about 150 KB of JSON a trial at 500 epochs (260 KB once parsed), so a study of 1,000
such trials took a worker 2 GB, and its first read 42 s. What a search reads of a trial is
its params, values, per-epoch objective values, state and system attributes (and automl's
small attributes, e.g. the data it trained on): this cache keeps those and leaves out
the attributes only people read (``LEFT_OUT``), which the API and the dashboard read from
the database.

Finished trials never change what a search reads, so each is read once; the study's
running trials, and what is past them, are read again on every call, as Optuna's cache
does.
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections.abc import Container

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from automl.store import attrs, optuna_rows
from automl.store.delegating import DelegatingStorage
from automl.store.storage import Store

LEFT_OUT = frozenset(
    {
        attrs.HISTORY,
        attrs.PER_CLASS,
        attrs.CONFUSION,
        attrs.MOST_CONFUSED,
        attrs.TEST_PER_CLASS,
        attrs.TEST_CONFUSION,
        attrs.TEST_MOST_CONFUSED,
    }
)
"""Trial attributes the cache leaves out: they grow with the epochs or the classes, and
no sampler, pruner or worker check reads them."""


class LeanTrialCache(DelegatingStorage):
    """Optuna storage over the database whose ``get_all_trials`` keeps the finished trials
    it read, without ``LEFT_OUT``; every other call goes to the database (whole trials
    from ``get_trial``).

    Args:
        store: The open store.
    """

    def __init__(self, store: Store) -> None:
        super().__init__(store.storage)
        self.store = store
        self._finished: dict[int, dict[int, FrozenTrial]] = {}  # study -> trial id -> trial
        # study -> its finished trials in number order: samplers read a study several
        # times per trial, and sorting thousands each time was most of a read's cost.
        self._ordered: dict[int, list[FrozenTrial]] = {}
        self._watermark: dict[int, int] = {}
        self._directions: dict[int, list[StudyDirection]] = {}
        self._lock = threading.Lock()

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """See ``BaseStorage``: the study's trials in number order, the finished ones from
        memory (without ``LEFT_OUT``). Each call reads only the trials past the study's
        *watermark*, the highest trial id up to which every trial of the study is finished
        and kept (as Optuna's cache does, which reads past the highest finished id): the
        running ones, and those created or finished since; a study's size costs nothing.

        Raises:
            KeyError: If the study does not exist.
        """
        with self._lock:
            after = self._watermark.get(study_id, -1)
            finished = self._finished.setdefault(study_id, {})
        with self.store.read() as connection:
            recent = optuna_rows.trial_numbers_after(connection, study_id, after)
            if not recent and not optuna_rows.study_exists(connection, study_id):
                raise KeyError(f"no study with id {study_id}")
            with self._lock:
                missing = [trial_id for trial_id in recent if trial_id not in finished]
            loaded = optuna_rows.load_trials(
                connection, missing, leave_out=LEFT_OUT, system_attrs=True
            )
        id_of = {number: trial_id for trial_id, number in recent.items()}
        fresh = {id_of[trial.number]: trial for trial in loaded}
        with self._lock:
            added = []
            for trial_id, trial in fresh.items():
                if trial.state.is_finished() and trial_id not in finished:
                    finished[trial_id] = trial
                    added.append(trial)
            watermark = after
            for trial_id in recent:  # in id order: up to the first one still unfinished
                if trial_id not in finished:
                    break
                watermark = trial_id
            self._watermark[study_id] = watermark
            ordered = self._ordered.get(study_id)
            if ordered is None or len(ordered) + len(added) != len(finished):
                ordered = sorted(finished.values(), key=_number)
            elif added:  # a new list: one returned before stays as it was
                ordered = _inserted(ordered, added)
            self._ordered[study_id] = ordered
            unfinished = [trial for trial_id, trial in fresh.items() if trial_id not in finished]
        found = _inserted(ordered, unfinished)
        if states is not None:
            found = [trial for trial in found if trial.state in states]
        return copy.deepcopy(found) if deepcopy else found

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        """See ``BaseStorage`` (read once: a study's directions never change)."""
        with self._lock:
            known = self._directions.get(study_id)
        if known is None:
            known = self.backend.get_study_directions(study_id)
            with self._lock:
                self._directions[study_id] = known
        return list(known)


def _number(trial: FrozenTrial) -> int:
    return trial.number


def _inserted(ordered: list[FrozenTrial], trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """A new list: ``ordered`` (in number order) with ``trials`` in their places."""
    merged = list(ordered)
    for trial in trials:
        bisect.insort(merged, trial, key=_number)
    return merged


__all__ = ["LEFT_OUT", "LeanTrialCache"]
