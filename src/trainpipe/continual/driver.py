"""The continual pipeline's own steps: plan a run (lease, partitions, validation, the data set and
the training mode), and finish it (advance the watermark, record the outcome). Training,
evaluation, export, the gate (with the forgetting bound) and register are the batch pipeline's
stages; ``pipelines/continual.py`` wires all of it into one KFP DAG:

    plan = plan_run(cfg, run_id, clock=...)          # component continual_plan
    ...  pretrain + finetune, or finetune(warm_start_uri=champion), evaluate, export, gate, register
    outcome = finish_run(cfg, run_id, plan.plan_uri, ...)   # component continual_finish
    release_run(cfg, run_id)                         # the DAG's exit handler, success or failure

Planning, under the model's lease (``continual/<model>/lease.json``, holder = the run id):

1. New partitions = those under ``continual.source`` the watermark has not consumed. None: the
   plan is ``skip``, the lease is released at once (with the message) and nothing is written.
   A live lease of another run: ``skip`` too, writing nothing at all.
2. The first run (no watermark state) bootstraps: it infers the accepted schema from the data,
   splits off the fixed validation and test sets, and trains the full pipeline (pretraining
   included). Later runs validate each new partition against the accepted schema with the
   accepted data as drift reference; a partition with blocking anomalies is rejected (recorded
   in the watermark, never retried) and the rest go on.
3. The data set (the layout validate_data writes) trains on the new data mixed with a replay
   sample of earlier accepted data (``warm_start``: fine-tuning initialized from the champion's
   registry version) or, with ``policy: full_retrain_on_drift`` and a drift score above
   ``drift_threshold`` (or without a champion), on all accepted data from scratch
   (``full_retrain``). Its test split is the fixed test set (``fixed_test_examples`` first) plus
   a held-out part of the new data, so the gate's forgetting bound compares like with like.
4. Nothing to train (every partition rejected, or an earlier run already registered a version
   from exactly these partitions and died before its watermark write): ``advance``.

Finishing advances the watermark with compare-and-swap, only after every step before it
succeeded; any failure leaves the watermark (and the champion, unless register already ran)
unchanged, so the next run retries the same data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from trainpipe.config import Config
from trainpipe.continual.lease import (
    LeaseHeld,
    LeaseLost,
    acquire_lease,
    held_lease,
    release_lease,
    renew_lease,
)
from trainpipe.continual.partitions import Partition, list_partitions, read_partition
from trainpipe.continual.partitions import new_partitions as unconsumed
from trainpipe.continual.replay import concat, mix, replay_count, replay_sample
from trainpipe.continual.watermark import Watermark, advance_watermark, read_watermark
from trainpipe.data.datasets import (
    Dataset,
    RawSource,
    Split,
    encode,
    encode_rows,
    split_from_npz,
    table_to_arrays,
)
from trainpipe.data.preprocess import PreprocessSpec
from trainpipe.data.stored import write_validated
from trainpipe.data.validation import (
    DataReadError,
    infer_schema,
    schema_from_yaml,
    schema_to_yaml,
    validate_dataset,
)
from trainpipe.errors import ConfigError, DataError, TrainpipeError
from trainpipe.registry import Registry
from trainpipe.stages.context import StageContext
from trainpipe.storage import Store, open_store

PROMOTED = "promoted"
NOT_PROMOTED = "not promoted"
REJECTED = "rejected"
NOTHING_TO_DO = "nothing to do"
LEASE_HELD = "lease held"
ALREADY_REGISTERED = "already registered"
# What the plan tells the DAG to do next (the continual_plan component's output).
WARM_START = "warm_start"
FULL_RETRAIN = "full_retrain"
ADVANCE = "advance"
SKIP = "skip"
# Registry versions checked for an earlier run over the same data (the lease makes the newest
# one the candidate; a few more tolerate versions registered by hand meanwhile).
RECENT_VERSIONS = 3
PLAN_STAGE = "continual_plan"
OUTCOME_STAGE = "continual"


@dataclass
class Outcome:
    run_id: str
    status: str
    message: str
    partitions: list[str] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)
    """Partition -> "passed" or "rejected: <first blocking anomaly>"."""
    drift: dict[str, float] = field(default_factory=dict)
    mode: str = ""
    """bootstrap, warm_start or full_retrain; empty when nothing was trained."""
    champion_before: float | None = None
    """Champion's accuracy on the fixed test set before the run (None: no champion)."""
    champion_after: float | None = None
    challenger: float | None = None
    """The trained model's accuracy on the fixed test set (None: nothing was trained)."""
    version: str | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    action: str
    """warm_start, full_retrain, advance or skip (see the module docstring)."""
    message: str
    data_uri: str = ""
    warm_start_uri: str = ""
    """The champion's registry version (warm_start only)."""
    plan_uri: str = ""
    """The artifact set holding plan.json, for finish_run ('' for skip)."""


def resolve_continual(cfg: Config) -> Config:
    """``cfg`` with absolute local storage; ConfigError without ``continual.source``."""
    from trainpipe.local_run import resolve_storage

    cfg = resolve_storage(cfg)
    if cfg.continual.source is None:
        raise ConfigError(
            "config error: continual.source is not set; set it to the prefix partitions arrive "
            "under (e.g. --set continual.source=s3://bucket/incoming)"
        )
    return cfg


def plan_run(cfg: Config, run_id: str, *, clock: Callable[[], float] = time.time) -> Plan:
    """Take the lease (holder ``run_id``) and decide what this run does; see the module doc."""
    cfg = resolve_continual(cfg)
    store = open_store(cfg.storage.uri, endpoint_url=cfg.storage.endpoint_url)
    try:
        lease = acquire_lease(
            store,
            cfg.registry.model_name,
            holder=run_id,
            ttl_s=cfg.continual.lease_ttl_s,
            clock=clock,
        )
    except LeaseHeld as exc:
        return Plan(SKIP, str(exc))
    if cfg.data.format == "shards":
        from trainpipe.continual.sharded import ShardedRun  # imports this module

        run: _Run = ShardedRun(cfg, store, run_id, lease, clock)
    else:
        run = _Run(cfg, store, run_id, lease, clock)
    try:
        plan = run.plan()
    except BaseException:
        release_lease(store, run.lease, clock=clock)
        raise
    if plan.action == SKIP:
        release_lease(store, run.lease, clock=clock, note={"outcome": plan.message})
    return plan


def finish_run(
    cfg: Config,
    run_id: str,
    plan_uri: str,
    *,
    evaluate_uri: str = "",
    gate_uri: str = "",
    register_uri: str = "",
    clock: Callable[[], float] = time.time,
) -> Outcome:
    """Advance the watermark as planned (only while this run still holds the lease) and store
    ``runs/<run_id>/continual/outcome.json``."""
    cfg = resolve_continual(cfg)
    store = open_store(cfg.storage.uri, endpoint_url=cfg.storage.endpoint_url)
    model = cfg.registry.model_name
    lease = held_lease(store, model, run_id)
    if lease is None:
        raise LeaseLost(
            f"continual error: run {run_id} no longer holds the lease of {model} (it expired and "
            "another run took it over); stopping without advancing the watermark"
        )
    renew_lease(store, lease, ttl_s=cfg.continual.lease_ttl_s, clock=clock)  # or LeaseLost
    ctx = StageContext(cfg, run_id, store)
    planned = ctx.open(plan_uri).get_json("plan.json")
    outcome = Outcome(**planned["outcome"])
    if evaluate_uri:
        _scores(ctx, outcome, evaluate_uri)
    if gate_uri:
        decision = ctx.open(gate_uri).get_json("decision.json")
        outcome.reasons.append(f"gate {decision['decision']}: {decision['reason']}")
        forgetting = [r["detail"] for r in decision["rules"] if r["rule"] == "forgetting"]
        outcome.reasons += [line for line in forgetting if line not in decision["reason"]]
        outcome.status = NOT_PROMOTED
    if register_uri:
        outcome.status = PROMOTED
        outcome.version = ctx.open(register_uri).summary["version"]
        outcome.champion_after = outcome.challenger
    previous = Watermark(**planned["watermark"])
    advanced = advance_watermark(
        store, model, previous, Watermark(**planned["next"], run_id=run_id)
    )
    if previous.reference and previous.reference != advanced.reference:
        store.delete(previous.reference)  # superseded: no watermark points at it any more
    outcome.message = _headline(outcome)
    writer = ctx.writer(OUTCOME_STAGE, inputs={"plan": plan_uri})
    writer.put_json("outcome.json", outcome.to_dict())
    writer.commit(summary={"status": outcome.status, "version": outcome.version})
    return outcome


def release_run(cfg: Config, run_id: str, *, clock: Callable[[], float] = time.time) -> bool:
    """Release the lease if ``run_id`` still holds it (the DAG's exit handler, run after
    success and failure alike); another run's lease is left alone. True when released."""
    cfg = resolve_continual(cfg)
    store = open_store(cfg.storage.uri, endpoint_url=cfg.storage.endpoint_url)
    lease = held_lease(store, cfg.registry.model_name, run_id)
    if lease is not None:
        release_lease(store, lease, clock=clock)
    return lease is not None


def _scores(ctx: StageContext, outcome: Outcome, evaluate_uri: str) -> None:
    """The challenger's and the champion's accuracy on the fixed test set, from evaluate."""
    evaluation = ctx.open(evaluate_uri)
    fixed = evaluation.get_json("metrics.json").get("fixed_test", {})
    champion = evaluation.get_json("comparison.json").get("fixed_test", {})
    outcome.challenger = fixed.get("accuracy")
    outcome.champion_before = champion.get("champion_accuracy")
    outcome.champion_after = outcome.champion_before


class _Run:
    def __init__(self, cfg: Config, store: Store, run_id: str, lease, clock):
        self.cfg = cfg
        self.store = store
        self.run_id = run_id
        self.lease = lease
        self.clock = clock
        self.model = cfg.registry.model_name
        self.source = open_store(cfg.continual.source, endpoint_url=cfg.storage.endpoint_url)
        self.registry = Registry(store, self.model)
        self.ctx = StageContext(cfg, run_id, store)

    def key(self, *parts: str) -> str:
        return "/".join(["continual", self.model, *parts])

    # ---- the plan ---------------------------------------------------------------------------

    def plan(self) -> Plan:
        watermark = read_watermark(self.store, self.model)
        self.base_sequence = watermark.sequence
        arrived = unconsumed(list_partitions(self.source), set(watermark.consumed))
        if not arrived:
            since = f"run {watermark.run_id}" if watermark.run_id else "the start"
            return Plan(
                SKIP,
                f"nothing to do: no new partitions under {self.source.uri} since {since} "
                f"(watermark sequence {watermark.sequence}); nothing was changed",
            )
        outcome = Outcome(self.run_id, "", "", partitions=[p.name for p in arrived])
        champion = self.registry.champion()
        if not watermark.state:
            accepted, state, new_train, holdout, meta = self._bootstrap(arrived, outcome)
        else:
            state = watermark.state
            meta = self.store.get_json(f"{state}/meta.json")
            accepted, new_train, holdout = self._admit(arrived, watermark, meta, outcome)

        accepted_keys = {}
        for name, split in new_train.items():
            accepted_keys[name] = self._store_accepted(name, split)
        if outcome.mode == "bootstrap":
            # One pool for all bootstrap partitions: each of them points at it.
            accepted_keys = {name: next(iter(accepted_keys.values())) for name in accepted}
        action, data_uri, warm_start_uri = ADVANCE, "", ""
        registered = self._registered_before(watermark, outcome) if accepted else None
        if registered is not None:
            # A run over exactly this data registered a version and died before advancing
            # the watermark: record the data as consumed instead of training again.
            outcome.status = ALREADY_REGISTERED
            outcome.version = registered
            outcome.reasons.append(
                f"version {registered} was already registered from these partitions by an "
                "earlier run that stopped before advancing the watermark; not training again"
            )
        elif accepted:
            action = self._choose_mode(outcome, champion)
            data_uri = self._write_data(watermark, state, meta, new_train, holdout, outcome)
            if action == WARM_START:
                warm_start_uri = self.registry.version_uri(champion.version)
        else:
            outcome.status = REJECTED
            outcome.reasons.append("every new partition was rejected; the champion is unchanged")

        rejected = {n: v.removeprefix("rejected: ") for n, v in outcome.verdicts.items()}
        rejected = {n: why for n, why in rejected.items() if outcome.verdicts[n] != "passed"}
        following = {
            "consumed": sorted({*watermark.consumed, *outcome.partitions}),
            "accepted": {**watermark.accepted, **accepted_keys},
            "rejected": {**watermark.rejected, **rejected},
            "state": state,
            **self._reference_state(watermark),
        }
        outcome.message = _headline(outcome)
        self.lease = renew_lease(
            self.store, self.lease, ttl_s=self.cfg.continual.lease_ttl_s, clock=self.clock
        )
        writer = self.ctx.writer(PLAN_STAGE, inputs={"source": self.source.uri})
        writer.put_json(
            "plan.json",
            {
                "action": action,
                "data_uri": data_uri,
                "warm_start_uri": warm_start_uri,
                "watermark": asdict(watermark),
                "next": following,
                "outcome": outcome.to_dict(),
            },
        )
        plan_uri = writer.commit(summary={"action": action, "mode": outcome.mode})
        return Plan(action, outcome.message, data_uri, warm_start_uri, plan_uri)

    def _reference_state(self, watermark: Watermark) -> dict:
        """The next watermark's drift reference fields: none for partitions read into memory
        (their accepted partitions are the reference, read each run)."""
        return {}

    def _store_accepted(self, name: str, split: Split) -> str:
        """Store a partition's training examples (the replay pool); returns the key."""
        key = self.key("accepted", self.run_id, f"{name}.npz")
        self.store.put_bytes(key, _npz(split))
        return key

    def _choose_mode(self, outcome: Outcome, champion) -> str:
        cc = self.cfg.continual
        if outcome.mode == "bootstrap":
            return FULL_RETRAIN
        drift = max(outcome.drift.values(), default=0.0)
        drifted = cc.policy == "full_retrain_on_drift" and drift > cc.drift_threshold
        outcome.mode = FULL_RETRAIN if drifted or champion is None else WARM_START
        return outcome.mode

    def _registered_before(self, watermark: Watermark, outcome: Outcome) -> str | None:
        """The version an earlier run registered from exactly these partitions on top of
        exactly this watermark, if any."""
        for version in reversed(self.registry.versions()[-RECENT_VERSIONS:]):
            version_set = self.registry.open_version(version)
            if "lineage.json" not in version_set.names():
                continue
            data_uri = version_set.get_json("lineage.json").get("data", "")
            if not data_uri:
                continue
            try:
                info = self.ctx.open(data_uri).get_json("dataset.json")
            except TrainpipeError:
                continue  # not a continual version, or its run folder is gone
            if (
                info.get("watermark_sequence") == watermark.sequence
                and sorted(info.get("partitions", {})) == sorted(outcome.partitions)
                and info.get("source") == self.source.uri
            ):
                return version
        return None

    # ---- data -------------------------------------------------------------------------------

    def _arrays(self, table: pa.Table, name: str, meta: dict) -> Split:
        """A partition's examples encoded as the bootstrap data was: with its preprocessing
        spec for tables (categories, missing values), as numbers for arrays."""
        if meta.get("preprocess"):
            spec = PreprocessSpec.from_dict(meta["preprocess"])
            x, labels = encode_rows(table, spec, meta["label_column"], name)
            shape = [len(spec.columns)]
        else:
            x, labels, shape = table_to_arrays(
                table, meta["label_column"], meta["features"], name, self.cfg.data
            )
        if list(shape) != meta["feature_shape"]:
            raise DataError(
                f"data error: {name} has feature shape {shape}, not {meta['feature_shape']}"
            )
        values = np.asarray(meta["label_values"])
        unknown = sorted(set(labels.tolist()) - set(values.tolist()))
        if unknown:
            raise DataError(f"data error: {name} has labels {unknown[:5]} the model does not know")
        return Split(x.astype(np.float32), np.searchsorted(values, labels).astype(np.int64))

    def _read_validated(
        self, part: Partition, outcome: Outcome, schema=None, reference=None, *, label_column: str
    ):
        """The table of a partition that reads and passes validation; None after recording
        why it was rejected. Drift is recorded when a reference is given."""
        try:
            table = read_partition(self.source, part)
        except DataReadError as exc:
            outcome.verdicts[part.name] = f"rejected: unreadable: {exc}"
            return None
        report = validate_dataset(
            {part.name: table}, schema, reference=reference, label_column=label_column
        )
        if reference is not None:
            scores = [r.metrics.get("ks", r.metrics.get("js", 0.0)) for r in report.drift]
            outcome.drift[part.name] = round(max(scores, default=0.0), 4)
        if report.blocking:
            outcome.verdicts[part.name] = f"rejected: {report.blocking[0].message}"
            return None
        return table

    def _bootstrap(self, arrived: list[Partition], outcome: Outcome):
        """First run: the arrived partitions become the accepted data and the fixed splits."""
        tables = {}
        for part in arrived:
            table = self._read_validated(part, outcome, label_column=self.cfg.data.label_column)
            if table is None:
                continue
            tables[part.name] = table
            outcome.verdicts[part.name] = "passed"
        outcome.mode = "bootstrap"
        if not tables:
            raise DataError(
                "data error: no partition of the first run is valid, so there is nothing to "
                "bootstrap from; fix the data under continual.source"
            )
        combined = pa.concat_tables(tables.values(), promote_options="default")
        label = self.cfg.data.label_column
        schema = infer_schema(combined, label_column=label)
        features = self.cfg.data.feature_columns or [c for c in combined.column_names if c != label]
        # The same encoding and split as validate_data: tables get their preprocessing fitted on
        # the bootstrap training split, kept for every later partition (unseen categories go to
        # the reserved bucket, as at serving time).
        classification = self.cfg.data.model_copy(update={"task": "classification"})
        encoded = encode(RawSource({"all": combined}, self.source.uri, label), classification)
        values = np.unique(combined.column(label).combine_chunks().to_numpy(zero_copy_only=False))
        meta = {
            "label_column": label,
            "features": features,
            "feature_shape": list(encoded.feature_shape),
            "label_values": values.tolist(),
            "label_names": encoded.label_names,
            "feature_names": encoded.feature_names,
            "preprocess": encoded.preprocess.to_dict() if encoded.preprocess else None,
        }
        state = self.key("state", self.run_id)
        self.store.put_bytes(f"{state}/schema.yaml", schema_to_yaml(schema).encode())
        self.store.put_json(f"{state}/meta.json", meta)
        self.store.put_bytes(f"{state}/validation.npz", _npz(encoded.validation))
        self.store.put_bytes(f"{state}/test.npz", _npz(encoded.test))
        # One training pool for all bootstrap partitions, named after the first.
        new_train = {next(iter(tables)): encoded.train}
        return list(tables), state, new_train, {}, meta

    def _admit(self, arrived: list[Partition], watermark: Watermark, meta: dict, outcome: Outcome):
        """Validate each arrived partition; split the accepted ones into train and holdout."""
        from sklearn.model_selection import train_test_split

        schema = schema_from_yaml(
            self.store.get_bytes(f"{watermark.state}/schema.yaml").decode(), source="schema"
        )
        reference = self._reference(watermark)
        cc = self.cfg.continual
        accepted, new_train, holdout = [], {}, {}
        for part in arrived:
            table = self._read_validated(
                part, outcome, schema, reference, label_column=meta["label_column"]
            )
            if table is None:
                continue
            try:
                split = self._arrays(table, part.name, meta)
            except DataError as exc:
                outcome.verdicts[part.name] = f"rejected: {exc}"
                continue
            outcome.verdicts[part.name] = "passed"
            accepted.append(part.name)
            counts = np.bincount(split.y)
            stratify = split.y if counts[counts > 0].min() >= 2 else None
            train_idx, test_idx = train_test_split(
                np.arange(len(split)),
                test_size=cc.holdout_fraction,
                random_state=cc.seed,
                stratify=stratify,
            )
            new_train[part.name] = split.subset(np.sort(train_idx))
            holdout[part.name] = split.subset(np.sort(test_idx))
        return accepted, new_train, holdout

    def _reference(self, watermark: Watermark) -> pa.Table | None:
        present = {p.name: p for p in list_partitions(self.source)}
        tables = [
            read_partition(self.source, present[n]) for n in watermark.accepted if n in present
        ]
        return pa.concat_tables(tables, promote_options="default") if tables else None

    def _pool(self, watermark: Watermark) -> Split:
        keys = sorted(set(watermark.accepted.values()))
        return concat(*(split_from_npz(self.store.get_bytes(k)) for k in keys))

    def _write_data(self, watermark, state, meta, new_train, holdout, outcome) -> str:
        """The run's data artifact set in the layout validate_data writes: training examples
        by the mode, the fixed validation set, the fixed test set followed by the holdouts."""
        cc = self.cfg.continual
        fresh = concat(*new_train.values())
        if outcome.mode == WARM_START:
            pool = self._pool(watermark)
            count = replay_count(len(fresh), len(pool), cc.replay_fraction)
            train = mix(fresh, replay_sample(pool, count, seed=cc.seed))
            outcome.reasons.append(f"warm start on {len(fresh)} new + {count} replayed examples")
        elif outcome.mode == FULL_RETRAIN and watermark.accepted:
            train = concat(self._pool(watermark), fresh)
            outcome.reasons.append(f"full retrain on {len(train)} accepted examples")
        else:
            train = fresh
        fixed_test = split_from_npz(self.store.get_bytes(f"{state}/test.npz"))
        dataset = Dataset(
            train,
            split_from_npz(self.store.get_bytes(f"{state}/validation.npz")),
            concat(fixed_test, *holdout.values()) if holdout else fixed_test,
            label_names=meta["label_names"],
            feature_shape=meta["feature_shape"],
            source=self.source.uri,
            feature_names=meta["feature_names"],
            preprocess=PreprocessSpec.from_dict(meta["preprocess"])
            if meta.get("preprocess")
            else None,
        )
        writer = self.ctx.writer("validate_data", inputs={"data": self.source.uri})
        writer.put_bytes("schema.yaml", self.store.get_bytes(f"{state}/schema.yaml"))
        info = write_validated(
            writer,
            dataset,
            warnings=[],
            partitions=outcome.verdicts,
            drift=outcome.drift,
            watermark_sequence=self.base_sequence,
            fixed_test_examples=len(fixed_test),
        )
        return writer.commit(
            summary={
                "examples": sum(info["split_sizes"].values()),
                **info["split_sizes"],
                "verdict": "passed",
            }
        )


def _npz(split: Split) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, x=split.x, y=split.y)
    return buffer.getvalue()


def _headline(outcome: Outcome) -> str:
    parts = ", ".join(f"{n} {v.split(':')[0]}" for n, v in outcome.verdicts.items())
    version = f"; champion is now version {outcome.version}" if outcome.version else ""
    return f"run {outcome.run_id}: {outcome.status} ({parts}){version}"
