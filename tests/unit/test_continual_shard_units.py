"""Continual retraining on partitions of Parquet shards (``data.format=shards``): the real
planner and finisher on a file store, then the plan's data streamed by the training loader.
Nothing is trained here (tests/integration/test_continual_sharded.py trains)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.shard_reads import ShardReads
from trainpipe.artifacts import ArtifactSet
from trainpipe.config import load_config
from trainpipe.continual.driver import finish_run, plan_run, release_run
from trainpipe.continual.reference import DriftReferenceError, load_reference
from trainpipe.continual.sharded import holdout_shards, replay_shards
from trainpipe.continual.watermark import read_watermark, watermark_key
from trainpipe.data.shards import ShardInfo, write_shards
from trainpipe.data.stored import load_validated
from trainpipe.data.streaming import StreamSplit, stream_loader
from trainpipe.storage import open_store

ROWS = 400


def shard(path, seed: int, labels=(0, 1, 2), shift: float = 0.0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, (ROWS, 4))
    label = rng.choice(labels, ROWS)
    columns = {f"f{i}": x[:, i] + label for i in range(4)}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({**columns, "label": label}), path, row_group_size=100)


def partition(root, name: str, shards: int, seed: int, **kwargs) -> None:
    for i in range(shards):
        shard(root / name / f"part-{i:03d}.parquet", seed * 100 + i, **kwargs)


def configure(tmp_path, *extra: str):
    return load_config(
        None,
        [
            f"storage.uri=file://{tmp_path}/artifacts",
            f"continual.source=file://{tmp_path}/incoming",
            "data.format=shards",
            "data.label_column=label",
            f"data.streaming.cache_dir={tmp_path}/cache",
            *extra,
        ],
    )


def dataset_json(uri: str) -> dict:
    return ArtifactSet.open(uri).get_json("dataset.json")


def test_partitions_of_shards_are_planned_by_whole_shards_and_streamed(tmp_path):
    incoming = tmp_path / "incoming"
    partition(incoming, "2026-11-01", 6, 0)
    cfg = configure(tmp_path)

    first = plan_run(cfg, "r1")
    assert first.action == "full_retrain", first.message
    boot = dataset_json(first.data_uri)
    assert boot["format"] == "shards" and boot["source"] == f"file://{incoming}"
    names = [s["name"] for split in boot["shards"].values() for s in split]
    assert sorted(names) == [f"2026-11-01/part-{i:03d}.parquet" for i in range(6)]
    assert boot["fixed_test_examples"] == boot["split_sizes"]["test"] > 0
    assert (
        boot["label_values"] == [0, 1, 2]
        and sum(boot["class_counts_train"]) == (boot["split_sizes"]["train"])
    )
    finish_run(cfg, "r1", first.plan_uri)
    release_run(cfg, "r1")

    # A clean partition of three shards, a corrupt one and one with a label never seen.
    partition(incoming, "2026-11-02", 3, 1)
    partition(incoming, "2026-11-03", 1, 2)
    (incoming / "2026-11-03/part-000.parquet").write_bytes(b"PAR1 truncated")
    partition(incoming, "2026-11-04", 2, 3, labels=(0, 7))
    # A folder with shards.json: its sha256s are checked; a replaced shard is refused.
    write_shards(
        pq.read_table(incoming / "2026-11-02/part-000.parquet"),
        str(incoming / "2026-11-05"),
        rows_per_shard=200,
    )
    shard(incoming / "2026-11-05/part-00001.parquet", 9)
    second = plan_run(cfg, "r2")
    info = dataset_json(second.data_uri)
    plan = ArtifactSet.open(second.plan_uri).get_json("plan.json")
    verdicts = plan["outcome"]["verdicts"]
    assert verdicts["2026-11-02"] == "passed"
    assert verdicts["2026-11-03"].startswith("rejected: unreadable") and (
        "2026-11-03/part-000.parquet" in verdicts["2026-11-03"]
    )
    assert verdicts["2026-11-04"].startswith("rejected") and "7" in verdicts["2026-11-04"]
    assert "2026-11-05/part-00001.parquet" in verdicts["2026-11-05"]
    assert "sha256" in verdicts["2026-11-05"]
    # No champion registered yet: every accepted shard trains again (full retrain).
    assert second.action == "full_retrain"
    train = {s["name"] for s in info["shards"]["train"]}
    held = [s["name"] for s in info["shards"]["test"][len(boot["shards"]["test"]) :]]
    arrived = {f"2026-11-02/part-{i:03d}.parquet" for i in range(3)}
    assert 1 <= len(held) < 3 and set(held) <= arrived  # whole shards, at least one trains
    new = arrived - set(held)
    assert train == {s["name"] for s in boot["shards"]["train"]} | new
    assert info["shards"]["test"][: len(boot["shards"]["test"])] == boot["shards"]["test"]
    assert info["fixed_test_examples"] == boot["fixed_test_examples"]
    assert info["split_sizes"]["test"] == boot["split_sizes"]["test"] + len(held) * ROWS

    # The stages stream it: every training row once per epoch, in bounded batches.
    dataset = load_validated(ArtifactSet.open(second.data_uri), cfg.data.streaming)
    assert isinstance(dataset.train, StreamSplit)
    seen = sum(len(y) for _, y in stream_loader(dataset.train, epoch=0, batch_size=64, workers=0))
    assert seen == info["split_sizes"]["train"] == len(train) * ROWS
    finish_run(cfg, "r2", second.plan_uri)
    release_run(cfg, "r2")
    watermark = json.loads(
        (tmp_path / "artifacts/continual/digits-classifier/watermark.json").read_text()
    )
    assert sorted(watermark["rejected"]) == ["2026-11-03", "2026-11-04", "2026-11-05"]
    assert "nothing to do" in plan_run(cfg, "r3").message


def test_holdout_and_replay_take_whole_shards():
    shards = [ShardInfo(f"p/{i}.parquet", 100, (100,)) for i in range(10)]
    train, held = holdout_shards(shards, 0.3, seed=0)
    assert held and len(train) + len(held) == 10 and not set(train) & set(held)
    assert holdout_shards(shards, 0.3, seed=0) == (train, held)  # stable
    assert holdout_shards(shards[:1], 0.99, seed=0) == (shards[:1], [])  # one shard trains
    pool = [{"shard": {"rows": 100}, "counts": [50, 50]} for _ in range(10)]
    assert len(replay_shards(pool, 250, seed=0)) == 3  # whole shards: 300 rows for 250
    assert replay_shards(pool, 0, seed=0) == []


MODEL = "digits-classifier"


def bootstrap(tmp_path, cfg) -> None:
    partition(tmp_path / "incoming", "2026-11-01", 5, 0)
    first = plan_run(cfg, "r1")
    finish_run(cfg, "r1", first.plan_uri)
    release_run(cfg, "r1")


def planned(plan) -> dict:
    return ArtifactSet.open(plan.plan_uri).get_json("plan.json")


def test_a_run_reads_the_stored_drift_reference_not_the_accepted_shards(tmp_path, monkeypatch):
    cfg = configure(tmp_path)
    bootstrap(tmp_path, cfg)
    store = open_store(f"file://{tmp_path}/artifacts")
    watermark = read_watermark(store, MODEL)
    assert watermark.reference == f"continual/{MODEL}/reference/r1.json"
    assert load_reference(store, MODEL, watermark).rows == 5 * ROWS  # every bootstrap shard
    incoming = tmp_path / "incoming"
    partition(incoming, "2026-11-02", 3, 1)
    partition(incoming, "2026-11-03", 2, 2, shift=2.0)

    # The same plan the way it was done before: every accepted shard read as the reference.
    reads = ShardReads(monkeypatch)
    reread = planned(plan_run(configure(tmp_path, "continual.rebuild_reference=true"), "again"))
    assert reads.of("2026-11-01") == {f"2026-11-01/part-{i:03d}.parquet" for i in range(5)}
    release_run(cfg, "again")

    reads.names.clear()
    second = plan_run(cfg, "r2")
    assert not reads.of("2026-11-01"), reads.names
    outcome = planned(second)["outcome"]
    assert outcome["verdicts"] == reread["outcome"]["verdicts"]
    assert (
        outcome["drift"].keys() == reread["outcome"]["drift"].keys() == {"2026-11-02", "2026-11-03"}
    )
    for name, score in outcome["drift"].items():
        assert abs(score - reread["outcome"]["drift"][name]) < 0.02, (name, outcome, reread)
    assert outcome["drift"]["2026-11-03"] > outcome["drift"]["2026-11-02"] + 0.2
    finish_run(cfg, "r2", second.plan_uri)
    release_run(cfg, "r2")

    # The reference the watermark now points at holds every accepted shard: the bootstrap's
    # and the new training shards; accepted shards that cannot be read any more do not matter.
    watermark = read_watermark(store, MODEL)
    assert watermark.reference == f"continual/{MODEL}/reference/r2.json"
    assert not store.exists(f"continual/{MODEL}/reference/r1.json")  # superseded, deleted
    pool = [e for key in set(watermark.accepted.values()) for e in store.get_json(key)["shards"]]
    later = sum(e["shard"]["rows"] for e in pool if not e["shard"]["name"].startswith("2026-11-01"))
    assert later > 0 and load_reference(store, MODEL, watermark).rows == 5 * ROWS + later
    for accepted in [*incoming.glob("2026-11-01/*"), *incoming.glob("2026-11-02/*")]:
        accepted.write_bytes(b"PAR1 not any more")
    partition(incoming, "2026-11-04", 2, 4)
    reads.names.clear()
    third = plan_run(cfg, "r3")
    assert planned(third)["outcome"]["verdicts"] == {"2026-11-04": "passed"}
    assert reads.of("2026-11-04"), reads.names  # the new partition's shards are read ...
    for accepted in ["2026-11-01", "2026-11-02", "2026-11-03"]:
        assert not reads.of(accepted), reads.names  # ... no accepted one
    release_run(cfg, "r3")


def test_an_old_state_rebuilds_the_reference_once_and_a_broken_one_is_one_line(
    tmp_path, monkeypatch
):
    cfg = configure(tmp_path)
    bootstrap(tmp_path, cfg)
    store = open_store(f"file://{tmp_path}/artifacts")
    # A watermark written before the reference was stored (an earlier release) has none.
    old = read_watermark(store, MODEL)
    record = store.get_json(watermark_key(MODEL))
    del record["reference"], record["reference_sha256"]
    store.put_json(watermark_key(MODEL), record, if_match=old.etag)
    store.delete(old.reference)
    incoming = tmp_path / "incoming"
    partition(incoming, "2026-11-02", 3, 1)
    reads = ShardReads(monkeypatch)
    second = plan_run(cfg, "r2")
    assert planned(second)["outcome"]["verdicts"] == {"2026-11-02": "passed"}
    assert len(reads.of("2026-11-01")) == 5  # read once to rebuild it ...
    finish_run(cfg, "r2", second.plan_uri)
    release_run(cfg, "r2")
    partition(incoming, "2026-11-03", 2, 2)
    reads.names.clear()
    third = plan_run(cfg, "r3")
    assert planned(third)["outcome"]["verdicts"] == {"2026-11-03": "passed"}
    assert not reads.of("2026-11-01") and not reads.of("2026-11-02")  # ... and stored
    release_run(cfg, "r3")

    reference = tmp_path / "artifacts" / read_watermark(store, MODEL).reference
    reference.write_text(reference.read_text().replace('"rows"', '"row"'))
    with pytest.raises(DriftReferenceError) as corrupt:
        plan_run(cfg, "r4")
    message = str(corrupt.value)
    assert "\n" not in message and f"file://{reference}" in message
    assert "is corrupt" in message and "continual.rebuild_reference=true" in message
    reference.unlink()
    with pytest.raises(DriftReferenceError, match="is missing"):
        plan_run(cfg, "r4")
    rebuilt = plan_run(configure(tmp_path, "continual.rebuild_reference=true"), "r4")
    assert planned(rebuilt)["outcome"]["verdicts"] == {"2026-11-03": "passed"}
    assert planned(rebuilt)["next"]["reference"] == f"continual/{MODEL}/reference/r4.json"
