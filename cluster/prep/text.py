"""Preparing a text-classification dataset: split, fit the vocabulary on train, write token shards + manifest."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa

from cluster.plan.storage import probe
from cluster.prep.output import DatasetExistsError, remove_written
from cluster.prep.sources import read_all
from trainables.data.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    ColumnInfo,
    Manifest,
    ShardInfo,
    SplitInfo,
    write_manifest,
)
from trainables.data.shards import write_shard
from trainables.data.text_prep import OOV_INDEX, TextEncoder, TextPrepConfig, fit_vocabulary
from trainables.storage import Location, exists, write_bytes_atomic

VOCAB_FILE = "vocab.txt"


def _load(source: str, cfg: TextPrepConfig) -> pd.DataFrame:
    df = read_all(source, encoding=cfg.text_encoding)
    missing = [c for c in (cfg.text_column, cfg.label_column) if c not in df.columns]
    if missing:
        raise ValueError(f"data: column(s) {missing} not in {source}; it has {list(df.columns)}")
    text = df[cfg.text_column].astype("string")
    empty = text.isna() | (text.str.strip() == "")
    if empty.any():
        rows = np.flatnonzero(empty.to_numpy())
        raise ValueError(
            f"data: text column {cfg.text_column!r} of {source} has {len(rows)} empty document(s), first at row {rows[0]}"
        )
    labels = df[cfg.label_column]
    if labels.isna().any():
        raise ValueError(f"data: label column {cfg.label_column!r} of {source} has missing labels")
    return pd.DataFrame({"text": text.astype(str), "label": labels.astype(str)})


def _split(df: pd.DataFrame, fractions: tuple[float, ...], seed: int) -> list[pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(df))
    cuts = np.cumsum([round(len(df) * f) for f in fractions])
    return [df.iloc[np.sort(part)] for part in np.split(order, cuts)]


def prepare_classify(
    source: str,
    cfg: TextPrepConfig,
    dest: Location,
    *,
    name: str,
    test_source: str | None = None,
    shard_rows: int = 4096,
    overwrite: bool = False,
) -> Manifest:
    """Text corpora fit in memory here (R8: 7.7k documents, 20 Newsgroups: 19k); token shards are written per split."""
    cfg.validate()
    probe(dest)
    if exists(dest.child(MANIFEST_NAME)) and not overwrite:
        raise DatasetExistsError(f"{dest.uri} already holds a prepared dataset; use --overwrite to replace it")
    df = _load(source, cfg)
    if test_source is not None:
        test = _load(test_source, cfg)
        train, val = _split(df, (1 - cfg.val_fraction,), cfg.seed)
    else:
        train, val, test = _split(df, cfg.split[:2], cfg.seed)
    classes = train["label"].unique()
    if len(classes) < 2:
        raise ValueError(
            f"data: label column {cfg.label_column!r} holds one class ({classes[0]!r}) in the training split of "
            f"{source}; a classifier needs at least 2"
        )
    fitted = fit_vocabulary(train["text"], train["label"], cfg)
    unknown = sorted((set(val["label"]) | set(test["label"])) - set(fitted.labels))
    if unknown:
        raise ValueError(f"data: label(s) {unknown} appear in val/test but never in the training split")
    encoder = fitted.encoder()
    written: list[ShardInfo] = []
    try:
        splits: dict[str, SplitInfo] = {}
        for split_name, part in (("train", train), ("val", val), ("test", test)):
            shards: list[ShardInfo] = []
            for i, start in enumerate(range(0, len(part), shard_rows)):
                chunk = part.iloc[start : start + shard_rows]
                ids = [encoder.encode(t) for t in chunk["text"]]
                table = pa.table(
                    {
                        "tokens": pa.array(ids, type=pa.list_(pa.int32())),
                        "length": pa.array([len(x) for x in ids], type=pa.int32()),
                        "label": pa.array([encoder.label_index[x] for x in chunk["label"]], type=pa.int32()),
                    }
                )
                shards.append(write_shard(dest, split_name, i, table))
                written.append(shards[-1])
            splits[split_name] = SplitInfo(rows=len(part), context_rows=0, start="", end="", shards=tuple(shards))
        vocab_bytes = ("\n".join(fitted.vocab) + "\n").encode("utf-8")
        write_bytes_atomic(dest.child(VOCAB_FILE), vocab_bytes)
        counts = train["label"].value_counts()
        lengths = train["text"].map(lambda t: len(encoder.encode(t)))
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            task="classify",
            name=name,
            source={"uri": source, "test_uri": test_source, "documents": len(df) + (len(test) if test_source else 0)},
            columns=(
                ColumnInfo(name="tokens", role="feature", dtype="list<int32>", description="token ids; 0 pad, 1 oov"),
                ColumnInfo(name="length", role="feature", dtype="int32", description="tokens kept"),
                ColumnInfo(name="label", role="target", dtype="int32", description="class id"),
            ),
            preprocessing={
                "fitted": fitted.to_dict(),
                "vocab_file": VOCAB_FILE,
                "vocab_sha256": hashlib.sha256(vocab_bytes).hexdigest(),
                "created": datetime.now(timezone.utc).isoformat(),
            },
            task_params={
                "num_classes": len(fitted.labels),
                "vocab_size": len(fitted.vocab),
                "max_length": cfg.max_length,
                "majority_label": str(counts.idxmax()),
                "train_label_counts": {str(k): int(v) for k, v in counts.items()},
                "oov_rate_train": _oov_rate(encoder, train["text"]),
                "median_length_train": float(np.median(lengths)),
            },
            splits=splits,
        )
        write_manifest(dest, manifest)
    except BaseException:
        remove_written(dest, written)
        raise
    return manifest


def _oov_rate(encoder: TextEncoder, texts: pd.Series) -> float:
    ids = np.concatenate([encoder.encode(t) for t in texts]) if len(texts) else np.zeros(0)
    return float((ids == OOV_INDEX).mean()) if ids.size else 0.0


__all__ = ["VOCAB_FILE", "prepare_classify"]
