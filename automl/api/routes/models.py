"""The best model as a bundle to take away: weights, model card, ONNX, TorchScript, predict.py."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from starlette.concurrency import run_in_threadpool

from automl.api.deps import StoreDep
from automl.api.errors import error_responses
from automl.api.params import StudyId
from automl.delivery.bundle import build_bundle
from automl.delivery.inference import ModelUnavailableError

router = APIRouter(prefix="/studies", tags=["models"])


@router.get(
    "/{study_id}/best/model",
    response_class=Response,
    responses={
        200: {
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The bundle (a zip)",
        },
        **error_responses(
            404,
            409,
            descriptions={
                404: "No such study, no completed trial yet, or its weights are gone",
                409: "The model cannot be rebuilt (configuration, weights, dataset)",
            },
        ),
    },
)
async def download_best_model(study_id: StudyId, store: StoreDep) -> Response:
    """The study's best model (its refit model once the refit is done; with several
    objectives, the Pareto front's first trial: the one ``POST /studies/{id}/predict``
    serves) as a zip that runs without automl:
    ``model.safetensors``, ``model_card.json`` (architecture, every hyperparameter, class
    names in index order, input size, channels, preprocessing and normalization,
    validation and test metrics, per-class metrics, dataset fingerprint, library versions,
    intended use and limits), ``model.onnx``, ``model.torchscript.pt`` and ``predict.py``
    (``python predict.py IMAGE...`` with onnxruntime, numpy and Pillow)."""
    try:
        bundle = await run_in_threadpool(build_bundle, store, study_id)
    except ModelUnavailableError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return Response(
        bundle.data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{bundle.filename}"'},
    )
