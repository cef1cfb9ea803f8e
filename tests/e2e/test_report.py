"""The study report served by a real ``automl serve``: fetched by ``automl report --url``
in its own process, and rendered in a real browser (headless chromium)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from automl.delivery.report import SECTIONS
from automl.store import open_store
from tests.chromium import render_page, require_chromium
from tests.conftest import free_port, wait_healthy
from tests.delivery.trained import REPORTED_STUDY, train_study
from tests.forked import ForkedProcess

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Served:
    """A running ``automl serve`` and the completed study it holds."""

    url: str
    study_id: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A three-trial study trained to completion, then ``automl serve`` on its store."""
    folder = tmp_path_factory.mktemp("report-e2e")
    storage = f"sqlite:///{folder / 'automl.db'}"
    artifacts = folder / "artifacts"
    store = open_store(storage, artifacts_dir=artifacts)
    try:
        study_id = train_study(store, **REPORTED_STUDY)
    finally:
        store.close()
    port = free_port()
    log = folder / "serve.log"
    command = ["serve", "--port", str(port), "--storage", storage]
    command += ["--artifacts-dir", str(artifacts)]
    process = ForkedProcess(command, {**os.environ}, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log.read_text, 60)
        yield Served(url, study_id)
    finally:
        process.terminate()
        process.wait(timeout=30)


THIN_RUN = """
import sys
from automl.cli.main import main
code = main(["report", *sys.argv[1:]])
heavy = [name for name in ("torch", "optuna", "matplotlib", "sklearn") if name in sys.modules]
if heavy:
    print("imported", *heavy, file=sys.stderr)
sys.exit(code)
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``automl report ARGS`` in a fresh process; it reports heavy imports on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOML_")}
    return subprocess.run(
        [sys.executable, "-c", THIN_RUN, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_cli_writes_the_report_fetched_from_the_api(served: Served, tmp_path: Path) -> None:
    done = _cli(str(served.study_id), "--url", served.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "no heavy import, no library log line"
    page = (tmp_path / f"study-{served.study_id}-report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == len(SECTIONS)

    missing = _cli("4242", "--url", served.url, "--output", "other.html", cwd=tmp_path)
    assert (missing.returncode, missing.stderr.strip()) == (2, "error: study 4242 not found")
    assert not (tmp_path / "other.html").exists()


def test_the_report_renders_in_a_browser(served: Served, tmp_path: Path) -> None:
    require_chromium()
    page = f"{served.url}/studies/{served.study_id}/report"
    dom, screenshot = render_page(page, tmp_path, wait_ms=3000, window_size=(1280, 2400))
    assert f"Study {served.study_id}: reported" in dom
    for key, title in SECTIONS.items():
        assert f'<section id="{key}">' in dom
        assert f"<h2>{title}</h2>" in dom, f"heading of {key} not rendered"
    assert dom.count("data:image/png;base64,") == len(SECTIONS)
    with Image.open(screenshot) as shot:
        colors = shot.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colors is not None and len(colors) > 100, "the screenshot shows no plots"
