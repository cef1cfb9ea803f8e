"""Studies: submit, list, inspect, cancel; trials, best models and weights."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from optuna.trial import TrialState
from starlette.concurrency import run_in_threadpool

from automl.api.deps import SettingsDep, StorageDep
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
    get_frozen_trial,
    get_study,
    get_trial,
    list_studies,
    list_trials,
    open_weights,
    submit_study,
)

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
    """Trial states, as query values."""

    waiting = "waiting"
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
    request: Request, response: Response, storage: StorageDep, settings: SettingsDep
) -> StudyDetail:
    """Submits a study: validates the spec, creates the Optuna study, queues its trials."""
    spec = await _read_spec(request, settings.max_body_bytes)
    study = await run_in_threadpool(submit_study, storage, spec)
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


@router.get("", response_model=Page[StudySummary])
def read_studies(
    storage: StorageDep,
    status: Annotated[StudyStatus | None, Query(description="Only this status.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[StudySummary]:
    """Lists studies, newest first."""
    return list_studies(storage, status=status, limit=limit, offset=offset)


@router.get("/{study_id}", response_model=StudyDetail, responses={404: {}})
def read_study(study_id: int, storage: StorageDep) -> StudyDetail:
    """A study's status, trial counts per state, best value and spec."""
    return get_study(storage, study_id)


@router.post("/{study_id}/cancel", response_model=StudyDetail, responses={404: {}, 409: {}})
def cancel(study_id: int, storage: StorageDep) -> StudyDetail:
    """Cancels a queued or running study; trials in flight stop at their next epoch."""
    return cancel_study(storage, study_id)


@router.get("/{study_id}/trials", response_model=Page[TrialSummary], responses={404: {}})
def read_trials(
    study_id: int,
    storage: StorageDep,
    state: Annotated[TrialStateName | None, Query(description="Only this state.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[TrialSummary]:
    """A study's trials in number order, with params, values and per-epoch values."""
    trial_state = None if state is None else TrialState[state.value.upper()]
    return list_trials(storage, study_id, state=trial_state, limit=limit, offset=offset)


@router.get("/{study_id}/trials/{number}", response_model=TrialDetail, responses={404: {}})
def read_trial(study_id: int, number: int, storage: StorageDep) -> TrialDetail:
    """One trial with its full configuration, history and per-class report."""
    return get_trial(storage, study_id, number)


@router.get(
    "/{study_id}/trials/{number}/weights",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, 404: {}},
)
def download_weights(
    study_id: int, number: int, storage: StorageDep, settings: SettingsDep
) -> StreamingResponse:
    """The trial's weights: a state dict for ``torch.load(path, weights_only=True)``."""
    reader = open_weights(get_frozen_trial(storage, study_id, number), settings.artifacts_dir)
    filename = f"study{study_id}-trial{number}.pt"
    return StreamingResponse(
        reader,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/{study_id}/best", response_model=BestTrials, responses={404: {}})
def read_best(study_id: int, storage: StorageDep) -> BestTrials:
    """The best trial (or Pareto front): params, configuration and metrics."""
    return best_trials(storage, study_id)
