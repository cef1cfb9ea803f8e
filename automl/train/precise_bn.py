"""Batch-norm statistics recomputed with the current weights before an evaluation.

In training mode a batch-norm layer normalizes with each batch's own statistics and keeps
an exponential moving average of them (momentum 0.1) for evaluation. That average mixes
batches seen under older weights, so after a short run, or a large learning rate, it
describes a network that no longer exists, and the validation score measures the lag as
much as the model. Recomputing the statistics over a few hundred training images with the
current weights ("precise BN", Wu and Johnson, *Rethinking "Batch" in BatchNorm*, 2021)
removes the lag without changing training: the weights are the same, only the buffers
that evaluation reads differ.

The images are the training split's own, evenly spaced and not augmented, so the
statistics describe what evaluation sees; dropout and other training-only layers are off
while they pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from automl.train.accel import Accelerator


def tracking_batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of ``model`` whose running statistics training updates: those
    that track statistics and are in training mode (a layer a model keeps in eval mode on
    purpose, frozen batch norm, normalizes with its statistics in training too)."""
    return [
        module
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.training
        and module.track_running_stats
        and module.running_mean is not None
        and module.running_var is not None
    ]


def evenly_spaced(total: int, count: int, device: torch.device) -> torch.Tensor:
    """``min(count, total)`` indices spread evenly over ``[0, total)`` (the first and the
    last included): every class of a folder sorted by class is represented, and the choice
    needs no randomness. Computed in integers, so every device picks the same images."""
    count = min(count, total)
    if count <= 1:
        return torch.zeros(count, dtype=torch.long, device=device)
    steps = torch.arange(count, dtype=torch.long)
    return ((steps * (total - 1) + (count - 1) // 2) // (count - 1)).to(device)


@torch.no_grad()
def recompute_batch_norm(
    model: nn.Module,
    images: torch.Tensor,
    count: int,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    accel: Accelerator,
    chunk: int = 1024,
) -> bool:
    """Replaces the running statistics of ``model``'s batch-norm layers with those of
    ``count`` training images under the current weights.

    The statistics of up to ``chunk`` images are exact. More are passed in interleaved
    chunks (every n-th image), whose statistics are averaged: each chunk then samples the
    whole split, so the average differs from the pooled statistics only by sampling noise.
    Momentum, the layers' batch counters and every module's training mode are left as they
    were, so training goes on as it would have.

    Args:
        model: The network (not a compiled wrapper: its layers are toggled directly), in
            the modes training left it in.
        images: The stored training images (e.g. uint8), on the model's device.
        count: How many images to pass; below 2 nothing is recomputed.
        prepare: Turns a stored batch into model input (e.g. ``ImageData.normalize``).
        accel: The run's device settings (memory format, autocast).
        chunk: The most images passed at once (at least 3, so no chunk holds one image).

    Returns:
        Whether any statistics were recomputed (False without such batch norms).
    """
    layers = tracking_batch_norms(model)
    if not layers or min(count, len(images)) < 2:
        return False
    index = evenly_spaced(len(images), count, images.device)
    chunks = -(-len(index) // chunk)
    modes = [(module, module.training) for module in model.modules()]
    saved = [(layer.momentum, _clone(layer.num_batches_tracked)) for layer in layers]
    try:
        model.eval()  # dropout and the like off: the statistics of what evaluation sees
        for layer in layers:
            layer.train()
            # In place (a CUDA graph holds these tensors). Cleared first: a momentum of 1
            # keeps 0 * the old value, and 0 * inf or NaN (an fp16 overflow) is NaN.
            layer.running_mean.zero_()
            layer.running_var.fill_(1.0)
        for number in range(chunks):
            for layer in layers:
                # A running mean over the chunks, with the factor on the host: momentum
                # None would read the batch counter from the device in every layer.
                layer.momentum = 1.0 / (number + 1)
            with accel.autocast():
                model(accel.batch(prepare(images[index[number::chunks]])))
    finally:
        for layer, (momentum, batches) in zip(layers, saved, strict=True):
            layer.momentum = momentum
            if batches is not None:
                layer.num_batches_tracked.copy_(batches)
        for module, training in modes:
            module.training = training
    return True


def _clone(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.clone()


__all__ = ["evenly_spaced", "recompute_batch_norm", "tracking_batch_norms"]
