"""Unpacking a downloaded bundle (``unpack_bundle``): flat files only, a card required,
and nothing unpacked from an archive that is not a bundle or would unpack too large."""

from __future__ import annotations

import errno
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from automl.cli import bundle_commands
from automl.cli.bundle_commands import unpack_bundle
from automl.cli.errors import CliError

CARD = json.dumps({"study": 1}).encode()


def archive(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of ``members``, deflated (as the API sends bundles) unless ``method`` says;
    the same bytes at every call (a fixed time: pytest-xdist's workers must collect the
    same parameters, and the clock's two-second step once told them apart)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as zipped:
        for name, content in members.items():
            member = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            member.compress_type = method
            member.external_attr = 0o600 << 16
            zipped.writestr(member, content)
    return buffer.getvalue()


def _corrupt(data: bytes) -> bytes:
    """``data`` with bytes of its first member's compressed data flipped (a reviewer:
    zlib's error escaped as a traceback)."""
    start = 30 + len("model_card.json") + 4  # past the local header and the name
    return data[:start] + bytes(b ^ 0xFF for b in data[start : start + 8]) + data[start + 8 :]


def test_a_bundle_is_unpacked_flat_with_its_card(tmp_path: Path) -> None:
    data = archive({"model_card.json": CARD, "model.onnx": b"onnx"})

    written, card = unpack_bundle(data, tmp_path / "out")

    assert [path.name for path in written] == ["model.onnx", "model_card.json"]
    assert card == {"study": 1}
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"onnx"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a zip", "the download is not a readable zip file"),
        (archive({"model_card.json": b"{not json"}), "the download's model card is not JSON"),
        (archive({"model_card.json": b"[1]"}), "model card is not a JSON object"),
        (_corrupt(archive({"model_card.json": CARD * 50})), "not a readable zip file"),
        (
            archive({"model_card.json": CARD}, zipfile.ZIP_BZIP2),
            r"the download is not a model bundle \(compression\)",
        ),
        (archive({"model.onnx": b"x"}), "the download is not a model bundle"),
        (
            archive({"model_card.json": CARD, "../evil.py": b"x"}),
            "the download is not a model bundle",
        ),
        (archive({"model_card.json": CARD, "a/b.txt": b"x"}), "the download is not a model bundle"),
    ],
    ids=["not_zip", "card_not_json", "card_not_object", "corrupt", "bzip2", "no_card", "up", "sub"],
)
def test_what_is_not_a_bundle_writes_nothing(data: bytes, message: str, tmp_path: Path) -> None:
    with pytest.raises(CliError, match=message):
        unpack_bundle(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.py").exists()


def test_an_archive_that_unpacks_too_large_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: a zip bomb from a hostile server was read whole into memory."""
    bomb = archive({"model_card.json": CARD, "model.onnx": bytes(2**20)})  # 1 MiB of zeros
    assert len(bomb) < 2**20 // 100
    monkeypatch.setattr(bundle_commands, "MAX_UNPACKED_BYTES", 2**20)

    with pytest.raises(CliError, match=r"unpacks to 1,048,\d+ bytes, more than a model bundle"):
        unpack_bundle(bomb, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_member_longer_than_it_declares_is_refused_without_reading_it_all(
    tmp_path: Path,
) -> None:
    """A reviewer: the cap trusted the declared sizes; a member declaring 10 bytes held
    600 MiB (bzip2, decompressed whole). Deflate is read no further than declared."""
    data = bytearray(archive({"model_card.json": CARD, "model.onnx": bytes(2**20)}))
    declared = (2**20).to_bytes(4, "little")
    for start in range(len(data) - 3):  # the sizes in the local and central headers
        if data[start : start + 4] == declared:
            data[start : start + 4] = (10).to_bytes(4, "little")

    with pytest.raises(CliError, match="not a readable zip file"):
        unpack_bundle(bytes(data), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_full_disk_leaves_nothing_that_would_refuse_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: a full disk left a 0-byte model.onnx, and the retry said the
    folder was not empty."""
    data = archive({"model_card.json": CARD, "model.onnx": b"onnx", "predict.py": b"print()"})
    real_write = Path.write_bytes

    def full_at_the_second(path: Path, content: bytes) -> int:
        if any((tmp_path / "out").iterdir()):
            path.touch()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(path, content)

    monkeypatch.setattr(Path, "write_bytes", full_at_the_second)
    with pytest.raises(CliError) as caught:
        unpack_bundle(data, tmp_path / "out")
    assert caught.value.code == 1
    assert str(caught.value) == f"cannot write {tmp_path / 'out'}: No space left on device"
    assert list((tmp_path / "out").iterdir()) == []


def test_a_failed_overwrite_removes_only_what_it_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer: the clean-up of a failed write deleted a file of the user's that the
    write never touched."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "predict.py").write_text("the user's")
    data = archive({"model_card.json": CARD, "predict.py": b"print()", "z.onnx": b"onnx"})
    real_replace = os.replace

    def refuse_the_users(source: Any, target: Any) -> None:
        if Path(target).name == "predict.py":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", refuse_the_users)
    with pytest.raises(CliError) as caught:
        unpack_bundle(data, out)
    assert caught.value.code == 2
    assert str(caught.value) == f"cannot write {out / 'predict.py'}: Permission denied"
    assert sorted(p.name for p in out.iterdir()) == ["predict.py"]  # no hidden file either
    assert (out / "predict.py").read_text() == "the user's"


def test_a_download_that_fails_to_write_leaves_the_earlier_bundle_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: ``--overwrite`` removed the earlier bundle's files first, so a
    write that failed halfway (a full disk) left parts of two bundles, or none."""
    out = tmp_path / "out"
    earlier = {"model_card.json": CARD, "model.onnx": b"old onnx", "predict.py": b"old"}
    unpack_bundle(archive(earlier), out)
    newer = {"model_card.json": CARD, "model.safetensors": b"new", "predict.py": b"new"}
    real_write = Path.write_bytes

    def full_at_the_second(path: Path, content: bytes) -> int:
        if "predict.py" in path.name and content == b"new":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(path, content)

    monkeypatch.setattr(Path, "write_bytes", full_at_the_second)
    with pytest.raises(CliError) as caught:
        unpack_bundle(archive(newer), out, replace=True)
    assert caught.value.code == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier

    monkeypatch.undo()
    written, _ = unpack_bundle(archive(newer), out, replace=True)
    assert [p.name for p in written] == sorted(newer)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == newer  # model.onnx went


def test_the_bundle_files_are_the_ones_a_bundle_is_built_with() -> None:
    """The thin CLI's copy of the names (an export's ``--overwrite`` replaces only these)."""
    from automl.delivery import bundle

    built = {
        bundle.WEIGHTS_FILE,
        bundle.CARD_FILE,
        bundle.ONNX_FILE,
        bundle.TORCHSCRIPT_FILE,
        bundle.PREDICT_FILE,
    }
    assert built == bundle_commands.BUNDLE_FILES


def test_an_earlier_bundle_is_removed_with_none_of_a_users_files(tmp_path: Path) -> None:
    """``--overwrite``: a new bundle without an ONNX file left the earlier one's beside
    it, and an export removed a whole ``model/`` folder, a user's files included."""
    earlier, own, linked = tmp_path / "earlier", tmp_path / "own", tmp_path / "linked"
    for folder in (earlier, own):
        folder.mkdir()
        (folder / "predict.py").write_text("mine")
        (folder / "notes.txt").write_text("mine")
    (earlier / "model_card.json").write_text("{}")
    (earlier / "model.onnx").write_bytes(b"onnx")
    linked.symlink_to(earlier)

    assert not bundle_commands.remove_earlier_bundle(linked)  # a link: not followed
    assert bundle_commands.remove_earlier_bundle(earlier)
    assert not bundle_commands.remove_earlier_bundle(own)  # no model card: no bundle

    assert sorted(p.name for p in earlier.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in own.iterdir()) == ["notes.txt", "predict.py"]


def test_a_new_bundle_replaces_the_earlier_one_only_once_it_reads(tmp_path: Path) -> None:
    """A review: ``--overwrite`` removed the earlier bundle before the new download was
    read, so a broken one left nothing; a tester: a file the new bundle lacks stayed."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_card.json").write_text("{}")
    (folder / "model.onnx").write_bytes(b"onnx")

    (folder / "notes.txt").write_text("mine")

    with pytest.raises(CliError, match="not a readable zip"):
        unpack_bundle(b"not a zip", folder, replace=True)
    kept = sorted(p.name for p in folder.iterdir())
    unpack_bundle(archive({"model_card.json": CARD}), folder, replace=True)  # no ONNX now

    assert kept == ["model.onnx", "model_card.json", "notes.txt"]
    assert sorted(p.name for p in folder.iterdir()) == ["model_card.json", "notes.txt"]


def test_a_download_interrupted_by_ctrl_c_leaves_no_hidden_part_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer: Ctrl-C while the files were written left hidden parts (hundreds of MB
    for a large model) that made the folder "not empty" to the next download."""
    out = tmp_path / "out"
    real_write = Path.write_bytes

    def interrupted(path: Path, content: bytes) -> int:
        if "predict.py" in path.name:
            raise KeyboardInterrupt
        return real_write(path, content)

    monkeypatch.setattr(Path, "write_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        unpack_bundle(archive({"model_card.json": CARD, "predict.py": b"print()"}), out)
    assert list(out.iterdir()) == []
