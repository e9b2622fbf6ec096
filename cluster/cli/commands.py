"""``lstm-tune``: the command line. Progress and tables go to stderr; ``--json`` puts the summary on stdout."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from cluster.cli.common import err, fail, set_endpoint, user_errors
from cluster.cli.data import data_app
from cluster.cli.jobs import jobs_app, submit
from cluster.cli.k8s import k8s_app
from cluster.cli.model import export, predict
from cluster.cli.run import extend, resume, run
from search_spaces import SearchSpaceError, preset_names

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
app.command()(run)
app.command()(resume)
app.command()(extend)


@experiments_app.command("list")
def experiments_list(
    storage: Annotated[str, typer.Argument(help="Storage folder or s3:// prefix holding experiments.")] = "./runs",
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """List the experiments under a storage location."""
    from rich.table import Table

    from cluster.results.experiments import list_experiments

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
    from cluster.results.experiments import describe
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
    lines.extend(info.details)
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

    from cluster.report.tensorboard import Board, free_port, logdir_of, serving, wait_ready
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
    from cluster.plan.space import param_rules
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

    from cluster.report.writer import read_experiment, write_report
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
    root = Path(__file__).resolve().parents[2]
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
