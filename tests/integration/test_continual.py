"""Scheduled continual retraining, end to end: the continual DAG through kfp.local (every step a
subprocess, as on a cluster) on the built-in digits cut into partitions (see
``trainpipe.continual.simulate``). One bootstrap run is shared; each test works on a copy."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from trainpipe.config import load_config
from trainpipe.continual.driver import (
    ALREADY_REGISTERED,
    LEASE_HELD,
    NOT_PROMOTED,
    NOTHING_TO_DO,
    PROMOTED,
    REJECTED,
    Outcome,
)
from trainpipe.continual.lease import acquire_lease, release_lease
from trainpipe.continual.local import run_continual
from trainpipe.continual.simulate import arrival_files, parquet_bytes
from trainpipe.continual.watermark import read_watermark
from trainpipe.data.validation import array_field, read_table
from trainpipe.local_run import PipelineFailed
from trainpipe.registry import Registry
from trainpipe.storage import BOOKKEEPING_DIR, open_store

pytestmark = pytest.mark.slow

MODEL = "digits-classifier"
FAST = [
    "pretrain.epochs=2",
    "finetune.epochs=8",
    "finetune.label_fraction=1.0",
    "finetune.compare_with_scratch=false",
    "gate.min_value=0.5",
    "gate.max_gap_to_linear=null",  # few-epoch models; this suite is about continual mechanics
    "gate.bootstrap_resamples=0",
    "continual.warm_start_epochs=3",
]


def config(root: Path, *extra: str):
    return load_config(
        None,
        [
            *FAST,
            f"storage.uri=file://{root}/artifacts",
            f"continual.source=file://{root}/incoming",
            *extra,
        ],
    )


def run(cfg, root: Path) -> Outcome:
    """One continual DAG run; kfp.local's own files go beside ``root``, not into it."""
    return run_continual(cfg, kfp_root=root.with_name(root.name + "-kfp"))


@pytest.fixture(scope="module")
def arrivals():
    return {
        kind if kind != "clean" else name: data
        for name, kind, data in arrival_files(load_config(None, []))
    }


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory, arrivals) -> Path:
    root = tmp_path_factory.mktemp("continual-template")
    open_store(f"file://{root}/incoming").put_bytes("part-0000.parquet", arrivals["initial"])
    outcome = run(config(root), root)
    assert outcome.status == PROMOTED, outcome.reasons
    assert outcome.mode == "bootstrap" and outcome.version == "1"
    return root


@pytest.fixture
def root(bootstrapped, tmp_path) -> Path:
    copy = tmp_path / "site"
    shutil.copytree(bootstrapped, copy)
    return copy


def snapshot(root: Path) -> dict[str, str]:
    """Every file's digest, except the lease and each run's console log (runs/<id>/run.log and
    its sha256/lock): a run that does nothing still leaves its log."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "lease.json" not in p.name and "run.log" not in p.name
    }


def publish(root: Path, name: str, data: bytes) -> None:
    open_store(f"file://{root}/incoming").put_bytes(name, data)


def test_nothing_to_do_changes_nothing(root):
    before = snapshot(root)
    outcome = run(config(root), root)
    assert outcome.status == NOTHING_TO_DO
    assert outcome.message.startswith("nothing to do: no new partitions")
    assert "nothing was changed" in outcome.message
    assert snapshot(root) == before


def test_warm_start_with_replay_and_idempotence(root, arrivals):
    publish(root, "part-0001.parquet", arrivals["part-0001"])
    cfg = config(root, "continual.replay_fraction=0.5")
    first = run(cfg, root)
    assert first.mode == "warm_start" and first.status in (PROMOTED, NOT_PROMOTED)
    assert first.verdicts == {"part-0001.parquet": "passed"}
    store = open_store(cfg.storage.uri)
    sizes = store.get_json(f"runs/{first.run_id}/validate_data/dataset.json")["split_sizes"]
    new_rows = len(read_table(f"file://{root}/incoming/part-0001.parquet"))
    holdout = round(new_rows * cfg.continual.holdout_fraction)
    new_train = new_rows - holdout
    assert sizes["train"] == 2 * new_train  # as many replayed examples as new ones
    fixed_test = store.get_json(f"runs/{first.run_id}/validate_data/manifest.json")
    assert sizes["test"] > holdout and fixed_test
    finetune = store.get_json(f"runs/{first.run_id}/finetune/manifest.json")
    assert finetune["lineage"]["inputs"]["warm_start"].endswith("/versions/1")

    second = run(cfg, root)
    assert second.status == NOTHING_TO_DO
    versions = Registry(store, MODEL).versions()
    assert len(versions) <= 2  # two runs over the same data: at most one new version
    assert read_watermark(store, MODEL).consumed == ["part-0000.parquet", "part-0001.parquet"]


def test_drifted_partition_retrains_from_scratch_on_all_accepted_data(root, arrivals):
    """full_retrain_on_drift: inverted pixels score far above the threshold, so the DAG takes
    the pretrain + finetune branch on every accepted example instead of the warm start."""
    publish(root, "part-0001.parquet", arrivals["drift"])
    cfg = config(root, "continual.policy=full_retrain_on_drift", "continual.drift_threshold=0.3")
    outcome = run(cfg, root)
    assert outcome.verdicts == {"part-0001.parquet": "passed"}
    assert outcome.drift["part-0001.parquet"] > 0.3
    assert outcome.mode == "full_retrain" and outcome.status in (PROMOTED, NOT_PROMOTED)
    store = open_store(cfg.storage.uri)
    finetune = store.get_json(f"runs/{outcome.run_id}/finetune/manifest.json")
    assert finetune["lineage"]["inputs"]["pretrain"].endswith(f"runs/{outcome.run_id}/pretrain")
    assert "warm_start" not in finetune["lineage"]["inputs"]
    accepted = read_table(f"file://{root}/incoming/part-0000.parquet")
    sizes = store.get_json(f"runs/{outcome.run_id}/validate_data/dataset.json")["split_sizes"]
    assert sizes["train"] > 0.5 * len(accepted)  # the earlier accepted data is trained on too
    assert read_watermark(store, MODEL).consumed == ["part-0000.parquet", "part-0001.parquet"]


def test_crash_between_register_and_watermark_registers_no_second_version(root, arrivals):
    """The run registers, then "dies" before its watermark write (the old watermark file is put
    back byte for byte); the next run recognizes its data and does not train again."""
    publish(root, "part-0001.parquet", arrivals["part-0001"])
    cfg = config(
        root,
        "gate.min_improvement=-1.0",
        "gate.max_slice_regression=null",
        "continual.max_forgetting=1.0",
    )
    store = open_store(cfg.storage.uri)
    mark = root / "artifacts/continual" / MODEL / "watermark.json"
    sidecar = mark.parent / BOOKKEEPING_DIR / "watermark.json.sha256"
    saved = mark.read_bytes(), sidecar.read_bytes()
    first = run(cfg, root)
    assert first.status == PROMOTED and first.version == "2", first.reasons
    mark.write_bytes(saved[0])
    sidecar.write_bytes(saved[1])

    again = run(cfg, root)
    assert again.status == ALREADY_REGISTERED and again.version == "2"
    assert again.mode == ""  # nothing was trained
    assert Registry(store, MODEL).versions() == ["1", "2"]
    assert "part-0001.parquet" in read_watermark(store, MODEL).consumed
    assert run(cfg, root).status == NOTHING_TO_DO


def test_watermark_advances_only_on_success(root, arrivals):
    cfg = config(root)
    store = open_store(cfg.storage.uri)
    before = read_watermark(store, MODEL)
    publish(root, "part-0001.parquet", arrivals["part-0001"])
    model_pt = root / "artifacts/registry" / MODEL / "versions/1/model.pt"
    good = model_pt.read_bytes()
    model_pt.write_bytes(good[:-10] + b"corrupted!")  # the champion can no longer be trusted
    with pytest.raises(PipelineFailed, match="watermark did not advance"):
        run(cfg, root)  # the warm start refuses the champion's model.pt
    after_failure = read_watermark(store, MODEL)
    assert after_failure.etag == before.etag and after_failure.consumed == before.consumed
    assert Registry(store, MODEL).versions() == ["1"]
    probe = acquire_lease(store, MODEL, holder="probe", ttl_s=60)  # the exit handler released it
    release_lease(store, probe)

    model_pt.write_bytes(good)
    outcome = run(cfg, root)
    assert outcome.status in (PROMOTED, NOT_PROMOTED)
    advanced = read_watermark(store, MODEL)
    assert advanced.sequence == before.sequence + 1
    assert "part-0001.parquet" in advanced.consumed and advanced.run_id == outcome.run_id


def test_corrupt_partitions_are_rejected_without_changing_the_champion(root, arrivals):
    cfg = config(root)
    store = open_store(cfg.storage.uri)
    registry = Registry(store, MODEL)
    champion = registry.champion()
    publish(root, "part-0001.parquet", arrivals["corrupt"])  # truncated Parquet
    clean = read_table(f"file://{root}/incoming/part-0000.parquet").slice(0, 100)
    pixels = clean.column("pixels").combine_chunks().values.to_numpy(zero_copy_only=False)
    pixels = pixels.reshape(len(clean), 1, 8, 8).copy()
    pixels[::7, 0, 3, 3] = np.nan
    field, array = array_field("pixels", pixels, [1, 8, 8])
    publish(root, "part-0002.parquet", parquet_bytes(clean.set_column(0, field, array)))

    outcome = run(cfg, root)
    assert outcome.status == REJECTED
    assert outcome.verdicts["part-0001.parquet"].startswith("rejected: unreadable")
    assert outcome.verdicts["part-0002.parquet"].startswith("rejected:")
    assert "nan" in outcome.verdicts["part-0002.parquet"].lower()
    now = registry.champion()
    assert (now.version, now.etag) == (champion.version, champion.etag)
    assert registry.versions() == ["1"]
    assert outcome.champion_after == outcome.champion_before
    watermark = read_watermark(store, MODEL)
    assert set(watermark.rejected) == {"part-0001.parquet", "part-0002.parquet"}
    assert run(cfg, root).status == NOTHING_TO_DO  # rejected data is not retried


def test_a_model_that_forgets_is_not_promoted(root, arrivals):
    """New data with wrong labels (digit d labelled d+1), no replay, and a gate relaxed so that
    only the forgetting bound stands between this model and promotion."""
    part = read_table(f"file://{root}/incoming/part-0000.parquet")
    labels = (part.column("label").to_numpy() + 1) % 10
    relabelled = part.set_column(1, "label", pa.array(labels.astype(np.int64)))
    publish(root, "part-0001.parquet", parquet_bytes(relabelled))
    cfg = config(
        root,
        "continual.replay_fraction=0.0",
        "continual.warm_start_epochs=6",
        "continual.max_forgetting=0.05",
        "gate.min_value=0.0",
        "gate.min_improvement=-1.0",
        "gate.max_slice_regression=null",
    )
    store = open_store(cfg.storage.uri)
    champion = Registry(store, MODEL).champion()
    outcome = run(cfg, root)
    assert outcome.mode == "warm_start"
    assert outcome.status == NOT_PROMOTED, outcome.reasons
    # The bound is a gate rule: the gate's own decision says reject, with the reason.
    decision = store.get_json(f"runs/{outcome.run_id}/gate/decision.json")
    assert [r["rule"] for r in decision["rules"] if not r["passed"]] == ["forgetting"]
    (rule,) = [r for r in decision["rules"] if r["rule"] == "forgetting"]
    assert "> max 0.0500" in rule["detail"]
    assert decision["decision"] == "reject" and rule["detail"] in decision["reason"]
    assert f"gate reject: {decision['reason']}" in outcome.reasons
    assert Registry(store, MODEL).champion().etag == champion.etag


def cli_run(cfg, output: Path) -> subprocess.Popen:
    """`trainpipe run --continual` in its own process, as a scheduled run starts it."""
    overrides = [
        *FAST,
        f"storage.uri={cfg.storage.uri}",
        f"continual.source={cfg.continual.source}",
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "trainpipe", "run", "--continual", "--output", str(output)]
        + [arg for o in overrides for arg in ("--set", o)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def test_overlapping_scheduled_run_exits_cleanly(root):
    cfg = config(root)
    store = open_store(cfg.storage.uri)
    acquire_lease(store, MODEL, holder="scheduled-run-1", ttl_s=600)
    assert run(cfg, root).status == LEASE_HELD
    cli = cli_run(cfg, root.with_name("cli-output"))
    out, err = cli.communicate(timeout=300)
    assert cli.returncode == 0, err[-2000:]
    assert "another run (scheduled-run-1) holds the lease of digits-classifier until" in out


def test_two_runs_started_together_train_once(root, arrivals):
    """Two scheduled runs start at the same moment on one new partition: the lease lets one
    train; the other ends at once (lease held) or, if it came second, finds nothing new."""
    publish(root, "part-0001.parquet", arrivals["part-0001"])
    cfg = config(root)
    runs = [cli_run(cfg, root.with_name(f"cli-{i}")) for i in range(2)]
    outputs = [r.communicate(timeout=600) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    trained = [out for out, _ in outputs if "part-0001.parquet passed" in out]
    assert len(trained) == 1
    (other,) = [out for out, _ in outputs if out not in trained]
    assert "holds the lease of digits-classifier" in other or "nothing to do" in other
    store = open_store(cfg.storage.uri)
    assert len(Registry(store, MODEL).versions()) <= 2
    assert read_watermark(store, MODEL).consumed == ["part-0000.parquet", "part-0001.parquet"]


def test_lease_and_nothing_to_do_on_s3(s3_bucket, s3_endpoint, tmp_path, arrivals):
    """The DAG's lease and watermark reads against the moto S3 server."""
    cfg = load_config(
        None,
        [
            f"storage.uri={s3_bucket}/tp",
            f"storage.endpoint_url={s3_endpoint}",
            f"continual.source=file://{tmp_path}/incoming",
        ],
    )
    store = open_store(cfg.storage.uri, endpoint_url=s3_endpoint)
    held = acquire_lease(store, MODEL, holder="scheduled-run-1", ttl_s=600)
    publish(tmp_path, "part-0000.parquet", arrivals["initial"])
    outcome = run(cfg, tmp_path / "site")
    assert outcome.status == LEASE_HELD and "until" in outcome.message
    assert read_watermark(store, MODEL).etag is None  # the refused run wrote nothing
    release_lease(store, held)
    (tmp_path / "incoming/part-0000.parquet").unlink()
    outcome = run(cfg, tmp_path / "site")
    assert outcome.status == NOTHING_TO_DO
    assert store.list("continual") == [f"continual/{MODEL}/lease.json"]
    # Only the two runs' console logs: neither run committed a stage.
    assert [key.rsplit("/", 1)[-1] for key in store.list("runs")] == ["run.log", "run.log"]
