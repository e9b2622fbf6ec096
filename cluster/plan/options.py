"""What the user asked for, one dataclass per concern, validated before anything starts.

Each error names the option as the user typed it (``--grace-period``), the value, and what is allowed.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

SchedulerKind = Literal["asha", "pbt", "fifo"]
SearchKind = Literal["random", "grid", "tpe"]
MetricKind = Literal["loss", "rmse", "mae", "mase", "smape", "pinball"]
METRICS: tuple[str, ...] = ("loss", "rmse", "mae", "mase", "smape", "pinball")
PANEL_METRICS = ("mase", "smape")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PBT_MIN_CHECKPOINTS = 3
MAX_WORKERS_PER_TRIAL = 64
MAX_PACK = 1024
PACK_ON_CPU = "LSTM_TUNE_PACK_ON_CPU"
"""Set to 1 (tests only): let ``--pack`` run on a cluster without a GPU, so CI can check packing's semantics."""
MAX_ENSEMBLE = 64


class OptionError(ValueError):
    """A command-line option (or its config equivalent) is out of range."""


@dataclass(frozen=True, kw_only=True)
class SchedulerOptions:
    """Which trial scheduler decides stops and perturbations, and its knobs."""

    kind: SchedulerKind = "asha"
    """asha: stop poor trials early; pbt: population-based training; fifo: run every trial to the end."""
    grace_period: int | None = None
    """ASHA: epochs every trial gets before it can be stopped; None: min(2, max_epochs)."""
    reduction_factor: int = 3
    """ASHA: 1/reduction_factor of trials survive each rung."""
    perturbation_interval: int = 2
    """PBT: epochs between exploit/explore steps (every epoch is checkpointed, so any interval is aligned)."""
    quantile_fraction: float = 0.25
    """PBT: bottom fraction that clones the top fraction."""
    resample_probability: float = 0.25
    """PBT: chance a mutated value is resampled instead of perturbed."""

    def effective_grace_period(self, max_epochs: int) -> int:
        return self.grace_period if self.grace_period is not None else min(2, max_epochs)

    def validate(self, max_epochs: int) -> None:
        if self.kind not in ("asha", "pbt", "fifo"):
            raise OptionError(f"--scheduler = {self.kind!r}: must be one of asha, pbt, fifo")
        if self.kind == "asha":
            if self.grace_period is not None and not 1 <= self.grace_period <= max_epochs:
                raise OptionError(
                    f"--grace-period = {self.grace_period}: must be >= 1 and <= --max-epochs ({max_epochs})"
                )
            if self.reduction_factor < 2:
                raise OptionError(f"--reduction-factor = {self.reduction_factor}: must be >= 2")
        if self.kind == "pbt":
            if not 1 <= self.perturbation_interval < max_epochs:
                raise OptionError(
                    f"--perturbation-interval = {self.perturbation_interval}: must be >= 1 and < --max-epochs "
                    f"({max_epochs}), or no perturbation ever happens"
                )
            if not 0 < self.quantile_fraction <= 0.5:
                raise OptionError(f"--quantile-fraction = {self.quantile_fraction}: must be > 0 and <= 0.5")
            if not 0 <= self.resample_probability <= 1:
                raise OptionError(f"--resample-probability = {self.resample_probability}: must be in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class ResourceOptions:
    """What each trial reserves on the cluster."""

    cpus_per_trial: float = 1.0
    """CPUs per trial; torch uses this many threads."""
    gpus_per_trial: float = 0.0
    """GPUs per trial; a fraction below 1 packs several trials on one GPU."""
    max_concurrent_trials: int | None = None
    """Cap on trials running at once (None: as many as resources allow)."""
    workers_per_trial: int = 1
    """Above 1: each trial is a data-parallel Ray Train run of this many workers, each with the CPUs and GPUs above."""
    reuse_workers: bool = True
    """Run the next trial in a finished trial's worker process, which keeps its imports and loaded dataset. Off: a
    fresh process per trial (slower start-up; what the start-up benchmark compares against)."""
    pack: int = 0
    """Above 0: trials of one shape train together, up to this many per GPU, in one pack actor each
    (docs/design/packing.md); ``gpus_per_trial`` is then each pack's share of a GPU (0: one whole GPU)."""

    def validate(self) -> None:
        if not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise OptionError(f"--cpus-per-trial = {self.cpus_per_trial}: must be > 0")
        g = self.gpus_per_trial
        if not (math.isfinite(g) and g >= 0):
            raise OptionError(f"--gpus-per-trial = {g}: must be >= 0")
        if g > 1 and not float(g).is_integer():
            raise OptionError(
                f"--gpus-per-trial = {g}: above 1 it must be a whole number (fractions share one GPU: 0.25, 0.5)"
            )
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise OptionError(f"--max-concurrent-trials = {self.max_concurrent_trials}: must be >= 1")
        if not 1 <= self.workers_per_trial <= MAX_WORKERS_PER_TRIAL:
            raise OptionError(f"--workers-per-trial = {self.workers_per_trial}: must be 1..{MAX_WORKERS_PER_TRIAL}")
        if not 0 <= self.pack <= MAX_PACK:
            raise OptionError(f"--pack = {self.pack}: must be 0 (off) or 1..{MAX_PACK} members per pack")
        if self.pack and self.workers_per_trial > 1:
            raise OptionError(
                f"--pack = {self.pack} with --workers-per-trial = {self.workers_per_trial}: a data-parallel trial "
                "already fills its GPUs; use one or the other"
            )

    def concurrency(self, node_cpus: list[float], node_gpus: list[float]) -> int | None:
        """Trials to run at once. Data-parallel trials reserve their workers only after Tune starts them, so Tune
        would start every trial, and trials beyond what the cluster holds would wait on each other's workers
        (seen here: a second 2-worker trial on 2 CPUs never got its workers). Cap them at what fits."""
        if self.workers_per_trial == 1:
            return self.max_concurrent_trials
        fits = int(sum(node_cpus) // (self.workers_per_trial * self.cpus_per_trial))
        if self.gpus_per_trial > 0:
            fits = min(fits, int(sum(node_gpus) // (self.workers_per_trial * self.gpus_per_trial)))
        fits = max(1, fits)
        return min(fits, self.max_concurrent_trials) if self.max_concurrent_trials else fits

    def check_fits(self, node_cpus: list[float], node_gpus: list[float]) -> None:
        """Refuse a trial no node can hold: it would wait forever instead of failing."""
        if self.pack and not node_gpus and os.environ.get(PACK_ON_CPU) != "1":
            raise OptionError(
                f"--pack = {self.pack}: packing needs a CUDA GPU and the cluster has none. On CPU, K models trained "
                "one after another beat a packed step by 4-9x (docs/design/packing.md); leave --pack out"
            )
        if node_cpus and self.cpus_per_trial > max(node_cpus):
            raise OptionError(
                f"--cpus-per-trial = {self.cpus_per_trial:g}: no node has that many CPUs (largest: {max(node_cpus):g})"
            )
        if self.gpus_per_trial > 0 and (not node_gpus or self.gpus_per_trial > max(node_gpus)):
            have = f"largest: {max(node_gpus):g}" if node_gpus else "the cluster has no GPU"
            raise OptionError(f"--gpus-per-trial = {self.gpus_per_trial:g}: no node has that many GPUs ({have})")
        need = self.workers_per_trial * self.cpus_per_trial
        if self.workers_per_trial > 1 and node_cpus and need > sum(node_cpus):
            raise OptionError(
                f"--workers-per-trial = {self.workers_per_trial} x --cpus-per-trial = {self.cpus_per_trial:g}: "
                f"{need:g} CPUs per trial, the cluster has {sum(node_cpus):g}"
            )


@dataclass(frozen=True, kw_only=True)
class CheckpointOptions:
    """How many checkpoints each trial keeps, and how often the driver's state reaches storage."""

    num_to_keep: int = 3
    """Checkpoints kept per trial (best by val/loss, plus the latest)."""
    keep_stopped: int = 2
    """Trials stopped early by the scheduler whose checkpoints survive the end of the run (the best by val/loss);
    the others' checkpoints are deleted."""
    sync_period_s: int = 60
    """How often the driver uploads Tune's experiment state and the trials' result histories (result.json,
    progress.csv) to storage; a lost driver loses at most this much of them (Tune's default: 300 s)."""

    def validate(self, scheduler: SchedulerKind) -> None:
        if self.sync_period_s < 1:
            raise OptionError(f"--sync-period-s = {self.sync_period_s}: must be >= 1 (seconds)")
        if self.keep_stopped < 0:
            raise OptionError(f"--keep-stopped = {self.keep_stopped}: must be >= 0")
        if self.num_to_keep < 1:
            raise OptionError(f"--keep-checkpoints = {self.num_to_keep}: must be >= 1")
        if scheduler == "pbt" and self.num_to_keep < PBT_MIN_CHECKPOINTS:
            raise OptionError(
                f"--keep-checkpoints = {self.num_to_keep}: PBT needs >= {PBT_MIN_CHECKPOINTS} "
                "(an exploit may clone a checkpoint that retention already deleted)"
            )


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """One tuning run."""

    space: str | Mapping[str, Any] = "forecast-small"
    """Search-space preset name, YAML path, or a mapping in the YAML files' schema (``task``, ``params``, ``pbt``)."""
    search: SearchKind = "random"
    """random: sample num_samples configurations; grid: every combination of choice values."""
    num_samples: int = 16
    """Configurations sampled (with grid: repeats of the whole grid)."""
    max_epochs: int = 12
    """Epochs a trial may train."""
    seed: int = 0
    """Seed for sampling and for each trial's initialisation."""
    storage: str = "./runs"
    """Where experiments are written: a local folder or s3://bucket/prefix."""
    name: str | None = None
    """Experiment folder name; default <space>-<scheduler>-<time>."""
    data: str | None = None
    """A prepared dataset URI; default: the bundled Beijing PM2.5 data, prepared into the experiment."""
    horizon: int = 1
    """Steps ahead to forecast for the bundled dataset."""
    address: str | None = None
    """Ray cluster to join; default: RAY_ADDRESS if set, else a fresh local instance."""
    time_budget_s: float | None = None
    """Wall-clock budget of the whole tuning run: trials still running then are stopped (None: no budget)."""
    patience: int = 0
    """Early stopping inside each trial: epochs without improvement before it stops (0: off)."""
    min_delta: float = 0.0
    """Early stopping: the smallest val/loss improvement that counts."""
    epoch_samples: int | None = None
    """Training samples an epoch draws at random (windows, or documents): the unit of progress schedulers and
    checkpoints see, for datasets whose full pass is long. None: every sample, every epoch."""
    ensemble: int = 1
    """Trials whose best checkpoints make the exported model: the best K by validation loss, their forecasts (or
    class probabilities) averaged. 1: the single best trial."""
    max_failures: int = 3
    """Times a trial is retried from its last checkpoint after an error or a lost node."""
    metric: MetricKind = "loss"
    """What trials are selected on (schedulers, checkpoints kept, the best trial, the ensemble): loss (the scaled
    validation MSE, or a classifier's cross-entropy), rmse or mae (in the target's units), mase or smape (panels:
    means over series), pinball (the mean pinball loss over ``quantiles``, in units). Lower is better for each; a
    trial reports it as ``val/loss``."""
    quantiles: tuple[float, ...] | str = (0.1, 0.5, 0.9)
    """Levels a ``loss = quantile`` forecaster forecasts (the outermost two make the prediction interval; the one
    nearest 0.5 is the point forecast), and the levels the pinball metric averages over. A string is read as
    comma-separated numbers."""
    embeddings: str | None = None
    """Pretrained word vectors (word2vec/GloVe text, optionally .gz; path or s3://) for text datasets."""
    memory_budget: int | str | None = None
    """Bytes a trial (and the driver's final scoring) may hold of a panel's splits, as a number or with a unit
    (``1.5GB``, ``800MiB``); a panel larger than this is streamed a piece of whole series at a time. None: a quarter
    of the machine's memory."""
    cache_dir: str | None = None
    """Node-local shard cache for remote datasets (default: LSTM_TUNE_CACHE_DIR, else <tmp>/lstm-tune-shards)."""
    scheduler: SchedulerOptions = field(default_factory=SchedulerOptions)
    resources: ResourceOptions = field(default_factory=ResourceOptions)
    checkpoints: CheckpointOptions = field(default_factory=CheckpointOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantiles", parse_quantiles(self.quantiles))
        object.__setattr__(self, "memory_budget", parse_bytes(self.memory_budget, "--memory-budget"))

    def validate(self) -> None:
        if self.search not in ("random", "grid", "tpe"):
            raise OptionError(f"--search = {self.search!r}: must be random, grid or tpe")
        if self.search == "tpe" and self.scheduler.kind == "pbt":
            raise OptionError(
                "--search = 'tpe' with --scheduler pbt: PBT explores by mutating its population, not by sampling new "
                "trials; use --search random (or --scheduler asha/fifo with tpe)"
            )
        if self.num_samples < 1:
            raise OptionError(f"--num-samples = {self.num_samples}: must be >= 1")
        if self.max_epochs < 1:
            raise OptionError(f"--max-epochs = {self.max_epochs}: must be >= 1")
        if self.horizon < 1:
            raise OptionError(f"--horizon = {self.horizon}: must be >= 1")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise OptionError(f"--time-budget-s = {self.time_budget_s}: must be > 0")
        if self.patience < 0:
            raise OptionError(f"--patience = {self.patience}: must be >= 0 (0 turns early stopping off)")
        if not self.min_delta >= 0:
            raise OptionError(f"--min-delta = {self.min_delta}: must be >= 0")
        if self.epoch_samples is not None and self.epoch_samples < 1:
            raise OptionError(f"--epoch-samples = {self.epoch_samples}: must be >= 1 (or left out: a full pass)")
        if not 1 <= self.ensemble <= MAX_ENSEMBLE:
            raise OptionError(
                f"--ensemble = {self.ensemble}: must be >= 1 (1: the single best trial) and <= {MAX_ENSEMBLE}"
            )
        if self.metric not in METRICS:
            raise OptionError(f"--metric = {self.metric!r}: must be one of {', '.join(METRICS)}")
        if self.max_failures < 0:
            raise OptionError(f"--max-failures = {self.max_failures}: must be >= 0")
        if self.seed < 0:
            raise OptionError(f"--seed = {self.seed}: must be >= 0")
        if self.name is not None and not NAME_PATTERN.match(self.name):
            raise OptionError(
                f"--name = {self.name!r}: use letters, digits, '.', '_' and '-' (at most 100, no leading symbol)"
            )
        self.scheduler.validate(self.max_epochs)
        self.resources.validate()
        self.checkpoints.validate(self.scheduler.kind)


UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
MIN_MEMORY_BUDGET = 2**20


def parse_bytes(raw: int | str | None, option: str) -> int | None:
    """``1.5GB``, ``800MiB``, ``2000000`` -> bytes (None stays None); at least 1 MiB."""
    if raw is None:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(raw))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in UNITS:
        raise OptionError(f"{option} = {raw!r}: a size in bytes, or with a unit: KB, MB, GB, KiB, MiB, GiB (1.5GB)")
    value = int(float(match.group(1)) * UNITS[unit])
    if value < MIN_MEMORY_BUDGET:
        raise OptionError(f"{option} = {raw!r}: at least 1 MiB")
    return value


def parse_quantiles(raw: tuple[float, ...] | list[float] | str) -> tuple[float, ...]:
    """``"0.1,0.5,0.9"`` or a sequence -> ascending levels strictly between 0 and 1, no repeats; else an error
    naming ``--quantiles``."""
    parts = [p.strip() for p in raw.split(",")] if isinstance(raw, str) else list(raw)
    try:
        levels = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise OptionError(f"--quantiles = {raw!r}: must be numbers separated by commas, e.g. 0.1,0.5,0.9") from None
    if not levels or any(not 0.0 < q < 1.0 for q in levels) or list(levels) != sorted(set(levels)):
        raise OptionError(
            f"--quantiles = {raw!r}: at least one level, each strictly between 0 and 1, ascending, no repeats"
        )
    return levels


RUN_WIDE_KEYS = ("max_epochs", "seed", "patience", "min_delta", "epoch_samples", "metric", "quantiles")
"""Settings every trial of a run carries in its Tune config (fixed, never sampled): not hyperparameters."""


SCHEDULER_KEYS = {
    "scheduler": "kind",
    "grace_period": "grace_period",
    "reduction_factor": "reduction_factor",
    "perturbation_interval": "perturbation_interval",
    "quantile_fraction": "quantile_fraction",
    "resample_probability": "resample_probability",
}
RESOURCE_KEYS = {
    "cpus_per_trial": "cpus_per_trial",
    "gpus_per_trial": "gpus_per_trial",
    "max_concurrent_trials": "max_concurrent_trials",
    "workers_per_trial": "workers_per_trial",
    "reuse_workers": "reuse_workers",
    "pack": "pack",
}
CHECKPOINT_KEYS = {"keep_checkpoints": "num_to_keep", "keep_stopped": "keep_stopped", "sync_period_s": "sync_period_s"}
_NESTED = {"scheduler": SCHEDULER_KEYS, "resources": RESOURCE_KEYS, "checkpoints": CHECKPOINT_KEYS}


def flat_option_names() -> list[str]:
    """Every option by its flat name, as ``lstm-tune run`` spells it (``grace_period`` for ``--grace-period``)."""
    top = [f.name for f in fields(RunOptions) if f.name not in _NESTED]
    return [*top, *(k for keys in _NESTED.values() for k in keys)]


def flatten(opts: RunOptions) -> dict[str, Any]:
    """:class:`RunOptions` as flat names and values; :func:`options_from_flat` reads it back."""
    out = {f.name: getattr(opts, f.name) for f in fields(RunOptions) if f.name not in _NESTED}
    for attr, keys in _NESTED.items():
        nested = getattr(opts, attr)
        out.update({flat: getattr(nested, inner) for flat, inner in keys.items()})
    return out


def options_from_flat(params: Mapping[str, Any], base: RunOptions | None = None) -> RunOptions:
    """Options by their flat names (``num_samples=8, scheduler="pbt"``) over ``base`` (default: the defaults).

    Unknown names are refused with the closest known ones, so a typo never silently falls back to a default.
    """
    known = flat_option_names()
    for key in params:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else f"; known options: {', '.join(known)}"
            raise OptionError(f"option {key!r}: no such option{hint}")
    merged = {**flatten(base or RunOptions()), **params}
    top = {k: v for k, v in merged.items() if k in {f.name for f in fields(RunOptions)} and k not in _NESTED}
    return RunOptions(
        **top,
        scheduler=SchedulerOptions(**{inner: merged[flat] for flat, inner in SCHEDULER_KEYS.items()}),
        resources=ResourceOptions(**{inner: merged[flat] for flat, inner in RESOURCE_KEYS.items()}),
        checkpoints=CheckpointOptions(**{inner: merged[flat] for flat, inner in CHECKPOINT_KEYS.items()}),
    )


__all__ = [
    "MAX_PACK",
    "PACK_ON_CPU",
    "RUN_WIDE_KEYS",
    "CheckpointOptions",
    "OptionError",
    "ResourceOptions",
    "RunOptions",
    "SchedulerOptions",
    "flat_option_names",
    "flatten",
    "options_from_flat",
    "parse_bytes",
    "parse_quantiles",
]
