"""Streaming validation keeps nothing per shard: what it holds does not grow with the shards.

Two ways it did grow (about 1.8 MiB per shard of the 500,000-row benchmark shards): every
shard's parsed Parquet footer outlived discovery in a reference cycle that only a full garbage
collection frees (native memory, invisible to tracemalloc and to the collector's thresholds),
and every shard was submitted to the summarizing threads at once.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainpipe.data.shards import OPEN_FILES, discover_shards, split_shards, write_shards
from trainpipe.data.validation import streaming
from trainpipe.data.validation.streaming import SHARDS_AHEAD_PER_WORKER, validate_shards
from trainpipe.errors import DataError

ROWS = 3200


def table() -> pa.Table:
    rng = np.random.default_rng(0)
    columns = {f"f{i}": rng.normal(size=ROWS).astype(np.float32) for i in range(4)}
    return pa.table({**columns, "label": rng.integers(0, 3, ROWS)})


def leftovers(folder, shards: int) -> tuple[int, int, list[str]]:
    """Validate the same table written as ``shards`` shards (against itself as reference) with
    the garbage collector off: (footers still alive, objects only a collection would free,
    their types)."""
    write_shards(table(), str(folder), rows_per_shard=ROWS // shards, row_group_rows=25)
    gc.collect()
    gc.disable()
    try:
        shard_set = discover_shards(str(folder))
        reference = discover_shards(str(folder))
        splits = split_shards(shard_set.shards, validation_fraction=0.2, test_fraction=0.2, seed=0)
        report, _ = validate_shards(
            shard_set, splits, label_column="label", reference=reference, workers=2
        )
        assert report.summary_line().startswith("PASSED"), report.summary_line()
        footers = sum(type(o) is pq.FileMetaData for o in gc.get_objects())
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        kinds = sorted({type(o).__name__ for o in gc.garbage})
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
    return footers, found, kinds


def test_footers_and_cycles_do_not_pile_up_with_the_shards(tmp_path):
    few_footers, few_garbage, _ = leftovers(tmp_path / "few", 8)
    many_footers, many_garbage, kinds = leftovers(tmp_path / "many", 64)
    # Each of the two shard sets keeps at most OPEN_FILES footers parsed, however many shards.
    assert many_footers <= 2 * OPEN_FILES, f"{many_footers} Parquet footers alive for 64 shards"
    assert few_footers <= 2 * OPEN_FILES
    # Less than one object per extra shard left for the collector: a cycle made per shard (or
    # row group) would hold what it points to until the next full collection.
    growth = many_garbage - few_garbage
    assert growth < 56, f"cyclic garbage {few_garbage} -> {many_garbage}: {kinds}"


def test_shards_are_not_all_submitted_at_once(tmp_path, monkeypatch):
    """While the first shard is slow, the other threads summarize at most the bounded number of
    shards ahead of the merge, not every shard of the split (their summaries would all wait in
    memory for the first one)."""
    write_shards(table(), str(tmp_path), rows_per_shard=ROWS // 64, row_group_rows=25)
    shard_set = discover_shards(str(tmp_path))
    first = shard_set.shards[0].name
    summarize = streaming.summarize_shard
    lock, released = threading.Lock(), threading.Event()
    started: list[str] = []
    ahead_of_first: list[int] = []

    def first_is_slow(shards, shard, schema, split):
        with lock:
            started.append(shard.name)
            if len(started) > 16:  # far more than any bound: stop holding the first shard back
                released.set()
        if shard.name == first:
            released.wait(timeout=2.0)
            with lock:
                ahead_of_first.append(len(started) - 1)
        return summarize(shards, shard, schema, split)

    monkeypatch.setattr(streaming, "summarize_shard", first_is_slow)
    workers = 2
    _, summaries = validate_shards(
        shard_set, {"train": shard_set.shards}, label_column="label", workers=workers
    )
    assert summaries["train"].rows == ROWS and len(started) == 64
    assert ahead_of_first[0] < SHARDS_AHEAD_PER_WORKER * workers, (
        f"{ahead_of_first[0]} shards started while the first one was still being summarized"
    )


def test_a_failing_shard_stops_the_rest(tmp_path, monkeypatch):
    """The error of one shard is validation's error, and the shards after the few submitted
    ahead are never read."""
    write_shards(table(), str(tmp_path), rows_per_shard=ROWS // 64, row_group_rows=25)
    shard_set = discover_shards(str(tmp_path))
    bad = shard_set.shards[5].name
    summarize = streaming.summarize_shard
    started: list[str] = []

    def fails_on_one(shards, shard, schema, split):
        started.append(shard.name)
        if shard.name == bad:
            raise DataError(f"data error: shard {bad} cannot be read; rewrite it")
        return summarize(shards, shard, schema, split)

    monkeypatch.setattr(streaming, "summarize_shard", fails_on_one)
    with pytest.raises(DataError, match=f"shard {bad} cannot be read"):
        validate_shards(shard_set, {"train": shard_set.shards}, label_column="label", workers=2)
    assert len(started) <= 6 + SHARDS_AHEAD_PER_WORKER * 2, started
