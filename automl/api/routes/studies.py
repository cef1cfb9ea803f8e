"""Studies: submit, list, inspect, cancel, extend, resume, delete; trials, best, weights."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from optuna.trial import TrialState
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from automl.api.auth import PrincipalDep
from automl.api.body import decode_text, json_body, json_request_body, read_body
from automl.api.deps import SettingsDep, StoreDep
from automl.api.errors import error_responses
from automl.api.params import MAX_ID, StudyId, TrialNumber
from automl.config import Limits
from automl.registry import ExactModel
from automl.spec import (
    MAX_ENQUEUE,
    FieldError,
    SpecError,
    StudySpec,
    spec_from_text,
)
from automl.store import (
    BestTrials,
    Page,
    RefitState,
    RefitView,
    StudyDetail,
    StudyStatus,
    StudySummary,
    TrialDetail,
    TrialSummary,
    artifact_size,
    best_trials,
    cancel_study,
    check_weights,
    delete_study,
    enqueue_trials,
    extend_study,
    get_frozen_trial,
    get_study,
    get_trial,
    list_studies,
    list_trials,
    open_weights,
    queue_refit,
    rerun_failed,
    resume_study,
    submit_or_replay,
    weights_format,
)
from automl.store.artifacts import CHUNK_BYTES
from automl.store.views import REPLAYED_HEADER

router = APIRouter(prefix="/studies", tags=["studies"])

SPEC_SCHEMA_REF = {"$ref": "#/components/schemas/StudySpec"}
# FastAPI's own 422 body, which spec errors share (``loc`` from ``body``, plus ``path``).
VALIDATION_ERROR_REF = {"$ref": "#/components/schemas/HTTPValidationError"}
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

NOT_FOUND = error_responses(404)
STATE_ERRORS = error_responses(404, 409)
BODY_ERRORS = error_responses(413)


def _study_link(method: str, path: str) -> dict[str, Any]:
    """An OpenAPI link from a created study to the operation at ``/studies{path}``."""
    pointer = f"#/paths/{f'/studies{path}'.replace('/', '~1')}/{method}"
    return {"operationRef": pointer, "parameters": {"study_id": "$response.body#/id"}}


# What a client (and schemathesis' state machine) can do next with the study it created.
CREATED_LINKS = {
    "ReadStudy": _study_link("get", "/{study_id}"),
    "CancelStudy": _study_link("post", "/{study_id}/cancel"),
    "ExtendStudy": _study_link("post", "/{study_id}/extend"),
    "ResumeStudy": _study_link("post", "/{study_id}/resume"),
    "EnqueueTrials": _study_link("post", "/{study_id}/trials"),
    "ReadTrials": _study_link("get", "/{study_id}/trials"),
    "ReadBest": _study_link("get", "/{study_id}/best"),
    "DeleteStudy": _study_link("delete", "/{study_id}"),
}

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="Items to skip.")]


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
        201: {
            "links": CREATED_LINKS,
            "headers": {
                "Location": {
                    "description": "The study's path: /studies/{id}",
                    "schema": {"type": "string"},
                },
                REPLAYED_HEADER: {
                    "description": "true when the answer is a repeat's: an earlier "
                    "submission with the same Idempotency-Key made the study",
                    "schema": {"type": "string", "enum": ["true"]},
                },
            },
        },
        **error_responses(
            409,
            413,
            415,
            descriptions={
                409: "The Idempotency-Key was used for a different spec",
                415: "A compressed body, or a Content-Type that is neither JSON nor YAML",
            },
        ),
        422: {
            "description": "Invalid spec; each error names its field path",
            "content": {"application/json": {"schema": VALIDATION_ERROR_REF}},
        },
    },
)
async def create_study(
    request: Request,
    response: Response,
    store: StoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=256,
            description="Repeat a submission safely: the same key returns the project's "
            "first study with it (each project has its own keys).",
        ),
    ] = None,
) -> StudyDetail:
    """Submits a study in the key's project: validates the spec and creates it, all or
    nothing. A project at ``AUTOML_LIMIT_MAX_STUDIES_PER_PROJECT`` studies, or at
    ``AUTOML_LIMIT_MAX_ACTIVE_STUDIES_PER_PROJECT`` queued or running ones, is refused
    (422) before anything is written."""
    spec = await _read_spec(request, settings.max_body_bytes)
    study, replayed = await run_in_threadpool(
        functools.partial(submit_or_replay, project=principal.project, limits=Limits()),
        store,
        spec,
        idempotency_key,
    )
    response.headers["Location"] = f"/studies/{study.id}"
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return study


# ``application/x-www-form-urlencoded`` is read as a spec: curl's -d and --data-binary
# send it by default, with the spec itself as the body.
FORM_ENCODED = "application/x-www-form-urlencoded"
CURL_D_HINT = " (the body is one line: curl -d drops a file's newlines; send it with --data-binary)"
FORM_REFUSAL = (
    "a form upload is not a study spec: send the spec itself as the request body, with "
    "Content-Type application/yaml or application/json (curl --data-binary @spec.yaml "
    "-H 'Content-Type: application/yaml')"
)


JSON_TYPES = frozenset({"application/json", "text/json", "application/x-json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
# Read as YAML (which JSON is too): no type, and what curl and scripts send by default.
LENIENT_TYPES = frozenset({"", "text/plain", "application/octet-stream", FORM_ENCODED})


def _spec_is_json(request: Request) -> bool:
    """Whether the request's spec is JSON (else YAML), from its headers.

    Raises:
        HTTPException: 415 for a compressed body or a type that is no spec's (XML, HTML,
            an image): parsed as YAML, it failed with "a spec must be a mapping of fields".
    """
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Encoding {encoding!r} is not supported: send the spec uncompressed",
        )
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in JSON_TYPES or content_type.endswith("+json"):
        return True
    if content_type in YAML_TYPES | LENIENT_TYPES or content_type.endswith("+yaml"):
        return False
    if content_type == "multipart/form-data":  # its parts read as YAML: a baffling error
        raise SpecError([FieldError((), FORM_REFUSAL)])
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type {content_type!r} is not a study spec's: send the spec as "
        "application/json or application/yaml",
    )


async def _read_spec(request: Request, max_bytes: int) -> StudySpec:
    is_json = _spec_is_json(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, max_bytes)
    if not body.strip():
        raise SpecError([FieldError((), "request body is empty; send a study spec")])
    text = decode_text(body)
    # Parsing a large document and checking its dataset paths take a while: in the thread
    # pool, not on the event loop that every other request waits on.
    try:
        return await run_in_threadpool(functools.partial(spec_from_text, text, is_json=is_json))
    except SpecError as exc:
        if content_type != FORM_ENCODED or "\n" in text.strip():
            raise
        # curl -d @spec.yaml sends the file without its newlines: a YAML document of one
        # line rarely parses, and its error alone does not say why.
        first, *rest = exc.errors
        raise SpecError([FieldError(first.loc, f"{first.msg}{CURL_D_HINT}"), *rest]) from None


# The most frequent reads are ``async``: their queries run in the thread pool, and FastAPI
# then checks and serializes the returned model on the event loop (a plain function would
# cost a second trip through the pool for that).


@router.get("", response_model=Page[StudySummary])
async def read_studies(
    store: StoreDep,
    principal: PrincipalDep,
    status: Annotated[StudyStatus | None, Query(description="Only this status.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[StudySummary]:
    """Lists the key's project's studies (an admin key's: every project's), newest first."""
    project = None if principal.admin else principal.project
    return await run_in_threadpool(
        list_studies, store, status=status, project=project, limit=limit, offset=offset
    )


@router.get("/{study_id}", response_model=StudyDetail, responses=NOT_FOUND)
async def read_study(study_id: StudyId, store: StoreDep) -> StudyDetail:
    """A study's status, trial counts per state, best value and spec."""
    return await run_in_threadpool(get_study, store, study_id)


@router.post(
    "/{study_id}/cancel", name="cancel_study", response_model=StudyDetail, responses=STATE_ERRORS
)
def cancel(study_id: StudyId, store: StoreDep) -> StudyDetail:
    """Cancels a queued or running study: nothing new starts, queued trials are dropped,
    trials in flight stop within an epoch (resume runs them again)."""
    return cancel_study(store, study_id)


class AddTrials(ExactModel):
    """More budget for a study."""

    model_config = ConfigDict(extra="forbid")

    add_trials: int = Field(ge=1, le=MAX_ID, description="Trials to add to the budget.")


class Resume(ExactModel):
    """How to resume an ended study."""

    model_config = ConfigDict(extra="forbid")

    add_trials: int = Field(0, ge=0, le=MAX_ID, description="Trials to add to the budget.")


class Enqueue(ExactModel):
    """Configurations to try next."""

    model_config = ConfigDict(extra="forbid")

    configs: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_ENQUEUE,
        description="Each maps searched params to values; the sampler fills in the rest.",
    )


@router.post(
    "/{study_id}/extend",
    name="extend_study",
    response_model=StudyDetail,
    responses={**STATE_ERRORS, **BODY_ERRORS},
    openapi_extra=json_request_body(AddTrials),
)
def extend(
    study_id: StudyId, body: Annotated[AddTrials, Depends(json_body(AddTrials))], store: StoreDep
) -> StudyDetail:
    """Adds trials to a queued or running study's budget."""
    return extend_study(store, study_id, body.add_trials)


@router.post(
    "/{study_id}/resume",
    name="resume_study",
    response_model=StudyDetail,
    responses={**STATE_ERRORS, **BODY_ERRORS},
    openapi_extra=json_request_body(Resume, required=False),
)
def resume(
    study_id: StudyId,
    store: StoreDep,
    body: Annotated[Resume | None, Depends(json_body(Resume, required=False))],
) -> StudyDetail:
    """Reopens a cancelled, failed or completed study: its cancelled trials run again
    (interrupted ones from their checkpoint), plus ``add_trials`` new ones."""
    return resume_study(store, study_id, (body or Resume()).add_trials, limits=Limits())


@router.post(
    "/{study_id}/rerun-failed",
    name="rerun_failed",
    response_model=StudyDetail,
    responses=STATE_ERRORS,
)
def rerun(study_id: StudyId, store: StoreDep) -> StudyDetail:
    """Queues the study's failed trials again with their params (reopens it if ended); a
    completed study's failed test evaluation is made due again."""
    return rerun_failed(store, study_id, limits=Limits())


@router.post(
    "/{study_id}/refit",
    name="refit_study",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RefitView,
    responses={
        200: {"model": RefitView, "description": "The study is already refit (state done)"},
        **error_responses(
            404,
            409,
            descriptions={
                409: "The study is still active, has several objectives (no single best "
                "trial) or no completed trial"
            },
        ),
    },
)
def refit(study_id: StudyId, store: StoreDep, response: Response) -> RefitView:
    """Queues the refit of an ended study's best trial: its configuration retrained on the
    training plus validation split up to the epoch whose weights it kept, then scored on the
    test split (a worker runs it; ``GET /studies/{id}/best`` shows it under ``refit``). Once
    done, the bundle and predict serve the refit model. Idempotent: a refit already queued
    or running answers 202, one that is done 200, with its state; a failed one is queued
    again."""
    view = queue_refit(store, study_id)
    if view.state == RefitState.DONE:
        response.status_code = status.HTTP_200_OK
    return view


@router.post(
    "/{study_id}/trials",
    name="enqueue_trials",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyDetail,
    responses={**STATE_ERRORS, **BODY_ERRORS},
    openapi_extra=json_request_body(Enqueue),
)
def enqueue(
    study_id: StudyId, body: Annotated[Enqueue, Depends(json_body(Enqueue))], store: StoreDep
) -> StudyDetail:
    """Queues configurations to run before the sampler's proposals (from the budget)."""
    return enqueue_trials(store, study_id, body.configs)


@router.delete(
    "/{study_id}",
    name="delete_study",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=STATE_ERRORS,
)
def delete(study_id: StudyId, store: StoreDep) -> Response:
    """Deletes an ended study with its trials, weights and checkpoints."""
    delete_study(store, study_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{study_id}/trials", response_model=Page[TrialSummary], responses=NOT_FOUND)
async def read_trials(
    study_id: StudyId,
    store: StoreDep,
    state: Annotated[TrialStateName | None, Query(description="Only this state.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    intermediate_values: Annotated[
        bool,
        Query(
            description="With each trial's per-epoch values (false: null, a much smaller "
            "page for trials of many epochs)."
        ),
    ] = True,
) -> Page[TrialSummary]:
    """A study's trials in number order, with params, values and per-epoch values."""
    trial_state = None if state is None else TrialState[state.value.upper()]
    return await run_in_threadpool(
        list_trials,
        store,
        study_id,
        state=trial_state,
        limit=limit,
        offset=offset,
        intermediate_values=intermediate_values,
    )


@router.get("/{study_id}/trials/{number}", response_model=TrialDetail, responses=NOT_FOUND)
def read_trial(study_id: StudyId, number: TrialNumber, store: StoreDep) -> TrialDetail:
    """One trial with its full configuration, history and per-class report."""
    return get_trial(store, study_id, number)


@router.get(
    "/{study_id}/trials/{number}/weights",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "The weights file",
            "headers": {
                "Content-Disposition": {
                    "description": "attachment; filename=study<id>-trial<n>.safetensors",
                    "schema": {"type": "string"},
                },
                "Content-Length": {
                    "description": "The file's size in bytes (left out only where the "
                    "artifact store cannot tell it before reading)",
                    "schema": {"type": "integer"},
                },
            },
        },
        **STATE_ERRORS,
    },
)
def download_weights(study_id: StudyId, number: TrialNumber, store: StoreDep) -> StreamingResponse:
    """The trial's weights: a safetensors file (``safetensors.torch.load_file(path)``)
    named ``study<id>-trial<n>.safetensors``; weights stored before that format are a
    ``torch.save`` file (``torch.load(path, weights_only=True)``) named ``... .pt``. The
    model card and exports of the best model: ``GET /studies/{id}/best/model``. A trial
    that did not complete (running, pruned, failed) has none (409, as for its model);
    completed trials outside the study's ``keep_weights`` best have none either (404,
    saying why)."""
    trial = get_frozen_trial(store, study_id, number)
    if trial.state != TrialState.COMPLETE:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"trial {number} of study {study_id} did not complete "
            f"({trial.state.name.lower()}): only a completed trial has weights",
        )
    check_weights(trial, store.artifacts)  # a damaged file: 503 before any byte is sent
    reader = open_weights(trial, store.artifacts)
    size = artifact_size(reader)
    head = reader.read(16)
    suffix = "safetensors" if weights_format(head) == "safetensors" else "pt"
    filename = f"study{study_id}-trial{number}.{suffix}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if size is not None:  # a client can tell a cut-off download (and show progress)
        headers["Content-Length"] = str(size)

    def chunks() -> Iterator[bytes]:
        with reader:
            yield head
            while chunk := reader.read(CHUNK_BYTES):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers=headers,
    )


@router.get("/{study_id}/best", response_model=BestTrials, responses=NOT_FOUND)
def read_best(
    study_id: StudyId, store: StoreDep, limit: Limit = 100, offset: Offset = 0
) -> BestTrials:
    """The best trial (or Pareto front): params, configuration and validation metrics;
    once the study completed, their metrics on the test split (``test_metrics``,
    ``test_per_class``, ``test_confusion`` (up to 50 classes), ``test_most_confused``; null
    without a test split) and the state of
    that one evaluation (``test_evaluation``); the refit and its test metrics (``refit``)
    when one was asked for. A Pareto front comes a page at a time (``count``: its
    size)."""
    return best_trials(store, study_id, limit=limit, offset=offset)
