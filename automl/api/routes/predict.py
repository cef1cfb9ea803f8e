"""Predictions and annotation assist from a study's best model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from automl.api.body import json_body, json_request_body
from automl.api.deps import StoreDep
from automl.api.errors import PayloadTooLargeError, error_responses
from automl.api.params import StudyId
from automl.config import Limits
from automl.delivery.annotate import annotate_folder
from automl.delivery.inference import (
    InputRejectedError,
    ModelUnavailableError,
    Upload,
    UploadTooLargeError,
    predict_uploads,
    too_many_images,
)
from automl.delivery.schemas import MAX_TOP, AnnotateRequest, Annotations, Predictions

router = APIRouter(prefix="/studies", tags=["predictions"])

T = TypeVar("T")

MAX_FORM_FIELDS = 16
"""Plain (not file) fields the multipart parser reads before it gives up (each is then
refused: a predict upload carries images only)."""

UPLOAD_FIELD = "files"
"""The multipart field that carries the images (one part per image)."""

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One or more images (png, jpeg, webp, bmp) as multipart files.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [UPLOAD_FIELD],
                    "properties": {
                        UPLOAD_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "The images; each file part is one image.",
                        }
                    },
                }
            }
        },
    }
}


# 422s keep FastAPI's own declaration (HTTPValidationError): refusals use its shape, with
# ``loc`` naming the field (``["body", "files", 2]``, ``["body", "path"]``) and ``msg`` the limit.
REFUSALS = error_responses(
    404,
    409,
    descriptions={
        404: "No such study, no completed trial, no weights",
        409: "The study's model cannot serve (a clip model)",
    },
)

Top = Annotated[int, Query(ge=1, le=MAX_TOP, description="Classes listed per image.")]


@router.post(
    "/{study_id}/predict",
    response_model=Predictions,
    openapi_extra=UPLOAD_BODY,
    responses={
        **REFUSALS,
        **error_responses(413, descriptions={413: "Upload over max_upload_bytes"}),
    },
)
async def predict(
    study_id: StudyId, request: Request, store: StoreDep, top: Top = 3
) -> Predictions:
    """Classifies uploaded images with the study's best model (loaded once, then cached):
    per image, in upload order, the ``top`` classes with their probabilities.

    With several objectives the first trial of the Pareto front serves, and ``model`` says
    so. Uploads over ``AUTOML_LIMIT_MAX_UPLOAD_BYTES`` are refused with 413 while they
    arrive; more than ``AUTOML_LIMIT_MAX_IMAGES`` images, one with more pixels than
    ``AUTOML_LIMIT_MAX_IMAGE_PIXELS`` (checked from its header: decompression bombs) or
    one that is not a png, jpeg, webp or bmp image with 422, before the model loads.
    """
    limits = Limits()
    uploads = await _read_uploads(request, limits)
    return await _on_own_thread(
        request.app.state.prediction_limiter,
        lambda: predict_uploads(store, study_id, uploads, top=top, limits=limits),
    )


@router.post(
    "/{study_id}/annotate",
    response_model=Annotations,
    responses={**REFUSALS, **error_responses(413)},
    openapi_extra=json_request_body(AnnotateRequest),
)
async def annotate(
    study_id: StudyId,
    request: Request,
    body: Annotated[AnnotateRequest, Depends(json_body(AnnotateRequest))],
    store: StoreDep,
) -> Annotations:
    """Suggests a label for every image of a folder under the data root, least confident
    first, and with ``write_csv`` writes them as a CSV that the ``image_csv`` source reads
    (``path,label,confidence``, paths relative to the CSV): correct the uncertain rows at
    the top, then train on it.

    Paths that leave the data root (``..``, absolute elsewhere, symlinks out, percent
    escapes) are refused with 422 naming the field, as are folders of more than
    ``AUTOML_LIMIT_MAX_ANNOTATE_IMAGES`` images; nothing is written then.
    """
    return await _on_own_thread(
        request.app.state.annotation_limiter, lambda: annotate_folder(store, study_id, body)
    )


async def _on_own_thread(limiter: anyio.CapacityLimiter, call: Callable[[], T]) -> T:
    """Runs ``call`` on a thread of ``limiter``'s (waiting its turn here, not on one of the
    API's threads), answering what delivery refuses with 413, 422 or 409."""

    def refusing() -> T:
        with _as_http_errors():
            return call()

    return await anyio.to_thread.run_sync(refusing, limiter=limiter)


@contextmanager
def _as_http_errors() -> Iterator[None]:
    try:
        yield
    except UploadTooLargeError as exc:
        raise PayloadTooLargeError(str(exc)) from None
    except InputRejectedError as exc:
        raise _invalid(("body", *exc.field), str(exc)) from None
    except ModelUnavailableError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


def _invalid(loc: tuple[str | int, ...], message: str) -> RequestValidationError:
    """A 422 in FastAPI's own validation-error shape."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message}])


async def _read_uploads(request: Request, limits: Limits) -> list[Upload]:
    """Reads the multipart images, refusing (413) as soon as the body passes the limit."""
    max_bytes = limits.max_upload_bytes
    too_large = f"upload exceeds max_upload_bytes: {max_bytes} (AUTOML_LIMIT_MAX_UPLOAD_BYTES)"
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise _invalid(
            ("body",), f"send the images as multipart/form-data files (field {UPLOAD_FIELD!r})"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(too_large)

    async def capped() -> AsyncIterator[bytes]:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLargeError(too_large)
            yield chunk

    # Parsing stops at the first image past the limit: a 20 MB body of 300,000 empty
    # parts took 10 s and 400 MB on the event loop.
    parser = MultiPartParser(
        request.headers, capped(), max_files=limits.max_images, max_fields=MAX_FORM_FIELDS
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise _invalid(("body", UPLOAD_FIELD), too_many_images(limits)) from None
        raise _invalid(("body",), f"invalid multipart body: {exc.message}") from None
    try:
        uploads = []
        for field, value in form.multi_items():
            if field != UPLOAD_FIELD or not isinstance(value, UploadFile):
                what = "field" if isinstance(value, UploadFile) else "form field"
                raise _invalid(
                    ("body", field),
                    f"unexpected {what} {field!r}: send the images as files in field "
                    f"{UPLOAD_FIELD!r} (curl -F {UPLOAD_FIELD}=@a.png)",
                )
            name = value.filename or f"file{len(uploads) + 1}"
            uploads.append(Upload(name, await value.read()))
        return uploads
    finally:
        await form.close()
