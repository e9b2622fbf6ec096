"""One driver per experiment: a lease object at the experiment's root, created atomically and renewed while the
driver runs.

Two ``lstm-tune run --name X`` started together (or a run and a ``resume``, or a retried RayJob whose first driver
still runs) would otherwise both find no experiment and both write one. The lease decides: the first to create
``lease.json`` proceeds; the other exits naming the experiment, the holder and when its lease runs out.

- **Local disk**: the lease is written whole to a file of its own and hard-linked to its name (atomic, and it fails
  if the name exists, on local disks and NFSv3+). An expired lease is
  first renamed aside (atomic: of two drivers, one finds it), checked to be the lease read, then replaced by a new
  link.
- **S3**: conditional writes. Creating is ``PutObject`` with ``If-None-Match: *`` (the server refuses the second with
  412); renewing and taking over an expired lease are ``PutObject`` with ``If-Match: <ETag read>``, so of two
  drivers racing for an expired lease exactly one wins. AWS S3 (since 2024), SeaweedFS, MinIO and moto support both.

A lease lasts :data:`LEASE_TTL_S` and is renewed every :data:`RENEW_EVERY_S` by a daemon thread. A driver that
dies stops renewing: ``resume`` takes its lease at once when the dead driver ran on the same host (its pid is gone),
and otherwise after watching the lease for :data:`RESUME_WAIT_S` without a renewal. A clean exit deletes it. The lease holds no credential: an owner token, host, pid, purpose and times.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from trainables.storage import Location

LEASE_FILE = "lease.json"
LEASE_TTL_S = 60.0
"""A lease not renewed for this long is expired: another driver may take the experiment over."""
RENEW_EVERY_S = 15.0
RESUME_WAIT_S = RENEW_EVERY_S + 5.0
"""How long ``resume`` watches a live lease for a renewal before it takes it over as its holder's."""


class LeaseHeldError(ValueError):
    """Another driver holds the experiment."""


class LeaseUnavailableError(ValueError):
    """Storage refused or could not be reached while taking the lease: one line, like any storage error."""


class LeaseLostError(RuntimeError):
    """This driver's lease was taken over (it expired while the driver could not renew it)."""


@dataclass
class Lease:
    """A held lease; renewed in the background until :meth:`release`."""

    loc: Location
    owner: str
    purpose: str
    ttl: float
    version: str = ""
    """S3: the ETag of the lease as last written (the condition of the next write)."""
    lost: str | None = None
    """Why renewing failed for good, if it did."""
    created_dir: bool = False
    """Local disk: acquiring made the experiment's folder (removed on release if still empty)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def body(self) -> dict[str, Any]:
        now = time.time()
        return {
            "owner": self.owner,
            "purpose": self.purpose,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "renewed": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds"),
            "expires": now + self.ttl,
        }

    def start_renewing(self, every: float = RENEW_EVERY_S) -> None:
        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    _renew(self)
                except LeaseLostError as exc:
                    self.lost = str(exc)
                    return
                except Exception:
                    # Storage unreachable for now (OSError, botocore's connection errors): retry at the next beat,
                    # while the lease lasts; the thread must not die of it.
                    continue

        self._thread = threading.Thread(target=loop, name="lstm-tune-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still this driver's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError, LeaseLostError):
            _delete_if_owned(self)


def acquire(root: Location, purpose: str, *, ttl: float = LEASE_TTL_S, renew: bool = True, wait: float = 0.0) -> Lease:
    """Take the experiment at ``root`` for this driver, or raise :class:`LeaseHeldError` naming the holder.

    A lease whose holder ran on this host and has exited is taken at once. With ``wait`` > 0 (``resume``: the
    driver it replaces may have been lost on another node), a live lease is watched that long: taken over if its
    holder does not renew it, refused as soon as it does."""
    lease = Lease(loc=root.child(LEASE_FILE), owner=uuid.uuid4().hex, purpose=purpose, ttl=ttl)
    try:
        if root.is_local:
            _acquire_local(lease, root, wait)
        else:
            _acquire_s3(lease, root, wait)
    except OSError as exc:
        raise LeaseUnavailableError(f"experiment {root.uri}: its lease could not be taken: {exc}") from None
    if renew:
        lease.start_renewing(min(RENEW_EVERY_S, ttl / 4))
    return lease


def _held(root: Location, current: dict[str, Any]) -> LeaseHeldError:
    left = float(current.get("expires", 0)) - time.time()
    return LeaseHeldError(
        f"experiment {root.uri} is in use: another driver ({current.get('purpose', '?')} on "
        f"{current.get('host', '?')}, pid {current.get('pid', '?')}) holds its lease, renewed "
        f"{current.get('renewed', '?')}; it expires in {max(left, 0):.0f} s unless renewed. Wait for that run to "
        f"end, or resume it once it has stopped"
    )


def _live(current: dict[str, Any] | None, owner: str) -> bool:
    return current is not None and current.get("owner") != owner and float(current.get("expires", 0)) > time.time()


def _holder_gone(current: dict[str, Any]) -> bool:
    """The holder ran on this host and its process has exited (a killed driver): its lease is stale now."""
    if current.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(current.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return int(current.get("pid", 0)) <= 0


def _still_held(read: Callable[[], dict[str, Any] | None], current: dict[str, Any], owner: str, wait: float) -> bool:
    """Whether a live lease's holder is alive: not if it ran here and its process is gone, nor if it does not renew
    within ``wait`` seconds (a driver lost on another node); yes as soon as it renews."""
    if not _live(current, owner):
        return False
    if _holder_gone(current):
        return False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(min(1.0, wait))
        latest = read()
        if latest is None or latest.get("owner") != current.get("owner"):
            return latest is not None and _live(latest, owner)
        if latest.get("renewed") != current.get("renewed") or not _live(latest, owner):
            return _live(latest, owner)
    return wait <= 0


# local disk


def _read_local(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            value: dict[str, Any] = json.loads(f.read() or b"{}")
            return value
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # unreadable (a driver died mid-write): treated as expired


def _create_local(lease: Lease) -> bool:
    """The whole lease written to a file of its own, then hard-linked to the lease's name: the link is atomic and
    fails if the name exists (local disks, NFSv3+), so no reader ever sees a lease half-written. False if one exists."""
    tmp = f"{lease.loc.path}.{lease.owner}.new"
    with open(tmp, "wb") as f:
        f.write(json.dumps(lease.body()).encode())
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, lease.loc.path)
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)
    return True


def _acquire_local(lease: Lease, root: Location, wait: float) -> None:
    if not os.path.isdir(root.path):
        os.makedirs(root.path, exist_ok=True)
        lease.created_dir = True
    for _ in range(3):
        if _create_local(lease):
            return
        current = _read_local(lease.loc.path)
        if current is None:
            continue  # released in between
        if _still_held(lambda: _read_local(lease.loc.path), current, lease.owner, wait):
            raise _held(root, current)
        # Expired: move it aside (atomic; of two drivers only one finds it), check it is the lease read, create.
        aside = f"{lease.loc.path}.{lease.owner}.expired"
        try:
            os.rename(lease.loc.path, aside)
        except FileNotFoundError:
            continue
        moved = _read_local(aside)
        if moved is not None and moved.get("renewed") != current.get("renewed"):
            # A fresh lease was written between the read and the move: put it back, unless a third driver has
            # created one since (os.link fails if the name exists).
            with contextlib.suppress(FileExistsError):
                os.link(aside, lease.loc.path)
            os.remove(aside)
            raise _held(root, moved)
        os.remove(aside)
    if not _create_local(lease):
        raise _held(root, _read_local(lease.loc.path) or {})


def _renew_local(lease: Lease) -> None:
    current = _read_local(lease.loc.path)
    if current is None or current.get("owner") != lease.owner:
        raise LeaseLostError(f"lease {lease.loc.uri}: taken over by another driver")
    tmp = f"{lease.loc.path}.{lease.owner}.tmp"
    with open(tmp, "wb") as f:
        f.write(json.dumps(lease.body()).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, lease.loc.path)


def _release_local(lease: Lease) -> None:
    current = _read_local(lease.loc.path)
    if current is not None and current.get("owner") == lease.owner:
        os.remove(lease.loc.path)
    if lease.created_dir:
        # A run refused after taking the lease leaves nothing behind: the folder it made goes, if still empty.
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(lease.loc.path))


# S3


def _client(loc: Location) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=loc.endpoint,
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30),
    )


def _bucket_key(loc: Location) -> tuple[str, str]:
    bucket, _, key = loc.path.partition("/")
    return bucket, key


def _status(exc: Exception) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _put(lease: Lease, **condition: str) -> bool:
    """One conditional write; False when the condition failed (412, or 409 for a concurrent conditional write)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_key(lease.loc)
    try:
        out = _client(lease.loc).put_object(
            Bucket=bucket, Key=key, Body=json.dumps(lease.body()).encode(), ContentType="application/json", **condition
        )
    except ClientError as exc:
        if _status(exc) in (409, 412):
            return False
        raise OSError(f"lease {lease.loc.uri}: {exc}") from None
    except BotoCoreError as exc:
        raise OSError(f"lease {lease.loc.uri}: {exc}") from None
    lease.version = str(out.get("ETag", ""))
    return True


def _get(lease: Lease) -> tuple[dict[str, Any], str] | None:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_key(lease.loc)
    try:
        out = _client(lease.loc).get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _status(exc) == 404:
            return None
        raise OSError(f"lease {lease.loc.uri}: {exc}") from None
    except BotoCoreError as exc:
        raise OSError(f"lease {lease.loc.uri}: {exc}") from None
    try:
        body: dict[str, Any] = json.loads(out["Body"].read() or b"{}")
    except ValueError:
        body = {}
    return body, str(out.get("ETag", ""))


def _read_body(lease: Lease) -> dict[str, Any] | None:
    found = _get(lease)
    return found[0] if found else None


def _acquire_s3(lease: Lease, root: Location, wait: float) -> None:
    if _put(lease, IfNoneMatch="*"):
        return
    found = _get(lease)
    if found is None:  # deleted in between: one more try at creating it
        if _put(lease, IfNoneMatch="*"):
            return
        found = _get(lease)
    if found is not None and _still_held(lambda: _read_body(lease), found[0], lease.owner, wait):
        raise _held(root, found[0])
    if found is None or not _put(lease, IfMatch=found[1]):
        latest = _get(lease)
        raise _held(root, latest[0] if latest else {})


def _renew(lease: Lease) -> None:
    if lease.loc.is_local:
        _renew_local(lease)
    elif not _put(lease, IfMatch=lease.version):
        raise LeaseLostError(f"lease {lease.loc.uri}: taken over by another driver")


def _delete_if_owned(lease: Lease) -> None:
    if lease.loc.is_local:
        _release_local(lease)
        return
    found = _get(lease)
    if found is not None and found[0].get("owner") == lease.owner:
        bucket, key = _bucket_key(lease.loc)
        _client(lease.loc).delete_object(Bucket=bucket, Key=key)


__all__ = [
    "LEASE_FILE",
    "LEASE_TTL_S",
    "Lease",
    "LeaseHeldError",
    "LeaseLostError",
    "LeaseUnavailableError",
    "acquire",
]
