"""Artifact stores for trial weights and checkpoints (Optuna's artifact-store protocol).

Three backends implement ``open_reader``/``write``/``remove``, so optuna-dashboard (given
the same store) shows the artifacts:

- ``SqlArtifactStore``: chunks in a table of the storage database. The default with
  PostgreSQL: a worker on another machine needs nothing but the database URL.
- ``FolderArtifactStore``: files in a local folder (the default with SQLite); a write goes
  to a temporary file that is fsynced and renamed, so a reader never sees half a file.
- Optuna's ``Boto3ArtifactStore`` (``AUTOML_ARTIFACT_STORE=s3``).

Every write is all-or-nothing: a blob is visible complete or not at all.

A trial's weights are a safetensors file (``weights.safetensors``: tensors and a JSON
header, no code); weights stored before that format are ``torch.save`` files, and
``load_state_dict`` reads both.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import shlex
import stat
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import optuna
import sqlalchemy as sa
from optuna.artifacts import upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from automl.config import unusable_folder
from automl.file_clock import folder_now
from automl.store import attrs, tables
from automl.store.artifact_errors import (
    ArtifactDamagedError,
    ArtifactsFolderWriteError,
    ArtifactStoreError,
    ArtifactUnreadableError,
    UnusableArtifactsFolderError,
    WeightsNotFoundError,
)
from automl.store.staging import staged_file
from automl.store.tables import db_now

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("automl.store")

WEIGHTS_FILENAME = "weights.safetensors"
WEIGHTS_MIMETYPE = "application/vnd.safetensors"
MODEL_CARD_FILENAME = "model_card.json"
CHUNK_BYTES = 4 * 1024 * 1024
TEMPORARY_PREFIX = ".tmp-"
STALE_TEMPORARY_S = 3600.0
"""A folder store's temporary file this long untouched was left by a killed writer (a
live write touches its file with every chunk)."""


class ArtifactStore(Protocol):
    """Optuna's artifact-store protocol (``optuna.artifacts``' stores all satisfy it)."""

    def open_reader(self, artifact_id: str) -> BinaryIO:
        """Opens the artifact for reading; raises ``ArtifactNotFound`` if it is missing."""
        ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        """Stores the whole content under ``artifact_id``."""
        ...

    def remove(self, artifact_id: str) -> None:
        """Deletes the artifact (missing ones may raise ``ArtifactNotFound``)."""
        ...


FOLDER_REFUSALS = frozenset(
    {
        errno.ENOENT,  # a file system that refuses new folders there (/proc, /sys)
        errno.ENOTDIR,  # a file where a folder of the path should be
        errno.EEXIST,  # a file by the folder's name
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENAMETOOLONG,
        errno.ELOOP,
    }
)
"""What creating a folder answers when its path is at fault, which only another setting
fixes (a full disk or an I/O error is not the setting's fault, and is reported as such)."""


_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
DIGEST_PREFIX = ".sha256-"
"""A folder store keeps each file's SHA-256 in the hidden file of this prefix and its id
(written before the file is renamed into place), and checks it as the file is read."""


_NOT_IN_IDS = frozenset({"/", "\\", "\0"})
"""Characters no artifact id holds: a folder separator (either system's) would lead out of
the artifacts folder, and a NUL is refused by every file system call."""


class FolderArtifactStore:
    """Artifacts as files in one folder; writes are atomic and durable, and reads check
    each file against the SHA-256 recorded when it was written (files written before
    digests were recorded are read unchecked).

    Args:
        directory: The folder (created if missing).
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, artifact_id: str) -> Path:
        # By the id's text: resolving the path took a system call per folder of it, three
        # times a write.
        if artifact_id in ("", ".", "..") or any(c in artifact_id for c in _NOT_IN_IDS):
            raise ValueError(f"invalid artifact id {artifact_id!r}")
        return self.directory / artifact_id

    def _digest_path(self, artifact_id: str) -> Path:
        return self._path(artifact_id).with_name(DIGEST_PREFIX + artifact_id)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        """Opens the file of ``artifact_id``; reading it to its end raises
        ``ArtifactDamagedError`` if its bytes are not those written."""
        try:
            file = self._path(artifact_id).open("rb")
        except FileNotFoundError:
            raise ArtifactNotFound(f"artifact {artifact_id} not found") from None
        try:
            expected = self._digest_path(artifact_id).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return file  # none (written before digests were recorded), or unreadable
        except BaseException:
            file.close()
            raise
        if not _HEX_DIGEST.fullmatch(expected):
            # Its write cut off by a crash (it is not synced: an empty or zeroed file):
            # it vouches for nothing, and the bytes cannot be told damaged.
            return file
        return io.BufferedReader(_CheckedReader(file, expected, artifact_id), CHUNK_BYTES)

    def write(self, artifact_id: str, content_body: BinaryIO, *, durable: bool = True) -> None:
        """Writes a temporary file, fsyncs it, then renames it into place.

        Args:
            artifact_id: The artifact's id: its file's name.
            content_body: Its bytes.
            durable: Sync the file and the folder, so that a crash leaves the artifact
                whole; without, a crash may leave it empty or gone (what its digest then
                says, where it was written in time).

        Raises:
            ArtifactsFolderWriteError: If the folder's path is at fault (made read-only,
                deleted, a file by its name): no write in it can succeed.
        """
        try:
            self._write(artifact_id, content_body, durable)
        except OSError as exc:
            if exc.errno not in FOLDER_REFUSALS or isinstance(exc, ArtifactsFolderWriteError):
                raise
            raise ArtifactsFolderWriteError(exc.errno, exc.strerror, exc.filename) from exc

    def _write(self, artifact_id: str, content_body: BinaryIO, durable: bool) -> None:
        target = self._path(artifact_id)
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=TEMPORARY_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := content_body.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            # The digest first: a file in place always has its own (an id is written
            # again only with the same bytes: a shared artifact made twice).
            self._write_digest(artifact_id, digest.hexdigest())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            # The new digest may sit beside the old file (a failed rewrite): without one,
            # the file is read unchecked rather than called damaged.
            self._digest_path(artifact_id).unlink(missing_ok=True)
            raise
        if not durable:
            return
        directory_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)  # make the rename itself durable
        finally:
            os.close(directory_fd)

    def _write_digest(self, artifact_id: str, hexdigest: str) -> None:
        # Not synced (that would double a write's cost): cut off by a crash it is empty or
        # partial, which ``open_reader`` takes for no digest. Renamed into place, so that
        # two writers of one id leave one whole digest (and another user's file is
        # replaced, not written into).
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=TEMPORARY_PREFIX)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(hexdigest + "\n")
            os.replace(tmp, self._digest_path(artifact_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def remove(self, artifact_id: str) -> None:
        """Deletes the file of ``artifact_id`` and its digest."""
        try:
            self._path(artifact_id).unlink()
        except FileNotFoundError:
            raise ArtifactNotFound(f"artifact {artifact_id} not found") from None
        finally:
            self._digest_path(artifact_id).unlink(missing_ok=True)

    def remove_stale_temporaries(self, min_age_s: float = STALE_TEMPORARY_S) -> list[str]:
        """Deletes the temporary files of writes killed before their rename (kill -9,
        power loss), and the digests of files such a write never put in place: those
        untouched for ``min_age_s``.

        Returns:
            The names of the files removed.
        """
        # Modification times are the file server's on a network mount: so is the cutoff.
        now = folder_now(self.directory, TEMPORARY_PREFIX)
        if now is None:
            return []
        cutoff = now - min_age_s
        removed = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                digest_of = name[len(DIGEST_PREFIX) :] if name.startswith(DIGEST_PREFIX) else ""
                if digest_of and (self.directory / digest_of).exists():
                    continue  # the digest of a file in place
                if not (name.startswith(TEMPORARY_PREFIX) or digest_of):
                    continue
                with contextlib.suppress(FileNotFoundError):  # another sweep was first
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed.append(entry.name)
        return removed


class _CheckedReader(io.RawIOBase):
    """A file's bytes as read, checked against ``expected`` (a SHA-256 in hex) at its end."""

    def __init__(self, file: BinaryIO, expected: str, artifact_id: str) -> None:
        super().__init__()
        self._file = file
        self._expected = expected
        self._artifact_id = artifact_id
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        """The checked file's descriptor (for its size: reads go through this reader)."""
        return self._file.fileno()

    def readall(self) -> bytes:
        """The rest of the file in one read (``read()``), checked."""
        rest = self._file.read()
        self._digest.update(rest)
        self._check()
        return rest

    def _check(self) -> None:
        if self._digest.hexdigest() != self._expected:
            raise ArtifactDamagedError(
                f"artifact {self._artifact_id} is damaged: its bytes are not those written "
                "(their SHA-256 differs from the one recorded when it was saved)"
            )

    def readinto(self, buffer: Any) -> int:
        count = self._file.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self._digest.update(memoryview(buffer)[:count])
        else:
            self._check()
        return int(count or 0)

    def close(self) -> None:
        self._file.close()
        super().close()


class SqlArtifactStore:
    """Artifacts as rows of the storage database, in chunks, written in one transaction.

    Args:
        engine: Engine for writes.
        read_engine: Engine for reads (may be the same).
    """

    def __init__(self, engine: sa.engine.Engine, read_engine: sa.engine.Engine | None = None):
        self.engine = engine
        self.read_engine = read_engine or engine

    def open_reader(self, artifact_id: str) -> BinaryIO:
        """Reads the chunks of ``artifact_id`` into memory, in order."""
        with self.read_engine.begin() as connection:
            size = connection.scalar(
                sa.select(tables.artifacts.c.size).where(
                    tables.artifacts.c.artifact_id == artifact_id
                )
            )
            if size is None:
                raise ArtifactNotFound(f"artifact {artifact_id} not found")
            chunks = connection.scalars(
                sa.select(tables.artifact_chunks.c.data)
                .where(tables.artifact_chunks.c.artifact_id == artifact_id)
                .order_by(tables.artifact_chunks.c.seq)
            )
            body = b"".join(bytes(chunk) for chunk in chunks)
        return io.BytesIO(body)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        """Replaces ``artifact_id`` with the content, all chunks in one transaction."""
        with self.engine.begin() as connection:
            self._delete(connection, artifact_id)
            size = 0
            for seq, chunk in enumerate(_chunks(content_body)):
                connection.execute(
                    tables.artifact_chunks.insert().values(
                        artifact_id=artifact_id, seq=seq, data=chunk
                    )
                )
                size += len(chunk)
            connection.execute(
                tables.artifacts.insert().values(
                    artifact_id=artifact_id, size=size, created_at=db_now()
                )
            )

    def ids_older_than(self, min_age_s: float) -> list[str]:
        """The ids of the artifacts written at least ``min_age_s`` ago."""
        artifacts = tables.artifacts
        with self.read_engine.begin() as connection:
            cutoff = db_now() - min_age_s
            query = sa.select(artifacts.c.artifact_id).where(artifacts.c.created_at < cutoff)
            return list(connection.scalars(query))

    def remove(self, artifact_id: str) -> None:
        """Deletes ``artifact_id``."""
        with self.engine.begin() as connection:
            if not self._delete(connection, artifact_id):
                raise ArtifactNotFound(f"artifact {artifact_id} not found")

    @staticmethod
    def _delete(connection: sa.engine.Connection, artifact_id: str) -> bool:
        deleted = connection.execute(
            tables.artifacts.delete().where(tables.artifacts.c.artifact_id == artifact_id)
        )
        if deleted.rowcount == 0:
            return False  # chunks are only ever written with their artifact's row
        connection.execute(
            tables.artifact_chunks.delete().where(
                tables.artifact_chunks.c.artifact_id == artifact_id
            )
        )
        return True


def _chunks(body: BinaryIO) -> Iterator[bytes]:
    while chunk := body.read(CHUNK_BYTES):
        yield chunk


def build_artifact_store(
    kind: str,
    *,
    backend: str,
    engines: tuple[sa.engine.Engine, sa.engine.Engine],
    directory: Path,
    s3_bucket: str | None,
) -> ArtifactStore:
    """The artifact store named by ``kind`` (``auto`` picks by database backend).

    Raises:
        ArtifactStoreError: If ``kind`` is unknown or its settings are incomplete.
        UnusableArtifactsFolderError: If the ``folder`` store's folder cannot be created
            there (a file in the way, a read-only file system, no permission).
        OSError: If creating the folder failed otherwise (a full disk, an I/O error).
    """
    if kind == "auto":
        kind = "folder" if backend == "sqlite" else "sql"
    if kind == "folder":
        try:
            return FolderArtifactStore(directory)
        except OSError as exc:
            if exc.errno not in FOLDER_REFUSALS:
                raise
            raise UnusableArtifactsFolderError(
                unusable_folder(
                    "artifacts folder", directory, "AUTOML_ARTIFACTS_DIR", exc.strerror or str(exc)
                )
            ) from None
    if kind == "sql":
        return SqlArtifactStore(*engines)
    if kind == "s3":
        if not s3_bucket:
            raise ArtifactStoreError("AUTOML_S3_BUCKET must name a bucket for the s3 store")
        try:
            from optuna.artifacts import Boto3ArtifactStore

            return Boto3ArtifactStore(s3_bucket)
        except ImportError:
            message = "the s3 artifact store needs boto3: pip install boto3"
            raise ArtifactStoreError(message) from None
    raise ArtifactStoreError(f"unknown artifact store {kind!r}; use auto, folder, sql or s3")


def remove_quietly(store: ArtifactStore, artifact_id: str) -> None:
    """Removes an artifact, ignoring one that is already gone."""
    with contextlib.suppress(ArtifactNotFound):
        store.remove(artifact_id)


def discard(store: ArtifactStore, artifact_id: str) -> None:
    """Removes an artifact nothing refers to any more (a replaced or finished trial's
    checkpoint); a folder that cannot be written to (read-only, gone) leaves it behind
    with a warning instead of failing the caller, whose own work is done."""
    try:
        remove_quietly(store, artifact_id)
    except OSError as exc:
        logger.warning("could not remove artifact %s (left behind): %s", artifact_id, exc)


# --- weights -----------------------------------------------------------------------------------


def save_weights(
    storage: BaseStorage,
    trial: optuna.Trial,
    state_dict: dict[str, torch.Tensor],
    store: ArtifactStore,
) -> str:
    """Saves a trial's weights (safetensors) as an Optuna artifact and records its id on
    the trial.

    Returns:
        The artifact id.
    """
    with staged_file(WEIGHTS_FILENAME, weights_bytes(state_dict)) as path:
        artifact_id = upload_artifact(
            artifact_store=store, file_path=path, study_or_trial=trial, mimetype=WEIGHTS_MIMETYPE
        )
    trial.set_user_attr(attrs.WEIGHTS, artifact_id)
    return artifact_id


def save_model_card(trial: optuna.Trial, card: Mapping[str, Any], store: ArtifactStore) -> str:
    """Saves a trial's model card (JSON) as an Optuna artifact beside its weights, so
    optuna-dashboard lists it for download.

    The card is a snapshot taken when the trial completed (validation metrics; the test
    metrics that come later are in the bundle's card). A few kilobytes for tens of classes
    (it grows with the classes, not their square: past 50 classes a confusion matrix is
    kept as its most frequent mistakes), it stays when retention removes the weights, and
    goes with the study when it is deleted (as every artifact recorded on its trials does).

    Returns:
        The artifact id.
    """
    # Compact: indented, json.dumps runs in Python, not in its C encoder (half a
    # millisecond a trial). Not synced: a convenience, which a crash may cost.
    data = (json.dumps(card, allow_nan=False) + "\n").encode("utf-8")
    with staged_file(MODEL_CARD_FILENAME, data) as path:
        return upload_artifact(
            artifact_store=_UnsyncedWrites(store)
            if isinstance(store, FolderArtifactStore)
            else store,
            file_path=path,
            study_or_trial=trial,
            mimetype="application/json",
        )


class _UnsyncedWrites:
    """A folder store whose writes are not synced (``FolderArtifactStore.write`` with
    ``durable=False``), for ``upload_artifact``, which calls ``write`` itself."""

    def __init__(self, store: FolderArtifactStore) -> None:
        self.store = store

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.store.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.store.write(artifact_id, content_body, durable=False)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(artifact_id)


def weights_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    """A state dict as a safetensors file: contiguous CPU tensors, no tensor sharing its
    memory with another (safetensors refuses aliases, such as tied weights)."""
    # Imported here, as in read_state_dict: a command that opens the store only to read
    # its tables (automl status) needs no torch.
    from safetensors.torch import save as save_safetensors

    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state_dict.items():
        value = tensor.detach().cpu().contiguous()
        storage = value.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != value.nbytes:
            value = value.clone()  # a view of another tensor's memory, or of a larger one
        seen.add(value.untyped_storage().data_ptr())
        tensors[name] = value
    return save_safetensors(tensors, metadata={"format": "pt"})


def weights_format(head: bytes) -> str:
    """``safetensors`` or ``torch`` (an older ``torch.save`` file), from a file's first
    bytes (at least 9): safetensors starts with its header's length, then ``{``."""
    return "safetensors" if len(head) >= 9 and head[8:9] == b"{" else "torch"


def read_state_dict(blob: bytes) -> dict[str, torch.Tensor]:
    """Reads weights in either format, on the CPU, without running any pickled code."""
    import torch
    from safetensors.torch import load as load_safetensors

    if weights_format(blob[:9]) == "safetensors":
        return load_safetensors(blob)
    return torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")


def open_weights(trial: FrozenTrial, store: ArtifactStore) -> BinaryIO:
    """Opens a trial's saved weights for reading: a safetensors file (``torch.save`` for
    weights saved by earlier versions; ``weights_format`` tells them apart).

    Raises:
        WeightsNotFoundError: If the trial has no readable weights.
    """
    artifact_id = trial.user_attrs.get(attrs.WEIGHTS)
    if artifact_id is None:
        removed = trial.user_attrs.get(attrs.WEIGHTS_REMOVED)
        why = f" ({removed})" if removed else ""
        raise WeightsNotFoundError(f"trial {trial.number} kept no weights{why}")
    try:
        return store.open_reader(artifact_id)
    except ArtifactNotFound:
        raise WeightsNotFoundError(
            f"weights of trial {trial.number} are missing from the artifact store"
        ) from None
    except OSError as exc:
        raise ArtifactUnreadableError(
            f"the weights of trial {trial.number} cannot be read from the artifact store "
            f"({artifact_id}): {exc.strerror or exc}"
        ) from None


def artifact_size(reader: BinaryIO) -> int | None:
    """The size in bytes of an artifact opened with ``open_reader``, read from its file or
    buffer before any byte of it is (None where the store cannot tell without reading:
    another tool's store, e.g. Optuna's S3 one)."""
    if isinstance(reader, io.BytesIO):
        with reader.getbuffer() as view:
            return view.nbytes
    try:
        info = os.fstat(reader.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None  # a pipe's size says nothing


def damaged_weights(trial: FrozenTrial) -> str:
    """The message for weights whose bytes are not those saved: a trial's, or the refit's
    (``as_refit_trial``: the trial's view with the refit's weights), with what remakes them."""
    if attrs.REFIT in trial.user_attrs:
        return (
            f"the weights of the refit of trial {trial.number} are damaged: their bytes are "
            "not those saved (their SHA-256 differs from the one recorded then); automl refit "
            "trains it again"
        )
    params = shlex.quote(json.dumps(trial.params, separators=(", ", ": ")))
    return (
        f"the weights of trial {trial.number} are damaged: their bytes are not those saved "
        "(their SHA-256 differs from the one recorded then); to train its configuration "
        f"again, queue it: automl enqueue ID {params} (a study that ended takes it after "
        "automl resume ID --add-trials 1)"
    )


@contextlib.contextmanager
def _named_as_weights_of(trial: FrozenTrial) -> Iterator[None]:
    """Says which trial's weights are damaged, where the reader knows only an id."""
    try:
        yield
    except ArtifactDamagedError:
        raise ArtifactDamagedError(damaged_weights(trial)) from None


def read_through(reader: BinaryIO) -> None:
    """Reads ``reader`` to its end a chunk at a time, keeping nothing: what makes a folder
    store's reader check the bytes against their digest (``ArtifactDamagedError``)."""
    while reader.read(CHUNK_BYTES):
        pass


def artifact_lost(store: ArtifactStore, artifact_id: str) -> bool:
    """Whether an artifact is gone or damaged (its digest); one that cannot be read for
    another reason (its permissions, an I/O error) is the operator's to fix, not lost."""
    try:
        with store.open_reader(artifact_id) as reader:
            read_through(reader)
    except (ArtifactNotFound, ArtifactDamagedError):
        return True
    except OSError:
        return False
    return False


def check_weights(trial: FrozenTrial, store: ArtifactStore) -> None:
    """Reads a trial's weights through once where the store checks what it reads (a folder
    store), so that a damaged file is refused before any byte of it is sent.

    Raises:
        WeightsNotFoundError, ArtifactUnreadableError: As ``open_weights``.
        ArtifactDamagedError: If the bytes are not those saved.
    """
    if not isinstance(store, FolderArtifactStore):
        return
    with open_weights(trial, store) as reader, _named_as_weights_of(trial):
        try:
            read_through(reader)
        except OSError as exc:  # an I/O error of the disk or the network file system
            raise ArtifactUnreadableError(
                f"the weights of trial {trial.number} cannot be read from the artifact store: "
                f"{exc.strerror or exc}"
            ) from None


def load_state_dict(trial: FrozenTrial, store: ArtifactStore) -> dict[str, torch.Tensor]:
    """A trial's saved weights as a state dict on the CPU, in either format (read without
    running any pickled code).

    Raises:
        WeightsNotFoundError: If the trial has no readable weights (among them, a file that
            is neither safetensors nor plain tensors, such as a pickle that would run code).
    """
    with open_weights(trial, store) as reader, _named_as_weights_of(trial):
        blob = reader.read()
    try:
        return read_state_dict(blob)
    except Exception as exc:  # safetensors, pickle and zip errors share no base class
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsNotFoundError(
            f"the weights of trial {trial.number} cannot be read safely: {reason}"
        ) from None


# --- checkpoints -------------------------------------------------------------------------------


def write_checkpoint(store: ArtifactStore, study_id: int, ticket_id: int, blob: bytes) -> str:
    """Stores a checkpoint blob under a new id (the caller records it, then drops the old one).

    Returns:
        The artifact id.
    """
    artifact_id = f"checkpoint-{study_id}-{ticket_id}-{uuid.uuid4().hex}"
    store.write(artifact_id, io.BytesIO(blob))
    return artifact_id


def read_checkpoint(store: ArtifactStore, artifact_id: str) -> bytes | None:
    """The checkpoint blob, or None if it is gone or damaged (the trial starts over)."""
    try:
        with store.open_reader(artifact_id) as reader:
            return reader.read()
    except ArtifactNotFound:
        return None
    except ArtifactDamagedError as exc:
        logger.warning("checkpoint not used (the trial starts over): %s", exc)
        return None
