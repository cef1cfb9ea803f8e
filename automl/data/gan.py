"""A small class-conditional DCGAN that synthesizes images to top up minority classes.

``train_gan`` fits a generator on the *training split only* (the caller passes nothing
else); ``synthesize`` draws a given number of uint8 images per class from it. The
generator upsamples a latent vector joined with a class embedding through two strided
transposed convolutions; the discriminator is a two-block strided CNN with a projection
head for the class (Miyato & Koyama, 2018). Both are deterministic for a seed on the CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

LATENT_DIM = 64


class ConditionalGenerator(nn.Module):
    """Maps ``(noise, class)`` to an image in ``[-1, 1]`` shaped ``(C, H, W)``.

    Args:
        num_classes: Number of classes.
        channels: Image channels.
        height: Image height.
        width: Image width.
        base_width: Channels of the last hidden layer (twice that before it).
        latent_dim: Size of the noise vector.
    """

    def __init__(
        self,
        num_classes: int,
        channels: int,
        height: int,
        width: int,
        base_width: int = 64,
        latent_dim: int = LATENT_DIM,
    ) -> None:
        super().__init__()
        self.config = {
            "num_classes": num_classes,
            "channels": channels,
            "height": height,
            "width": width,
            "base_width": base_width,
            "latent_dim": latent_dim,
        }
        self.start = (math.ceil(height / 4), math.ceil(width / 4))
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.project = nn.Sequential(
            nn.Linear(2 * latent_dim, 2 * base_width * self.start[0] * self.start[1]),
            nn.BatchNorm1d(2 * base_width * self.start[0] * self.start[1]),
            nn.ReLU(inplace=True),
        )
        self.body = nn.Sequential(
            nn.ConvTranspose2d(2 * base_width, base_width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(base_width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(base_width, channels, 4, 2, 1),
            nn.Tanh(),
        )

    @property
    def latent_dim(self) -> int:
        """Size of the noise vector."""
        return int(self.config["latent_dim"])

    @property
    def num_classes(self) -> int:
        """Number of classes it was trained for."""
        return int(self.config["num_classes"])

    def forward(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Returns images in ``[-1, 1]``, ``(N, C, H, W)``."""
        hidden = self.project(torch.cat([noise, self.embed(labels)], dim=1))
        hidden = hidden.view(len(noise), -1, *self.start)
        out = self.body(hidden)
        return out[:, :, : self.config["height"], : self.config["width"]]


MIN_DISCRIMINATED = 4
"""The smallest side the discriminator's two strided convolutions take; smaller images
are padded up to it."""


def _at_least(images: torch.Tensor, side: int) -> torch.Tensor:
    """``images`` zero-padded on the bottom and right to at least ``side`` x ``side``."""
    height, width = images.shape[-2:]
    if height >= side and width >= side:
        return images
    return F.pad(images, (0, max(side - width, 0), 0, max(side - height, 0)))


class ConditionalDiscriminator(nn.Module):
    """Scores ``(image, class)`` pairs: a strided CNN with a class-projection head."""

    def __init__(
        self, num_classes: int, channels: int, height: int, width: int, base_width: int = 64
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, base_width, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(base_width, 2 * base_width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * base_width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
        )
        with torch.no_grad():
            probe = _at_least(torch.zeros(2, channels, height, width), MIN_DISCRIMINATED)
            size = self.features(probe).shape[1]
        self.score = nn.Linear(size, 1)
        self.embed = nn.Embedding(num_classes, size)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Returns one logit per image (real is positive)."""
        features = self.features(_at_least(images, MIN_DISCRIMINATED))
        return self.score(features).squeeze(1) + (self.embed(labels) * features).sum(dim=1)


@dataclass
class TrainedGan:
    """What ``train_gan`` produced."""

    generator: ConditionalGenerator
    """The generator, in eval mode, on the training device."""
    seconds: float
    """Wall-clock training time."""
    steps: int
    generator_loss: float
    """Generator loss of the last step."""
    discriminator_loss: float
    """Discriminator loss of the last step."""


def train_gan(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    steps: int,
    seed: int,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    lr: float = 2e-4,
    base_width: int = 64,
) -> TrainedGan:
    """Trains a class-conditional DCGAN on uint8 training images.

    Real batches are drawn uniformly; fake batches use uniformly drawn classes (among
    those present), so minority classes get as much generator training as the others.

    Args:
        images: uint8 ``(N, C, H, W)``: the training split only.
        labels: int64 ``(N,)``.
        num_classes: Number of classes (labels index ``range(num_classes)``).
        steps: Optimizer steps for each network.
        seed: Seeds initialization and sampling (deterministic on the CPU).
        device: Where to train.
        batch_size: Images per step (capped at ``N``).
        lr: Adam learning rate of both networks (betas 0.5, 0.999 as in DCGAN).
        base_width: Channel width of both networks.

    Returns:
        The trained generator with its training time.

    Raises:
        ValueError: If the images are not uint8 ``(N, C, H, W)`` or ``steps < 1``.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    started = time.perf_counter()
    device = torch.device(device)
    _, channels, height, width = images.shape
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        generator = ConditionalGenerator(num_classes, channels, height, width, base_width)
        discriminator = ConditionalDiscriminator(num_classes, channels, height, width, base_width)
    generator, discriminator = generator.to(device), discriminator.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    rng = torch.Generator(device=device).manual_seed(seed)
    images, labels = images.to(device), labels.to(device)
    present = torch.nonzero(torch.bincount(labels, minlength=num_classes)).flatten()
    batch = max(2, min(batch_size, len(labels)))
    loss_g = loss_d = torch.zeros((), device=device)
    generator.train()
    discriminator.train()
    for _ in range(steps):
        index = torch.randint(len(labels), (batch,), generator=rng, device=device)
        real, real_labels = images[index].float().div_(127.5).sub_(1.0), labels[index]
        fake_labels = present[torch.randint(len(present), (batch,), generator=rng, device=device)]
        noise = torch.randn(batch, generator.latent_dim, generator=rng, device=device)
        fake = generator(noise, fake_labels)

        real_logits = discriminator(real, real_labels)
        fake_logits = discriminator(fake.detach(), fake_labels)
        loss_d = F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        fooled = discriminator(fake, fake_labels)
        loss_g = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    generator.eval()
    return TrainedGan(
        generator=generator,
        seconds=time.perf_counter() - started,
        steps=steps,
        generator_loss=float(loss_g.detach()),
        discriminator_loss=float(loss_d.detach()),
    )


@torch.inference_mode()
def synthesize(
    generator: ConditionalGenerator,
    counts_per_class: Sequence[int] | Mapping[int, int] | torch.Tensor,
    seed: int = 0,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws images from a trained generator.

    Args:
        generator: From ``train_gan`` (or ``load_generator``).
        counts_per_class: Images wanted per class: a sequence indexed by class, or a
            mapping ``{class: count}`` (e.g. ``gan_topup_counts(...)``).
        seed: Seed of the noise.
        batch_size: Images generated at once.

    Returns:
        ``(images, labels)``: uint8 ``(M, C, H, W)`` and int64 ``(M,)``, on the CPU,
        grouped by class in class order.

    Raises:
        ValueError: If a class index is outside the generator's classes or a count is negative.
    """
    if isinstance(counts_per_class, Mapping):
        items = sorted((int(k), int(v)) for k, v in counts_per_class.items())
    else:
        items = [
            (cls, int(count))
            for cls, count in enumerate(torch.as_tensor(counts_per_class).tolist())
        ]
    for cls, count in items:
        if not 0 <= cls < generator.num_classes or count < 0:
            raise ValueError(
                f"invalid class {cls} or count {count} for {generator.num_classes} classes"
            )
    labels = torch.cat(
        [torch.full((count,), cls, dtype=torch.int64) for cls, count in items]
        or [torch.zeros(0, dtype=torch.int64)]
    )
    device = next(generator.parameters()).device
    generator.eval()
    rng = torch.Generator(device=device).manual_seed(seed)
    config = generator.config
    out = torch.empty(
        len(labels), config["channels"], config["height"], config["width"], dtype=torch.uint8
    )
    for start in range(0, len(labels), batch_size):
        part = labels[start : start + batch_size].to(device)
        noise = torch.randn(len(part), generator.latent_dim, generator=rng, device=device)
        images = generator(noise, part)
        out[start : start + len(part)] = (
            images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()
        )
    return out, labels


def generator_state(generator: ConditionalGenerator) -> dict[str, Any]:
    """The generator as plain tensors and numbers (for ``torch.save``; loads with
    ``weights_only=True``)."""
    return {
        "config": dict(generator.config),
        "state_dict": {key: value.detach().cpu() for key, value in generator.state_dict().items()},
    }


def load_generator(state: Mapping[str, Any]) -> ConditionalGenerator:
    """Rebuilds a generator from ``generator_state`` output, in eval mode on the CPU."""
    generator = ConditionalGenerator(**state["config"])
    generator.load_state_dict(state["state_dict"])
    return generator.eval()
