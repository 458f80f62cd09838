"""Sharded sources and the streaming loader: order, resume position, splits, bad shards."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from trainpipe.data.shards import discover_shards, split_shards, write_shards
from trainpipe.data.streaming import StreamingConfig, StreamSplit, read_all, stream_loader
from trainpipe.errors import DataError


def table(rows: int) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "row_id": np.arange(rows, dtype=np.float64),
            "f1": rng.normal(size=rows),
            "label": rng.integers(0, 3, rows),
        }
    )


def stream(tmp_path, rows=1000, per_shard=137, group=50, block=256) -> StreamSplit:
    uri = str(tmp_path / "shards")
    write_shards(table(rows), uri, rows_per_shard=per_shard, row_group_rows=group)
    shards = discover_shards(uri)
    return StreamSplit(
        uri,
        shards.shards,
        "label",
        ["row_id", "f1"],
        [2],
        [0, 1, 2],
        # Two batches of 40 rows x 2 features per transfer: workers take turns within an epoch.
        StreamingConfig(
            shuffle_block_rows=block,
            transfer_mib=2 * 40 * (4 * 2 + 8) / 2**20,
            cache_dir=str(tmp_path / "cache"),
        ),
        seed=3,
    )


def global_sequence(split, *, world: int, workers: int, epoch=1, batch=40, start=0) -> list:
    """Rows of each global batch, rebuilt by interleaving the ranks' shares."""
    per_rank = [
        [
            y_x[0][:, 0].numpy().astype(int).tolist()
            for y_x in stream_loader(
                split,
                epoch=epoch,
                batch_size=batch,
                start_batch=start,
                rank=rank,
                world=world,
                workers=workers,
            )
        ]
        for rank in range(world)
    ]
    sequence = []
    for shares in zip(*per_rank, strict=True):
        merged = [None] * sum(len(s) for s in shares)
        for rank, share in enumerate(shares):
            merged[rank::world] = share
        sequence.extend(merged)
    return sequence


def test_same_global_order_whatever_ranks_and_workers(tmp_path):
    split = stream(tmp_path)
    reference = global_sequence(split, world=1, workers=0)
    assert sorted(reference) == list(range(1000))  # every row once per epoch
    assert reference[:50] != list(range(50))  # and shuffled
    for world, workers in [(1, 2), (2, 0), (2, 2)]:
        assert global_sequence(split, world=world, workers=workers) == reference, (world, workers)
    assert global_sequence(split, world=1, workers=0, epoch=2) != reference  # reshuffled


def test_resume_mid_epoch_continues_the_same_sequence(tmp_path):
    split = stream(tmp_path)
    whole = global_sequence(split, world=2, workers=2)
    assert global_sequence(split, world=2, workers=2, start=7) == whole[7 * 40 :]


def test_kept_workers_serve_later_epochs_and_abandoned_passes_in_the_same_order(tmp_path):
    """One set of worker processes serves every pass; a pass left half-way (a crash, early
    stopping) does not leak into the next one."""
    split = stream(tmp_path)
    expected = {e: global_sequence(split, world=1, workers=0, epoch=e) for e in (1, 2)}
    abandoned = stream_loader(split, epoch=1, batch_size=40, workers=2)
    next(abandoned), next(abandoned)
    del abandoned
    assert global_sequence(split, world=1, workers=2, epoch=2) == expected[2]
    loader = split._loaders[(40, 0, 1, True, False, 2)]
    workers = [w.pid for w in loader._iterator._workers]
    assert global_sequence(split, world=1, workers=2, epoch=1, start=7) == expected[1][7 * 40 :]
    assert [w.pid for w in loader._iterator._workers] == workers  # the same processes


def epoch_batches(split, epoch: int, workers: int) -> list:
    return list(stream_loader(split, epoch=epoch, batch_size=40, workers=workers))


def test_batches_a_caller_keeps_stay_intact_while_workers_reuse_their_buffers(tmp_path):
    """Workers refill the same shared-memory buffers pass after pass, but never one whose
    batches the caller still holds: kept batches keep their values (exact rows and labels)."""
    split = stream(tmp_path)
    expected = {e: epoch_batches(split, e, workers=0) for e in (1, 2, 3, 4)}
    for epoch in (1, 2, 3):  # a caller dropping each batch: the workers' slots are reused
        for _ in stream_loader(split, epoch=epoch, batch_size=40, workers=2):
            pass
    slots = split._loaders[(40, 0, 1, True, False, 2)].dataset.slots
    assert slots.fresh == 0  # 13 transfers a pass, 5 slots a worker: every one reused
    kept = {e: epoch_batches(split, e, workers=2) for e in (1, 2)}
    assert slots.fresh > 0  # the slots still held ran out: fresh buffers instead
    # an abandoned pass and later ones while the kept batches are still held
    abandoned = stream_loader(split, epoch=3, batch_size=40, workers=2)
    next(abandoned)
    del abandoned
    for epoch in (3, 4, 3):
        batches = stream_loader(split, epoch=epoch, batch_size=40, workers=2)
        for (x, y), (want_x, want_y) in zip(batches, expected[epoch], strict=True):
            assert x.tolist() == want_x.tolist() and y.tolist() == want_y.tolist()
    for epoch, batches in kept.items():
        assert len(batches) == len(expected[epoch]) == 25
        for (x, y), (want_x, want_y) in zip(batches, expected[epoch], strict=True):
            assert x.tolist() == want_x.tolist() and y.tolist() == want_y.tolist()


def test_read_all_and_split_by_shard_are_stable(tmp_path):
    split = stream(tmp_path)
    assert read_all(split).x[:, 0].tolist() == list(range(1000))
    shards = discover_shards(split.uri).shards
    a = split_shards(shards, validation_fraction=0.15, test_fraction=0.2, seed=0)
    b = split_shards(list(reversed(shards)), validation_fraction=0.15, test_fraction=0.2, seed=0)
    assert a == b and all(a.values())
    assert sum(len(v) for v in a.values()) == len(shards)


def test_missing_shard_names_it(tmp_path):
    split = stream(tmp_path)
    (tmp_path / "shards" / "part-00003.parquet").unlink()
    with pytest.raises(DataError, match=r"shard .*part-00003.parquet is listed in shards.json"):
        discover_shards(split.uri)


def test_truncated_shard_names_it(tmp_path):
    split = stream(tmp_path)
    path = tmp_path / "shards" / "part-00002.parquet"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"part-00002.parquet") as caught:
        discover_shards(split.uri)
    assert "\n" not in str(caught.value)


def test_s3_shards_stream_through_a_bounded_checked_cache(tmp_path, s3_bucket, s3_endpoint):
    uri = f"{s3_bucket}/table"
    write_shards(table(600), uri, rows_per_shard=100, endpoint_url=s3_endpoint)
    cache = tmp_path / "cache"
    limit_bytes = 6000  # about two shards of this table
    streaming = StreamingConfig(cache_dir=str(cache), cache_max_gib=limit_bytes / 2**30)
    shards = discover_shards(uri, endpoint_url=s3_endpoint, cache=streaming.cache()).shards
    split = StreamSplit(
        uri, shards, "label", ["row_id", "f1"], [2], [0, 1, 2], streaming, endpoint_url=s3_endpoint
    )
    assert sorted(global_sequence(split, world=1, workers=2)) == list(range(600))
    cached = [p.stat().st_size for p in cache.glob("*.parquet")]
    # Two workers may each hold one shard being read beyond the limit.
    assert 0 < sum(cached) <= limit_bytes + 2 * max(cached)
    assert len(cached) < len(shards)


def test_split_by_shard_keeps_test_shards_when_partitions_arrive():
    from trainpipe.data.shards import ShardInfo

    def shards(n):
        return [ShardInfo(f"day-{i:03d}.parquet", 10, (10,)) for i in range(n)]

    before = split_shards(shards(40), validation_fraction=0.15, test_fraction=0.2, seed=0)
    after = split_shards(shards(80), validation_fraction=0.15, test_fraction=0.2, seed=0)
    for name in ("test", "validation", "train"):
        assert set(s.name for s in before[name]) <= set(s.name for s in after[name]), name
    assert 4 <= len(before["test"]) <= 14 and 2 <= len(before["validation"]) <= 11
    few = split_shards(shards(3), validation_fraction=0.15, test_fraction=0.2, seed=0)
    assert [len(few[k]) for k in ("train", "validation", "test")] == [1, 1, 1]


def test_local_shards_are_hashed_once_and_a_changed_shard_is_still_caught(tmp_path, monkeypatch):
    import trainpipe.data.shards as shards_module

    split = stream(tmp_path)
    hashed: list[str] = []
    real = shards_module._file_sha256
    monkeypatch.setattr(shards_module, "_file_sha256", lambda p: hashed.append(p.name) or real(p))
    read_all(split)
    assert len(hashed) == len(split.shards)
    # A new process (another run, a DataLoader worker) reads them again.
    read_all(split.with_shards(split.shards))
    assert len(hashed) == len(split.shards)  # the recorded checks held: nothing hashed again

    path = tmp_path / "shards" / "part-00002.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"part-00002.parquet does not match the sha256"):
        read_all(split.with_shards(split.shards))


def test_processes_needing_one_remote_shard_download_it_once(tmp_path):
    """Two DataLoader workers often need the same shard at the same moment: one downloads, the
    other waits for it instead of fetching it whole again."""
    import multiprocessing
    import time

    from trainpipe.data.shards import ShardCache
    from trainpipe.storage import FileStore

    log = tmp_path / "downloads.log"

    class SlowStore(FileStore):  # a store whose downloads take a while, and are logged
        def get_file(self, key, path, *, sha256=None):
            with open(log, "a") as f:
                f.write(f"{key}\n")
            time.sleep(0.5)
            return super().get_file(key, path, sha256=sha256)

    split = stream(tmp_path)
    store = SlowStore(tmp_path / "shards")
    shard = split.shards[0]
    cache = ShardCache(tmp_path / "remote-cache", 1 << 30)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=cache.path, args=(store, shard)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert [w.exitcode for w in workers] == [0, 0]
    assert log.read_text().splitlines() == [shard.name]
    assert cache.path(store, shard).read_bytes() == (tmp_path / "shards" / shard.name).read_bytes()


def test_open_shards_hold_no_row_group_after_reading(tmp_path):
    # A pre-buffered Parquet handle kept the last row group it read for as long as it stayed
    # open (OPEN_FILES handles per split and process): ~1 MiB per shard at real sizes.
    split = stream(tmp_path, rows=8 * 20_000, per_shard=20_000, group=20_000)
    shard_set = split.shard_set()
    gc.collect()  # earlier tests' tables are not freed while this one measures
    before = pa.total_allocated_bytes()
    group_bytes = 0
    for shard in split.shards:
        table = shard_set.read_row_group(shard, 0, use_threads=False)  # as the loader reads
        group_bytes = max(group_bytes, table.nbytes)
        del table
    assert len(shard_set._open) == len(split.shards)  # every handle is still open
    held = pa.total_allocated_bytes() - before
    assert held < group_bytes // 4, (held, group_bytes)


def s3_stream(tmp_path, s3_bucket, s3_endpoint, **streaming) -> StreamSplit:
    uri = f"{s3_bucket}/table"
    write_shards(table(600), uri, rows_per_shard=100, row_group_rows=50, endpoint_url=s3_endpoint)
    config = StreamingConfig(shuffle_block_rows=128, cache_dir=str(tmp_path / "cache"), **streaming)
    shards = discover_shards(uri, endpoint_url=s3_endpoint, cache=config.cache()).shards
    assert not Path(config.cache_dir).exists()  # discovery read footers by range: no downloads
    return StreamSplit(
        uri, shards, "label", ["row_id", "f1"], [2], [0, 1, 2], config, endpoint_url=s3_endpoint
    )


def test_remote_shards_download_ahead_in_the_background_once_each(
    tmp_path, s3_bucket, s3_endpoint, monkeypatch
):
    """While one shard is read the next ones download on a background thread (in the training
    process too), each shard once, and the order is the one every reader gets."""
    import threading

    from trainpipe.storage import S3Store

    fetched: list[tuple[str, str]] = []
    real = S3Store.get_file

    def logged(self, key, path, *, sha256=None):
        fetched.append((key, threading.current_thread().name))
        return real(self, key, path, sha256=sha256)

    split = s3_stream(tmp_path, s3_bucket, s3_endpoint)
    monkeypatch.setattr(S3Store, "get_file", logged)
    sequence = global_sequence(split, world=1, workers=0, batch=20)
    assert sorted(sequence) == list(range(600))
    assert sorted(key for key, _ in fetched) == sorted(s.name for s in split.shards)
    assert any(thread.startswith("shard-prefetch") for _, thread in fetched), fetched
    # Discovery downloaded nothing, so no shard size was known yet: the first shard's comes
    # from a HEAD, and it downloads ahead too instead of on the reading thread.
    assert fetched[0][1].startswith("shard-prefetch"), fetched
    shutil.rmtree(split.streaming.cache_dir)
    assert global_sequence(split, world=1, workers=2, batch=20) == sequence


def test_a_corrupt_remote_shard_fetched_ahead_is_named_in_one_line(
    tmp_path, s3_bucket, s3_endpoint
):
    from trainpipe.storage import open_store

    split = s3_stream(tmp_path, s3_bucket, s3_endpoint)
    bad = split.shards[3].name
    open_store(split.uri, endpoint_url=s3_endpoint).put_bytes(bad, b"not the shard")
    with pytest.raises(DataError, match=rf"shard {split.uri}/{bad}: .*sha256") as caught:
        global_sequence(split, world=1, workers=0, batch=20)
    assert "\n" not in str(caught.value)


def test_no_fetching_ahead_into_a_cache_too_small_for_it(
    tmp_path, s3_bucket, s3_endpoint, monkeypatch
):
    """A cache that holds about two shards: fetching ahead would evict shards before they are
    read and download them again. The reader fetches each shard itself, once."""
    import threading

    from trainpipe.storage import S3Store

    split = s3_stream(tmp_path, s3_bucket, s3_endpoint, cache_max_gib=7000 / 2**30)
    fetched: list[tuple[str, str]] = []
    real = S3Store.get_file

    def logged(self, key, path, *, sha256=None):
        fetched.append((key, threading.current_thread().name))
        return real(self, key, path, sha256=sha256)

    monkeypatch.setattr(S3Store, "get_file", logged)
    assert sorted(global_sequence(split, world=1, workers=0, batch=20)) == list(range(600))
    assert sorted(fetched) == sorted((s.name, "MainThread") for s in split.shards)


def test_workers_are_forked_only_once_background_downloads_are_done(
    tmp_path, s3_bucket, s3_endpoint, monkeypatch
):
    """A pass in the training process fetches shards ahead and may be left half-way (a sample
    of the first rows); a worker forked while a download thread held a lock would inherit it
    held. The loader waits for those downloads before it starts workers."""
    import os
    import threading
    import time

    from trainpipe.storage import S3Store

    split = s3_stream(tmp_path, s3_bucket, s3_endpoint, transfer_mib=2 * 20 * 16 / 2**20)
    begun: list[float] = []  # background downloads, when each began
    spans: list[tuple[float, float]] = []  # and when each ended
    real = S3Store.get_file

    def slow(self, key, path, *, sha256=None):
        if not threading.current_thread().name.startswith("shard-prefetch"):
            return real(self, key, path, sha256=sha256)
        begun.append(time.perf_counter())
        time.sleep(0.3)
        result = real(self, key, path, sha256=sha256)
        spans.append((begun[-1], time.perf_counter()))
        return result

    monkeypatch.setattr(S3Store, "get_file", slow)
    forks: list[float] = []
    os.register_at_fork(before=lambda: forks.append(time.perf_counter()))
    first = stream_loader(split, epoch=1, batch_size=20, workers=0)
    while not begun:  # read on until shards are downloading in the background
        next(first)
    del first
    started = time.perf_counter()
    assert len(list(stream_loader(split, epoch=1, batch_size=20, workers=2))) == 30
    fork = min(t for t in forks if t >= started)
    early = [end for start, end in spans if start < started]
    assert early and all(end <= fork for end in early), (spans, started, fork)
