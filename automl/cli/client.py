"""One interface over the local store and a remote API, for the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import httpx

from automl.delivery.schemas import AnnotateRequest, Annotations, Predictions
from automl.spec import load_spec
from automl.store import (
    BestTrials,
    Page,
    Store,
    StudyDetail,
    StudySummary,
    best_trials,
    cancel_study,
    delete_study,
    enqueue_trials,
    extend_study,
    get_study,
    list_studies,
    rerun_failed,
    resume_study,
    submit_study,
)

HTTP_TIMEOUT_S = 60.0


class ClientError(RuntimeError):
    """A request failed; ``bad_input`` tells whether the caller's input was at fault."""

    def __init__(self, message: str, bad_input: bool = False) -> None:
        super().__init__(message)
        self.bad_input = bad_input


class Client(Protocol):
    """What the CLI needs from the service."""

    def submit(self, spec_path: Path) -> StudyDetail: ...
    def studies(self, limit: int) -> Page[StudySummary]: ...
    def study(self, study_id: int) -> StudyDetail: ...
    def best(self, study_id: int) -> BestTrials: ...
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

    def submit(self, spec_path: Path) -> StudyDetail:
        """Validates and submits a spec file."""
        return submit_study(self.store, load_spec(spec_path))

    def studies(self, limit: int) -> Page[StudySummary]:
        """Newest studies first."""
        return list_studies(self.store, limit=limit)

    def study(self, study_id: int) -> StudyDetail:
        """One study."""
        return get_study(self.store, study_id)

    def best(self, study_id: int) -> BestTrials:
        """The best trial(s)."""
        return best_trials(self.store, study_id)

    def cancel(self, study_id: int) -> StudyDetail:
        """Cancels a study."""
        return cancel_study(self.store, study_id)

    def extend(self, study_id: int, add_trials: int) -> StudyDetail:
        """Adds trials to an active study."""
        return extend_study(self.store, study_id, add_trials)

    def resume(self, study_id: int, add_trials: int) -> StudyDetail:
        """Reopens an ended study."""
        return resume_study(self.store, study_id, add_trials)

    def rerun_failed(self, study_id: int) -> StudyDetail:
        """Queues a study's failed trials again."""
        return rerun_failed(self.store, study_id)

    def enqueue(self, study_id: int, configs: list[dict[str, Any]]) -> StudyDetail:
        """Queues configurations to try next."""
        return enqueue_trials(self.store, study_id, configs)

    def delete(self, study_id: int) -> None:
        """Deletes an ended study."""
        delete_study(self.store, study_id)


class HttpClient:
    """Talks to a running ``automl serve`` over HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=HTTP_TIMEOUT_S)

    def submit(self, spec_path: Path) -> StudyDetail:
        """Sends a spec file (validated by the server)."""
        try:
            text = spec_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ClientError(f"cannot read spec file {spec_path}: {exc.strerror}", True) from None
        content_type = "application/json" if spec_path.suffix == ".json" else "application/yaml"
        data = self._request(
            "POST", "/studies", content=text, headers={"content-type": content_type}
        )
        return StudyDetail.model_validate(data)

    def studies(self, limit: int) -> Page[StudySummary]:
        """Newest studies first."""
        return Page[StudySummary].model_validate(
            self._request("GET", "/studies", params={"limit": limit})
        )

    def study(self, study_id: int) -> StudyDetail:
        """One study."""
        return StudyDetail.model_validate(self._request("GET", f"/studies/{study_id}"))

    def best(self, study_id: int) -> BestTrials:
        """The best trial(s)."""
        return BestTrials.model_validate(self._request("GET", f"/studies/{study_id}/best"))

    def cancel(self, study_id: int) -> StudyDetail:
        """Cancels a study."""
        return StudyDetail.model_validate(self._request("POST", f"/studies/{study_id}/cancel"))

    def extend(self, study_id: int, add_trials: int) -> StudyDetail:
        """Adds trials to an active study."""
        body = {"add_trials": add_trials}
        return StudyDetail.model_validate(
            self._request("POST", f"/studies/{study_id}/extend", json=body)
        )

    def resume(self, study_id: int, add_trials: int) -> StudyDetail:
        """Reopens an ended study."""
        body = {"add_trials": add_trials}
        return StudyDetail.model_validate(
            self._request("POST", f"/studies/{study_id}/resume", json=body)
        )

    def rerun_failed(self, study_id: int) -> StudyDetail:
        """Queues a study's failed trials again."""
        return StudyDetail.model_validate(
            self._request("POST", f"/studies/{study_id}/rerun-failed")
        )

    def enqueue(self, study_id: int, configs: list[dict[str, Any]]) -> StudyDetail:
        """Queues configurations to try next."""
        body = {"configs": configs}
        return StudyDetail.model_validate(
            self._request("POST", f"/studies/{study_id}/trials", json=body)
        )

    def delete(self, study_id: int) -> None:
        """Deletes an ended study."""
        self._request("DELETE", f"/studies/{study_id}")

    def predict(self, study_id: int, images: list[tuple[str, bytes]], top: int) -> Predictions:
        """Uploads images (name, content) and returns their top classes."""
        files = [("files", (name, data, "application/octet-stream")) for name, data in images]
        return Predictions.model_validate(
            self._request("POST", f"/studies/{study_id}/predict", params={"top": top}, files=files)
        )

    def annotate(self, study_id: int, request: AnnotateRequest) -> Annotations:
        """Suggested labels for a folder under the server's data root."""
        body = request.model_dump(exclude_defaults=True)
        return Annotations.model_validate(
            self._request("POST", f"/studies/{study_id}/annotate", json=body)
        )

    def best_model(self, study_id: int) -> bytes:
        """The best model's bundle: a zip (``GET /studies/{id}/best/model``)."""
        return self._send("GET", f"/studies/{study_id}/best/model").content

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        return response.json() if response.content else None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the API at {self.base_url}: {exc}") from None
        if response.is_success:
            return response
        raise ClientError(_error_text(response), bad_input=400 <= response.status_code < 500)


def _error_text(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            loc = [str(part) for part in item.get("loc", []) if part != "body"]
            parts.append(f"{item.get('path') or '.'.join(loc) or 'body'}: {item.get('msg')}")
        return "; ".join(parts)
    return str(detail or f"HTTP {response.status_code}")
