"""What every ``lstm-tune`` command shares: the stderr console, the one-line error contract, the S3 endpoint option."""

from __future__ import annotations

import os

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)


USER_ERROR_CLASSES = (
    "cluster.plan.options.OptionError",
    "search_spaces.loader.SearchSpaceError",
    "cluster.plan.storage.StorageError",
    "cluster.prep.sources.SourceError",
    "cluster.prep.output.DatasetExistsError",
    "cluster.remote.k8s.ManifestError",
    "trainables.checkpoint.CheckpointError",
    "trainables.data.cache.ShardError",
    "trainables.data.embeddings.EmbeddingError",
    "trainables.data.manifest.ManifestError",
)
"""Our errors that are the user's to fix; every one is a ValueError (a test holds them to it)."""


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix: one line, no traceback, exit code 2.

    ValueError covers :data:`USER_ERROR_CLASSES` and our own checks, which raise it with a message that names the
    key (``data.*``, ``window = ...``). Naming the classes here would import torch and Ray just to report a typo.
    """
    return (ValueError,)


def set_endpoint(endpoint: str | None) -> None:
    """``--s3-endpoint`` becomes AWS_ENDPOINT_URL_S3, which this process, its Ray workers and boto3 all read."""
    if endpoint:
        os.environ["AWS_ENDPOINT_URL_S3"] = endpoint


def fail(message: str, code: int = 2) -> None:
    err.print(f"error: {message}", style="bold red", highlight=False, markup=False)
    raise typer.Exit(code)


__all__ = ["USER_ERROR_CLASSES", "err", "fail", "set_endpoint", "user_errors"]
