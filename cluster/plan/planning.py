"""A run's plan: options and search space checked together before anything heavy loads or starts.

Kept apart from :mod:`cluster.api.launch` (Ray, torch) so that ``lstm-tune run`` with a typo answers in well under a
second: this module imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cluster.plan.options import OptionError, RunOptions
from cluster.plan.space import check_search, grid_size, param_rules
from cluster.plan.storage import ExperimentPaths, experiment_paths
from search_spaces import SearchSpace, SearchSpaceError, load_space
from trainables.storage import Location


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything checked and resolved before ``Tuner.fit()``."""

    options: RunOptions
    space: SearchSpace
    name: str
    paths: ExperimentPaths
    round: str | None = None
    """An ``extend`` round's folder (``extend-2``) that this run's Tune experiment lives in; None: the first run."""

    @property
    def tune_root(self) -> Location:
        """Where this run's Tune experiment is: the experiment folder, or its extension round's folder."""
        return self.paths.root.child(self.round) if self.round else self.paths.root


def default_name(opts: RunOptions, space: SearchSpace) -> str:
    return f"{space.name}-{opts.scheduler.kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def plan(opts: RunOptions) -> Plan:
    """Validate options and the search space together; touches no storage and starts nothing."""
    opts.validate()
    space = load_space(opts.space, param_rules())
    if space.task not in ("forecast", "classify"):
        raise SearchSpaceError(f"{space.source}: task = {space.task!r}: must be forecast or classify")
    if opts.scheduler.kind == "pbt" and not space.mutations:
        raise SearchSpaceError(f"{space.source}: pbt.mutations: empty; --scheduler pbt needs at least one mutation")
    check_search(space, opts.search)  # e.g. continuous distributions under --search grid
    trials = opts.num_samples * grid_size(space, opts.search)
    if opts.ensemble > trials:
        raise OptionError(
            f"--ensemble = {opts.ensemble}: more than the {trials} trial(s) this run makes (--num-samples "
            f"{opts.num_samples} over space {space.name}); must be <= {trials}"
        )
    name = opts.name or default_name(opts, space)
    return Plan(options=opts, space=space, name=name, paths=experiment_paths(opts.storage, name))


__all__ = ["Plan", "default_name", "plan"]
