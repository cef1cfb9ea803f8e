"""Top-k weight retention: exactly the trials that fall out lose their weights, nothing else."""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.artifacts import get_all_artifact_meta
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from automl.spec import StudySpec
from automl.store import (
    Outranking,
    Store,
    WeightsNotFoundError,
    attrs,
    cancel_study,
    delete_study,
    load_state_dict,
    open_store,
    open_weights,
    optuna_rows,
    read_checkpoint,
    retain_weights,
    save_weights,
    submit_study,
    write_checkpoint,
)
from automl.store.artifacts import weights_format
from automl.store.best_reads import best_trials_of
from tests.store.conftest import Outcome, end_trial, start_trial

SpecFactory = Callable[..., StudySpec]


def _submit(store: Store, tiny_spec: SpecFactory, **overrides: Any) -> int:
    overrides.setdefault("budget", {"n_trials": 40, "max_failed": 10})
    return submit_study(store, tiny_spec(**overrides)).id


def _run(store: Store, study_id: int, outcome: Outcome, worker: str = "worker-a") -> int:
    """One trial that saves weights (as a worker does, while RUNNING), then ends with
    ``outcome`` (RUNNING: left running). Returns its number."""
    lease, trial_id = start_trial(store, study_id, worker)
    study = optuna.load_study(
        study_name=store.storage.get_study_name_from_id(study_id), storage=store.storage
    )
    trial = optuna.Trial(study, trial_id)
    weights = {"w": torch.full((2,), float(trial.number))}
    save_weights(store.storage, trial, weights, store.artifacts)
    if outcome != TrialState.RUNNING:
        end_trial(store, lease, trial_id, outcome)
    return trial.number


def _holding(store: Store, study_id: int) -> list[int]:
    """Numbers of the trials whose weights can be read."""
    numbers = []
    for trial in store.storage.get_all_trials(study_id):
        try:
            with open_weights(trial, store.artifacts):
                numbers.append(trial.number)
        except WeightsNotFoundError:
            continue
    return numbers


def _artifact(store: Store, study_id: int, number: int) -> str:
    return store.storage.get_all_trials(study_id)[number].user_attrs[attrs.WEIGHTS]


def test_only_the_top_k_keep_weights_and_exactly_the_fallen_lose_them(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _submit(store, tiny_spec, keep_weights=2)
    # value -> after this trial, which trials hold weights (ties: the lower number ranks first)
    steps: list[tuple[Outcome, list[int], list[int]]] = [
        (0.5, [0], []),
        (0.7, [0, 1], []),
        (0.6, [1, 2], [0]),
        (0.9, [1, 3], [2]),
        (0.7, [1, 3], [4]),  # ties trial 1, which came first
        (0.1, [1, 3], [5]),
        (0.95, [3, 6], [1]),
    ]
    artifacts: dict[int, str] = {}
    for outcome, holding, removed in steps:
        number = _run(store, study_id, outcome)
        artifacts[number] = _artifact(store, study_id, number)
        assert retain_weights(store, study_id) == removed
        assert _holding(store, study_id) == holding
        assert retain_weights(store, study_id) == []  # nothing more falls out on its own

    trials = store.storage.get_all_trials(study_id)
    for trial in trials:
        artifact_id = artifacts[trial.number]
        metas = get_all_artifact_meta(trial, storage=store.storage)
        if trial.number in (3, 6):
            assert trial.user_attrs[attrs.WEIGHTS] == artifact_id
            assert [meta.artifact_id for meta in metas] == [artifact_id]
            assert attrs.WEIGHTS_REMOVED not in trial.user_attrs
            weights = load_state_dict(trial, store.artifacts)
            assert torch.equal(weights["w"], torch.full((2,), float(trial.number)))
        else:
            assert attrs.WEIGHTS not in trial.user_attrs and metas == []
            assert trial.user_attrs[attrs.WEIGHTS_REMOVED] == (
                "not among the study's best 2 (keep_weights)"
            )
            with pytest.raises(ArtifactNotFound):
                store.artifacts.open_reader(artifact_id)
            with pytest.raises(WeightsNotFoundError, match="keep_weights"):
                load_state_dict(trial, store.artifacts)


def test_running_trials_checkpoints_and_other_studies_are_never_touched(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _submit(store, tiny_spec, keep_weights=1)
    other_id = _submit(store, tiny_spec, name="other", keep_weights=1)
    _run(store, other_id, 0.1)
    _run(store, other_id, 0.2)
    running = _run(store, study_id, TrialState.RUNNING)  # saved weights, not told yet
    checkpoint = write_checkpoint(store.artifacts, study_id, 1, b"state")
    _run(store, study_id, 0.9)
    failed = _run(store, study_id, TrialState.FAIL)  # saved weights, then ended failed
    _run(store, study_id, 0.5)

    assert retain_weights(store, study_id) == [failed, 3]
    assert _holding(store, study_id) == [running, 1]
    assert read_checkpoint(store.artifacts, checkpoint) == b"state"
    assert _holding(store, other_id) == [0, 1]  # its own retention is its own business
    reason = store.storage.get_all_trials(study_id)[failed].user_attrs[attrs.WEIGHTS_REMOVED]
    assert reason == "the trial ended fail"


def test_minimize_and_keep_all(store: Store, tiny_spec: SpecFactory) -> None:
    low = _submit(store, tiny_spec, objective={"metric": "loss"}, keep_weights=1)
    for value in (0.5, 0.2, 0.3):
        _run(store, low, value)
    assert retain_weights(store, low) == [0, 2]
    assert _holding(store, low) == [1]

    every = _submit(store, tiny_spec, name="all", keep_weights="all")
    for value in (0.5, 0.2, 0.3):
        _run(store, every, value)
    assert retain_weights(store, every) == []
    assert _holding(store, every) == [0, 1, 2]


def _two_objective_study(store: Store, tiny_spec: SpecFactory) -> int:
    """Accuracy up, latency down, the weights of the best one kept besides the front."""
    objectives = [{"metric": "accuracy"}, {"metric": "latency_ms"}]
    return _submit(store, tiny_spec, objective=None, objectives=objectives, keep_weights=1)


def test_multi_objective_keeps_the_pareto_front_plus_the_top_k(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _two_objective_study(store, tiny_spec)
    points: Sequence[tuple[float, float]] = [
        (0.90, 5.0),  # 0: front
        (0.80, 2.0),  # 1: front
        (0.70, 3.0),  # 2: dominated by 1
        (0.95, 9.0),  # 3: front, best accuracy
        (0.85, 2.0),  # 4: front; dominates 1
        (0.60, 1.0),  # 5: front
    ]
    for point in points:
        _run(store, study_id, point)
    assert retain_weights(store, study_id) == [1, 2]
    assert _holding(store, study_id) == [0, 3, 4, 5]
    _run(store, study_id, (0.96, 0.5))  # 6 dominates every other trial
    assert retain_weights(store, study_id) == [0, 3, 4, 5]
    assert _holding(store, study_id) == [6]


def test_multi_objective_front_keeps_ties_and_infinities_as_best_trials_has_them(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _two_objective_study(store, tiny_spec)
    points: Sequence[tuple[float, float]] = [
        (0.90, 5.0),  # 0: front
        (0.90, 5.0),  # 1: the same values as 0: front too
        (0.80, 3.0),  # 2: front
        (0.80, 4.0),  # 3: dominated by 2
        (-math.inf, 0.5),  # 4: front, the best latency
        (0.95, math.inf),  # 5: front, the best accuracy (the top 1)
        (0.50, math.inf),  # 6: dominated by 5
        (-math.inf, 0.5),  # 7: the same values as 4: front too
    ]
    for point in points:
        _run(store, study_id, point)
    assert retain_weights(store, study_id) == [3, 6]
    assert _holding(store, study_id) == [0, 1, 2, 4, 5, 7]
    front = best_trials_of(store, study_id, ["maximize", "minimize"])
    assert [trial.number for trial in front] == [0, 1, 2, 4, 5, 7]


def test_racing_workers_never_remove_a_kept_trial(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = _submit(store, tiny_spec, keep_weights=3)
    values = [0.31, 0.72, 0.55, 0.93, 0.12, 0.66, 0.87, 0.49, 0.78, 0.25, 0.91, 0.64]
    removed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        try:
            for value in values[worker::4]:
                _run(store, study_id, value, worker=f"worker-{worker}")
                found = retain_weights(store, study_id)
                with lock:
                    removed.extend(found)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    retain_weights(store, study_id)

    trials = store.storage.get_all_trials(study_id)
    ranked = sorted(trials, key=lambda trial: (-trial.values[0], trial.number))
    top = sorted(trial.number for trial in ranked[:3])
    assert _holding(store, study_id) == top
    assert len(removed) == len(set(removed)), "each removal is recorded once"
    assert not set(removed) & set(top)
    assert all(attrs.WEIGHTS_REMOVED in t.user_attrs for t in trials if t.number not in top)


def test_weights_are_safetensors_and_torch_save_files_still_load(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _submit(store, tiny_spec)
    number = _run(store, study_id, 0.5)
    trial = store.storage.get_all_trials(study_id)[number]
    with open_weights(trial, store.artifacts) as reader:
        assert weights_format(reader.read(16)) == "safetensors"

    # Weights stored before safetensors: a torch.save file under the same attribute.
    legacy = io.BytesIO()
    torch.save({"w": torch.arange(3.0)}, legacy)
    store.artifacts.write("legacy-weights", io.BytesIO(legacy.getvalue()))
    lease, trial_id = start_trial(store, study_id)
    store.storage.set_trial_user_attr(trial_id, attrs.WEIGHTS, "legacy-weights")
    end_trial(store, lease, trial_id, 0.4)
    old = store.storage.get_trial(trial_id)
    with open_weights(old, store.artifacts) as reader:
        assert weights_format(reader.read(16)) == "torch"
    assert torch.equal(load_state_dict(old, store.artifacts)["w"], torch.arange(3.0))


def test_a_trial_is_outranked_once_keep_trials_rank_above_it(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _submit(store, tiny_spec)
    for value in (0.9, 0.7, 0.8, 0.8):  # numbers 0 to 3
        lease, trial_id = start_trial(store, study_id)
        end_trial(store, lease, trial_id, value)

    def ranks_below(value: float, number: int, maximize: bool, keep: int) -> bool:
        return Outranking(store)(study_id, value, number, maximize, keep)  # nothing cached

    assert ranks_below(0.75, 4, maximize=True, keep=2)  # 0.9 and 0.8 (twice)
    assert not ranks_below(0.85, 4, maximize=True, keep=2)  # only 0.9
    assert ranks_below(0.8, 4, maximize=True, keep=2)  # the tie with number 2 ranks above
    assert not ranks_below(0.8, 1, maximize=True, keep=2)  # ... but not above number 1
    assert ranks_below(0.95, 4, maximize=False, keep=3)  # minimize: all four lower
    assert not ranks_below(0.75, 4, maximize=False, keep=3)  # only 0.7 is lower
    assert not ranks_below(0.1, 4, maximize=False, keep=1)
    assert not Outranking(store)(study_id + 1000, 0.1, 4, True, 1)  # no such study: none above


def test_only_complete_trials_with_finite_values_rank_above(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _submit(store, tiny_spec)
    outcomes: list[Outcome] = [float("inf"), TrialState.PRUNED, TrialState.FAIL, 0.9]
    for outcome in outcomes:
        lease, trial_id = start_trial(store, study_id)
        end_trial(store, lease, trial_id, outcome)
    _run(store, study_id, TrialState.RUNNING)  # running: not ranked either
    outranked = Outranking(store)
    assert not outranked(study_id, 0.5, 9, maximize=True, keep=2)
    assert outranked(study_id, 0.5, 9, maximize=True, keep=1)


def test_outranking_remembers_the_best_and_ranks_again_only_when_it_might_be_beaten(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = _submit(store, tiny_spec)
    rankings: list[int] = []
    real_top_ranked = optuna_rows.top_ranked

    def counting(*args: Any) -> Any:
        rankings.append(study_id)
        return real_top_ranked(*args)

    monkeypatch.setattr(optuna_rows, "top_ranked", counting)
    outranked = Outranking(store)

    def complete(value: float) -> None:
        lease, trial_id = start_trial(store, study_id)
        end_trial(store, lease, trial_id, value)

    complete(0.5)
    assert not outranked(study_id, 0.4, 9, maximize=True, keep=2)  # one trial: both kept
    complete(0.6)
    assert outranked(study_id, 0.4, 9, maximize=True, keep=2)  # ranked: 0.6, 0.5
    assert outranked(study_id, 0.45, 9, maximize=True, keep=2)  # below 0.5: looked up only
    assert outranked(study_id, 0.5, 9, maximize=True, keep=2)  # a tie with number 0
    assert len(rankings) == 2
    complete(0.9)  # the 2nd best is 0.6 now; the remembered 0.5 is stale but still above
    assert not outranked(study_id, 0.55, 9, maximize=False, keep=2)  # another key: ranked
    assert outranked(study_id, 0.55, 9, maximize=True, keep=2)  # ranked again: 0.9, 0.6
    assert len(rankings) == 4
    assert outranked(study_id, 0.58, 9, maximize=True, keep=2)  # below 0.6 now: looked up
    assert not outranked(study_id, 0.7, 9, maximize=True, keep=2)  # might get in: ranked
    assert len(rankings) == 5
    with pytest.raises(ValueError, match="at least 1"):
        outranked(study_id, 0.7, 9, maximize=True, keep=0)


def test_outranking_forgets_a_deleted_study_whose_id_a_new_one_gets(
    sqlite_url: str, tmp_path: Path, tiny_spec: SpecFactory
) -> None:
    """A SQLite database whose schema Optuna created (as before automl made study ids
    never reused) gives a new study the highest deleted id: what was remembered of the
    old study must not decide for the new one."""
    optuna.storages.RDBStorage(sqlite_url).engine.dispose()  # Optuna's own schema
    store = open_store(sqlite_url, artifacts_dir=tmp_path / "artifacts")
    try:
        _outranking_after_id_reuse(store, tiny_spec)
    finally:
        store.close()


def _outranking_after_id_reuse(store: Store, tiny_spec: SpecFactory) -> None:
    outranked = Outranking(store)
    old = _submit(store, tiny_spec)
    for value in (0.95, 0.96):
        lease, trial_id = start_trial(store, old)
        end_trial(store, lease, trial_id, value)
    assert outranked(old, 0.8, 2, maximize=True, keep=1)
    cancel_study(store, old)
    delete_study(store, old)
    new = _submit(store, tiny_spec)
    assert new == old, "the legacy schema reuses the id"
    assert not outranked(new, 0.8, 0, maximize=True, keep=1)  # nothing complete yet
    lease, trial_id = start_trial(store, new)
    end_trial(store, lease, trial_id, 0.8)
    assert not outranked(new, 0.85, 1, maximize=True, keep=1)  # it leads
