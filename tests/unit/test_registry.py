"""Registry: immutable versions, an atomic champion pointer, rollback, clear corruption errors."""

from __future__ import annotations

import json
import threading

import pytest

from tests.support.tiny_onnx import tiny_onnx
from trainpipe.registry import PromotionConflict, Registry, RegistryError
from trainpipe.storage import ChecksumMismatch, open_store


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return open_store(str(tmp_path / "store"))
    return open_store(
        request.getfixturevalue("s3_bucket") + "/team",
        endpoint_url=request.getfixturevalue("s3_endpoint"),
    )


def files(tag: str) -> dict[str, bytes]:
    return {
        "model.onnx": tiny_onnx(tag),
        "model.json": json.dumps({"name": "m", "version": "run"}).encode(),
    }


def test_register_promote_and_rollback(store):
    registry = Registry(store, "digits")
    assert registry.champion() is None
    v1 = registry.register(files("a"), run_id="r1", lineage={}, summary={"accuracy": 0.9})
    v2 = registry.register(files("b"), run_id="r2", lineage={}, summary={"accuracy": 0.95})
    assert (v1, v2) == ("1", "2")
    assert registry.open_version("2").get_json("model.json")["version"] == "2"
    registry.promote(v1, reason="first")
    champion = registry.promote(v2, reason="better")
    assert (champion.version, champion.previous_version) == ("2", "1")
    assert champion.uri == registry.version_uri("2")
    restored = registry.rollback()
    assert restored.version == "1"
    assert registry.champion().version == "1"
    assert [h["version"] for h in registry.history()] == ["1", "2", "1"]


def test_unknown_version_cannot_be_promoted(store):
    registry = Registry(store, "digits")
    registry.register(files("a"), run_id="r1", lineage={}, summary={})
    with pytest.raises(RegistryError, match="has no version '7'"):
        registry.promote("7", reason="typo")
    assert registry.champion() is None


def test_corrupt_champion_pointer_is_a_clear_error_and_changes_nothing(store):
    registry = Registry(store, "digits")
    v1 = registry.register(files("a"), run_id="r1", lineage={}, summary={})
    registry.promote(v1, reason="first")
    store.put_bytes("registry/digits/champion.json", b"{not json")
    with pytest.raises(RegistryError, match=r"champion\.json is corrupt"):
        registry.promote(v1, reason="again")
    assert store.get_bytes("registry/digits/champion.json") == b"{not json"


def test_concurrent_promotions_leave_exactly_one_winner(store):
    registry = Registry(store, "digits")
    versions = [
        registry.register(files(str(i)), run_id=f"r{i}", lineage={}, summary={}) for i in range(4)
    ]
    registry.promote(versions[0], reason="base")
    base = registry.champion()
    outcomes: list[str] = []

    def promote(version: str) -> None:
        try:
            Registry(store.reopen(store.uri), "digits").promote(
                version, reason="race", expected=base
            )
            outcomes.append(version)
        except PromotionConflict:
            outcomes.append("lost")

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o != "lost"]
    assert len(winners) == 1
    assert registry.champion().version == winners[0]


def test_concurrent_registrations_get_distinct_versions(store):
    results: list[str] = []

    def register(i: int) -> None:
        registry = Registry(store.reopen(store.uri), "digits")
        results.append(registry.register(files(str(i)), run_id=f"r{i}", lineage={}, summary={}))

    threads = [threading.Thread(target=register, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=int) == ["1", "2", "3", "4"]
    registry = Registry(store, "digits")
    for version in results:  # every version reads back intact, none was overwritten
        registry.open_version(version).get_bytes("model.onnx")


def test_reader_at_the_model_folder_sees_what_the_pipeline_wrote(store):
    """The server opens the registry by the model folder's URI; same champion, same checks."""
    registry = Registry(store, "digits")
    registry.promote(registry.register(files("a"), run_id="r1", lineage={}, summary={}), reason="")
    at = Registry.at(registry.uri, endpoint_url=getattr(store, "endpoint_url", None))
    assert at.versions() == ["1"]
    champion = at.champion()
    assert (champion.model, champion.version, champion.etag) == (
        "digits",
        "1",
        registry.champion().etag,
    )
    store.put_bytes("registry/digits/champion.json", b'{"model": "digits"}')
    with pytest.raises(RegistryError, match=r"champion\.json is corrupt"):
        at.champion()


def _tamper(store, key: str, data: bytes) -> None:
    """Replace an object's bytes but keep its recorded sha256, as a bad copy would."""
    recorded = store.head(key).sha256
    if hasattr(store, "root"):
        (store.root / key).write_bytes(data)
    else:
        store._client.put_object(
            Bucket=store.bucket, Key=store._key(key), Body=data, Metadata={"sha256": recorded}
        )


def test_promote_refuses_a_version_that_does_not_verify(store):
    registry = Registry(store, "digits")
    v1 = registry.register(files("a"), run_id="r1", lineage={}, summary={})
    registry.promote(v1, reason="first")
    v2 = registry.register(files("b"), run_id="r2", lineage={}, summary={})
    _tamper(store, f"registry/digits/versions/{v2}/model.onnx", tiny_onnx("c"))
    with pytest.raises(ChecksumMismatch, match=r"model\.onnx is corrupt"):
        registry.promote(v2, reason="tampered")
    with pytest.raises(ChecksumMismatch):
        registry.promote(v2, reason="tampered", force=True)
    broken = {**files("d"), "model.onnx": b"not an onnx graph"}
    v3 = registry.register(broken, run_id="r3", lineage={}, summary={})
    with pytest.raises(RegistryError, match=r"model.onnx does not load in ONNX Runtime .*; noth"):
        registry.promote(v3, reason="unloadable")
    assert registry.champion().version == v1


def test_forced_repair_keeps_the_previous_champion_for_rollback(store):
    registry = Registry(store, "digits")
    v1 = registry.register(files("a"), run_id="r1", lineage={}, summary={})
    v2 = registry.register(files("b"), run_id="r2", lineage={}, summary={})
    registry.promote(v1, reason="first")
    store.put_bytes("registry/digits/champion.json", b"{not json")
    repaired = registry.promote(v2, reason="repair", force=True)
    assert (repaired.version, repaired.previous_version) == (v2, v1)
    assert registry.rollback().version == v1


def test_a_killed_register_is_resumed_by_its_run_without_a_gap(store):
    registry = Registry(store, "digits")
    # What a register killed after its claim and one file leaves behind.
    store.put_json("registry/digits/claims/1", {"run_id": "r1", "claimed_at": "earlier"})
    store.put_bytes("registry/digits/versions/1/model.onnx", b"half")
    if hasattr(store, "root"):
        leftover = store.root / "registry/digits/versions/1/.model.json.x1y2.tmp"
        leftover.write_bytes(b"partial")
    assert registry.versions() == []  # uncommitted: invisible
    version = registry.register(files("a"), run_id="r1", lineage={}, summary={})
    assert version == "1" and registry.versions() == ["1"]
    assert registry.open_version("1").get_bytes("model.onnx") == tiny_onnx("a")
    if hasattr(store, "root"):
        assert not leftover.exists()
    assert registry.register(files("b"), run_id="r2", lineage={}, summary={}) == "2"
