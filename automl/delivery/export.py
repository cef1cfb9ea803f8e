"""Exports of a trained model that run without automl: ONNX and TorchScript.

Both take a float32 batch ``(N, C, H, W)`` (``(N, T, C, H, W)`` for clip models),
preprocessed as the model card says, and return the logits ``(N, classes)``; the batch
size is free.

ONNX uses PyTorch's TorchScript-based exporter (``dynamo=False``): it needs only the
``onnx`` package, works offline and takes about a second for the models automl builds.
Should a PyTorch release drop it, the ``torch.export``-based exporter (which needs
``onnxscript``) is tried instead. Exporting is not thread-safe in PyTorch, so exports in
one process run one at a time.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import warnings
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger("automl.delivery")

ONNX_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "logits"

_lock = threading.Lock()


class ExportError(RuntimeError):
    """The model could not be exported in this format (the message says why)."""


def _example(input_shape: Sequence[int]) -> torch.Tensor:
    return torch.zeros(2, *(int(size) for size in input_shape))


def export_onnx(model: torch.nn.Module, input_shape: Sequence[int]) -> bytes:
    """The model as an ONNX file: input ``images``, output ``logits``, dynamic batch size.

    Args:
        model: The model, on the CPU (set to eval mode here).
        input_shape: One sample's shape.

    Raises:
        ExportError: If neither exporter can export it.
    """
    model = model.eval()
    example = _example(input_shape)
    batch = {0: "batch"}
    failures = []
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        for dynamo in (False, True):
            buffer = io.BytesIO()
            try:
                with torch.no_grad():
                    torch.onnx.export(
                        model,
                        (example,),
                        buffer,
                        input_names=[INPUT_NAME],
                        output_names=[OUTPUT_NAME],
                        dynamic_axes={INPUT_NAME: batch, OUTPUT_NAME: batch},
                        opset_version=ONNX_OPSET,
                        dynamo=dynamo,
                    )
            except Exception as exc:
                failures.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {exc}")
                continue
            return buffer.getvalue()
    raise ExportError("ONNX export failed: " + "; ".join(failures))


def export_torchscript(model: torch.nn.Module, input_shape: Sequence[int]) -> bytes:
    """The model traced to TorchScript (``torch.jit.load`` reads it, without automl).

    Each call registers new classes in PyTorch's process-wide TorchScript tables, which are
    never freed, and numbers them per process, so exporting one model twice neither frees
    that memory nor gives the same bytes: a long-running process exports a model once
    (``automl.delivery.bundle.BundleCache``).

    Raises:
        ExportError: If tracing fails.
    """
    model = model.eval()
    buffer = io.BytesIO()
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        try:
            with torch.no_grad():
                traced = torch.jit.trace(model, _example(input_shape))
            torch.jit.save(traced, buffer)
        except Exception as exc:
            raise ExportError(f"TorchScript export failed: {exc}") from exc
    return _without_debug_info(buffer.getvalue())


@dataclass(frozen=True)
class ModelSource:
    """How another process rebuilds a model from plain data: a module-level function and
    its arguments (configuration, weights as bytes...), never a pickled module.

    Attributes:
        build: Makes the model, weights loaded, on the CPU.
        args: Its arguments; they must pickle.
    """

    build: Callable[..., torch.nn.Module]
    args: tuple[Any, ...]


TRACES_PER_CHILD = 16
"""Traces a child process of ``ChildTracer`` makes before a new one replaces it."""
CHILD_IDLE_S = 60.0
"""Seconds a ``ChildTracer``'s child waits for the next trace before it ends."""
TRACE_TIMEOUT_S = 300.0
"""Seconds a ``ChildTracer`` waits for one trace (a ResNet-18 takes about 1 s, 4 s with a
fresh child) before it ends the child and fails the export."""


class ChildTracer:
    """``export_torchscript`` in a child process, for a long-running process (the API).

    Every trace leaks its TorchScript classes in the tracing process for good (about 1 MB
    for a small CNN, 10 MB for a ResNet-18): traced in the API, each bundle build (one per
    model and card, again whenever more models are downloaded in turn than the bundle
    cache keeps) grew the API by that much. A child process holds them instead; it is
    replaced after ``traces_per_child`` traces and ends after ``idle_s`` seconds without
    one, so nothing stays (while it lives, it is one more process importing torch). The
    child rebuilds the model from plain data (``ModelSource``: no pickled module crosses,
    and no tensor through ``/dev/shm``, 64 MB in a container; nothing is unpickled but
    the configuration and the safetensors bytes). With no process to be had, it traces
    here, as before; a child that died is replaced once; one that dies again while
    tracing, a trace that takes longer than ``timeout_s`` (its child is killed: a hung
    child held every later bundle build for good) or a source that does not pickle fails
    the export (the bundle then holds ONNX only, and its card says why).

    Args:
        traces_per_child: Traces before the child is replaced.
        idle_s: Seconds the child waits for the next trace.
        timeout_s: Seconds one trace may take.
    """

    def __init__(
        self,
        traces_per_child: int = TRACES_PER_CHILD,
        idle_s: float = CHILD_IDLE_S,
        timeout_s: float = TRACE_TIMEOUT_S,
    ) -> None:
        self.traces_per_child = traces_per_child
        self.idle_s = idle_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._idle: threading.Timer | None = None

    def __call__(
        self, model: torch.nn.Module, input_shape: Sequence[int], source: ModelSource
    ) -> bytes:
        """As ``export_torchscript``, the child rebuilding the model from ``source``.

        Raises:
            ExportError: If tracing fails.
        """
        with self._lock:
            if self._idle is not None:
                self._idle.cancel()
            try:
                return self._trace_in_child(model, source, tuple(input_shape))
            finally:
                self._idle = threading.Timer(self.idle_s, self.close)
                self._idle.daemon = True
                self._idle.start()

    def _trace_in_child(
        self, model: torch.nn.Module, source: ModelSource, input_shape: tuple[int, ...]
    ) -> bytes:
        """Traces in the child; a child that died (while idle, or killed while tracing by
        the kernel's out-of-memory killer) is replaced once."""
        for last_try in (False, True):
            try:
                future = self._child().submit(_trace, source, input_shape)
            except BrokenProcessPool:
                self._end_child()
                continue
            except Exception as exc:  # no process to be had, or a source that won't pickle
                logger.warning("cannot trace in a child process (%s): tracing here", exc)
                self._end_child()
                return export_torchscript(model, input_shape)
            try:
                return future.result(timeout=self.timeout_s)
            except ExportError:
                raise
            except FutureTimeoutError:
                self._end_child(kill=True)
                message = f"TorchScript export failed: tracing took over {self.timeout_s:g} s"
                raise ExportError(message) from None
            except BrokenProcessPool as exc:
                self._end_child()
                if last_try:
                    message = f"TorchScript export failed: the tracing process ended ({exc})"
                    raise ExportError(message) from None
            except Exception as exc:  # anything else the child raised
                raise ExportError(f"TorchScript export failed: {exc}") from None
        raise ExportError("TorchScript export failed: no tracing process could be started")

    def close(self) -> None:
        """Ends the child process, if any (the next trace starts a new one)."""
        with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            self._end_child()

    def _child(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_setup,
                max_tasks_per_child=self.traces_per_child,
            )
        return self._pool

    def _end_child(self, kill: bool = False) -> None:
        if self._pool is None:
            return
        if kill:
            _kill_workers(self._pool)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Kills a pool's busy processes (``shutdown`` waits for a running task, for good if it
    hangs). Python 3.14 has ``kill_workers``; before, only the pool's process table."""
    kill_workers = getattr(pool, "kill_workers", None)
    if kill_workers is not None:
        kill_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()


def _child_setup() -> None:
    """A child's Ctrl-C is its parent's: the parent ends it (a traceback otherwise). A
    parent that ends without ending it (kill -9) ends it too: its task queue never
    closes, since the child holds the queue's other end, so nothing else would."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(0)


def _trace(source: ModelSource, input_shape: tuple[int, ...]) -> bytes:
    """``export_torchscript`` of the model ``source`` rebuilds, as a child process's task."""
    torch.set_num_threads(1)
    return export_torchscript(source.build(*source.args), input_shape)


def _without_debug_info(archive: bytes) -> bytes:
    """A TorchScript archive without its ``*.debug_pkl`` entries: source ranges that name
    the files of the machine that traced it (its Python and automl install paths).
    ``torch.jit.load`` does not need them."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(archive)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target,
    ):
        for info in source.infolist():
            if not info.filename.endswith(".debug_pkl"):
                target.writestr(info, source.read(info.filename))
    return out.getvalue()


__all__ = [
    "INPUT_NAME",
    "ONNX_OPSET",
    "OUTPUT_NAME",
    "ChildTracer",
    "ExportError",
    "ModelSource",
    "export_onnx",
    "export_torchscript",
]
