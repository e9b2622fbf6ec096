"""``lstm-tune``: the command line. Progress and tables go to stderr; ``--json`` puts the summary on stdout."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from cluster.cli_common import err, fail, set_endpoint, user_errors
from cluster.cli_data import data_app
from cluster.cli_jobs import jobs_app, submit
from cluster.cli_k8s import k8s_app
from cluster.cli_model import export, predict
from cluster.options import CheckpointOptions, ResourceOptions, RunOptions, SchedulerOptions
from search_spaces import SearchSpaceError, preset_names

if TYPE_CHECKING:
    from cluster.preflight import Finished, Ready
    from cluster.summary import Summary

app = typer.Typer(
    name="lstm-tune",
    help="Tune LSTM sequence models with Ray Tune (ASHA, PBT) on a laptop or a Ray cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
spaces_app = typer.Typer(help="Search-space presets.", no_args_is_help=True)
experiments_app = typer.Typer(help="Experiments in storage: list, show.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
app.add_typer(spaces_app, name="spaces")
app.add_typer(data_app, name="data")
app.add_typer(jobs_app, name="jobs")
app.add_typer(k8s_app, name="k8s")
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(submit)
app.command()(export)
app.command()(predict)


@app.command()
def run(
    space: Annotated[str, typer.Option(help="Search-space preset or YAML file.")] = "forecast-small",
    scheduler: Annotated[str, typer.Option(help="asha | pbt | fifo")] = "asha",
    search: Annotated[str, typer.Option(help="random | grid | tpe (model-based, Optuna's TPE sampler)")] = "random",
    num_samples: Annotated[int, typer.Option(help="Configurations to sample (grid: repeats of the grid).")] = 16,
    max_epochs: Annotated[int, typer.Option(help="Epochs a trial may train.")] = 12,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial (torch threads).")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(help="GPUs per trial; fractions share a GPU.")] = 0.0,
    max_concurrent_trials: Annotated[int | None, typer.Option(help="Cap on trials running at once.")] = None,
    workers_per_trial: Annotated[
        int, typer.Option(help="Data-parallel workers per trial (DDP; each takes the CPUs/GPUs per trial).")
    ] = 1,
    reuse_workers: Annotated[
        bool, typer.Option(help="Run trials in finished trials' worker processes (imports and data already loaded).")
    ] = True,
    storage: Annotated[str, typer.Option(help="Folder or s3://bucket/prefix for experiments.")] = "./runs",
    name: Annotated[str | None, typer.Option(help="Experiment name (default: <space>-<scheduler>-<time>).")] = None,
    data: Annotated[str | None, typer.Option(help="Prepared dataset URI (default: bundled Beijing PM2.5).")] = None,
    horizon: Annotated[int, typer.Option(help="Hours ahead to forecast (bundled data).")] = 1,
    seed: Annotated[int, typer.Option(help="Seed for sampling and initialisation.")] = 0,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: RAY_ADDRESS, else local).")] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint (else AWS_ENDPOINT_URL_S3).")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="Node-local shard cache for remote data.")] = None,
    embeddings: Annotated[
        str | None, typer.Option(help="Pretrained word vectors (word2vec/GloVe text, .gz ok) for text datasets.")
    ] = None,
    grace_period: Annotated[
        int | None, typer.Option(help="ASHA: epochs before a trial can be stopped [min(2, max-epochs)].")
    ] = None,
    reduction_factor: Annotated[int, typer.Option(help="ASHA: keep 1/N of trials per rung.")] = 3,
    perturbation_interval: Annotated[int, typer.Option(help="PBT: epochs between exploit/explore.")] = 2,
    quantile_fraction: Annotated[float, typer.Option(help="PBT: bottom fraction that clones the top.")] = 0.25,
    resample_probability: Annotated[float, typer.Option(help="PBT: chance to resample instead of perturb.")] = 0.25,
    keep_checkpoints: Annotated[int, typer.Option(help="Checkpoints kept per trial (PBT needs >= 3).")] = 3,
    keep_stopped: Annotated[int, typer.Option(help="Stopped-early trials whose checkpoints are kept (the best).")] = 2,
    sync_period_s: Annotated[
        int, typer.Option(help="Seconds between uploads of the experiment state and result histories to storage.")
    ] = 60,
    max_failures: Annotated[int, typer.Option(help="Retries of a failed trial from its last checkpoint.")] = 3,
    ensemble: Annotated[
        int, typer.Option(help="Export the mean of the best N trials (each at its best checkpoint); 1: the best alone.")
    ] = 1,
    patience: Annotated[int, typer.Option(help="Early stopping in a trial: epochs without improvement (0: off).")] = 0,
    time_budget_s: Annotated[float | None, typer.Option(help="Wall-clock budget of the tuning run, seconds.")] = None,
    min_delta: Annotated[float, typer.Option(help="Early stopping: smallest val/loss improvement that counts.")] = 0.0,
    epoch_samples: Annotated[
        int | None, typer.Option(help="Training samples per epoch, drawn at random (default: all of them).")
    ] = None,
    resume_if_exists: Annotated[
        bool, typer.Option(help="If the experiment exists, resume it (finished: print its summary) instead of failing.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Tune an LSTM forecaster or text classifier and print the best trial against naive baselines."""
    set_endpoint(s3_endpoint)
    opts = run_options(dict(locals()))

    def job() -> Summary:
        from cluster.preflight import preflight

        # Every check, the data preparation and the storage probe run before torch and Ray are imported.
        return _launch(preflight(opts, err, resume_if_exists=resume_if_exists))

    _tune(job, json_out)


def run_options(p: dict[str, Any]) -> RunOptions:
    """``run``'s parameters (by name) as :class:`RunOptions`; ``submit`` parses the same arguments through it."""
    return RunOptions(
        space=p["space"],
        search=p["search"],
        num_samples=p["num_samples"],
        max_epochs=p["max_epochs"],
        seed=p["seed"],
        storage=p["storage"],
        name=p["name"],
        data=p["data"],
        horizon=p["horizon"],
        address=p["address"],
        cache_dir=p["cache_dir"],
        embeddings=p["embeddings"],
        scheduler=SchedulerOptions(
            kind=p["scheduler"],
            grace_period=p["grace_period"],
            reduction_factor=p["reduction_factor"],
            perturbation_interval=p["perturbation_interval"],
            quantile_fraction=p["quantile_fraction"],
            resample_probability=p["resample_probability"],
        ),
        resources=ResourceOptions(
            cpus_per_trial=p["cpus_per_trial"],
            gpus_per_trial=p["gpus_per_trial"],
            max_concurrent_trials=p["max_concurrent_trials"],
            workers_per_trial=p["workers_per_trial"],
            reuse_workers=p.get("reuse_workers", True),
        ),
        checkpoints=CheckpointOptions(
            num_to_keep=p["keep_checkpoints"], keep_stopped=p["keep_stopped"], sync_period_s=p["sync_period_s"]
        ),
        max_failures=p["max_failures"],
        ensemble=p["ensemble"],
        patience=p["patience"],
        min_delta=p["min_delta"],
        epoch_samples=p["epoch_samples"],
        time_budget_s=p["time_budget_s"],
    )


def _launch(ready: Ready | Finished) -> Summary:
    from cluster.preflight import Finished

    if isinstance(ready, Finished):
        return ready.show(err)  # nothing to run: torch and Ray stay unloaded
    from cluster.experiment import launch

    return launch(ready, err)


def _tune(job: Callable[[], Summary], json_out: bool) -> None:
    """Run a tuning job with the CLI's error contract: exit 2 for bad input, 1 when every trial failed."""
    try:
        # stdout is the summary's alone: Ray prints cluster events (a node lost, ...) to it.
        with contextlib.redirect_stdout(sys.stderr):
            summary = job()
    except user_errors() as exc:
        fail(str(exc))
        return
    except RuntimeError as exc:
        fail(str(exc), code=1)
        return
    if json_out:
        sys.stdout.write(summary.to_json() + "\n")


@app.command()
def resume(
    uri: Annotated[str, typer.Argument(help="Experiment folder or s3:// prefix (<storage>/<name>).")],
    address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: RAY_ADDRESS, else local).")] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint (else AWS_ENDPOINT_URL_S3).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Finish an interrupted experiment: trials continue from their last checkpoints, errored ones are retried."""
    set_endpoint(s3_endpoint)

    def job() -> Summary:
        from cluster.preflight import preflight_resume

        return _launch(preflight_resume(uri, err, address=address))  # checked before torch and Ray, as for run

    _tune(job, json_out)


@experiments_app.command("list")
def experiments_list(
    storage: Annotated[str, typer.Argument(help="Storage folder or s3:// prefix holding experiments.")] = "./runs",
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """List the experiments under a storage location."""
    from rich.table import Table

    from cluster.experiments import list_experiments

    set_endpoint(s3_endpoint)
    try:
        infos = list_experiments(storage)
    except user_errors() as exc:
        fail(str(exc))
        return
    if json_out:
        sys.stdout.write(json.dumps([i.to_dict() for i in infos], indent=2) + "\n")
        return
    table = Table(title=f"experiments in {storage}")
    for col in ("name", "status", "trials", "best val", "test"):
        table.add_column(col)
    for i in infos:
        trials = ", ".join(f"{n} {s.lower()}" for s, n in sorted(i.trials.items()))
        table.add_row(i.name, i.status, trials, i.best_cell(), i.test_cell())
    Console(soft_wrap=True).print(table)


@experiments_app.command("show")
def experiments_show(
    uri: Annotated[str, typer.Argument(help="Experiment folder or s3:// prefix.")],
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Status, trial counts and best so far of one experiment."""
    from cluster.experiments import describe
    from trainables.storage import resolve

    set_endpoint(s3_endpoint)
    try:
        info = describe(resolve(uri))
    except user_errors() as exc:
        fail(str(exc))
        return
    if json_out:
        sys.stdout.write(json.dumps(info.to_dict(), indent=2) + "\n")
        return
    trials = ", ".join(f"{n} {s.lower()}" for s, n in sorted(info.trials.items()))
    lines = [f"experiment {info.uri}: {info.status}", f"trials: {sum(info.trials.values())} ({trials})"]
    if info.retries:
        each = ", ".join(f"{t} {n}x" for t, n in sorted(info.retries.items()))
        lines.append(f"restarted from a checkpoint after a failure: {each}")
    lines.append(info.best_line())
    if (test := info.test_line()) is not None:
        lines.append(test)
    typer.echo("\n".join(lines))


@app.command()
def tensorboard(
    uri: Annotated[str, typer.Argument(help="Experiment folder or s3:// prefix (<storage>/<name>).")],
    host: Annotated[str, typer.Option(help="Interface to serve on; 0.0.0.0 exposes it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 6006,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint (else AWS_ENDPOINT_URL_S3).")] = None,
) -> None:
    """Serve TensorBoard on an experiment, while it runs or after: scalars per trial, HParams table, PBT lineage."""
    import tempfile

    from cluster.tensorboard_server import Board, free_port, logdir_of, serving, wait_ready
    from trainables.storage import resolve

    set_endpoint(s3_endpoint)
    try:
        root = resolve(uri)
    except user_errors() as exc:
        fail(str(exc))
        return
    board = Board(logdir=logdir_of(root), host=host, port=port or free_port(host))
    log = tempfile.NamedTemporaryFile(prefix="lstm-tune-tensorboard-", suffix=".log", delete=False).name
    with serving(board, log) as proc:
        try:
            wait_ready(board, proc, log)
            err.print(f"TensorBoard on {board.logdir}: {board.url}  (Ctrl-C stops it; log {log})", highlight=False)
            sys.stderr.flush()
            proc.wait()
        except RuntimeError as exc:
            fail(str(exc), code=1)
        except KeyboardInterrupt:
            pass


@spaces_app.command("list")
def spaces_list() -> None:
    """List the bundled presets."""
    for preset in preset_names():
        typer.echo(preset)


@spaces_app.command("show")
def spaces_show(space: Annotated[str, typer.Argument(help="Preset name or YAML file.")]) -> None:
    """Validate a search space and print what it samples."""
    from cluster.space import param_rules
    from search_spaces import load_space

    try:
        s = load_space(space, param_rules())
    except SearchSpaceError as exc:
        fail(str(exc))
        return
    typer.echo(f"{s.name} ({s.source}) task={s.task}: {s.description}")
    for name, spec in s.params.items():
        rng = f"{list(spec.values)}" if spec.values else f"[{spec.low:g}, {spec.high:g}]"
        mut = "  (PBT mutates)" if name in s.mutations else ""
        typer.echo(f"  {name:14s} {spec.distribution:10s} {rng}{mut}")


@app.command()
def report(
    uri: Annotated[str, typer.Argument(help="Experiment folder or s3:// prefix (finished or not).")],
    out: Annotated[str | None, typer.Option(help="Report folder (default: reports/<experiment name>).")] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint (else AWS_ENDPOINT_URL_S3).")] = None,
) -> None:
    """Write a report folder: PNG plots (learning curves, best so far, ASHA rungs, PBT lineage) and report.md."""
    from pathlib import Path

    from cluster.report import read_experiment, write_report
    from trainables.storage import resolve

    set_endpoint(s3_endpoint)
    try:
        record = read_experiment(resolve(uri))
        folder = Path(out or f"reports/{record.name}")
        files = write_report(record, folder)
    except user_errors() as exc:
        fail(str(exc))
        return
    err.print(f"report of {len(record.trials)} trials -> {folder}/report.md ({len(files) - 1} plots)", highlight=False)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Run the benchmark suite (benchmarks/suite.py, in a source checkout): --quick, --only, --out; --help for all."""
    import importlib
    import sys
    from pathlib import Path

    # An editable install runs from the checkout, whose root holds benchmarks/ next to cluster/.
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "suite.py").is_file():
        fail(
            "lstm-tune bench: the benchmark suite is not installed with the package; run it from a source checkout "
            "(pip install -e . there, or python3 -m benchmarks.suite), with the datasets in ../shared/datasets or "
            "LSTM_TUNE_BENCH_DATASETS"
        )
        return
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    # Imported by name: the suite is a script folder, not part of the typed package.
    importlib.import_module("benchmarks.suite").main(list(ctx.args), prog="lstm-tune bench")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
