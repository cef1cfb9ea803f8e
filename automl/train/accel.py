"""How a trial uses its device: mixed precision, memory format, fused optimizers, compile.

On CUDA: bf16 autocast where the GPU has native bf16 (compute capability 8.0 or newer; else
fp16 with a gradient scaler), channels_last for image batches, ``cudnn.benchmark`` and fused
optimizers. On the CPU the same code path runs in plain fp32 and stays deterministic, with
channels_last for image batches too (oneDNN's convolutions run a training step of the small
conv nets 1.2 to 1.7 times faster in it; ``AUTOML_CPU_CHANNELS_LAST=0`` turns it off).

A trial's ``precision`` overrides the arithmetic: ``fp32`` trains and evaluates without
autocast on the GPU too (cuDNN may still pick TF32 convolutions, PyTorch's default);
``bf16`` autocasts to bf16 on the CPU as well, where CPUs with AMX or AVX512-BF16 run the
convolutions of ResNets and small conv nets about 1.5 times faster (depthwise
convolutions, as in MobileNet and EfficientNet, are not faster there; CPUs and GPUs
without native bf16 emulate it, slower than fp32). On one kind of device, a trial's
training, validation, test scoring, latency measurement and serving use the same
arithmetic; exported files (ONNX, TorchScript, bundles) hold fp32 weights.

Setting ``AUTOML_SYNC_DEBUG=warn`` (or ``error``) reports (or fails on) every operation
that makes the host wait for the GPU inside the per-batch training loop, through
``torch.cuda.set_sync_debug_mode``; the loop is meant to have none.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch

from automl.config import env_flag
from automl.train.graphs import failure_text, graphs_enabled

logger = logging.getLogger(__name__)

EMULATED_BF16 = (
    "emulated: this CPU has no AMX or AVX512-BF16, so bf16 runs slower than fp32 (an LSTM's "
    "training step about 50 times slower on an AVX2 CPU)"
)
"""What a bf16 trial on such a CPU notes, and its worker logs once."""


@functools.cache
def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bf16 natively (x86: AMX or AVX512-BF16; Arm: its BF16
    extension), from Linux's ``/proc/cpuinfo``; None where that cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line for line in info if line.startswith(("flags", "Features"))), None)
    except OSError:
        return None
    if flags is None:
        return None
    found = set(flags.split(":", 1)[-1].split())
    return bool(found & {"amx_bf16", "avx512_bf16", "bf16"})


@functools.cache
def _warn_emulated_bf16() -> None:
    logger.warning("precision bf16 on the CPU is %s", EMULATED_BF16)


SYNC_DEBUG_ENV = "AUTOML_SYNC_DEBUG"
"""Environment variable: ``warn`` or ``error`` watches the per-batch loop for host syncs."""

SyncDebugMode = Literal["warn", "error"]

Precision = Literal["auto", "fp32", "bf16"]
"""A trial's arithmetic: ``auto`` (per device, see the module docstring), ``fp32``, ``bf16``."""

CPU_CHANNELS_LAST_ENV = "AUTOML_CPU_CHANNELS_LAST"
"""Environment variable: ``0`` keeps image batches contiguous on the CPU (default: on)."""


@dataclass
class Accelerator:
    """The device settings of one training run.

    Attributes:
        device: Where the model and data live.
        dtype: Autocast dtype (bf16, or fp16 on CUDA); None for fp32.
        channels_last: Whether image batches and conv weights use channels_last.
        fused: Whether optimizers use their fused CUDA implementation.
        sync_debug: ``warn`` or ``error`` on host syncs inside ``watch_syncs`` (CUDA only);
            None watches nothing.
        autocast_cache: Whether autocast keeps the low-precision copies of weights within
            one forward pass; off while updates are captured in a CUDA graph, which must
            not hold on to such copies.
    """

    device: torch.device
    dtype: torch.dtype | None = None
    channels_last: bool = False
    fused: bool = False
    sync_debug: SyncDebugMode | None = None
    autocast_cache: bool = True

    def __post_init__(self) -> None:
        enabled = self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=enabled) if enabled else None

    @classmethod
    def for_device(
        cls, device: torch.device, sample_dims: int, precision: Precision = "auto"
    ) -> Accelerator:
        """The settings for ``device``, samples with ``sample_dims`` dimensions (3 for
        images ``C, H, W``; 4 for clips) and a trial's ``precision``.

        With ``auto``, bf16 is used only where the GPU computes it natively: emulated bf16
        (before compute capability 8.0) is slower than fp16 with a gradient scaler. Devices
        other than the CPU and CUDA run in fp32.

        Raises:
            ValueError: If ``AUTOML_SYNC_DEBUG`` is set to something other than ``warn``,
                ``error`` or nothing.
        """
        if device.type == "cpu":
            if precision == "bf16" and cpu_has_native_bf16() is False:
                _warn_emulated_bf16()
            return cls(
                device,
                dtype=torch.bfloat16 if precision == "bf16" else None,
                channels_last=sample_dims == 3 and cpu_channels_last_from_env(),
            )
        if device.type != "cuda":
            return cls(device)
        torch.backends.cudnn.benchmark = True
        if precision == "fp32":
            dtype = None
        elif precision == "bf16":
            dtype = torch.bfloat16
        else:
            with torch.cuda.device(device):
                native = torch.cuda.is_bf16_supported(including_emulation=False)
            dtype = torch.bfloat16 if native else torch.float16
        return cls(
            device,
            dtype=dtype,
            channels_last=sample_dims == 3,
            fused=True,
            sync_debug=sync_debug_from_env(),
        )

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision for the forward pass (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=self.autocast_cache)

    @contextlib.contextmanager
    def watch_syncs(self) -> Iterator[None]:
        """Within this block, host syncs warn or raise as ``sync_debug`` says (CUDA only).

        Wraps the per-batch loop; ``allow_syncs`` exempts what may wait on purpose (a
        checkpoint).
        """
        if self.sync_debug is None or self.device.type != "cuda":
            yield
            return
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode(self.sync_debug)
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)

    @contextlib.contextmanager
    def allow_syncs(self) -> Iterator[None]:
        """Within ``watch_syncs``, a block that may make the host wait (e.g. a checkpoint)."""
        if self.sync_debug is None or self.device.type != "cuda":
            yield
            return
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode(0)
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` on the device, in channels_last when that applies."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """A batch in the memory format the model expects."""
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def step(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        parameters: list[torch.nn.Parameter],
        grad_clip: float,
    ) -> None:
        """Backward pass, optional gradient clipping and the optimizer step (scaled in fp16).

        Nothing here waits for the device: clipping returns a tensor, and with fp16 the fused
        optimizers (Adam, AdamW, SGD) skip steps with infinite gradients on the device. Only
        RMSprop under fp16 (GPUs without native bf16) waits once per step, in
        ``GradScaler.step``, since it has no fused kernel.
        """
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if grad_clip > 0:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()


OUT_OF_MEMORY_MARKS = (
    "out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "can't allocate memory",
)
"""How allocation failures read that do not come as ``torch.OutOfMemoryError``: cuBLAS
creating its handle, cuDNN its workspace, a new process's CUDA context on a full GPU
("CUDA error: out of memory"), the CPU allocator."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device (or host) had no memory left for the run."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(mark in str(exc) for mark in OUT_OF_MEMORY_MARKS)


CONTEXT_BREAKING_ERRORS = (
    "illegal memory access",
    "illegal address",
    "misaligned address",
    "illegal instruction",
    "invalid program counter",
    "device-side assert triggered",
    "unspecified launch failure",
    "launch timed out",
    "uncorrectable ECC error",
    "uncorrectable NVLink error",
    "hardware stack error",
    "not supported on global/shared address space",
)
"""CUDA errors after which the process's CUDA context is unusable: every later CUDA call
fails too. Others ("no kernel image is available", "invalid configuration argument")
concern one model and leave the context working."""


def is_device_fault(exc: BaseException) -> bool:
    """Whether ``exc`` (or the error it wraps: ``torch.compile`` wraps its backend's) is a
    CUDA error that left this process's CUDA context unusable."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, RuntimeError) and any(
            mark in str(error) for mark in CONTEXT_BREAKING_ERRORS
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def release_device_memory() -> None:
    """Returns the memory of tensors nobody holds any more to the device (after an
    out-of-memory error), so the next trial on this process starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cpu_channels_last_from_env() -> bool:
    """Whether image batches use channels_last on the CPU: yes unless
    ``AUTOML_CPU_CHANNELS_LAST`` is ``0``, ``false``, ``no`` or ``off``.

    Only 4-D tensors change format, so models without 2-D convolutions (``rnn``) see the
    same values in a different layout and train as before.

    Raises:
        ValueError: If the variable is not a yes/no value.
    """
    return env_flag(CPU_CHANNELS_LAST_ENV, default=True)


def check_device_settings() -> None:
    """Reads every device setting from the environment once, so a bad value stops a
    worker at its start instead of failing each trial.

    Raises:
        ValueError: Naming the first variable with a bad value.
    """
    sync_debug_from_env()
    cpu_channels_last_from_env()
    graphs_enabled()


def sync_debug_from_env() -> SyncDebugMode | None:
    """The ``AUTOML_SYNC_DEBUG`` setting: ``warn``, ``error`` or None when unset or empty.

    Raises:
        ValueError: If it is set to anything else.
    """
    value = os.environ.get(SYNC_DEBUG_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ("warn", "error"):
        raise ValueError(f"{SYNC_DEBUG_ENV} must be warn, error or empty, not {value!r}")
    return cast(SyncDebugMode, value)


class CompiledModel(torch.nn.Module):
    """``torch.compile(model)`` that runs ``model`` eagerly once compiling has failed.

    ``torch.compile`` is lazy: a missing C compiler, an unsupported Python or an inductor
    bug surface at the first call (or at a recompilation for a new shape or mode). Such a
    call is repeated eagerly and the model stays eager from then on, with ``failure``
    saying why; an error that eager execution raises as well is the model's own and
    propagates. Out-of-memory and CUDA errors are never taken for compile failures.

    The wrapped model is a registered submodule, so ``train()`` and ``eval()`` reach it,
    while its ``state_dict`` should be taken from ``model`` itself (no ``_orig_mod.``
    prefixes).

    Args:
        model: The model to compile, already on its device and in its memory format.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.eager = model
        self.failure: str | None = None
        self._compiled: Any = None
        try:
            # Dynamo caches compiled code per Python function, and every trial's model of a
            # family runs the same ``forward``: past its recompile limit (8) a worker's
            # later trials would silently run eagerly. One compiled model at a time per
            # process, so each starts from an empty cache.
            torch.compiler.reset()
            # Kept out of the module tree: it shares every parameter with ``eager``.
            object.__setattr__(self, "_compiled", torch.compile(model))
        except Exception as exc:  # any failure to compile falls back to eager
            self.fall_back(exc)

    @property
    def compiled(self) -> bool:
        """Whether calls still go through the compiled model."""
        return self.failure is None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the compiled model, or the eager one once compiling has failed."""
        if self.failure is None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as exc:
                if not self.fall_back(exc):
                    raise
        return self.eager(*args, **kwargs)

    def fall_back(self, exc: BaseException) -> bool:
        """Switches to eager execution after ``exc``, if it can be a compile failure.

        Returns:
            True when it switched (the caller repeats its work eagerly); False when the
            model already runs eagerly, or ``exc`` is out of memory or a CUDA error (the
            caller re-raises).
        """
        if self.failure is not None or is_out_of_memory(exc) or is_device_fault(exc):
            return False
        self.failure = failure_text(exc)
        logger.warning("torch.compile failed, training eagerly instead: %s", self.failure)
        return True
