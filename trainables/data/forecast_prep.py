"""Forecasting preprocessing: fitted on the training split only, applied the same way to any rows, in batches.

Data preparation streams a source through :class:`RowStream` (time, order, duplicates, gaps, dropped rows) and
:class:`Transformer` (fill, scale, encode, engineer); the exported model's ``predict`` runs raw rows through the very
same two objects, so prediction sees exactly what training saw. Both keep a little state between batches (the last
observation for forward fill, a tail for lags and rolling windows), which is what lets a source larger than memory
stream through.

The stages live in :mod:`~trainables.data.prep_config` (the configuration and what is fitted),
:mod:`~trainables.data.prep_rows`, :mod:`~trainables.data.prep_changes`, :mod:`~trainables.data.prep_fit` and
:mod:`~trainables.data.prep_transform`; this module is the one place the rest of the project imports them from.
"""

from __future__ import annotations

from trainables.data.prep_changes import (
    ChangeFeatures,
    category_changed,
    category_strings,
    change_names,
    diff_name,
    row_changes,
    running_increments,
    step_name,
)
from trainables.data.prep_config import (
    CATEGORICAL_ENCODINGS,
    CONTEXT,
    MAX_INTERPOLATE_HOLD,
    MISSING_POLICIES,
    NAIVE_SCALE,
    OBSERVED,
    ROBUST_SAMPLE,
    ROW,
    SERIES,
    SERIES_KEY_SEPARATOR,
    TARGET,
    TARGET_CENTRE,
    TARGET_RAW,
    TARGET_SCALE,
    TIME,
    DuplicatePolicy,
    FittedPrep,
    ForecastPrepConfig,
    MissingPolicy,
    ScalerKind,
    code_name,
    series_key,
    series_statistic,
    step_of,
)
from trainables.data.prep_fit import Fitter, fit_pca
from trainables.data.prep_rows import RowStream, drain, parse_time, stream_rows
from trainables.data.prep_transform import Transformer, split_bounds, transform_frame, unscale_target

__all__ = [
    "CATEGORICAL_ENCODINGS",
    "CONTEXT",
    "MAX_INTERPOLATE_HOLD",
    "MISSING_POLICIES",
    "NAIVE_SCALE",
    "OBSERVED",
    "ROBUST_SAMPLE",
    "ROW",
    "SERIES",
    "SERIES_KEY_SEPARATOR",
    "TARGET",
    "TARGET_CENTRE",
    "TARGET_RAW",
    "TARGET_SCALE",
    "TIME",
    "ChangeFeatures",
    "DuplicatePolicy",
    "FittedPrep",
    "Fitter",
    "ForecastPrepConfig",
    "MissingPolicy",
    "RowStream",
    "ScalerKind",
    "Transformer",
    "category_changed",
    "category_strings",
    "change_names",
    "code_name",
    "diff_name",
    "drain",
    "fit_pca",
    "parse_time",
    "row_changes",
    "running_increments",
    "series_key",
    "series_statistic",
    "split_bounds",
    "step_name",
    "step_of",
    "stream_rows",
    "transform_frame",
    "unscale_target",
]
