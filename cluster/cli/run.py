"""``lstm-tune run`` and ``lstm-tune resume``: shells over :func:`cluster.run` and :func:`cluster.resume`. ``submit``
and the Kubernetes renderer parse their ``run`` arguments through :func:`parse_run_args` here."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from cluster.cli.common import err, fail, set_endpoint, user_errors
from cluster.plan.options import OptionError, RunOptions, options_from_flat


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
    pack: Annotated[
        int,
        typer.Option(help="GPU only: train up to N same-shape trials together in one process per GPU (0: off)."),
    ] = 0,
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
    metric: Annotated[
        str,
        typer.Option(
            help="What trials are selected on: loss (scaled MSE) | rmse | mae | mase | smape (mase, smape: panels) | "
            "pinball (mean over --quantiles)."
        ),
    ] = "loss",
    quantiles: Annotated[
        str,
        typer.Option(help="Levels a loss=quantile model forecasts (outermost: the interval), comma-separated."),
    ] = "0.1,0.5,0.9",
    ensemble: Annotated[
        int, typer.Option(help="Export the mean of the best N trials (each at its best checkpoint); 1: the best alone.")
    ] = 1,
    patience: Annotated[int, typer.Option(help="Early stopping in a trial: epochs without improvement (0: off).")] = 0,
    time_budget_s: Annotated[float | None, typer.Option(help="Wall-clock budget of the tuning run, seconds.")] = None,
    min_delta: Annotated[float, typer.Option(help="Early stopping: smallest val/loss improvement that counts.")] = 0.0,
    epoch_samples: Annotated[
        int | None, typer.Option(help="Training samples per epoch, drawn at random (default: all of them).")
    ] = None,
    memory_budget: Annotated[
        str | None,
        typer.Option(
            help="Bytes a trial may hold of a panel (1.5GB, 800MiB); larger panels stream [a quarter of RAM]."
        ),
    ] = None,
    resume_if_exists: Annotated[
        bool, typer.Option(help="If the experiment exists, resume it (finished: print its summary) instead of failing.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Tune an LSTM forecaster or text classifier and print the best trial against naive baselines."""
    params = dict(locals())  # first: the parameters alone
    from cluster.api.calls import run as run_api

    set_endpoint(s3_endpoint)
    _tune(lambda: run_api(run_options(params), progress=err, resume_if_exists=resume_if_exists), json_out)


CLI_ONLY = ("resume_if_exists", "json_out", "s3_endpoint")
"""``run`` parameters that are not :class:`RunOptions` fields."""


def run_options(p: dict[str, Any]) -> RunOptions:
    """``run``'s parameters (by name) as :class:`RunOptions`; ``submit`` parses the same arguments through it."""
    return options_from_flat({k: v for k, v in p.items() if k not in CLI_ONLY})


def parse_run_args(args: list[str]) -> dict[str, Any]:
    """Parse ``run`` arguments exactly as ``run`` would, without running: a typo fails here, before submission."""
    one = typer.Typer(add_completion=False)
    one.command()(run)
    command = typer.main.get_command(one)
    try:
        ctx = command.make_context("run", list(args))
    except typer.Exit:
        raise OptionError("run arguments: --help is for `lstm-tune run --help`") from None
    except Exception as exc:  # typer's bundled click UsageError, not importable by a public name
        if not hasattr(exc, "format_message"):
            raise
        raise OptionError(f"run arguments: {exc.format_message()}") from None
    return dict(ctx.params)


def parse_run_options(args: list[str]) -> RunOptions:
    """``run`` arguments as the options they make (what the Kubernetes renderer checks a RayJob's entrypoint with)."""
    return run_options(parse_run_args(args))


def _tune(job: Callable[[], Any], json_out: bool) -> None:
    """Run a tuning job with the CLI's error contract: exit 2 for bad input, 1 when every trial failed."""
    try:
        # stdout is the summary's alone: Ray prints cluster events (a node lost, ...) to it.
        with contextlib.redirect_stdout(sys.stderr):
            result = job()
    except user_errors() as exc:
        fail(str(exc))
        return
    except RuntimeError as exc:
        fail(str(exc), code=1)
        return
    if json_out and result.summary is not None:
        sys.stdout.write(result.summary.to_json() + "\n")


def resume(
    uri: Annotated[str, typer.Argument(help="Experiment folder or s3:// prefix (<storage>/<name>).")],
    address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: RAY_ADDRESS, else local).")] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint (else AWS_ENDPOINT_URL_S3).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Finish an interrupted experiment: trials continue from their last checkpoints, errored ones are retried."""
    from cluster.api.calls import resume as resume_api

    set_endpoint(s3_endpoint)
    _tune(lambda: resume_api(uri, address=address, progress=err), json_out)


def extend(
    uri: Annotated[str, typer.Argument(help="A finished experiment (<storage>/<name>, local or s3://).")],
    num_samples: Annotated[int | None, typer.Option(help="More trials to run.")] = None,
    time_budget_s: Annotated[
        float | None, typer.Option(help="Seconds for the new trials (with --num-samples: whichever ends first).")
    ] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: RAY_ADDRESS, else local).")] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint (else AWS_ENDPOINT_URL_S3).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Run more trials for a finished experiment in its folder: the searcher is told of every earlier trial (TPE
    counts them as history; random search does not repeat them), and the summary and model cover all trials."""
    from cluster.api.calls import extend as extend_api

    set_endpoint(s3_endpoint)
    _tune(
        lambda: extend_api(uri, num_samples=num_samples, time_budget_s=time_budget_s, address=address, progress=err),
        json_out,
    )


__all__ = ["extend", "parse_run_args", "parse_run_options", "resume", "run", "run_options"]
