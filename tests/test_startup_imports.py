"""What ``automl run`` imports before its first trial: nothing that only some datasets or
architectures need (scikit-learn, torchvision cost seconds at start-up)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

DEFERRED = ("sklearn", "torchvision")
"""Packages the CLI and a trial on an image folder with a plain ``cnn`` never import."""


def loaded_after(code: str) -> list[str]:
    """The ``DEFERRED`` packages in ``sys.modules`` after ``code`` runs in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(set(sys.modules))))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    modules = json.loads(result.stdout.splitlines()[-1])
    return [name for name in modules if name.split(".")[0] in DEFERRED]


@pytest.mark.parametrize(
    "code",
    [
        "import automl.cli.client, automl.cli.commands",
        "import automl.data, automl.models, automl.train, automl.spec",
    ],
)
def test_cli_and_training_modules_defer_sklearn_and_torchvision(code: str) -> None:
    assert loaded_after(code) == []


def test_deferred_packages_load_when_used() -> None:
    code = (
        "import torch\n"
        "from automl.data import stratified_split\n"
        "from automl.models import build_model\n"
        "from automl.train.augment import functional\n"
        "stratified_split(torch.tensor([0, 0, 1, 1]), 0.5, seed=0)\n"
        "build_model('resnet18', {}, (3, 32, 32), 10)\n"
        "functional.grayscale(torch.rand(2, 3, 4, 4))"
    )
    loaded = loaded_after(code)
    assert {"sklearn.model_selection", "torchvision.models"} <= set(loaded)
