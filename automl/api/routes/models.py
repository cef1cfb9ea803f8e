"""A model as a bundle to take away (the best one, or a trial's): weights, model card, ONNX,
TorchScript, predict.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Response, status
from starlette.concurrency import run_in_threadpool

from automl.api.deps import StoreDep
from automl.api.errors import error_responses
from automl.api.params import StudyId, TrialNumber
from automl.delivery.bundle import BUNDLES
from automl.delivery.inference import ModelUnavailableError
from automl.store import Store

router = APIRouter(prefix="/studies", tags=["models"])

CACHE_CONTROL = "private, no-cache"
"""Clients may keep a bundle but must revalidate it (``If-None-Match``): the best model can
change at any time."""


def _bundle_responses(not_found: str, conflict: str) -> dict[int | str, dict[str, Any]]:
    """The documented answers of a bundle download: the zip, 304, and why 404 and 409."""
    zipped = {
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The bundle (a zip); its ETag is the zip's SHA-256",
        "headers": {
            "ETag": {"description": "The zip's SHA-256, quoted", "schema": {"type": "string"}},
            "Cache-Control": {"description": CACHE_CONTROL, "schema": {"type": "string"}},
            "Content-Disposition": {
                "description": "attachment; filename=study<id>-trial<n>-model.zip",
                "schema": {"type": "string"},
            },
        },
    }
    return {
        200: zipped,
        304: {"description": "Not modified: If-None-Match names the bundle's ETag"},
        **error_responses(404, 409, descriptions={404: not_found, 409: conflict}),
    }


@router.get(
    "/{study_id}/best/model",
    response_class=Response,
    responses=_bundle_responses(
        not_found="No such study, no completed trial yet, or its weights are gone",
        conflict="The model cannot be rebuilt (configuration, weights, dataset)",
    ),
)
async def download_best_model(
    study_id: StudyId,
    store: StoreDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The study's best model (its refit model once the refit is done; with several
    objectives, the Pareto front's first trial: the one ``POST /studies/{id}/predict``
    serves) as a zip that runs without automl:
    ``model.safetensors``, ``model_card.json`` (architecture, every hyperparameter, class
    names in index order, input size, channels, preprocessing and normalization,
    validation and test metrics, per-class metrics, dataset fingerprint, library versions,
    intended use and limits), ``model.onnx``, ``model.torchscript.pt`` and ``predict.py``
    (``python predict.py IMAGE...`` with onnxruntime, numpy and Pillow).

    Built once per model and kept: repeated downloads are byte-identical, with a strong
    ``ETag`` (the zip's SHA-256); ``If-None-Match`` with it answers 304 without a body. A
    new best trial, a refit or a changed model card (test metrics recorded later) gives a
    new bundle and ETag."""
    return await _bundle_response(store, study_id, None, if_none_match)


@router.get(
    "/{study_id}/trials/{number}/model",
    response_class=Response,
    responses=_bundle_responses(
        not_found="No such study or trial, or the trial kept no weights",
        conflict="The trial did not complete, or its model cannot be rebuilt",
    ),
)
async def download_trial_model(
    study_id: StudyId,
    number: TrialNumber,
    store: StoreDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Trial ``number``'s model as the same zip as ``GET /studies/{id}/best/model``: a
    trade-off of a Pareto front, or a runner-up (its card's ``bundle.selection`` is
    ``chosen``). Only trials that kept their weights have one (the study's
    ``keep_weights`` best, and with several objectives the Pareto front)."""
    return await _bundle_response(store, study_id, number, if_none_match)


async def _bundle_response(
    store: Store, study_id: int, number: int | None, if_none_match: str | None
) -> Response:
    try:
        bundle = await run_in_threadpool(BUNDLES.get, store, study_id, number)
    except ModelUnavailableError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    etag = f'"{bundle.digest}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    headers["Content-Disposition"] = f'attachment; filename="{bundle.filename}"'
    return Response(bundle.data, media_type="application/zip", headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` value names ``etag`` (or is ``*``); as RFC 9110 asks,
    a weak tag ``W/"..."`` counts as its strong twin."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags
