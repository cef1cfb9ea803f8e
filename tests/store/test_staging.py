"""Files staged for ``upload_artifact`` (``automl.store.staging``)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from automl.store.staging import staged_file


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


def test_a_scratch_folder_removed_meanwhile_is_made_again() -> None:
    with staged_file("a.json", b"1") as path:
        root = Path(path).parent.parent
    shutil.rmtree(root)  # as a cleaner of /tmp would
    with staged_file("a.json", b"2") as path:
        assert Path(path).read_bytes() == b"2"
