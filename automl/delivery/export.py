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
import threading
import warnings
import zipfile
from collections.abc import Sequence

import torch

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
    "ExportError",
    "export_onnx",
    "export_torchscript",
]
