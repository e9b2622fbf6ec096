"""A finished experiment's model outside the experiment: exported to a folder of its own with a model card, and
applied to raw rows (forecasts) or documents (classes)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def export_best(uri: str, out: str) -> dict[str, object]:
    """Copy a finished experiment's best model (weights + fitted preprocessing) and its summary to ``out``."""
    import pyarrow.fs as pafs

    from cluster.plan.storage import MODEL_CARD, ExperimentPaths, StorageError
    from trainables.storage import read_bytes, resolve, write_bytes_atomic

    root = resolve(uri)
    try:
        summary = json.loads(read_bytes(ExperimentPaths(root=root).best_json))
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
    src = ExperimentPaths(root=root).best_model
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
    write_bytes_atomic(dest.child(MODEL_CARD), json.dumps(card, indent=2).encode())
    return card


def read_rows(rows: str, encoding: str = "utf-8") -> pd.DataFrame:
    """A CSV file, plain or gzip/xz/bz2-compressed, local or ``s3://``."""
    import bz2
    import gzip
    import lzma

    from cluster.prep.data import read_csv_bytes
    from trainables.storage import read_bytes, resolve

    try:
        data = read_bytes(resolve(rows))
    except FileNotFoundError:
        raise ValueError(f"rows: {rows} does not exist") from None
    for suffix, opener in ((".gz", gzip.decompress), (".xz", lzma.decompress), (".bz2", bz2.decompress)):
        if rows.endswith(suffix):
            data = opener(data)
    return read_csv_bytes(data, rows, encoding)


def predict_rows(model: str, rows: str, encoding: str | None = None, *, coerce: bool = False) -> pd.DataFrame:
    """Forecasts (origin, step, target_time, forecast) or classes (document, label, confidence) for ``rows``, read
    in ``encoding`` (default: the encoding the model's data was prepared from). Values in numeric columns that are
    not numbers are refused as in preparation, or gaps with ``coerce`` (or when the data was prepared with it)."""
    import dataclasses

    from trainables.export import Classifier, load_model

    loaded = load_model(model)
    raw = read_rows(rows, encoding or loaded.fitted.config.text_encoding)
    if isinstance(loaded, Classifier):
        column = loaded.fitted.config.text_column
        if column not in raw.columns:
            raise ValueError(f"rows: {rows} lacks the text column {column!r}; its columns: {list(raw.columns)}")
        texts = raw[column].fillna("").astype(str).tolist()
        predictions = loaded.predict(texts)
        predictions.insert(0, "document", range(len(texts)))
        return predictions
    cfg = loaded.fitted.config
    if coerce and not cfg.coerce:
        cfg = dataclasses.replace(cfg, coerce=True)
        loaded.fitted = dataclasses.replace(loaded.fitted, config=cfg)
    wanted = list(dict.fromkeys([*cfg.series, *cfg.time_columns, cfg.target, *cfg.numeric, *cfg.categorical]))
    missing = [c for c in wanted if c not in raw.columns]
    if missing:
        raise ValueError(f"rows: {rows} lacks column(s) {missing}; the model was trained on {wanted}")
    return loaded.predict(raw)


__all__ = ["export_best", "predict_rows", "read_rows"]
