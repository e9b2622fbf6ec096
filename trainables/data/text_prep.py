"""Text classification preprocessing: a tokenizer and vocabulary fitted on training documents only."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PAD_INDEX = 0
OOV_INDEX = 1
PAD_TOKEN = "<pad>"
OOV_TOKEN = "<oov>"


@dataclass(frozen=True, kw_only=True)
class TextPrepConfig:
    """How documents become token ids; recorded in the manifest."""

    text_column: str = "text"
    """Column holding the document."""
    label_column: str = "label"
    """Column holding the class."""
    text_encoding: str = "utf-8"
    """Text encoding of a CSV or JSON Lines source (latin-1, cp1252, ...)."""
    lowercase: bool = True
    """Lower-case before tokenizing."""
    token_pattern: str = r"[\w']+"
    """Regular expression a token matches."""
    min_freq: int = 2
    """Tokens seen fewer times in training map to the out-of-vocabulary index."""
    max_vocab: int = 30_000
    """Largest vocabulary, padding and out-of-vocabulary entries included."""
    max_length: int = 400
    """Tokens kept per document (the first ones)."""
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Shuffled train/val/test fractions when no separate test source is given."""
    val_fraction: float = 0.1
    """With a separate test source: fraction of the training source held out for validation."""
    seed: int = 0
    """Seed of the shuffle that splits documents."""

    def validate(self) -> None:
        if self.min_freq < 1:
            raise ValueError(f"data.min_freq = {self.min_freq}: must be >= 1")
        if self.max_vocab < 3:
            raise ValueError(f"data.max_vocab = {self.max_vocab}: must be >= 3 (padding, out-of-vocabulary, one word)")
        if self.max_length < 1:
            raise ValueError(f"data.max_length = {self.max_length}: must be >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"data.val_fraction = {self.val_fraction}: must be in (0, 1)")
        if len(self.split) != 3 or any(f <= 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-9:
            raise ValueError(f"data.split = {self.split}: three positive fractions summing to 1")
        try:
            re.compile(self.token_pattern)
        except re.error as exc:
            raise ValueError(f"data.token_pattern = {self.token_pattern!r}: not a regular expression ({exc})") from None


@dataclass(frozen=True, kw_only=True)
class FittedText:
    """Vocabulary and label map learned from the training split."""

    config: TextPrepConfig
    vocab: list[str] = field(default_factory=list)
    """Token for each id; id 0 is padding, id 1 out-of-vocabulary."""
    labels: list[str] = field(default_factory=list)
    """Class name for each label id (sorted)."""

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "labels": self.labels, "vocab_size": len(self.vocab)}

    def encoder(self) -> TextEncoder:
        return TextEncoder(self)


class TextEncoder:
    """Documents -> arrays of token ids, with the fitted vocabulary."""

    def __init__(self, fitted: FittedText) -> None:
        self.cfg = fitted.config
        self.pattern = re.compile(self.cfg.token_pattern)
        self.index = {tok: i for i, tok in enumerate(fitted.vocab)}
        self.label_index = {lab: i for i, lab in enumerate(fitted.labels)}

    def encode(self, text: str) -> np.ndarray:
        tokens = tokenize(text, self.cfg, self.pattern, limit=self.cfg.max_length)
        return np.fromiter((self.index.get(t, OOV_INDEX) for t in tokens), dtype=np.int32, count=len(tokens))


def tokenize(
    text: str, cfg: TextPrepConfig, pattern: re.Pattern[str] | None = None, *, limit: int | None = None
) -> list[str]:
    """The first ``limit`` tokens (all without one); a document of millions of words costs only the tokens kept."""
    return list(itertools.islice(_tokens(text, cfg, pattern or re.compile(cfg.token_pattern)), limit))


def _tokens(text: str, cfg: TextPrepConfig, pattern: re.Pattern[str]) -> Iterator[str]:
    """The document's tokens one at a time: nothing is held for a document of millions of words."""
    return (m.group() for m in pattern.finditer(text.lower() if cfg.lowercase else text))


def fit_vocabulary(texts: Iterable[str], labels: Iterable[str], cfg: TextPrepConfig) -> FittedText:
    """Most frequent training tokens (>= min_freq), ties broken alphabetically, capped at max_vocab entries."""
    pattern = re.compile(cfg.token_pattern)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(_tokens(text, cfg, pattern))
    ranked = sorted((t for t, c in counts.items() if c >= cfg.min_freq), key=lambda t: (-counts[t], t))
    vocab = [PAD_TOKEN, OOV_TOKEN, *ranked[: cfg.max_vocab - 2]]
    return FittedText(config=cfg, vocab=vocab, labels=sorted(set(labels)))


__all__ = [
    "OOV_INDEX",
    "PAD_INDEX",
    "FittedText",
    "TextEncoder",
    "TextPrepConfig",
    "fit_vocabulary",
    "tokenize",
]
