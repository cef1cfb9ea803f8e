"""The class-conditional GAN: trains on uint8 images, synthesizes the asked classes."""

from __future__ import annotations

import pytest
import torch

from automl.data.gan import generator_state, load_generator, synthesize, train_gan


def tiny_images(n: int = 48, channels: int = 1, size: tuple[int, int] = (10, 12)):
    """Class 0 dark, class 1 bright, class 2 has one sample only."""
    torch.manual_seed(0)
    labels = torch.tensor([0] * (n // 2) + [1] * (n // 2 - 1) + [2])
    base = torch.where(labels == 1, 200, 40).view(-1, 1, 1, 1)
    noise = torch.randint(-30, 30, (n, channels, *size))
    return (base + noise).clamp(0, 255).to(torch.uint8), labels


def test_gan_trains_and_synthesizes_the_asked_classes() -> None:
    images, labels = tiny_images()
    trained = train_gan(images, labels, num_classes=4, steps=3, seed=0, batch_size=16, base_width=8)
    assert trained.steps == 3 and trained.seconds > 0
    assert all(
        map(
            torch.isfinite,
            (torch.tensor(trained.generator_loss), torch.tensor(trained.discriminator_loss)),
        )
    )
    fake, fake_labels = synthesize(trained.generator, {2: 5, 0: 3}, seed=1)
    assert fake.dtype == torch.uint8 and fake.shape == (8, 1, 10, 12)
    assert fake_labels.tolist() == [0, 0, 0, 2, 2, 2, 2, 2]
    by_list, list_labels = synthesize(trained.generator, [3, 0, 5], seed=1)
    assert torch.equal(by_list, fake) and torch.equal(list_labels, fake_labels)
    assert fake.float().std() > 0  # not a constant image


@pytest.mark.parametrize("size", [(2, 2), (1, 5), (3, 3)], ids=str)
def test_gan_takes_images_smaller_than_its_discriminators_strides(size: tuple[int, int]) -> None:
    """Images below 4 px once failed every trial inside the discriminator's conv."""
    images, labels = tiny_images(size=size)
    trained = train_gan(images, labels, num_classes=3, steps=2, seed=0, batch_size=16, base_width=8)
    fake, _ = synthesize(trained.generator, {2: 4}, seed=1)
    assert fake.shape == (4, 1, *size)


def test_gan_is_deterministic_per_seed_on_cpu() -> None:
    images, labels = tiny_images(channels=3, size=(8, 8))
    first = train_gan(images, labels, 3, steps=2, seed=5, batch_size=8, base_width=8)
    second = train_gan(images, labels, 3, steps=2, seed=5, batch_size=8, base_width=8)
    other = train_gan(images, labels, 3, steps=2, seed=6, batch_size=8, base_width=8)
    a, _ = synthesize(first.generator, [2, 2, 2], seed=0)
    b, _ = synthesize(second.generator, [2, 2, 2], seed=0)
    c, _ = synthesize(other.generator, [2, 2, 2], seed=0)
    assert a.shape == (6, 3, 8, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generator_round_trips_through_weights_only_load(tmp_path) -> None:
    images, labels = tiny_images()
    trained = train_gan(images, labels, 3, steps=1, seed=0, batch_size=8, base_width=8)
    torch.save(generator_state(trained.generator), tmp_path / "g.pt")
    loaded = load_generator(torch.load(tmp_path / "g.pt", weights_only=True))
    assert torch.equal(
        synthesize(loaded, [1, 1, 1])[0], synthesize(trained.generator, [1, 1, 1])[0]
    )


def test_gan_rejects_bad_input() -> None:
    images, labels = tiny_images()
    with pytest.raises(ValueError, match="uint8"):
        train_gan(images.float(), labels, 3, steps=1, seed=0)
    trained = train_gan(images, labels, 3, steps=1, seed=0, batch_size=8, base_width=8)
    with pytest.raises(ValueError, match="invalid class 7"):
        synthesize(trained.generator, {7: 1})
