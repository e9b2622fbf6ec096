"""Experiment storage on the driver: where an experiment's files live (named here and nowhere else), and a probe
before anything runs."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from trainables.storage import (
    FIRST_CONTACT_S3_ATTEMPTS,
    Location,
    bucket_exists,
    exists,
    explain,
    read_bytes,
    remove_if_empty,
    resolve,
    write_bytes_atomic,
)


class StorageError(ValueError):
    """Storage is unreachable, read-only, or the credentials are refused."""


RUN_FILE = "lstm_tune.json"
"""The options and search space an experiment was started with (no credentials): what ``resume`` rebuilds from."""
TUNER_STATE = "tuner.pkl"
"""Tune's own experiment state; its presence marks an experiment Tune can restore."""
BEST_JSON = "best.json"
"""The summary, written last: its presence marks a finished experiment."""
BEST_MODEL = "best_model"
LINEAGE_FILE = "pbt_lineage.jsonl"
RUNGS_FILE = "asha_rungs.jsonl"
PBT_STATE_FILE = "pbt_state.json"
"""PBT's per-trial state at its last perturbation check, read back on resume."""
TENSORBOARD_DIR = "tensorboard"
DATA_DIR = "data"
RESULT_FILE = "result.json"
"""Tune's per-trial result history (JSON Lines), inside each trial's folder."""
PROGRESS_FILE = "progress.csv"
"""The same history as CSV, beside it."""
MODEL_CARD = "model_card.json"
SERIES_FILE = "series.json"
"""Panels: each series' test errors beside seasonal naive's, and the best and worst series' forecasts."""
"""What ``export`` writes beside the model: the experiment, task, scores and baselines."""
EXTENSION_PREFIX = "extend-"
"""``extend-1``, ``extend-2``, ...: the Tune experiment of each ``lstm-tune extend`` round, inside the experiment."""
WARM_START_FILE = "warm_start.json"
"""In an extension round's folder: the finished trials its searcher was told of before it proposed anything."""
PACKS_FILE = "packs.json"
"""``--pack`` runs: every pack's joins, leaves and rounds, one list per launch (a resume appends its own)."""


@dataclass(frozen=True, kw_only=True)
class ExperimentPaths:
    """The layout of one experiment under ``<storage>/<name>/``."""

    root: Location

    @property
    def series_detail(self) -> Location:
        return self.root.child(SERIES_FILE)

    @property
    def run_record(self) -> Location:
        return self.root.child(RUN_FILE)

    @property
    def tuner_state(self) -> Location:
        return self.root.child(TUNER_STATE)

    @property
    def data(self) -> Location:
        return self.root.child(DATA_DIR)

    @property
    def tensorboard(self) -> Location:
        return self.root.child(TENSORBOARD_DIR)

    @property
    def best_json(self) -> Location:
        return self.root.child(BEST_JSON)

    @property
    def best_model(self) -> Location:
        return self.root.child(BEST_MODEL)

    @property
    def lineage(self) -> Location:
        return self.root.child(LINEAGE_FILE)

    @property
    def rungs(self) -> Location:
        return self.root.child(RUNGS_FILE)

    @property
    def pbt_state(self) -> Location:
        return self.root.child(PBT_STATE_FILE)


def read_state(uri: str) -> dict[str, Any]:
    """A JSON object kept by a scheduler (PBT's per-trial state); empty if there is none yet."""
    try:
        value: dict[str, Any] = json.loads(read_bytes(resolve(uri)))
    except FileNotFoundError:
        return {}
    return value


def read_events(uri: str) -> list[dict[str, Any]]:
    """The records of an experiment's JSON Lines event log (PBT exploits, ASHA rungs); empty if it has none."""
    try:
        text = read_bytes(resolve(uri)).decode()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def is_experiment(loc: Location) -> bool:
    """Tune's state is there: the experiment can be restored (finished or not)."""
    return exists(loc.child(TUNER_STATE))


def extension_number(folder: str) -> int | None:
    """``extend-3`` -> 3; None for any other folder name."""
    if not folder.startswith(EXTENSION_PREFIX):
        return None
    number = folder[len(EXTENSION_PREFIX) :]
    return int(number) if number.isdigit() and int(number) > 0 else None


def round_roots(root: Location) -> list[Location]:
    """Every Tune experiment of an lstm-tune experiment, oldest first: its first run (``root``), then each extension
    round that Tune has started."""
    infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=False, allow_not_found=True))
    rounds = sorted(
        (n, info.base_name)
        for info in infos
        if info.type == pafs.FileType.Directory and (n := extension_number(info.base_name)) is not None
    )
    return [root, *(root.child(name) for _, name in rounds if is_experiment(root.child(name)))]


def experiment_paths(storage: str, name: str, endpoint: str | None = None) -> ExperimentPaths:
    return ExperimentPaths(root=resolve(storage, endpoint=endpoint).child(name))


def check_readable(loc: Location, what: str) -> None:
    """Fail with one line if ``loc`` cannot be reached (endpoint, credentials, bucket)."""
    loc = loc.with_attempts(FIRST_CONTACT_S3_ATTEMPTS)
    try:
        if not bucket_exists(loc):
            raise StorageError(f"{what}: bucket {loc.path.split('/', 1)[0]!r} does not exist ({loc.uri})")
        loc.fs.get_file_info(loc.path)
    except StorageError:
        raise
    except (OSError, ValueError) as exc:
        raise StorageError(f"{what}: {explain(exc, loc)}") from None


def probe(loc: Location) -> None:
    """Write, list, read back and delete a small object under ``loc``; any failure is one clear error."""
    loc = loc.with_attempts(FIRST_CONTACT_S3_ATTEMPTS)
    marker = loc.child(f".lstm-tune-probe-{uuid.uuid4().hex[:8]}")
    payload = b"lstm-tune storage probe"
    try:
        if not bucket_exists(loc):
            raise StorageError(f"storage: bucket {loc.path.split('/', 1)[0]!r} does not exist ({loc.uri})")
        if loc.is_local:
            os.makedirs(loc.path, exist_ok=True)
        write_bytes_atomic(marker, payload)
        listed = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=False))
        if not any(info.path.rstrip("/").endswith(marker.path.rsplit("/", 1)[-1]) for info in listed):
            raise StorageError(f"storage {loc.uri}: a written object does not show in the listing")
        if read_bytes(marker) != payload:
            raise StorageError(f"storage {loc.uri}: an object read back differs from what was written")
        loc.fs.delete_file(marker.path)
        remove_if_empty(loc)
    except StorageError:
        raise
    except (OSError, ValueError) as exc:
        raise StorageError(f"storage is not writable: {explain(exc, loc)}") from None


__all__ = [
    "BEST_JSON",
    "BEST_MODEL",
    "DATA_DIR",
    "EXTENSION_PREFIX",
    "LINEAGE_FILE",
    "MODEL_CARD",
    "PACKS_FILE",
    "PROGRESS_FILE",
    "RESULT_FILE",
    "RUNGS_FILE",
    "RUN_FILE",
    "SERIES_FILE",
    "TENSORBOARD_DIR",
    "TUNER_STATE",
    "WARM_START_FILE",
    "ExperimentPaths",
    "StorageError",
    "check_readable",
    "experiment_paths",
    "extension_number",
    "is_experiment",
    "probe",
    "read_events",
    "round_roots",
]
