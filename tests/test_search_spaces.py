"""Every bundled example spec validates, and the quickstart spec meets its promise."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from automl.examples import write_digits_folder, write_pretrained_cnn, write_rgb_folder
from automl.spec import load_spec

SEARCH_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
EXAMPLES = sorted(SEARCH_SPACES.glob("*.y*ml")) + sorted(SEARCH_SPACES.glob("*.json"))


@pytest.fixture(scope="module")
def example_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The data root the examples expect, written by the documented commands' functions."""
    root = tmp_path_factory.mktemp("data")
    write_digits_folder(root / "digits_folder")
    write_digits_folder(root / "digits_imbalanced", imbalanced=True)
    write_pretrained_cnn(root / "weights" / "shapes_cnn.safetensors")
    write_rgb_folder(root / "shapes32", per_class=10, size=32)  # validation only lists files
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOML_DATA_ROOT", str(root))
        patch.setenv("AUTOML_CACHE_DIR", str(root / ".cache"))
        yield root


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_spec_is_valid(path: Path, example_data: Path) -> None:
    spec = load_spec(path)
    assert spec.params, "an example should search something"
    assert spec.budget.n_trials >= 1


def automl_run(spec: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``automl run SPEC --json`` in a child process on CPU, with its own store."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "automl",
            "run",
            str(spec),
            "--json",
            "--device",
            "cpu",
            "--storage",
            f"sqlite:///{tmp_path / 'run.db'}",
            "--artifacts-dir",
            str(tmp_path / "artifacts"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_digits_quick_reaches_95_percent(tmp_path: Path) -> None:
    """The quickstart's promise: >= 0.95 validation accuracy within its budget."""
    result = automl_run(SEARCH_SPACES / "digits_quick.yaml", tmp_path)
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)
    assert best["trials"][0]["metrics"]["accuracy"] >= 0.95
    assert "trial 0" in result.stderr  # live progress, one line per trial off a terminal


@pytest.mark.slow
def test_run_on_a_generated_image_folder(example_data: Path, tmp_path: Path) -> None:
    """The README's "your own images" path end to end: PNG class folders written by
    ``python -m automl.examples digits-folder``, searched by ``automl run``."""
    result = automl_run(SEARCH_SPACES / "digits_folder.yaml", tmp_path)
    assert result.returncode == 0, result.stderr
    [best] = json.loads(result.stdout)["trials"]
    assert best["metrics"]["accuracy"] >= 0.9
    assert [row["class"] for row in best["per_class"]] == [str(digit) for digit in range(10)]
