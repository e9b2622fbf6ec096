"""Typed form of a declarative search space: what varies and how PBT may mutate it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Distribution = Literal["loguniform", "uniform", "quniform", "randint", "choice", "grid", "constant"]
DISTRIBUTIONS: tuple[str, ...] = (
    "loguniform",
    "uniform",
    "quniform",
    "randint",
    "choice",
    "grid",
    "constant",
)
Scalar = int | float | str | bool


@dataclass(frozen=True, kw_only=True)
class ParamRule:
    """What the trainable accepts for one hyperparameter; the loader checks every value against it."""

    name: str
    """Flat key in the trial config, e.g. ``lr``."""
    kind: Literal["int", "float", "bool", "str"]
    """Python type of a single value."""
    low: float | None = None
    """Smallest allowed value (inclusive unless ``low_open``)."""
    high: float | None = None
    """Largest allowed value (inclusive unless ``high_open``)."""
    low_open: bool = False
    """True when ``low`` itself is not allowed."""
    high_open: bool = False
    """True when ``high`` itself is not allowed."""
    choices: tuple[Scalar, ...] = ()
    """For string-valued parameters: the allowed values."""
    shape_changing: bool = False
    """True when a change alters tensor shapes, so PBT must never mutate it."""
    help: str = ""
    """One line shown in error messages."""

    def describe_range(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        article = "an" if self.kind == "int" else "a"
        return f"{article} {self.kind}" + (" " + " and ".join(parts) if parts else "")


@dataclass(frozen=True, kw_only=True)
class ParamSpec:
    """One hyperparameter's distribution as declared in a search-space file."""

    name: str
    distribution: Distribution
    low: float | None = None
    high: float | None = None
    q: float | None = None
    values: tuple[Scalar, ...] = ()

    @property
    def is_continuous(self) -> bool:
        return self.distribution in ("loguniform", "uniform", "quniform", "randint")


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """A validated search space: the sampled parameters and PBT's mutation ranges."""

    name: str
    """Preset name or file stem."""
    source: str
    """File the space was read from (for error messages and the summary)."""
    task: str
    """Task the space is written for, e.g. ``forecast``."""
    description: str = ""
    params: dict[str, ParamSpec] = field(default_factory=dict)
    mutations: dict[str, ParamSpec] = field(default_factory=dict)
    """PBT hyperparameter mutations; only parameters PBT may change."""

    def max_value(self, name: str) -> float | None:
        """The largest value a parameter can take, or None when it is not declared or not numeric."""
        spec = self.params.get(name)
        if spec is None:
            return None
        if spec.values:
            numeric = [v for v in spec.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            return float(max(numeric)) if numeric else None
        return spec.high
