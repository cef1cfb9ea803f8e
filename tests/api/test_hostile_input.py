"""The hostile-input corpus, against a real uvicorn server: each input is refused with its
documented status, nothing is created in the database or on disk, and the connection
that carried it still serves the next request."""

from __future__ import annotations

import io
import json
import logging
import pickle
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml

from automl.api import create_app
from automl.config import Limits, Settings
from automl.data.errors import DatasetError
from automl.delivery.inference import MODELS
from automl.models.transfer import CheckpointError, load_checkpoint
from automl.store import Store, attrs, get_frozen_trial
from automl.train.checkpoint import TrainState
from tests.api.conftest import served_in_thread
from tests.conftest import free_port, tiny_spec_data
from tests.data.conftest import write_class_folder
from tests.delivery.trained import png_bytes, png_declaring, train_study

HUGE_BODY_BYTES = 100 * 2**20
CHUNK = 64 * 2**10
SOCKET_SLACK = 16 * 2**20
"""A refusal "before reading it all" arrives before the limit and this much more of a
huge body is sent (what the sockets' buffers hold)."""


@dataclass
class Server:
    """A real uvicorn server in this process, over a store the test can inspect."""

    url: str
    port: int
    store: Store
    root: Path
    study_id: int

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The API on a free port, with one trained digits study to predict with."""
    root = tmp_path_factory.mktemp("hostile")
    settings = Settings(storage=f"sqlite:///{root / 'automl.db'}", artifacts_dir=root / "artifacts")
    app = create_app(settings)
    store: Store = app.state.store
    study_id = train_study(store)
    port = free_port()
    with served_in_thread(app, port):
        yield Server(f"http://127.0.0.1:{port}", port, store, root, study_id)
    store.close()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    """One client: every request of a test goes over one keep-alive connection."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def snapshot(*folders: Path) -> set[str]:
    """Every path under ``folders`` (what a refused request must leave as it was)."""
    return {str(path) for folder in folders if folder.exists() for path in folder.rglob("*")}


def study_count(http: httpx.Client) -> int:
    response = http.get("/studies")
    assert response.status_code == 200
    return int(response.json()["count"])


def local_port(response: httpx.Response) -> int:
    """The client side port of the connection that carried ``response``."""
    return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])


def messages(response: httpx.Response) -> str:
    return json.dumps(response.json()["detail"])


# --- specs ----------------------------------------------------------------------------------

NESTED = "[" * 100_000 + "]" * 100_000
BILLION_LAUGHS = "name: lol\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{key}: &{key} [{', '.join([f'*{previous}'] * 10)}]\n"
    for previous, key in zip("abcdefgh", "bcdefghi", strict=True)
)
"""Nine levels of ten aliases: a billion strings once expanded, 700 bytes as text."""


def billion_cell_grid() -> dict[str, Any]:
    params = {f"p{index}": {"type": "int", "low": 0, "high": 999, "step": 1} for index in range(3)}
    return tiny_spec_data(sampler={"name": "grid"}, params=params, budget={"n_trials": 10})


def tagged_spec(field: str, line: str) -> str:
    """A valid tiny spec as YAML with ``field`` replaced by ``line``, which writes it (or
    its alternative) as an explicitly tagged node."""
    rest = {key: value for key, value in tiny_spec_data().items() if key != field}
    return yaml.safe_dump(rest, sort_keys=False) + line + "\n"


TAGGED = {
    "binary": ("name", "name: !!binary aGVsbG8="),
    "set": ("fixed", "fixed: !!set {epochs, width}"),
    "timestamp": ("description", "description: !!timestamp 2001-12-14"),
    "str": ("name", "name: !!str tiny"),
    "map": ("fixed", "fixed: !!map {epochs: 1, width: 8, depth: 1, batch_size: 128}"),
    "seq": ("objective", "objectives: !!seq [{metric: accuracy}]"),
    "python-name": ("name", "name: !!python/name:os.system ''"),
    "local": ("name", "name: !local tiny"),
}
"""Explicit tags on scalars, mappings and sequences: standard, Python and local ones."""


SPECS = {
    "billion-cell-grid": ("application/json", json.dumps(billion_cell_grid()), "max_grid_cells"),
    "nested-json": ("application/json", NESTED, "max_spec_depth"),
    "nested-yaml-flow": ("application/yaml", NESTED, "max_spec_depth"),
    "nested-yaml-block": ("application/yaml", "- " * 100_000 + "x\n", "max_spec_depth"),
    "billion-laughs": ("application/yaml", BILLION_LAUGHS, "max_spec_values"),
    "yaml-python-tag": (
        "application/yaml",
        "name: !!python/object/apply:os.system ['touch pwned']\n",
        "invalid YAML",
    ),
    **{
        f"yaml-tag-{name}": ("application/yaml", tagged_spec(*tagged), "tags are not allowed")
        for name, tagged in TAGGED.items()
    },
    "long-string": ("application/yaml", "name: " + "x" * 100_000 + "\n", "max_string_length"),
    "fixed-model-as-a-mapping": (
        "application/json",
        json.dumps(tiny_spec_data(fixed={"model": {"width": 8}, "epochs": 1})),
        "takes a name, not a dict",
    ),
    "dataset-dotdot": (
        "application/json",
        json.dumps(
            tiny_spec_data(dataset={"source": "image_folder", "options": {"path": "../outside"}})
        ),
        "must not contain '..'",
    ),
    "dataset-percent-encoded": (
        "application/json",
        json.dumps(
            tiny_spec_data(
                dataset={"source": "image_folder", "options": {"path": "%2e%2e%2foutside"}}
            )
        ),
        "percent-encoded",
    ),
    "dataset-absolute": (
        "application/json",
        json.dumps(tiny_spec_data(dataset={"source": "image_folder", "options": {"path": "/etc"}})),
        "outside the data root",
    ),
    "dataset-symlink-out": (
        "application/json",
        json.dumps(
            tiny_spec_data(dataset={"source": "image_folder", "options": {"path": "link_out"}})
        ),
        "outside the data root",
    ),
}


@pytest.fixture
def roots(data_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The data root, with a symlink to a real class folder beside it."""
    outside = tmp_path / "outside"
    write_class_folder(outside, {"a": 2, "b": 2})
    (data_root / "link_out").symlink_to(outside, target_is_directory=True)
    return data_root, outside


@pytest.mark.parametrize("case", sorted(SPECS))
def test_hostile_specs_are_422_and_create_nothing(
    server: Server, http: httpx.Client, roots: tuple[Path, Path], tmp_path: Path, case: str
) -> None:
    content_type, body, names = SPECS[case]
    count = study_count(http)
    before = snapshot(server.artifacts, tmp_path)

    response = http.post("/studies", content=body, headers={"content-type": content_type})

    assert response.status_code == 422, response.text[:500]
    assert names in messages(response)
    after = http.get("/health")
    assert after.status_code == 200
    assert local_port(after) == local_port(response), "the connection was dropped"
    assert study_count(http) == count
    assert snapshot(server.artifacts, tmp_path) == before
    assert not Path("pwned").exists()


# --- huge bodies, streamed -------------------------------------------------------------------


def send_until_answered(port: int, head: str, chunks: Iterator[bytes]) -> tuple[int, int]:
    """Sends ``head`` then ``chunks`` until the server answers; returns the status and how
    many body bytes were sent by then."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sent += len(chunk)
        answer = sock.recv(4096)
    return int(answer.split(b" ", 2)[1]), sent


def body_chunks(total: int, framed: bool, start: bytes = b"") -> Iterator[bytes]:
    """``total`` bytes, beginning with ``start``, in chunks (``framed``: HTTP chunked)."""
    for index in range(total // CHUNK):
        data = start + b"x" * (CHUNK - len(start)) if index == 0 else b"x" * CHUNK
        yield b"%x\r\n%s\r\n" % (len(data), data) if framed else data
    if framed:
        yield b"0\r\n\r\n"


PART_HEAD = (
    b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
    b"Content-Type: image/png\r\n\r\n"
)
"""The head of one image part: what follows it is a 100 MB "image"."""


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("target", ["spec", "predict", "extend", "trials", "annotate"])
def test_a_100_mb_body_is_413_before_it_is_read(
    server: Server, http: httpx.Client, declared: bool, target: str
) -> None:
    count = study_count(http)
    before = snapshot(server.artifacts)
    loads = MODELS.loads
    if target == "spec":
        path, content_type, start = "/studies", "application/json", b""
        limit = Settings().max_body_bytes
    elif target != "predict":
        path, content_type = f"/studies/{server.study_id}/{target}", "application/json"
        start, limit = b'{"pad": "', Settings().max_body_bytes
    else:
        path = f"/studies/{server.study_id}/predict"
        content_type, start = "multipart/form-data; boundary=xyz", PART_HEAD
        limit = Limits().max_upload_bytes
    length = f"Content-Length: {HUGE_BODY_BYTES}" if declared else "Transfer-Encoding: chunked"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"{length}\r\n\r\n"
    )

    status, sent = send_until_answered(
        server.port, head, body_chunks(HUGE_BODY_BYTES, framed=not declared, start=start)
    )

    assert status == 413
    assert sent < limit + SOCKET_SLACK < HUGE_BODY_BYTES, f"{sent:,} bytes sent before the 413"
    assert study_count(http) == count
    assert snapshot(server.artifacts) == before
    assert MODELS.loads == loads


HUGE_STRING = '{"add_trials": 1, "pad": "' + "a" * 500_000 + '"}'
BODIES = {
    "nan": ("extend", '{"add_trials": NaN}', ["body", "add_trials"], "finite number"),
    "infinity": ("resume", '{"add_trials": -Infinity}', ["body", "add_trials"], "finite number"),
    "1e400": ("extend", '{"add_trials": 1e400}', ["body", "add_trials"], "finite number"),
    "true": ("extend", '{"add_trials": true}', ["body", "add_trials"], "valid integer"),
    "string-number": ("extend", '{"add_trials": "3"}', ["body", "add_trials"], "valid integer"),
    "2**70": ("extend", '{"add_trials": 1180591620717411303424}', ["body", "add_trials"], "less"),
    "surrogate-value": ("extend", '{"add_trials": "\\ud800"}', ["body", "add_trials"], "surrogate"),
    "surrogate-key": (
        "trials",
        '{"configs": [{"l\\ud800r": 0.001}]}',
        ["body", "configs", 0],
        "a key",
    ),
    "surrogate-path": ("annotate", '{"path": "a\\udfffb"}', ["body", "path"], "surrogate"),
    "configs-nan": ("trials", '{"configs": NaN}', ["body", "configs"], "valid list"),
    "top-1e400": ("annotate", '{"path": "inbox", "top": 1e400}', ["body", "top"], "finite"),
    "nested": ("extend", '{"add_trials": ' + NESTED + "}", ["body"], "max_spec_depth"),
    "duplicate-key": ("extend", '{"add_trials": 1, "add_trials": 2}', ["body"], "duplicate key"),
    "broken": ("extend", "{bad", ["body"], "invalid JSON"),
    "empty": ("trials", "", ["body"], "empty"),
    "huge-string": ("extend", HUGE_STRING, ["body", "pad"], "max_string_length"),
}
"""JSON bodies of the routes besides submit: none may be a 500, or echo its input."""


@pytest.mark.parametrize("case", sorted(BODIES))
def test_hostile_json_bodies_are_422_naming_the_field(
    server: Server, http: httpx.Client, case: str
) -> None:
    route, body, loc, fragment = BODIES[case]
    before = http.get(f"/studies/{server.study_id}").json()

    response = http.post(
        f"/studies/{server.study_id}/{route}",
        content=body.encode(),
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert len(response.content) < 2_000, "the refusal does not repeat the input"
    assert [error["loc"] for error in response.json()["detail"]] == [loc], response.text
    assert fragment in messages(response)
    assert http.get(f"/studies/{server.study_id}").json() == before


def test_plain_json_bodies_keep_working(server: Server, http: httpx.Client) -> None:
    """What clients send that is not hostile: a null body for resume, a whole float, a
    string that looks like a number (a folder named 1e5)."""
    before = http.get(f"/studies/{server.study_id}").json()
    resumed = http.post(
        f"/studies/{server.study_id}/resume",
        content=b"null",
        headers={"content-type": "application/json"},
    )
    assert resumed.status_code == 409, resumed.text  # read as no body, not refused as one
    assert "resume it with add_trials > 0" in resumed.text
    resumed = http.post(f"/studies/{server.study_id}/resume", json={"add_trials": 2.0})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["n_trials"] == before["n_trials"] + 2
    annotated = http.post(f"/studies/{server.study_id}/annotate", json={"path": "1e5"})
    assert annotated.status_code == 422
    assert "1e5" in messages(annotated) and "valid string" not in messages(annotated)
    assert http.post(f"/studies/{server.study_id}/cancel").status_code == 200


# --- images ----------------------------------------------------------------------------------


def test_decompression_bomb_to_predict_is_422(server: Server, http: httpx.Client) -> None:
    loads = MODELS.loads
    ok = png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8))
    files = [
        ("files", ("ok.png", ok, "image/png")),
        ("files", ("bomb.png", png_declaring(200_000, 200_000), "image/png")),
    ]

    response = http.post(f"/studies/{server.study_id}/predict", files=files)

    assert response.status_code == 422
    assert "'bomb.png'" in messages(response)
    assert "max_image_pixels" in messages(response)
    assert MODELS.loads == loads, "refused before the model loads"
    assert http.get("/health").status_code == 200


ANNOTATE_REFUSALS = {
    "bomb": ({"path": "inbox", "write_csv": "inbox/labels.csv"}, "max_image_pixels"),
    "folder-dotdot": ({"path": "../outside"}, "must not contain '..'"),
    "folder-percent": ({"path": "%2e%2e/outside"}, "percent-encoded"),
    "folder-absolute": ({"path": "/etc"}, "outside the data root"),
    "folder-symlink": ({"path": "link_out"}, "outside the data root"),
    "csv-dotdot": ({"path": "clean", "write_csv": "../labels.csv"}, "must not contain '..'"),
    "csv-percent": ({"path": "clean", "write_csv": "%2e%2e/labels.csv"}, "percent-encoded"),
    "csv-absolute": ({"path": "clean", "write_csv": "/tmp/labels.csv"}, "outside the data root"),
    "csv-symlink": ({"path": "clean", "write_csv": "link_out/l.csv"}, "outside the data root"),
}


@pytest.mark.parametrize("case", sorted(ANNOTATE_REFUSALS))
def test_hostile_annotate_requests_are_422_and_write_nothing(
    server: Server, http: httpx.Client, roots: tuple[Path, Path], tmp_path: Path, case: str
) -> None:
    data_root, _ = roots
    (data_root / "inbox").mkdir()
    (data_root / "inbox" / "a.png").write_bytes(png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8)))
    (data_root / "inbox" / "b.png").write_bytes(png_declaring(100_000, 100_000))
    (data_root / "clean").mkdir()
    (data_root / "clean" / "a.png").write_bytes(png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8)))
    body, expected = ANNOTATE_REFUSALS[case]
    before = snapshot(tmp_path, server.artifacts)
    loads = MODELS.loads

    response = http.post(f"/studies/{server.study_id}/annotate", json=body)

    assert response.status_code == 422, response.text
    assert expected in messages(response)
    assert snapshot(tmp_path, server.artifacts) == before
    assert MODELS.loads == loads


def test_decompression_bomb_in_training_data_is_refused(data_root: Path) -> None:
    from automl.data.decode import Preprocess, decode_image

    bomb = data_root / "bomb.png"
    bomb.write_bytes(png_declaring(8_000, 8_000))  # under Pillow's own limit, over ours

    with pytest.raises(DatasetError, match=r"8000x8000 = 64000000 pixels; max_image_pixels"):
        decode_image(str(bomb), Preprocess(8, 8), str(data_root))


# --- weights that would run code --------------------------------------------------------------


class RunsCode:
    """Unpickled with ``pickle``'s full powers, this creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def hostile_weights(marker: Path) -> bytes:
    """A ``torch.save`` file whose unpickling would create ``marker``."""
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "payload": RunsCode(marker)}, buffer)
    return buffer.getvalue()


def test_the_hostile_weights_do_run_code_when_loaded_unsafely(tmp_path: Path) -> None:
    """The control: the payload is real (so the refusals below mean something)."""
    marker = tmp_path / "ran"
    torch.load(io.BytesIO(hostile_weights(marker)), weights_only=False)
    assert marker.exists()


def test_pickle_weights_are_refused_by_every_route_that_loads_them(
    server: Server, http: httpx.Client, data_root: Path, tmp_path: Path
) -> None:
    study_id = train_study(server.store, name="pickled")
    trial = get_frozen_trial(server.store, study_id, 0)
    marker = tmp_path / "ran"
    server.store.artifacts.write(
        trial.user_attrs[attrs.WEIGHTS], io.BytesIO(hostile_weights(marker))
    )
    png = png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8))
    (data_root / "a.png").write_bytes(png)

    predicted = http.post(f"/studies/{study_id}/predict", files=[("files", ("a.png", png))])
    bundled = http.get(f"/studies/{study_id}/best/model")
    annotated = http.post(f"/studies/{study_id}/annotate", json={"path": "."})

    for response in (predicted, bundled, annotated):
        assert response.status_code == 404, response.text
        assert "cannot be read safely" in response.json()["detail"]
    assert not marker.exists()


def test_pickle_checkpoints_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pretrained = tmp_path / "pretrained.pt"
    pretrained.write_bytes(hostile_weights(marker))

    with pytest.raises(CheckpointError, match=r"cannot read checkpoint 'pretrained\.pt'"):
        load_checkpoint(pretrained)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        TrainState.from_bytes(hostile_weights(marker))
    assert not marker.exists()


@pytest.mark.parametrize("target", ["spec", "predict"])
def test_a_client_that_leaves_mid_body_logs_no_error(
    server: Server, http: httpx.Client, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by a security tester: each dropped request logged two tracebacks.
    path, kind = {
        "spec": ("/studies", "application/json"),
        "predict": (f"/studies/{server.study_id}/predict", "multipart/form-data; boundary=xyz"),
    }[target]
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(f"{head}Content-Length: 1000\r\n\r\n".encode() + PART_HEAD[:8])
        deadline = time.monotonic() + 30
        while not any("client left" in record.getMessage() for record in caplog.records):
            assert time.monotonic() < deadline, "the dropped request was not noticed"
            time.sleep(0.05)

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert http.get("/health").status_code == 200
