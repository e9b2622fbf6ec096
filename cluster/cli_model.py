"""``lstm-tune export`` and ``lstm-tune predict``: the best model of a finished experiment, applied to raw rows."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from cluster.cli_common import err, fail, set_endpoint, user_errors

if TYPE_CHECKING:
    import pandas as pd


def export_best(uri: str, out: str) -> dict[str, object]:
    """Copy a finished experiment's best model (weights + fitted preprocessing) and its summary to ``out``."""
    import pyarrow.fs as pafs

    from cluster.storage import StorageError
    from trainables.storage import read_bytes, resolve, write_bytes_atomic

    root = resolve(uri)
    try:
        summary = json.loads(read_bytes(root.child("best.json")))
    except FileNotFoundError:
        raise StorageError(
            f"{root.uri}: no best.json; the experiment is not finished (`lstm-tune resume` it)"
        ) from None
    if not summary.get("exported_model"):
        raise ValueError(f"{root.uri}: the run wrote no best_model (made by an older lstm-tune?)")
    dest = resolve(out)
    infos = dest.fs.get_file_info(pafs.FileSelector(dest.path, allow_not_found=True))
    if infos:
        raise ValueError(f"--out {dest.uri}: not empty; export writes into a new or empty folder")
    src = root.child("best_model")
    dest.fs.create_dir(dest.path, recursive=True)
    pafs.copy_files(src.path, dest.path, source_filesystem=src.fs, destination_filesystem=dest.fs)
    card = {
        "experiment": root.uri,
        "task": summary.get("task", "forecast"),
        "dataset": summary.get("dataset"),
        "target": summary.get("target"),
        "horizon": summary.get("horizon"),
        "best": summary.get("best"),
        "ensemble": summary.get("ensemble"),
        "baselines": summary.get("baselines"),
    }
    write_bytes_atomic(dest.child("model_card.json"), json.dumps(card, indent=2).encode())
    return card


def export(
    uri: Annotated[str, typer.Argument(help="Finished experiment folder or s3:// prefix.")],
    out: Annotated[str, typer.Option(help="New or empty folder (or s3:// prefix) for the model.")],
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint (else AWS_ENDPOINT_URL_S3).")] = None,
) -> None:
    """Export the best model with its fitted preprocessing; `lstm-tune predict` (or trainables.load_forecaster) uses it."""

    set_endpoint(s3_endpoint)
    try:
        card = export_best(uri, out)
    except user_errors() as exc:
        fail(str(exc))
        return
    best = card["best"] if isinstance(card["best"], dict) else {}
    ensemble = card.get("ensemble")
    test = (ensemble if isinstance(ensemble, dict) else best).get("test", {})
    score = f"test accuracy {test['accuracy']:.4f}" if card["task"] == "classify" else f"test RMSE {test['rmse']:.2f}"
    what = (
        f"the best {len(ensemble['members'])} trials"
        if isinstance(ensemble, dict)
        else f"best trial {best.get('trial_id')}"
    )
    err.print(f"exported {uri} -> {out} ({what}, {score})", highlight=False)


def predict(
    model: Annotated[str, typer.Argument(help="Exported model folder (lstm-tune export, or <experiment>/best_model).")],
    rows: Annotated[
        str,
        typer.Argument(
            help="CSV with the training source's columns (.csv, .csv.gz, .csv.xz; s3:// ok): raw rows to forecast "
            "from, or documents to classify (the text column)."
        ),
    ],
    out: Annotated[str | None, typer.Option(help="Write the forecasts here as CSV (default: stdout).")] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint (else AWS_ENDPOINT_URL_S3).")] = None,
) -> None:
    """Forecast from raw rows (one forecast per row with enough history, per step) or classify documents (label and
    confidence per row): the model's own preprocessing is applied."""

    set_endpoint(s3_endpoint)
    try:
        forecasts = predict_rows(model, rows)
    except user_errors() as exc:
        fail(str(exc))
        return
    if out:
        from trainables.storage import resolve, write_bytes_atomic

        write_bytes_atomic(resolve(out), forecasts.to_csv(index=False).encode())
        err.print(f"{len(forecasts):,} predictions -> {out}", highlight=False)
    else:
        forecasts.to_csv(sys.stdout, index=False)


def read_rows(rows: str) -> pd.DataFrame:
    """A CSV file, plain or gzip/xz/bz2-compressed, local or ``s3://``."""
    import bz2
    import gzip
    import lzma

    from cluster.data import read_csv_bytes
    from trainables.storage import read_bytes, resolve

    try:
        data = read_bytes(resolve(rows))
    except FileNotFoundError:
        raise ValueError(f"rows: {rows} does not exist") from None
    for suffix, opener in ((".gz", gzip.decompress), (".xz", lzma.decompress), (".bz2", bz2.decompress)):
        if rows.endswith(suffix):
            data = opener(data)
    return read_csv_bytes(data, rows)


def predict_rows(model: str, rows: str) -> pd.DataFrame:
    """Forecasts (origin, step, target_time, forecast) or classes (document, label, confidence) for ``rows``."""
    from trainables.export import Classifier, load_model

    loaded = load_model(model)
    raw = read_rows(rows)
    if isinstance(loaded, Classifier):
        column = loaded.fitted.config.text_column
        if column not in raw.columns:
            raise ValueError(f"rows: {rows} lacks the text column {column!r}; its columns: {list(raw.columns)}")
        texts = raw[column].fillna("").astype(str).tolist()
        predictions = loaded.predict(texts)
        predictions.insert(0, "document", range(len(texts)))
        return predictions
    cfg = loaded.fitted.config
    wanted = list(dict.fromkeys([*cfg.time_columns, cfg.target, *cfg.numeric, *cfg.categorical]))
    missing = [c for c in wanted if c not in raw.columns]
    if missing:
        raise ValueError(f"rows: {rows} lacks column(s) {missing}; the model was trained on {wanted}")
    return loaded.predict(raw)


__all__ = ["export", "export_best", "predict", "predict_rows", "read_rows"]
