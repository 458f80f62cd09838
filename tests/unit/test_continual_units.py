"""Continual retraining building blocks on real stores: the lease (file and moto S3), the
watermark's compare-and-swap, partitions, replay sampling and the forgetting bound."""

from __future__ import annotations

import numpy as np
import pytest

from trainpipe.continual.lease import (
    LeaseHeld,
    LeaseLost,
    acquire_lease,
    held_lease,
    release_lease,
    renew_lease,
)
from trainpipe.continual.partitions import list_partitions, new_partitions
from trainpipe.continual.replay import mix, replay_count, replay_sample
from trainpipe.continual.watermark import (
    Watermark,
    WatermarkConflict,
    advance_watermark,
    read_watermark,
)
from trainpipe.data.datasets import Split
from trainpipe.evaluate.gate import forgetting_bound
from trainpipe.storage import open_store


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return open_store(f"file://{tmp_path}/store")
    return open_store(
        request.getfixturevalue("s3_bucket") + "/artifacts",
        endpoint_url=request.getfixturevalue("s3_endpoint"),
    )


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_lease_contention_second_holder_is_refused(store):
    clock = Clock()
    first = acquire_lease(store, "m1", holder="run-a", ttl_s=60, clock=clock)
    with pytest.raises(LeaseHeld, match=r"another run \(run-a\) holds the lease of m1 until"):
        acquire_lease(store, "m1", holder="run-b", ttl_s=60, clock=clock)
    clock.now += 30
    renewed = renew_lease(store, first, ttl_s=60, clock=clock)
    assert renewed.expires_at == clock.now + 60
    clock.now += 45  # past the first expiry, within the renewed one
    with pytest.raises(LeaseHeld):
        acquire_lease(store, "m1", holder="run-b", ttl_s=60, clock=clock)


def test_expired_lease_is_taken_over_and_the_old_holder_loses_it(store):
    clock = Clock()
    crashed = acquire_lease(store, "m1", holder="run-a", ttl_s=60, clock=clock)
    clock.now += 61  # run-a crashed and never renewed
    taker = acquire_lease(store, "m1", holder="run-b", ttl_s=60, clock=clock)
    assert taker.holder == "run-b"
    with pytest.raises(LeaseLost):
        renew_lease(store, crashed, ttl_s=60, clock=clock)
    release_lease(store, crashed, clock=clock)  # must not free run-b's lease
    with pytest.raises(LeaseHeld, match="run-b"):
        acquire_lease(store, "m1", holder="run-c", ttl_s=60, clock=clock)
    release_lease(store, taker, clock=clock)
    assert acquire_lease(store, "m1", holder="run-c", ttl_s=60, clock=clock).holder == "run-c"


def test_two_takeovers_of_one_stale_lease_one_wins(store):
    """Both saw the same expired lease; the if_match write lets exactly one of them in."""
    clock = Clock()
    acquire_lease(store, "m1", holder="run-a", ttl_s=10, clock=clock)
    clock.now += 11
    stale = store.head("continual/m1/lease.json").etag
    store.put_json("continual/m1/lease.json", {"holder": "x"}, if_match=stale)  # a rival
    from trainpipe.storage import PreconditionFailed

    with pytest.raises(PreconditionFailed):
        store.put_json("continual/m1/lease.json", {"holder": "y"}, if_match=stale)


def test_watermark_compare_and_swap(store):
    empty = read_watermark(store, "m1")
    assert empty.etag is None and empty.sequence == 0
    first = advance_watermark(store, "m1", empty, Watermark(consumed=["p1"], run_id="r1"))
    assert read_watermark(store, "m1").consumed == ["p1"]
    with pytest.raises(WatermarkConflict):  # a second run that also started from "empty"
        advance_watermark(store, "m1", empty, Watermark(consumed=["p9"], run_id="r2"))
    advance_watermark(store, "m1", first, Watermark(consumed=["p1", "p2"], run_id="r3"))
    again = read_watermark(store, "m1")
    assert again.sequence == 2 and again.consumed == ["p1", "p2"] and again.run_id == "r3"


def test_partitions_are_children_in_name_order(tmp_path):
    incoming = open_store(f"file://{tmp_path}/in")
    incoming.put_bytes("2026-11-24/a.parquet", b"x")
    incoming.put_bytes("2026-11-23/b.parquet", b"x")
    incoming.put_bytes("2026-11-23/a.parquet", b"x")
    incoming.put_bytes("part-0001.parquet", b"x")
    incoming.put_bytes("_SUCCESS", b"")
    parts = list_partitions(incoming)
    assert [p.name for p in parts] == ["2026-11-23", "2026-11-24", "part-0001.parquet"]
    assert parts[0].keys == ("2026-11-23/a.parquet", "2026-11-23/b.parquet")
    assert [p.name for p in new_partitions(parts, {"2026-11-23"})] == [
        "2026-11-24",
        "part-0001.parquet",
    ]


def test_replay_count_and_sample():
    assert replay_count(100, 1000, 0.5) == 100
    assert replay_count(100, 1000, 0.2) == 25
    assert replay_count(100, 30, 0.5) == 30  # capped by the pool
    assert replay_count(100, 1000, 0.0) == 0
    with pytest.raises(ValueError):
        replay_count(10, 10, 1.0)
    pool = Split(np.arange(200, dtype=np.float32)[:, None], np.arange(200) % 10)
    sample = replay_sample(pool, 50, seed=3)
    assert len(sample) == 50 and len(np.unique(sample.x)) == 50  # no repeats
    assert np.array_equal(sample.x, replay_sample(pool, 50, seed=3).x)  # seeded
    assert not np.array_equal(sample.x, replay_sample(pool, 50, seed=4).x)
    new = Split(np.full((20, 1), -1.0, dtype=np.float32), np.zeros(20, dtype=np.int64))
    mixed = mix(new, sample)
    assert len(mixed) == 70 and (mixed.x[:, 0] < 0).sum() == 20


def test_forgetting_rule():
    def rule(accuracy, champion, bound):
        metrics = {"fixed_test": {"examples": 100, "accuracy": accuracy}}
        return forgetting_bound(metrics, {"fixed_test": {"champion_accuracy": champion}}, bound)

    assert rule(0.95, 0.96, 0.02).passed
    assert rule(0.94, 0.96, 0.02).passed  # exactly the bound is allowed
    failed = rule(0.80, 0.96, 0.02)
    assert not failed.passed and "drop +0.1600 > max 0.0200" in failed.detail
    assert rule(0.10, None, 0.02).passed  # no champion: nothing to forget
    assert rule(0.10, 0.96, None).passed  # disabled
    assert forgetting_bound({}, {}, 0.02) is None  # a batch run has no fixed test set


def test_a_later_step_finds_its_own_lease_only(store):
    """A step of the same run in another pod (finish, the exit handler) finds the lease by
    holder; another run's lease, or a released one, is not its to renew or release."""
    lease = acquire_lease(store, "m1", holder="run-a", ttl_s=60)
    found = held_lease(store, "m1", "run-a")
    assert found is not None and found.etag == lease.etag
    assert held_lease(store, "m1", "run-b") is None
    renewed = renew_lease(store, found, ttl_s=60)
    release_lease(store, renewed, note={"outcome": "nothing to do: no new partitions"})
    assert held_lease(store, "m1", "run-a") is None
    assert store.get_json("continual/m1/lease.json")["outcome"].startswith("nothing to do")
    taken = acquire_lease(store, "m1", holder="run-b", ttl_s=60)  # released: free at once
    assert held_lease(store, "m1", "run-a") is None
    release_lease(store, found)  # run-a's stale etag cannot release run-b's lease
    assert held_lease(store, "m1", "run-b").etag == taken.etag
