"""``lstm-tune data``: prepare a dataset once (local or S3), and inspect one."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cluster.cli.common import err, fail, set_endpoint, user_errors

if TYPE_CHECKING:
    from trainables.data.manifest import Manifest

data_app = typer.Typer(
    help="Prepare and inspect datasets (Parquet shards + manifest, local or s3://).", no_args_is_help=True
)


CLI_ONLY = ("source", "out", "s3_endpoint", "json_out")
"""``data prepare`` parameters that are not :func:`cluster.prepare` options."""


@data_app.command("prepare")
def prepare(
    source: Annotated[str, typer.Argument(help="CSV (.csv, .csv.xz/.gz/.bz2), Parquet or JSON Lines; path or s3://")],
    out: Annotated[str, typer.Option(help="Dataset URI to write: a folder or s3://bucket/prefix.")],
    task: Annotated[str, typer.Option(help="forecast | classify")] = "forecast",
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the source's file stem).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already at --out.")] = False,
    shard_rows: Annotated[int, typer.Option(help="Rows per Parquet shard.")] = 8192,
    memory_budget: Annotated[
        str | None,
        typer.Option(
            help="forecast, panels: memory the source's rows may take (1.5GB, 800MiB); a larger panel is spilled "
            "to local disk by series and prepared part by part [a quarter of RAM]."
        ),
    ] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint (else AWS_ENDPOINT_URL_S3).")] = None,
    series_column: Annotated[
        list[str] | None,
        typer.Option(help="forecast: a column naming the series (repeatable: the combination names one); a panel."),
    ] = None,
    scale_per_series: Annotated[
        bool, typer.Option(help="forecast, panels: scale each series by its own training rows.")
    ] = True,
    static: Annotated[
        list[str] | None,
        typer.Option(
            help="forecast, panels: a column constant per series (a series column may be one), learned as an "
            "embedding with a slot for unseen values; repeatable."
        ),
    ] = None,
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
    holidays: Annotated[
        str | None,
        typer.Option(
            help="forecast: public-holiday calendar (US): 0/1 features for the row's day and the next --horizon "
            "steps, known in advance (needs --frequency)."
        ),
    ] = None,
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
    non_finite: Annotated[
        str, typer.Option(help="forecast: inf/-inf in a numeric column: error (refuse) or missing (a gap).")
    ] = "error",
    coerce: Annotated[
        bool,
        typer.Option(
            "--coerce",
            help="forecast: a value in a numeric column that is not a number becomes a gap (default: refused).",
        ),
    ] = False,
    horizon: Annotated[int, typer.Option(help="forecast: steps ahead.")] = 1,
    season_length: Annotated[int, typer.Option(help="forecast: steps per season (seasonal-naive baseline).")] = 24,
    max_window: Annotated[int, typer.Option(help="forecast: longest window trials may use.")] = 168,
    split: Annotated[str | None, typer.Option(help="train,val,test fractions.")] = None,
    encoding: Annotated[
        str, typer.Option(help="Text encoding of a CSV/JSON Lines source (latin-1, cp1252, ...).")
    ] = "utf-8",
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

    params = dict(locals())  # first: the parameters alone, by the names cluster.prepare takes
    set_endpoint(s3_endpoint)
    started = time.monotonic()
    try:
        from cluster.prep.prepare import prepare as prepare_dataset
        from trainables.storage import resolve

        dest = resolve(out)
        options = {k: v for k, v in params.items() if k not in CLI_ONLY}
        manifest = prepare_dataset(source, dest, **options)
    except user_errors() as exc:
        fail(str(exc))
        return
    for line in manifest.source.get("warnings", []) or []:
        err.print(f"warning: {line}", highlight=False)
    for key, what in CHANGED:
        count = int(manifest.source.get(key, 0) or 0)
        if count:
            err.print(f"changed: {count:,} {what}", highlight=False)
    show_manifest(manifest, dest.uri, json_out)
    err.print(f"prepared in {time.monotonic() - started:.1f} s", highlight=False)


CHANGED = (
    ("non_finite", "infinite value(s) made gaps (--non-finite missing)"),
    ("coerced", "value(s) that are not numbers made gaps (--coerce)"),
)
"""Manifest counts of data changed rather than refused, and the line that says so on stderr."""


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
    panel = manifest.task_params.get("series") if manifest.task == "forecast" else None
    if panel:
        dropped = "; ".join(
            f"{n} {reason} ({', '.join(panel['dropped_series'].get(reason, []))})"
            for reason, n in panel["dropped"].items()
        )
        rows = panel["rows"]
        err.print(
            f"{panel['count']:,} series by {', '.join(panel['columns'])}: {rows['min']:,} / {rows['median']:,.0f} / "
            f"{rows['max']:,} rows (min / median / max); cut-offs {panel['cut_offs'][0]} and {panel['cut_offs'][1]} "
            f"for every series; dropped: {dropped or 'none'}",
            highlight=False,
        )
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
    from cluster.prep.prepare import inspect as inspect_dataset

    set_endpoint(s3_endpoint)
    try:
        manifest = inspect_dataset(uri)
    except user_errors() as exc:
        fail(str(exc))
        return
    show_manifest(manifest, uri, json_out)
