"""One scheduled continual run: take the partitions that arrived since the watermark, validate
them, train, evaluate, gate, register, and advance the watermark — only if all of that finished.

    outcome = run_continual(load_config(None, ["continual.source=s3://bucket/incoming"]))
    print(outcome.message)

Steps, under the model's lease (``continual/<model>/lease.json``):

1. New partitions = those under ``continual.source`` the watermark has not consumed. None: the
   run ends as "nothing to do" and writes nothing.
2. The first run (no watermark state) bootstraps: it infers the accepted schema from the data,
   splits off the fixed validation and test sets, and trains the full pipeline (pretraining
   included). Later runs validate each new partition against the accepted schema with the
   accepted data as drift reference; a partition with blocking anomalies is rejected (recorded
   in the watermark, never retried) and the rest go on.
3. Training warm-starts from the champion's ``model.pt`` on the new data mixed with a replay
   sample of earlier accepted data; with ``policy: full_retrain_on_drift`` a drift score above
   ``drift_threshold`` retrains from scratch (pretrain + finetune) on all accepted data instead.
4. evaluate / export_onnx / gate / register are the pipeline's own stages, run in this process;
   the test set is the fixed one plus a held-out part of the new data. Before ``register`` the
   driver adds the forgetting bound: accuracy on the fixed test set may not fall more than
   ``max_forgetting`` below the champion's. (Deploy is left to the serving rollout.)
5. The watermark advances with compare-and-swap. Any exception before that leaves it (and the
   champion, unless register already ran) unchanged, so the next run retries the same data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from trainpipe.config import Config
from trainpipe.continual.lease import LeaseHeld, acquire_lease, release_lease, renew_lease
from trainpipe.continual.partitions import Partition, list_partitions, read_partition
from trainpipe.continual.partitions import new_partitions as unconsumed
from trainpipe.continual.replay import concat, mix, replay_count, replay_sample
from trainpipe.continual.watermark import Watermark, advance_watermark, read_watermark
from trainpipe.data.datasets import (
    Dataset,
    Split,
    dataset_to_npz,
    split_from_npz,
    split_indices,
    table_to_arrays,
)
from trainpipe.data.validation import (
    DataReadError,
    infer_schema,
    schema_from_yaml,
    schema_to_yaml,
    validate_dataset,
)
from trainpipe.errors import ConfigError, DataError, TrainpipeError
from trainpipe.evaluate.predict import predict_logits
from trainpipe.local_run import new_run_id, resolve_storage
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.checkpoint import classifier_payload, from_bytes, load_classifier, to_bytes
from trainpipe.models.config import ModelConfig
from trainpipe.registry import Registry
from trainpipe.stages.context import StageContext
from trainpipe.storage import Store, open_store

PROMOTED = "promoted"
NOT_PROMOTED = "not promoted"
REJECTED = "rejected"
NOTHING_TO_DO = "nothing to do"
LEASE_HELD = "lease held"
ALREADY_REGISTERED = "already registered"
# Registry versions checked for an earlier run over the same data (the lease makes the newest
# one the candidate; a few more tolerate versions registered by hand meanwhile).
RECENT_VERSIONS = 3


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
    version: str | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def run_continual(
    cfg: Config, *, run_id: str | None = None, clock: Callable[[], float] = time.time
) -> Outcome:
    cfg = resolve_storage(cfg)
    if cfg.continual.source is None:
        raise ConfigError(
            "config error: continual.source is not set; set it to the prefix partitions arrive "
            "under (e.g. --set continual.source=s3://bucket/incoming)"
        )
    store = open_store(cfg.storage.uri, endpoint_url=cfg.storage.endpoint_url)
    model = cfg.registry.model_name
    run_id = run_id or new_run_id()
    try:
        lease = acquire_lease(
            store, model, holder=run_id, ttl_s=cfg.continual.lease_ttl_s, clock=clock
        )
    except LeaseHeld as exc:
        return Outcome(run_id, LEASE_HELD, str(exc))
    run = _Run(cfg, store, run_id, lease, clock)
    try:
        return run.execute()
    finally:
        release_lease(store, run.lease, clock=clock)


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
        self.config_json = cfg.to_json()

    def renew(self) -> None:
        self.lease = renew_lease(
            self.store, self.lease, ttl_s=self.cfg.continual.lease_ttl_s, clock=self.clock
        )

    def key(self, *parts: str) -> str:
        return "/".join(["continual", self.model, *parts])

    # ---- the run ----------------------------------------------------------------------------

    def execute(self) -> Outcome:
        watermark = read_watermark(self.store, self.model)
        self.base_sequence = watermark.sequence
        arrived = unconsumed(list_partitions(self.source), set(watermark.consumed))
        if not arrived:
            since = f"run {watermark.run_id}" if watermark.run_id else "the start"
            return Outcome(
                self.run_id,
                NOTHING_TO_DO,
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
        fixed_test = split_from_npz(self.store.get_bytes(f"{state}/test.npz"))
        outcome.champion_before = self._fixed_accuracy_of_champion(champion, fixed_test)
        outcome.champion_after = outcome.champion_before

        accepted_keys = {}
        for name, split in new_train.items():
            key = self.key("accepted", self.run_id, f"{name}.npz")
            self.store.put_bytes(key, _npz(split))
            accepted_keys[name] = key
        if outcome.mode == "bootstrap":
            accepted_keys = {name: key for name in accepted}
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
            self._train_and_gate(watermark, state, meta, new_train, holdout, champion, outcome)
        else:
            outcome.status = REJECTED
            outcome.reasons.append("every new partition was rejected; the champion is unchanged")

        rejected = {n: v.removeprefix("rejected: ") for n, v in outcome.verdicts.items()}
        rejected = {n: why for n, why in rejected.items() if outcome.verdicts[n] != "passed"}
        advance_watermark(
            self.store,
            self.model,
            watermark,
            Watermark(
                consumed=sorted({*watermark.consumed, *outcome.partitions}),
                accepted={**watermark.accepted, **accepted_keys},
                rejected={**watermark.rejected, **rejected},
                state=state,
                run_id=self.run_id,
            ),
        )
        outcome.message = _headline(outcome)
        writer = self.ctx.writer("continual", inputs={"source": self.source.uri})
        writer.put_json("outcome.json", outcome.to_dict())
        writer.commit(summary={"status": outcome.status, "version": outcome.version})
        return outcome

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
        data = self.cfg.data
        x, labels, shape = table_to_arrays(
            table, meta["label_column"], meta["features"], name, data
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
        x, labels, shape = table_to_arrays(
            combined, label, features, "accepted data", self.cfg.data
        )
        values = np.unique(labels)
        meta = {
            "label_column": label,
            "features": features,
            "feature_shape": list(shape),
            "label_values": values.tolist(),
            "label_names": [str(v) for v in values],
            "feature_names": [] if len(features) == 1 and len(shape) > 1 else features,
        }
        y = np.searchsorted(values, labels).astype(np.int64)
        indices = split_indices(self.cfg.data, y, len(values))
        full = Split(x.astype(np.float32), y)
        state = self.key("state", self.run_id)
        self.store.put_bytes(f"{state}/schema.yaml", schema_to_yaml(schema).encode())
        self.store.put_json(f"{state}/meta.json", meta)
        self.store.put_bytes(f"{state}/validation.npz", _npz(full.subset(indices["validation"])))
        self.store.put_bytes(f"{state}/test.npz", _npz(full.subset(indices["test"])))
        # One training pool for all bootstrap partitions, named after the first.
        new_train = {next(iter(tables)): full.subset(indices["train"])}
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

    # ---- training and promotion -------------------------------------------------------------

    def _fixed_accuracy_of_champion(self, champion, fixed_test: Split) -> float | None:
        if champion is None:
            return None
        payload = from_bytes(self.registry.open_version(champion.version).get_bytes("model.pt"))
        return _accuracy(load_classifier(payload), fixed_test)

    def _train_and_gate(self, watermark, state, meta, new_train, holdout, champion, outcome):
        from trainpipe.stages.evaluate import run_evaluate
        from trainpipe.stages.export import run_export
        from trainpipe.stages.finetune import run_finetune
        from trainpipe.stages.gate import run_gate
        from trainpipe.stages.pretrain import run_pretrain
        from trainpipe.stages.register import run_register

        cc = self.cfg.continual
        fresh = concat(*new_train.values())
        if outcome.mode != "bootstrap":
            drift = max(outcome.drift.values(), default=0.0)
            drifted = cc.policy == "full_retrain_on_drift" and drift > cc.drift_threshold
            outcome.mode = "full_retrain" if drifted or champion is None else "warm_start"
        fixed_test = split_from_npz(self.store.get_bytes(f"{state}/test.npz"))
        if outcome.mode == "warm_start":
            pool = self._pool(watermark)
            count = replay_count(len(fresh), len(pool), cc.replay_fraction)
            train = mix(fresh, replay_sample(pool, count, seed=cc.seed))
            outcome.reasons.append(f"warm start on {len(fresh)} new + {count} replayed examples")
        elif outcome.mode == "full_retrain" and watermark.accepted:
            train = concat(self._pool(watermark), fresh)
            outcome.reasons.append(f"full retrain on {len(train)} accepted examples")
        else:
            train = fresh
        test = concat(fixed_test, *holdout.values()) if holdout else fixed_test
        dataset = Dataset(
            train,
            split_from_npz(self.store.get_bytes(f"{state}/validation.npz")),
            test,
            label_names=meta["label_names"],
            feature_shape=meta["feature_shape"],
            source=self.source.uri,
            feature_names=meta["feature_names"],
        )
        data_uri = self._write_data(dataset, state, outcome)
        self.renew()
        args = {"config_json": self.config_json, "run_id": self.run_id}
        if outcome.mode == "warm_start":
            finetune_uri = self._warm_start(dataset, champion, data_uri)
        else:
            pretrain_uri = run_pretrain(**args, data_uri=data_uri)
            finetune_uri = run_finetune(**args, data_uri=data_uri, pretrain_uri=pretrain_uri)
        self.renew()
        evaluate_uri = run_evaluate(**args, data_uri=data_uri, finetune_uri=finetune_uri)
        export_uri = run_export(**args, data_uri=data_uri, finetune_uri=finetune_uri)
        decision, gate_uri = run_gate(**args, evaluate_uri=evaluate_uri, export_uri=export_uri)
        gate = self.ctx.open(gate_uri).summary
        challenger = load_classifier(from_bytes(self.ctx.open(finetune_uri).get_bytes("model.pt")))
        fixed_accuracy = _accuracy(challenger, fixed_test)
        forgetting_ok, forgetting = _forgetting_rule(
            fixed_accuracy, outcome.champion_before, cc.max_forgetting
        )
        outcome.reasons.append(f"gate {decision}: {gate['reason']}")
        outcome.reasons.append(forgetting)
        if decision != "promote" or not forgetting_ok:
            outcome.status = NOT_PROMOTED
            return
        self.renew()
        run_register(**args, export_uri=export_uri, evaluate_uri=evaluate_uri, gate_uri=gate_uri)
        register = self.ctx.open(self.store.uri_for(f"runs/{self.run_id}/register")).summary
        outcome.version = register["version"]
        outcome.status = PROMOTED
        outcome.champion_after = fixed_accuracy

    def _write_data(self, dataset: Dataset, state: str, outcome: Outcome) -> str:
        """The run's data artifact set, in the layout validate_data writes."""
        writer = self.ctx.writer("validate_data", inputs={"data": self.source.uri})
        for name, blob in dataset_to_npz(dataset).items():
            writer.put_bytes(name, blob)
        writer.put_bytes("schema.yaml", self.store.get_bytes(f"{state}/schema.yaml"))
        sizes = {name: len(split) for name, split in dataset.splits().items()}
        writer.put_json(
            "dataset.json",
            {
                "source": dataset.source,
                "label_names": dataset.label_names,
                "feature_shape": dataset.feature_shape,
                "feature_names": dataset.feature_names,
                "split_sizes": sizes,
                "class_counts_train": np.bincount(
                    dataset.train.y, minlength=dataset.num_classes
                ).tolist(),
                "warnings": [],
                "partitions": outcome.verdicts,
                "drift": outcome.drift,
                "watermark_sequence": self.base_sequence,
            },
        )
        return writer.commit(
            summary={"examples": sum(sizes.values()), **sizes, "verdict": "passed"}
        )

    def _warm_start(self, dataset: Dataset, champion, data_uri: str) -> str:
        from trainpipe.stages.training_run import setup_world
        from trainpipe.train.finetuning import finetune_lr_factor, finetune_param_groups
        from trainpipe.train.objectives import Classification
        from trainpipe.train.trainer import Trainer

        cc = self.cfg.continual
        payload = from_bytes(self.registry.open_version(champion.version).get_bytes("model.pt"))
        if payload["label_names"] != dataset.label_names:
            raise DataError(
                f"data error: champion v{champion.version} predicts {payload['label_names']}, "
                f"the accepted data has {dataset.label_names}; use policy full_retrain_on_drift"
            )
        model_cfg = ModelConfig(**payload["model_config"])
        model = load_classifier(payload).train()
        ft = self.cfg.finetune.model_copy(
            update={
                "epochs": cc.warm_start_epochs,
                "lr": self.cfg.finetune.lr * cc.warm_start_lr_scale,
                "checkpoint_every_steps": None,
            }
        )
        world, _ = setup_world(ft)
        torch_seed(ft.seed)
        trainer = Trainer(
            ft,
            model,
            Classification(ft.label_smoothing, augment=ft.augment),
            stage="finetune",
            world=world,
            param_groups=finetune_param_groups(model, ft),
            lr_factor=finetune_lr_factor(ft),
        )
        result = trainer.fit(dataset.train, dataset.validation)
        final = Classifier(build_encoder(model_cfg, dataset.feature_shape), dataset.num_classes)
        final.load_state_dict(trainer.full_state_dict())
        history = result.to_dict()
        last = history["history"][-1]
        writer = self.ctx.writer("finetune", inputs={"data": data_uri, "warm_start": champion.uri})
        writer.put_json("history.json", history)
        writer.put_bytes(
            "model.pt",
            to_bytes(
                classifier_payload(final, model_cfg, dataset.feature_shape, dataset.label_names)
            ),
        )
        return writer.commit(
            summary={
                "warm_start_from": champion.version,
                "labelled_examples": len(dataset.train),
                "epochs": len(history["history"]),
                "final_val_loss": last["val_loss"],
                "final_val_accuracy": last["val_metric"],
            }
        )


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _npz(split: Split) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, x=split.x, y=split.y)
    return buffer.getvalue()


def _accuracy(model, split: Split) -> float:
    return float((predict_logits(model.eval(), split.x).argmax(1) == split.y).mean())


def _forgetting_rule(
    accuracy: float, champion_accuracy: float | None, bound: float | None
) -> tuple[bool, str]:
    """Accuracy on the fixed test set may fall at most ``bound`` below the champion's."""
    if bound is None:
        return True, "forgetting bound disabled"
    if champion_accuracy is None:
        return True, "forgetting: no champion yet, nothing to forget"
    drop = champion_accuracy - accuracy
    passed = drop <= bound + 1e-12
    return passed, (
        f"forgetting: accuracy on the original test set {champion_accuracy:.4f} -> "
        f"{accuracy:.4f} (drop {drop:+.4f} {'<=' if passed else '>'} max {bound:.4f})"
    )


def _headline(outcome: Outcome) -> str:
    parts = ", ".join(f"{n} {v.split(':')[0]}" for n, v in outcome.verdicts.items())
    version = f"; champion is now version {outcome.version}" if outcome.version else ""
    return f"run {outcome.run_id}: {outcome.status} ({parts}){version}"
