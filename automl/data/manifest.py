"""``image_csv``: images listed in a CSV file with ``path,label`` columns."""

from __future__ import annotations

import csv
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from automl.data.base import ImageData, register_dataset
from automl.data.cache import DecodeUnit
from automl.data.errors import DatasetError
from automl.data.files import FilePlan, ImageOptions, load_plan, make_unit, require_classes
from automl.data.paths import IMAGE_SUFFIXES, confine, data_root, relative_name

MAX_CSV_BYTES = 512 * 1024 * 1024


class ImageCsvOptions(ImageOptions):
    """Options of ``image_csv``. The CSV paths are relative to the data root; the image
    paths inside a CSV are relative to that CSV's folder."""

    path: str = Field(description="CSV file with a header row and 'path' and 'label' columns.")
    val_path: str | None = Field(None, description="Validation CSV (same columns), optional.")
    test_path: str | None = Field(None, description="Test CSV (same columns), optional.")

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        require_classes(manifest_classes(read_manifest(value)), f"CSV file {value!r}")
        return value

    @field_validator("val_path", "test_path")
    @classmethod
    def _check_split_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        rows = read_manifest(value)
        if "path" in info.data:
            classes = manifest_classes(read_manifest(info.data["path"]))
            unknown = sorted({label for _, label in rows} - set(classes))
            if unknown:
                raise DatasetError(
                    f"label {unknown[0]!r} is not a label of path; valid labels: "
                    + ", ".join(classes)
                )
        return value


def read_manifest(value: str) -> list[tuple[Path, str]]:
    """Reads and checks a ``path,label`` CSV.

    Returns:
        ``(image file, label)`` per row, in file order.

    Raises:
        DatasetError: If the CSV or an image it names is missing, outside the data root,
            or not an image file, or the CSV lacks the columns or rows.
    """
    root = data_root()
    csv_path = confine(value, root)
    shown = relative_name(csv_path, root)
    if not csv_path.is_file():
        raise DatasetError(f"CSV file {shown!r} not found under the data root")
    if csv_path.stat().st_size > MAX_CSV_BYTES:
        raise DatasetError(f"CSV file {shown!r} is larger than {MAX_CSV_BYTES // 2**20} MiB")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if "path" not in columns or "label" not in columns:
                raise DatasetError(
                    f"CSV file {shown!r} needs a header row with 'path' and 'label' columns"
                )
            rows = [(line, row["path"], row["label"]) for line, row in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read CSV file {shown!r}: {exc}") from None
    if not rows:
        raise DatasetError(f"CSV file {shown!r} lists no images")
    checked = []
    first_line: dict[Path, int] = {}
    for line, image, label in rows:
        where = f"{shown} line {line}"
        if not image or not label:
            raise DatasetError(f"{where}: path and label must not be empty")
        try:
            path = confine(
                csv_path.parent / image if not Path(image).is_absolute() else image, root
            )
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(f"{where}: {image!r} is not a png, jpg, jpeg, webp or bmp file")
        if not path.is_file():
            raise DatasetError(f"{where}: image {image!r} not found")
        if path in first_line:
            # Listed twice, an image could land in training and validation both.
            message = f"image {image!r} is listed again (first on line {first_line[path]})"
            raise DatasetError(f"{where}: {message}; list each image once")
        first_line[path] = line
        checked.append((path, label.strip()))
    return checked


def manifest_classes(rows: list[tuple[Path, str]]) -> list[str]:
    """The sorted distinct labels."""
    return sorted({label for _, label in rows})


def plan_image_csv(options: ImageCsvOptions) -> FilePlan:
    """Reads every given CSV."""
    root = data_root()
    train_rows = read_manifest(options.path)
    classes = manifest_classes(train_rows)
    index = {name: i for i, name in enumerate(classes)}

    def csv_unit(value: str, role: str, rows: list[tuple[Path, str]]) -> DecodeUnit:
        samples = [(path,) for path, _ in rows]
        labels = [index[label] for _, label in rows]
        return make_unit(
            "image_csv", role, confine(value, root), root, samples, labels, options.preprocess
        )

    extra = {
        role: csv_unit(value, role, read_manifest(value))
        for role, value in (("val", options.val_path), ("test", options.test_path))
        if value is not None
    }
    return FilePlan(
        "image_csv", tuple(classes), csv_unit(options.path, "train", train_rows), **extra
    )


def fingerprint_image_csv(options: ImageCsvOptions) -> str:
    """Changes when a CSV or a listed image changes, or an option changes."""
    return plan_image_csv(options).fingerprint(options)


@register_dataset(
    "image_csv",
    ImageCsvOptions,
    fingerprint=fingerprint_image_csv,
    description="images listed in a path,label CSV (paths relative to the CSV)",
)
def load_image_csv(options: ImageCsvOptions) -> ImageData:
    """Loads the images a CSV lists, decoding through the shared disk cache."""
    return load_plan(plan_image_csv(options), options)
