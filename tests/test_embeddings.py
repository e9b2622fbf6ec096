"""Pretrained embeddings: parsing both text formats, alignment and coverage, frozen vs fine-tuned, driver checks.
The real vector file (tests/data/newsgroups-sgns-50d.txt.gz) was trained offline with tools/train_word_vectors.py
on the 20 Newsgroups training text."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from cluster.api.launch import run_experiment
from cluster.plan.options import RunOptions
from search_spaces import SearchSpaceError
from tests.helpers import DirSession
from trainables.config import TrialConfig
from trainables.data.embeddings import EmbeddingError, align, read_vectors
from trainables.data.loader import DataHandle
from trainables.data.text_loader import load_text_data
from trainables.loop import run_trial
from trainables.tasks import ClassifyTask

VECTORS = Path(__file__).parent / "data" / "newsgroups-sgns-50d.txt.gz"
VOCAB = ["<pad>", "<oov>", "apple", "pear", "plum", "kiwi"]


@pytest.mark.parametrize("header", [True, False])
def test_tiny_file_aligns_with_coverage(tmp_path: Path, header: bool) -> None:
    lines = ["apple 1 0 0", "pear 0 1 0", "plum 0 0 1", "grape 1 1 1"]
    path = tmp_path / "v.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write(("4 3\n" if header else "") + "\n".join(lines) + "\n")
    vectors = read_vectors(str(path), set(VOCAB))
    assert set(vectors) == {"apple", "pear", "plum"}, "only vocabulary words are kept"
    aligned = align(VOCAB, vectors, 3)
    assert (aligned.found, aligned.words, aligned.coverage) == (3, 4, 0.75)
    assert np.array_equal(aligned.matrix[2:5], np.eye(3, dtype=np.float32))
    assert not aligned.matrix[0].any(), "padding row must be zero"
    with pytest.raises(EmbeddingError, match="embedding_dim = 4"):
        align(VOCAB, vectors, 4)


def test_malformed_vector_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("apple 1 0 0\npear 0 1\n")
    with pytest.raises(EmbeddingError, match="line 2 has 2 values, earlier lines 3"):
        read_vectors(str(bad))


def test_real_vectors_cover_r8_and_frozen_stays_frozen(prepared_r8: str, tmp_path: Path) -> None:
    data = load_text_data(DataHandle(uri=prepared_r8))
    aligned = align(data.vocab, read_vectors(str(VECTORS), set(data.vocab)), 50)
    assert aligned.coverage > 0.4, f"coverage {aligned.coverage:.2%} of R8's vocabulary by 20 Newsgroups vectors"
    base = {"embedding_dim": 50, "hidden_size": 16, "batch_size": 256, "max_epochs": 1, "pooling": "mean"}
    for mode in ("frozen", "finetune"):
        cfg = TrialConfig.from_flat({**base, "embeddings": mode})
        model = ClassifyTask(data, cfg, str(VECTORS)).build(cfg)
        assert torch.allclose(model.embedding.weight, torch.from_numpy(aligned.matrix))
        session = DirSession(str(tmp_path / mode))
        run_trial(cfg, data, session, device=torch.device("cpu"), embeddings_uri=str(VECTORS))
        trained = torch.load(tmp_path / mode / "epoch-1" / "trial_state.pt", weights_only=True)["model"]
        same = torch.allclose(trained["embedding.weight"], torch.from_numpy(aligned.matrix))
        assert same == (mode == "frozen"), f"{mode}: embedding weights {'changed' if not same else 'did not change'}"


def space_file(tmp_path: Path, extra: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text("task: classify\nparams:\n  hidden_size: 16\n" + extra)
    return str(path)


def test_driver_checks_vectors_before_any_trial(prepared_r8: str, tmp_path: Path) -> None:
    quiet = Console(stderr=True, quiet=True)
    frozen = space_file(tmp_path, "  embeddings: frozen\n  embedding_dim: 50\n")
    with pytest.raises(SearchSpaceError, match=r"params\.embeddings can be \['frozen'\], which needs a vector file"):
        run_experiment(RunOptions(space=frozen, data=prepared_r8, storage=str(tmp_path), name="a"), console=quiet)
    wrong_dim = space_file(tmp_path, "  embeddings: finetune\n  embedding_dim: 64\n")
    with pytest.raises(SearchSpaceError, match=r"params\.embedding_dim = \[64\], but .* holds 50-dimensional"):
        run_experiment(
            RunOptions(space=wrong_dim, data=prepared_r8, storage=str(tmp_path), name="b", embeddings=str(VECTORS)),
            console=quiet,
        )
