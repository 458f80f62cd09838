"""Storage and registry through a fault-injecting proxy in front of the moto S3 server.

The proxy (tests/support/fault_proxy.py) answers 503 SlowDown, resets connections before and
after the server applied a request, and cuts bodies short, at a seeded rate.
"""

from __future__ import annotations

import pytest

from tests.support.fault_proxy import FaultProxy
from trainpipe.artifacts import ArtifactSet, ArtifactWriter
from trainpipe.registry import Registry
from trainpipe.storage import StorageError, open_store, sha256_bytes


@pytest.fixture
def fast_backoff(monkeypatch):
    """Keep the suite quick: the retry logic is under test, not the waiting."""
    monkeypatch.setattr("trainpipe.storage.RETRY_BASE_S", 0.01)


@pytest.mark.parametrize("fault", ["truncate", "reset_before", "reset_after", "slowdown"])
def test_every_read_path_survives_each_fault(s3_endpoint, s3_bucket, tmp_path, fault, fast_backoff):
    blobs = {f"k{i}.bin": bytes([i]) * (1000 + i * 777) for i in range(12)}
    direct = open_store(f"{s3_bucket}/d", endpoint_url=s3_endpoint)
    writer = ArtifactWriter(direct, "set", stage="t", run_id="r")
    for name, data in blobs.items():
        writer.put_bytes(name, data)
    writer.commit()
    with FaultProxy(s3_endpoint, rate=0.25, seed=7, faults=(fault,)) as proxy:
        store = open_store(f"{s3_bucket}/d", endpoint_url=proxy.url)
        artifacts = ArtifactSet.open_in(store, "set")  # manifest read through the faults
        for name, data in blobs.items():
            assert artifacts.get_bytes(name) == data
            target = tmp_path / name
            artifacts.get_file(name, target)
            assert target.read_bytes() == data
            # A ranged read has no sha256 to catch a short body: it is the length that must.
            assert store.get_range(f"set/{name}", 100, 700) == data[100:800]
            assert store.get_tail(f"set/{name}", 900) == (data[-900:], len(data))
            assert store.get_tail(f"set/{name}", 64 * 1024) == (data, len(data))
        assert len(store.list("set")) == len(blobs) + 1
        assert store.head("set/k3.bin").sha256 == sha256_bytes(blobs["k3.bin"])
    assert proxy.counts[fault] >= 5, proxy.counts


def test_a_conditional_write_whose_answer_was_lost_counts_once(
    s3_endpoint, s3_bucket, fast_backoff
):
    """The server applies the create-only write, the answer is lost, botocore retries and
    loses against our own first write: that is a success, not a conflict."""
    with FaultProxy(s3_endpoint, rate=1.0, seed=1, faults=("reset_after",), limit=1) as proxy:
        store = open_store(s3_bucket, endpoint_url=proxy.url)
        info = store.put_bytes("claims/1", b'{"run_id": "r1"}', if_none_match=True)
    assert proxy.counts["reset_after"] == 1
    direct = open_store(s3_bucket, endpoint_url=s3_endpoint)
    assert info.sha256 == sha256_bytes(b'{"run_id": "r1"}')
    assert direct.get_bytes("claims/1") == b'{"run_id": "r1"}'


def test_registry_through_lost_answers_has_one_version_and_a_sound_pointer(
    s3_endpoint, s3_bucket, fast_backoff
):
    with FaultProxy(s3_endpoint, rate=0.3, seed=3, faults=("reset_after", "slowdown")) as proxy:
        registry = Registry(open_store(s3_bucket, endpoint_url=proxy.url), "digits")
        for i in range(4):
            files = {"model.json": b'{"name": "digits"}', "weights.bin": bytes([i]) * 5000}
            version = registry.register(files, run_id=f"run-{i}", lineage={}, summary={})
            registry.promote(version, reason=f"round {i}")
    assert proxy.counts["reset_after"] >= 3, proxy.counts
    direct = Registry(open_store(s3_bucket, endpoint_url=s3_endpoint), "digits")
    assert direct.versions() == ["1", "2", "3", "4"]
    assert direct._claimed() == ["1", "2", "3", "4"]
    champion = direct.champion()
    assert champion.version == "4" and champion.previous_version == "3"
    assert direct.open_version("4").get_bytes("weights.bin") == bytes([3]) * 5000


def test_faults_beyond_the_retry_budget_end_in_one_clear_error(
    s3_endpoint, s3_bucket, fast_backoff
):
    open_store(s3_bucket, endpoint_url=s3_endpoint).put_bytes("k.bin", b"x" * 4096)
    with FaultProxy(s3_endpoint, rate=1.0, seed=1, faults=("truncate",)) as proxy:
        store = open_store(s3_bucket, endpoint_url=proxy.url)
        with pytest.raises(StorageError, match=r"S3 read of s3://.*/k\.bin was cut short") as info:
            store.get_bytes("k.bin")
        assert "\n" not in str(info.value)
        with pytest.raises(StorageError, match=r"S3 read of s3://.*/k\.bin was cut short") as info:
            store.get_range("k.bin", 1000, 2000)
        assert "\n" not in str(info.value)
        with pytest.raises(StorageError, match=r"S3 read of s3://.*/k\.bin was cut short") as info:
            store.get_tail("k.bin", 2000)
        assert "\n" not in str(info.value)


def test_an_endpoint_that_ignores_ranges_is_named_not_trusted(s3_endpoint, s3_bucket):
    open_store(s3_bucket, endpoint_url=s3_endpoint).put_bytes("k.bin", bytes(range(256)) * 16)
    with FaultProxy(s3_endpoint, rate=1.0, seed=1, faults=("ignore_range",)) as proxy:
        store = open_store(s3_bucket, endpoint_url=proxy.url)
        with pytest.raises(StorageError, match=r"does not support ranged reads") as info:
            store.get_range("k.bin", 100, 50)
        assert "\n" not in str(info.value) and proxy.counts["ignore_range"] == 1
        # A tail read answered with the whole object: right when the object is no longer than
        # the tail (that is what a suffix read returns), refused when it is longer (every
        # footer read would download the shard whole).
        data = bytes(range(256)) * 16
        assert store.get_tail("k.bin", len(data)) == (data, len(data))
        with pytest.raises(
            StorageError, match=r"last 100 bytes of s3://.*/k\.bin with 4096 "
        ) as info:
            store.get_tail("k.bin", 100)
        assert "does not support ranged reads" in str(info.value)
        assert "\n" not in str(info.value) and proxy.counts["ignore_range"] == 3
