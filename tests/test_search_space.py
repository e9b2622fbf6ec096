"""Search-space validation: for each rule one file just inside and one just outside, matched on the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.plan.space import param_rules, to_mutations, to_param_space
from search_spaces import SearchSpaceError, load_space, preset_names

RULES = param_rules()


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def space_with(param_yaml: str, pbt_yaml: str = "") -> str:
    return "task: forecast\nparams:\n" + param_yaml + (("pbt:\n  mutations:\n" + pbt_yaml) if pbt_yaml else "")


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_loads_and_converts(preset: str) -> None:
    space = load_space(preset, RULES)
    assert space.params, f"preset {preset} declares no parameters"
    to_param_space(space, "random")
    assert set(to_mutations(space)) <= {"lr", "weight_decay", "l1", "dropout", "input_dropout", "grad_clip"}


def test_forecast_extends_forecast_small() -> None:
    small, wide = load_space("forecast-small", RULES), load_space("forecast", RULES)
    assert wide.max_value("window") == 72 and small.max_value("window") == 24
    assert wide.mutations.keys() == small.mutations.keys()  # inherited from the base


@pytest.mark.parametrize(
    ("inside", "outside", "match"),
    [
        # unknown key (close match is suggested)
        (
            "  lr: {distribution: uniform, low: 0.001, high: 0.01}\n",
            "  lrr: {distribution: uniform, low: 0.001, high: 0.01}\n",
            r"unknown key 'params.lrr'.*did you mean 'lr'",
        ),
        # unknown distribution
        (
            "  lr: {distribution: loguniform, low: 0.001, high: 0.01}\n",
            "  lr: {distribution: lognormal, low: 0.001, high: 0.01}\n",
            r"params\.lr\.distribution = 'lognormal'",
        ),
        # low >= high
        (
            "  dropout: {distribution: uniform, low: 0.1, high: 0.2}\n",
            "  dropout: {distribution: uniform, low: 0.2, high: 0.2}\n",
            r"params\.dropout: low = 0.2 must be < high",
        ),
        # non-positive bound on a log scale
        (
            "  weight_decay: {distribution: loguniform, low: 1.0e-9, high: 0.01}\n",
            "  weight_decay: {distribution: loguniform, low: 0.0, high: 0.01}\n",
            r"params\.weight_decay\.low = 0.*low > 0",
        ),
        # empty choice
        (
            "  hidden_size: {distribution: choice, values: [8]}\n",
            "  hidden_size: {distribution: choice, values: []}\n",
            r"params\.hidden_size\.values = \[\]",
        ),
        # value outside the trainable's range (dropout < 1)
        (
            "  dropout: {distribution: uniform, low: 0.0, high: 0.99}\n",
            "  dropout: {distribution: uniform, low: 0.0, high: 1.0}\n",
            r"params\.dropout\.high = 1\.0.*< 1",
        ),
        # lr_decay: 1 keeps the rate constant; above 1 would grow it without bound
        (
            "  lr_decay: {distribution: uniform, low: 0.5, high: 1.0}\n",
            "  lr_decay: {distribution: uniform, low: 0.5, high: 1.01}\n",
            r"params\.lr_decay\.high = 1\.01",
        ),
        # lr_decay 0 would stop training after the first epoch
        (
            "  lr_decay: 0.01\n",
            "  lr_decay: 0.0\n",
            r"params\.lr_decay = 0\.0",
        ),
        # integer parameter given a fraction
        (
            "  hidden_size: {distribution: choice, values: [1, 2]}\n",
            "  hidden_size: {distribution: choice, values: [0.5, 2]}\n",
            r"params\.hidden_size\.values\[0\] = 0\.5",
        ),
        # integer parameter below its minimum
        (
            "  num_layers: {distribution: randint, low: 1, high: 3}\n",
            "  num_layers: {distribution: randint, low: 0, high: 3}\n",
            r"params\.num_layers\.low = 0",
        ),
        # randint excludes high: high - 1 must be allowed (num_layers <= 8)
        (
            "  num_layers: {distribution: randint, low: 1, high: 9}\n",
            "  num_layers: {distribution: randint, low: 1, high: 10}\n",
            r"params\.num_layers\.high = 10 \(randint excludes high\)",
        ),
        # quniform step
        (
            "  batch_size: {distribution: quniform, low: 32, high: 256, q: 32}\n",
            "  batch_size: {distribution: quniform, low: 32, high: 256, q: 0}\n",
            r"params\.batch_size\.q = 0",
        ),
        # missing key of a distribution
        (
            "  lr: {distribution: uniform, low: 0.001, high: 0.01}\n",
            "  lr: {distribution: uniform, low: 0.001}\n",
            r"params\.lr\.high: missing",
        ),
        # exponent without a dot is a YAML string: say so
        (
            "  lr: {distribution: loguniform, low: 1.0e-3, high: 1.0e-2}\n",
            "  lr: {distribution: loguniform, low: 1e-3, high: 1.0e-2}\n",
            r"params\.lr\.low = '1e-3'.*with a dot",
        ),
    ],
)
def test_param_rule_boundaries(tmp_path: Path, inside: str, outside: str, match: str) -> None:
    load_space(write(tmp_path, space_with(inside), "inside.yaml"), RULES)
    with pytest.raises(SearchSpaceError, match=match):
        load_space(write(tmp_path, space_with(outside), "outside.yaml"), RULES)


@pytest.mark.parametrize(
    ("shape_param", "values"),
    [("hidden_size", "[1, 2]"), ("num_layers", "[1, 2]"), ("window", "[1, 2]"), ("level_gain", "[true, false]")],
)
def test_pbt_refuses_shape_changing_mutations(tmp_path: Path, shape_param: str, values: str) -> None:
    params = (
        "  lr: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}\n"
        + f"  {shape_param}: {{distribution: choice, values: {values}}}\n"
    )
    load_space(
        write(
            tmp_path, space_with(params, "    lr: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}\n"), "ok.yaml"
        ),
        RULES,
    )
    bad = space_with(params, f"    {shape_param}: {{distribution: choice, values: {values}}}\n")
    with pytest.raises(
        SearchSpaceError, match=rf"pbt\.mutations\.{shape_param}: {shape_param} changes the model's shape"
    ):
        load_space(write(tmp_path, bad, "bad.yaml"), RULES)


def test_pbt_mutation_must_be_declared(tmp_path: Path) -> None:
    params = "  lr: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}\n"
    with pytest.raises(SearchSpaceError, match=r"pbt\.mutations\.dropout: dropout is mutated but not declared"):
        load_space(
            write(tmp_path, space_with(params, "    dropout: {distribution: uniform, low: 0.0, high: 0.5}\n")), RULES
        )


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    with pytest.raises(SearchSpaceError, match=r"space\.yaml: line \d+, column \d+: malformed YAML: expected"):
        load_space(write(tmp_path, "task: forecast\nparams:\n  lr: {distribution: uniform, low: 1\n"), RULES)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    load_space(write(tmp_path, "task: forecast\nparams:\n  lr: 0.01\n", "ok.yaml"), RULES)
    with pytest.raises(SearchSpaceError, match=r"unknown key 'parms'.*did you mean 'params'"):
        load_space(write(tmp_path, "task: forecast\nparms:\n  lr: 0.01\n"), RULES)


def test_missing_file_lists_presets() -> None:
    with pytest.raises(
        SearchSpaceError,
        match=r"no such file and no such preset; presets: classify, classify-small, forecast, forecast-panel, forecast-small",
    ):
        load_space("forecast-smal", RULES)


def test_grid_search_refuses_continuous(tmp_path: Path) -> None:
    space = load_space(
        write(tmp_path, space_with("  hidden_size: {distribution: choice, values: [8, 16]}\n  lr: 0.01\n")), RULES
    )
    grid = to_param_space(space, "grid")
    assert grid["hidden_size"] == {"grid_search": [8, 16]} and grid["lr"] == 0.01
    wide = load_space("forecast-small", RULES)
    with pytest.raises(SearchSpaceError, match=r"params\.dropout\.distribution = 'uniform': --search grid"):
        to_param_space(wide, "grid")


def test_tpe_samples_choices_and_refuses_grid_dimensions(tmp_path: Path) -> None:
    space = load_space(
        write(tmp_path, space_with("  hidden_size: {distribution: choice, values: [8, 16]}\n  lr: 0.01\n")), RULES
    )
    assert to_param_space(space, "tpe")["hidden_size"].categories == [8, 16]
    gridded = load_space(write(tmp_path, space_with("  hidden_size: {distribution: grid, values: [8, 16]}\n")), RULES)
    with pytest.raises(SearchSpaceError, match=r"params\.hidden_size\.distribution = 'grid': --search tpe"):
        to_param_space(gridded, "tpe")
