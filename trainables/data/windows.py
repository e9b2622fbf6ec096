"""Windowing without copies: a split stays one ``[rows, features]`` tensor; batches gather windows by index."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import torch

from trainables.data.prep_config import (
    CONTEXT,
    NAIVE_SCALE,
    OBSERVED,
    SERIES,
    TARGET,
    TARGET_CENTRE,
    TARGET_RAW,
    TARGET_SCALE,
)


@dataclass(frozen=True)
class SeriesArrays:
    """One split as tensors; ``context`` rows are inputs only, never targets."""

    features: torch.Tensor
    """``[rows, features]`` float32, scaled."""
    target: torch.Tensor
    """``[rows]`` float32, the scaled target (missing values forward-filled)."""
    target_raw: np.ndarray
    """``[rows]`` float64, the target in original units (forward-filled)."""
    observed: torch.Tensor
    """``[rows]`` bool: the target was really observed at this row."""
    context: torch.Tensor
    """``[rows]`` bool: the row was copied from the previous split for history only."""
    segment_starts: tuple[int, ...] = (0,)
    """Rows where a contiguous stretch begins: a data-parallel worker holds non-adjacent shards, and in a panel each
    series begins one; no window may reach back across such a seam."""
    target_centre: np.ndarray | None = None
    """Panels: ``[rows]`` float64, with :attr:`target_scale` what turns row ``r``'s scaled target back into units
    (``* scale + centre``); None: one centre and scale for every row (the fitted ones)."""
    target_scale: np.ndarray | None = None
    series: np.ndarray | None = None
    """Panels: ``[rows]`` int, each row's series code."""
    naive_scale: np.ndarray | None = None
    """Panels: ``[rows]`` float64, the row's series' training seasonal-naive MAE (MASE's denominator)."""

    def unscale(self, scaled: np.ndarray, rows: np.ndarray, centre: float, scale: float) -> np.ndarray:
        """Scaled targets at ``rows`` in the target's units: by the rows' own centre and scale in a panel, else by
        the given ones."""
        if self.target_scale is None or self.target_centre is None:
            return scaled * scale + centre
        out: np.ndarray = scaled * self.target_scale[rows] + self.target_centre[rows]
        return out

    @classmethod
    def from_tables(cls, tables: list[pa.Table], feature_names: list[str]) -> SeriesArrays:
        """Several shards that are not contiguous in time, kept apart by :attr:`segment_starts`."""
        parts = [cls.from_table(t, feature_names) for t in tables]
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        starts = tuple(int(o + s) for o, p in zip(offsets, parts, strict=True) for s in p.segment_starts)
        per_row = all(p.target_scale is not None for p in parts)
        return cls(
            features=torch.cat([p.features for p in parts]),
            target=torch.cat([p.target for p in parts]),
            target_raw=np.concatenate([p.target_raw for p in parts]),
            observed=torch.cat([p.observed for p in parts]),
            context=torch.cat([p.context for p in parts]),
            segment_starts=starts,
            target_centre=np.concatenate([p.target_centre for p in parts]) if per_row else None,
            target_scale=np.concatenate([p.target_scale for p in parts]) if per_row else None,
            series=np.concatenate([p.series for p in parts]) if per_row else None,
            naive_scale=np.concatenate([p.naive_scale for p in parts]) if per_row else None,
        )

    @classmethod
    def from_table(cls, table: pa.Table, feature_names: list[str]) -> SeriesArrays:
        feats = np.column_stack([table.column(n).to_numpy().astype(np.float32, copy=False) for n in feature_names])
        if not np.isfinite(feats).all():
            raise ValueError("data: a non-finite value reached the feature tensor")
        context = (
            table.column(CONTEXT).to_numpy(zero_copy_only=False)
            if CONTEXT in table.column_names
            else np.zeros(table.num_rows, dtype=bool)
        )
        names = table.column_names
        return cls(
            features=torch.from_numpy(np.ascontiguousarray(feats)),
            target=torch.from_numpy(table.column(TARGET).to_numpy().astype(np.float32)),
            target_raw=table.column(TARGET_RAW).to_numpy().astype(np.float64),
            observed=torch.from_numpy(table.column(OBSERVED).to_numpy(zero_copy_only=False).astype(bool)),
            context=torch.from_numpy(np.asarray(context, dtype=bool)),
            segment_starts=series_starts(table.column(SERIES).to_numpy()) if SERIES in names else (0,),
            target_centre=table.column(TARGET_CENTRE).to_numpy().astype(np.float64) if TARGET_CENTRE in names else None,
            target_scale=table.column(TARGET_SCALE).to_numpy().astype(np.float64) if TARGET_SCALE in names else None,
            series=table.column(SERIES).to_numpy().astype(np.int64) if SERIES in names else None,
            naive_scale=table.column(NAIVE_SCALE).to_numpy().astype(np.float64) if NAIVE_SCALE in names else None,
        )

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def to(self, device: torch.device) -> SeriesArrays:
        """The tensors on ``device`` (``target_raw`` stays a host array): on a GPU, batches are then gathered where
        the model runs instead of being built on the host and copied over step by step."""
        if self.features.device == device:
            return self
        return replace(
            self,
            features=self.features.to(device),
            target=self.target.to(device),
            observed=self.observed.to(device),
            context=self.context.to(device),
        )


def series_starts(codes: np.ndarray) -> tuple[int, ...]:
    """Rows where a new series begins (its code differs from the row before); row 0 always."""
    if not len(codes):
        return (0,)
    return (0, *(int(i) + 1 for i in np.flatnonzero(codes[1:] != codes[:-1])))


def target_positions(arrays: SeriesArrays, *, window: int, horizon: int) -> torch.Tensor:
    """Forecast positions, each named by its last target row ``p``: the window ends at ``p - horizon`` and the
    targets are rows ``p - horizon + 1 .. p``. Usable when the window lies inside one contiguous stretch and at least
    one of the targets was really observed outside the context rows (for ``horizon = 1``: the target itself)."""
    first = window + horizon - 1
    rows = torch.arange(len(arrays))
    starts = torch.tensor(arrays.segment_starts, dtype=torch.long)
    since_start = rows - starts[torch.searchsorted(starts, rows, right=True) - 1]
    valid = (arrays.observed & ~arrays.context).to(torch.long)
    # valid targets among rows p - horizon + 1 .. p, from a running count
    running = torch.cumsum(valid, 0)
    before = torch.cat([torch.zeros(horizon, dtype=torch.long), running])[: len(arrays)]
    any_valid = (running - before) > 0
    usable = any_valid & (since_start >= first)
    return rows[usable]


def target_rows(positions: torch.Tensor, horizon: int) -> torch.Tensor:
    """``[batch, horizon]`` rows of the targets, step 1 first."""
    return positions.unsqueeze(1) - torch.arange(horizon - 1, -1, -1, device=positions.device).unsqueeze(0)


def target_mask(arrays: SeriesArrays, rows: torch.Tensor) -> torch.Tensor:
    """For target ``rows`` (:func:`target_rows`), whether each was observed (and is not a context row): scored."""
    return arrays.observed[rows] & ~arrays.context[rows]


def gather(
    arrays: SeriesArrays, positions: torch.Tensor, *, window: int, horizon: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs ``[batch, window, features]`` ending ``horizon`` steps before each position, the scaled targets
    ``[batch, horizon]`` (steps 1..horizon) and their mask (see :func:`target_mask`)."""
    offsets = torch.arange(window - 1, -1, -1, device=positions.device)
    index = (positions - horizon).unsqueeze(1) - offsets.unsqueeze(0)
    rows = target_rows(positions, horizon)
    return arrays.features[index], arrays.target[rows], target_mask(arrays, rows)


__all__ = ["SeriesArrays", "gather", "series_starts", "target_mask", "target_positions", "target_rows"]
