"""Everything ``lstm-tune run`` and ``resume`` do before Ray: storage reached and probed, data prepared and verified,
the run record written (or read back). Imports neither torch nor Ray, so a wrong ``--data``, ``--storage`` or
experiment URI is answered before those load (about 3 s here), and a finished experiment's summary is printed
without them.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from cluster.plan.lease import RESUME_WAIT_S, Lease, acquire
from cluster.plan.options import (
    PANEL_METRICS,
    CheckpointOptions,
    OptionError,
    ResourceOptions,
    RunOptions,
    SchedulerOptions,
)
from cluster.plan.planning import Plan, plan
from cluster.plan.space import param_rules
from cluster.plan.storage import (
    EXTENSION_PREFIX,
    RUN_FILE,
    ExperimentPaths,
    StorageError,
    check_readable,
    is_experiment,
    probe,
    round_roots,
)
from cluster.results.summary import Summary, render, summary_from_json
from search_spaces import SearchSpace, SearchSpaceError, load_space, space_yaml
from trainables.config import ModelConfig, OptimConfig
from trainables.data.budget import budget_bytes, streams
from trainables.data.cache import ShardCache
from trainables.data.embeddings import align, read_vectors, vector_dim
from trainables.data.handle import DataHandle
from trainables.data.manifest import Manifest, read_manifest
from trainables.data.shards import verify_all
from trainables.pack_rules import packable_problem, rules_for
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
    previous: tuple[str, ...] = ()
    """Earlier rounds of the experiment (its first run, earlier extensions), finished: their trials join the
    summary, and TPE is told of them."""
    lease: Lease | None = None
    """This driver's hold on the experiment (:mod:`cluster.plan.lease`), released when the run ends."""


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


def check_pack(p: Plan, manifest: Manifest, uri: str, streamed: bool) -> None:
    """``--pack``: a dataset held in memory (no streamed panel, no learned categorical embedding), and a space whose
    every value a pack can train."""
    k = p.options.resources.pack
    if not k:
        return
    if manifest.task != "forecast":
        raise OptionError(
            f"--pack = {k}: packs train forecasters; {uri} is a {manifest.task!r} dataset: leave --pack out"
        )
    if streamed:
        raise OptionError(
            f"--pack = {k}: {uri} is larger than a trial's memory budget and would be streamed; a pack holds the "
            "training split in memory: raise --memory-budget or leave --pack out"
        )
    from trainables.data.prep_config import FittedPrep  # pandas: paid only with --pack

    fitted = manifest.preprocessing.get("fitted")
    if fitted and FittedPrep.from_dict(fitted).categorical_codes:
        raise OptionError(
            f"--pack = {k}: {uri} has categorical columns the model embeds; packs take numeric inputs only "
            "(prepare them one-hot) or leave --pack out"
        )
    defaults = {**asdict(ModelConfig()), **asdict(OptimConfig())}
    for key in rules_for(manifest.task):
        spec = p.space.params.get(key)
        for value in spec.values if spec is not None and spec.values else (defaults[key],):
            problem = packable_problem(key, value, manifest.task)
            if problem:
                raise SearchSpaceError(f"{p.space.source}: params.{problem} (--pack = {k})")


def check_metric(metric: str, manifest: Manifest, uri: str) -> None:
    """``--metric`` must be a figure the dataset's trials report."""
    if manifest.task == "classify" and metric != "loss":
        raise OptionError(
            f"--metric = {metric!r}: a text classifier is selected on its loss (cross-entropy); leave --metric out"
        )
    if metric in PANEL_METRICS and "series" not in manifest.task_params:
        raise OptionError(
            f"--metric = {metric!r}: a mean over series needs a panel dataset (prepared with --series-column); "
            f"{uri} is one series: use loss, rmse or mae"
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
    check_metric(opts.metric, manifest, root.uri)
    if manifest.task == "forecast":
        check_against_data(p.space, manifest)
    else:
        check_embeddings(p, root, manifest, console)
    # Through the node's shard cache: trials on this node then find every shard already fetched and verified.
    verify_all(root, manifest, None if root.is_local else ShardCache.default(opts.cache_dir))
    budget = opts.memory_budget if isinstance(opts.memory_budget, int) else None
    limit = budget_bytes(budget)
    streamed = manifest.task == "forecast" and streams(manifest, ("train", "val"), limit)
    check_pack(p, manifest, root.uri, streamed)
    if streamed:
        rows = sum(s.rows for s in manifest.splits.values())
        console.print(
            f"the panel ({rows:,} rows) is larger than a trial's memory budget "
            f"({limit / 2**30:.2f} GiB): trials stream it a piece of whole series at a time",
            highlight=False,
        )
    handle = DataHandle(uri=root.uri, endpoint=s3_endpoint(), cache_dir=opts.cache_dir, memory_budget=budget)
    return handle, manifest.task


ExperimentState = Literal["missing", "incomplete", "finished"]


def experiment_state(paths: ExperimentPaths) -> ExperimentState:
    if not is_experiment(paths.root):
        return "missing"
    return "finished" if exists(paths.best_json) else "incomplete"


def _leased(
    root: Location, purpose: str, check: Callable[[], Ready | Finished], *, wait: float = 0.0
) -> Ready | Finished:
    """Run ``check`` holding the experiment's lease: a second driver for the same experiment is refused here, before
    it reads or writes anything of it. A finished experiment needs no lease past the check. ``wait``: how long a
    resume watches a lease whose holder may be lost (:func:`cluster.plan.lease.acquire`)."""
    lease = acquire(root, purpose, wait=wait)
    try:
        ready = check()
    except BaseException:
        lease.release()
        raise
    if isinstance(ready, Finished):
        lease.release()
        return ready
    return replace(ready, lease=lease)


def preflight(opts: RunOptions, console: Console, *, resume_if_exists: bool = False) -> Ready | Finished:
    """Check and prepare a run up to the point where Ray is needed; raise a ValueError naming the problem."""
    started = time.monotonic()
    p = plan(opts)
    # Reachability first: asking whether the experiment exists is already a storage request.
    check_readable(p.paths.root, "--storage")
    return _leased(
        p.paths.root,
        "run",
        lambda: _new_or_resumed(p, opts, console, resume_if_exists, started),
        wait=RESUME_WAIT_S if resume_if_exists else 0.0,
    )


def _new_or_resumed(
    p: Plan, opts: RunOptions, console: Console, resume_if_exists: bool, started: float
) -> Ready | Finished:
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
    return _leased(
        root,
        "resume",
        lambda: _resume(paths, experiment_state(paths), console, address=address, started=started),
        wait=RESUME_WAIT_S,
    )


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
    extensions = record.get("extensions", [])
    opts = replace(options_from_dict(record["options"]), address=address)
    folder = None
    if extensions:  # an extension round was interrupted: it is the one to finish
        last = extensions[-1]
        folder = str(last["folder"])
        opts = replace(opts, num_samples=int(last["num_samples"]), time_budget_s=last["time_budget_s"])
    p = _recorded_plan(paths, record, opts, folder)
    handle, task = prepare_data(p, console)
    previous = tuple(r.uri for r in round_roots(root) if r.uri != p.tune_root.uri)
    resuming = is_experiment(p.tune_root)  # False: killed before Tune started the round; it starts afresh
    return Ready(plan=p, data=handle, task=task, started=started, resuming=resuming, previous=previous)


def _recorded_plan(paths: ExperimentPaths, record: dict[str, Any], opts: RunOptions, folder: str | None) -> Plan:
    """The plan of an existing experiment, from its run record (the space as it was recorded, not as it is now)."""
    space_file = Path(tempfile.mkdtemp(prefix="lstm-tune-space-")) / "space.yaml"
    space_file.write_text(record["space_yaml"], encoding="utf-8")
    space = load_space(str(space_file), param_rules())
    return Plan(options=opts, space=space, name=paths.root.path.rsplit("/", 1)[-1], paths=paths, round=folder)


EXTEND_BUDGET_SAMPLES = 100_000
"""Trials an extension may start when only a time budget is given: the budget, not this count, ends the round."""


def preflight_extend(
    uri: str,
    console: Console,
    *,
    num_samples: int | None,
    time_budget_s: float | None,
    address: str | None,
) -> Ready:
    """Check a finished experiment for another round of trials in the same folder, record the round, and mark the
    experiment unfinished until the round's summary is written (a killed extension is finished by ``resume``)."""
    started = time.monotonic()
    root = resolve(uri)
    check_readable(root, "extend")
    ready = _leased(root, "extend", lambda: _extension(root, console, num_samples, time_budget_s, address, started))
    assert isinstance(ready, Ready)
    return ready


def _extension(
    root: Location,
    console: Console,
    num_samples: int | None,
    time_budget_s: float | None,
    address: str | None,
    started: float,
) -> Ready:
    paths = ExperimentPaths(root=root)
    state = experiment_state(paths)
    if state == "missing":
        raise StorageError(f"{root.uri}: no Tune experiment state (tuner.pkl) to extend")
    if state == "incomplete":
        raise OptionError(f"extend {root.uri}: the experiment is not finished; `lstm-tune resume` it first")
    if num_samples is None and time_budget_s is None:
        raise OptionError("extend: give --num-samples N (more trials) or --time-budget-s T (seconds), or both")
    record = load_run_record(root)
    base = replace(options_from_dict(record["options"]), address=address)
    if base.search == "grid":
        raise OptionError(
            f"extend {root.uri}: --search grid already ran every point of its grid; extend a random or tpe experiment"
        )
    samples = num_samples if num_samples is not None else EXTEND_BUDGET_SAMPLES
    opts = replace(base, num_samples=samples, time_budget_s=time_budget_s)
    opts.validate()  # --num-samples >= 1, --time-budget-s > 0, named as on the command line
    extensions = list(record.get("extensions", []))
    folder = f"{EXTENSION_PREFIX}{len(extensions) + 1}"
    p = _recorded_plan(paths, record, opts, folder)
    handle, task = prepare_data(p, console)
    previous = tuple(r.uri for r in round_roots(root))
    extensions.append(
        {
            "folder": folder,
            "num_samples": opts.num_samples,
            "time_budget_s": time_budget_s,
            "created": datetime.now(timezone.utc).isoformat(),
        }
    )
    write_bytes_atomic(paths.run_record, json.dumps({**record, "extensions": extensions}, indent=2).encode())
    root.fs.delete_file(paths.best_json.path)  # unfinished until this round's summary is written
    return Ready(plan=p, data=handle, task=task, started=started, previous=previous)


__all__ = [
    "RUN_FILE",
    "RUN_FILE_VERSION",
    "Finished",
    "Ready",
    "check_against_data",
    "check_embeddings",
    "check_metric",
    "experiment_state",
    "load_run_record",
    "options_from_dict",
    "options_to_dict",
    "preflight",
    "preflight_extend",
    "preflight_resume",
    "prepare_data",
]
