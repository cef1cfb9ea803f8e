"""JSON request bodies: read after the key is checked, bounded, parsed and validated strictly.

A route that declares a pydantic body makes FastAPI read and parse it before any
dependency runs, the key check included, and with no size limit. Routes take their body
through ``json_body`` instead: a dependency that runs after the router's (the key is
checked first), stops reading at ``AUTOML_MAX_BODY_BYTES`` (413), parses with the spec's
JSON parser (nesting, repeated keys, string lengths, lone surrogates), and validates
exactly (``"3"`` and ``true`` are no trial counts, ``3.0`` is). Refusals are 422s in FastAPI's shape
with the field path, and never repeat the input (which may be huge, or not JSON at all).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from automl.api.deps import SettingsDep
from automl.api.errors import PayloadTooLargeError
from automl.api.params import StudyId
from automl.registry import strict_input
from automl.spec import FieldError, SpecError, errors_from_pydantic, parse_json

M = TypeVar("M", bound=BaseModel)

_INLINE_PARSE_BYTES = 64 * 1024
"""Bodies up to this size parse on the event loop; larger ones in the thread pool."""


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused (413) as soon as it passes ``max_bytes``.

    Raises:
        PayloadTooLargeError: If the declared or the received size is over the limit.
    """
    refusal = f"body exceeds {max_bytes} bytes (AUTOML_MAX_BODY_BYTES)"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(refusal)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLargeError(refusal)
    return bytes(body)


def decode_text(body: bytes) -> str:
    """The body as UTF-8 text.

    Raises:
        SpecError: If it is not UTF-8.
    """
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError([FieldError((), "request body is not UTF-8 text")]) from None


def json_body(model: type[M], *, required: bool = True) -> Callable[..., Awaitable[M | None]]:
    """A dependency giving the request's JSON body as a ``model``, for the routes under
    ``/studies/{study_id}``.

    It declares the study id too: FastAPI checks a dependency's own parameters before
    calling it, so a bad id is a 422 naming ``path.study_id`` and the body is not read.

    Args:
        model: The body's pydantic model, validated in strict mode.
        required: Whether an empty body is refused (422); if not, it gives None.
    """

    async def body(request: Request, settings: SettingsDep, study_id: StudyId) -> M | None:
        raw = await read_body(request, settings.max_body_bytes)
        if not raw.strip() or (not required and raw.strip() == b"null"):
            if required:
                raise SpecError([FieldError((), "request body is empty; send a JSON object")])
            return None
        text = decode_text(raw)
        data = (
            await run_in_threadpool(parse_json, text)
            if len(raw) > _INLINE_PARSE_BYTES
            else parse_json(text)
        )
        return validate_body(model, data)

    return body


def validate_body(model: type[M], data: Any) -> M:
    """``data`` validated as a ``model`` (an ``ExactModel``: ``"3"`` and ``true`` are no
    counts, ``3.0`` is).

    Raises:
        SpecError: Naming each field in error (``add_trials``, ``configs[0]``).
    """
    try:
        with strict_input():
            return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(errors_from_pydantic(exc, (), model)) from None


BODY_MODELS: dict[str, type[BaseModel]] = {}
"""The models ``json_request_body`` declared, by name: the app's OpenAPI document defines
each among its components, as FastAPI does for the bodies it reads itself."""


def json_request_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that reads ``model`` with ``json_body``."""
    BODY_MODELS[model.__name__] = model
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }
