"""``GET /studies/{id}/report``: an HTML page, 404 for an unknown study, 409 before any
trial completed, and declared so in the OpenAPI document."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from automl.api import create_app
from automl.delivery import study_report
from automl.delivery.report import REPORT_POLICY, SECTIONS
from automl.store import Store


def test_report_of_a_completed_study_is_an_html_page(completed: tuple[TestClient, int]) -> None:
    client, study_id = completed
    response = client.get(f"/studies/{study_id}/report")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert f"Study {study_id}: completed" in page
    for key in SECTIONS:
        assert f'<section id="{key}">' in page
    # Two trials: importances are explained, every other plot drawn.
    assert page.count('src="data:image/png;base64,') == len(SECTIONS) - 1
    assert "need at least 3 completed trials" in page
    # A tester: no policy said what the page may load; nothing but its style and plots.
    policy = response.headers["content-security-policy"]
    assert policy == f"{REPORT_POLICY}; frame-ancestors 'none'"
    assert "script-src" not in policy and "default-src 'none'" in policy
    assert f'<meta http-equiv="Content-Security-Policy" content="{REPORT_POLICY}">' in page
    assert response.headers["x-content-type-options"] == "nosniff"


def test_unknown_study_is_404(client: TestClient) -> None:
    response = client.get("/studies/4242/report")
    assert response.status_code == 404
    assert response.json() == {"detail": "study 4242 not found"}
    assert response.headers["x-content-type-options"] == "nosniff"  # every answer


def test_study_without_completed_trial_is_409(
    client: TestClient, submit: Callable[..., dict[str, Any]]
) -> None:
    study = submit()
    response = client.get(f"/studies/{study['id']}/report")
    assert response.status_code == 409
    assert "has no completed trial yet" in response.json()["detail"]
    assert response.json()["detail"].endswith("try again later")
    assert client.post(f"/studies/{study['id']}/cancel").status_code == 200

    ended = client.get(f"/studies/{study['id']}/report")  # once: "yet ... try again later"
    best = client.get(f"/studies/{study['id']}/best")

    assert ended.status_code == 409
    assert ended.json()["detail"] == (
        f"study {study['id']} ended (cancelled) without a completed trial: the report needs one"
    )
    assert (
        best.json()["detail"] == f"study {study['id']} ended (cancelled) without a completed trial"
    )


def test_out_of_range_id_is_422(client: TestClient) -> None:
    response = client.get(f"/studies/{2**31}/report")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "study_id"]


def test_openapi_declares_html_and_refusals(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/studies/{study_id}/report"]["get"]
    responses = operation["responses"]
    assert "text/html" in responses["200"]["content"]
    for code in ("404", "409", "422"):
        assert code in responses, code
    assert responses["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorDetail"
    }


def test_an_ended_studys_report_is_rendered_once_until_it_changes(
    completed: tuple[TestClient, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, study_id = completed
    renders: list[int] = []
    render = study_report.study_report_html

    def counting(store: Store, wanted: int) -> str:
        renders.append(wanted)
        return render(store, wanted)

    monkeypatch.setattr(study_report, "study_report_html", counting)
    monkeypatch.setattr(client.app.state, "report_cache", study_report.ReportCache())
    pages = [client.get(f"/studies/{study_id}/report").text for _ in range(3)]
    assert renders == [study_id] and pages[0] == pages[1] == pages[2]


def test_a_report_being_drawn_leaves_the_other_routes_their_threads(
    completed: tuple[TestClient, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: four reports of a 1,000-trial study held all four API threads
    for a minute, and ``/health`` answered after 59.9 s (the image's health check gives up
    after 4 s). Here the API has one thread, and two reports are being drawn."""
    settings = completed[0].app.state.settings  # type: ignore[attr-defined]
    study_id = completed[1]
    drawing, finish = threading.Event(), threading.Event()
    drawn: list[int] = []

    def slow(store: Store, wanted: int) -> str:
        drawn.append(wanted)
        drawing.set()
        finish.wait(20)
        return "page"

    monkeypatch.setattr(study_report, "study_report_html", slow)
    app = create_app(settings.model_copy(update={"api_threads": 1}))
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        reports = [pool.submit(client.get, f"/studies/{study_id}/report") for _ in range(2)]
        assert drawing.wait(20)
        # Sync routes, each on the API's one thread, while the drawing holds its own.
        assert client.get("/health").status_code == 200
        assert client.get(f"/studies/{study_id}").status_code == 200
        assert not any(report.done() for report in reports)  # still drawing
        finish.set()
        assert [report.result(20).text for report in reports] == ["page", "page"]
    assert drawn == [study_id]  # one drawing for both requests
    app.state.store.close()
