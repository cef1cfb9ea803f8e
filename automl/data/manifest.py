"""``image_csv``: images listed in a CSV file with ``path,label`` columns."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator

from automl.csv_cells import from_text_cell
from automl.data.base import ImageData, register_dataset
from automl.data.cache import DecodeUnit
from automl.data.errors import DatasetError
from automl.data.files import (
    SPLIT_FRACTION_RULES,
    FilePlan,
    ImageOptions,
    check_drawn_splits,
    load_plan,
    make_unit,
    require_classes,
    require_disjoint,
    require_distinct_classes,
    require_each_image_once,
)
from automl.data.paths import (
    OwnFolders,
    confine,
    data_root,
    not_found,
    own_folders_under,
    relative_name,
)
from automl.image_suffixes import IMAGE_SUFFIXES
from automl.registry import within_strict_input

MAX_CSV_BYTES = 512 * 1024 * 1024


class ImageCsvOptions(ImageOptions):
    """Options of ``image_csv``. The CSV paths are relative to the data root; the image
    paths inside a CSV are relative to that CSV's folder."""

    APPLIES_WHEN = SPLIT_FRACTION_RULES

    path: str = Field(description="CSV file with a header row and 'path' and 'label' columns.")
    val_path: str | None = Field(None, description="Validation CSV (same columns), optional.")
    test_path: str | None = Field(None, description="Test CSV (same columns), optional.")

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        rows = read_manifest(value)
        require_classes(manifest_classes(rows), f"CSV file {value!r}")
        if within_strict_input():  # at submit: a hard link is the same image too
            require_distinct_classes(manifest_classes(rows), f"CSV file {value!r}", "labels")
            require_each_image_once(path for path, _ in rows)
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
        # At submit only: a study stored before this check keeps loading its data.
        if within_strict_input():
            others = {
                option: [path for path, _ in read_manifest(info.data[option])]
                for option in ("path", "val_path")
                if option != info.field_name and info.data.get(option) is not None
            }
            require_disjoint([path for path, _ in rows], others)
        return value

    def _file_plan(self) -> FilePlan:
        """Lists the files of every given split."""
        return plan_image_csv(self)

    @model_validator(mode="after")
    def _check_drawn_splits(self) -> ImageCsvOptions:
        check_drawn_splits(self, self.val_path, self.test_path, self._class_sizes, "image")
        return self

    def _class_sizes(self) -> tuple[list[str], list[int]]:
        sizes = Counter(label for _, label in read_manifest(self.path))
        classes = sorted(sizes)
        return classes, [sizes[name] for name in classes]


def read_manifest(value: str) -> list[tuple[Path, str]]:
    """Reads and checks a ``path,label`` CSV.

    Returns:
        ``(image file, label)`` per row, in file order; labels without surrounding spaces.

    Raises:
        DatasetError: If the CSV or an image it names is missing, unreadable, outside the
            data root, or not an image file, a row's path or label is empty or it has more
            fields than the header, an image is listed twice, or the CSV lacks the columns
            or rows.
    """
    root = data_root()
    csv_path = confine(value, root)
    own = own_folders_under(root)
    shown = relative_name(csv_path, root)
    checked = []
    first_line: dict[Path, int] = {}
    columns, rows = _read_rows(csv_path, shown)
    for line, image, label, extra in rows:
        where = f"{shown} line {line}"
        try:
            _require_no_extra_fields(extra, columns)
            path = _row_image(csv_path.parent, image, label, root, own)
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        if path in first_line:
            # Listed twice, an image could land in training and validation both.
            message = f"image {image!r} is listed again (first on line {first_line[path]})"
            raise DatasetError(f"{where}: {message}; list each image once")
        first_line[path] = line
        checked.append((path, str(label).strip()))
    return checked


_Row = tuple[int, str | None, str | None, list[str]]
"""A CSV row: line number, path, label, and the fields past the header's columns."""


def _read_rows(csv_path: Path, shown: str) -> tuple[list[str], list[_Row]]:
    """The header's columns and each row of the CSV file."""
    try:
        if not csv_path.is_file():
            raise DatasetError(not_found("CSV file", csv_path, data_root()))
        if csv_path.stat().st_size > MAX_CSV_BYTES:
            raise DatasetError(f"CSV file {shown!r} is larger than {MAX_CSV_BYTES // 2**20} MiB")
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            if "path" not in columns or "label" not in columns:
                raise DatasetError(
                    f"CSV file {shown!r} needs a header row with 'path' and 'label' columns"
                    + _header_hint(columns)
                )
            rows = [
                (line, _cell(row["path"]), _cell(row["label"]), row.get(None) or [])
                for line, row in enumerate(reader, start=2)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise DatasetError(f"cannot read CSV file {shown!r}: {reason}") from None
    if not rows:
        raise DatasetError(f"CSV file {shown!r} lists no images")
    return columns, rows


def _header_hint(columns: list[str]) -> str:
    """What the header row holds instead, and what to change in it."""
    named = {column.strip().lower(): column for column in columns}
    if "path" in named and "label" in named:
        found = f"{named['path']!r} and {named['label']!r}"
        return f" (found {found}: write them in lower case, without spaces)"
    if len(columns) == 1 and any(mark in columns[0] for mark in ";\t|"):
        return f" (found one column {columns[0]!r}: separate the columns with commas)"
    if columns:
        more = ", ..." if len(columns) > 5 else ""
        return f" (found {', '.join(repr(column) for column in columns[:5])}{more})"
    return ""


def _require_no_extra_fields(extra: list[str], columns: Sequence[str]) -> None:
    """Refuses a row with more fields than the header (``csv.DictReader`` keeps them apart):
    an unquoted comma in a label (``golden, retriever``) would cut the label short.

    Empty extra fields pass: spreadsheets pad short rows with them.

    Raises:
        DatasetError: ``has more fields than the header (path, label): ' retriever'; quote
            a value that holds a comma``.
    """
    written = [value for value in extra if value.strip()]
    if written:
        shown = ", ".join(repr(value) for value in written[:2])
        more = ", ..." if len(written) > 2 else ""
        raise DatasetError(
            f"has more fields than the header ({', '.join(columns)}): {shown}{more}; "
            "quote a value that holds a comma"
        )


def _row_image(
    folder: Path, image: str | None, label: str | None, root: Path, own: OwnFolders
) -> Path:
    """The resolved image file a row names (relative to the CSV's ``folder``)."""
    if not image or not image.strip() or not label or not label.strip():  # None: a short row
        raise DatasetError("path and label must not be empty")
    # Relative to the data root (absolute ones stay), so messages show no server paths.
    path = confine((Path(relative_name(folder, root)) / image).as_posix(), root, own)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DatasetError(f"{image!r} is not a png, jpg, jpeg, webp or bmp file")
    try:
        found = path.is_file()
    except OSError as exc:
        raise DatasetError(f"cannot read image {image!r}: {exc.strerror}") from None
    if not found:
        raise DatasetError(f"image {image!r} not found{_separator_hint(folder, image, root)}")
    return path


def _separator_hint(folder: Path, image: str, root: Path) -> str:
    """Where a row's path separates folders with ``\\`` (a CSV made on Windows) and the
    file is there with ``/``, says so (only within the data root, as every path)."""
    if "\\" not in image:
        return ""
    try:
        posix = (Path(relative_name(folder, root)) / image.replace("\\", "/")).as_posix()
        there = confine(posix, root).is_file()
    except (DatasetError, OSError):
        return ""
    return "; paths separate folders with / (a \\ is part of a file name here)" if there else ""


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


def _cell(text: str | None) -> str | None:
    """A cell as written, but a ``'`` that keeps a spreadsheet from running it dropped
    (``annotate`` writes ``'=x.png``; see ``automl.csv_cells``)."""
    return None if text is None else from_text_cell(text)
