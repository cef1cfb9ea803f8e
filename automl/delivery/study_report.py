"""Gathering a study's report from the store: its trials, its best trial and the embeddings
of that trial's validation images, rendered by ``automl.delivery.report``."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from automl.data import DatasetError
from automl.delivery.embeddings import MAX_POINTS, validation_embeddings
from automl.delivery.inference import DeliveryError, ServingTrial
from automl.delivery.report import ReportData, render_report
from automl.store import (
    RefitState,
    RefitView,
    Store,
    WeightsNotFoundError,
    attrs,
    best_trials,
    get_frozen_trial,
    get_study,
    optuna_rows,
    served_refit,
)
from automl.store.best_reads import read_evaluation, read_refit

logger = logging.getLogger("automl.delivery")

REPORTED_TRIAL_ATTRS = (attrs.FAILURE,)
"""The user attributes of every trial that the report reads (the best trial: all of them)."""


def gather_report(store: Store, study_id: int, max_points: int = MAX_POINTS) -> ReportData:
    """What the report of ``study_id`` shows.

    The model sections describe the study's best trial (with several objectives, the
    first of the Pareto front): the trial the search chose, scored on the validation split
    its learning curves and embeddings come from (a refit model trained on that split too).

    Raises:
        StudyNotFoundError: If there is no such study.
        NoBestTrialError: If no trial has completed yet.
    """
    study = get_study(store, study_id)
    best = best_trials(store, study_id)
    first = best.trials[0].number
    trial = get_frozen_trial(store, study_id, first)
    note = None
    if len(best.directions) > 1:
        note = (
            f"{len(best.directions)} objectives: trial {first} is the first of the "
            f"{len(best.trials)} trials on the Pareto front."
        )
    selection = "best_trial" if note is None else "pareto_front_first"
    embeddings, embeddings_note = None, None
    try:
        embeddings = validation_embeddings(
            store, ServingTrial(study_id, trial, selection), max_points
        )
    except (DeliveryError, WeightsNotFoundError, DatasetError) as exc:
        embeddings_note = f"No embeddings of trial {first}: {exc}"
    with store.read() as connection:  # the plots read no history, report or matrix
        trials = optuna_rows.load_study_trials(connection, study_id, REPORTED_TRIAL_ATTRS)
    return ReportData(
        study_id=study_id,
        study_name=study.name,
        status=study.status.value,
        directions=study.directions,
        metrics=study.metrics,
        trials=trials,
        best=trial,
        best_note=note,
        embeddings=embeddings,
        embeddings_note=embeddings_note,
        finished=(study.counts.finished, study.n_trials),
        served_note=_refit_note(best.refit, served_refit(store, study_id) is not None),
    )


def _refit_note(refit: RefitView | None, serves: bool) -> str | None:
    """What the report says of the study's refit: the model that serves once it is done
    (``serves``: while its trial is still the best)."""
    if refit is None:
        return None
    if refit.state != RefitState.DONE:
        why = f": {refit.note}" if refit.note else ""
        return f"Refit on train + validation: {refit.state.value}{why}."
    if not serves:
        return (
            f"The refit of trial {refit.trial} does not serve: that trial is no longer the "
            "best, so predictions and the bundle use the best trial's own weights."
        )
    accuracy = (refit.test_metrics or {}).get("accuracy")
    scored = f", test accuracy {accuracy:.4f}" if isinstance(accuracy, int | float) else ""
    return (
        f"Predictions and the bundle serve the refit model: trial {refit.trial}'s "
        f"configuration retrained on train + validation for {refit.epochs} epochs{scored}. "
        "The plots below describe the trial as the search trained it."
    )


def study_report_html(store: Store, study_id: int) -> str:
    """The report of ``study_id`` as a self-contained HTML page.

    Raises:
        StudyNotFoundError: If there is no such study.
        NoBestTrialError: If no trial has completed yet.
    """
    return render_report(gather_report(store, study_id))


REPORT_CACHE_SIZE = 8
"""Rendered reports an API process keeps (a page is a few hundred KB)."""


class ReportCache:
    """The last rendered reports: a render takes seconds (the model embeds images, t-SNE
    runs, seven plots are drawn), and users reload a report.

    A report changes only with its study: a resume changes its status, and a trial that
    starts or ends its counts; both are in the key, with the study's identity (name and
    creation time). Requests for a report being rendered wait for that render instead of
    starting their own.

    Args:
        size: Reports kept, least recently used dropped first.
    """

    def __init__(self, size: int = REPORT_CACHE_SIZE) -> None:
        self.size = size
        self._pages: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self._rendering: dict[tuple[Any, ...], threading.Lock] = {}
        self._lock = threading.Lock()

    def cached(self, store: Store, study_id: int) -> str | None:
        """The study's report if the cache holds it for the study as it is now (one read
        of the study), else None: a reload need not wait behind other reports' drawing.

        Raises:
            StudyNotFoundError: If there is no such study.
        """
        return self._take(self._key(store, study_id))

    def html(self, store: Store, study_id: int) -> str:
        """``study_report_html``, from the cache where the study has not changed.

        Raises:
            StudyNotFoundError: If there is no such study.
            NoBestTrialError: If no trial has completed yet.
        """
        key = self._key(store, study_id)
        page = self._take(key)
        if page is not None:
            return page
        with self._lock:
            rendering = self._rendering.setdefault(key, threading.Lock())
        with rendering:
            page = self._take(key)  # rendered by the request this one waited for
            if page is not None:
                return page
            try:
                page = study_report_html(store, study_id)
                with self._lock:
                    self._pages[key] = page
                    while len(self._pages) > self.size:
                        self._pages.popitem(last=False)
            finally:
                with self._lock:
                    self._rendering.pop(key, None)
        return page

    @staticmethod
    def _key(store: Store, study_id: int) -> tuple[Any, ...]:
        """What the study's report depends on: its identity, status and counts, whether
        its Optuna study is still there (another tool may delete it), and the states of its
        test evaluation and refit (which end after the study does)."""
        study = get_study(store, study_id)
        with store.read() as connection:
            trials_there = optuna_rows.optuna_study_exists(connection, study_id)
            evaluation = read_evaluation(connection, study_id)
            refit = read_refit(connection, study_id)
        return (
            store.url,
            study_id,
            study.name,
            study.created_at,
            study.status.value,
            study.finished_at,
            study.counts.model_dump_json(),
            trials_there,
            None if evaluation is None else (evaluation.state, evaluation.finished_at),
            None if refit is None else (refit.state, refit.requested_at, refit.finished_at),
        )

    def _take(self, key: tuple[Any, ...]) -> str | None:
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                self._pages.move_to_end(key)
            return page


__all__ = ["ReportCache", "gather_report", "study_report_html"]
