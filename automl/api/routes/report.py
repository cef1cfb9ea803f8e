"""A study's report: one self-contained HTML page of plots."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from automl.api.deps import StoreDep
from automl.api.errors import error_responses
from automl.api.params import StudyId
from automl.delivery.study_report import ReportCache
from automl.store import NoBestTrialError

router = APIRouter(prefix="/studies", tags=["models"])


@router.get(
    "/{study_id}/report",
    response_class=HTMLResponse,
    responses={
        200: {"description": "The report, a self-contained HTML page (images inline)"},
        **error_responses(
            404,
            409,
            descriptions={
                404: "No such study",
                409: "The study has no completed trial (yet, or it ended without one)",
            },
        ),
    },
)
async def study_report(study_id: StudyId, store: StoreDep, request: Request) -> HTMLResponse:
    """The study's report as one HTML page with every image inline (base64 PNG): the
    optimization history, parameter importances, slice plots, and for the best trial
    (with several objectives, the first of the Pareto front) its learning curves,
    confusion matrix, per-class precision and recall, and a PCA and a t-SNE of its
    penultimate-layer embeddings of (up to 500) validation images, coloured by class.
    A plot that cannot be drawn (importances with fewer than 3 trials or 2 parameters)
    shows a note instead. Takes a few seconds (the model embeds images and t-SNE runs);
    an ended study's report is then kept, and served again at once until the study
    changes."""
    cache: ReportCache = request.app.state.report_cache
    try:
        page = await run_in_threadpool(cache.html, store, study_id)
    except NoBestTrialError as exc:
        later = "" if exc.ended else "; try again later"
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{exc}: the report needs one{later}"
        ) from None
    return HTMLResponse(page)
