"""``prepare``: a dataset prepared once from a source, by the option names ``lstm-tune data prepare`` takes.

Lists may be given as Python sequences or as the command line's comma-separated strings (``lags=[24, 168]`` or
``lags="24,168"``); the CLI is a shell over :func:`prepare`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from trainables.data.manifest import Manifest
    from trainables.storage import Location

Names = str | Sequence[str] | None
Numbers = str | Sequence[int] | None


def _names(value: Names) -> tuple[str, ...]:
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(p.strip() for p in parts if p.strip())


def _ints(value: Numbers, key: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            return tuple(int(v) for v in _names(value))
        except ValueError:
            raise ValueError(f"{key} = {value!r}: a comma-separated list of whole numbers, e.g. 24,168") from None
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{key} = {list(value)!r}: whole numbers, e.g. [24, 168]")
        out.append(v)
    return tuple(out)


def _fractions(value: str | Sequence[float], key: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in (_names(value) if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise ValueError(f"{key} = {value!r}: three fractions such as 0.7,0.15,0.15") from None
    if len(parts) != 3:
        raise ValueError(f"{key} = {value!r}: three fractions such as 0.7,0.15,0.15")
    return parts[0], parts[1], parts[2]


def _pairs(value: Mapping[str, str] | Sequence[str] | None, key: str) -> tuple[tuple[str, str], ...]:
    """``{"Voltage": "interpolate"}`` or ``["Voltage=interpolate"]``."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple((str(k).strip(), str(v).strip()) for k, v in value.items())
    out = []
    for item in [value] if isinstance(value, str) else value:
        col, sep, policy = item.partition("=")
        if not sep:
            raise ValueError(f"{key} = {item!r}: write COLUMN=POLICY, e.g. Voltage=interpolate")
        out.append((col.strip(), policy.strip()))
    return tuple(out)


def infer_numeric(
    source: str, exclude: set[str], encoding: str = "utf-8", *, notes: list[str] | None = None
) -> tuple[str, ...]:
    """Every numeric column of the source's first rows, less ``exclude`` and less row numbers (a column that goes
    up by 1 each row, like Beijing's ``No``: on a chronological split it is pure extrapolation), which are named in
    ``notes``."""
    from cluster.prep.checks import row_number_columns
    from cluster.prep.sources import iter_batches

    first = next(iter_batches(source, batch_rows=1000, encoding=encoding), None)
    if first is None:
        raise ValueError(f"source {source}: no rows")
    numeric = [c for c in first.columns if c not in exclude and first[c].dtype.kind in "iuf"]
    counters = row_number_columns(first, numeric)
    for col in counters:
        (notes if notes is not None else []).append(
            f"column {col!r} left out of the inferred features: a row number (up by 1 each row); --features names "
            "the inputs to keep it"
        )
    return tuple(c for c in numeric if c not in counters)


def prepare(
    source: str,
    out: str | Location,
    *,
    task: str = "forecast",
    name: str | None = None,
    overwrite: bool = False,
    shard_rows: int = 8192,
    memory_budget: int | str | None = None,
    split: str | Sequence[float] | None = None,
    encoding: str = "utf-8",
    # forecasting
    series_column: Names = None,
    scale_per_series: bool = True,
    static: Names = None,
    time_columns: Names = None,
    time_format: str | None = None,
    target: str | None = None,
    features: Names = None,
    categorical: Names = None,
    categorical_encoding: str = "onehot",
    exclude: Names = None,
    missing: str = "ffill",
    missing_column: Mapping[str, str] | Sequence[str] | None = None,
    scaler: str = "standard",
    calendar: bool = True,
    holidays: str | None = None,
    lags: Numbers = None,
    rolling: Numbers = None,
    diffs: Names = None,
    increments: Names = None,
    pca: int = 0,
    frequency: str | None = None,
    duplicates: str = "error",
    non_finite: str = "error",
    coerce: bool = False,
    horizon: int = 1,
    season_length: int = 24,
    max_window: int = 168,
    # text classification
    text_column: str = "text",
    label_column: str = "label",
    test_source: str | None = None,
    lowercase: bool = True,
    token_pattern: str = r"[\w']+",
    min_freq: int = 2,
    max_vocab: int = 30000,
    max_length: int = 400,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Manifest:
    """Prepare ``source`` (CSV, Parquet or JSON Lines; path or ``s3://``) once into Parquet shards and a
    ``manifest.json`` at ``out``, every fitted parameter fitted on the training split only.

    Options are those of ``lstm-tune data prepare`` (``--time-columns`` is ``time_columns``); bad values raise a
    ``ValueError`` naming the option, before anything is written. ``series_column`` makes a panel: one series per
    combination of those columns, split at shared cut-off times, each scaled by its own training rows
    (``scale_per_series``), shards holding whole series. ``static`` names columns constant within a series (a
    series column may be one) that the model sees as learned embeddings, with a slot for values never seen. A panel
    whose rows would take more than ``memory_budget`` (bytes, or ``"1.5GB"``; default a quarter of RAM) is spilled
    to local disk in parts of whole series and prepared part by part.
    """
    from trainables.storage import Location, resolve

    dest = out if isinstance(out, Location) else resolve(out)
    dataset = name or source.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
    if task == "classify":
        from cluster.prep.text import prepare_classify
        from trainables.data.text_prep import TextPrepConfig

        text_cfg = TextPrepConfig(
            text_column=text_column,
            label_column=label_column,
            text_encoding=encoding,
            lowercase=lowercase,
            token_pattern=token_pattern,
            min_freq=min_freq,
            max_vocab=max_vocab,
            max_length=max_length,
            val_fraction=val_fraction,
            seed=seed,
            **({"split": _fractions(split, "--split")} if split else {}),
        )
        return prepare_classify(
            source, text_cfg, dest, name=dataset, test_source=test_source, shard_rows=shard_rows, overwrite=overwrite
        )
    if task != "forecast":
        raise ValueError(f"--task = {task!r}: must be forecast or classify")

    from cluster.plan.options import parse_bytes
    from cluster.prep.data import prepare_forecast
    from trainables.data.forecast_prep import ForecastPrepConfig

    times = _names(time_columns)
    if not times:
        raise ValueError("--time-columns: required for --task forecast (e.g. timestamp, or year,month,day,hour)")
    if not target:
        raise ValueError("--target: required for --task forecast (the column to forecast)")
    series = _names(series_column)
    statics = _names(static)
    cats = tuple(dict.fromkeys([*_names(categorical), *statics]))
    notes: list[str] = []
    numeric = _names(features) or infer_numeric(
        source, {*times, *cats, *series, *_names(exclude)}, encoding, notes=notes
    )
    if target not in numeric:
        numeric = (target, *numeric)
    optional: dict[str, Any] = {"split": _fractions(split, "--split")} if split else {}
    cfg = ForecastPrepConfig(
        time_columns=times,
        time_format=time_format,
        target=target,
        numeric=numeric,
        categorical=cats,
        categorical_encoding=categorical_encoding,
        missing=cast(Any, missing),
        missing_columns=_pairs(missing_column, "--missing-column"),
        scaler=cast(Any, scaler),
        calendar=calendar,
        holidays=holidays,
        lags=_ints(lags, "--lags"),
        rolling=_ints(rolling, "--rolling"),
        diffs=_names(diffs),
        increments=tuple(
            (col.strip(), reset.strip()) for col, _, reset in (i.partition(":") for i in _names(increments))
        ),
        pca=pca,
        frequency=frequency,
        duplicates=cast(Any, duplicates),
        non_finite=cast(Any, non_finite),
        coerce=coerce,
        text_encoding=encoding,
        horizon=horizon,
        season_length=season_length,
        max_window=max_window,
        series=series,
        scale_per_series=scale_per_series,
        static=statics,
        **optional,
    )
    cfg.validate()
    from cluster.prep.checks import leaks

    notes += leaks(source, cfg)
    return prepare_forecast(
        source,
        cfg,
        dest,
        name=dataset,
        source_info={"uri": source, "warnings": notes} if notes else None,
        shard_rows=shard_rows,
        overwrite=overwrite,
        memory_budget=parse_bytes(memory_budget, "--memory-budget"),
    )


def inspect(uri: str) -> Manifest:
    """A prepared dataset's manifest: splits, shards, features and fitted preprocessing."""
    from trainables.data.manifest import read_manifest
    from trainables.storage import resolve

    return read_manifest(resolve(uri))


__all__ = ["infer_numeric", "inspect", "prepare"]
