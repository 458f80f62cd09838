"""Discovering a shard set on S3 reads each Parquet footer by ranged reads, not whole shards:
one request per shard (its last 64 KiB and its size), two when the footer is larger.

Bytes are counted on the wire: a proxy (tests/support/fault_proxy.py, with no faults, or with
faults where retries are under test) sits between the store and the moto S3 server on loopback.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.support.fault_proxy import FaultProxy
from trainpipe.data.shards import ShardCache, describe_shards, discover_shards, write_shards
from trainpipe.errors import DataError
from trainpipe.storage import open_store

SHARDS = 6
ROWS_PER_SHARD = 40_000
PYARROW_FOOTER_READ_BYTES = 64 * 1024  # what pyarrow reads from a file's end to find the footer


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr("trainpipe.storage.RETRY_BASE_S", 0.01)


def table(rows: int) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "a": rng.normal(size=rows),
            "b": rng.normal(size=rows).astype(np.float32),
            "label": rng.integers(0, 3, rows),
        }
    )


@pytest.fixture
def shard_sets(tmp_path, s3_bucket, s3_endpoint) -> tuple[str, str, int]:
    """The same shards (byte for byte) on S3 and in a local folder; their total size."""
    data = table(SHARDS * ROWS_PER_SHARD)
    remote, local = f"{s3_bucket}/table", str(tmp_path / "local")
    written = write_shards(
        data, remote, rows_per_shard=ROWS_PER_SHARD, row_group_rows=4096, endpoint_url=s3_endpoint
    )
    again = write_shards(data, local, rows_per_shard=ROWS_PER_SHARD, row_group_rows=4096)
    assert [e["sha256"] for e in written] == [e["sha256"] for e in again]
    total = sum(open_store(local).head(e["name"]).size_bytes for e in written)
    return remote, local, total


def test_s3_discovery_transfers_footers_not_shards(tmp_path, shard_sets, s3_endpoint):
    remote, local, total_bytes = shard_sets
    cache_dir = tmp_path / "cache"
    with FaultProxy(s3_endpoint, rate=0.0, seed=0) as proxy:
        found = discover_shards(remote, endpoint_url=proxy.url, cache=ShardCache(cache_dir, 2**30))
    # Each shard costs pyarrow's one read from its end (the footer is inside it); the listing
    # and shards.json are a few KiB. A whole shard is ~16x that.
    assert proxy.body_bytes <= SHARDS * PYARROW_FOOTER_READ_BYTES + 16 * 1024, proxy.body_bytes
    assert proxy.body_bytes < total_bytes / 8
    assert not cache_dir.exists() or not list(cache_dir.iterdir())  # nothing downloaded

    # The same shard set as discovery over whole files (the local copy)...
    whole = discover_shards(local)
    assert found.shards == whole.shards
    assert found.schema.equals(whole.schema)
    assert found.rows == SHARDS * ROWS_PER_SHARD
    assert all(len(s.row_group_rows) == 10 for s in found.shards)
    # ...and as the footers of the shards downloaded whole (checked against shards.json).
    for shard in found.shards:
        meta = found.open(shard).metadata
        assert meta.num_rows == shard.rows
        assert tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) == (
            shard.row_group_rows
        )
    assert len(list(cache_dir.glob("*.parquet"))) == SHARDS


def test_s3_discovery_is_one_request_per_shard(shard_sets, s3_endpoint):
    """No HEAD before the footer read: the suffix read's answer carries the object's size."""
    remote, local, _ = shard_sets
    names = [(s.name, s.sha256) for s in discover_shards(local).shards]
    with FaultProxy(s3_endpoint, rate=0.0, seed=0) as proxy:
        found = describe_shards(open_store(remote, endpoint_url=proxy.url), names)
    assert proxy.counts["requests"] == SHARDS, proxy.counts
    assert proxy.body_bytes <= SHARDS * PYARROW_FOOTER_READ_BYTES
    assert found.shards == discover_shards(local).shards
    with FaultProxy(s3_endpoint, rate=0.0, seed=0) as proxy:
        discover_shards(remote, endpoint_url=proxy.url)
    assert proxy.counts["requests"] == SHARDS + 2, proxy.counts  # + the listing, shards.json


def test_s3_discovery_needs_no_cache(shard_sets, s3_endpoint):
    remote, local, _ = shard_sets
    assert discover_shards(remote, endpoint_url=s3_endpoint).shards == (
        discover_shards(local).shards
    )


def test_a_large_footer_is_read_whole(tmp_path, s3_bucket, s3_endpoint):
    """A footer longer than pyarrow's first read from the end takes a second ranged read."""
    wide = pa.table({f"column_{i:03d}": np.arange(2000, dtype=np.int64) for i in range(120)})
    remote = f"{s3_bucket}/wide"
    write_shards(wide, remote, rows_per_shard=1000, row_group_rows=100, endpoint_url=s3_endpoint)
    local = str(tmp_path / "wide")
    write_shards(wide, local, rows_per_shard=1000, row_group_rows=100)
    footer_bytes = int.from_bytes(
        (tmp_path / "wide" / "part-00000.parquet").read_bytes()[-8:-4], "little"
    )
    assert footer_bytes > PYARROW_FOOTER_READ_BYTES
    names = [(s.name, s.sha256) for s in discover_shards(local).shards]
    with FaultProxy(s3_endpoint, rate=0.0, seed=0) as proxy:
        found = describe_shards(open_store(remote, endpoint_url=proxy.url), names)
    assert proxy.counts["requests"] == 2 * len(names), proxy.counts
    # The second read fetches only what the first did not: no byte crosses the wire twice.
    footers = sum(
        int.from_bytes((tmp_path / "wide" / name).read_bytes()[-8:-4], "little") + 8
        for name, _ in names
    )
    assert proxy.body_bytes <= footers, (proxy.body_bytes, footers)
    assert found.shards == discover_shards(local).shards
    assert found.schema.equals(discover_shards(local).schema)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[:-100], id="truncated"),
        pytest.param(lambda data: data[: len(data) // 2], id="cut-in-half"),
        pytest.param(lambda data: b"name,label\n" + b"x,1\n" * 5000, id="csv-not-parquet"),
        pytest.param(lambda data: b"PAR1", id="tiny"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_a_bad_shard_on_s3_is_one_line_naming_it(shard_sets, s3_endpoint, damage):
    remote, local, _ = shard_sets
    store = open_store(remote, endpoint_url=s3_endpoint)
    original = open_store(local).get_bytes("part-00003.parquet")
    store.put_bytes("part-00003.parquet", damage(original))
    with pytest.raises(
        DataError, match=r"shard s3://.*/table/part-00003\.parquet is not a readable"
    ):
        discover_shards(remote, endpoint_url=s3_endpoint)
    try:
        discover_shards(remote, endpoint_url=s3_endpoint)
    except DataError as exc:
        assert "\n" not in str(exc)
        assert str(exc).count("part-0000") == 1  # the bad shard, and no other


def test_a_missing_shard_on_s3_is_one_line_naming_it(shard_sets, s3_endpoint):
    remote, _, _ = shard_sets
    store = open_store(remote, endpoint_url=s3_endpoint)
    with pytest.raises(DataError, match=r"shard s3://.*/table/gone\.parquet is missing") as info:
        describe_shards(store, [("part-00000.parquet", ""), ("gone.parquet", "")])
    assert "\n" not in str(info.value)
    store.delete("part-00002.parquet")  # listed in shards.json, absent
    with pytest.raises(DataError, match=r"part-00002\.parquet is listed in shards.json"):
        discover_shards(remote, endpoint_url=s3_endpoint)


@pytest.mark.parametrize("fault", ["truncate", "reset_before"])
def test_s3_discovery_survives_transient_faults(shard_sets, s3_endpoint, fault, fast_backoff):
    remote, local, _ = shard_sets
    with FaultProxy(s3_endpoint, rate=0.3, seed=4, faults=(fault,)) as proxy:
        found = discover_shards(remote, endpoint_url=proxy.url)
    assert proxy.counts[fault] >= 3, proxy.counts
    # Each fault costs exactly one request more (botocore's retry or Store._retrying's).
    assert proxy.counts["requests"] == SHARDS + 2 + proxy.counts[fault], proxy.counts
    assert found.shards == discover_shards(local).shards


def test_s3_faults_beyond_the_retry_budget_name_the_shard(shard_sets, s3_endpoint, fast_backoff):
    remote, _, _ = shard_sets
    with FaultProxy(s3_endpoint, rate=1.0, seed=1, faults=("truncate",)) as proxy:
        store = open_store(remote, endpoint_url=proxy.url)
        with pytest.raises(DataError, match=r"shard s3://.*/part-00000\.parquet: .*cut short") as e:
            describe_shards(store, [("part-00000.parquet", "")])
    assert "\n" not in str(e.value)
