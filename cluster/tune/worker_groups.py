"""Release the Ray Train workers of data-parallel trials that Tune stopped, paused or lost.

Ray Train places a trial's workers in a placement group that lives as long as the experiment's driver, not as long
as the trial. When Tune ends a trial abruptly (ASHA stops it, PBT pauses it, it fails) Ray Train gets no chance to
remove that group, and its CPUs stay reserved: the next data-parallel trial then waits forever for workers (seen
here with two 2-worker trials on 2 CPUs). Rank 0 reports its group's id; this callback removes the group of every
trial that is no longer running.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from trainables import metrics as M

RUNNING = "RUNNING"


class WorkerGroupReaper(Callback):
    def __init__(self) -> None:
        self.groups: dict[str, str] = {}

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        group = result.get(M.WORKER_GROUP)
        if isinstance(group, str) and group:
            self.groups[trial.trial_id] = group

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        status = {t.trial_id: t.status for t in trials}
        for trial_id in [t for t in self.groups if status.get(t) != RUNNING]:
            release(self.groups.pop(trial_id))

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        for group in self.groups.values():
            release(group)
        self.groups.clear()


def release(group_hex: str) -> None:
    """Remove a placement group by id; one already removed (Ray Train finished cleanly) is fine."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    try:
        remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(group_hex))))
    except Exception:  # removed already, or the cluster lost it with its node: nothing held
        pass


__all__ = ["WorkerGroupReaper", "release"]
