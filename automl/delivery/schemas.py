"""What predict and annotate answer, and annotate's request: plain pydantic, no torch.

The API declares these as its response models and the CLI reads them back, so a client
that talks to the API imports neither torch nor Optuna.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from automl.registry import ExactModel

MAX_PATH_LENGTH = 4096
MAX_TOP = 100
"""The most classes listed per image (``top``), over the API and the CLI alike."""

Selection = Literal["best_trial", "pareto_front_first", "refit", "chosen"]


class ServedModel(BaseModel):
    """Which trial's weights answered, and what the model takes and tells apart."""

    study_id: int
    trial_number: int
    selection: Selection = Field(
        description="best_trial (one objective), pareto_front_first (with several "
        "objectives the Pareto front's lowest-numbered trial serves), refit: the best "
        "trial's configuration retrained on train + validation (trial_number names it), or "
        "chosen: the trial a request named (GET /studies/{id}/trials/{n}/model)."
    )
    note: str | None = Field(
        None, description="Why this trial serves, when it is not simply the best trial."
    )
    classes: list[str] = Field(description="Class names in the model's output order.")
    input_shape: list[int] = Field(description="What one image becomes: [C, H, W].")


class ClassScore(BaseModel):
    """One class and the probability the model gives it."""

    label: str
    index: int = Field(description="The class's position in ``classes``.")
    probability: float = Field(ge=0, le=1)


class ImagePrediction(BaseModel):
    """The most probable classes of one image, most probable first."""

    file: str = Field(description="The uploaded file's name, as sent.")
    top: list[ClassScore]


class Predictions(BaseModel):
    """``POST /studies/{id}/predict``: one entry per uploaded image, in upload order."""

    model: ServedModel
    predictions: list[ImagePrediction]


class AnnotateRequest(ExactModel):
    """A folder of unlabeled images under the data root, and where to write the labels."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description="Folder under the data root (AUTOML_DATA_ROOT); its image files "
        "(png, jpg, jpeg, webp, bmp; not subfolders) are classified.",
    )
    write_csv: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description="CSV to write (path,label,confidence; least confident first) under the "
        "data root, in the folder or a folder above it: image_csv reads it as it is.",
    )
    overwrite: bool = Field(False, description="Replace write_csv if it exists.")
    top: int = Field(3, ge=1, le=MAX_TOP, description="Classes listed per image.")

    @field_validator("write_csv")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        """A file name with a newline or another unprintable character is refused: a
        tester's ``a\nb.csv`` was written into the shared data root."""
        unprintable = next((c for c in value or "" if not c.isprintable()), None)
        if unprintable is not None:
            raise ValueError(f"unprintable character U+{ord(unprintable):04X} in the file name")
        return value


class Suggestion(BaseModel):
    """The suggested label of one image."""

    path: str = Field(description="The image, relative to the data root.")
    label: str = Field(description="The most probable class.")
    confidence: float = Field(ge=0, le=1, description="Its probability.")
    top: list[ClassScore]


class Annotations(BaseModel):
    """``POST /studies/{id}/annotate``: one suggestion per image, least confident first."""

    model: ServedModel
    folder: str = Field(description="The folder, relative to the data root.")
    count: int
    csv: str | None = Field(None, description="The CSV written, relative to the data root.")
    suggestions: list[Suggestion]
