"""Projections of embeddings: degenerate features (identical, nearly identical, too few
distinct, non-finite) are refused with a reason instead of reaching t-SNE, which crashes the
process on them.

Every call that once crashed runs in a child Python, so that a regression fails its test
instead of killing pytest with a segmentation fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from automl.delivery.embeddings import (
    MIN_POINTS,
    DegenerateEmbeddingsError,
    check_projectable,
    distinct_points,
    pca_2d,
)
from tests.conftest import store_at
from tests.delivery.trained import train_study

ROOT = Path(__file__).resolve().parents[2]


def run_isolated(code: str) -> Any:
    """Runs ``code`` in a child Python that imports from the repository root (in the
    test's working folder); returns the JSON it printed last. Fails (rather than crashes)
    if the child dies, of a signal say."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.splitlines()[-1])


def test_tsne_refuses_degenerate_features_instead_of_crashing() -> None:
    outcomes = run_isolated(
        """
        import json
        import numpy as np
        from automl.delivery.embeddings import DegenerateEmbeddingsError, tsne_2d

        rng = np.random.default_rng(0)
        cases = {
            "identical": np.full((30, 8), 0.5, np.float32),
            "zeros": np.zeros((30, 8), np.float32),
            "nearly identical": (100 + rng.normal(size=(30, 8)) * 1e-5).astype(np.float32),
            "tiny but distinct": (rng.normal(size=(30, 8)) * 1e-30).astype(np.float32),
        }
        outcomes = {}
        for name, features in cases.items():
            try:
                points = tsne_2d(features)
                outcomes[name] = "finite" if np.isfinite(points).all() else "not finite"
            except DegenerateEmbeddingsError as exc:
                outcomes[name] = str(exc)
        print(json.dumps(outcomes))
        """
    )
    for name in ("identical", "zeros", "nearly identical"):
        assert "maps the 30 validation images to the same features" in outcomes[name], name
    assert outcomes["tiny but distinct"] == "finite"  # scaled before t-SNE: no underflow


def test_report_of_a_model_with_identical_features_notes_why(
    data_root: Path, tmp_path: Path
) -> None:
    """The tester's repro: 30 identical grey images, one trial, then the report."""
    for name in ("a", "b"):
        folder = data_root / "grey" / name
        folder.mkdir(parents=True)
        for index in range(15):
            Image.new("RGB", (16, 16), (90, 90, 90)).save(folder / f"{index}.png")
    url = f"sqlite:///{tmp_path / 'automl.db'}"
    store = store_at(url, tmp_path)
    try:
        study_id = train_study(
            store,
            name="grey",
            dataset={
                "source": "image_folder",
                "options": {"path": str(data_root / "grey"), "size": 16},
            },
            budget={"n_trials": 1, "max_failed": 0},
            fixed={"epochs": 1, "batch_size": 8, "width": 8},
            params={},
        )
    finally:
        store.close()
    found = run_isolated(
        f"""
        import json, re
        from pathlib import Path
        from automl.delivery.study_report import study_report_html
        from tests.conftest import store_at

        store = store_at({url!r}, Path({str(tmp_path)!r}))
        page = study_report_html(store, {study_id})
        print(json.dumps(dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', page, re.S))))
        """
    )
    for key in ("embeddings-pca", "embeddings-tsne"):
        assert "<img" not in found[key], key
        assert "to the same features" in found[key], found[key]
    assert "<img" in found["confusion-matrix"]


@pytest.mark.parametrize(
    ("features", "reason"),
    [
        (np.full((20, 4), np.nan, np.float32), "NaN or infinite"),
        (np.array([[0.0, 1.0]] * 9 + [[np.inf, 0.0]]), "NaN or infinite"),
        (np.repeat(np.eye(4, dtype=np.float32), 5, axis=0), "only 4 distinct features"),
        (np.ones((3, 4), np.float32), "the same features"),
    ],
    ids=["nan", "inf", "four-distinct", "three-identical"],
)
def test_degenerate_features_are_refused_with_their_reason(
    features: np.ndarray, reason: str
) -> None:
    with pytest.raises(DegenerateEmbeddingsError, match=reason):
        check_projectable(features)
    with pytest.raises(DegenerateEmbeddingsError, match=reason):
        pca_2d(features)


def test_distinct_points_count_within_float_rounding() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 16)) * 10
    assert distinct_points(np.repeat(base, 40, axis=0)) == 1
    noisy = (base + rng.normal(size=(40, 16)) * 1e-7 * 10).astype(np.float32)
    assert distinct_points(noisy) == 1
    spread = rng.normal(size=(40, 16))
    assert distinct_points(spread) == 40
    assert distinct_points(spread, stop_at=MIN_POINTS) == MIN_POINTS
    assert distinct_points(np.zeros((0, 3))) == 0
    check_projectable(spread)
    assert pca_2d(spread).shape == (40, 2)
