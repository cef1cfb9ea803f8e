"""How a trial uses its device: mixed precision, memory format, fused optimizers.

On CUDA: bf16 autocast where the GPU supports it (else fp16 with a gradient scaler),
channels_last for image batches, ``cudnn.benchmark`` and fused optimizers. On the CPU the
same code path runs in plain fp32, contiguous, and stays deterministic.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Accelerator:
    """The device settings of one training run.

    Attributes:
        device: Where the model and data live.
        dtype: Autocast dtype on CUDA (bf16 or fp16); None for fp32.
        channels_last: Whether image batches and conv weights use channels_last.
        fused: Whether optimizers use their fused CUDA implementation.
    """

    device: torch.device
    dtype: torch.dtype | None = None
    channels_last: bool = False
    fused: bool = False

    def __post_init__(self) -> None:
        enabled = self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=enabled) if enabled else None

    @classmethod
    def for_device(cls, device: torch.device, sample_dims: int) -> Accelerator:
        """The settings for ``device`` and samples with ``sample_dims`` dimensions
        (3 for images ``C, H, W``; 4 for clips)."""
        if device.type != "cuda":
            return cls(device)
        torch.backends.cudnn.benchmark = True
        bf16 = torch.cuda.is_bf16_supported()
        return cls(
            device,
            dtype=torch.bfloat16 if bf16 else torch.float16,
            channels_last=sample_dims == 3,
            fused=True,
        )

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision for the forward pass (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

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

        Nothing here waits for the device: clipping returns a tensor and the scaler skips
        steps with infinite gradients on the device.
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


def release_device_memory() -> None:
    """Returns the memory of tensors nobody holds any more to the device (after an
    out-of-memory error), so the next trial on this process starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
