"""Dataset paths stay inside AUTOML_DATA_ROOT: the traversal corpus is refused at submit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from automl.data.errors import DatasetError
from automl.data.paths import confine
from automl.spec import SpecError, validate_spec
from tests.api.conftest import close_client, make_client
from tests.data.conftest import write_class_folder

SOURCES = ["image_folder", "image_csv", "frame_sequences", "mnist"]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A real class folder next to the data root, so a path that reaches it would load."""
    folder = tmp_path / "outside"
    write_class_folder(folder, {"a": 2, "b": 2})
    (folder / "list.csv").write_text("path,label\na/0.png,a\nb/0.png,b\n")
    return folder


def traversal_corpus(root: Path, outside: Path) -> dict[str, str]:
    """Ways to name ``outside`` (a sibling of ``root``)."""
    (root / "link_out").symlink_to(outside, target_is_directory=True)
    (root / "inner").mkdir()
    return {
        "dotdot": "../outside",
        "dotdot-inside": "inner/../../outside",
        "absolute": str(outside),
        "absolute-etc": "/etc",
        "symlink-out": "link_out",
        "symlink-out-below": "link_out/a",
        "percent-dots": "%2e%2e/outside",
        "percent-slash": "..%2Foutside",
        "percent-upper": "%2E%2E%2Foutside",
        "double-encoded": "%252e%252e/outside",
        "nul": "inner\x00/../outside",
        "empty": "",
    }


def snapshot(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.mark.parametrize("source", SOURCES)
def test_traversal_corpus_refused_at_submit(
    data_root: Path, outside: Path, tmp_path: Path, source: str
) -> None:
    corpus = traversal_corpus(data_root, outside)
    before = snapshot(tmp_path)
    for name, path in corpus.items():
        value = path if source != "image_csv" or not path else f"{path}/list.csv"
        dataset = {"source": source, "options": {"path": value}}
        fixed = {"model": "frame_pool"} if source == "frame_sequences" else {}
        with pytest.raises(SpecError) as caught:
            validate_spec({"name": "x", "dataset": dataset, "fixed": fixed})
        paths = [error.path for error in caught.value.errors]
        assert paths == ["dataset.options.path"], (name, caught.value)
    assert snapshot(tmp_path) == before  # nothing created, inside or outside the root
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("field", ["val_path", "test_path"])
def test_traversal_refused_in_split_paths(data_root: Path, outside: Path, field: str) -> None:
    write_class_folder(data_root / "train", {"a": 2, "b": 2})
    options = {"path": "train", field: "../outside"}
    with pytest.raises(SpecError) as caught:
        validate_spec({"name": "x", "dataset": {"source": "image_folder", "options": options}})
    assert [error.path for error in caught.value.errors] == [f"dataset.options.{field}"]
    assert "must not contain '..'" in str(caught.value)


def test_messages_name_the_problem(data_root: Path, outside: Path) -> None:
    traversal_corpus(data_root, outside)
    expectations = {
        "../outside": "must not contain '..'",
        str(outside): r"outside the data root \(AUTOML_DATA_ROOT\)",
        "link_out": "outside the data root",
        "%2e%2e/outside": "percent-encoded",
        "a\x00b": "NUL",
        "x" * 256: "name longer than 255 bytes",
        "a/" * 2048: "longer than 4095 bytes",
        "\ud800": "not valid Unicode",
    }
    for value, message in expectations.items():
        with pytest.raises(DatasetError, match=message):
            confine(value)


@pytest.mark.parametrize("variable", ["AUTOML_ARTIFACTS_DIR", "AUTOML_CACHE_DIR"])
def test_automl_own_folders_under_the_data_root_are_refused(
    data_root: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """Found by a security review: with the data root above automl's own folders (``.``),
    a spec could read every project's weights (``pretrained``) or decoded images."""
    own = data_root / "automl-own"
    write_class_folder(own / "pets", {"cat": 2, "dog": 2})
    write_class_folder(data_root / "automl-own-not", {"cat": 2, "dog": 2})
    monkeypatch.setenv(variable, str(own))
    (data_root / "link_in").symlink_to(own / "pets", target_is_directory=True)

    for value in ("automl-own/pets", str(own / "pets" / "cat" / "0.png"), "link_in"):
        with pytest.raises(DatasetError, match=rf"is in automl's own folder \({variable}\)"):
            confine(value)
    assert confine("automl-own-not") == data_root / "automl-own-not"
    assert confine(".") == data_root  # the root itself still holds the user's data
    with pytest.raises(SpecError, match=r"dataset\.options\.path: 'automl-own/pets' is in "):
        validate_spec(
            {
                "name": "x",
                "dataset": {"source": "image_folder", "options": {"path": "automl-own/pets"}},
            }
        )


def test_symlinked_file_pointing_out_is_refused(data_root: Path, outside: Path) -> None:
    write_class_folder(data_root / "pets", {"cat": 2, "dog": 2})
    os.symlink(outside / "a" / "0.png", data_root / "pets" / "cat" / "stolen.png")
    with pytest.raises(SpecError, match=r"dataset\.options\.path: 'pets/cat/stolen.png' is a "):
        validate_spec(
            {"name": "x", "dataset": {"source": "image_folder", "options": {"path": "pets"}}}
        )


def test_csv_rows_cannot_escape(data_root: Path, outside: Path) -> None:
    (data_root / "lists").mkdir()
    for row in ("../../outside/a/0.png", str(outside / "a" / "0.png"), "%2e%2e/x.png"):
        (data_root / "lists" / "l.csv").write_text(f"path,label\n{row},a\n")
        with pytest.raises(SpecError) as caught:
            validate_spec(
                {
                    "name": "x",
                    "dataset": {"source": "image_csv", "options": {"path": "lists/l.csv"}},
                }
            )
        assert caught.value.errors[0].path == "dataset.options.path"
        assert "l.csv line 2" in str(caught.value)


def test_inside_paths_are_accepted(data_root: Path) -> None:
    write_class_folder(data_root / "pets", {"cat": 2, "dog": 2})
    (data_root / "alias").symlink_to(data_root / "pets", target_is_directory=True)
    for value in ("pets", "./pets", str(data_root / "pets"), "alias", "pets/"):
        validate_spec(
            {"name": "x", "dataset": {"source": "image_folder", "options": {"path": value}}}
        )


def test_api_answers_422_naming_the_field(
    data_root: Path, outside: Path, sqlite_url: str, tmp_path: Path
) -> None:
    client = make_client(sqlite_url, tmp_path / "artifacts")
    try:
        spec = {
            "name": "x",
            "dataset": {"source": "image_folder", "options": {"path": "../outside"}},
        }
        response = client.post("/studies", json=spec)
    finally:
        close_client(client)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [item["path"] for item in detail] == ["dataset.options.path"]
    assert detail[0]["loc"] == ["body", "dataset", "options", "path"]


def folder_spec(path: str) -> dict[str, object]:
    return {"name": "x", "dataset": {"source": "image_folder", "options": {"path": path}}}


def test_symlink_loops_are_refused_or_skipped(data_root: Path) -> None:
    write_class_folder(data_root / "pets", {"cat": 2, "dog": 2})
    os.symlink("emu", data_root / "pets" / "emu")  # loops like a dangling link: skipped
    os.symlink("loop.png", data_root / "pets" / "cat" / "loop.png")
    validate_spec(folder_spec("pets"))
    os.symlink("selfloop", data_root / "selfloop")
    with pytest.raises(SpecError) as caught:
        validate_spec(folder_spec("selfloop"))
    assert [str(error) for error in caught.value.errors] == [
        "dataset.options.path: 'selfloop' is a symlink loop"
    ]
    (data_root / "list.csv").write_text("path,label\npets/cat/0.png,cat\npets/cat/loop.png,dog\n")
    with pytest.raises(SpecError) as caught:
        validate_spec(
            {"name": "x", "dataset": {"source": "image_csv", "options": {"path": "list.csv"}}}
        )
    assert [str(error) for error in caught.value.errors] == [
        "dataset.options.path: list.csv line 3: 'pets/cat/loop.png' is a symlink loop"
    ]


def test_symlink_loop_is_a_422_over_the_api(
    data_root: Path, sqlite_url: str, tmp_path: Path
) -> None:
    os.symlink("selfloop", data_root / "selfloop")
    client = make_client(sqlite_url, tmp_path / "artifacts")
    try:
        response = client.post("/studies", json=folder_spec("selfloop"))
    finally:
        close_client(client)
    assert response.status_code == 422
    assert [item["path"] for item in response.json()["detail"]] == ["dataset.options.path"]


def test_unreadable_class_folder_is_refused(data_root: Path) -> None:
    write_class_folder(data_root / "pets", {"cat": 2, "dog": 2})
    locked = data_root / "pets" / "dog"
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: permissions do not apply")
        with pytest.raises(SpecError) as caught:
            validate_spec(folder_spec("pets"))
    finally:
        locked.chmod(0o755)
    assert [str(error) for error in caught.value.errors] == [
        "dataset.options.path: cannot list folder 'pets/dog': Permission denied"
    ]


def test_folder_that_cannot_be_listed_is_refused(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_class_folder(data_root / "pets", {"cat": 2, "dog": 2})
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        if Path(path).name == "dog":  # as for a folder of another user, even under root
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SpecError) as caught:
        validate_spec(folder_spec("pets"))
    assert [str(error) for error in caught.value.errors] == [
        "dataset.options.path: cannot list folder 'pets/dog': Permission denied"
    ]


def test_names_that_are_not_utf8_are_refused_naming_them(data_root: Path) -> None:
    write_class_folder(data_root / "pets", {"cat": 2, "dog": 2})
    cat = os.fsencode(data_root / "pets" / "cat")
    os.rename(cat + b"/0.png", cat + b"/caf\xe9.png")
    with pytest.raises(SpecError) as caught:
        validate_spec(folder_spec("pets"))
    assert [str(error) for error in caught.value.errors] == [
        "dataset.options.path: the name of 'pets/cat/caf\\xe9.png' is not valid UTF-8; rename it"
    ]
    os.rename(cat + b"/caf\xe9.png", cat + b"/0.png")
    os.rename(cat, cat[:-3] + b"ch\xe2t")
    with pytest.raises(SpecError, match=r"the name of 'pets/ch\\xe2t' is not valid UTF-8"):
        validate_spec(folder_spec("pets"))
    os.rename(os.fsencode(data_root / "pets"), os.fsencode(data_root) + b"/p\xe9ts")
    os.symlink(b"p\xe9ts", os.fsencode(data_root / "alias"))
    with pytest.raises(SpecError, match=r"'alias' leads to 'p\\xe9ts', a name that is not valid"):
        validate_spec(folder_spec("alias"))
