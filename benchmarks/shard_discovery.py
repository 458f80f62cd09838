"""Discovering a shard set on S3: footers by ranged reads against downloading whole shards.

    python -m benchmarks.shard_discovery            # 16 shards of ~8 MiB on moto's S3 server
    python -m benchmarks.shard_discovery --quick    # 4 shards of ~1 MiB, a few seconds

Writes ``--shards`` Parquet shards (float64 columns, row groups of 4096 rows) plus shards.json to
moto's S3 server on loopback, then times two ways of learning every shard's rows, row groups and
schema, each on an empty cache:

- ``whole_download``: each shard downloaded whole into the shard cache (sha256 checked against
  shards.json) and its footer read from the local copy: what discovery did before footer reads.
- ``footer_ranges``: :func:`trainpipe.data.shards.discover_shards` (one suffix-range GET of the
  object's last 64 KiB per shard, whose answer also gives its size; ``FOOTER_READ_THREADS``
  shards at a time). ``requests`` counts every request, the listing and shards.json included.

Times are the best of ``--repeats`` runs straight to the server. Bytes and requests are counted
in one more run of each through a pass-through proxy (tests/support/fault_proxy.py with no
faults), since a proxy adds a copy of every body to the time. moto serves one request at a time,
so the threads do not overlap requests here as they would on S3. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.data import start_s3
from tests.support.fault_proxy import FaultProxy
from trainpipe.data.shards import ShardCache, ShardInfo, ShardSet, discover_shards, write_shards
from trainpipe.storage import open_store

COLUMNS = 8


def whole_download(uri: str, endpoint: str, cache_dir: Path) -> int:
    """Rows of every shard, each downloaded whole first (the earlier discovery path)."""
    store = open_store(uri, endpoint_url=endpoint)
    entries = store.get_json("shards.json")["shards"]
    shard_set = ShardSet(store, [], pa.schema([]), ShardCache(cache_dir, 1 << 40))
    return sum(
        shard_set.open(ShardInfo(e["name"], 0, (), e["sha256"])).metadata.num_rows for e in entries
    )


def footer_ranges(uri: str, endpoint: str, cache_dir: Path) -> int:
    return discover_shards(uri, endpoint_url=endpoint, cache=ShardCache(cache_dir, 1 << 40)).rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shards", type=int, default=None)
    parser.add_argument("--shard-mib", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shards = args.shards or (4 if args.quick else 16)
    shard_mib = args.shard_mib or (1.0 if args.quick else 8.0)
    rows_per_shard = int(shard_mib * 2**20 / (8 * COLUMNS))

    server, endpoint = start_s3()
    work = Path(tempfile.mkdtemp(prefix="shard-discovery-"))
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        uri = "s3://bench/table"
        rng = np.random.default_rng(0)
        table = pa.table(
            {f"f{i}": rng.normal(size=shards * rows_per_shard) for i in range(COLUMNS)}
        )
        write_shards(
            table, uri, rows_per_shard=rows_per_shard, row_group_rows=4096, endpoint_url=endpoint
        )
        store = open_store(uri, endpoint_url=endpoint)
        total_bytes = sum(store.head(k).size_bytes for k in store.list() if k.endswith(".parquet"))
        result: dict = {
            "benchmark": "shard_discovery",
            "shards": shards,
            "shard_mib": round(total_bytes / shards / 2**20, 2),
            "total_mib": round(total_bytes / 2**20, 1),
            "machine": platform.machine(),
        }
        for name, discover in (
            ("whole_download", whole_download),
            ("footer_ranges", footer_ranges),
        ):
            times = []
            for repeat in range(args.repeats):
                cache = work / f"{name}-{repeat}"
                start = time.perf_counter()
                rows = discover(uri, endpoint, cache)
                times.append(time.perf_counter() - start)
                assert rows == shards * rows_per_shard, (name, rows)
                shutil.rmtree(cache, ignore_errors=True)
            with FaultProxy(endpoint, rate=0.0, seed=0) as proxy:
                discover(uri, proxy.url, work / f"{name}-counted")
            cached = sum(p.stat().st_size for p in (work / f"{name}-counted").glob("*.parquet"))
            result[name] = {
                "seconds": round(min(times), 3),
                "transferred_kib": round(proxy.body_bytes / 1024, 1),
                "requests": proxy.counts["requests"],
                "cached_mib": round(cached / 2**20, 1),
            }
        whole, footer = result["whole_download"], result["footer_ranges"]
        result["speedup"] = round(whole["seconds"] / footer["seconds"], 1)
        result["bytes_ratio"] = round(whole["transferred_kib"] / footer["transferred_kib"], 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.terminate()
        server.wait(timeout=10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
