"""``lstm-tune submit`` and ``lstm-tune jobs ...``: runs sent to a Ray cluster through the Ray Jobs API."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cluster.cli.common import err, fail, user_errors
from cluster.cli.run import parse_run_args, run_options
from cluster.plan.options import OptionError
from cluster.remote.jobs import JobError, Submission, dashboard_address

jobs_app = typer.Typer(help="Runs submitted to a Ray cluster: list, status, logs, stop.", no_args_is_help=True)

ADDRESS_HELP = "Ray dashboard, http://HOST:8265 (default: RAY_ADDRESS, else http://127.0.0.1:8265)."
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def check_remote_paths(params: dict[str, Any]) -> None:
    """A submitted driver writes on the cluster: a relative path would land in its temporary working directory."""
    for key in ("storage", "data", "embeddings"):
        value = params.get(key)
        if value and "://" not in value and not Path(value).is_absolute():
            raise OptionError(
                f"--{key} = {value}: relative paths do not survive submission (they resolve inside the job's "
                "temporary working directory on the cluster); give s3://bucket/prefix, or an absolute path every node "
                "shares"
            )


def validate_submission(params: dict[str, Any], address: str) -> None:
    """Everything checkable before the job exists: options, search space, paths, and that trials fit the nodes."""
    from cluster.plan.planning import plan
    from cluster.remote.jobs import check_reachable

    opts = run_options(params)
    plan(opts)
    check_remote_paths(params)
    check_reachable(address)
    cpus, gpus = node_resources(address)
    opts.resources.check_fits(cpus, gpus)


def node_resources(address: str) -> tuple[list[float], list[float]]:
    """CPUs and GPUs of each alive node, through the dashboard's state API."""
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(
            address=address, filters=[("state", "=", "ALIVE")], timeout=10, raise_on_missing_output=False
        )
    except Exception as exc:  # the state API raises its own types; the message is what matters
        raise JobError(f"cannot list the nodes of {address}: {exc}") from None
    cpus = [float((n.resources_total or {}).get("CPU", 0)) for n in nodes]
    gpus = [g for n in nodes if (g := float((n.resources_total or {}).get("GPU", 0))) > 0]
    return cpus, gpus


def submit(
    ctx: typer.Context,
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
    working_dir: Annotated[Path, typer.Option(help="Folder uploaded as the job's working directory.")] = Path("."),
    exclude: Annotated[
        list[str] | None, typer.Option(help="Gitignore-style pattern left out of the upload (repeatable).")
    ] = None,
    max_package_mb: Annotated[float, typer.Option(help="Refuse to upload more than this (after exclusions).")] = 100.0,
    entrypoint_num_cpus: Annotated[
        float, typer.Option(help="CPUs reserved for the driver (0: runs on a CPU-less head).")
    ] = 0.0,
    entrypoint_memory_mb: Annotated[int | None, typer.Option(help="Memory reserved for the driver, MiB.")] = None,
    submission_id: Annotated[str | None, typer.Option(help="Job id to use (default: Ray picks one).")] = None,
    follow_logs: Annotated[bool, typer.Option("--follow", help="Stream the job's log until it ends.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the submission as JSON on stdout.")] = False,
) -> None:
    """Send a run to a Ray cluster: takes every `run` option after these (e.g. `submit --address URL -- --scheduler pbt`)."""
    from cluster.remote.jobs import check_package, scan_package
    from cluster.remote.jobs import submit as send

    run_args = list(ctx.args)
    try:
        url = dashboard_address(address)
        params = parse_run_args(run_args)
        if params.get("address"):
            raise OptionError("--address belongs before the run options: the submitted driver joins its own cluster")
        pkg = scan_package(working_dir, tuple(exclude or ()))
        check_package(pkg, max_package_mb)
        validate_submission(params, url)
        sub = Submission(
            address=url,
            run_args=run_args,
            working_dir=pkg.root,
            excludes=tuple(exclude or ()),
            entrypoint_num_cpus=entrypoint_num_cpus,
            entrypoint_memory_mb=entrypoint_memory_mb,
            submission_id=submission_id,
        )
        started = time.monotonic()
        job_id = send(sub)
    except JobError as exc:
        fail(str(exc), code=1)
        return
    except user_errors() as exc:
        fail(str(exc))
        return
    info = {
        "submission_id": job_id,
        "dashboard": f"{url}/#/jobs/{job_id}",
        "package_mb": round(pkg.bytes / 1e6, 2),
        "package_files": pkg.files,
        "submit_s": round(time.monotonic() - started, 2),
        "ray_job_submit": sub.ray_command(),
    }
    if json_out:
        sys.stdout.write(json.dumps(info) + "\n")
    else:
        err.print(f"submitted {job_id} ({pkg.files} files, {pkg.bytes / 1e6:.1f} MB)", highlight=False)
        err.print(f"dashboard: {info['dashboard']}", highlight=False)
        err.print(f"same as: {info['ray_job_submit']}", highlight=False, markup=False)
        err.print(f"follow:  lstm-tune jobs logs {job_id} --follow --address {url}", highlight=False, markup=False)
    if follow_logs:
        _follow(url, job_id)


def _follow(url: str, job_id: str) -> None:
    from cluster.remote.jobs import follow, status

    for chunk in follow(url, job_id):
        sys.stderr.write(chunk)
    final = status(url, job_id)
    err.print(f"job {job_id}: {final.status}", highlight=False)
    if final.status != "SUCCEEDED":
        raise typer.Exit(1)


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except JobError as exc:
        fail(str(exc), code=1)
    except OptionError as exc:
        fail(str(exc))


@jobs_app.command("list")
def jobs_list(
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Submitted jobs, newest first."""
    from rich.table import Table

    from cluster.remote.jobs import list_jobs

    url = _call(dashboard_address, address)
    rows = _call(list_jobs, url)
    if json_out:
        sys.stdout.write(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
        return
    table = Table(title=f"jobs at {url}")
    for col in ("submission id", "status", "started", "entrypoint"):
        table.add_column(col)
    for r in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.start_time)) if r.start_time else "-"
        table.add_row(r.submission_id, r.status, started, r.entrypoint)
    Console(soft_wrap=True).print(table)


@jobs_app.command("status")
def jobs_status(
    job_id: Annotated[str, typer.Argument(help="Submission id.")],
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """A job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) and message."""
    from cluster.remote.jobs import status

    row = _call(status, _call(dashboard_address, address), job_id)
    if json_out:
        sys.stdout.write(json.dumps(row.to_dict()) + "\n")
    else:
        typer.echo(f"{row.submission_id}: {row.status}" + (f" ({row.message})" if row.message else ""))


@jobs_app.command("logs")
def jobs_logs(
    job_id: Annotated[str, typer.Argument(help="Submission id.")],
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
    follow_logs: Annotated[bool, typer.Option("--follow", "-f", help="Stream until the job ends.")] = False,
) -> None:
    """A job's driver log (progress lines and the summary); --follow streams it until the job ends."""
    from cluster.remote.jobs import logs

    url = _call(dashboard_address, address)
    if follow_logs:
        try:
            _follow(url, job_id)
        except JobError as exc:
            fail(str(exc), code=1)
        return
    sys.stdout.write(_call(logs, url, job_id))


@jobs_app.command("stop")
def jobs_stop(
    job_id: Annotated[str, typer.Argument(help="Submission id.")],
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
    wait_s: Annotated[float, typer.Option(help="Wait this long for the job to reach STOPPED.")] = 60.0,
) -> None:
    """Stop a job: its trials end; `lstm-tune resume` can finish the experiment later."""
    from cluster.remote.jobs import status, stop

    url = _call(dashboard_address, address)
    if not _call(stop, url, job_id):
        row = _call(status, url, job_id)
        typer.echo(f"{job_id}: already {row.status}")
        return
    deadline = time.monotonic() + wait_s
    row = _call(status, url, job_id)
    while row.status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(1)
        row = _call(status, url, job_id)
    typer.echo(f"{job_id}: {row.status}")


__all__ = ["jobs_app", "parse_run_args", "submit"]
