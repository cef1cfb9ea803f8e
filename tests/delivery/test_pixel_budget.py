"""The budget of pixels that predictions decode at once."""

from __future__ import annotations

import io
import threading

import pytest
import torch
from PIL import Image

from automl.data.decode import Preprocess
from automl.delivery import inference
from automl.delivery.pixel_budget import DECODING, PixelBudget


def _holding(budget: PixelBudget, pixels: int, release: threading.Event) -> threading.Thread:
    """A thread that holds ``pixels`` until ``release`` is set."""

    def hold() -> None:
        with budget.hold(pixels):
            release.wait(10)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def test_large_images_wait_their_turn_and_small_ones_go_side_by_side() -> None:
    budget = PixelBudget(100)
    first_done = threading.Event()
    first = _holding(budget, 70, first_done)
    while budget.used != 70:
        threading.Event().wait(0.001)

    with budget.hold(30):  # fits beside it
        assert budget.used == 100
    second_done = threading.Event()
    second = _holding(budget, 70, second_done)
    second.join(0.2)
    assert second.is_alive() and budget.used == 70  # waiting: only the first holds pixels

    first_done.set()
    first.join(5)
    while budget.used != 70:  # the second got its turn
        threading.Event().wait(0.001)
    second_done.set()
    second.join(5)
    assert budget.used == 0


def test_an_image_larger_than_the_budget_takes_all_of_it_alone() -> None:
    budget = PixelBudget(100)
    with budget.hold(10**9):
        assert budget.used == 100
    assert budget.used == 0


def test_serving_decodes_within_the_process_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[int] = []
    real = inference.load_oriented

    def recording(opened: Image.Image, prep: Preprocess) -> Image.Image:
        held.append(DECODING.used)
        return real(opened, prep)

    monkeypatch.setattr(inference, "load_oriented", recording)
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20)).save(buffer, "PNG")
    model = inference.ServingModel(torch.nn.Identity(), None, Preprocess(4, 4), None)  # type: ignore[arg-type]

    decoded = model.decode(buffer.getvalue(), "a.png", ("files", 0), 10**6)

    assert decoded.shape == (3, 4, 4)
    assert held == [600] and DECODING.used == 0
