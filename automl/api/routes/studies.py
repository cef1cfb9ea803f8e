"""Studies: submit, list, inspect, cancel, extend, resume, delete; trials, best, weights."""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from optuna.trial import TrialState
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from automl.api.deps import SettingsDep, StoreDep
from automl.api.errors import PayloadTooLargeError
from automl.spec import FieldError, SpecError, StudySpec, parse_text, validate_spec
from automl.store import (
    BestTrials,
    Page,
    StudyDetail,
    StudyStatus,
    StudySummary,
    TrialDetail,
    TrialSummary,
    best_trials,
    cancel_study,
    delete_study,
    enqueue_trials,
    extend_study,
    get_frozen_trial,
    get_study,
    get_trial,
    list_studies,
    list_trials,
    open_weights,
    rerun_failed,
    resume_study,
    submit_study,
    weights_format,
)
from automl.store.artifacts import CHUNK_BYTES
from automl.store.studies import MAX_ENQUEUE

router = APIRouter(prefix="/studies", tags=["studies"])

SPEC_SCHEMA_REF = {"$ref": "#/components/schemas/StudySpec"}
SPEC_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A study spec as JSON or YAML.",
        "content": {
            "application/json": {"schema": SPEC_SCHEMA_REF},
            "application/yaml": {"schema": SPEC_SCHEMA_REF},
        },
    }
}

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Offset = Annotated[int, Query(ge=0, description="Items to skip.")]


class TrialStateName(StrEnum):
    """Trial states, as query values (a trial exists once a worker started it)."""

    running = "running"
    complete = "complete"
    pruned = "pruned"
    fail = "fail"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyDetail,
    openapi_extra=SPEC_REQUEST_BODY,
    responses={
        413: {"description": "Body too large"},
        422: {"description": "Invalid spec; each error names its field path"},
    },
)
async def create_study(
    request: Request,
    response: Response,
    store: StoreDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=256,
            description="Repeat a submission safely: the same key returns the first study.",
        ),
    ] = None,
) -> StudyDetail:
    """Submits a study: validates the spec and creates it, all or nothing."""
    spec = await _read_spec(request, settings.max_body_bytes)
    study = await run_in_threadpool(submit_study, store, spec, idempotency_key)
    response.headers["Location"] = f"/studies/{study.id}"
    return study


async def _read_spec(request: Request, max_bytes: int) -> StudySpec:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"body exceeds {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLargeError(f"body exceeds {max_bytes} bytes")
    if not body.strip():
        raise SpecError([FieldError((), "request body is empty; send a study spec")])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError([FieldError((), "request body is not UTF-8 text")]) from None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            raise SpecError([FieldError((), message)]) from None
    else:
        data = parse_text(text)
    return validate_spec(data)


# The most frequent reads are ``async``: their queries run in the thread pool, and FastAPI
# then checks and serializes the returned model on the event loop (a plain function would
# cost a second trip through the pool for that).


@router.get("", response_model=Page[StudySummary])
async def read_studies(
    store: StoreDep,
    status: Annotated[StudyStatus | None, Query(description="Only this status.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[StudySummary]:
    """Lists studies, newest first."""
    return await run_in_threadpool(list_studies, store, status=status, limit=limit, offset=offset)


@router.get("/{study_id}", response_model=StudyDetail, responses={404: {}})
async def read_study(study_id: int, store: StoreDep) -> StudyDetail:
    """A study's status, trial counts per state, best value and spec."""
    return await run_in_threadpool(get_study, store, study_id)


@router.post("/{study_id}/cancel", response_model=StudyDetail, responses={404: {}, 409: {}})
def cancel(study_id: int, store: StoreDep) -> StudyDetail:
    """Cancels a queued or running study: nothing new starts, queued trials are dropped,
    trials in flight stop within an epoch (resume runs them again)."""
    return cancel_study(store, study_id)


class AddTrials(BaseModel):
    """More budget for a study."""

    model_config = ConfigDict(extra="forbid")

    add_trials: int = Field(ge=1, description="Trials to add to the budget.")


class Resume(BaseModel):
    """How to resume an ended study."""

    model_config = ConfigDict(extra="forbid")

    add_trials: int = Field(0, ge=0, description="Trials to add to the budget.")


class Enqueue(BaseModel):
    """Configurations to try next."""

    model_config = ConfigDict(extra="forbid")

    configs: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_ENQUEUE,
        description="Each maps searched params to values; the sampler fills in the rest.",
    )


@router.post("/{study_id}/extend", response_model=StudyDetail, responses={404: {}, 409: {}})
def extend(study_id: int, body: AddTrials, store: StoreDep) -> StudyDetail:
    """Adds trials to a queued or running study's budget."""
    return extend_study(store, study_id, body.add_trials)


@router.post("/{study_id}/resume", response_model=StudyDetail, responses={404: {}, 409: {}})
def resume(study_id: int, store: StoreDep, body: Resume | None = None) -> StudyDetail:
    """Reopens a cancelled, failed or completed study: its cancelled trials run again
    (interrupted ones from their checkpoint), plus ``add_trials`` new ones."""
    return resume_study(store, study_id, (body or Resume()).add_trials)


@router.post("/{study_id}/rerun-failed", response_model=StudyDetail, responses={404: {}, 409: {}})
def rerun(study_id: int, store: StoreDep) -> StudyDetail:
    """Queues the study's failed trials again with their params (reopens it if ended)."""
    return rerun_failed(store, study_id)


@router.post(
    "/{study_id}/trials",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyDetail,
    responses={404: {}, 409: {}, 422: {}},
)
def enqueue(study_id: int, body: Enqueue, store: StoreDep) -> StudyDetail:
    """Queues configurations to run before the sampler's proposals (from the budget)."""
    return enqueue_trials(store, study_id, body.configs)


@router.delete("/{study_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {}, 409: {}})
def delete(study_id: int, store: StoreDep) -> Response:
    """Deletes an ended study with its trials, weights and checkpoints."""
    delete_study(store, study_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{study_id}/trials", response_model=Page[TrialSummary], responses={404: {}})
async def read_trials(
    study_id: int,
    store: StoreDep,
    state: Annotated[TrialStateName | None, Query(description="Only this state.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[TrialSummary]:
    """A study's trials in number order, with params, values and per-epoch values."""
    trial_state = None if state is None else TrialState[state.value.upper()]
    return await run_in_threadpool(
        list_trials, store, study_id, state=trial_state, limit=limit, offset=offset
    )


@router.get("/{study_id}/trials/{number}", response_model=TrialDetail, responses={404: {}})
def read_trial(study_id: int, number: int, store: StoreDep) -> TrialDetail:
    """One trial with its full configuration, history and per-class report."""
    return get_trial(store, study_id, number)


@router.get(
    "/{study_id}/trials/{number}/weights",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, 404: {}},
)
def download_weights(study_id: int, number: int, store: StoreDep) -> StreamingResponse:
    """The trial's weights: a safetensors file (``safetensors.torch.load_file(path)``)
    named ``study<id>-trial<n>.safetensors``; weights stored before that format are a
    ``torch.save`` file (``torch.load(path, weights_only=True)``) named ``... .pt``. The
    model card and exports of the best model: ``GET /studies/{id}/best/model``. Trials
    outside the study's ``keep_weights`` best have none (404, saying why)."""
    reader = open_weights(get_frozen_trial(store, study_id, number), store.artifacts)
    head = reader.read(16)
    suffix = "safetensors" if weights_format(head) == "safetensors" else "pt"
    filename = f"study{study_id}-trial{number}.{suffix}"

    def chunks() -> Iterator[bytes]:
        with reader:
            yield head
            while chunk := reader.read(CHUNK_BYTES):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/{study_id}/best", response_model=BestTrials, responses={404: {}})
def read_best(study_id: int, store: StoreDep) -> BestTrials:
    """The best trial (or Pareto front): params, configuration and validation metrics;
    once the study completed, their metrics on the test split (``test_metrics``,
    ``test_per_class``, ``test_confusion``; null without a test split) and the state of
    that one evaluation (``test_evaluation``)."""
    return best_trials(store, study_id)
