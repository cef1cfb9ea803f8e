"""A study's report: one self-contained HTML page of plots."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from automl.api.deps import StoreDep
from automl.api.errors import error_responses
from automl.api.params import StudyId
from automl.delivery.report import REPORT_POLICY
from automl.delivery.study_report import ReportCache
from automl.store import NoBestTrialError

router = APIRouter(prefix="/studies", tags=["models"])


@router.get(
    "/{study_id}/report",
    name="read_report",
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
    shows a note instead; importances of a study of more than 300 completed trials come
    from a random sample of 300, and say so. Takes a few seconds (the model embeds
    images and t-SNE runs); the report is then kept, and served again at once until a
    trial of the study starts or ends or its status changes. Reports render one at a
    time: concurrent requests for the same report share one render."""
    cache: ReportCache = request.app.state.report_cache
    page = await run_in_threadpool(cache.cached, store, study_id)
    if page is not None:
        return _report_page(page)
    try:
        # Renders take seconds to minutes: they run one at a time on a thread of their own
        # (waiting their turn here, not on a thread), so the other routes keep theirs.
        page = await anyio.to_thread.run_sync(
            cache.html, store, study_id, limiter=request.app.state.report_limiter
        )
    except NoBestTrialError as exc:
        later = "" if exc.ended else "; try again later"
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{exc}: the report needs one{later}"
        ) from None
    return _report_page(page)


def _report_page(page: str) -> HTMLResponse:
    """The report as a response: nothing but its inline style and plots loads (no frame
    of another site shows it either)."""
    policy = f"{REPORT_POLICY}; frame-ancestors 'none'"
    return HTMLResponse(page, headers={"Content-Security-Policy": policy})
