"""``lstm-tune data``: prepare a dataset once (local or S3), and inspect one."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.table import Table

from cluster.cli_common import err, fail, set_endpoint, user_errors

if TYPE_CHECKING:
    from trainables.data.manifest import Manifest

data_app = typer.Typer(
    help="Prepare and inspect datasets (Parquet shards + manifest, local or s3://).", no_args_is_help=True
)


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _ints(value: str | None, key: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _csv(value))
    except ValueError:
        raise ValueError(f"{key} = {value!r}: a comma-separated list of whole numbers, e.g. 24,168") from None


def _fractions(value: str, key: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in _csv(value))
    except ValueError:
        raise ValueError(f"{key} = {value!r}: three fractions such as 0.7,0.15,0.15") from None
    if len(parts) != 3:
        raise ValueError(f"{key} = {value!r}: three fractions such as 0.7,0.15,0.15")
    return parts[0], parts[1], parts[2]


def _infer_numeric(source: str, exclude: set[str]) -> tuple[str, ...]:
    from cluster.sources import iter_batches

    first = next(iter_batches(source, batch_rows=1000), None)
    if first is None:
        raise ValueError(f"source {source}: no rows")
    return tuple(c for c in first.columns if c not in exclude and first[c].dtype.kind in "iuf")


@data_app.command("prepare")
def prepare(
    source: Annotated[str, typer.Argument(help="CSV (.csv, .csv.xz/.gz/.bz2), Parquet or JSON Lines; path or s3://")],
    out: Annotated[str, typer.Option(help="Dataset URI to write: a folder or s3://bucket/prefix.")],
    task: Annotated[str, typer.Option(help="forecast | classify")] = "forecast",
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the source's file stem).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already at --out.")] = False,
    shard_rows: Annotated[int, typer.Option(help="Rows per Parquet shard.")] = 8192,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint (else AWS_ENDPOINT_URL_S3).")] = None,
    time_columns: Annotated[str | None, typer.Option(help="forecast: time column, or columns to assemble it.")] = None,
    time_format: Annotated[
        str | None, typer.Option(help="forecast: strftime format of the joined time columns.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="forecast: column to forecast.")] = None,
    features: Annotated[
        str | None, typer.Option(help="forecast: numeric inputs (default: every numeric column).")
    ] = None,
    categorical: Annotated[str | None, typer.Option(help="forecast: categorical input columns.")] = None,
    categorical_encoding: Annotated[
        str, typer.Option(help="forecast: onehot (a 0/1 feature per category) or ordinal (a learned embedding).")
    ] = "onehot",
    exclude: Annotated[str | None, typer.Option(help="forecast: columns to ignore when inferring inputs.")] = None,
    missing: Annotated[str, typer.Option(help="forecast: ffill|mean|zero|interpolate|mask|drop.")] = "ffill",
    missing_column: Annotated[list[str] | None, typer.Option(help="forecast: COLUMN=POLICY, repeatable.")] = None,
    scaler: Annotated[str, typer.Option(help="forecast: standard|minmax|robust|none (fitted on train).")] = "standard",
    calendar: Annotated[bool, typer.Option(help="forecast: add calendar sin/cos features.")] = True,
    lags: Annotated[str | None, typer.Option(help="forecast: target lags, e.g. 24,168.")] = None,
    rolling: Annotated[str | None, typer.Option(help="forecast: rolling mean/std windows of the target.")] = None,
    diffs: Annotated[
        str | None, typer.Option(help="forecast: numeric columns whose change since the previous row is a feature.")
    ] = None,
    increments: Annotated[
        str | None,
        typer.Option(
            help="forecast: running totals whose per-row amount is a feature, as COLUMN[:RESET] (RESET: the "
            "categorical column whose change restarts the total, e.g. Iws:cbwd; without it, a fall restarts it)."
        ),
    ] = None,
    pca: Annotated[int, typer.Option(help="forecast: principal components replacing the other inputs (0: off).")] = 0,
    frequency: Annotated[
        str | None, typer.Option(help="forecast: expected spacing (1h, 1min); gaps become rows.")
    ] = None,
    duplicates: Annotated[str, typer.Option(help="forecast: duplicate timestamps: error|first|last|mean.")] = "error",
    horizon: Annotated[int, typer.Option(help="forecast: steps ahead.")] = 1,
    season_length: Annotated[int, typer.Option(help="forecast: steps per season (seasonal-naive baseline).")] = 24,
    max_window: Annotated[int, typer.Option(help="forecast: longest window trials may use.")] = 168,
    split: Annotated[str | None, typer.Option(help="train,val,test fractions.")] = None,
    text_column: Annotated[str, typer.Option(help="classify: document column.")] = "text",
    label_column: Annotated[str, typer.Option(help="classify: class column.")] = "label",
    test_source: Annotated[str | None, typer.Option(help="classify: separate test file.")] = None,
    lowercase: Annotated[bool, typer.Option(help="classify: lower-case text.")] = True,
    token_pattern: Annotated[str, typer.Option(help="classify: regular expression of a token.")] = r"[\w']+",
    min_freq: Annotated[int, typer.Option(help="classify: minimum token count in train.")] = 2,
    max_vocab: Annotated[int, typer.Option(help="classify: largest vocabulary.")] = 30000,
    max_length: Annotated[int, typer.Option(help="classify: tokens kept per document.")] = 400,
    val_fraction: Annotated[float, typer.Option(help="classify: validation share when --test-source is given.")] = 0.1,
    seed: Annotated[int, typer.Option(help="classify: seed of the split shuffle.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout.")] = False,
) -> None:
    """Prepare SOURCE once into Parquet shards + manifest.json at --out, fitted on the training split only."""

    set_endpoint(s3_endpoint)
    started = time.monotonic()
    try:
        from trainables.storage import resolve

        dest = resolve(out)
        dataset = name or source.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
        if task == "forecast":
            manifest = _prepare_forecast(
                source,
                dest,
                dataset,
                overwrite,
                shard_rows,
                time_columns,
                time_format,
                target,
                features,
                categorical,
                categorical_encoding,
                exclude,
                missing,
                missing_column or [],
                scaler,
                calendar,
                lags,
                rolling,
                diffs,
                increments,
                pca,
                frequency,
                duplicates,
                horizon,
                season_length,
                max_window,
                split,
            )
        elif task == "classify":
            from cluster.data_text import prepare_classify
            from trainables.data.text_prep import TextPrepConfig

            cfg = TextPrepConfig(
                text_column=text_column,
                label_column=label_column,
                lowercase=lowercase,
                token_pattern=token_pattern,
                min_freq=min_freq,
                max_vocab=max_vocab,
                max_length=max_length,
                val_fraction=val_fraction,
                seed=seed,
                **({"split": _fractions(split, "--split")} if split else {}),
            )
            manifest = prepare_classify(
                source, cfg, dest, name=dataset, test_source=test_source, shard_rows=shard_rows, overwrite=overwrite
            )
        else:
            raise ValueError(f"--task = {task!r}: must be forecast or classify")
    except user_errors() as exc:
        fail(str(exc))
        return
    show_manifest(manifest, dest.uri, json_out)
    err.print(f"prepared in {time.monotonic() - started:.1f} s", highlight=False)


def _prepare_forecast(
    source: str,
    dest: object,
    dataset: str,
    overwrite: bool,
    shard_rows: int,
    time_columns: str | None,
    time_format: str | None,
    target: str | None,
    features: str | None,
    categorical: str | None,
    categorical_encoding: str,
    exclude: str | None,
    missing: str,
    missing_column: list[str],
    scaler: str,
    calendar: bool,
    lags: str | None,
    rolling: str | None,
    diffs: str | None,
    increments: str | None,
    pca: int,
    frequency: str | None,
    duplicates: str,
    horizon: int,
    season_length: int,
    max_window: int,
    split: str | None,
) -> Manifest:
    from cluster.data import prepare_forecast
    from trainables.data.forecast_prep import ForecastPrepConfig
    from trainables.storage import Location

    assert isinstance(dest, Location)
    if not time_columns:
        raise ValueError("--time-columns: required for --task forecast (e.g. timestamp, or year,month,day,hour)")
    if not target:
        raise ValueError("--target: required for --task forecast (the column to forecast)")
    cats = _csv(categorical)
    numeric = _csv(features) or _infer_numeric(source, {*_csv(time_columns), *cats, *_csv(exclude)})
    if target not in numeric:
        numeric = (target, *numeric)
    overrides = []
    for item in missing_column:
        col, sep, policy = item.partition("=")
        if not sep:
            raise ValueError(f"--missing-column = {item!r}: write COLUMN=POLICY, e.g. Voltage=interpolate")
        overrides.append((col.strip(), policy.strip()))
    optional: dict[str, Any] = {"split": _fractions(split, "--split")} if split else {}
    cfg = ForecastPrepConfig(
        time_columns=_csv(time_columns),
        time_format=time_format,
        target=target,
        numeric=numeric,
        categorical=cats,
        categorical_encoding=categorical_encoding,
        missing=cast(Any, missing),
        missing_columns=tuple(overrides),
        scaler=cast(Any, scaler),
        calendar=calendar,
        lags=_ints(lags, "--lags"),
        rolling=_ints(rolling, "--rolling"),
        diffs=_csv(diffs),
        increments=tuple(
            (col.strip(), reset.strip()) for col, _, reset in (i.partition(":") for i in _csv(increments))
        ),
        pca=pca,
        frequency=frequency,
        duplicates=cast(Any, duplicates),
        horizon=horizon,
        season_length=season_length,
        max_window=max_window,
        **optional,
    )
    return prepare_forecast(source, cfg, dest, name=dataset, shard_rows=shard_rows, overwrite=overwrite)


def show_manifest(manifest: Manifest, uri: str, json_out: bool) -> None:
    """The manifest as JSON on stdout, or as a summary table on stderr."""
    if json_out:
        sys.stdout.write(manifest.to_json() + "\n")
    else:
        render_manifest(manifest, uri)


def render_manifest(manifest: Manifest, uri: str) -> None:
    table = Table(title=f"{manifest.name} ({manifest.task}) at {uri}")
    for col in ("split", "rows", "context rows", "shards", "bytes", "from", "to"):
        table.add_column(col, justify="right" if col not in ("split", "from", "to") else "left")
    for split, info in manifest.splits.items():
        table.add_row(
            split,
            f"{info.rows:,}",
            f"{info.context_rows:,}",
            str(len(info.shards)),
            f"{sum(s.bytes for s in info.shards):,}",
            info.start,
            info.end,
        )
    err.print(table)
    fitted = manifest.preprocessing.get("fitted", {})
    if manifest.task == "forecast":
        cfg = fitted.get("config", {})
        changes = fitted.get("change_scale", {})
        scales = ", ".join(f"{name} / {scale:.4g}" for name, scale in changes.items())
        err.print(
            f"target {cfg.get('target')} (horizon {cfg.get('horizon')}), {len(fitted.get('feature_names', []))} "
            f"features: {', '.join(fitted.get('feature_names', []))}\n"
            f"scaler {cfg.get('scaler')} fitted on train; missing values: {cfg.get('missing')} "
            f"{dict(cfg.get('missing_columns', []))}; "
            + (f"changes divided by their training std: {scales}; " if scales else "")
            + f"source {json.dumps(manifest.source)}",
            highlight=False,
        )
    else:
        params = manifest.task_params
        err.print(
            f"{params['num_classes']} classes, vocabulary {params['vocab_size']:,}, max length {params['max_length']}, "
            f"train OOV rate {params['oov_rate_train']:.3%}, majority class {params['majority_label']!r}",
            highlight=False,
        )


@data_app.command("inspect")
def inspect(
    uri: Annotated[str, typer.Argument(help="Dataset URI (folder or s3:// prefix holding manifest.json).")],
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show a prepared dataset's manifest: splits, shards, features, fitted preprocessing."""
    from trainables.data.manifest import read_manifest
    from trainables.storage import resolve

    set_endpoint(s3_endpoint)
    try:
        root = resolve(uri)
        manifest = read_manifest(root)
    except user_errors() as exc:
        fail(str(exc))
        return
    show_manifest(manifest, root.uri, json_out)
