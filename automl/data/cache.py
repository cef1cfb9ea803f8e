"""Decode once: decoded, resized uint8 tensors cached on disk and shared by every process.

A *unit* is one set of labelled files (a training folder, a validation CSV...) plus the
preprocessing applied to it. Its fingerprint hashes the file list, each file's size and
modification time, the labels and the preprocessing; the decoded tensors are stored as
``<cache_dir>/<slot>-<fingerprint>.pt`` (``slot`` identifies the unit regardless of its
contents). Writers hold an inter-process file lock on the slot and write atomically
(temporary file, fsync, rename), so a second process waits for the first instead of
decoding again, and readers never see half a file. A unit whose files changed gets a new
fingerprint: it is decoded again and the stale file of its slot is removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from automl.config import current_settings, unusable_folder
from automl.data.decode import Preprocess, Sample, decode_samples
from automl.data.errors import DatasetError

logger = logging.getLogger("automl.data")

CACHE_FORMAT = 1
"""Part of every data fingerprint (studies and warm starts match on it): bumped only when
the decoded images of every dataset change."""
DECODE_VERSION = 5
"""Part of every cache slot, not of the fingerprint: bumped when decoding changes for some
images only, so old entries are not reused while studies keep matching (2: 16-bit images
are scaled to 8 bits, no longer clipped; 3: quarter-turned JPEGs decode at full scale for
non-square sizes, very thin padded images keep a pixel, malformed EXIF keeps orientation;
4: transparent pixels are composited onto white, no longer shown in their stored color;
5: so are a 16-bit grayscale PNG's, marked by a transparent gray value)."""


@dataclass(frozen=True)
class DecodeUnit:
    """A set of labelled samples to decode with one preprocessing.

    Attributes:
        name: Where the files come from, for logs (e.g. ``"pets/train"``).
        identity: Stable identity of the unit (its resolved folder or CSV file and split
            role); units with the same identity replace each other in the cache.
        samples: Each a tuple of absolute file paths (one per frame).
        labels: The class index of each sample.
        prep: How files are turned into arrays.
        root: The data root, for messages.
        selection: How samples are picked from the listed files, when options other than
            ``prep`` decide it (``frames=8,stride=1`` for clips); each selection keeps its
            own slot, so alternating between them reuses both.
    """

    name: str
    identity: str
    samples: tuple[Sample, ...]
    labels: tuple[int, ...]
    prep: Preprocess
    root: str
    selection: str = ""

    @property
    def slot(self) -> str:
        """Cache slot of this unit: identity, preprocessing and selection, not contents."""
        return self._slot(DECODE_VERSION, self.selection)

    def earlier_slots(self) -> list[str]:
        """The slots this unit had before (files to remove): under earlier
        ``DECODE_VERSION``s and, with a selection, the one slot its unit had for every
        selection before selections had their own."""
        last = DECODE_VERSION + 1 if self.selection else DECODE_VERSION
        return [self._slot(version, "") for version in range(1, last)]

    def _slot(self, version: int, selection: str) -> str:
        parts = [self.identity, asdict(self.prep), version]
        if selection:  # without one, a slot keeps the name it had before selections
            parts.append(selection)
        payload = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def fingerprint(self) -> str:
        """Hash of the files (names, sizes, mtimes), labels and preprocessing.

        Not the change time: it is also the published data fingerprint (warm starts, the
        GAN's key, model cards), which a copy of the same files (``rsync -a``) or a
        ``chmod`` must not change. So a file replaced by one of the same size and
        modification time (``cp -p`` of other content) goes unnoticed.

        Raises:
            DatasetError: If a file disappeared since it was listed.
        """
        digest = hashlib.sha256()
        digest.update(json.dumps([CACHE_FORMAT, asdict(self.prep)], sort_keys=True).encode())
        for sample, label in zip(self.samples, self.labels, strict=True):
            for path in sample:
                try:
                    stat = os.stat(path)
                except OSError as exc:
                    raise DatasetError(
                        f"cannot read {self._shown(path)!r}: {exc.strerror}"
                    ) from None
                # surrogateescape: a name that is not UTF-8 still hashes (listing refuses it).
                entry = f"{self._shown(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0"
                digest.update(entry.encode("utf-8", "surrogateescape"))
            digest.update(f"{label}\n".encode())
        return digest.hexdigest()

    def _shown(self, path: str) -> str:
        prefix = self.root.rstrip(os.sep) + os.sep
        if self.root and path.startswith(prefix):  # the usual case, without relpath's work
            return path[len(prefix) :]
        return os.path.relpath(path, self.root) if self.root else path


def cache_dir() -> Path:
    """The cache folder, from ``AUTOML_CACHE_DIR`` (default ``./automl-cache``)."""
    return current_settings().cache_dir


def load_unit(
    unit: DecodeUnit, fingerprint: str | None = None, directory: Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns a unit's decoded images and labels, decoding only on a cache miss.

    Args:
        unit: What to decode.
        fingerprint: ``unit.fingerprint()`` if already computed.
        directory: Cache folder (default: ``cache_dir()``).

    Returns:
        ``(images, labels)``: uint8 ``(N, T, C, H, W)`` and int64 ``(N,)``.

    Raises:
        DatasetError: If a file cannot be decoded; the message names it.
    """
    directory = cache_dir() if directory is None else directory
    fingerprint = fingerprint or unit.fingerprint()
    target = directory / f"{unit.slot}-{fingerprint[:32]}.pt"
    cached = _read(target)
    if cached is not None:
        logger.info("loaded %s from the cache: %d samples", unit.name, len(cached[1]))
        mark_used(target)
        return cached
    lock = FileLock(directory / f"{unit.slot}.lock")
    try:
        make_cache_dir(directory)  # a folder that cannot be made: the setting is named
        try:
            lock.acquire(timeout=0)
        except Timeout:
            logger.info("waiting for another process to decode %s", unit.name)
            lock.acquire()
    except OSError as exc:  # a full disk, a folder made read-only: the data decodes anyway
        logger.warning("not caching %s: %s", unit.name, _brief(exc))
        return _decode(unit)
    try:
        cached = _read(target)
        if cached is not None:
            logger.info(
                "loaded %s decoded by another process: %d samples", unit.name, len(cached[1])
            )
            return cached
        images, labels = _decode(unit)
        try:
            _write_atomic(target, {"x": images, "y": labels})
        except OSError as exc:  # a full disk, a folder made read-only: the data is here
            logger.warning("not caching %s: %s", unit.name, _brief(exc))
            return images, labels
        _remove_stale(directory, unit.slot, keep=target, temporaries=True)
        for slot in unit.earlier_slots():  # an upgrade leaves nothing behind
            _remove_stale(directory, slot, keep=target, temporaries=False)
    finally:
        lock.release()
    remove_unused(directory, current_settings().cache_max_age_days * DAY_S)
    return images, labels


def _decode(unit: DecodeUnit) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(
        decode_samples(unit.samples, unit.prep, root=unit.root, name=unit.name)
    )
    return images, torch.tensor(unit.labels, dtype=torch.int64)


DAY_S = 86_400.0
ARTIFACTS = "artifacts"
"""The subfolder of once-made artifacts (``automl.train.imbalance.LocalArtifactCache``)."""


def mark_used(path: Path) -> None:
    """Records that a cache file was read now (its modification time), so that
    ``remove_unused`` keeps it; a file this process may not touch keeps its time."""
    with contextlib.suppress(OSError):
        os.utime(path)


def remove_unused(directory: Path, max_age_s: float) -> list[str]:
    """Removes the cache files nobody read for ``max_age_s`` seconds: decoded units (of data
    renamed, removed, or decoded at a size no study uses any more) and once-made artifacts
    (GAN generators of old data or settings; the artifact store keeps its own copy).

    A file is removed only while its lock is free (a process writing or reading it holds
    that lock; a reader of a decoded unit that finds it gone decodes it again).

    Returns:
        The names of the files removed.
    """
    cutoff = time.time() - max_age_s
    candidates = [
        *(
            (path, directory / f"{path.name.rsplit('-', 1)[0]}.lock")
            for path in _files(directory, "*.pt")
        ),
        *((path, Path(f"{path}.lock")) for path in _files(directory / ARTIFACTS, "*.bin")),
    ]
    removed = []
    for path, lock_path in candidates:
        try:
            if path.stat().st_mtime >= cutoff:
                continue
            with FileLock(lock_path, timeout=0):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path.name)
        except (OSError, Timeout):  # gone, busy or not ours: left as it is
            continue
    if removed:
        logger.info("removed %d cache files unused for %g days", len(removed), max_age_s / DAY_S)
    return removed


def _files(directory: Path, pattern: str) -> list[Path]:
    try:
        return sorted(directory.glob(pattern))
    except OSError:
        return []


def make_cache_dir(directory: Path) -> None:
    """Creates the cache folder (and its parents) if missing.

    Raises:
        DatasetError: If it cannot be created, e.g. a parent is a file:
            ``cannot use the cache folder 'notadir/cache' (AUTOML_CACHE_DIR): Not a
            directory``.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unusable(directory, exc) from None


def _unusable(directory: Path, exc: OSError) -> Exception:
    """The error for a cache folder that cannot be created or written in; a full disk
    stays itself (an outage the worker waits out, not a setting to fix)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return exc
    # mkdir(exist_ok=True) says "File exists" when the folder's own name is a file.
    reason = "it is a file" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
    return DatasetError(unusable_folder("cache folder", directory, "AUTOML_CACHE_DIR", reason))


def _read(path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not path.exists():
        return None
    try:
        payload = torch.load(path, weights_only=True, mmap=True)
        images, labels = payload["x"], payload["y"]
        if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)):
            raise TypeError("not a pair of tensors")
        if images.dtype != torch.uint8 or len(images) != len(labels):
            raise ValueError(f"{len(images)} {images.dtype} images, {len(labels)} labels")
        return images, labels
    except FileNotFoundError:
        return None  # removed as unused meanwhile: decoded again
    except Exception as exc:  # torch.load of a damaged file raises about anything
        # The type only: torch's text advises loading the file unsafely.
        reason = type(exc).__name__
        logger.warning("ignoring damaged cache file %s (decoded again): %s", path.name, reason)
        return None


def _brief(exc: BaseException) -> str:
    """The error's type and the start of its first line (torch's errors run over lines)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:100]}" if lines else type(exc).__name__


def _write_atomic(path: Path, payload: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def _remove_stale(directory: Path, slot: str, keep: Path, temporaries: bool) -> None:
    """Removes a slot's other cache files and, with ``temporaries``, the temporary files
    of killed writes: only for the slot whose lock the caller holds (every writer of a
    slot holds its lock; an older version's worker may be writing an earlier slot)."""
    killed = directory.glob(f".{slot}-*.pt.*.tmp") if temporaries else ()
    for stale in (*directory.glob(f"{slot}-*.pt"), *killed):
        if stale != keep:
            logger.info("removing stale cache file %s", stale.name)
            stale.unlink(missing_ok=True)


def units_fingerprint(fingerprints: Sequence[str], *extra: object) -> str:
    """Combines unit fingerprints and split options into one data fingerprint."""
    payload = json.dumps([list(fingerprints), *extra], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
