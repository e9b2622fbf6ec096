"""The public Python API (``import cluster``): options by name, dict search spaces, errors before anything starts,
the result object, the example script against the CLI, and a resume of an experiment from the previous layout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import cluster
from cluster.plan.options import RunOptions, SchedulerOptions, flatten, options_from_flat
from cluster.plan.space import param_rules
from search_spaces import SearchSpaceError, load_space, space_yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "tune_from_python.py"
LEGACY = Path(__file__).resolve().parent / "data" / "legacy-layout" / "legacy-asha"


def test_unknown_option_is_refused_with_the_closest_names(tmp_path: Path) -> None:
    with pytest.raises(cluster.OptionError, match="'num_sample': no such option; did you mean num_samples"):
        cluster.run(num_sample=3, storage=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists(), "a refused call wrote to storage"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_samples": 0}, r"--num-samples = 0: must be >= 1"),
        ({"scheduler": "hyperband"}, r"--scheduler = 'hyperband'"),
        ({"grace_period": 13, "max_epochs": 12}, r"--grace-period = 13: must be >= 1 and <= --max-epochs \(12\)"),
        ({"name": "../up"}, r"--name = '../up'"),
    ],
)
def test_bad_values_raise_option_errors_before_anything_is_written(
    tmp_path: Path, overrides: dict[str, object], match: str
) -> None:
    with pytest.raises(cluster.OptionError, match=match):
        cluster.run(storage=str(tmp_path / "runs"), **overrides)
    assert not (tmp_path / "runs").exists()


def test_overrides_win_over_an_options_object_and_flat_names_round_trip() -> None:
    base = RunOptions(num_samples=5, scheduler=SchedulerOptions(kind="pbt", perturbation_interval=3))
    opts = options_from_flat({"num_samples": 3, "keep_checkpoints": 4}, base=base)
    assert (opts.num_samples, opts.scheduler.kind, opts.scheduler.perturbation_interval) == (3, "pbt", 3)
    assert opts.checkpoints.num_to_keep == 4
    assert options_from_flat(flatten(opts)) == opts
    assert options_from_flat({}) == RunOptions()


SPACE = {
    "task": "forecast",
    "params": {
        "hidden_size": {"distribution": "choice", "values": [16, 32]},
        "lr": {"distribution": "loguniform", "low": 1e-3, "high": 1e-2},
    },
    "pbt": {"mutations": {"lr": {"distribution": "loguniform", "low": 1e-4, "high": 2e-2}}},
}


def test_a_dict_space_is_validated_like_a_file_and_recorded_as_yaml() -> None:
    space = load_space(SPACE, param_rules())
    assert space.name == "custom" and set(space.params) == {"hidden_size", "lr"} and set(space.mutations) == {"lr"}
    again = load_space(yaml.safe_load(space_yaml(SPACE)), param_rules())
    assert again.params == space.params and again.mutations == space.mutations


def test_a_dict_space_extends_a_preset_key_by_key() -> None:
    space = load_space(
        {"extends": "forecast-small", "params": {"window": {"distribution": "choice", "values": [6]}}}, param_rules()
    )
    preset = load_space("forecast-small", param_rules())
    assert space.params["window"].values == (6,) or list(space.params["window"].values) == [6]
    assert space.params["lr"] == preset.params["lr"] and space.mutations == preset.mutations


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({**SPACE, "param": {}}, r"space: unknown key 'param'"),
        ({**SPACE, "params": {"hidden_size": {"distribution": "choice", "values": [0]}}}, r"params.hidden_size"),
        ({**SPACE, "params": {"hiden_size": {"distribution": "choice", "values": [16]}}}, r"hiden_size"),
        ({**SPACE, "task": ""}, r"space: task = ''"),
        ({"extends": "no-such-preset", "params": {}}, r"extends = 'no-such-preset': no such preset"),
    ],
)
def test_a_bad_dict_space_is_refused_naming_the_key(tmp_path: Path, space: dict[str, object], match: str) -> None:
    with pytest.raises(SearchSpaceError, match=match):
        cluster.run(space=space, storage=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_a_missing_experiment_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(cluster.StorageError, match=f"{tmp_path}/nope"):
        cluster.load_experiment(str(tmp_path / "nope"))
    with pytest.raises(cluster.StorageError, match="resume"):
        cluster.resume(str(tmp_path / "nope"))


def test_import_cluster_loads_neither_torch_nor_ray() -> None:
    code = (
        "import sys, cluster; cluster.RunOptions; cluster.OptionError; cluster.ExperimentResult; "
        "print(','.join(m for m in ('torch', 'ray') if m in sys.modules) or 'none')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "none", f"import cluster loaded {out.stdout.strip()}"


def test_a_report_reads_an_experiment_without_torch_or_ray(legacy_experiment: Path, tmp_path: Path) -> None:
    """``lstm-tune report`` and ``ExperimentResult.history()`` read JSON files; loading Ray for that cost seconds."""
    code = (
        "import sys; from pathlib import Path; from cluster.report.writer import read_experiment, write_report; "
        "from trainables.storage import resolve; "
        f"write_report(read_experiment(resolve({str(legacy_experiment)!r})), Path({str(tmp_path / 'report')!r})); "
        "import cluster; cluster.load_experiment(" + repr(str(legacy_experiment)) + ").history(); "
        "print(','.join(m for m in ('torch', 'ray') if m in sys.modules) or 'none')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "none", f"the report loaded {out.stdout.strip()}"
    assert (tmp_path / "report" / "report.md").is_file()


def test_every_public_name_resolves_and_is_documented() -> None:
    for name in cluster.__all__:
        obj = getattr(cluster, name)
        assert (obj.__doc__ or "").strip(), f"cluster.{name} has no docstring"


@pytest.fixture
def legacy_experiment(tmp_path: Path) -> Path:
    """An unfinished experiment written by the flat layout (commit b19a92e: Tune pickled cluster.schedulers,
    cluster.loggers, cluster.progress, cluster.retention and cluster.worker_groups into its tuner.pkl)."""
    dest = tmp_path / "storage" / LEGACY.name
    shutil.copytree(LEGACY, dest)
    return dest


def test_an_experiment_is_read_without_running_anything(legacy_experiment: Path) -> None:
    result = cluster.load_experiment(str(legacy_experiment))
    assert result.status == "incomplete" and result.summary is None
    trials = result.trials()
    assert list(trials["trial_id"]) == ["150de_00000", "150de_00001"]
    assert list(trials["state"]) == ["finished", "finished"] and list(trials["epochs"]) == [2, 2]
    assert trials["best_val_rmse"].min() == pytest.approx(22.32, abs=0.01)
    assert {"config.hidden_size", "config.lr", "restarts"} <= set(trials.columns)
    history = result.history()
    assert len(history) == 4 and list(history["epoch"]) == [1, 2, 1, 2]
    assert history["val/rmse"].notna().all()
    with pytest.raises(cluster.StorageError, match="not finished"):
        result.best  # noqa: B018


@pytest.mark.ray
def test_an_experiment_written_by_the_previous_layout_resumes(legacy_experiment: Path) -> None:
    result = cluster.resume(str(legacy_experiment))
    assert result.status == "finished" and result.summary is not None
    assert result.summary.trials == {"total": 2, "finished": 2, "stopped": 0, "errored": 0}
    assert result.best.trial_id == "150de_00001"
    assert result.best.test.rmse == pytest.approx(19.97, abs=0.01)
    assert (legacy_experiment / "best.json").is_file() and (legacy_experiment / "best_model").is_dir()
    assert cluster.load_experiment(str(legacy_experiment)).summary == result.summary


@pytest.mark.ray
def test_the_example_script_equals_the_cli_for_the_same_options(tmp_path: Path) -> None:
    size = ["--num-samples", "2", "--max-epochs", "2", "--epoch-samples", "2048"]
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--storage",
            str(tmp_path / "api"),
            "--name",
            "ex",
            *size,
            "--json-out",
            str(figures),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    api = json.loads(figures.read_text())
    assert api["trials"] == 2 and api["epochs_reported"] == 4 and api["forecasts"] > 0
    assert "finished; test RMSE" in done.stdout and "progress events" in done.stdout

    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {"extends": "forecast-small", "params": {"hidden_size": {"distribution": "choice", "values": [16, 32]}}}
        )
    )
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "run",
            "--storage",
            str(tmp_path / "cli"),
            "--name",
            "ex",
            "--space",
            str(space),
            "--scheduler",
            "fifo",
            "--seed",
            "0",
            *size,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    summary = json.loads(cli.stdout)
    assert summary["best"]["test"]["rmse"] == pytest.approx(api["test_rmse"], rel=1e-9)
    assert summary["baselines"]["persistence"]["test"]["rmse"] == pytest.approx(api["persistence_test_rmse"], rel=1e-9)
    assert summary["best"]["trial_id"].split("_")[1] == api["best_trial"].split("_")[1]


def _finished_copy(legacy_experiment: Path, **record_options: object) -> Path:
    """The legacy fixture marked finished (a best.json), its recorded options changed as given."""
    (legacy_experiment / "best.json").write_text("{}")
    if record_options:
        record_file = legacy_experiment / "lstm_tune.json"
        record = json.loads(record_file.read_text())
        record["options"].update(record_options)
        record_file.write_text(json.dumps(record))
    return legacy_experiment


@pytest.mark.parametrize(
    ("kwargs", "record", "error", "match"),
    [
        ({}, {}, cluster.OptionError, r"give --num-samples N .* or --time-budget-s T"),
        ({"num_samples": 0}, {}, cluster.OptionError, r"--num-samples = 0: must be >= 1"),
        ({"time_budget_s": -5.0}, {}, cluster.OptionError, r"--time-budget-s = -5.0: must be > 0"),
        ({"num_samples": 2}, {"search": "grid"}, cluster.OptionError, r"--search grid already ran every point"),
    ],
)
def test_extend_refuses_before_anything_changes(
    legacy_experiment: Path, kwargs: dict[str, object], record: dict[str, object], error: type, match: str
) -> None:
    root = _finished_copy(legacy_experiment, **record)
    before = (root / "lstm_tune.json").read_text()
    with pytest.raises(error, match=match):
        cluster.extend(str(root), **kwargs)  # type: ignore[arg-type]
    assert (root / "best.json").exists() and (root / "lstm_tune.json").read_text() == before
    assert not any(p.name.startswith("extend-") for p in root.iterdir())


def test_extend_refuses_an_unfinished_or_missing_experiment(legacy_experiment: Path, tmp_path: Path) -> None:
    with pytest.raises(cluster.OptionError, match="not finished; `lstm-tune resume` it first"):
        cluster.extend(str(legacy_experiment), num_samples=2)
    with pytest.raises(cluster.StorageError, match="no Tune experiment state"):
        cluster.extend(str(tmp_path), num_samples=2)


def test_the_warm_start_is_the_tpe_samplers_history() -> None:
    from ray import tune

    from cluster.plan.space import round_seed, search_algorithm, warm_start

    space = load_space(SPACE, param_rules())
    finished = [
        ({"hidden_size": 16, "lr": 0.002, "seed": 0}, 0.31),
        ({"hidden_size": 32, "lr": 0.004, "seed": 0}, 0.27),
        ({"hidden_size": 32, "lr": 0.003}, float("nan")),  # diverged: not history
        ({"lr": 0.003}, 0.5),  # lacks a sampled parameter
    ]
    warm = warm_start(space, finished)
    assert warm.points == [{"hidden_size": 16, "lr": 0.002}, {"hidden_size": 32, "lr": 0.004}]
    assert warm.rewards == [0.31, 0.27]
    searcher = search_algorithm("tpe", round_seed(0, 1), None, warm)
    param_space = {"hidden_size": tune.choice([16, 32]), "lr": tune.loguniform(1e-3, 1e-2), "seed": 0}
    assert searcher.set_search_properties("val/loss", "min", param_space)
    told = searcher._ot_study.trials  # Optuna's own record of what the sampler has seen
    assert [t.params for t in told] == warm.points and [t.value for t in told] == warm.rewards
    assert len({round_seed(7, k) for k in range(5)}) == 5


@pytest.mark.ray
@pytest.mark.parametrize("search", ["tpe", "random"])
def test_extend_adds_trials_the_searcher_was_told_of_and_the_summary_covers_all(tmp_path: Path, search: str) -> None:
    small = {"max_epochs": 2, "epoch_samples": 1024, "storage": str(tmp_path), "scheduler": "fifo"}
    first = cluster.run(name="ext", num_samples=3, search=search, **small)
    assert first.summary is not None and first.summary.trials["total"] == 3
    old = first.trials()
    last_loss = first.history().groupby("trial_id")["val/loss"].last()  # read now: the folder grows below

    grown = cluster.extend(first.uri, num_samples=2)
    assert grown.summary is not None and grown.summary.trials["total"] == 5
    trials = grown.trials()
    assert list(trials["round"]) == [0, 0, 0, 1, 1] and set(trials["state"]) == {"finished"}
    assert grown.best.val.rmse == pytest.approx(trials["best_val_rmse"].min(), rel=1e-6)
    assert grown.summary.best.val.rmse <= first.summary.best.val.rmse
    assert any("trials from 2 runs" in n for n in grown.summary.notes)

    warm = json.loads((tmp_path / "ext" / "extend-1" / "warm_start.json").read_text())
    assert warm["searcher"] == search and warm["trials"] == 3
    assert sorted(warm["rewards"]) == pytest.approx(sorted(last_loss))
    old_lrs = set(old["config.lr"])
    new_lrs = set(trials[trials["round"] == 1]["config.lr"])
    assert not old_lrs & new_lrs, "the new round proposed an earlier trial's configuration again"
    assert len(grown.history()) == 10
    assert cluster.load_experiment(first.uri).summary == grown.summary


def test_the_cli_shells_take_exactly_the_apis_options() -> None:
    """`data prepare` passes its parameters to cluster.prepare by name, and `run` to RunOptions: a parameter added on
    one side only would be dropped or refused, so the names must agree."""
    import inspect

    from cluster.cli import data as cli_data
    from cluster.cli import run as cli_run
    from cluster.plan.options import flat_option_names

    cli_prepare = set(inspect.signature(cli_data.prepare).parameters) - set(cli_data.CLI_ONLY)
    api_prepare = {n for n, p in inspect.signature(cluster.prepare).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert cli_prepare == api_prepare, (
        f"only in the CLI: {cli_prepare - api_prepare}; only in the API: {api_prepare - cli_prepare}"
    )
    cli_options = set(inspect.signature(cli_run.run).parameters) - set(cli_run.CLI_ONLY)
    assert cli_options == set(flat_option_names()), cli_options ^ set(flat_option_names())
