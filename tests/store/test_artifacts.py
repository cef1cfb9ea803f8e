"""Artifact stores: the SQL table and the local folder, both all-or-nothing."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from optuna.artifacts.exceptions import ArtifactNotFound

from automl.store import FolderArtifactStore, SqlArtifactStore, Store, artifacts
from automl.store.artifacts import ArtifactStore


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
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["x"]
    with pytest.raises(ValueError, match="invalid artifact id"):
        folder.write("../outside", io.BytesIO(b"1"))
