"""``automl best ID --download DIR`` and ``automl trials ID NUMBER --download DIR``: the
best model's bundle, or a trial's, unpacked into a folder.

Against the API (``--url``) the server builds the bundle and only the zip travels (nothing
here imports torch); on the local store it is built in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import zipfile
import zlib
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from automl.cli.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, CliError
from automl.cli.http_client import HttpClient
from automl.cli.output import printable, selection_text
from automl.config import Settings
from automl.file_clock import remove_stale_siblings

CARD_FILE = "model_card.json"
BUNDLE_FILES = frozenset(
    {"model.safetensors", CARD_FILE, "model.onnx", "model.torchscript.pt", "predict.py"}
)
"""The files a bundle may hold (``automl.delivery.bundle`` writes them; this module
imports nothing heavy): an export's ``--overwrite`` replaces these and no others."""


def cmd_download_best(args: argparse.Namespace, settings: Settings) -> int:
    """Writes the files of the best model's bundle (or of trial ``args.number``'s, where
    ``automl trials`` names one) into ``args.download``."""
    directory = Path(args.download)
    if directory.exists() and not directory.is_dir():
        raise CliError(f"{directory} is a file; --download names a folder", EXIT_BAD_INPUT)
    if directory.is_dir() and not args.overwrite and any(map(_counts, directory.iterdir())):
        message = f"{directory} is not empty; choose a new folder or pass --overwrite"
        raise CliError(message, EXIT_BAD_INPUT)
    data = fetch_bundle(settings, args.study, getattr(args, "number", None))
    written, card = unpack_bundle(data, directory, replace=True)
    model, bundle = card_section(card, "model"), card_section(card, "bundle")
    if args.json:
        answer = {
            "directory": str(directory),
            "files": [p.name for p in written],
            "study_id": model.get("study_id"),
            "trial_number": model.get("trial_number"),
            "selection": bundle.get("selection"),
        }
        print(json.dumps(answer))
        return EXIT_OK
    classes = card.get("classes")
    what = (
        f"{model.get('architecture')}, {len(classes) if isinstance(classes, list) else '?'} classes"
    )
    why = selection_text(bundle.get("selection"))
    usage = (
        f"classify images: python {directory / 'predict.py'} IMAGE [IMAGE ...]"
        if bundle.get("predict")
        else f"a clip model: feed {bundle.get('input_layout', 'clips')} to "
        f"{_model_file(bundle)} (predict.py classifies image files only)"
    )
    print(
        printable(
            f"study {model.get('study_id')}, trial {model.get('trial_number')} "
            f"({f'{why}; ' if why else ''}{what}): wrote "
            f"{', '.join(path.name for path in written)} to {directory}"
        )
        + f"\n{printable(usage)}"
    )
    return EXIT_OK


def _counts(path: Path) -> bool:
    """Whether a folder's entry makes it not empty: any but a download's hidden part."""
    name = path.name
    return not (
        name.startswith(".") and PARTIAL in name and name[1:].split(PARTIAL)[0] in BUNDLE_FILES
    )


def card_section(card: dict[str, Any], name: str) -> dict[str, Any]:
    """A section of a downloaded model card, empty where it is missing or not an object
    (a card from another server)."""
    section = card.get(name)
    return section if isinstance(section, dict) else {}


def remove_earlier_bundle(folder: Path, keep: Collection[str] = ()) -> bool:
    """Removes an earlier bundle's files from ``folder`` (``--overwrite``), so that none
    stays beside a new bundle that lacks it (an export that failed this time), nor beside
    no model at all (an export of a study without one). Only where the folder holds a
    bundle (its model card) and is no link, and only the files a bundle holds: a user's
    own files there stay.

    Args:
        folder: The folder.
        keep: Names left in place (the new bundle's, about to replace them).

    Returns:
        Whether the folder held a bundle.

    Raises:
        CliError: If a file cannot be removed.
    """
    if folder.is_symlink() or not (folder / CARD_FILE).is_file():
        return False
    try:
        for name in BUNDLE_FILES - set(keep):
            (folder / name).unlink(missing_ok=True)
    except OSError as exc:
        raise CliError(f"cannot write {folder}: {exc.strerror}", EXIT_BAD_INPUT) from None
    return True


def _model_file(bundle: dict[str, Any]) -> str:
    """The bundle's exported model to run (ONNX, else TorchScript, else the weights)."""
    exports = bundle.get("exports", {})
    for kind in ("onnx", "torchscript"):
        name = (exports.get(kind) or {}).get("file")
        if name:
            return str(name)
    return str(bundle.get("weights", "the weights"))


def fetch_bundle(settings: Settings, study_id: int, number: int | None = None) -> bytes:
    """The best model's bundle (a zip), or trial ``number``'s: from the API with ``--url``,
    else built here.

    Raises:
        CliError: Locally, with ``EXIT_BAD_INPUT`` if the study has no model to bundle.
        ClientError: From the API (``bad_input`` if the study has no model to bundle).
    """
    if settings.url:
        client = HttpClient(settings.url)
        return (
            client.best_model(study_id) if number is None else client.trial_model(study_id, number)
        )
    return _build_locally(settings, study_id, number)


def _build_locally(settings: Settings, study_id: int, number: int | None) -> bytes:
    from automl.cli.local_store import open_store
    from automl.delivery.bundle import build_bundle
    from automl.delivery.inference import DeliveryError
    from automl.store import WeightsNotFoundError

    store = open_store(settings)
    try:
        return build_bundle(store, study_id, number).data
    except (DeliveryError, WeightsNotFoundError) as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    finally:
        store.close()


MAX_UNPACKED_BYTES = 4 * 2**30
"""Most bytes a downloaded bundle may unpack to: a model's weights three times (ONNX,
TorchScript, safetensors) stay far below it; a zip bomb from a hostile server does not."""


def unpack_bundle(
    data: bytes, directory: Path, *, replace: bool = False
) -> tuple[list[Path], dict]:
    """Unpacks a bundle's flat files into ``directory`` (created if missing); with
    ``replace``, an earlier bundle's files there that the new one lacks go
    (``remove_earlier_bundle``). Each file is written under a hidden name first and renamed
    into place once all are written: a download that fails (a full disk, a read-only
    folder) leaves an earlier bundle as it was.

    Returns:
        The files written (in name order) and the model card.

    Raises:
        CliError: If the data is not a bundle, or the folder cannot be written.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = _read_members(archive)
        card = json.loads(members[CARD_FILE])
    except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: a method zipfile lacks.
        raise CliError(f"the download is not a readable zip file ({exc})", EXIT_FAILURE) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CliError("the download's model card is not JSON", EXIT_FAILURE) from None
    if not isinstance(card, dict):
        raise CliError("the download's model card is not a JSON object", EXIT_FAILURE)
    staged = _stage(members, directory)
    # Every byte is on disk: what is left are renames in one folder, which a full disk
    # does not fail, so a failed download leaves an earlier bundle whole.
    written: list[Path] = []
    created: list[Path] = []  # by this call: what a failure removes (a user's files stay)
    target = directory
    try:
        if replace:
            remove_earlier_bundle(directory, keep=members)
        for name, partial in staged.items():
            target = directory / name
            if not target.exists():
                created.append(target)
            os.replace(partial, target)
            written.append(target)
    except BaseException as exc:  # Ctrl-C too: no hidden part stays behind
        _remove([*staged.values(), *created])
        if not isinstance(exc, OSError):
            raise
        replaced = [path.name for path in written if path not in created]
        note = f" ({', '.join(replaced)} replaced already: download again)" if replaced else ""
        raise CliError(f"cannot write {target}: {exc.strerror}{note}", EXIT_BAD_INPUT) from None
    return written, card


PARTIAL = ".partial-"
"""What follows ``.NAME`` in the hidden name a bundle's file is written under first."""


def _stage(members: dict[str, bytes], directory: Path) -> dict[str, Path]:
    """Writes each member to a hidden file beside its place in ``directory`` (created if
    missing); returns them by member name.

    Raises:
        CliError: If one cannot be written (none of them is left behind).
    """
    staged: dict[str, Path] = {}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in members.items():
            remove_stale_siblings(directory / name, PARTIAL)  # a killed download's
            staged[name] = directory / f".{name}{PARTIAL}{os.getpid()}"
            staged[name].write_bytes(content)
    except BaseException as exc:  # Ctrl-C too: hundreds of MB would stay hidden there
        _remove(staged.values())  # a retry after a full disk would find the folder not empty
        if not isinstance(exc, OSError):
            raise
        code = EXIT_FAILURE if exc.errno in (errno.ENOSPC, errno.EDQUOT) else EXIT_BAD_INPUT
        raise CliError(f"cannot write {directory}: {exc.strerror}", code) from None
    return staged


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


PLAIN_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
"""How a bundle's members are stored (the API deflates them). zipfile decompresses bzip2
and LZMA members whole, past the size they declare: a few bytes could fill the memory."""


def _read_members(archive: zipfile.ZipFile) -> dict[str, bytes]:
    """Every member of a bundle's archive, read no further than the sizes it declares.

    Raises:
        CliError: If it is not a bundle (nested or missing names, other compression
            methods) or would unpack past ``MAX_UNPACKED_BYTES``.
        zipfile.BadZipFile: If a member is shorter than it declares, or corrupt (one
            longer is cut at its declared size, and then fails its CRC check).
    """
    infos = sorted(archive.infolist(), key=lambda info: info.filename)
    names = [info.filename for info in infos]
    if CARD_FILE not in names or any(Path(name).name != name for name in names):
        raise CliError("the download is not a model bundle", EXIT_FAILURE)
    if any(info.compress_type not in PLAIN_METHODS for info in infos):
        raise CliError("the download is not a model bundle (compression)", EXIT_FAILURE)
    unpacked = sum(info.file_size for info in infos)
    if unpacked > MAX_UNPACKED_BYTES:
        raise CliError(
            f"the download unpacks to {unpacked:,} bytes, more than a model bundle holds "
            f"({MAX_UNPACKED_BYTES:,} at most): not unpacked",
            EXIT_FAILURE,
        )
    members = {}
    for info in infos:
        with archive.open(info) as member:
            content = member.read(info.file_size + 1)  # deflate stops at what is asked
        if len(content) != info.file_size:
            raise zipfile.BadZipFile(f"{info.filename} is shorter than it declares")
        members[info.filename] = content
    return members
