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
    """The batch-norm layers of ``model`` that evaluate with running statistics."""
    return [
        module
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.track_running_stats
        and module.running_mean is not None
    ]


def evenly_spaced(total: int, count: int, device: torch.device) -> torch.Tensor:
    """``min(count, total)`` indices spread evenly over ``[0, total)``: every class of a
    folder sorted by class is represented, and the choice needs no randomness."""
    count = min(count, total)
    return torch.linspace(0, total - 1, count, device=device).round().long().unique()


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

    The statistics of up to ``chunk`` images are exact; more are passed in equal chunks
    whose statistics are averaged. Momentum, the layers' batch counters and the model's
    training mode are left as they were, so training goes on as it would have.

    Args:
        model: The network (not a compiled wrapper: its layers are toggled directly).
        images: The stored training images (e.g. uint8), on the model's device.
        count: How many images to pass; below 2 nothing is recomputed.
        prepare: Turns a stored batch into model input (e.g. ``ImageData.normalize``).
        accel: The run's device settings (memory format, autocast).
        chunk: The most images passed at once.

    Returns:
        Whether any statistics were recomputed (False without tracking batch norms).
    """
    layers = tracking_batch_norms(model)
    if not layers or min(count, len(images)) < 2:
        return False
    index = evenly_spaced(len(images), count, images.device)
    pieces = torch.tensor_split(index, -(-len(index) // chunk))  # sizes differ by at most 1
    saved = [(layer.momentum, _clone(layer.num_batches_tracked)) for layer in layers]
    was_training = model.training
    model.eval()  # dropout and the like off: the statistics of what evaluation sees
    for layer in layers:
        layer.train()
        layer.momentum = None  # a cumulative average over the chunks
        layer.reset_running_stats()
    try:
        for piece in pieces:
            with accel.autocast():
                model(accel.batch(prepare(images[piece])))
    finally:
        for layer, (momentum, batches) in zip(layers, saved, strict=True):
            layer.momentum = momentum
            if batches is not None:
                layer.num_batches_tracked.copy_(batches)
        model.train(was_training)
    return True


def _clone(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.clone()


__all__ = ["evenly_spaced", "recompute_batch_norm", "tracking_batch_norms"]
