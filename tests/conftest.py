"""Shared fixtures: one real local Ray instance per session, and the bundled data prepared once."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bundled Beijing PM2.5 data, prepared once for the whole session (read-only for tests)."""
    from cluster.data import prepare_default
    from trainables.storage import resolve

    root = tmp_path_factory.mktemp("prepared") / "beijing"
    prepare_default(resolve(str(root)))
    return str(root)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A real local Ray instance (2 CPUs, no dashboard) in a private temp dir, so no stale cluster is joined."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="lt-ray-", dir="/tmp")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp_dir,
        log_to_driver=False,
        logging_level="WARNING",
    )
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _quiet_threads() -> None:
    # Two cores: keep each test's torch from fighting Ray workers for them.
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
