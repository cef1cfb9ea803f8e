"""One interface over the local store and a remote API, for the CLI commands.

``LocalClient`` imports the store (optuna, SQLAlchemy); ``HttpClient`` lives in the light
``automl.cli.http_client`` and is re-exported here.
"""

from __future__ import annotations

from typing import Any, Protocol

import automl.store as store_api  # its names load on first use: reads need no spec or torch
from automl.cli.http_client import ClientError, HttpClient
from automl.spec_errors import SpecError
from automl.store.storage import Store
from automl.store.study_reads import (
    NoBestTrialError,
    get_study,
    get_trial,
    list_studies,
    list_trials,
)
from automl.store.views import (
    BestTrials,
    Page,
    StudyDetail,
    StudySummary,
    TrialDetail,
    TrialSummary,
)


class Client(Protocol):
    """What the CLI needs from the service."""

    def submit(
        self, text: str, is_json: bool, idempotency_key: str | None = None
    ) -> tuple[StudyDetail, bool]: ...
    def studies(self, limit: int) -> Page[StudySummary]: ...
    def study(self, study_id: int) -> StudyDetail: ...
    def best(self, study_id: int) -> BestTrials: ...
    def trials(
        self,
        study_id: int,
        state: str | None = None,
        limit: int | None = None,
        *,
        intermediate_values: bool = False,
    ) -> Page[TrialSummary]: ...
    def trial(self, study_id: int, number: int) -> TrialDetail: ...
    def cancel(self, study_id: int) -> StudyDetail: ...
    def extend(self, study_id: int, add_trials: int) -> StudyDetail: ...
    def resume(self, study_id: int, add_trials: int) -> StudyDetail: ...
    def rerun_failed(self, study_id: int) -> StudyDetail: ...
    def enqueue(self, study_id: int, configs: list[dict[str, Any]]) -> StudyDetail: ...
    def delete(self, study_id: int) -> None: ...


class LocalClient:
    """Talks to the store directly (no server needed)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def submit(
        self, text: str, is_json: bool, idempotency_key: str | None = None
    ) -> tuple[StudyDetail, bool]:
        """Validates and submits a spec's text (YAML reads JSON too); a repeat with the same
        ``idempotency_key`` answers with the study the first one made. The study, and
        whether the answer is a repeat's."""
        from automl.spec import spec_from_text  # imports every registry (torch)

        spec = spec_from_text(text, is_json=is_json)
        return store_api.submit_or_replay(self.store, spec, idempotency_key)

    def studies(self, limit: int) -> Page[StudySummary]:
        """Newest studies first."""
        return list_studies(self.store, limit=limit)

    def study(self, study_id: int) -> StudyDetail:
        """One study."""
        return get_study(self.store, study_id)

    def best(self, study_id: int) -> BestTrials:
        """The best trial(s).

        Raises:
            ClientError: If the study has no completed trial: not a bad input (exit 1), as
                an unknown study is (``StudyNotFoundError``, exit 2).
        """
        try:
            return store_api.best_trials(self.store, study_id)
        except NoBestTrialError as exc:
            raise ClientError(str(exc), bad_input=False) from None

    def trials(
        self,
        study_id: int,
        state: str | None = None,
        limit: int | None = None,
        *,
        intermediate_values: bool = False,
    ) -> Page[TrialSummary]:
        """A study's trials in number order (the first ``limit``; all without it), with
        their per-epoch values only if asked (a table shows none; JSON and exports do)."""
        from optuna.trial import TrialState

        chosen = None if state is None else TrialState[state.upper()]
        return list_trials(
            self.store,
            study_id,
            state=chosen,
            limit=limit or 2**31 - 1,
            intermediate_values=intermediate_values,
        )

    def trial(self, study_id: int, number: int) -> TrialDetail:
        """One trial in full."""
        return get_trial(self.store, study_id, number)

    def cancel(self, study_id: int) -> StudyDetail:
        """Cancels a study."""
        return store_api.cancel_study(self.store, study_id)

    def extend(self, study_id: int, add_trials: int) -> StudyDetail:
        """Adds trials to an active study."""
        return store_api.extend_study(self.store, study_id, add_trials)

    def resume(self, study_id: int, add_trials: int) -> StudyDetail:
        """Reopens an ended study."""
        return store_api.resume_study(self.store, study_id, add_trials)

    def rerun_failed(self, study_id: int) -> StudyDetail:
        """Queues a study's failed trials again."""
        return store_api.rerun_failed(self.store, study_id)

    def enqueue(self, study_id: int, configs: list[dict[str, Any]]) -> StudyDetail:
        """Queues configurations to try next."""
        try:
            return store_api.enqueue_trials(self.store, study_id, configs)
        except SpecError as exc:
            raise ClientError(f"invalid configs: {exc}", bad_input=True) from None

    def delete(self, study_id: int) -> None:
        """Deletes an ended study."""
        store_api.delete_study(self.store, study_id)


__all__ = ["Client", "ClientError", "HttpClient", "LocalClient"]
