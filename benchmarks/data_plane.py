"""Data-plane benchmark: trial reader vs raw boto3 GET from a local S3 server, and S3 bytes per experiment.

Run through the loopback namespace (it starts SeaweedFS and Ray):
    ../shared/bin/loopback-only python3 -m benchmarks.data_plane [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from typing import Any

SOURCE_HELP = "household power (2.07 M rows) unless --quick, which uses the bundled Beijing PM2.5 data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small dataset, trials 1 and 2 only")
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = measure(quick=args.quick, repeats=args.repeats)
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def measure(*, quick: bool, repeats: int) -> dict[str, Any]:
    """The whole data-plane benchmark against a local S3 server it starts and removes again."""
    from tests.s3server import new_server

    server = new_server()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3")}
    os.environ.update(
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_ENDPOINT_URL_S3=server.endpoint,
    )
    server.start()
    try:
        server.client().create_bucket(Bucket="bench")
        return run(server, quick=quick, repeats=repeats)
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def prepare(quick: bool) -> tuple[str, float]:
    from cluster.prep.data import bundled_beijing_path, prepare_forecast
    from trainables.data.forecast_prep import ForecastPrepConfig
    from trainables.storage import resolve

    started = time.perf_counter()
    if quick:
        prepare_forecast(bundled_beijing_path(), ForecastPrepConfig(), resolve("s3://bench/data"), name="beijing")
    else:
        from benchmarks.common import DATASETS
        from benchmarks.scaling import SOURCE, household_config

        source = str(DATASETS / SOURCE)
        cfg = household_config()
        prepare_forecast(source, cfg, resolve("s3://bench/data"), name="household", shard_rows=65536)
    return "s3://bench/data", time.perf_counter() - started


def read_throughput(server: Any, uri: str, repeats: int) -> dict[str, Any]:
    from trainables.data.cache import ShardCache
    from trainables.data.manifest import read_manifest
    from trainables.data.shards import read_split
    from trainables.storage import resolve

    root = resolve(uri)
    manifest = read_manifest(root)
    shards = [s for split in manifest.splits.values() for s in split.shards]
    total = sum(s.bytes for s in shards)
    client = server.client()
    bucket, prefix = root.path.split("/", 1)
    raw, reader, cached = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for s in shards:
            client.get_object(Bucket=bucket, Key=f"{prefix}/{s.path}")["Body"].read()
        raw.append(time.perf_counter() - t)
        cache = ShardCache(directory=tempfile.mkdtemp(prefix="bench-cache-"))
        t = time.perf_counter()
        for split in manifest.splits:
            read_split(root, manifest, split, cache)  # GET, sha256 check, cache write, Parquet decode
        reader.append(time.perf_counter() - t)
        t = time.perf_counter()
        for split in manifest.splits:
            read_split(root, manifest, split, cache)  # from the node cache
        cached.append(time.perf_counter() - t)
        shutil.rmtree(cache.directory, ignore_errors=True)
    mb = total / 1e6

    def stats(xs: list[float]) -> dict[str, float]:
        best = min(xs)
        return {"best_s": best, "mb_per_s": mb / best, "runs_s": xs}

    out = {
        "dataset_mb": mb,
        "shards": len(shards),
        "raw_get": stats(raw),
        "reader_cold": stats(reader),
        "reader_cached": stats(cached),
    }
    out["ratio_reader_cold_vs_raw"] = out["reader_cold"]["mb_per_s"] / out["raw_get"]["mb_per_s"]
    return out


def bytes_per_experiment(uri: str, trial_counts: list[int]) -> list[dict[str, Any]]:
    import ray
    from rich.console import Console

    from cluster.api.launch import run_experiment
    from cluster.plan.options import RunOptions, SchedulerOptions
    from trainables.data.cache import ShardCache
    from trainables.data.manifest import read_manifest
    from trainables.storage import resolve

    manifest = read_manifest(resolve(uri))
    dataset = sum(s.bytes for split in manifest.splits.values() for s in split.shards)
    rows = []
    temp = tempfile.mkdtemp(prefix="bench-ray-", dir="/tmp")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp,
        log_to_driver=False,
        logging_level="WARNING",
    )
    try:
        for n in trial_counts:
            cache_dir = tempfile.mkdtemp(prefix="bench-cache-", dir="/tmp")
            started = time.perf_counter()
            run_experiment(
                RunOptions(
                    storage="s3://bench/runs",
                    name=f"trials-{n}",
                    data=uri,
                    num_samples=n,
                    max_epochs=1,
                    scheduler=SchedulerOptions(kind="fifo"),
                    cache_dir=cache_dir,
                    space="forecast-small",
                ),
                console=Console(stderr=True, quiet=True),
            )
            fetched = ShardCache(directory=cache_dir).fetched_bytes()
            rows.append(
                {
                    "trials": n,
                    "s3_bytes_fetched": fetched,
                    "dataset_bytes": dataset,
                    "bytes_if_each_trial_read_all": n * dataset,
                    "wall_s": time.perf_counter() - started,
                }
            )
            shutil.rmtree(cache_dir, ignore_errors=True)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    return rows


def run(server: Any, *, quick: bool, repeats: int) -> dict[str, Any]:
    uri, prep_s = prepare(quick)
    results: dict[str, Any] = {"source": "beijing" if quick else "household_power", "prepare_s": prep_s}
    results["read"] = read_throughput(server, uri, repeats)
    # Trials read the bundled-size dataset so the experiments stay short; bytes scale the same way.
    small_uri = uri
    if not quick:
        from cluster.prep.data import bundled_beijing_path, prepare_forecast
        from trainables.data.forecast_prep import ForecastPrepConfig
        from trainables.storage import resolve

        prepare_forecast(bundled_beijing_path(), ForecastPrepConfig(), resolve("s3://bench/small"), name="beijing")
        small_uri = "s3://bench/small"
    results["bytes_per_experiment"] = bytes_per_experiment(small_uri, [1, 2] if quick else [1, 2, 4, 8])
    return results


if __name__ == "__main__":
    main()
