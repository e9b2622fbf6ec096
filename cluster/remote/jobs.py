"""Ray Jobs: send a run to a cluster's dashboard, and list, follow and stop what was sent.

The driver of a submitted run is ``python -m cluster.cli run ...`` on the cluster's head, inside the uploaded working
directory. Credentials never travel with the job: the cluster reads its own (environment, instance profile, IRSA).
"""

from __future__ import annotations

import json
import os
import shlex
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pathspec

from cluster.plan.options import OptionError

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
CONNECT_TIMEOUT_S = 5.0
DEFAULT_EXCLUDES = (
    ".git/",
    "__pycache__/",
    "*.pyc",
    ".venv*/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".pytest_cache/",
    "*.egg-info/",
    "runs/",
)
"""Never worth shipping; besides these, ``.gitignore`` and ``.rayignore`` files apply, as they do for Ray."""


class JobError(RuntimeError):
    """The cluster cannot be reached, or refused what was asked."""


def dashboard_address(address: str | None) -> str:
    """``--address``, else RAY_ADDRESS, else the local default, as an ``http(s)://host:port`` URL."""
    raw = (address or os.environ.get("RAY_ADDRESS") or DEFAULT_DASHBOARD).strip().rstrip("/")
    if raw.startswith("ray://"):
        raise OptionError(
            f"--address = {raw}: job submission talks to the dashboard (http://HOST:8265), not the Ray Client port"
        )
    if "://" not in raw:
        raw = f"http://{raw}"
    if not raw.startswith(("http://", "https://")):
        raise OptionError(f"--address = {raw}: must be http://HOST:PORT of the cluster's dashboard")
    return raw


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> str:
    """The cluster's Ray version, or a clear error within ``timeout`` seconds (the Ray client would retry longer)."""
    try:
        with urllib.request.urlopen(f"{address}/api/version", timeout=timeout) as resp:
            info = json.loads(resp.read() or b"{}")
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise JobError(
            f"no Ray dashboard at {address} ({reason}): is the cluster up, and is this the dashboard's address "
            "(http://HOST:8265; `kubectl port-forward svc/<cluster>-head-svc 8265` for KubeRay)?"
        ) from None
    return str(info.get("ray_version", "unknown"))


@dataclass(frozen=True)
class Package:
    """What ``working_dir`` uploads: files and bytes after exclusions."""

    root: Path
    files: int
    bytes: int
    largest: list[tuple[str, int]] = field(default_factory=list)


def _ignore_spec(folder: Path) -> list[str]:
    lines: list[str] = []
    for name in (".gitignore", ".rayignore"):
        f = folder / name
        if f.is_file():
            lines += f.read_text(errors="replace").splitlines()
    return lines


def scan_package(root: Path, excludes: tuple[str, ...] = ()) -> Package:
    """Walk ``root`` as Ray's packaging does: user and default excludes at the root, ignore files per folder."""
    root = root.resolve()
    sizes: dict[str, int] = {}
    top = pathspec.PathSpec.from_lines("gitignore", [*DEFAULT_EXCLUDES, *excludes])

    def walk(folder: Path, specs: list[tuple[Path, Any]]) -> None:
        own = _ignore_spec(folder)
        if own:
            specs = [*specs, (folder, pathspec.PathSpec.from_lines("gitignore", own))]
        for entry in sorted(folder.iterdir()):
            is_dir = entry.is_dir() and not entry.is_symlink()
            if any(spec.match_file(_rel(entry, base, is_dir)) for base, spec in specs):
                continue
            if is_dir:
                walk(entry, specs)
            elif entry.is_file():
                sizes[_rel(entry, root, False)] = entry.stat().st_size

    walk(root, [(root, top)])
    largest = sorted(sizes.items(), key=lambda kv: kv[1], reverse=True)[:5]
    return Package(root=root, files=len(sizes), bytes=sum(sizes.values()), largest=largest)


def _rel(path: Path, base: Path, is_dir: bool) -> str:
    rel = path.relative_to(base).as_posix()
    return rel + "/" if is_dir else rel


def check_package(pkg: Package, limit_mb: float) -> None:
    if pkg.bytes > limit_mb * 1e6:
        big = ", ".join(f"{name} ({size / 1e6:.1f} MB)" for name, size in pkg.largest)
        raise OptionError(
            f"--working-dir {pkg.root} is {pkg.bytes / 1e6:.1f} MB in {pkg.files} files after exclusions "
            f"(--max-package-mb = {limit_mb:g}); largest: {big}. Exclude them with --exclude PATTERN, "
            ".gitignore or .rayignore, or put data in storage and pass --data."
        )


@dataclass(frozen=True, kw_only=True)
class Submission:
    """One run to send: the ``run`` arguments and where and how its driver runs."""

    address: str
    run_args: list[str]
    working_dir: Path
    excludes: tuple[str, ...] = ()
    entrypoint_num_cpus: float = 0.0
    """The driver only coordinates; 0 lets it run on a head that offers no CPUs to trials."""
    entrypoint_memory_mb: int | None = None
    submission_id: str | None = None
    env_vars: dict[str, str] = field(default_factory=dict)

    @property
    def entrypoint(self) -> str:
        return shlex.join(["python", "-m", "cluster.cli", "run", *self.run_args])

    @property
    def runtime_env(self) -> dict[str, Any]:
        env: dict[str, Any] = {"working_dir": str(self.working_dir), "excludes": [*DEFAULT_EXCLUDES, *self.excludes]}
        if self.env_vars:
            env["env_vars"] = dict(self.env_vars)
        return env

    def ray_command(self) -> str:
        """The equivalent ``ray job submit`` command line."""
        cmd = ["ray", "job", "submit", "--address", self.address, "--working-dir", str(self.working_dir)]
        cmd += ["--runtime-env-json", json.dumps({k: v for k, v in self.runtime_env.items() if k != "working_dir"})]
        cmd += ["--entrypoint-num-cpus", f"{self.entrypoint_num_cpus:g}"]
        if self.entrypoint_memory_mb:
            cmd += ["--entrypoint-memory", str(self.entrypoint_memory_mb * 2**20)]
        if self.submission_id:
            cmd += ["--submission-id", self.submission_id]
        return shlex.join([*cmd, "--", "python", "-m", "cluster.cli", "run", *self.run_args])


def client(address: str) -> Any:
    check_reachable(address)
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def submit(sub: Submission) -> str:
    """Send the run; return its submission id."""
    jobs = client(sub.address)
    try:
        return str(
            jobs.submit_job(
                entrypoint=sub.entrypoint,
                runtime_env=sub.runtime_env,
                submission_id=sub.submission_id,
                entrypoint_num_cpus=sub.entrypoint_num_cpus,
                entrypoint_memory=sub.entrypoint_memory_mb * 2**20 if sub.entrypoint_memory_mb else None,
                metadata={"tool": "lstm-tune"},
            )
        )
    except RuntimeError as exc:
        raise JobError(f"the cluster at {sub.address} refused the job: {str(exc).strip().splitlines()[-1]}") from None


@dataclass(frozen=True)
class JobRow:
    submission_id: str
    status: str
    entrypoint: str
    start_time: float | None
    end_time: float | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "submission_id": self.submission_id,
            "status": self.status,
            "entrypoint": self.entrypoint,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "message": self.message,
        }


def _row(details: Any) -> JobRow:
    def seconds(ms: Any) -> float | None:
        return float(ms) / 1000 if ms else None

    return JobRow(
        submission_id=str(details.submission_id or details.job_id or ""),
        status=str(getattr(details.status, "value", details.status)),
        entrypoint=str(details.entrypoint or ""),
        start_time=seconds(details.start_time),
        end_time=seconds(details.end_time),
        message=str(details.message or ""),
    )


def list_jobs(address: str) -> list[JobRow]:
    """Submitted jobs (driver-only Ray sessions, which have no submission id, left out), newest first."""
    rows = [_row(d) for d in client(address).list_jobs() if getattr(d, "submission_id", None)]
    return sorted(rows, key=lambda r: r.start_time or 0, reverse=True)


def _known(jobs: Any, address: str, job_id: str) -> Any:
    try:
        return jobs.get_job_info(job_id)
    except RuntimeError:
        raise JobError(f"job {job_id!r}: no such job at {address} (`lstm-tune jobs list` shows them)") from None


def status(address: str, job_id: str) -> JobRow:
    jobs = client(address)
    return _row(_known(jobs, address, job_id))


def logs(address: str, job_id: str) -> str:
    jobs = client(address)
    _known(jobs, address, job_id)
    return str(jobs.get_job_logs(job_id))


def follow(address: str, job_id: str) -> Iterator[str]:
    """The job's log from its start, chunk by chunk, until it ends."""
    import asyncio

    jobs = client(address)
    _known(jobs, address, job_id)
    loop = asyncio.new_event_loop()
    stream = jobs.tail_job_logs(job_id).__aiter__()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def stop(address: str, job_id: str) -> bool:
    """Ask the job to stop; True if it was running."""
    jobs = client(address)
    _known(jobs, address, job_id)
    return bool(jobs.stop_job(job_id))


__all__ = [
    "DEFAULT_EXCLUDES",
    "JobError",
    "JobRow",
    "Package",
    "Submission",
    "check_package",
    "check_reachable",
    "dashboard_address",
    "follow",
    "list_jobs",
    "logs",
    "scan_package",
    "status",
    "stop",
    "submit",
]
