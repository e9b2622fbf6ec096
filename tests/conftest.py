"""Shared fixtures: one real local Ray instance per session, and the bundled data prepared once."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3server import S3Server, new_server

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

# Decided before any Ray worker starts, so every worker inherits them: the S3 server's address and keys (random per
# session, never real AWS credentials) and a private shard cache.
S3 = new_server()
os.environ["AWS_ACCESS_KEY_ID"] = S3.access_key
os.environ["AWS_SECRET_ACCESS_KEY"] = S3.secret_key
os.environ["AWS_ENDPOINT_URL_S3"] = S3.endpoint
os.environ.pop("AWS_PROFILE", None)
os.environ["LSTM_TUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="lt-cache-", dir="/tmp")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The real S3-compatible server (SeaweedFS) on 127.0.0.1, with buckets ``lt-data`` and ``lt-exp``."""
    S3.start()
    client = S3.client()
    for bucket in ("lt-data", "lt-exp"):
        client.create_bucket(Bucket=bucket)
    try:
        yield S3
    finally:
        S3.stop()
        shutil.rmtree(S3.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bundled Beijing PM2.5 data, prepared once for the whole session (read-only for tests)."""
    from cluster.prep.data import prepare_default
    from trainables.storage import resolve

    root = tmp_path_factory.mktemp("prepared") / "beijing"
    prepare_default(resolve(str(root)))
    return str(root)


@pytest.fixture(scope="session")
def prepared_r8(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Reuters R8 from ../shared/datasets, tokenised (first 100 tokens, 5,000 words) once for the session."""
    from cluster.prep.text import prepare_classify
    from trainables.data.text_prep import TextPrepConfig
    from trainables.storage import resolve

    train, test = SHARED_DATASETS / "reuters-r8-train.csv.xz", SHARED_DATASETS / "reuters-r8-test.csv.xz"
    if not train.exists():
        pytest.skip("../shared/datasets not present")
    root = tmp_path_factory.mktemp("prepared") / "r8"
    cfg = TextPrepConfig(max_length=100, max_vocab=5000)
    prepare_classify(str(train), cfg, resolve(str(root)), name="r8", test_source=str(test))
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


SERVICE_FIXTURES = frozenset({"ray_local", "s3_server"})
"""A test that uses one of these starts a real service: an integration test."""
INTEGRATION_MARKS = ("ray", "cluster", "integration")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test is ``unit`` (fast, no Ray, no S3 server, no subprocess of the tool) unless it is marked ray,
    cluster or integration or uses a service fixture; ``pytest -m unit`` is the developer's loop. The multi-node
    failure tests run first, whatever their file names, while the machine's cores are the cluster's alone."""
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if uses & SERVICE_FIXTURES and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.integration)
        if not any(item.get_closest_marker(m) for m in INTEGRATION_MARKS):
            item.add_marker(pytest.mark.unit)
    items.sort(key=lambda item: 0 if item.get_closest_marker("cluster") else 1)


@pytest.fixture(autouse=True)
def _quiet_threads() -> None:
    # Two cores: keep each test's torch from fighting Ray workers for them.
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
