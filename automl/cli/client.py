"""One interface over the local store and a remote API, for the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import httpx
from optuna.storages import BaseStorage

from automl.spec import load_spec
from automl.store import (
    BestTrials,
    Page,
    StudyDetail,
    StudySummary,
    best_trials,
    cancel_study,
    get_study,
    list_studies,
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


class LocalClient:
    """Talks to the Optuna storage directly (no server needed)."""

    def __init__(self, storage: BaseStorage) -> None:
        self.storage = storage

    def submit(self, spec_path: Path) -> StudyDetail:
        """Validates and submits a spec file."""
        return submit_study(self.storage, load_spec(spec_path))

    def studies(self, limit: int) -> Page[StudySummary]:
        """Newest studies first."""
        return list_studies(self.storage, limit=limit)

    def study(self, study_id: int) -> StudyDetail:
        """One study."""
        return get_study(self.storage, study_id)

    def best(self, study_id: int) -> BestTrials:
        """The best trial(s)."""
        return best_trials(self.storage, study_id)

    def cancel(self, study_id: int) -> StudyDetail:
        """Cancels a study."""
        return cancel_study(self.storage, study_id)


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

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the API at {self.base_url}: {exc}") from None
        if response.is_success:
            return response.json()
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
