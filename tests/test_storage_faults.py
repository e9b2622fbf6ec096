"""Storage faults (issue 21): a trial waits out an S3 outage longer than the client's retries before it checkpoints;
a full local disk is one line, with nothing half-written, and the same command works once space is back."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from cluster.prep.data import bundled_beijing_path
from trainables.storage import resolve


@pytest.mark.integration  # waits out 2 s of a closed endpoint
def test_a_trial_waits_for_unreachable_storage_then_goes_on(tmp_path: Path) -> None:
    from tests.s3server import free_port
    from trainables.storage import wait_until_reachable

    lines: list[str] = []
    assert wait_until_reachable(resolve(str(tmp_path)), budget_s=5, say=lines.append) == 0.0 and not lines
    closed = resolve("s3://lt-exp/x", endpoint=f"http://127.0.0.1:{free_port(set())}")
    waited = wait_until_reachable(closed, budget_s=2.0, say=lines.append)
    assert 2.0 <= waited < 10
    assert lines[0].startswith("storage s3://lt-exp/x unreachable (") and "waiting up to 2 s" in lines[0]
    assert lines[-1] == f"storage s3://lt-exp/x still unreachable after {waited:.0f} s; checkpointing anyway"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a disk that fills."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_nothing_half_written_and_the_same_command_then_works(small_disk: Path) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 2_900_000)  # about 250 KB left: the first shards fit, a later one does not
    out = small_disk / "data"
    args = ["data", "prepare", bundled_beijing_path(), "--out", str(out), "--time-columns", "year,month,day,hour"]
    args += ["--target", "pm2.5", "--categorical", "cbwd", "--exclude", "No", "--shard-rows", "4096"]
    full = CliRunner().invoke(app, args)
    assert full.exit_code == 2, full.output
    lines = full.output.strip().splitlines()
    assert len(lines) == 1 and "no space left on the device" in lines[0] and str(out) in lines[0], lines
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], "half a dataset left behind"
    filler.unlink()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (out / "manifest.json").exists()


def test_a_full_cache_disk_serves_shards_uncached(small_disk: Path, tmp_path: Path) -> None:
    from cluster.prep.data import prepare_default
    from trainables.data.cache import ShardCache
    from trainables.data.manifest import read_manifest
    from trainables.data.shards import read_split

    data = resolve(str(tmp_path / "data"))
    prepare_default(data)
    manifest = read_manifest(data)
    (small_disk / "filler").write_bytes(b"\0" * 3_000_000)
    cache = ShardCache(directory=str(small_disk / "cache"))
    table = read_split(data, manifest, "train", cache)
    assert table.num_rows == manifest.splits["train"].rows
    assert not [p for p in (small_disk / "cache").iterdir() if p.name.startswith(".fetch-")], "half a shard cached"
