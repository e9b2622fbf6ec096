"""What every ``lstm-tune`` command shares: the stderr console, the one-line error contract, the S3 endpoint option."""

from __future__ import annotations

import os

import typer
from rich.console import Console

from cluster.options import OptionError
from search_spaces import SearchSpaceError

err = Console(stderr=True, soft_wrap=True)


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix: one line, no traceback, exit code 2."""
    from cluster.data import DatasetExistsError
    from cluster.sources import SourceError
    from cluster.storage import StorageError
    from trainables.checkpoint import CheckpointError
    from trainables.data.cache import ShardError
    from trainables.data.embeddings import EmbeddingError
    from trainables.data.manifest import ManifestError

    # ValueError last: our own checks raise it with a message that names the key (data.*, window = ...).
    return (
        OptionError,
        SearchSpaceError,
        StorageError,
        ManifestError,
        ShardError,
        CheckpointError,
        SourceError,
        DatasetExistsError,
        EmbeddingError,
        ValueError,
    )


def set_endpoint(endpoint: str | None) -> None:
    """``--s3-endpoint`` becomes AWS_ENDPOINT_URL_S3, which this process, its Ray workers and boto3 all read."""
    if endpoint:
        os.environ["AWS_ENDPOINT_URL_S3"] = endpoint


def fail(message: str, code: int = 2) -> None:
    err.print(f"error: {message}", style="bold red", highlight=False, markup=False)
    raise typer.Exit(code)


__all__ = ["err", "fail", "set_endpoint", "user_errors"]
