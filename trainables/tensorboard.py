"""Per-trial TensorBoard run: HParams written when the trial starts, scalars every epoch.

Tune's own TensorBoard logger writes HParams only when a trial ends; writing the session-start record first makes the
HParams table fill in while the experiment runs.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping
from typing import Any

import pyarrow.fs as pafs
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from trainables.metrics import SCHEDULE_KEYS
from trainables.storage import Location

HParamValue = int | float | str | bool


def readable_hparams(config: Mapping[str, Any]) -> dict[str, HParamValue]:
    """Flatten and stringify what TensorBoard cannot show (nested dicts, lists, None) instead of dropping it."""
    out: dict[str, HParamValue] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                put(f"{prefix}/{k}" if prefix else str(k), v)
        elif isinstance(value, (bool, int, float, str)):
            out[prefix] = value
        else:
            out[prefix] = repr(value)

    put("", config)
    return out


class TrialLogger:
    """Writes one trial's TensorBoard run to ``dest/run_name`` (a local folder, or synced to object storage)."""

    def __init__(self, dest: Location, run_name: str, config: Mapping[str, Any], metric_tags: list[str]) -> None:
        target = dest.child(run_name)
        self._remote: Location | None = None if target.is_local else target
        self._local_dir = target.path if target.is_local else tempfile.mkdtemp(prefix="lstm-tune-tb-")
        self._writer = SummaryWriter(log_dir=self._local_dir)
        exp, ssi, self._sei = hparams(readable_hparams(config), {tag: math.nan for tag in metric_tags})
        file_writer = self._writer._get_file_writer()
        file_writer.add_summary(exp)
        file_writer.add_summary(ssi)
        self._writer.flush()
        self._sync()

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        for tag, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self._writer.add_scalar(tag, value, step)
        self._writer.flush()
        self._sync()

    def close(self) -> None:
        self._writer._get_file_writer().add_summary(self._sei)
        self._writer.close()
        self._sync()
        if self._remote is not None:
            shutil.rmtree(self._local_dir, ignore_errors=True)

    def _sync(self) -> None:
        if self._remote is None:
            return
        try:
            pafs.copy_files(
                self._local_dir,
                self._remote.path,
                source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=self._remote.fs,
            )
        except OSError as exc:
            # Event files are re-sent whole at the next epoch; a storage hiccup must not fail the trial.
            warnings.warn(f"TensorBoard sync to {self._remote.uri} failed, retrying next epoch: {exc}", stacklevel=2)

    @property
    def local_dir(self) -> str:
        return os.path.abspath(self._local_dir)


def write_text_event(dest: Location, run_name: str, tag: str, text: str, step: int) -> None:
    """One Markdown text event in its own event file under ``dest/run_name`` (the driver writes these beside the
    trial's own file; TensorBoard merges every event file of a run)."""
    with tempfile.TemporaryDirectory(prefix="lstm-tune-tb-text-") as tmp:
        writer = SummaryWriter(log_dir=tmp, filename_suffix=f".{tag.replace('/', '-')}-{step}-{time.time_ns()}")
        writer.add_text(tag, text, step)
        writer.close()
        target = dest.child(run_name)
        try:
            if target.is_local:
                os.makedirs(target.path, exist_ok=True)
            pafs.copy_files(
                tmp, target.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=target.fs
            )
        except OSError as exc:
            # The JSON Lines record is the source of truth; a lost TensorBoard copy must not stop the experiment.
            warnings.warn(f"TensorBoard text event to {target.uri} failed: {exc}", stacklevel=2)


def schedule_scalars(config: Mapping[str, Any]) -> dict[str, float]:
    return {f"schedule/{k}": float(config[k]) for k in SCHEDULE_KEYS if isinstance(config.get(k), (int, float))}


__all__ = ["SCHEDULE_KEYS", "TrialLogger", "readable_hparams", "schedule_scalars", "write_text_event"]
