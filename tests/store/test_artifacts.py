"""Artifact stores: the SQL table and the local folder, both all-or-nothing."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import create_trial

from automl.store import FolderArtifactStore, SqlArtifactStore, Store, artifacts, attrs, open_store
from automl.store.artifacts import ArtifactStore
from automl.store.reaper import Reaper


@pytest.fixture(params=["sql", "folder"])
def artifact_store(request: pytest.FixtureRequest, store: Store, tmp_path: Path) -> ArtifactStore:
    """The SQL store in each database, and the folder store."""
    if request.param == "sql":
        return SqlArtifactStore(store.engine, store.read_engine)
    return FolderArtifactStore(tmp_path / "folder")


def test_round_trip_overwrite_and_remove(
    artifact_store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts, "CHUNK_BYTES", 1000)  # several chunks
    blob = os.urandom(3500)
    artifact_store.write("a-1", io.BytesIO(blob))
    with artifact_store.open_reader("a-1") as reader:
        assert reader.read() == blob

    artifact_store.write("a-1", io.BytesIO(b"short"))
    with artifact_store.open_reader("a-1") as reader:
        assert reader.read() == b"short"
    artifact_store.write("empty", io.BytesIO(b""))
    with artifact_store.open_reader("empty") as reader:
        assert reader.read() == b""

    artifact_store.remove("a-1")
    with pytest.raises(ArtifactNotFound):
        artifact_store.open_reader("a-1")
    with pytest.raises(ArtifactNotFound):
        artifact_store.remove("a-1")


def test_artifact_size_is_known_before_reading(artifact_store: ArtifactStore) -> None:
    blob = os.urandom(2500)
    artifact_store.write("a-1", io.BytesIO(blob))
    artifact_store.write("empty", io.BytesIO(b""))

    with artifact_store.open_reader("a-1") as reader:
        assert artifacts.artifact_size(reader) == 2500
        assert reader.read() == blob  # the size read nothing
    with artifact_store.open_reader("empty") as reader:
        assert artifacts.artifact_size(reader) == 0


def test_artifact_size_is_unknown_for_a_stream_without_a_file() -> None:
    class Stream(io.RawIOBase):
        def readable(self) -> bool:
            return True

    assert artifacts.artifact_size(io.BufferedReader(Stream())) is None


class _Broken(io.RawIOBase):
    """A body that fails half way through."""

    def __init__(self) -> None:
        self.calls = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls > 1:
            raise OSError("disk gone")
        return b"x" * 1000


def test_a_failed_write_leaves_the_old_content(
    artifact_store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts, "CHUNK_BYTES", 1000)
    artifact_store.write("a-1", io.BytesIO(b"old"))
    with pytest.raises(OSError, match="disk gone"):
        artifact_store.write("a-1", _Broken())  # type: ignore[arg-type]
    with artifact_store.open_reader("a-1") as reader:
        assert reader.read() == b"old"
    with pytest.raises(ArtifactNotFound):
        artifact_store.open_reader("never")


def test_folder_store_leaves_no_temporary_files_and_refuses_escapes(tmp_path: Path) -> None:
    folder = FolderArtifactStore(tmp_path / "art")
    folder.write("x", io.BytesIO(b"1"))
    with pytest.raises(OSError):
        folder.write("y", _Broken())  # type: ignore[arg-type]
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == [".sha256-x", "x"]
    for escape in ("../outside", "a/b", "a\\b", "..", ".", "", "a\0"):
        with pytest.raises(ValueError, match="invalid artifact id"):
            folder.write(escape, io.BytesIO(b"1"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_folder_store_writes_unsynced_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Model cards: a convenience, whose two syncs were most of a trial's card write."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    folder = FolderArtifactStore(tmp_path / "art")
    folder.write("quick", io.BytesIO(b"card"), durable=False)
    assert synced == []
    folder.write("kept", io.BytesIO(b"weights"))
    assert len(synced) == 2  # the file, then the folder (its rename)
    with folder.open_reader("quick") as reader:
        assert reader.read() == b"card"  # and checked against its digest
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == [
        ".sha256-kept",
        ".sha256-quick",
        "kept",
        "quick",
    ]


def _flip_a_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_folder_store_refuses_bytes_not_those_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file changed on disk (same size, one byte) is refused once read to its end; a
    file written before digests were recorded is read as it is; a removal takes the
    digest with it."""
    monkeypatch.setattr(artifacts, "CHUNK_BYTES", 1000)
    folder = FolderArtifactStore(tmp_path / "art")
    blob = os.urandom(3500)
    for name in ("damaged", "older", "kept"):
        folder.write(name, io.BytesIO(blob))
    _flip_a_byte(tmp_path / "art" / "damaged", 2000)
    (tmp_path / "art" / ".sha256-older").unlink()
    _flip_a_byte(tmp_path / "art" / "older", 2000)

    with folder.open_reader("damaged") as reader:
        assert len(reader.read(1000)) == 1000  # the check comes at the end
        with pytest.raises(artifacts.ArtifactDamagedError, match="artifact damaged is damaged"):
            reader.read()
    with folder.open_reader("older") as reader:
        assert len(reader.read()) == 3500
    with folder.open_reader("kept") as reader:
        assert reader.read() == blob
    digest = tmp_path / "art" / ".sha256-kept"
    digest.write_bytes(b"\x00" * 65)  # its unsynced write cut off by a crash: no digest
    with folder.open_reader("kept") as reader:
        assert reader.read() == blob
    digest.write_text("0" * 64 + "\n")  # a digest, but not this file's
    with folder.open_reader("kept") as reader, pytest.raises(artifacts.ArtifactDamagedError):
        reader.read()

    for name in ("damaged", "older", "kept"):
        folder.remove(name)
    assert list((tmp_path / "art").iterdir()) == []


def test_a_damaged_checkpoint_is_not_used(tmp_path: Path) -> None:
    folder = FolderArtifactStore(tmp_path / "art")
    artifact_id = artifacts.write_checkpoint(folder, 1, 2, b"checkpoint bytes")
    assert artifacts.read_checkpoint(folder, artifact_id) == b"checkpoint bytes"
    _flip_a_byte(tmp_path / "art" / artifact_id, 3)
    assert artifacts.read_checkpoint(folder, artifact_id) is None


KILLED_WRITER = """
import sys, time
from automl.store import FolderArtifactStore

class Endless:
    def read(self, size):
        time.sleep(0.01)
        return b"w" * 1024

FolderArtifactStore(sys.argv[1]).write("weights-1", Endless())
"""


def _killed_write(directory: Path) -> Path:
    """Runs a write in another process and kills it with SIGKILL halfway."""
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(directory)])
    try:
        deadline = time.monotonic() + 60
        while not list(directory.glob(".tmp-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        writer.kill()
        writer.wait()
    (left,) = directory.glob(".tmp-*")
    return left


def test_the_temporary_file_of_a_killed_write_is_removed_once_stale(tmp_path: Path) -> None:
    folder = FolderArtifactStore(tmp_path / "art")
    folder.write("kept", io.BytesIO(b"1"))
    left = _killed_write(tmp_path / "art")
    assert folder.remove_stale_temporaries() == []  # maybe a live write: it is recent
    hour_ago = time.time() - artifacts.STALE_TEMPORARY_S - 1
    os.utime(left, (hour_ago, hour_ago))
    assert folder.remove_stale_temporaries() == [left.name]
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == [".sha256-kept", "kept"]
    # A writer killed between its digest and its rename leaves the digest alone.
    lone = tmp_path / "art" / ".sha256-never-renamed"
    lone.write_text("0" * 64 + "\n")
    os.utime(lone, (hour_ago, hour_ago))
    os.utime(tmp_path / "art" / ".sha256-kept", (hour_ago, hour_ago))
    assert folder.remove_stale_temporaries() == [lone.name]
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == [".sha256-kept", "kept"]


def test_a_reaper_sweeps_the_folder_store_on_its_first_pass_then_hourly(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", artifacts_dir=tmp_path / "art")
    stale = tmp_path / "art" / ".tmp-killed"

    def leave_stale_file() -> None:
        stale.write_bytes(b"half")
        hour_ago = time.time() - artifacts.STALE_TEMPORARY_S - 1
        os.utime(stale, (hour_ago, hour_ago))

    try:
        reaper = Reaper(store, grace=60, interval=3600)
        leave_stale_file()
        reaper.run_once()
        assert not stale.exists()
        leave_stale_file()
        reaper.run_once()
        assert stale.exists()  # the next sweep is an hour away
        reaper._sweep_due = time.monotonic()  # an hour later
        reaper.run_once()
        assert not stale.exists()
    finally:
        store.close()


def test_damaged_weights_name_what_remakes_them() -> None:
    """Found by a tester: a damaged refit's weights were called trial N's, to enqueue."""
    trial = create_trial(value=0.5)
    trial.number = 2
    assert artifacts.damaged_weights(trial).startswith("the weights of trial 2 are damaged")
    assert "automl enqueue" in artifacts.damaged_weights(trial)
    trial.user_attrs[attrs.REFIT] = {"epochs": 3}
    refit = artifacts.damaged_weights(trial)
    assert refit.startswith("the weights of the refit of trial 2 are damaged")
    assert refit.endswith("automl refit trains it again")
