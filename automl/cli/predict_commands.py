"""``automl predict`` and ``automl annotate``: a study's best model, from the terminal.

Against the API (``--url``) only the images (or the folder's name) travel; on the local
store the model is loaded in this process. Torch is imported only then.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pydantic import BaseModel, ValidationError

from automl.cli.errors import EXIT_BAD_INPUT, EXIT_OK, CliError
from automl.cli.http_client import ClientError, HttpClient
from automl.cli.output import printable_json, selection_text, table
from automl.config import Limits, Settings
from automl.delivery.schemas import AnnotateRequest, Annotations, Predictions, ServedModel
from automl.image_suffixes import IMAGE_SUFFIXES, SUFFIX_LIST
from automl.shown_values import shown_path
from automl.wording import counted

if TYPE_CHECKING:
    from automl.store import Store


def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    """Classifies image files (a folder: its images) with a study's best model: a table,
    or ``--json``."""
    paths = image_paths([Path(name) for name in args.images])
    if settings.url:  # requests within the upload limits, each file open while it is sent
        client = HttpClient(settings.url)
        answers: list[Predictions] = []
        batches = _batches(paths, Limits())
        for batch in batches:
            sent = sum(len(answer.predictions) for answer in answers)
            with ExitStack() as files, _counted_from(sent, batch, len(batches) > 1):
                images = [(shown_path(name), files.enter_context(_open(name))) for name in batch]
                answers.append(client.predict(args.study, images, args.top))
        result = _merged(answers)
    else:  # any number of files, decoded from disk a chunk at a time; no upload limits
        from automl.delivery.inference import predict_files

        _regular(paths)
        with _local_store(settings) as store, _refusals():
            result = predict_files(store, args.study, paths, top=args.top)
    _print(result, args.json, predictions_text)
    return EXIT_OK


def cmd_annotate(args: argparse.Namespace, settings: Settings) -> int:
    """Suggests labels for a folder under the data root, least confident first."""
    try:
        request = AnnotateRequest(
            path=args.folder, write_csv=args.csv, overwrite=args.overwrite, top=args.top
        )
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        option = {"path": "folder", "write_csv": "--csv"}.get(str(error["loc"][0]), "request")
        raise CliError(f"{option}: {error['msg']}", EXIT_BAD_INPUT) from None
    if settings.url:
        result = HttpClient(settings.url).annotate(args.study, request)
    else:
        from automl.delivery.annotate import annotate_folder

        with _local_store(settings) as store, _refusals():
            result = annotate_folder(store, args.study, request)
    _print(result, args.json, annotations_text)
    return EXIT_OK


def predictions_text(result: Predictions) -> str:
    """The served model, then one row per image: its top class and the runners-up."""
    rows = [
        (
            prediction.file,
            prediction.top[0].label,
            f"{prediction.top[0].probability:.3f}",
            ", ".join(f"{s.label} ({s.probability:.3f})" for s in prediction.top[1:]) or None,
        )
        for prediction in result.predictions
    ]
    header = served_text(result.model)
    return header + "\n\n" + table(("FILE", "LABEL", "PROBABILITY", "NEXT"), rows)


def annotations_text(result: Annotations) -> str:
    """The served model, one row per image (least confident first) and the CSV written."""
    rows = [
        (s.path, s.label, f"{s.confidence:.3f}", ", ".join(t.label for t in s.top[1:]) or None)
        for s in result.suggestions
    ]
    lines = [
        served_text(result.model),
        "",
        table(("PATH", "LABEL", "CONFIDENCE", "ELSE"), rows),
        f"({counted(result.count, 'image')} in {result.folder}, least confident first)",
    ]
    if result.csv is not None:
        lines.append(f"wrote {result.csv} under the data root (path,label,confidence)")
    return "\n".join(lines)


def served_text(model: ServedModel) -> str:
    """Which trial answered, and why it was chosen."""
    text = f"study {model.study_id}, trial {model.trial_number} ({selection_text(model.selection)})"
    return f"{text}: {model.note}" if model.note else text


def _print(result: BaseModel, as_json: bool, render: Callable[[Any], str]) -> None:
    print(printable_json(result.model_dump_json(indent=2)) if as_json else render(result))


def _open(name: str) -> BinaryIO:
    """The file, open for the upload to read as it is sent (never whole in memory)."""
    try:
        return open(name, "rb")
    except OSError as exc:
        raise CliError(f"cannot read image {name}: {exc.strerror}", EXIT_BAD_INPUT) from None


PART_BYTES = 160
"""A multipart part's bytes besides its file and its name (boundary and headers), which
the API counts against ``max_upload_bytes`` too; the name counts up to three times (it may
be escaped)."""


def _batches(paths: list[Path], limits: Limits) -> list[list[str]]:
    """The files' names in upload order, in requests of at most ``max_images`` files and
    ``max_upload_bytes`` (a file larger than that goes alone, and the API refuses it).
    The limits are this environment's ``AUTOML_LIMIT_*`` (the API refuses by its own)."""
    batches: list[list[str]] = []
    size = PART_BYTES  # the closing boundary
    for path in paths:
        length = _sizes([path]) + PART_BYTES + 3 * len(os.fsencode(path))
        full = batches and len(batches[-1]) >= limits.max_images
        if not batches or full or size + length > limits.max_upload_bytes:
            batches.append([])
            size = PART_BYTES
        batches[-1].append(str(path))
        size += length
    return batches


@contextmanager
def _counted_from(sent: int, batch: list[str], split: bool) -> Iterator[None]:
    """An error of a later request names its files as the command line counts them
    (``files[3]`` of the second request of 64 is ``files[67]``); a request of one file
    refused for its bytes names that file (the API's 413 names none); when the files were
    split into requests, one refused for a limit says which settings split them."""
    try:
        yield
    except ClientError as exc:
        text = _FILE_INDEX.sub(lambda m: f"{m.group(1)}files[{int(m.group(2)) + sent}]", str(exc))
        if len(batch) == 1 and "max_upload_bytes" in text:
            text = f"files[{sent}] {shown_path(batch[0])!r} alone: {text}"
        if split and any(limit in text for limit in _SPLITTING_LIMITS):
            text += (
                " (predict --url splits the files by this environment's "
                f"{' and '.join(_SPLITTING_LIMITS.values())}: set them as the API has them)"
            )
        raise ClientError(text, exc.bad_input, exc.status) from None


_FILE_INDEX = re.compile(r"(^|; )files\[(\d+)\]")
"""A file's field path where the API's error names one (each of its parts starts so)."""

_SPLITTING_LIMITS = {
    "max_images": "AUTOML_LIMIT_MAX_IMAGES",
    "max_upload_bytes": "AUTOML_LIMIT_MAX_UPLOAD_BYTES",
}


def _merged(answers: list[Predictions]) -> Predictions:
    """One answer of the requests' answers, which the same model must have given."""
    first = answers[0]
    for answer in answers[1:]:
        if answer.model != first.model:
            raise CliError(
                f"the study's serving model changed while predicting (trial "
                f"{first.model.trial_number}, {first.model.selection}, then trial "
                f"{answer.model.trial_number}, {answer.model.selection}); run predict again"
            )
    return Predictions(
        model=first.model, predictions=[p for answer in answers for p in answer.predictions]
    )


def image_paths(paths: list[Path]) -> list[Path]:
    """The paths given, each folder among them replaced by its image files (those
    directly in it, by name; hidden ones left out), as ``annotate`` reads a folder.

    Raises:
        CliError: If a folder cannot be listed or holds no image file.
    """
    found: list[Path] = []  # as ``automl.data.paths.image_files`` lists, without torch
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        try:
            with os.scandir(path) as scanned:
                entries = [entry for entry in scanned if not entry.name.startswith(".")]
                names = sorted(
                    entry.name
                    for entry in entries
                    if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and entry.is_file()
                )
                taken = set(names)
                left_out = sorted(
                    entry.name + ("/" if entry.is_dir() else "")
                    for entry in entries
                    if entry.name not in taken
                )
        except OSError as exc:
            raise CliError(f"cannot list folder {path}: {exc.strerror}", EXIT_BAD_INPUT) from None
        if not names:
            raise CliError(f"folder {path} has no images ({SUFFIX_LIST})", EXIT_BAD_INPUT)
        _warn_left_out(path, left_out)
        found += [path / name for name in names]
    return found


def _warn_left_out(folder: Path, names: list[str], shown: int = 5) -> None:
    """Says on stderr which visible entries of a folder were not classified: files of
    other types, and folders (whose images are not looked into)."""
    if not names:
        return
    listed = ", ".join(shown_path(name) for name in names[:shown])
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    entries = counted(len(names), "entry", "entries")
    print(
        f"warning: left out {entries} of folder {shown_path(str(folder))} "
        f"(not {SUFFIX_LIST} files, or folders): {listed}{more}",
        file=sys.stderr,
    )


def _regular(paths: list[Path]) -> list[str]:
    """The files' names (as typed: they may repeat), once each is a regular file."""
    _sizes(paths)
    return [str(path) for path in paths]


def _sizes(paths: list[Path]) -> int:
    """The files' total size, once each is a regular file (a device or a pipe would be
    endless, or never end)."""
    total = 0
    for path in paths:
        try:
            info = path.stat()
        except OSError as exc:
            raise CliError(f"cannot read image {path}: {exc.strerror}", EXIT_BAD_INPUT) from None
        if not stat.S_ISREG(info.st_mode):
            raise CliError(f"cannot read image {path}: not a regular file", EXIT_BAD_INPUT)
        total += info.st_size
    return total


@contextmanager
def _local_store(settings: Settings) -> Iterator[Store]:
    from automl.cli.local_store import open_store

    store = open_store(settings)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _refusals() -> Iterator[None]:
    """What delivery refuses, as one-line errors (exit 2: the input or the study)."""
    from automl.delivery.inference import DeliveryError, InputRejectedError
    from automl.store import WeightsNotFoundError

    try:
        yield
    except InputRejectedError as exc:
        from automl.spec import FieldError

        where = FieldError(tuple(exc.field), "").path  # files[1], as the API names it
        raise CliError(f"{where}: {exc}", EXIT_BAD_INPUT) from None
    except (DeliveryError, WeightsNotFoundError) as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
