"""``lstm-tune export`` and ``lstm-tune predict``: the best model of a finished experiment, applied to raw rows."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cluster.cli.common import err, fail, set_endpoint, user_errors
from cluster.results.export import export_best, predict_rows


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
    encoding: Annotated[
        str | None,
        typer.Option(help="Text encoding of ROWS (default: the one the model's data was prepared from)."),
    ] = None,
    coerce: Annotated[
        bool, typer.Option("--coerce", help="A value in a numeric column that is not a number becomes a gap.")
    ] = False,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint (else AWS_ENDPOINT_URL_S3).")] = None,
) -> None:
    """Forecast from raw rows (one forecast per row with enough history, per step) or classify documents (label and
    confidence per row): the model's own preprocessing is applied."""

    set_endpoint(s3_endpoint)
    try:
        forecasts = predict_rows(model, rows, encoding, coerce=coerce)
    except user_errors() as exc:
        fail(str(exc))
        return
    if out:
        from trainables.storage import resolve, write_bytes_atomic

        write_bytes_atomic(resolve(out), forecasts.to_csv(index=False).encode())
        err.print(f"{len(forecasts):,} predictions -> {out}", highlight=False)
    else:
        forecasts.to_csv(sys.stdout, index=False)


__all__ = ["export", "predict"]
