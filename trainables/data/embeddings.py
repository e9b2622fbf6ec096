"""Pretrained word vectors in the word2vec / GloVe text format, aligned to a prepared vocabulary."""

from __future__ import annotations

import gzip
import io
import threading
from dataclasses import dataclass

import numpy as np

from trainables.data.text_prep import OOV_INDEX, PAD_INDEX
from trainables.storage import read_bytes, resolve


class EmbeddingError(ValueError):
    """A vector file is unreadable or does not fit the model."""


@dataclass(frozen=True)
class AlignedEmbeddings:
    """One row per vocabulary id; rows of words the file lacks are random with the file's spread."""

    matrix: np.ndarray
    """``[vocab_size, dim]`` float32; the padding row is zero."""
    found: int
    """Vocabulary words (padding and out-of-vocabulary excluded) that the file has."""
    words: int
    """Vocabulary words, padding and out-of-vocabulary excluded."""

    @property
    def coverage(self) -> float:
        return self.found / self.words if self.words else 0.0

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def read_vectors(uri: str, wanted: set[str] | None = None) -> dict[str, np.ndarray]:
    """Parse a vector file (``.gz`` allowed; a ``count dim`` header line is optional, as GloVe has none).
    Only ``wanted`` words are kept, so a large file costs little memory."""
    raw = read_bytes(resolve(uri))
    text = gzip.decompress(raw) if uri.endswith(".gz") else raw
    vectors: dict[str, np.ndarray] = {}
    dim = None
    for number, line in enumerate(io.TextIOWrapper(io.BytesIO(text), encoding="utf-8", errors="replace"), start=1):
        parts = line.rstrip("\n").rstrip().split(" ")
        if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
            continue  # word2vec header
        if len(parts) < 2:
            continue
        if dim is None:
            dim = len(parts) - 1
        if len(parts) - 1 != dim:
            raise EmbeddingError(f"{uri}: line {number} has {len(parts) - 1} values, earlier lines {dim}")
        if wanted is None or parts[0] in wanted:
            try:
                vectors[parts[0]] = np.asarray(parts[1:], dtype=np.float32)
            except ValueError:
                raise EmbeddingError(f"{uri}: line {number} has a value that is not a number") from None
    if not vectors and dim is None:
        raise EmbeddingError(f"{uri}: no vectors found (expected word2vec or GloVe text format)")
    return vectors


def align(vocab: list[str], vectors: dict[str, np.ndarray], dim: int, seed: int = 0) -> AlignedEmbeddings:
    """Vocabulary-ordered matrix: file vectors where present, random (same mean and spread) elsewhere."""
    known = np.stack(list(vectors.values())) if vectors else np.zeros((1, dim), dtype=np.float32)
    if known.shape[1] != dim:
        raise EmbeddingError(f"vectors have {known.shape[1]} dimensions, the model wants embedding_dim = {dim}")
    rng = np.random.default_rng(seed)
    matrix = rng.normal(known.mean(), known.std() or 0.1, size=(len(vocab), dim)).astype(np.float32)
    found = 0
    for i, word in enumerate(vocab):
        if i in (PAD_INDEX, OOV_INDEX):
            continue
        vec = vectors.get(word)
        if vec is not None:
            matrix[i] = vec
            found += 1
    matrix[PAD_INDEX] = 0.0
    return AlignedEmbeddings(matrix=matrix, found=found, words=max(len(vocab) - 2, 0))


def vector_dim(uri: str) -> int:
    """Dimension of the vectors in a file (reads the first vector)."""
    first = next(iter(read_vectors(uri).values()), None)
    if first is None:
        raise EmbeddingError(f"{uri}: no vectors found")
    return int(first.shape[0])


_CACHE: dict[tuple[str, int], AlignedEmbeddings] = {}
_LOCK = threading.Lock()


def aligned_for(uri: str, vocab: list[str], dim: int) -> AlignedEmbeddings:
    """Aligned embeddings, computed once per process for a (file, vocabulary)."""
    key = (uri, hash(tuple(vocab)))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = align(vocab, read_vectors(uri, set(vocab)), dim)
        return _CACHE[key]


__all__ = ["AlignedEmbeddings", "EmbeddingError", "align", "aligned_for", "read_vectors", "vector_dim"]
