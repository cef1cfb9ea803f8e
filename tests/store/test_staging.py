"""Files staged for ``upload_artifact`` (``automl.store.staging``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

from automl.store.staging import SCRATCH_PREFIX, remove_orphans, staged_file


def test_a_staged_file_has_its_name_and_bytes_and_is_gone_after() -> None:
    with staged_file("model_card.json", b"{}\n") as path:
        staged = Path(path)
        assert (staged.name, staged.read_bytes()) == ("model_card.json", b"{}\n")
    assert not staged.exists()


def test_threads_staging_one_name_at_once_keep_their_own_bytes() -> None:
    inside = threading.Barrier(2)
    seen: dict[int, bytes] = {}

    def stage(n: int) -> None:
        with staged_file("model.safetensors", bytes([n]) * 1000) as path:
            inside.wait(timeout=10)  # both files exist now
            seen[n] = Path(path).read_bytes()
            inside.wait(timeout=10)

    threads = [threading.Thread(target=stage, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {1: b"\x01" * 1000, 2: b"\x02" * 1000}


def test_a_scratch_folder_removed_meanwhile_is_made_again_elsewhere() -> None:
    """A reviewer: made again by its old name, it could be a folder another user made
    there since, who could then swap the weights before they are uploaded."""
    with staged_file("a.json", b"1") as path:
        root = Path(path).parent.parent
    shutil.rmtree(root)  # as a cleaner of /tmp would
    root.mkdir(mode=0o777)  # and someone else's folder by its name
    root.chmod(0o777)
    with staged_file("a.json", b"2") as path:
        assert Path(path).read_bytes() == b"2"
        assert Path(path).parent.parent != root
        assert Path(path).parent.parent.stat().st_mode & 0o777 == 0o700
    root.rmdir()


def test_the_scratch_folders_of_processes_gone_are_removed(tmp_path: Path) -> None:
    """A process killed with SIGKILL leaves its scratch folder: the next one removes it."""
    dead_pid = _ended_pid()
    orphan = tmp_path / f"{SCRATCH_PREFIX}{dead_pid}-abc"
    (orphan / "1-2").mkdir(parents=True)
    (orphan / "1-2" / "model.safetensors").write_bytes(b"x")
    live = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-def"
    live.mkdir()
    unrelated = tmp_path / f"{SCRATCH_PREFIX}notes"
    unrelated.mkdir()

    assert remove_orphans(tmp_path) == [orphan.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unrelated.name])


def _ended_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
