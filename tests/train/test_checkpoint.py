"""Checkpoint and resume: a resumed run equals an uninterrupted one, bit for bit (CPU)."""

from __future__ import annotations

import io
from dataclasses import asdict, replace

import pytest
import torch

from automl.data import ImageData, load_dataset
from automl.train import TrainingInterrupted, train
from automl.train.checkpoint import TrainState
from automl.train.hyperparameters import flat_config


@pytest.fixture(scope="module")
def small_data() -> ImageData:
    """A 301/150 slice of digits."""
    full = load_dataset("digits")
    return replace(
        full,
        train_x=full.train_x[:301],
        train_y=full.train_y[:301],
        val_x=full.val_x[:150],
        val_y=full.val_y[:150],
    )


CONFIG = flat_config(
    {"epochs": 3, "width": 8, "depth": 2, "batch_size": 64, "dropout": 0.3, "scheduler": "cosine"}
)


TIMINGS = {"latency_ms", "batch_latency_ms"}


def _untimed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The history without latencies, which are measured anew by every run."""
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in history]


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_after_each_epoch_but_the_last(small_data: ImageData) -> None:
    states: list[TrainState] = []
    result = train(CONFIG, data=small_data, checkpoint=states.append)
    assert [(s.epoch, s.batch) for s in states] == [(1, 0), (2, 0)]
    assert [len(s.history) for s in states] == [1, 2]
    assert states[1].history == result.history[:2]


def test_checkpoint_spacing_skips_epoch_ends_that_come_too_soon(small_data: ImageData) -> None:
    # Found by exploratory testing: epochs of 0.2 s each wrote the whole training state,
    # 600 KB per epoch into PostgreSQL.
    states: list[TrainState] = []
    train(CONFIG, data=small_data, checkpoint=states.append, checkpoint_spacing=3600)
    assert states == []
    stopped: list[TrainState] = []
    calls = {"n": 0}

    def stop() -> bool:  # in the second epoch: a stop still checkpoints at once
        calls["n"] += 1
        return calls["n"] == 7

    with pytest.raises(TrainingInterrupted):
        train(
            CONFIG,
            data=small_data,
            should_stop=stop,
            checkpoint=stopped.append,
            checkpoint_spacing=3600,
        )
    assert [(s.epoch, s.batch) for s in stopped] == [(1, 2)]


@pytest.mark.parametrize("stop_after_batches", [2, 5, 7])
def test_interrupted_run_resumes_exactly(small_data: ImageData, stop_after_batches: int) -> None:
    """Stopped mid-epoch (5 batches per epoch here), saved, reloaded from bytes, resumed."""
    reference = train(CONFIG, data=small_data)
    saved: list[bytes] = []
    batches = {"n": 0}

    def stop() -> bool:
        batches["n"] += 1
        return batches["n"] == stop_after_batches

    with pytest.raises(TrainingInterrupted):
        train(
            CONFIG,
            data=small_data,
            should_stop=stop,
            checkpoint=lambda s: saved.append(s.to_bytes()),
        )
    last = TrainState.from_bytes(saved[-1])
    epochs_done, batches = divmod(stop_after_batches - 1, 5)
    assert (last.epoch, last.batch) == (epochs_done, batches + 1)

    reported: list[int] = []
    resumed = train(
        CONFIG,
        lambda epoch, metrics: reported.append(epoch) or False,
        data=small_data,
        resume=last,
    )

    assert _same_weights(resumed.state_dict, reference.state_dict)
    assert _untimed(resumed.history) == _untimed(reference.history)
    assert reported == list(range(last.epoch + 1, CONFIG.epochs + 1))  # no epoch twice


def test_checkpoint_interval_saves_within_an_epoch(small_data: ImageData) -> None:
    states: list[TrainState] = []
    train(CONFIG, data=small_data, checkpoint=states.append, checkpoint_interval=0.0)
    within = [(s.epoch, s.batch) for s in states if s.batch]
    assert within[:5] == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5)]


def test_resume_from_a_state_after_the_last_epoch_only_evaluates(small_data: ImageData) -> None:
    states: list[TrainState] = []
    full = train(CONFIG, data=small_data, checkpoint=states.append, checkpoint_interval=0.0)
    final = states[-1]  # after the last batch of the last epoch, before its evaluation
    assert (final.epoch, final.batch) == (2, 5)
    resumed = train(CONFIG, data=small_data, resume=final)
    assert _untimed([resumed.metrics]) == _untimed([full.metrics])


def test_state_bytes_load_with_weights_only(small_data: ImageData) -> None:
    states: list[TrainState] = []
    train(
        flat_config({"epochs": 2, "width": 8, "depth": 1, "batch_size": 64}),
        data=small_data,
        checkpoint=states.append,
    )
    blob = states[0].to_bytes()
    again = TrainState.from_bytes(blob)
    assert again.epoch == 1 and again.history == states[0].history
    assert torch.equal(again.cpu_rng, states[0].cpu_rng)
    with pytest.raises(Exception):  # noqa: B017 (any unpickling error will do)
        TrainState.from_bytes(b"not a checkpoint")


def test_a_checkpoint_keeps_its_seed_and_older_ones_read_as_seed_0(small_data: ImageData) -> None:
    """Checkpoints written before trials had their own seeds lack one: they trained with 0."""
    states: list[TrainState] = []
    config = flat_config({"epochs": 2, "width": 8, "depth": 1, "batch_size": 64, "seed": 9})
    train(config, data=small_data, checkpoint=states.append)
    assert TrainState.from_bytes(states[0].to_bytes()).seed == 9
    older = {k: v for k, v in asdict(states[0]).items() if k != "seed"}
    buffer = io.BytesIO()
    torch.save(older, buffer)
    assert TrainState.from_bytes(buffer.getvalue()).seed == 0


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_a_checkpoint_of_a_capturable_optimizer_resumes_on_the_cpu(
    small_data: ImageData, optimizer: str
) -> None:
    """A run on a GPU whose updates replayed from a CUDA graph saves ``capturable`` groups;
    a CPU worker resuming it keeps its own optimizer flags and finishes like a plain run."""
    config = flat_config({"epochs": 2, "width": 4, "optimizer": optimizer})
    states: list[TrainState] = []
    plain = train(config, data=small_data, checkpoint=states.append)
    saved = states[0].optimizer
    graphed = {
        **saved,
        "param_groups": [{**group, "capturable": True} for group in saved["param_groups"]],
    }
    resumed = train(config, data=small_data, resume=replace(states[0], optimizer=graphed))
    assert _same_weights(resumed.state_dict, plain.state_dict)
    assert _untimed(resumed.history) == _untimed(plain.history)


@pytest.mark.parametrize("batch", [0, 3])
def test_a_checkpoint_written_on_another_kind_of_device_resumes(
    small_data: ImageData, batch: int
) -> None:
    """A GPU worker's checkpoint holds a CUDA generator's 16-byte state, which a CPU
    generator refuses: the resumed run draws its orders anew and finishes its epochs."""
    states: list[TrainState] = []
    train(CONFIG, data=small_data, checkpoint=states.append, checkpoint_interval=0.0)
    saved = next(s for s in states if (s.epoch, s.batch) == (1, batch))
    on_cuda = replace(saved, epoch_generator=torch.zeros(16, dtype=torch.uint8))
    reported: list[int] = []
    resumed = train(
        CONFIG,
        lambda epoch, metrics: reported.append(epoch) or False,
        data=small_data,
        resume=TrainState.from_bytes(on_cuda.to_bytes()),
    )
    assert reported == [2, 3]
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert all(torch.isfinite(v).all() for v in resumed.state_dict.values())
