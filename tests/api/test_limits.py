"""Every limit is a setting, enforced by the API (413 or 422 naming it, nothing stored) and
documented in the README's table, which is generated from the code."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from automl.config import Limits, limits_markdown
from tests.api.conftest import close_client, make_client
from tests.conftest import tiny_spec_data

ROOT = Path(__file__).resolve().parents[2]


def png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def noise_png(size: int) -> bytes:
    """An incompressible PNG of ``size x size`` pixels."""
    buffer = io.BytesIO()
    Image.effect_noise((size, size), 100).save(buffer, "PNG")
    return buffer.getvalue()


def on_disk(folder: Path) -> set[str]:
    """Every path under ``folder`` but the database's files."""
    return {str(path) for path in folder.rglob("*") if not path.name.startswith("automl.db")}


def post_spec(**overrides: Any) -> Callable[[TestClient, int], httpx.Response]:
    return lambda client, _: client.post("/studies", json=tiny_spec_data(**overrides))


def post_text(text: str) -> Callable[[TestClient, int], httpx.Response]:
    return lambda client, _: client.post(
        "/studies", content=text, headers={"content-type": "application/json"}
    )


def predict(*images: bytes) -> Callable[[TestClient, int], httpx.Response]:
    files = [("files", (f"{index}.png", image, "image/png")) for index, image in enumerate(images)]
    return lambda client, study_id: client.post(f"/studies/{study_id}/predict", files=files)


def annotate(client: TestClient, study_id: int) -> httpx.Response:
    return client.post(f"/studies/{study_id}/annotate", json={"path": "inbox"})


@dataclass(frozen=True)
class Case:
    """A request just over one limit (set low through its environment variable)."""

    value: str
    send: Callable[[TestClient, int], httpx.Response]
    status: int
    named: str


CASES = {
    "max_trials": Case("2", post_spec(budget={"n_trials": 3}), 422, "(max_trials)"),
    "max_timeout_s": Case("10", post_spec(budget={"timeout": 60}), 422, "(max_timeout_s)"),
    "max_params": Case("1", post_spec(), 422, "(max_params)"),
    "max_choices": Case("1", post_spec(), 422, "(max_choices)"),
    "max_grid_cells": Case(
        "2",
        post_spec(
            sampler={"name": "grid"},
            budget={"n_trials": 1},
            params={"optimizer": {"type": "categorical", "choices": ["adam", "sgd", "adamw"]}},
        ),
        422,
        "(max_grid_cells)",
    ),
    "max_spec_depth": Case(
        "4", post_text('{"a": {"b": {"c": {"d": {"e": 1}}}}}'), 422, "(max_spec_depth)"
    ),
    "max_spec_values": Case(
        "100", post_text(json.dumps({"name": "x", "tags": [0] * 200})), 422, "(max_spec_values)"
    ),
    "max_string_length": Case("100", post_spec(name="x" * 101), 422, "(max_string_length)"),
    "max_upload_bytes": Case("1000", predict(noise_png(48)), 413, "max_upload_bytes"),
    "max_images": Case("1", predict(png(), png()), 422, "max_images allows 1"),
    "max_image_pixels": Case("63", predict(png()), 422, "max_image_pixels allows 63"),
    "max_annotate_images": Case("1", annotate, 422, "max_annotate_images allows 1"),
    # 4 images x 3 x 8 x 8 = 768 bytes
    "max_dataset_bytes": Case(
        "767",
        post_spec(dataset={"source": "image_folder", "options": {"path": "pets", "size": 8}}),
        422,
        "max_dataset_bytes allows 767",
    ),
    # The test's own study and the control request's make two, both queued.
    "max_studies_per_project": Case("2", post_spec(), 422, "max_studies_per_project = 2"),
    "max_active_studies_per_project": Case(
        "2", post_spec(), 422, "max_active_studies_per_project = 2"
    ),
}


def test_every_limit_has_a_case() -> None:
    assert set(CASES) == set(Limits.model_fields), (
        "add a case for each new limit to CASES in tests/api/test_limits.py"
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_limit_is_a_setting_refused_before_any_write(
    name: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    (data_root / "inbox").mkdir()
    for index in range(2):
        (data_root / "inbox" / f"{index}.png").write_bytes(png())
        for pet in ("cat", "dog"):
            (data_root / "pets" / pet).mkdir(parents=True, exist_ok=True)
            (data_root / "pets" / pet / f"{index}.png").write_bytes(png())
    client = make_client(f"sqlite:///{tmp_path / 'automl.db'}", tmp_path / "artifacts")
    try:
        study_id = client.post("/studies", json=tiny_spec_data()).json()["id"]
        control = case.send(client, study_id)  # the same request, under the default limit
        assert case.named not in control.text, control.text
        count = client.get("/studies").json()["count"]
        before = on_disk(tmp_path)
        monkeypatch.setenv(f"AUTOML_LIMIT_{name.upper()}", case.value)

        response = case.send(client, study_id)

        assert response.status_code == case.status, response.text
        assert case.named in response.text
        if name.endswith("_per_project"):  # wait and send it again, not "fix the spec"
            assert [error["type"] for error in response.json()["detail"]] == ["limit_error"]
        assert client.get("/studies").json()["count"] == count
        assert on_disk(tmp_path) == before
    finally:
        close_client(client)


def test_the_body_size_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOML_MAX_BODY_BYTES", "300")
    client = make_client(f"sqlite:///{tmp_path / 'automl.db'}", tmp_path / "artifacts")
    try:
        response = client.post("/studies", json=tiny_spec_data())

        assert response.status_code == 413
        assert "300 bytes" in response.text
        assert client.get("/studies").json()["count"] == 0
    finally:
        close_client(client)


def test_readme_limits_table_is_generated_from_the_code() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    begin, end = "<!-- limits:begin -->\n", "<!-- limits:end -->"
    section = readme[readme.index(begin) + len(begin) : readme.index(end)]
    assert section == limits_markdown(), (
        "README.md's limits table is stale: replace it with what "
        "automl.config.limits_markdown() returns"
    )
