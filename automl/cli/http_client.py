"""The CLI's client of a running ``automl serve``: a thin client over HTTP.

Importing it imports neither torch nor optuna nor SQLAlchemy (only httpx, pydantic and the
light view models), so commands against the API start fast.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from automl.config import Settings
from automl.delivery.schemas import AnnotateRequest, Annotations, Predictions
from automl.store.views import (
    REPLAYED_HEADER,
    BestTrials,
    Page,
    StudyDetail,
    StudySummary,
    TrialDetail,
    TrialSummary,
)
from automl.url_secrets import without_password

NO_COMPLETED_TRIAL = "completed trial"
"""What the API's answer says of a study without a result (``NoBestTrialError``: it "has no
completed trial yet", or "ended ... without a completed trial")."""

Answer = TypeVar("Answer", bound=BaseModel)
Item = TypeVar("Item", bound=BaseModel)

HTTP_TIMEOUT_S = 90.0
"""Longer than the store's waits for a lock (60 s on SQLite and PostgreSQL), so that a
request held up by one gets the API's answer (503, storage unavailable), not a timeout."""
REPORT_TIMEOUT_S = 900.0
"""A report of a large study takes the API a minute or more to draw, and waits behind the
other reports being drawn."""
API_PAGE = 1000
"""Items per request when paging ``GET /studies`` and ``GET /studies/{id}/trials`` (the
API's largest page)."""
BEST_PAGE = 100
"""Best trials a request past the first page (the API's default page: 100 too): a Pareto
front's trials come with their histories and reports."""


class ClientError(RuntimeError):
    """A request failed; ``bad_input`` tells whether the caller's input was at fault.

    Attributes:
        bad_input: The caller's input (a study id, a spec, the URL) was at fault.
        status: The HTTP status of the answer (None: there was none).
        may_have_arrived: The request may have reached the API and taken effect (the
            connection failed after it was sent, or a server error answered).
    """

    def __init__(
        self,
        message: str,
        bad_input: bool = False,
        status: int | None = None,
        *,
        may_have_arrived: bool = False,
    ) -> None:
        super().__init__(message)
        self.bad_input = bad_input
        self.status = status
        self.may_have_arrived = may_have_arrived or (status is not None and status >= 500)


class HttpClient:
    """Talks to a running ``automl serve`` over HTTP.

    Every request carries ``api_key`` (default: ``AUTOML_API_KEY``) as
    ``Authorization: Bearer``, when there is one.
    """

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = _checked_url(base_url).rstrip("/")
        self.shown_url = without_password(self.base_url)
        key = api_key if api_key is not None else Settings().api_key
        # A key read from a file (a secret mount, $(cat key)) may end in a newline.
        self.api_key = key.strip() if key else key
        if self.api_key and not _KEY_TEXT.fullmatch(self.api_key):
            message = "the API key (AUTOML_API_KEY) holds characters no key has"
            raise ClientError(f"{message}: use the key `automl keys create` printed", True)
        self._http = httpx.Client(
            base_url=self.base_url, timeout=HTTP_TIMEOUT_S, headers=self._headers()
        )

    def _headers(self) -> dict[str, str]:
        """The headers every request carries."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def submit(
        self, text: str, is_json: bool, idempotency_key: str | None = None
    ) -> tuple[StudyDetail, bool]:
        """Sends a spec's text (validated by the server); a repeat with the same
        ``idempotency_key`` answers with the study the first one made. The study, and
        whether the answer is a repeat's."""
        content_type = "application/json" if is_json else "application/yaml"
        headers = {"content-type": content_type}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        response = self._send("POST", "/studies", content=text, headers=headers)
        study = self._read(StudyDetail, "POST", "/studies", response)
        return study, response.headers.get(REPLAYED_HEADER) == "true"

    def studies(self, limit: int) -> Page[StudySummary]:
        """The newest ``limit`` studies, newest first, fetched a page at a time."""
        return self._pages(StudySummary, "/studies", {}, limit)

    def study(self, study_id: int) -> StudyDetail:
        """One study."""
        return self._answer(StudyDetail, "GET", f"/studies/{study_id}")

    def best(self, study_id: int) -> BestTrials:
        """The best trial(s).

        Raises:
            ClientError: ``bad_input`` if the study is unknown; not if it merely has no
                completed trial (both are a 404, told apart by asking for the study).
        """
        path = f"/studies/{study_id}/best"
        with self._no_result_yet(study_id, 404):
            # No paging parameters at first: an older server refuses them, and sends the
            # whole front without a count; a newer one its first page, with the count.
            best = self._answer(BestTrials, "GET", path)
        numbers = {trial.number for trial in best.trials}
        while best.count is not None and best.trials and len(best.trials) < best.count:
            query = {"limit": BEST_PAGE, "offset": len(best.trials)}
            page = self._answer(BestTrials, "GET", path, params=query)
            fresh = [trial for trial in page.trials if trial.number not in numbers]
            if not fresh:  # the end, or a front that changed between pages
                break
            numbers.update(trial.number for trial in fresh)
            best.trials += fresh
        return best

    @contextmanager
    def _no_result_yet(self, study_id: int, status: int, said: str = "") -> Iterator[None]:
        """Makes an answer ``status`` about ``study_id``'s result no bad input (exit 1, as
        locally) where the study is there and the answer says ``said``: it has no
        completed trial yet (a trial without weights stays a bad input, as locally)."""
        try:
            yield
        except ClientError as exc:
            if exc.status != status or said not in str(exc) or not self._has_study(study_id):
                raise
            raise ClientError(str(exc), bad_input=False, status=exc.status) from None

    def _has_study(self, study_id: int) -> bool:
        """Whether ``GET /studies/{id}`` finds the study."""
        try:
            self.study(study_id)
        except ClientError:
            return False
        return True

    def trials(
        self,
        study_id: int,
        state: str | None = None,
        limit: int | None = None,
        *,
        intermediate_values: bool = False,
    ) -> Page[TrialSummary]:
        """A study's trials in number order (the first ``limit``; all without it),
        fetched a page at a time, with their per-epoch values only if asked (a table
        shows none; JSON and exports do)."""
        params: dict[str, Any] = {} if state is None else {"state": state}
        path = f"/studies/{study_id}/trials"
        if intermediate_values:
            return self._pages(TrialSummary, path, params, limit)
        lean = {**params, "intermediate_values": "false"}
        try:
            return self._pages(TrialSummary, path, lean, limit)
        except ClientError as exc:
            if exc.status != 422 or "unknown query parameter 'intermediate_values'" not in str(exc):
                raise
            return self._pages(TrialSummary, path, params, limit)  # an older server

    def _pages(
        self, item: type[Item], path: str, params: dict[str, Any], limit: int | None
    ) -> Page[Item]:
        """The first ``limit`` items of a listing (all without it), ``API_PAGE`` a request."""
        data: list[Item] = []
        count = 0
        while limit is None or len(data) < limit:
            size = API_PAGE if limit is None else min(API_PAGE, limit - len(data))
            query = {**params, "limit": size, "offset": len(data)}
            page = self._answer(Page[item], "GET", path, params=query)  # type: ignore[valid-type]
            data += page.data
            count = page.count
            if len(page.data) < size or len(data) >= count:
                break
        return Page[item](data=data, count=count)  # type: ignore[valid-type]

    def trial(self, study_id: int, number: int) -> TrialDetail:
        """One trial in full."""
        return self._answer(TrialDetail, "GET", f"/studies/{study_id}/trials/{number}")

    def cancel(self, study_id: int) -> StudyDetail:
        """Cancels a study."""
        return self._answer(StudyDetail, "POST", f"/studies/{study_id}/cancel")

    def extend(self, study_id: int, add_trials: int) -> StudyDetail:
        """Adds trials to an active study."""
        body = {"add_trials": add_trials}
        return self._answer(StudyDetail, "POST", f"/studies/{study_id}/extend", json=body)

    def resume(self, study_id: int, add_trials: int) -> StudyDetail:
        """Reopens an ended study."""
        body = {"add_trials": add_trials}
        return self._answer(StudyDetail, "POST", f"/studies/{study_id}/resume", json=body)

    def rerun_failed(self, study_id: int) -> StudyDetail:
        """Queues a study's failed trials again."""
        return self._answer(StudyDetail, "POST", f"/studies/{study_id}/rerun-failed")

    def enqueue(self, study_id: int, configs: list[dict[str, Any]]) -> StudyDetail:
        """Queues configurations to try next."""
        body = {"configs": configs}
        return self._answer(StudyDetail, "POST", f"/studies/{study_id}/trials", json=body)

    def delete(self, study_id: int) -> None:
        """Deletes an ended study."""
        self._request("DELETE", f"/studies/{study_id}")

    def predict(
        self, study_id: int, images: list[tuple[str, bytes | BinaryIO]], top: int
    ) -> Predictions:
        """Uploads images (name, content or an open file, read as it is sent) and returns
        their top classes."""
        files = [("files", (name, data, "application/octet-stream")) for name, data in images]
        path = f"/studies/{study_id}/predict"
        with self._no_result_yet(study_id, 404, NO_COMPLETED_TRIAL):
            return self._answer(Predictions, "POST", path, params={"top": top}, files=files)

    def annotate(self, study_id: int, request: AnnotateRequest) -> Annotations:
        """Suggested labels for a folder under the server's data root."""
        body = request.model_dump(exclude_defaults=True)
        with self._no_result_yet(study_id, 404, NO_COMPLETED_TRIAL):
            return self._answer(Annotations, "POST", f"/studies/{study_id}/annotate", json=body)

    def best_model(self, study_id: int) -> bytes:
        """The best model's bundle: a zip (``GET /studies/{id}/best/model``)."""
        with self._no_result_yet(study_id, 404, NO_COMPLETED_TRIAL):
            return self._send("GET", f"/studies/{study_id}/best/model").content

    def trial_model(self, study_id: int, number: int) -> bytes:
        """Trial ``number``'s bundle (``GET /studies/{id}/trials/{n}/model``)."""
        return self._send("GET", f"/studies/{study_id}/trials/{number}/model").content

    def report(self, study_id: int) -> str:
        """The study's report, an HTML page (``GET /studies/{id}/report``)."""
        with self._no_result_yet(study_id, 409):
            path = f"/studies/{study_id}/report"
            return self._send("GET", path, timeout=REPORT_TIMEOUT_S).text

    def refit(self, study_id: int) -> dict[str, Any]:
        """Queues the study's refit; its state as JSON (``POST /studies/{id}/refit``)."""
        return self._request("POST", f"/studies/{study_id}/refit")  # type: ignore[no-any-return]

    def _answer(self, model: type[Answer], method: str, path: str, **kwargs: Any) -> Answer:
        """The answer to a request, read as ``model``; an answer of another shape means the
        URL names something other than an automl API (``ClientError``)."""
        return self._read(model, method, path, self._send(method, path, **kwargs))

    def _read(
        self, model: type[Answer], method: str, path: str, response: httpx.Response
    ) -> Answer:
        try:
            return model.model_validate(self._json(method, path, response))
        except ValidationError:
            why = "an answer of another shape (another automl version?)"
            raise self._not_automl(method, path, response, why) from None

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer to a request (None for an empty one)."""
        return self._json(method, path, self._send(method, path, **kwargs))

    def _json(self, method: str, path: str, response: httpx.Response) -> Any:
        try:
            return response.json() if response.content else None
        except ValueError:
            raise self._not_automl(method, path, response, "not JSON") from None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ReadTimeout:
            waited = kwargs.get("timeout", HTTP_TIMEOUT_S)
            raise ClientError(
                f"the API at {self.shown_url} did not answer {method} {path} within {waited:g} s",
                may_have_arrived=True,
            ) from None
        except httpx.HTTPError as exc:
            # Only a failed connection is sure to have sent nothing.
            unsent = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError, httpx.PoolTimeout)
            sent = not isinstance(exc, unsent)
            raise ClientError(
                f"cannot reach the API at {self.shown_url}: {exc}", may_have_arrived=sent
            ) from None
        if response.is_success:
            return response
        message = _error_text(response)
        if message is None:
            raise self._not_automl(method, path, response)
        status = response.status_code
        raise ClientError(message, bad_input=400 <= status < 500, status=status)

    def _not_automl(
        self, method: str, path: str, response: httpx.Response, why: str = ""
    ) -> ClientError:
        """The error for an answer that no automl API gives: the URL names something else
        (another server, or a path under automl's). A bad input unless a server error
        (a gateway in front of automl answers 502 while automl is down)."""
        status = response.status_code
        answer = f"HTTP {status} {httpx.codes.get_reason_phrase(status) or response.reason_phrase}"
        message = (
            f"{self.shown_url} does not answer as an automl API ({method} {path}: "
            f"{answer.strip()}{f', {why}' if why else ''}); check --url / AUTOML_URL"
        )
        # A success in another shape (another automl version) did what it was asked.
        return ClientError(
            message, bad_input=status < 500, status=status, may_have_arrived=response.is_success
        )


_KEY_TEXT = re.compile(r"[\x21-\x7e]+")
"""What a key can hold: visible ASCII (a header value; keys are ``automl_<id>_<secret>``)."""


def _checked_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host httpx can reach, else a ``ClientError``."""
    try:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("give http://HOST:PORT or https://HOST:PORT")
        parsed.host.encode("idna")  # a label over 63 characters fails only here
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        shown = without_password(url)
        raise ClientError(f"invalid API URL {shown!r} (--url, AUTOML_URL): {exc}", True) from None
    return url


def _error_text(response: httpx.Response) -> str | None:
    """The message of an error answer in automl's shape (``automl.api.errors``): a JSON
    object whose ``detail`` is a message or a list of field errors. None for any other
    answer, and for the bare status phrase (``{"detail": "Not Found"}``) that the web
    framework gives for a path no automl route has."""
    try:
        body = response.json()
    except ValueError:
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        generic = detail == httpx.codes.get_reason_phrase(response.status_code)
        return detail if detail and not generic else None
    if isinstance(detail, list) and detail and all(isinstance(item, dict) for item in detail):
        parts = []
        for item in detail:
            loc = [str(part) for part in item.get("loc", []) if part != "body"]
            parts.append(f"{item.get('path') or '.'.join(loc) or 'body'}: {item.get('msg')}")
        return "; ".join(parts)
    return None
