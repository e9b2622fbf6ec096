"""Load a search-space YAML file and refuse anything a trial could not run.

Every error names the file, the dotted key, the bad value and what is allowed, so a user can fix the file without
reading code. Nothing here imports Ray or the trainables: the caller passes the rules of the trainable's parameters.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, cast

import yaml

from search_spaces.spec import DISTRIBUTIONS, Distribution, ParamRule, ParamSpec, Scalar, SearchSpace

TOP_LEVEL_KEYS = ("task", "extends", "description", "params", "pbt")
PBT_KEYS = ("mutations",)
SPEC_KEYS: dict[str, tuple[str, ...]] = {
    "loguniform": ("low", "high"),
    "uniform": ("low", "high"),
    "quniform": ("low", "high", "q"),
    "randint": ("low", "high"),
    "choice": ("values",),
    "grid": ("values",),
    "constant": ("value",),
}
MAX_EXTENDS_DEPTH = 8


class SearchSpaceError(ValueError):
    """A search-space file is malformed or asks for something the trainable cannot do."""


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    root = resources.files("search_spaces") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def resolve_space_path(name_or_path: str) -> Path:
    """A preset name (``forecast-small``) or a path to a YAML file."""
    if name_or_path in preset_names():
        return Path(str(resources.files("search_spaces") / "presets" / f"{name_or_path}.yaml"))
    path = Path(name_or_path)
    if not path.is_file():
        raise SearchSpaceError(
            f"search space {name_or_path!r}: no such file and no such preset; presets: {', '.join(preset_names())}"
        )
    return path


def load_space(space: str | Mapping[str, Any], rules: Mapping[str, ParamRule]) -> SearchSpace:
    """Read, merge (``extends``) and validate a search space against the trainable's parameter rules.

    ``space`` is a preset name, a YAML file, or a mapping in the files' schema (a Python dict: the same keys, the same
    checks; its ``extends`` names a preset or a YAML path)."""
    if isinstance(space, Mapping):
        return _from_mapping(space, rules)
    path = resolve_space_path(space)
    raw = _read_merged(path, depth=0)
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.stem
    return _validated(raw, rules, where=path.name, name=stem, source=str(path))


DICT_SPACE_NAME = "custom"
"""The name of a search space given as a mapping (its source reads ``<dict>``)."""


def _from_mapping(space: Mapping[str, Any], rules: Mapping[str, ParamRule]) -> SearchSpace:
    data = dict(space)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise SearchSpaceError(_unknown("space", str(key), str(key), TOP_LEVEL_KEYS))
    base_name = data.pop("extends", None)
    if base_name is not None:
        if not isinstance(base_name, str):
            raise SearchSpaceError(f"space: extends = {base_name!r}: must be a preset name or a path")
        try:
            base = _read_merged(resolve_space_path(base_name), depth=1)
        except SearchSpaceError:
            raise SearchSpaceError(
                f"space: extends = {base_name!r}: no such preset or file; presets: {', '.join(preset_names())}"
            ) from None
        data = _merge(base, data)
    return _validated(data, rules, where="space", name=DICT_SPACE_NAME, source="<dict>")


def space_yaml(space: str | Mapping[str, Any]) -> str:
    """The text an experiment records to rebuild its space on resume: the file as written, or the mapping as YAML."""
    if isinstance(space, Mapping):
        return yaml.safe_dump(dict(space), sort_keys=False)
    return resolve_space_path(space).read_text(encoding="utf-8")


def _validated(
    raw: Mapping[str, Any], rules: Mapping[str, ParamRule], *, where: str, name: str, source: str
) -> SearchSpace:
    task = raw.get("task")
    if not isinstance(task, str) or not task:
        raise SearchSpaceError(f"{where}: task = {task!r}: must be a non-empty string such as 'forecast'")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise SearchSpaceError(f"{where}: description = {description!r}: must be a string")
    params_raw = raw.get("params")
    if not isinstance(params_raw, Mapping) or not params_raw:
        raise SearchSpaceError(f"{where}: params: must be a non-empty mapping of parameter name to distribution")
    params = {
        str(name): _parse_spec(where, f"params.{name}", str(name), spec, rules) for name, spec in params_raw.items()
    }
    mutations = _parse_mutations(where, raw.get("pbt"), params, rules)
    return SearchSpace(name=name, source=source, task=task, description=description, params=params, mutations=mutations)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SearchSpaceError(f"{path.name}:{at}: malformed YAML: {problem}") from None
    except OSError as exc:
        raise SearchSpaceError(f"{path}: cannot read: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise SearchSpaceError(f"{path.name}: top level must be a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise SearchSpaceError(_unknown(path.name, str(key), str(key), TOP_LEVEL_KEYS))
    return cast(dict[str, Any], data)


def _read_merged(path: Path, depth: int) -> dict[str, Any]:
    """Apply ``extends`` chains: the child's params and mutations override the parent's key by key."""
    if depth > MAX_EXTENDS_DEPTH:
        raise SearchSpaceError(f"{path.name}: extends: chain deeper than {MAX_EXTENDS_DEPTH} (a cycle?)")
    data = _read_yaml(path)
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise SearchSpaceError(f"{path.name}: extends = {base_name!r}: must be a preset name or a path")
    base_path = Path(base_name) if not base_name.endswith(".yaml") else path.parent / base_name
    try:
        resolved = resolve_space_path(str(base_path) if base_name.endswith(".yaml") else base_name)
    except SearchSpaceError:
        raise SearchSpaceError(
            f"{path.name}: extends = {base_name!r}: no such preset or file; presets: {', '.join(preset_names())}"
        ) from None
    return _merge(_read_merged(resolved, depth + 1), data)


def _merge(base: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The child's params and mutations override the parent's key by key; other keys replace the parent's."""
    merged = {**base, **{k: v for k, v in data.items() if k not in ("params", "pbt")}}
    merged["params"] = {**(base.get("params") or {}), **(data.get("params") or {})}
    base_pbt, child_pbt = base.get("pbt") or {}, data.get("pbt") or {}
    if not isinstance(base_pbt, Mapping) or not isinstance(child_pbt, Mapping):
        return merged  # validation names the malformed pbt section
    base_mut = base_pbt.get("mutations") or {}
    child_mut = child_pbt.get("mutations") or {}
    if base_mut or child_mut:
        merged["pbt"] = {"mutations": {**base_mut, **child_mut}}
    return merged


def _unknown(where: str, key: str, name: str, allowed: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: unknown key {key!r}{hint}; allowed: {', '.join(allowed)}"


def _parse_spec(where: str, key: str, name: str, raw: Any, rules: Mapping[str, ParamRule]) -> ParamSpec:
    if name not in rules:
        raise SearchSpaceError(_unknown(where, key, name, sorted(rules)))
    rule = rules[name]
    if not isinstance(raw, Mapping):
        # A bare value pins the parameter.
        _check_value(where, key, raw, rule)
        return ParamSpec(name=name, distribution="constant", values=(cast(Scalar, raw),))
    dist = raw.get("distribution")
    if dist not in DISTRIBUTIONS:
        raise SearchSpaceError(
            f"{where}: {key}.distribution = {dist!r}: unknown distribution; allowed: {', '.join(DISTRIBUTIONS)}"
        )
    allowed_keys = ("distribution", *SPEC_KEYS[dist])
    for k in raw:
        if k not in allowed_keys:
            raise SearchSpaceError(_unknown(where, f"{key}.{k}", str(k), allowed_keys))
    for k in SPEC_KEYS[dist]:
        if k not in raw:
            raise SearchSpaceError(
                f"{where}: {key}.{k}: missing; a {dist} distribution needs {', '.join(SPEC_KEYS[dist])}"
            )
    distribution = cast(Distribution, dist)
    if dist in ("choice", "grid"):
        values = raw["values"]
        if not isinstance(values, list) or not values:
            raise SearchSpaceError(f"{where}: {key}.values = {values!r}: must be a non-empty list")
        for i, v in enumerate(values):
            _check_value(where, f"{key}.values[{i}]", v, rule)
        return ParamSpec(name=name, distribution=distribution, values=tuple(values))
    if dist == "constant":
        _check_value(where, f"{key}.value", raw["value"], rule)
        return ParamSpec(name=name, distribution="constant", values=(raw["value"],))
    if rule.kind not in ("int", "float"):
        raise SearchSpaceError(f"{where}: {key}.distribution = {dist!r}: {name} is a {rule.kind}; use choice or grid")
    if dist == "randint" and rule.kind != "int":
        raise SearchSpaceError(f"{where}: {key}.distribution = 'randint': {name} is a float; use uniform or loguniform")
    if dist in ("uniform", "loguniform", "quniform") and rule.kind == "int" and dist != "quniform":
        raise SearchSpaceError(
            f"{where}: {key}.distribution = {dist!r}: {name} is an integer; use randint, quniform or choice"
        )
    low = _number(where, f"{key}.low", raw["low"])
    high = _number(where, f"{key}.high", raw["high"])
    if not low < high:
        raise SearchSpaceError(f"{where}: {key}: low = {low:g} must be < high = {high:g}")
    if dist == "loguniform" and low <= 0:
        raise SearchSpaceError(f"{where}: {key}.low = {low:g}: a loguniform distribution needs low > 0")
    q: float | None = None
    if dist == "quniform":
        q = _number(where, f"{key}.q", raw["q"])
        if q <= 0:
            raise SearchSpaceError(f"{where}: {key}.q = {q:g}: must be > 0")
        if rule.kind == "int" and not float(q).is_integer():
            raise SearchSpaceError(f"{where}: {key}.q = {q:g}: {name} is an integer, so q must be a whole number")
    if dist == "randint":
        if not (float(low).is_integer() and float(high).is_integer()):
            raise SearchSpaceError(f"{where}: {key}: randint bounds must be whole numbers, got {low:g} and {high:g}")
        # Tune's randint excludes high: the largest value drawn is high - 1.
        _check_value(where, f"{key}.low", int(low), rule)
        _check_value(where, f"{key}.high", int(high) - 1, rule, shown=int(high), note=" (randint excludes high)")
    else:
        _check_value(where, f"{key}.low", int(low) if rule.kind == "int" else low, rule)
        _check_value(where, f"{key}.high", int(high) if rule.kind == "int" else high, rule)
    return ParamSpec(name=name, distribution=distribution, low=low, high=high, q=q)


def _number(where: str, key: str, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        # YAML 1.1 reads 1e-3 (no dot) as a string; say so, since it is the usual cause.
        hint = " (write floats with a dot, e.g. 1.0e-3)" if isinstance(raw, str) else ""
        raise SearchSpaceError(f"{where}: {key} = {raw!r}: must be a number{hint}")
    if not math.isfinite(raw):
        raise SearchSpaceError(f"{where}: {key} = {raw!r}: must be finite")
    return float(raw)


def _check_value(where: str, key: str, value: Any, rule: ParamRule, shown: Any = None, note: str = "") -> None:
    shown = value if shown is None else shown
    allowed = rule.describe_range()
    bad = f"{where}: {key} = {shown!r}{note}: {rule.name} must be {allowed}"
    if rule.kind == "bool":
        if not isinstance(value, bool):
            raise SearchSpaceError(bad)
        return
    if rule.kind == "str":
        if not isinstance(value, str) or (rule.choices and value not in rule.choices):
            raise SearchSpaceError(bad)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SearchSpaceError(bad)
    if rule.kind == "int" and not float(value).is_integer():
        raise SearchSpaceError(bad)
    if not math.isfinite(value):
        raise SearchSpaceError(bad)
    if rule.low is not None and (value < rule.low or (rule.low_open and value == rule.low)):
        raise SearchSpaceError(bad)
    if rule.high is not None and (value > rule.high or (rule.high_open and value == rule.high)):
        raise SearchSpaceError(bad)


def _parse_mutations(
    where: str, raw: Any, params: Mapping[str, ParamSpec], rules: Mapping[str, ParamRule]
) -> dict[str, ParamSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SearchSpaceError(f"{where}: pbt: must be a mapping with key 'mutations'")
    for key in raw:
        if key not in PBT_KEYS:
            raise SearchSpaceError(_unknown(where, f"pbt.{key}", str(key), PBT_KEYS))
    mutations_raw = raw.get("mutations") or {}
    if not isinstance(mutations_raw, Mapping):
        raise SearchSpaceError(f"{where}: pbt.mutations: must be a mapping of parameter name to distribution")
    mutations: dict[str, ParamSpec] = {}
    for name, spec_raw in mutations_raw.items():
        key = f"pbt.mutations.{name}"
        name = str(name)
        if name not in rules:
            raise SearchSpaceError(_unknown(where, key, name, sorted(rules)))
        if rules[name].shape_changing:
            mutable = sorted(n for n, r in rules.items() if not r.shape_changing)
            raise SearchSpaceError(
                f"{where}: {key}: {name} changes the model's shape, so PBT cannot mutate it "
                f"(a restored checkpoint would not fit); PBT may mutate: {', '.join(mutable)}"
            )
        if name not in params:
            raise SearchSpaceError(f"{where}: {key}: {name} is mutated but not declared under params")
        spec = _parse_spec(where, key, name, spec_raw, rules)
        if spec.distribution in ("constant", "grid"):
            raise SearchSpaceError(
                f"{where}: {key}.distribution = {spec.distribution!r}: a mutation needs a range or a choice"
            )
        mutations[name] = spec
    return mutations
