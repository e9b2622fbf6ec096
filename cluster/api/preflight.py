"""Everything ``lstm-tune run`` and ``resume`` do before Ray: storage reached and probed, data prepared and verified,
the run record written (or read back). Imports neither torch nor Ray, so a wrong ``--data``, ``--storage`` or
experiment URI is answered before those load (about 3 s here), and a finished experiment's summary is printed
without them.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from cluster.plan.options import CheckpointOptions, OptionError, ResourceOptions, RunOptions, SchedulerOptions
from cluster.plan.planning import Plan, plan
from cluster.plan.space import param_rules
from cluster.plan.storage import RUN_FILE, ExperimentPaths, StorageError, check_readable, is_experiment, probe
from cluster.results.summary import Summary, render, summary_from_json
from search_spaces import SearchSpace, SearchSpaceError, load_space, space_yaml
from trainables.config import ModelConfig
from trainables.data.cache import ShardCache
from trainables.data.embeddings import align, read_vectors, vector_dim
from trainables.data.handle import DataHandle
from trainables.data.manifest import Manifest, read_manifest
from trainables.data.shards import verify_all
from trainables.storage import Location, exists, read_bytes, resolve, s3_endpoint, write_bytes_atomic


@dataclass(frozen=True, kw_only=True)
class Ready:
    """An experiment that passed every check: its plan, its verified data, and when the command started."""

    plan: Plan
    data: DataHandle
    task: str
    started: float
    """``time.monotonic()`` at the start of the command (the summary's wall time counts from here)."""
    resuming: bool = False
    """The experiment exists and Tune restores it; otherwise it is new."""


@dataclass(frozen=True, kw_only=True)
class Finished:
    """The experiment exists and has finished: its summary, to print again."""

    uri: str
    summary: Summary

    def show(self, console: Console) -> Summary:
        console.print(f"experiment {self.uri} is finished; nothing to resume", highlight=False)
        render(self.summary, console)
        return self.summary


def check_embeddings(p: Plan, root: Location, manifest: Manifest, console: Console) -> None:
    """Pretrained vectors: asked for only with a file, of the right dimension; report how much they cover."""
    spec = p.space.params.get("embeddings")
    wanted = {v for v in spec.values if v != "random"} if spec is not None else set()
    if wanted and not p.options.embeddings:
        raise SearchSpaceError(
            f"{p.space.source}: params.embeddings can be {sorted(wanted)}, which needs a vector file: add --embeddings"
        )
    if not p.options.embeddings:
        return
    dim = vector_dim(p.options.embeddings)
    dims = p.space.params.get("embedding_dim")
    values = set(dims.values) if dims is not None and dims.values else {ModelConfig().embedding_dim}
    if values != {dim}:
        raise SearchSpaceError(
            f"{p.space.source}: params.embedding_dim = {sorted(values)}, but {p.options.embeddings} holds {dim}-dimensional "
            f"vectors; set embedding_dim: {dim}"
        )
    vocab = read_bytes(root.child(manifest.preprocessing["vocab_file"])).decode().split("\n")
    vocab = vocab[: int(manifest.task_params["vocab_size"])]
    aligned = align(vocab, read_vectors(p.options.embeddings, set(vocab)), dim)
    console.print(
        f"pretrained vectors {p.options.embeddings}: {aligned.found:,} of {aligned.words:,} vocabulary words covered "
        f"({aligned.coverage:.1%})",
        highlight=False,
    )


def check_against_data(space: SearchSpace, manifest: Manifest) -> None:
    """The longest window the space can sample must fit the history the dataset was prepared with."""
    longest = space.max_value("window")
    if longest is not None and longest > manifest.max_window:
        raise SearchSpaceError(
            f"{space.source}: params.window can reach {longest:g}, but the dataset at hand was prepared for windows "
            f"up to {manifest.max_window}"
        )


RUN_FILE_VERSION = 1


def options_to_dict(opts: RunOptions) -> dict[str, Any]:
    return asdict(opts)


def options_from_dict(raw: dict[str, Any]) -> RunOptions:
    return RunOptions(
        **{
            **raw,
            "scheduler": SchedulerOptions(**raw["scheduler"]),
            "resources": ResourceOptions(**raw["resources"]),
            "checkpoints": CheckpointOptions(**raw["checkpoints"]),
        }
    )


def prepare_data(p: Plan, console: Console) -> tuple[DataHandle, str]:
    """Prepare the bundled data if no dataset was named, then check the dataset completely before any trial."""
    opts = p.options
    data_uri = opts.data or p.paths.data.uri
    if opts.data is None:
        from cluster.prep.data import prepare_default  # pandas: paid only when the bundled data is prepared

        console.print(f"preparing bundled Beijing PM2.5 data at {data_uri}", highlight=False)
        prepare_default(p.paths.data, horizon=opts.horizon, max_window=168)
    root = resolve(data_uri)
    check_readable(root, "--data")
    manifest = read_manifest(root)
    if manifest.task != p.space.task:
        preset = "classify-small" if manifest.task == "classify" else "forecast-small"
        raise SearchSpaceError(
            f"--space {p.space.name}: written for task {p.space.task!r}, but --data {root.uri} is a "
            f"{manifest.task!r} dataset; use a {manifest.task} space such as --space {preset}"
        )
    if manifest.task == "forecast":
        check_against_data(p.space, manifest)
    else:
        check_embeddings(p, root, manifest, console)
    # Through the node's shard cache: trials on this node then find every shard already fetched and verified.
    verify_all(root, manifest, None if root.is_local else ShardCache.default(opts.cache_dir))
    return DataHandle(uri=root.uri, endpoint=s3_endpoint(), cache_dir=opts.cache_dir), manifest.task


ExperimentState = Literal["missing", "incomplete", "finished"]


def experiment_state(paths: ExperimentPaths) -> ExperimentState:
    if not is_experiment(paths.root):
        return "missing"
    return "finished" if exists(paths.best_json) else "incomplete"


def preflight(opts: RunOptions, console: Console, *, resume_if_exists: bool = False) -> Ready | Finished:
    """Check and prepare a run up to the point where Ray is needed; raise a ValueError naming the problem."""
    started = time.monotonic()
    p = plan(opts)
    # Reachability first: asking whether the experiment exists is already a storage request.
    check_readable(p.paths.root, "--storage")
    state = experiment_state(p.paths)
    if state != "missing":
        if not resume_if_exists:
            raise OptionError(
                f"--name = {p.name!r}: an experiment already exists at {p.paths.root.uri}; choose another name, "
                "or add --resume-if-exists"
            )
        return _resume(p.paths, state, console, address=opts.address, started=started)
    probe(p.paths.root)
    handle, task = prepare_data(p, console)
    record = {
        "format_version": RUN_FILE_VERSION,
        "options": {**options_to_dict(opts), "name": p.name},
        "space_yaml": space_yaml(opts.space),
        "created": datetime.now(timezone.utc).isoformat(),
    }
    write_bytes_atomic(p.paths.run_record, json.dumps(record, indent=2).encode())
    return Ready(plan=p, data=handle, task=task, started=started)


def load_run_record(root: Location) -> dict[str, Any]:
    try:
        raw: dict[str, Any] = json.loads(read_bytes(root.child(RUN_FILE)))
    except FileNotFoundError:
        raise StorageError(f"{root.uri}: no lstm-tune experiment here ({RUN_FILE} missing)") from None
    if raw.get("format_version") != RUN_FILE_VERSION:
        raise StorageError(f"{root.child(RUN_FILE).uri}: format_version {raw.get('format_version')!r} is not supported")
    return raw


def preflight_resume(uri: str, console: Console, *, address: str | None) -> Ready | Finished:
    """Check an existing experiment before Ray: reachable, resumable (Tune state and run record), data verified."""
    started = time.monotonic()
    root = resolve(uri)
    check_readable(root, "resume")
    paths = ExperimentPaths(root=root)
    return _resume(paths, experiment_state(paths), console, address=address, started=started)


def _resume(
    paths: ExperimentPaths,
    state: ExperimentState,
    console: Console,
    *,
    address: str | None,
    started: float,
) -> Ready | Finished:
    """An existing experiment whose storage was reached and whose state was read once, by the caller."""
    root = paths.root
    if state == "finished":
        return Finished(uri=root.uri, summary=summary_from_json(read_bytes(paths.best_json)))
    if state == "missing":
        raise StorageError(f"{root.uri}: no Tune experiment state (tuner.pkl) to resume")
    record = load_run_record(root)
    opts = replace(options_from_dict(record["options"]), address=address)
    space_file = Path(tempfile.mkdtemp(prefix="lstm-tune-space-")) / "space.yaml"
    space_file.write_text(record["space_yaml"], encoding="utf-8")
    p = Plan(
        options=opts, space=load_space(str(space_file), param_rules()), name=root.path.rsplit("/", 1)[-1], paths=paths
    )
    handle, task = prepare_data(p, console)
    return Ready(plan=p, data=handle, task=task, started=started, resuming=True)


__all__ = [
    "RUN_FILE",
    "RUN_FILE_VERSION",
    "Finished",
    "Ready",
    "check_against_data",
    "check_embeddings",
    "experiment_state",
    "load_run_record",
    "options_from_dict",
    "options_to_dict",
    "preflight",
    "preflight_resume",
    "prepare_data",
]
