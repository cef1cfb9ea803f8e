"""Once-made artifacts (GAN generators) are shared by every machine through the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.artifacts.exceptions import ArtifactNotFound

from automl.store import FolderArtifactStore, Store
from automl.store.shared_artifacts import shared_artifact_id
from automl.train.imbalance import LocalArtifactCache
from automl.worker.shared_cache import SharedArtifactCache


def test_a_second_machine_reads_what_the_first_made(store: Store, tmp_path: Path) -> None:
    made: list[str] = []

    def make(machine: str) -> bytes:
        made.append(machine)
        return b"generator" * 1000

    uses: list[tuple[str, str]] = []
    first = SharedArtifactCache(
        store.artifacts,
        LocalArtifactCache(tmp_path / "machine-1"),
        on_use=lambda key: uses.append(("one", key)) or True,
    )
    second = SharedArtifactCache(
        store.artifacts,
        LocalArtifactCache(tmp_path / "machine-2"),
        on_use=lambda key: uses.append(("two", key)) or True,
    )

    assert first.get_or_create("gan-abc-0-400", lambda: make("one")) == b"generator" * 1000
    assert second.get_or_create("gan-abc-0-400", lambda: make("two")) == b"generator" * 1000
    assert first.get_or_create("gan-abc-0-400", lambda: make("one again")) == b"generator" * 1000
    assert made == ["one"]
    # Another key is another artifact.
    assert second.get_or_create("gan-abc-1-400", lambda: b"other") == b"other"
    # Each use is recorded once, before the artifact is read or made (which keeps it).
    assert uses == [("one", "gan-abc-0-400"), ("two", "gan-abc-0-400"), ("two", "gan-abc-1-400")]


def test_what_a_study_could_not_record_using_stays_on_its_machine(
    store: Store, tmp_path: Path
) -> None:
    """A shared copy that no study records would stay in the store for good."""
    unrecorded = SharedArtifactCache(
        store.artifacts, LocalArtifactCache(tmp_path / "machine"), on_use=lambda key: False
    )

    assert unrecorded.get_or_create("gan-abc-0-400", lambda: b"local") == b"local"

    assert (tmp_path / "machine" / "gan-abc-0-400.bin").read_bytes() == b"local"
    with pytest.raises(ArtifactNotFound):
        store.artifacts.open_reader(shared_artifact_id("gan-abc-0-400"))


def test_a_damaged_shared_copy_is_made_again(tmp_path: Path) -> None:
    folder = FolderArtifactStore(tmp_path / "art")
    first = SharedArtifactCache(folder, LocalArtifactCache(tmp_path / "machine-1"))
    assert first.get_or_create("gan-abc-0-400", lambda: b"generator") == b"generator"
    (tmp_path / "art" / shared_artifact_id("gan-abc-0-400")).write_bytes(b"generatoR")

    second = SharedArtifactCache(folder, LocalArtifactCache(tmp_path / "machine-2"))

    assert second.get_or_create("gan-abc-0-400", lambda: b"generator") == b"generator"
    with folder.open_reader(shared_artifact_id("gan-abc-0-400")) as reader:
        assert reader.read() == b"generator"  # replaced, with its digest
