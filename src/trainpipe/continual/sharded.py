"""Continual retraining on partitions of Parquet shards (``data.format: shards``), streamed:
no partition, replay pool or split is ever loaded whole, so partitions may be larger than a
pod's memory. The plan writes a sharded ``dataset.json`` (the record ``validate_data`` writes for
a sharded source) whose splits list shards under ``continual.source``; the training,
evaluation and export stages stream them as they stream any sharded source.

    continual.source/2026-11-23/part-00000.parquet   # a partition: a folder of shards ...
    continual.source/2026-11-24.parquet              # ... or a single shard

What differs from partitions read into memory (``driver._Run``), and why:

- Splits, holdouts and replay are by **whole shards** (a row-level split would need every row
  in memory or a filter in the loader): the bootstrap splits its shards into the fixed
  train/validation/test sets by ``split_shards`` (data.split_seed); each later partition holds
  out the shards whose stable hash falls below ``holdout_fraction`` (at least one when it has
  two or more shards, none when it has one); replay takes accepted training shards in a seeded
  order until the replayed rows reach the wanted count.
- Validation is ``validate_shards`` (mergeable summaries, memory independent of the data);
  the first run's partitions are validated together and must pass (their data defines the
  schema). The drift reference is the stored merged summary of every accepted shard
  (:mod:`.reference`), not the shards: the bootstrap stores its shards' summary, each run reads
  it (no accepted shard is read) and stores it merged with the summaries of the training shards
  it accepts, under a new key the watermark's compare-and-swap commits with the partitions. A
  state without one (written by an earlier release), or ``continual.rebuild_reference``,
  reads the accepted shards once to rebuild it.
- A replayed shard's class counts (only used to list classes missing from the test split) are
  its partition's, scaled by its share of the rows.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pyarrow as pa

from trainpipe.continual.driver import FULL_RETRAIN, WARM_START, Outcome, _Run
from trainpipe.continual.partitions import Partition
from trainpipe.continual.reference import load_reference, merged, store_reference
from trainpipe.continual.replay import replay_count
from trainpipe.continual.watermark import Watermark
from trainpipe.data.sharded import SHARDS_FORMAT, record_summary, sharded_record, table_plan
from trainpipe.data.shards import (
    SHARD_SUFFIX,
    ShardInfo,
    ShardSet,
    describe_shards,
    discover_shards,
    shard_position,
    split_shards,
)
from trainpipe.data.validation import Schema, schema_from_yaml, schema_to_yaml
from trainpipe.data.validation.streaming import ShardSummary, reference_summary, validate_shards
from trainpipe.errors import DataError


def holdout_shards(
    shards: list[ShardInfo], fraction: float, seed: int
) -> tuple[list[ShardInfo], list[ShardInfo]]:
    """(train, holdout) of one partition's shards by a stable hash of each name: the same
    shards are held out whenever the partition is read, and at least one shard trains."""
    ordered = sorted(shards, key=lambda s: shard_position(s.name, seed))
    held = [s for s in ordered if shard_position(s.name, seed) < fraction]
    if not held and len(ordered) > 1:
        held = ordered[:1]
    held = held[: len(ordered) - 1]
    return [s for s in shards if s not in held], held


def replay_shards(pool: list[dict], rows: int, seed: int) -> list[dict]:
    """Pool entries (``{"shard", "counts"}``) in a seeded order until ``rows`` rows are
    replayed (whole shards: the last one may go over)."""
    picked, total = [], 0
    for i in np.random.default_rng(seed).permutation(len(pool)):
        if total >= rows:
            break
        picked.append(pool[i])
        total += pool[i]["shard"]["rows"]
    return picked


def _entries(shards: list[ShardInfo], counts: list[int]) -> list[dict]:
    """Accepted training shards with each one's share of its partition's class counts."""
    rows = max(1, sum(s.rows for s in shards))
    return [{"shard": asdict(s), "counts": [c * s.rows / rows for c in counts]} for s in shards]


def _infos(entries: list[dict]) -> list[ShardInfo]:
    return [
        ShardInfo(e["name"], e["rows"], tuple(e["row_group_rows"]), e["sha256"]) for e in entries
    ]


class ShardedRun(_Run):
    """``_Run`` with partitions of shards; see the module docstring."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.cache = self.cfg.data.streaming.cache()
        self.workers = max(1, self.cfg.data.streaming.loader_workers)
        self.next_reference: ShardSummary | None = None
        """The drift reference to store for the next watermark (None: it stays as it is)."""

    def _shards(self, part: Partition) -> ShardSet:
        """The partition's shards, named by their keys under the source (DataError when one
        cannot be read). A folder is discovered as any shard prefix is: its ``shards.json``,
        when present, lists the shards and their sha256, checked as they are read."""
        if part.keys == (part.name,):
            if not part.name.endswith(SHARD_SUFFIX):
                raise DataError(f"{self.source.uri_for(part.name)} is not a *{SHARD_SUFFIX} shard")
            return describe_shards(self.source, [(part.name, "")], self.cache)
        found = discover_shards(
            self.source.uri_for(part.name),
            endpoint_url=self.cfg.storage.endpoint_url,
            cache=self.cache,
        )
        shards = [replace(s, name=f"{part.name}/{s.name}") for s in found.shards]
        return ShardSet(self.source, shards, found.schema, self.cache)

    def _described(self, arrived: list[Partition], outcome: Outcome) -> dict[str, ShardSet]:
        sets = {}
        for part in arrived:
            try:
                sets[part.name] = self._shards(part)
            except DataError as exc:
                outcome.verdicts[part.name] = f"rejected: unreadable: {exc}"
        return sets

    def _bootstrap(self, arrived: list[Partition], outcome: Outcome):
        """First run: the readable partitions' shards are split into the fixed sets (by
        ``split_shards``), validated together, and define the schema and the encoding."""
        sets = self._described(arrived, outcome)
        if not sets:
            raise DataError(
                "data error: no partition of the first run is readable, so there is nothing to "
                "bootstrap from; fix the data under continual.source"
            )
        first = next(iter(sets.values()))
        shards = [s for each in sets.values() for s in each.shards]
        shard_set = ShardSet(self.source, shards, first.schema, self.cache)
        data = self.cfg.data
        splits = split_shards(
            shard_set.shards,
            validation_fraction=data.validation_fraction,
            test_fraction=data.test_fraction,
            seed=data.split_seed,
        )
        report, summaries = validate_shards(
            shard_set, splits, label_column=data.label_column, workers=self.workers
        )
        if report.blocking:
            raise DataError(
                f"data error: the first run's partitions cannot bootstrap the model: "
                f"{report.blocking[0].message}; fix or remove that data under continual.source"
            )
        for name in sets:
            outcome.verdicts[name] = "passed"
        self.next_reference = merged(summaries.values())
        outcome.mode = "bootstrap"
        classification = data.model_copy(update={"task": "classification"})
        plan = table_plan(shard_set, splits["train"], classification)
        labels = sorted({v for s in summaries.values() for v in s.labels})
        counts = [int(summaries["train"].labels.get(v, 0)) for v in labels]
        record = sharded_record(shard_set, splits, classification, labels, counts, plan)
        meta = {
            "format": SHARDS_FORMAT,
            "label_column": data.label_column,
            "label_values": labels,
            "record": record,
        }
        state = self.key("state", self.run_id)
        self.store.put_bytes(f"{state}/schema.yaml", schema_to_yaml(report.data_schema).encode())
        self.store.put_json(f"{state}/meta.json", meta)
        new_train = {next(iter(sets)): _entries(splits["train"], counts)}
        return list(sets), state, new_train, {}, meta

    def _admit(self, arrived: list[Partition], watermark: Watermark, meta: dict, outcome):
        """Validate each arrived partition (schema, labels, drift against the stored summary
        of the accepted shards); split the accepted ones into training and held-out shards."""
        schema = schema_from_yaml(
            self.store.get_bytes(f"{watermark.state}/schema.yaml").decode(), source="schema"
        )
        reference, rebuilt = self._drift_reference(meta, watermark, schema)
        cc = self.cfg.continual
        accepted, new_train, holdout = [], {}, {}
        fresh: list[ShardSummary] = []
        for name, part_set in self._described(arrived, outcome).items():
            train, held = holdout_shards(part_set.shards, cc.holdout_fraction, cc.seed)
            splits = {"train": train, "holdout": held} if held else {"train": train}
            try:
                report, summaries = validate_shards(
                    part_set,
                    splits,
                    schema,
                    label_column=meta["label_column"],
                    reference=reference,
                    workers=self.workers,
                )
            except DataError as exc:  # a row group that cannot be read
                outcome.verdicts[name] = f"rejected: unreadable: {exc}"
                continue
            scores = [r.metrics.get("ks", r.metrics.get("js", 0.0)) for r in report.drift]
            outcome.drift[name] = round(max(scores, default=0.0), 4)
            unknown = sorted(
                {v for s in summaries.values() for v in s.labels} - set(meta["label_values"]),
                key=str,
            )
            if report.blocking:
                outcome.verdicts[name] = f"rejected: {report.blocking[0].message}"
                continue
            if unknown:
                outcome.verdicts[name] = (
                    f"rejected: data error: {name} has labels {unknown[:5]} the model does not know"
                )
                continue
            outcome.verdicts[name] = "passed"
            accepted.append(name)
            counts = [int(summaries["train"].labels.get(v, 0)) for v in meta["label_values"]]
            new_train[name] = _entries(train, counts)
            if held:
                holdout[name] = held
            fresh.append(summaries["train"])
        if fresh or rebuilt:
            # After the loop: every partition of a run is compared with the same reference.
            self.next_reference = merged([reference, *fresh])
        return accepted, new_train, holdout

    def _drift_reference(
        self, meta: dict, watermark: Watermark, schema: Schema
    ) -> tuple[ShardSummary, bool]:
        """The stored summary of every accepted shard, and whether it was rebuilt instead by
        reading them (a state from before it was stored, or ``continual.rebuild_reference``)."""
        if watermark.reference and not self.cfg.continual.rebuild_reference:
            return load_reference(self.store, self.model, watermark), False
        shards = self._reference_shards(meta, watermark)
        return reference_summary(shards, schema, self.workers), True

    def _reference_state(self, watermark: Watermark) -> dict:
        if self.next_reference is None:
            return {
                "reference": watermark.reference,
                "reference_sha256": watermark.reference_sha256,
            }
        key, digest = store_reference(
            self.store, self.key("reference", f"{self.run_id}.json"), self.next_reference
        )
        return {"reference": key, "reference_sha256": digest}

    def _reference_shards(self, meta: dict, watermark: Watermark) -> ShardSet:
        """Every accepted shard: the bootstrap's splits and the later training shards."""
        record = meta["record"]
        shards = [s for members in record["shards"].values() for s in _infos(members)]
        named = {s.name for s in shards}
        for entry in self._pool(watermark):
            info = _infos([entry["shard"]])[0]
            if info.name not in named:
                shards.append(info)
                named.add(info.name)
        return ShardSet(self.source, shards, pa.schema([]), self.cache)

    def _store_accepted(self, name: str, entries: list[dict]) -> str:
        key = self.key("accepted", self.run_id, f"{name}.json")
        self.store.put_json(key, {"shards": entries})
        return key

    def _pool(self, watermark: Watermark) -> list[dict]:
        keys = sorted(set(watermark.accepted.values()))
        return [e for key in keys for e in self.store.get_json(key)["shards"]]

    def _write_data(self, watermark, state, meta, new_train, holdout, outcome) -> str:
        """The run's sharded ``dataset.json``: training shards by the mode, the fixed
        validation shards, the fixed test shards followed by the held-out ones."""
        cc = self.cfg.continual
        record = meta["record"]
        fresh = [e for entries in new_train.values() for e in entries]
        fresh_rows = sum(e["shard"]["rows"] for e in fresh)
        train = fresh
        if outcome.mode == WARM_START:
            pool = self._pool(watermark)
            pool_rows = sum(e["shard"]["rows"] for e in pool)
            wanted = replay_count(fresh_rows, pool_rows, cc.replay_fraction)
            replayed = replay_shards(pool, wanted, cc.seed)
            train = fresh + replayed
            rows = sum(e["shard"]["rows"] for e in replayed)
            outcome.reasons.append(
                f"warm start on {fresh_rows} new + {rows} replayed examples "
                f"({len(replayed)} whole shards for {wanted} wanted)"
            )
        elif outcome.mode == FULL_RETRAIN and watermark.accepted:
            train = self._pool(watermark) + fresh
            rows = sum(e["shard"]["rows"] for e in train)
            outcome.reasons.append(f"full retrain on {rows} accepted examples")
        fixed_test = record["shards"]["test"]
        shards = {
            "train": [e["shard"] for e in train],
            "validation": record["shards"]["validation"],
            "test": fixed_test + [asdict(s) for held in holdout.values() for s in held],
        }
        counts = np.sum([e["counts"] for e in train], axis=0).round().astype(int).tolist()
        info = {
            **record,
            "shards": shards,
            "split_sizes": {k: sum(s["rows"] for s in v) for k, v in shards.items()},
            "class_counts_train": counts,
            "warnings": [],
            "partitions": outcome.verdicts,
            "drift": outcome.drift,
            "watermark_sequence": self.base_sequence,
            "fixed_test_examples": sum(s["rows"] for s in fixed_test),
        }
        writer = self.ctx.writer("validate_data", inputs={"data": self.source.uri})
        writer.put_bytes("schema.yaml", self.store.get_bytes(f"{state}/schema.yaml"))
        writer.put_json("dataset.json", info)
        return writer.commit(summary=record_summary(info))
