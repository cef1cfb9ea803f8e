"""Every registered architecture exports to ONNX and TorchScript with a free batch size,
and the exports compute what the PyTorch model computes."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import automl
from automl.delivery.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    ChildTracer,
    ExportError,
    ModelSource,
    export_onnx,
    export_torchscript,
)
from automl.models import MODELS
from tests.conftest import pid_alive
from tests.models.test_architectures import sample_shape, tiny

TORCHVISION_FAMILIES = ("resnet", "mobilenet", "efficientnet")
"""Built from torchvision's modules, which export as torchvision tests them; 6 to 11 s each
here, so left out (``test_bundle`` exports a model end to end)."""
OWN_ARCHITECTURES = [name for name in MODELS.names() if not name.startswith(TORCHVISION_FAMILIES)]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", OWN_ARCHITECTURES)
def test_exports_match_pytorch_at_any_batch_size(name: str) -> None:
    # 13 x 17 frames leave a 3 x 4 map before clip models' 4 x 4 grid pooling.
    shape = sample_shape(name, 3, 13, 17)
    model = tiny(name, shape).eval()
    session = onnxruntime.InferenceSession(
        export_onnx(model, shape), providers=["CPUExecutionProvider"]
    )
    scripted = torch.jit.load(io.BytesIO(export_torchscript(model, shape)))
    for batch in (1, 3):
        images = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            reference = model(images).numpy()
            script_logits = scripted(images).numpy()
        (onnx_logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
        np.testing.assert_allclose(onnx_logits, reference, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(script_logits, reference, rtol=1e-5, atol=1e-6)


def test_exports_name_no_file_of_the_machine_that_made_them() -> None:
    """TorchScript's debug info once named the server's automl and Python install paths."""
    shape = sample_shape("cnn", 3, 8, 8)
    model = tiny("cnn", shape).eval()
    roots = {Path(automl.__file__).parent.parent, Path(torch.__file__).parent.parent}
    with zipfile.ZipFile(io.BytesIO(export_torchscript(model, shape))) as archive:
        contents = [archive.read(name) for name in archive.namelist()]  # some compressed
    for blob in (*contents, export_onnx(model, shape)):
        for root in roots:
            assert str(root).encode() not in blob, root


def _never_here(*args: object, **kwargs: object) -> None:
    raise AssertionError("traced in this process")


def _seeded_cnn(shape: tuple[int, ...]) -> torch.nn.Module:
    """The same small CNN in every process (what a ``ModelSource`` rebuilds)."""
    torch.manual_seed(0)
    return tiny("cnn", shape).eval()


def _dies() -> torch.nn.Module:
    """Ends the process that rebuilds the model, as the kernel's OOM killer would."""
    os._exit(3)


def _hangs() -> torch.nn.Module:
    """Never returns, as a tracing process stuck in a deadlock would."""
    time.sleep(3600)
    raise AssertionError("woke up")


LINEAR = ModelSource(torch.nn.Linear, (4, 2))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_a_child_tracer_traces_in_another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a tester: each trace leaked about 1.7 MB (10 MB for a ResNet-18) in the API
    for good; the API now traces in a child process, which ends when idle."""
    shape = (1, 8, 8)
    model = _seeded_cnn(shape)
    monkeypatch.setattr(torch.jit, "trace", _never_here)  # this process's torch only
    tracer = ChildTracer(idle_s=0.2)

    scripted = torch.jit.load(io.BytesIO(tracer(model, shape, ModelSource(_seeded_cnn, (shape,)))))

    images = torch.rand(3, *shape)
    with torch.no_grad():
        assert torch.allclose(scripted(images), model(images), atol=1e-5)
    deadline = time.monotonic() + 30
    while tracer._pool is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tracer._pool is None  # idle: the child (and what it leaked) is gone


def test_a_source_that_does_not_pickle_fails_the_export() -> None:
    tracer = ChildTracer()
    try:
        with pytest.raises(ExportError, match="TorchScript export failed"):
            tracer(torch.nn.Linear(4, 2), (4,), ModelSource(lambda: torch.nn.Linear(4, 2), ()))
    finally:
        tracer.close()


def test_a_trace_that_fails_in_the_child_is_an_export_error() -> None:
    tracer = ChildTracer()
    source = ModelSource(_seeded_cnn, ((1, 8, 8),))
    try:
        with pytest.raises(ExportError, match="TorchScript export failed"):
            tracer(_seeded_cnn((1, 8, 8)), (3, 8, 8), source)  # the wrong number of channels
    finally:
        tracer.close()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_a_child_that_dies_while_tracing_fails_the_export_and_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by review: it was traced in the API instead, the leak the child prevents (and
    what killed the child might take the API down)."""
    tracer = ChildTracer()
    try:
        monkeypatch.setattr(torch.jit, "trace", _never_here)
        with pytest.raises(ExportError, match="the tracing process ended"):
            tracer(torch.nn.Linear(4, 2), (4,), ModelSource(_dies, ()))
        scripted = torch.jit.load(io.BytesIO(tracer(torch.nn.Linear(4, 2), (4,), LINEAR)))
        assert scripted(torch.ones(1, 4)).shape == (1, 2)  # a new child traces
    finally:
        tracer.close()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_a_child_killed_while_idle_is_replaced_not_traced_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by review: the next trace after the kernel killed the idle child (it holds
    hundreds of MB) ran in the API, the leak the child prevents."""
    tracer = ChildTracer()
    try:
        tracer(torch.nn.Linear(4, 2), (4,), LINEAR)
        for child in multiprocessing.active_children():
            if child.name.startswith("SpawnProcess"):
                child.kill()
                child.join(10)
        monkeypatch.setattr(torch.jit, "trace", _never_here)
        scripted = torch.jit.load(io.BytesIO(tracer(torch.nn.Linear(4, 2), (4,), LINEAR)))
        assert scripted(torch.ones(1, 4)).shape == (1, 2)
    finally:
        tracer.close()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_a_trace_that_hangs_is_ended_and_the_next_one_traces() -> None:
    """Left alone once: a hung child held the tracer's lock, so every later bundle build
    of the API waited for good."""
    tracer = ChildTracer()
    try:
        tracer(torch.nn.Linear(4, 2), (4,), LINEAR)  # a warm child: its start is not timed
        hung = [c.pid for c in multiprocessing.active_children() if c.name.startswith("Spawn")]
        tracer.timeout_s = 2.0
        with pytest.raises(ExportError, match="tracing took over 2 s"):
            tracer(torch.nn.Linear(4, 2), (4,), ModelSource(_hangs, ()))
        deadline = time.monotonic() + 30
        while any(pid_alive(pid) for pid in hung) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in hung if pid_alive(pid)]
        tracer.timeout_s = 120.0
        scripted = torch.jit.load(io.BytesIO(tracer(torch.nn.Linear(4, 2), (4,), LINEAR)))
        assert scripted(torch.ones(1, 4)).shape == (1, 2)
    finally:
        tracer.close()


def test_close_ends_the_child_and_its_idle_timer_at_once() -> None:
    """Found by the suite's timings: a server run as a multiprocessing child (the tests'
    fork server) joins its own children before its threads at exit, so it waited out the
    child's idle timer (60 s) unless the app's shutdown closed the tracer."""
    tracer = ChildTracer(idle_s=3600)
    tracer(torch.nn.Linear(4, 2), (4,), LINEAR)
    [child] = [c for c in multiprocessing.active_children() if c.name.startswith("Spawn")]

    tracer.close()

    # Polled, not joined: the pool's own thread joins (and reaps) it at the same time.
    deadline = time.monotonic() + 30
    while pid_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child.pid)
    assert tracer._idle is None and tracer._pool is None


ORPHAN_SCRIPT = """
import multiprocessing, os, signal, torch
from automl.delivery.export import ChildTracer, ModelSource
if __name__ == "__main__":
    tracer = ChildTracer()
    tracer(torch.nn.Linear(4, 2), (4,), ModelSource(torch.nn.Linear, (4, 2)))
    print(*[child.pid for child in multiprocessing.active_children()], flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_tracing_child_ends_with_its_parent_killed(tmp_path: Path) -> None:
    """Found by testing kill -9: a killed API left its tracing child (about 600 MB) for
    good, waiting on a task queue whose other end it holds itself."""
    script = tmp_path / "parent.py"
    script.write_text(ORPHAN_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL
    children = [int(pid) for pid in done.stdout.split()]
    assert children
    deadline = time.monotonic() + 30
    while any(pid_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if pid_alive(pid)]
