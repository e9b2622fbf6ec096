"""One place that turns a storage URI (``s3://bucket/prefix`` or a local path) into a pyarrow filesystem and path.

URIs stay strings: ``pathlib.Path`` would collapse ``s3://`` into ``s3:/``. Credentials come from the standard AWS
chain (environment, shared config, web identity); an S3-compatible endpoint comes from ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``. Nothing here logs or returns a credential.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs


@dataclass(frozen=True, kw_only=True)
class Location:
    """A resolved storage location: the filesystem and the path inside it."""

    uri: str
    """The URI as the user wrote it (normalised: no trailing slash)."""
    fs: pafs.FileSystem
    path: str
    """Path inside ``fs``: absolute for local disk, ``bucket/key`` for S3."""
    endpoint: str | None = None
    """S3: the endpoint ``fs`` talks to (None: AWS); never a credential."""

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def child(self, *parts: str) -> Location:
        """The location of ``parts`` below this one (always ``/``-joined)."""
        path = posixpath.join(self.path, *parts)
        uri = posixpath.join(self.uri, *parts)
        return Location(uri=uri, fs=self.fs, path=path, endpoint=self.endpoint)

    def with_attempts(self, attempts: int) -> Location:
        """The same place, with ``attempts`` tries per S3 request (local disk: unchanged)."""
        if self.is_local:
            return self
        return Location(
            uri=self.uri, fs=_s3_filesystem(self.endpoint, attempts), path=self.path, endpoint=self.endpoint
        )


def s3_endpoint() -> str | None:
    """The S3-compatible endpoint from the environment, as AWS SDKs read it."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


DEFAULT_S3_ATTEMPTS = 6
"""Attempts per S3 request (standard retry strategy: exponential backoff with jitter)."""

FIRST_CONTACT_S3_ATTEMPTS = 3
"""Attempts per request when a command first checks its storage, before anything has started: a closed endpoint
then answers in about 1-1.6 s instead of the 11-27 s that 6 attempts' backoff took here, and a blip still passes."""


def _s3_filesystem(endpoint: str | None, attempts: int) -> pafs.S3FileSystem:
    kwargs: dict[str, object] = {
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
        "connect_timeout": 5,
        "request_timeout": 30,
    }
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme or "http"
        # S3-compatible servers want path-style addressing and accept any region name.
        kwargs["force_virtual_addressing"] = False
        kwargs.setdefault("region", "us-east-1")
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str, *, endpoint: str | None = None, attempts: int = DEFAULT_S3_ATTEMPTS) -> Location:
    """Resolve a local path or ``s3://bucket/prefix`` (``file://`` accepted) to a :class:`Location`."""
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"storage URI {uri!r}: must be a non-empty local path or s3://bucket/prefix")
    uri = uri.strip()
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"storage URI {uri!r}: missing bucket; expected s3://bucket/prefix")
        if len(parsed.netloc) < 3:
            raise ValueError(f"storage URI {uri!r}: bucket name {parsed.netloc!r} is shorter than 3 characters")
        if parsed.query:
            raise ValueError(
                f"storage URI {uri!r}: query parameters are not accepted; set the endpoint with --s3-endpoint "
                "or AWS_ENDPOINT_URL_S3"
            )
        key = parsed.path.strip("/")
        path = f"{parsed.netloc}/{key}" if key else parsed.netloc
        endpoint = endpoint or s3_endpoint()
        return Location(uri=f"s3://{path}", fs=_s3_filesystem(endpoint, attempts), path=path, endpoint=endpoint)
    if parsed.scheme in ("", "file"):
        local = parsed.path if parsed.scheme == "file" else uri
        absolute = os.path.abspath(os.path.expanduser(local))
        return Location(uri=absolute, fs=pafs.LocalFileSystem(), path=absolute)
    raise ValueError(
        f"storage URI {uri!r}: unsupported scheme {parsed.scheme!r}; use a local path or s3://bucket/prefix"
    )


STORAGE_WAIT_S = float(os.environ.get("LSTM_TUNE_STORAGE_WAIT_S", "600"))
"""How long a trial waits for unreachable object storage before it checkpoints anyway (and fails, to be retried)."""


def wait_until_reachable(loc: Location, budget_s: float = STORAGE_WAIT_S, say: Any = print) -> float:
    """Block while ``loc`` (S3) does not answer, up to ``budget_s``: an outage longer than the client's retries is
    waited out instead of failing the checkpoint that follows. One line when the wait starts and one when it ends.
    Returns the seconds waited (0 on local disk, or when storage answers at once)."""
    if loc.is_local:
        return 0.0
    started = time.monotonic()
    probe = loc.with_attempts(1)
    delay = 1.0
    while True:
        try:
            probe.fs.get_file_info(probe.path)
        except OSError as exc:
            waited = time.monotonic() - started
            if waited >= budget_s:
                say(f"storage {loc.uri} still unreachable after {waited:.0f} s; checkpointing anyway")
                return waited
            if delay == 1.0:
                say(f"storage {loc.uri} unreachable ({explain(exc, loc)}); waiting up to {budget_s:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        waited = time.monotonic() - started
        if waited > 0.5:
            say(f"storage {loc.uri} reachable again after {waited:.0f} s")
        return waited


def read_bytes(loc: Location) -> bytes:
    # A random-access file knows its size and reads in one request: about 4x faster on S3 than a stream here.
    with loc.fs.open_input_file(loc.path) as f:
        return bytes(f.read())


def disk_full(exc: OSError) -> bool:
    """No space left on the device, or over the user's quota."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


class StorageFullError(ValueError):
    """The local disk holding storage or a cache is full: the user's to fix, named in one line."""


def write_bytes_atomic(loc: Location, data: bytes) -> None:
    """Write a whole object; on local disk through a temporary file and a rename, so readers never see half."""
    parent = posixpath.dirname(loc.path)
    if loc.is_local:
        tmp = f"{loc.path}.tmp-{os.getpid()}"
        try:
            os.makedirs(parent, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, loc.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            if disk_full(exc):
                raise StorageFullError(
                    f"storage {loc.uri}: no space left on the device ({len(data):,} bytes to write); nothing "
                    "half-written is left: free space and run the command again (or resume the experiment)"
                ) from None
            raise
        return
    # A single S3 PUT is atomic: the object appears whole or not at all.
    with loc.fs.open_output_stream(loc.path) as out:
        out.write(data)


def explain(exc: BaseException, loc: Location) -> str:
    """One line saying what went wrong with storage, in the user's terms; never echoes a credential."""
    text = str(exc)
    endpoint = loc.endpoint or s3_endpoint() or "AWS S3"
    if "NETWORK_CONNECTION" in text or "Could not connect" in text or "curlCode" in text:
        return f"cannot reach the S3 endpoint {endpoint} for {loc.uri} (is the server up? is --s3-endpoint right?)"
    if any(k in text for k in ("ACCESS_DENIED", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied")):
        return (
            f"S3 refused the credentials for {loc.uri} (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE or the role)"
        )
    if "NoSuchBucket" in text or "NO_SUCH_BUCKET" in text:
        return f"bucket {loc.path.split('/', 1)[0]!r} does not exist ({loc.uri})"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{loc.uri}: {first}"


def bucket_exists(loc: Location) -> bool:
    """For S3, whether the bucket of ``loc`` exists (servers may create buckets on write; we never want that)."""
    if loc.is_local:
        return True
    bucket = loc.path.split("/", 1)[0]
    return bool(loc.fs.get_file_info(bucket).type == pafs.FileType.Directory)


def remove_if_empty(loc: Location) -> None:
    """Remove a prefix that holds nothing. pyarrow leaves an empty "directory" marker on S3 when it deletes the
    last object under a prefix; a failed write must not leave even that behind."""
    try:
        if loc.is_local:
            os.rmdir(loc.path)
            return
        listed = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
        if not any(info.type == pafs.FileType.File for info in listed):
            loc.fs.delete_dir(loc.path)
    except OSError:
        pass


def exists(loc: Location) -> bool:
    return bool(loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound)


__all__ = [
    "FIRST_CONTACT_S3_ATTEMPTS",
    "Location",
    "bucket_exists",
    "exists",
    "explain",
    "read_bytes",
    "remove_if_empty",
    "resolve",
    "s3_endpoint",
    "write_bytes_atomic",
]
