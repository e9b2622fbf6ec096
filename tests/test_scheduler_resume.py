"""Schedulers keep their state across a driver loss (issue 21): Ray rebuilds a resumed experiment's scheduler empty
(ray-project/ray#30838); ours read their recorded events back as Tune re-adds each trial. Real Tune schedulers and
Trial objects; the "kill" drops the scheduler object, as a lost driver does, and keeps what it wrote to storage."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from cluster.tune.schedulers import LineagePBT, RecordingASHA

pytestmark = pytest.mark.unit

METRIC, MODE = "val_loss", "min"


def _asha(rungs: Path | None) -> RecordingASHA:
    return RecordingASHA(
        rungs_uri=str(rungs) if rungs else None, time_attr="training_iteration", metric=METRIC, mode=MODE,
        max_t=9, grace_period=1, reduction_factor=3, brackets=1,
    )  # fmt: skip


def _trials(n: int) -> list[Trial]:
    return [Trial("forecast", config={"lr": 0.01 * (i + 1)}, trial_id=f"t{i}", stub=True) for i in range(n)]


def _results(n: int, seed: int = 3) -> list[tuple[int, int, float]]:
    """(trial, epoch, loss) in the order a driver sees them: trials interleaved, each trial's epochs in order."""
    rng = random.Random(seed)
    quality = [rng.uniform(0.5, 2.0) for _ in range(n)]
    events = [(i, epoch, quality[i] / epoch + rng.uniform(0, 0.05)) for i in range(n) for epoch in range(1, 10)]
    events.sort(key=lambda e: (e[1] + 0.7 * e[0], e[0]))  # trials start one after another, as slots free up
    return events


def _feed(scheduler: TrialScheduler, trials: list[Trial], events: list[tuple[int, int, float]]) -> dict[str, str]:
    """Each result through the scheduler; a stopped trial reports nothing more. Returns decisions by (trial, epoch)."""
    decisions = {}
    for i, epoch, loss in events:
        trial = trials[i]
        if trial.status == Trial.TERMINATED:
            continue
        action = scheduler.on_trial_result(None, trial, {"training_iteration": epoch, METRIC: loss})
        decisions[f"{trial.trial_id}@{epoch}"] = action
        if action == TrialScheduler.STOP:
            trial.set_status(Trial.TERMINATED)
    return decisions


def test_a_resumed_asha_makes_the_uninterrupted_decisions(tmp_path: Path) -> None:
    n = 24
    events = _results(n)
    cut = events.index(next(e for e in events if e[:2] == (n // 2, 1)))  # half the trials have reached rung 1

    whole, trials = _asha(None), _trials(n)
    for t in trials:
        whole.on_trial_add(None, t)
    expected = _feed(whole, trials, events)

    first, trials = _asha(tmp_path / "asha_rungs.jsonl"), _trials(n)
    for t in trials:
        first.on_trial_add(None, t)
    before = _feed(first, trials, events[:cut])
    assert any(d == TrialScheduler.STOP for d in before.values()), "the kill should come after some rung decisions"
    del first  # the driver is lost; asha_rungs.jsonl is in storage

    resumed = _asha(tmp_path / "asha_rungs.jsonl")
    for t in trials:  # Tune re-adds every trial of the round on resume, finished ones too
        resumed.on_trial_add(None, t)
    assert sorted(resumed.restored) == sorted({t.trial_id for t in trials if t.trial_id in str(before)})
    after = _feed(resumed, trials, events[cut:])
    assert after == {k: v for k, v in expected.items() if k not in before}
    at_rungs = {k: v for k, v in after.items() if k.endswith(("@1", "@3"))}
    assert TrialScheduler.STOP in at_rungs.values(), f"a trial below a recorded cut is stopped: {at_rungs}"
    assert TrialScheduler.CONTINUE in at_rungs.values(), f"and one above it is not: {at_rungs}"

    # Ray's own ASHA, rebuilt empty, decides differently on the same results: the test can fail.
    empty, again = (
        ASHAScheduler(
            time_attr="training_iteration", metric=METRIC, mode=MODE, max_t=9, grace_period=1, reduction_factor=3
        ),
        _trials(n),
    )
    for t in again:
        empty.on_trial_add(None, t)
    _feed(empty, again, events[:0])
    for t, old in zip(again, trials, strict=True):
        if old.status == Trial.TERMINATED:
            t.set_status(Trial.TERMINATED)
    forgetful = _feed(empty, again, events[cut:])
    assert forgetful != after


def test_a_rung_stop_the_snapshot_missed_stands_when_the_trial_replays_to_it(tmp_path: Path) -> None:
    rungs = tmp_path / "asha_rungs.jsonl"
    first, trials = _asha(rungs), _trials(4)
    for t in trials:
        first.on_trial_add(None, t)
    for i, loss in enumerate((0.1, 0.2, 0.3)):
        first.on_trial_result(None, trials[i], {"training_iteration": 1, METRIC: loss})
    assert first.on_trial_result(None, trials[3], {"training_iteration": 1, METRIC: 0.9}) == TrialScheduler.STOP
    # Tune's snapshot predates the stop: the trial is resumed from an earlier checkpoint and reaches epoch 1 again.
    resumed, again = _asha(rungs), _trials(4)
    for t in again:
        resumed.on_trial_add(None, t)
    assert resumed.on_trial_result(None, again[3], {"training_iteration": 1, METRIC: 0.05}) == TrialScheduler.STOP
    assert resumed.on_trial_result(None, again[0], {"training_iteration": 2, METRIC: 0.09}) == TrialScheduler.CONTINUE
    assert len([e for e in resumed.log.events or []]) == 0  # a replayed decision is not recorded twice


class _Population:
    """What PBT asks of Tune's controller when it checks and exploits: the trials and their status, and a pause
    (recorded here; Tune's controller would stop the actor and restart it from the cloned checkpoint)."""

    def __init__(self, trials: list[Trial]) -> None:
        self.trials = trials
        self.search_alg = None
        self.paused: list[str] = []

    def get_trials(self) -> list[Trial]:
        return self.trials

    def pause_trial(self, trial: Trial, should_checkpoint: bool = True) -> None:
        self.paused.append(trial.trial_id)
        trial.set_status(Trial.PAUSED)


def _pbt(state: Path | None) -> LineagePBT:
    # log_config (Ray's policy text files) wants a live Ray session's folder; it takes no part in decisions.
    return LineagePBT(
        state_uri=str(state) if state else None, time_attr="training_iteration", metric=METRIC, mode=MODE,
        perturbation_interval=2, hyperparam_mutations={"lr": [0.001, 0.01, 0.1]}, quantile_fraction=0.25,
        log_config=False,
    )  # fmt: skip


def _pbt_trials() -> list[Trial]:
    trials = _trials(4)
    for t in trials:
        t.set_status(Trial.RUNNING)
    return trials


def _check(scheduler: LineagePBT, trials: list[Trial], epoch: int, losses: list[float]) -> None:
    """Every trial's result at ``epoch``, with the state update PBT makes at a due check (no exploit yet)."""
    for trial, loss in zip(trials, losses, strict=True):
        state = scheduler._trial_state[trial]
        if epoch - state.last_perturbation_time >= scheduler._perturbation_interval:
            scheduler._save_trial_state(state, epoch, {"training_iteration": epoch, METRIC: loss}, trial)
            state.last_perturbation_time = epoch


LOSSES = {1: [0.9, 0.5, 0.4, 0.3], 2: [0.8, 0.45, 0.35, 0.2], 3: [0.75, 0.4, 0.3, 0.15]}
"""Four trials' losses at epochs 1-3: t0 the weakest, t3 the strongest."""


def _killed_after(state: Path, losses: dict[int, list[float]]) -> None:
    """A driver that saw ``losses`` and was lost: only what its PBT wrote to ``state`` remains."""
    first, killed = _pbt(state), _pbt_trials()
    for t in killed:
        first.on_trial_add(_Population(killed), t)
    for epoch, row in losses.items():
        _check(first, killed, epoch, row)


def test_a_resumed_pbt_keeps_its_population_and_the_exploit_due_at_the_kill(tmp_path: Path) -> None:
    whole, trials = _pbt(None), _pbt_trials()
    population = _Population(trials)
    for t in trials:
        whole.on_trial_add(population, t)
    for epoch, row in LOSSES.items():
        _check(whole, trials, epoch, row)

    _killed_after(tmp_path / "pbt_state.json", LOSSES)

    resumed, again = _pbt(tmp_path / "pbt_state.json"), _pbt_trials()
    for t in again:
        resumed.on_trial_add(_Population(again), t)
    assert sorted(resumed.restored) == ["t0", "t1", "t2", "t3"]
    for old, new in zip(trials, again, strict=True):
        a, b = whole._trial_state[old], resumed._trial_state[new]
        assert (a.last_score, a.last_perturbation_time, a.last_train_time) == (
            b.last_score,
            b.last_perturbation_time,
            b.last_train_time,
        )
    lower, upper = resumed._quantiles()
    assert [t.trial_id for t in lower] == ["t0"] and [t.trial_id for t in upper] == ["t3"]
    # At epoch 4 a check is due for every trial (last at 2): t0, the weakest, is the one to exploit; an empty
    # scheduler would see no population at its first result (no quantiles, no exploit).
    state = resumed._trial_state[again[0]]
    assert 4 - state.last_perturbation_time >= resumed._perturbation_interval
    empty = _pbt(None)
    for t in _pbt_trials():
        empty.on_trial_add(_Population([]), t)
    assert empty._quantiles() == ([], [])


def _restored(trials: list[Trial], folder: Path) -> list[Trial]:
    """Trials as Tune restores them from the experiment state: each with its newest checkpoint."""
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult

    for t in trials:
        (folder / t.trial_id).mkdir(parents=True, exist_ok=True)
        checkpoint = Checkpoint.from_directory(str(folder / t.trial_id))
        t.run_metadata.checkpoint_manager._latest_checkpoint_result = _TrainingResult(checkpoint, {})
    return trials


def test_the_exploit_due_at_the_kill_happens_after_resume(tmp_path: Path) -> None:
    """Through PBT's own ``on_trial_result``: after a kill at epoch 3, the weakest trial's next due check (epoch 4)
    clones the strongest one's checkpoint, as in the run that was never killed; Ray's empty rebuild exploits nothing."""
    at_4 = {"training_iteration": 4, METRIC: 0.7}

    whole, trials = _pbt(tmp_path / "whole.json"), _restored(_pbt_trials(), tmp_path / "whole")
    population = _Population(trials)
    for t in trials:
        whole.on_trial_add(population, t)
    for epoch, row in LOSSES.items():
        _check(whole, trials, epoch, row)
    for t in trials:  # what the controller's save at each trial's last check left as its clone source
        whole._trial_state[t].last_checkpoint = t.checkpoint
    whole.on_trial_result(population, trials[0], at_4)
    assert [(e["trial"], e["cloned_from"]) for e in whole.exploits] == [("t0", "t3")]

    _killed_after(tmp_path / "pbt_state.json", LOSSES)

    resumed, again = _pbt(tmp_path / "pbt_state.json"), _restored(_pbt_trials(), tmp_path / "resumed")
    controller = _Population(again)
    for t in again:
        resumed.on_trial_add(controller, t)
    resumed.on_trial_result(controller, again[0], at_4)
    assert [(e["trial"], e["cloned_from"], e["step"]) for e in resumed.exploits] == [("t0", "t3", 0)]
    assert controller.paused == ["t0"]
    assert again[0].checkpoint is not None and again[0].checkpoint.path == again[3].checkpoint.path
    assert resumed.exploits[0]["donor"] == {"lr": 0.04}  # explored from the donor's value, not its own

    empty, fresh = _pbt(None), _restored(_pbt_trials(), tmp_path / "empty")
    bare = _Population(fresh)
    for t in fresh:
        empty.on_trial_add(bare, t)
    empty.on_trial_result(bare, fresh[0], at_4)
    assert empty.exploits == [] and bare.paused == []
