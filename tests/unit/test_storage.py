"""Artifact storage against the local filesystem and a real S3 server on loopback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading

import pytest

from trainpipe.artifacts import ArtifactSet, ArtifactWriter
from trainpipe.storage import (
    ArtifactNotFound,
    ChecksumMismatch,
    PreconditionFailed,
    StorageError,
    open_store,
    sha256_bytes,
)


@pytest.fixture(params=["file", "s3"])
def store_uri(request, tmp_path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/store"
    return request.getfixturevalue("s3_bucket") + "/some/prefix"


@pytest.fixture
def endpoint(store_uri, request) -> str | None:
    """The S3 endpoint, passed as config passes it (the suite does not export it)."""
    return request.getfixturevalue("s3_endpoint") if store_uri.startswith("s3://") else None


def test_round_trip_records_sha256(store_uri, endpoint):
    store = open_store(store_uri, endpoint_url=endpoint)
    info = store.put_bytes("a/b.bin", b"hello")
    assert info.sha256 == sha256_bytes(b"hello")
    assert store.get_bytes("a/b.bin") == b"hello"
    assert store.head("a/b.bin").sha256 == info.sha256
    assert store.list("a") == ["a/b.bin"]
    assert store.head("missing") is None


def test_missing_key_names_the_uri(store_uri, endpoint):
    store = open_store(store_uri, endpoint_url=endpoint)
    with pytest.raises(ArtifactNotFound, match=r"missing artifact: .*nope\.bin does not exist"):
        store.get_bytes("nope.bin")


def test_put_file_and_get_file(store_uri, tmp_path, endpoint):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 100_000)
    store = open_store(store_uri, endpoint_url=endpoint)
    info = store.put_file("big.bin", src)
    assert info.size_bytes == 100_000
    out = tmp_path / "out" / "copy.bin"
    store.get_file("big.bin", out)
    assert out.read_bytes() == src.read_bytes()


def test_expected_sha256_mismatch_is_refused_and_leaves_no_file(store_uri, tmp_path, endpoint):
    store = open_store(store_uri, endpoint_url=endpoint)
    store.put_bytes("m.bin", b"model")
    with pytest.raises(ChecksumMismatch, match="does not match its manifest"):
        store.get_bytes("m.bin", sha256="0" * 64)
    out = tmp_path / "m.bin"
    with pytest.raises(ChecksumMismatch):
        store.get_file("m.bin", out, sha256="0" * 64)
    assert not out.exists()
    assert list(tmp_path.glob(".m.bin*")) == []


def test_corrupted_file_is_detected(tmp_path):
    store = open_store(str(tmp_path))
    store.put_bytes("w.pt", b"weights")
    (tmp_path / "w.pt").write_bytes(b"weightz")
    with pytest.raises(ChecksumMismatch, match="is corrupt"):
        store.get_bytes("w.pt")


def test_corrupted_s3_object_is_detected(s3_bucket, s3_endpoint):
    import boto3

    store = open_store(s3_bucket, endpoint_url=s3_endpoint)
    store.put_bytes("w.pt", b"weights")
    bucket = s3_bucket.removeprefix("s3://")
    # Overwrite the bytes but keep the old recorded sha256, as a bad copy would.
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(
        Bucket=bucket, Key="w.pt", Body=b"weightz", Metadata={"sha256": sha256_bytes(b"weights")}
    )
    with pytest.raises(ChecksumMismatch):
        store.get_bytes("w.pt")


def test_conditional_writes(store_uri, endpoint):
    store = open_store(store_uri, endpoint_url=endpoint)
    first = store.put_bytes("ptr.json", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("ptr.json", b"2", if_none_match=True)
    second = store.put_bytes("ptr.json", b"2", if_match=first.etag)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("ptr.json", b"3", if_match=first.etag)
    assert store.get_bytes("ptr.json") == b"2"
    assert second.etag != first.etag


def test_concurrent_compare_and_swap_has_one_winner(store_uri, endpoint):
    store = open_store(store_uri, endpoint_url=endpoint)
    base = store.put_bytes("ptr.json", b"0")
    results: list[str] = []

    def contender(value: bytes) -> None:
        try:
            other = open_store(store_uri, endpoint_url=endpoint)
            other.put_bytes("ptr.json", value, if_match=base.etag)
            results.append("won")
        except PreconditionFailed:
            results.append("lost")

    threads = [threading.Thread(target=contender, args=(f"v{i}".encode(),)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 5 + ["won"]


def test_artifact_set_commit_and_verify(store_uri, endpoint):
    store = open_store(store_uri, endpoint_url=endpoint)
    writer = ArtifactWriter(store, "runs/r1/stage", stage="stage", run_id="r1")
    writer.put_bytes("a.bin", b"aaa")
    writer.put_json("b.json", {"k": 1})
    uri = writer.commit(summary={"accuracy": 0.9})
    artifacts = ArtifactSet.open(uri, endpoint_url=endpoint)
    assert artifacts.get_bytes("a.bin") == b"aaa"
    assert artifacts.get_json("b.json") == {"k": 1}
    assert artifacts.summary == {"accuracy": 0.9}
    assert artifacts.manifest["files"]["a.bin"]["sha256"] == sha256_bytes(b"aaa")
    with pytest.raises(StorageError, match="already committed"):
        ArtifactWriter(store, "runs/r1/stage", stage="stage", run_id="r1")


def test_uncommitted_artifact_set_is_never_read(store_uri, endpoint):
    store = open_store(store_uri, endpoint_url=endpoint)
    writer = ArtifactWriter(store, "runs/r2/stage", stage="stage", run_id="r2")
    writer.put_bytes("a.bin", b"half")
    with pytest.raises(ArtifactNotFound, match="not a complete artifact set"):
        ArtifactSet.open_in(store, "runs/r2/stage")


def test_missing_bucket_is_a_clear_error(s3_endpoint):
    store = open_store("s3://no-such-bucket-here/x", endpoint_url=s3_endpoint)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        store.put_bytes("k", b"v")


def test_bad_scheme():
    with pytest.raises(StorageError, match="unsupported storage URI scheme 'gs'"):
        open_store("gs://bucket/x")


def test_files_follow_the_umask_and_bookkeeping_stays_hidden(tmp_path):
    """Artifacts are group-readable like any file the user writes (not mkstemp's 0600), and the
    sha256 sidecars and lock files live in one hidden sub-folder, not beside the artifacts."""
    program = (
        "import sys; from trainpipe.artifacts import ArtifactWriter; "
        "from trainpipe.storage import open_store; "
        "store = open_store(sys.argv[1]); "
        "w = ArtifactWriter(store, 'runs/r1/evaluate', stage='evaluate', run_id='r1'); "
        "w.put_bytes('report.html', b'<p>hi</p>'); w.put_file('big.bin', sys.argv[2]); "
        "w.commit(); store.get_file('runs/r1/evaluate/big.bin', sys.argv[3])"
    )
    (tmp_path / "src.bin").write_bytes(b"x" * 100)
    subprocess.run(
        [
            sys.executable,
            "-c",
            program,
            str(tmp_path / "store"),
            tmp_path / "src.bin",
            tmp_path / "copy.bin",
        ],
        check=True,
        preexec_fn=lambda: os.umask(0o002),
    )
    folder = tmp_path / "store" / "runs" / "r1" / "evaluate"
    assert sorted(p.name for p in folder.iterdir()) == [
        ".trainpipe",
        "big.bin",
        "manifest.json",
        "report.html",
    ]
    for name in ("big.bin", "manifest.json", "report.html"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o664, name
    assert stat.S_IMODE((tmp_path / "copy.bin").stat().st_mode) == 0o664
    assert sorted(p.name for p in (folder / ".trainpipe").iterdir()) == [
        "big.bin.lock",
        "big.bin.sha256",
        "manifest.json.lock",
        "manifest.json.sha256",
        "report.html.lock",
        "report.html.sha256",
    ]
    # The guarantees stay: a corrupted artifact is refused on read.
    (folder / "report.html").write_bytes(b"<p>changed</p>")
    with pytest.raises(ChecksumMismatch):
        ArtifactSet.open(f"file://{folder}").get_bytes("report.html")


def test_stores_written_with_sidecars_beside_the_files_still_verify(tmp_path):
    store = open_store(str(tmp_path))
    (tmp_path / "old.bin").write_bytes(b"tampered")
    (tmp_path / ".old.bin.sha256").write_text(sha256_bytes(b"original"))
    with pytest.raises(ChecksumMismatch):
        store.get_bytes("old.bin")
    assert store.list() == ["old.bin"]


def test_ranged_reads_return_exactly_the_bytes_asked_for(store_uri, endpoint):
    store = open_store(store_uri, endpoint_url=endpoint)
    data = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable
    store.put_bytes("obj.bin", data)
    assert store.get_range("obj.bin", 0, 10) == data[:10]
    assert store.get_range("obj.bin", 5000, 1234) == data[5000:6234]
    assert store.get_range("obj.bin", len(data) - 8, 8) == data[-8:]  # ends at the last byte
    assert store.get_range("obj.bin", 0, len(data)) == data
    assert store.get_range("obj.bin", len(data), 0) == b""


@pytest.mark.parametrize("start, length", [(10_000, 241), (10_240, 1), (20_000, 16)])
def test_a_range_past_the_end_is_refused_not_returned_short(store_uri, endpoint, start, length):
    store = open_store(store_uri, endpoint_url=endpoint)
    store.put_bytes("obj.bin", b"x" * 10_240)
    with pytest.raises(StorageError, match=r"obj\.bin run past the end of the object") as info:
        store.get_range("obj.bin", start, length)
    assert "\n" not in str(info.value)


def test_ranged_read_of_a_missing_key_names_the_uri(store_uri, endpoint):
    store = open_store(store_uri, endpoint_url=endpoint)
    with pytest.raises(ArtifactNotFound, match=r"missing artifact: .*nope\.bin does not exist"):
        store.get_range("nope.bin", 0, 8)
    with pytest.raises(ArtifactNotFound, match=r"missing artifact: .*nope\.bin does not exist"):
        store.get_tail("nope.bin", 8)
    with pytest.raises(ArtifactNotFound, match=r"missing artifact: .*nope\.bin does not exist"):
        store.open_ranged("nope.bin")


def test_a_tail_read_gives_the_last_bytes_and_the_size(store_uri, endpoint):
    store = open_store(store_uri, endpoint_url=endpoint)
    data = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable
    store.put_bytes("obj.bin", data)
    store.put_bytes("empty.bin", b"")
    assert store.get_tail("obj.bin", 1) == (data[-1:], 10_240)
    assert store.get_tail("obj.bin", 1000) == (data[-1000:], 10_240)
    assert store.get_tail("obj.bin", 10_240) == (data, 10_240)
    # A suffix longer than the object is the whole object (S3 answers so), not an error.
    assert store.get_tail("obj.bin", 64 * 1024) == (data, 10_240)
    assert store.get_tail("empty.bin", 64 * 1024) == (b"", 0)
    with pytest.raises(ValueError, match="must be positive"):
        store.get_tail("obj.bin", 0)


def test_a_ranged_reader_serves_the_end_from_its_tail(store_uri, endpoint, monkeypatch):
    """Opening is one tail read; reads of the end cost nothing more, and a read reaching
    before the tail fetches only the bytes before it, in one ranged read."""
    store = open_store(store_uri, endpoint_url=endpoint)
    data = os.urandom(50_000)
    store.put_bytes("obj.bin", data)
    asked: list[tuple[str, int, int]] = []
    store_type = type(store)
    real_range, real_tail = store_type._read_range, store_type._read_tail
    monkeypatch.setattr(
        store_type,
        "_read_range",
        lambda s, k, a, n: asked.append(("range", a, n)) or real_range(s, k, a, n),
    )
    monkeypatch.setattr(
        store_type,
        "_read_tail",
        lambda s, k, n: asked.append(("tail", -n, n)) or real_tail(s, k, n),
    )
    with store.open_ranged("obj.bin", tail_bytes=1000) as f:
        assert asked == [("tail", -1000, 1000)]
        assert f.seek(-100, os.SEEK_END) == 49_900
        assert f.read(60) == data[-100:-40]
        assert f.read() == data[-40:]  # to the end, no further
        assert f.read(10) == b""
        assert asked == [("tail", -1000, 1000)]  # all from the tail
        f.seek(48_500)
        assert f.read(1000) == data[48_500:49_500]  # 500 before the tail, 500 in it
        f.seek(10)
        assert f.read(5) == data[10:15]
    assert asked == [("tail", -1000, 1000), ("range", 48_500, 500), ("range", 10, 5)]
    with store.open_ranged("obj.bin") as f:  # pyarrow's 64 KiB: the whole object in hand
        assert f.seek(0, os.SEEK_END) == 50_000
        f.seek(0)
        assert f.read() == data
    assert asked[3:] == [("tail", -64 * 1024, 64 * 1024)]
