"""The decode-once disk cache: reuse, rebuild on change, two processes, parallel decoding."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from filelock import FileLock

from automl.data import DatasetError, cache, forget_loaded, load_dataset
from automl.data.decode import Preprocess, decode_samples
from tests.data.conftest import write_class_folder, write_image

OPTIONS = {"path": "pets", "size": 4}


def decode_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("decoding ")]


def cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").glob("*.pt"))


def test_second_load_reads_the_cache(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="automl.data")
    write_class_folder(data_root / "pets", {"cat": 4, "dog": 4})
    first = load_dataset("image_folder", OPTIONS)
    assert len(decode_logs(caplog)) == 1
    assert load_dataset("image_folder", OPTIONS) is first  # kept in memory
    forget_loaded()
    second = load_dataset("image_folder", OPTIONS)
    assert second is not first
    assert len(decode_logs(caplog)) == 1
    assert any("from the cache" in r.getMessage() for r in caplog.records)
    assert torch.equal(first.train_x, second.train_x) and first.fingerprint == second.fingerprint
    files = cache_files(tmp_path)
    assert len(files) == 1 and not list((tmp_path / "cache").glob(".*.tmp"))
    payload = torch.load(files[0], weights_only=True)
    assert payload["x"].dtype == torch.uint8 and payload["x"].shape == (8, 1, 3, 4, 4)


def test_changed_file_rebuilds_and_drops_the_stale_entry(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="automl.data")
    files = write_class_folder(data_root / "pets", {"cat": 4, "dog": 4})
    first = load_dataset("image_folder", OPTIONS)
    old_files = cache_files(tmp_path)
    write_image(files["cat"][0], np.full((6, 8, 3), 255, np.uint8))
    os.utime(files["cat"][0], ns=(time.time_ns(), time.time_ns() + 10**9))
    second = load_dataset("image_folder", OPTIONS)  # memory entry is stale too
    assert len(decode_logs(caplog)) == 2
    assert second.fingerprint != first.fingerprint
    assert cache_files(tmp_path) != old_files and len(cache_files(tmp_path)) == 1
    all_x = torch.cat([second.train_x, second.val_x])
    assert (all_x == 255).flatten(1).all(dim=1).sum() == 1  # the white image is in
    write_image(data_root / "pets" / "dog" / "new.png", np.zeros((6, 8, 3), np.uint8))
    third = load_dataset("image_folder", OPTIONS)
    assert len(third.train_y) + len(third.val_y) == 9


def test_an_upgrade_of_the_decoding_removes_the_earlier_versions_files(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a version bump left every earlier decoded copy in the cache for good."""
    write_class_folder(data_root / "pets", {"cat": 4, "dog": 4})
    version = cache.DECODE_VERSION
    monkeypatch.setattr(cache, "DECODE_VERSION", version - 1)
    load_dataset("image_folder", OPTIONS)
    earlier = cache_files(tmp_path)
    monkeypatch.setattr(cache, "DECODE_VERSION", version)
    forget_loaded()
    load_dataset("image_folder", OPTIONS)
    now = cache_files(tmp_path)
    assert len(earlier) == len(now) == 1 and earlier != now


def test_a_decode_removes_what_a_killed_write_of_its_unit_left(
    data_root: Path, tmp_path: Path
) -> None:
    """A writer killed mid-``torch.save`` left its temporary file (a full decoded copy)."""
    files = write_class_folder(data_root / "pets", {"cat": 4, "dog": 4})
    load_dataset("image_folder", OPTIONS)
    (written,) = cache_files(tmp_path)
    killed = written.with_name(f".{written.name}.4242.tmp")  # as _write_atomic names it
    killed.write_bytes(b"half a tensor file")
    other_unit = written.with_name(f".other-{written.name}.4242.tmp")
    other_unit.write_bytes(b"another unit's write in progress")
    write_image(files["cat"][0], np.full((6, 8, 3), 255, np.uint8))
    os.utime(files["cat"][0], ns=(time.time_ns(), time.time_ns() + 10**9))
    load_dataset("image_folder", OPTIONS)
    assert not killed.exists() and other_unit.exists()
    assert len(cache_files(tmp_path)) == 1


def test_preprocessing_options_are_part_of_the_key(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="automl.data")
    write_class_folder(data_root / "pets", {"cat": 3, "dog": 3})
    load_dataset("image_folder", OPTIONS)
    load_dataset("image_folder", {**OPTIONS, "channels": "grayscale"})
    load_dataset("image_folder", {**OPTIONS, "seed": 5})  # a new split reuses the decode
    assert len(decode_logs(caplog)) == 2
    assert len(cache_files(tmp_path)) == 2


WORKER = """
import logging, sys, time
from pathlib import Path
from typing import Any
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from automl.data import load_dataset
Path(sys.argv[2]).touch()
while not Path(sys.argv[1]).exists():
    time.sleep(0.005)
data = load_dataset("image_folder", {"path": "many", "size": 48})
print("RESULT", len(data.train_y), data.fingerprint, flush=True)
"""


def test_two_processes_decode_once(data_root: Path, tmp_path: Path) -> None:
    write_class_folder(data_root / "many", {"a": 200, "b": 200}, size=(96, 96))
    script = tmp_path / "load.py"
    script.write_text(WORKER)
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(go), str(flag)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for flag in ready
    ]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    results = {line for out in outputs for line in out.splitlines() if line.startswith("RESULT")}
    assert len(results) == 1, outputs  # same data in both
    decoders = [out for out in outputs if "decoding image_folder many (train)" in out]
    waiters = [out for out in outputs if "waiting for another process to decode" in out]
    assert len(decoders) == 1, outputs
    assert len(waiters) == 1 and waiters[0] is not decoders[0], outputs
    assert "decoded by another process" in waiters[0]


@pytest.mark.parametrize("workers", [1, 2], ids=["serial", "parallel"])
def test_every_bad_file_is_named_at_once(tmp_path: Path, workers: int) -> None:
    """Found by a tester: only the first bad file was named, so a folder with several
    took one run per file to clean up."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(20):
        path = write_image(tmp_path / f"{i:02d}.png", rng.integers(0, 256, (5, 7, 3), np.uint8))
        if i % 3 == 0:  # 7 of them
            path.write_bytes(b"not an image")
        samples.append((str(path),))
    with pytest.raises(DatasetError) as caught:
        decode_samples(
            samples, Preprocess(4, 4), root=str(tmp_path), workers=workers, min_parallel_bytes=0
        )
    why = "not a png, jpeg, webp or bmp image (or its header is damaged)"
    named = "; ".join(f"cannot decode image '{i:02d}.png': {why}" for i in (0, 3, 6, 9, 12))
    assert str(caught.value) == f"7 files cannot be used: {named}; and 2 more"


def test_parallel_decoding_matches_serial(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="automl.data")
    rng = np.random.default_rng(0)
    samples = [
        (str(write_image(tmp_path / f"{i}.png", rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))),)
        for i in range(24)
    ]
    prep = Preprocess(height=4, width=4)
    serial = decode_samples(samples, prep)
    parallel = decode_samples(samples, prep, workers=2, min_parallel_bytes=0, name="test images")
    assert parallel.shape == (24, 1, 3, 4, 4)
    assert np.array_equal(serial, parallel)
    messages = [r.getMessage() for r in caplog.records]
    assert "decoding test images: 24 samples, 24 files, 2 processes" in messages
    assert any(m.startswith("decoded test images: 12/24 (50%)") for m in messages)


def test_a_cache_folder_that_cannot_be_created_names_the_setting(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once every trial failed with "NotADirectoryError: [Errno 20] Not a directory"."""
    write_class_folder(data_root / "pets", {"cat": 2, "dog": 2})
    (tmp_path / "notadir").write_text("a file")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOML_CACHE_DIR", "notadir/cache")
    with pytest.raises(DatasetError) as caught:
        load_dataset("image_folder", OPTIONS)
    assert str(caught.value) == (
        "cannot use the cache folder 'notadir/cache' (AUTOML_CACHE_DIR): Not a directory; "
        "set AUTOML_CACHE_DIR to a folder automl can create and write in"
    )
    monkeypatch.setenv("AUTOML_CACHE_DIR", "notadir")
    with pytest.raises(DatasetError, match=r"^cannot use the cache folder 'notadir' .*: it is a"):
        load_dataset("image_folder", OPTIONS)


def _age(path: Path, days: float) -> None:
    then = time.time() - days * cache.DAY_S
    os.utime(path, (then, then))


def test_files_unused_for_the_max_age_go_when_the_cache_is_written(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: decoded units of renamed or removed folders, of sizes no study
    used any more, and GAN generators of old data stayed in the cache folder for good."""
    monkeypatch.setenv("AUTOML_CACHE_MAX_AGE_DAYS", "10")
    write_class_folder(data_root / "pets", {"cat": 4, "dog": 4})
    write_class_folder(data_root / "gone", {"cat": 4, "dog": 4})
    load_dataset("image_folder", OPTIONS)
    [used] = cache_files(tmp_path)
    load_dataset("image_folder", {"path": "gone", "size": 4})
    [gone] = set(cache_files(tmp_path)) - {used}
    artifacts = tmp_path / "cache" / cache.ARTIFACTS
    artifacts.mkdir()
    old_gan, busy_gan = artifacts / "gan-a.bin", artifacts / "gan-b.bin"
    for path in (old_gan, busy_gan):
        path.write_bytes(b"generator")
    for path in (used, gone, old_gan, busy_gan):
        _age(path, 11)
    forget_loaded()
    load_dataset("image_folder", OPTIONS)  # read now: kept, whatever its age

    with FileLock(f"{busy_gan}.lock"):  # a worker reading it
        load_dataset("image_folder", {"path": "pets", "size": 5})  # writes the cache

    left = set(cache_files(tmp_path))
    assert used in left and gone not in left and len(left) == 2
    assert not old_gan.exists() and busy_gan.exists()


def _damage_payload(path: Path) -> None:
    """Garbles the pickle inside a cache file (a zip of torch.save), leaving the rest."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, b"\x80\x02garbage" if name.endswith("data.pkl") else data)


@pytest.mark.parametrize(
    "damage",
    [
        _damage_payload,
        lambda path: path.write_bytes(b"\xff" * 64),
        lambda path: torch.save({"x": torch.zeros(3, 1, 3, 4, 4), "y": torch.zeros(2)}, path),
        lambda path: torch.save({"x": [1, 2], "y": 3}, path),
    ],
    ids=["pickle", "garbage", "mismatch", "not_tensors"],
)
def test_a_damaged_cache_file_is_decoded_again_and_replaced(
    data_root: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Any,
) -> None:
    """Found by a tester: a cache file whose pickle was garbled failed every trial on its
    data (``UnpicklingError``, with torch's advice to load it unsafely) until removed."""
    write_class_folder(data_root / "pets", {"cat": 4, "dog": 4})
    first = load_dataset("image_folder", OPTIONS)
    forget_loaded()
    [path] = cache_files(tmp_path)
    damage(path)

    caplog.set_level(logging.INFO, logger="automl.data")
    again = load_dataset("image_folder", OPTIONS)

    assert torch.equal(again.train_x, first.train_x)
    assert len(decode_logs(caplog)) == 1
    warned = [r.getMessage() for r in caplog.records if "damaged cache file" in r.getMessage()]
    assert warned and all("weights_only" not in m and "\n" not in m for m in warned)
    forget_loaded()
    caplog.clear()
    load_dataset("image_folder", OPTIONS)
    assert not decode_logs(caplog)  # the file was replaced


@pytest.mark.parametrize(
    ("where", "code"),
    [
        ("write", errno.ENOSPC),
        ("write", errno.EROFS),
        ("lock", errno.ENOSPC),
        ("lock", errno.EROFS),
        ("lock", errno.EACCES),
    ],
)
def test_a_cache_that_cannot_be_written_only_costs_the_caching(
    data_root: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    code: int,
) -> None:
    """Found by a tester: with the cache folder's disk full, every attempt was given back
    (an outage) after decoding, and claimed again at once: 295 failed trials in 95 s.
    The decoded data is in memory: training goes on without the cache file."""
    write_class_folder(data_root / "pets", {"cat": 4, "dog": 4})

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code))

    if where == "write":
        monkeypatch.setattr(cache, "_write_atomic", refuse)
    else:
        monkeypatch.setattr(FileLock, "acquire", refuse)
    caplog.set_level(logging.WARNING, logger="automl.data")
    data = load_dataset("image_folder", OPTIONS)

    assert len(data.train_y) + len(data.val_y) == 8
    assert not cache_files(tmp_path)
    [warning] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("not caching")]
    assert os.strerror(code) in warning
