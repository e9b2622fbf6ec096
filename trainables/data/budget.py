"""How much of a panel a trial may hold: the memory budget and what rows cost (no torch here: the driver reads it
before it imports torch)."""

from __future__ import annotations

import os

from trainables.data.manifest import Manifest

BYTES_PER_FEATURE = 12
"""Per row and feature: the float32 tensor, and the float64 Arrow column it is converted from while a piece is read."""
ROW_OVERHEAD_BYTES = 320
"""Per row beside the features: the per-row columns (scaled and raw target, masks, series code, centre, scale, MASE
scale) as Arrow and as arrays, and the window positions found in it. Measured: a 347,197-row piece of 8 features
raised a trial's peak RSS by 146 MB with its positions (420 bytes a row; benchmarks/panel_stream.py)."""
DEFAULT_BUDGET_SHARE = 0.25
"""Without ``--memory-budget``: a quarter of the machine's memory per trial process."""


def row_bytes(n_features: int) -> int:
    """Memory one prepared row takes in a trial while it is read and used."""
    return BYTES_PER_FEATURE * n_features + ROW_OVERHEAD_BYTES


def resident_bytes(manifest: Manifest, splits: tuple[str, ...], n_features: int) -> int:
    """What holding ``splits`` in memory would take."""
    return sum(manifest.splits[s].rows for s in splits) * row_bytes(n_features)


def default_budget() -> int:
    """:data:`DEFAULT_BUDGET_SHARE` of physical memory (a cgroup limit is not looked at: Ray's memory monitor is)."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * DEFAULT_BUDGET_SHARE)


def piece_rows(budget_bytes: int, n_features: int) -> int:
    """Rows a piece may hold under ``budget_bytes`` (at least 1)."""
    return max(1, budget_bytes // row_bytes(n_features))


def budget_bytes(option: int | None) -> int:
    """``--memory-budget`` as given, or the default."""
    return option or default_budget()


def streams(manifest: Manifest, splits: tuple[str, ...], budget: int) -> bool:
    """Whether a trial reads ``splits`` of this dataset a piece at a time: a panel larger than ``budget``."""
    n_features = len(manifest.preprocessing["fitted"]["feature_names"])
    return "series" in manifest.task_params and resident_bytes(manifest, splits, n_features) > budget


__all__ = [
    "DEFAULT_BUDGET_SHARE",
    "budget_bytes",
    "default_budget",
    "piece_rows",
    "resident_bytes",
    "row_bytes",
    "streams",
]
