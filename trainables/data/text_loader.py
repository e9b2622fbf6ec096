"""Token shards loaded for a trial, and length-bucketed batches so padding costs (almost) nothing."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import numpy as np
import torch

from trainables.data.cache import ShardCache
from trainables.data.loader import DataHandle
from trainables.data.manifest import Manifest, read_manifest
from trainables.data.shards import read_split
from trainables.data.text_prep import FittedText, TextPrepConfig
from trainables.storage import read_bytes, resolve

BUCKET_BATCHES = 50
"""Batches per sorting chunk: documents of similar length are batched together within each chunk."""


@dataclass(frozen=True)
class TextSplit:
    """One split: token ids per document, lengths and labels."""

    tokens: list[np.ndarray]
    lengths: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded ``[batch, longest]`` ids (0 pads), lengths (at least 1) and labels for the documents at ``index``."""
        idx = index.tolist()
        lengths = self.lengths[index].clamp(min=1)
        out = torch.zeros(len(idx), int(lengths.max()), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = self.tokens[i]
            if len(seq):
                out[row, : len(seq)] = torch.from_numpy(seq.astype(np.int64))
        return out, lengths, self.labels[index]


@dataclass(frozen=True)
class TextData:
    """A prepared classification dataset, loaded."""

    manifest: Manifest
    splits: dict[str, TextSplit]
    vocab: list[str]
    """Token of each id (0 padding, 1 out-of-vocabulary)."""

    @property
    def vocab_size(self) -> int:
        return int(self.manifest.task_params["vocab_size"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest.task_params["num_classes"])

    def fitted(self) -> FittedText:
        """The tokenizer settings, vocabulary and labels the dataset was prepared with."""
        fit = self.manifest.preprocessing["fitted"]
        return FittedText(config=TextPrepConfig(**fit["config"]), vocab=self.vocab, labels=list(fit["labels"]))


def length_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffle, sort by length inside chunks of ``BUCKET_BATCHES`` batches, cut into batches, shuffle the batches."""
    order = torch.randperm(len(lengths), generator=generator)
    chunk = batch_size * BUCKET_BATCHES
    batches: list[torch.Tensor] = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[torch.argsort(lengths[part], stable=True)]
        batches += list(part.split(batch_size))
    permutation = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in permutation]


_CACHE: dict[tuple[str, str, tuple[str, ...], tuple[int, int] | None], TextData] = {}
_LOCK = threading.Lock()


def load_text_data(
    handle: DataHandle, splits: tuple[str, ...] = ("train", "val"), part: tuple[int, int] | None = None
) -> TextData:
    """Tokenised splits and the vocabulary; ``part = (rank, world_size)`` reads one data-parallel worker's share of
    the training shards."""
    root = resolve(handle.uri, endpoint=handle.endpoint)
    manifest = read_manifest(root)
    key = (root.uri, manifest.to_json(), splits, part)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        cache = None if root.is_local else ShardCache.default(handle.cache_dir)
        loaded = {}
        for split in splits:
            table = read_split(root, manifest, split, cache, part if split == "train" else None)
            tokens = [np.asarray(t, dtype=np.int32) for t in table.column("tokens").to_pylist()]
            loaded[split] = TextSplit(
                tokens=tokens,
                lengths=torch.from_numpy(table.column("length").to_numpy().astype(np.int64)),
                labels=torch.from_numpy(table.column("label").to_numpy().astype(np.int64)),
            )
        vocab_loc = root.child(manifest.preprocessing["vocab_file"])
        vocab = read_bytes(vocab_loc).decode("utf-8").split("\n")[: int(manifest.task_params["vocab_size"])]
        if hashlib.sha256(read_bytes(vocab_loc)).hexdigest() != manifest.preprocessing["vocab_sha256"]:
            raise ValueError(f"{vocab_loc.uri}: checksum differs from the manifest")
        data = TextData(manifest=manifest, splits=loaded, vocab=vocab)
        _CACHE[key] = data
        return data


__all__ = ["TextData", "TextSplit", "length_batches", "load_text_data"]
