"""Search spaces meet the trainable here: rules derived from the trial config, and the conversion to Tune domains."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cluster.plan.options import SearchKind
from search_spaces import ParamRule, ParamSpec, SearchSpace, SearchSpaceError
from trainables.config import tunable_fields


def param_rules() -> dict[str, ParamRule]:
    """The trainable's tunable parameters, with ranges, read from its config dataclasses."""
    rules: dict[str, ParamRule] = {}
    for f in tunable_fields():
        m = f.metadata
        rules[f.name] = ParamRule(
            name=f.name,
            kind=m["kind"],
            choices=tuple(m["choices"]),
            low=m["low"],
            high=m["high"],
            low_open=m["low_open"],
            high_open=m["high_open"],
            shape_changing=m["shape_changing"],
            help=m["help"],
        )
    return rules


def _check(spec: ParamSpec, search: SearchKind, where: str) -> None:
    """What a searcher refuses, found without importing Ray (the CLI answers bad input before Ray loads)."""
    d = spec.distribution
    if d == "grid" and search == "tpe":
        raise SearchSpaceError(
            f"{where}: params.{spec.name}.distribution = 'grid': --search tpe samples every parameter from a model; "
            "use choice instead of grid, or --search random"
        )
    if search == "grid" and d not in ("constant", "grid", "choice"):
        raise SearchSpaceError(
            f"{where}: params.{spec.name}.distribution = {d!r}: --search grid needs choice, grid or fixed values; "
            "use --search random for continuous distributions"
        )
    if d in ("loguniform", "uniform", "randint", "quniform") and (spec.low is None or spec.high is None):
        raise SearchSpaceError(f"{where}: params.{spec.name}: {d} needs low and high")  # the loader sees to it


def check_search(space: SearchSpace, search: SearchKind) -> None:
    """Raise :class:`SearchSpaceError` naming the parameter if ``search`` cannot sample ``space``."""
    for spec in space.params.values():
        _check(spec, search, space.source)


def _domain(spec: ParamSpec, rule: ParamRule, search: SearchKind, where: str) -> Any:
    from ray import tune

    _check(spec, search, where)
    d = spec.distribution
    if d == "constant":
        return spec.values[0]
    if d == "grid" or (d == "choice" and search == "grid"):
        return tune.grid_search(list(spec.values))
    if d == "choice":
        return tune.choice(list(spec.values))
    assert spec.low is not None and spec.high is not None  # _check
    if d == "loguniform":
        return tune.loguniform(spec.low, spec.high)
    if d == "uniform":
        return tune.uniform(spec.low, spec.high)
    if d == "randint":
        return tune.randint(int(spec.low), int(spec.high))
    if d == "quniform":
        q = spec.q if spec.q is not None else 1.0
        if rule.kind == "int":
            return tune.qrandint(int(spec.low), int(spec.high), int(q))
        return tune.quniform(spec.low, spec.high, q)
    raise SearchSpaceError(f"{where}: params.{spec.name}: unsupported distribution {d!r}")


def to_param_space(space: SearchSpace, search: SearchKind) -> dict[str, Any]:
    rules = param_rules()
    return {name: _domain(spec, rules[name], search, space.source) for name, spec in space.params.items()}


def to_mutations(space: SearchSpace) -> dict[str, Any]:
    """PBT's ``hyperparam_mutations``: Tune domains for ranges, lists for choices (PBT shifts to a neighbour)."""
    rules = param_rules()
    out: dict[str, Any] = {}
    for name, spec in space.mutations.items():
        out[name] = (
            list(spec.values) if spec.distribution == "choice" else _domain(spec, rules[name], "random", space.source)
        )
    return out


@dataclass(frozen=True, kw_only=True)
class WarmStart:
    """Finished trials a new round's searcher is told of before it proposes anything (``extend``)."""

    points: list[dict[str, Any]]
    """Each trial's values of the space's sampled parameters."""
    rewards: list[float]
    """Each trial's last reported scheduler metric (what the searcher would have been told when it ended)."""


def sampled_names(space: SearchSpace) -> list[str]:
    """The parameters a searcher samples (constants are not part of its space)."""
    return [name for name, spec in space.params.items() if spec.distribution != "constant"]


def warm_start(space: SearchSpace, finished: list[tuple[dict[str, Any], Any]]) -> WarmStart:
    """(config, last metric) of earlier trials as a searcher's history: trials without a finite metric, or whose
    config lacks a sampled parameter, are left out."""
    names = sampled_names(space)
    points, rewards = [], []
    for config, reward in finished:
        if not (isinstance(reward, (int, float)) and math.isfinite(reward)) or any(n not in config for n in names):
            continue
        points.append({n: config[n] for n in names})
        rewards.append(float(reward))
    return WarmStart(points=points, rewards=rewards)


def round_seed(seed: int, round_number: int) -> int:
    """The searcher's seed in extension round ``round_number`` (0: the first run): a different stream of draws, so
    random search does not propose the earlier rounds' configurations again."""
    return seed if round_number == 0 else (seed + 1_000_003 * round_number) % 2**31


def search_algorithm(search: SearchKind, seed: int, max_concurrent: int | None, warm: WarmStart | None = None) -> Any:
    """Who proposes the next configuration: Tune's random/grid generator, or Optuna's TPE sampler (model-based: after
    its first 10 trials it samples where finished trials scored well). ``warm``: earlier trials TPE counts as its own
    history (random search ignores it: a fresh seed keeps it from repeating them)."""
    if search != "tpe":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # Tune ignores TuneConfig(max_concurrent_trials) with this generator (it warns); the cap goes here.
        return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent or 0)
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # constant_liar: trials still running count as scored badly, so concurrent trials are not proposed alike.
    history = warm if warm is not None and warm.points else None
    searcher = OptunaSearch(
        sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        points_to_evaluate=history.points if history else None,
        evaluated_rewards=history.rewards if history else None,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent) if max_concurrent else searcher


def grid_size(space: SearchSpace, search: SearchKind) -> int:
    """Configurations one sample of the space expands to (grid dimensions multiply)."""
    size = 1
    for spec in space.params.values():
        if spec.distribution == "grid" or (spec.distribution == "choice" and search == "grid"):
            size *= len(spec.values)
    return size


__all__ = [
    "WarmStart",
    "check_search",
    "grid_size",
    "param_rules",
    "round_seed",
    "sampled_names",
    "search_algorithm",
    "to_mutations",
    "to_param_space",
    "warm_start",
]
