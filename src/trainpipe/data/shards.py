"""A dataset stored as a prefix of Parquet shards (file:// or s3://), read shard by shard.

    shards = discover_shards("s3://bucket/table/", endpoint_url=..., cache=ShardCache(dir, 2**30))
    splits = split_shards(shards.shards, validation_fraction=0.15, test_fraction=0.2, seed=0)
    table = shards.read_rows(shards.shards[0], np.array([0, 5, 9]))   # only those row groups

A shard set is every ``*.parquet`` under the prefix, or exactly the shards listed in an optional
``shards.json`` (``{"shards": [{"name", "sha256", "rows"}]}``, as :func:`write_shards` writes it),
whose sha256s are then checked on every download, as artifacts are. Row counts come from Parquet
footers, so nothing is read beyond metadata until a loader asks for rows: a remote shard's footer
is read by one suffix-range read of the object's end (discovery downloads no shard, and so checks no
sha256: the download that reads the shard does). Remote shards are downloaded whole into a local
cache with a byte limit (least recently used evicted) when rows are read; local shards are read in
place. Every error names the shard and the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import posixpath
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainpipe.errors import DataError
from trainpipe.storage import (
    ArtifactNotFound,
    FileStore,
    StorageError,
    Store,
    open_store,
    sha256_bytes,
)

INDEX_NAME = "shards.json"
SHARD_SUFFIX = ".parquet"
OPEN_FILES = 8  # Parquet footers kept parsed per process
PREFETCH_SHARDS = 2  # remote shards downloading ahead of the reader, per process
_IN_FLIGHT: set[Future] = set()  # this process's background downloads not finished yet
VERIFIED_FOLDER = ".verified"  # in the cache folder: local shards already checked, by file state
FOOTER_READ_THREADS = 8
"""Remote footers read at once during discovery: each is one small request (the object's last
64 KiB and its size; a footer larger than that, one more), so discovering thousands of shards is
bound by round trips, not bandwidth."""


@dataclass(frozen=True)
class ShardInfo:
    name: str
    """Key of the shard under the shard set's prefix."""
    rows: int
    row_group_rows: tuple[int, ...]
    sha256: str = ""
    """Expected sha256 from ``shards.json``; empty when the set has no index."""


class ShardCache:
    """Local copies of remote shards, at most ``max_bytes`` in all (least recently used go first).

    Worker processes share the folder: a download lands under a temporary name and is renamed
    into place, so a reader never sees half a shard."""

    def __init__(self, folder: str | Path, max_bytes: int):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.largest_bytes = 0
        """The largest shard this process has had from the cache (0: none yet)."""

    def path(self, store: Store, shard: ShardInfo) -> Path:
        digest = hashlib.sha256(store.uri_for(shard.name).encode()).hexdigest()[:24]
        local = self.folder / f"{digest}{SHARD_SUFFIX}"
        if local.exists():
            os.utime(local)  # recently used
        else:
            self._download(store, shard, local, digest)
        with contextlib.suppress(FileNotFoundError):  # evicted by another process meanwhile
            self.largest_bytes = max(self.largest_bytes, local.stat().st_size)
        return local

    def _download(self, store: Store, shard: ShardInfo, local: Path, digest: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # One download per shard across processes and threads (a lock file per shard; flock
        # locks separate opens, so a background prefetch and a reader exclude each other too):
        # DataLoader workers often need the same shard at once, and each would otherwise fetch
        # it whole. Different shards download at the same time.
        with open(self.folder / f".{digest}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if local.exists():  # another process or thread fetched it while this one waited
                return
            try:
                store.get_file(shard.name, local, sha256=shard.sha256 or None)
            except StorageError as exc:
                raise DataError(f"data error: shard {store.uri_for(shard.name)}: {exc}") from None
            with self._lock:
                self._evict(keep=local)

    def has_room_for(self, shards: int) -> bool:
        """Whether ``shards`` shards the size of the largest seen so far fit under the limit
        (False before any: the sizes are not known): fetching ahead into a cache too small for
        it would evict shards before they are read."""
        return 0 < shards * self.largest_bytes <= self.max_bytes

    def verified(self, path: Path, sha256: str) -> bool:
        """True when this local file was checked against ``sha256`` before and has not changed
        since (same size, modification time and inode): every DataLoader worker of every epoch
        would otherwise hash every local shard it reads again."""
        try:
            return self._memo(path).read_text() == _file_state(path, sha256)
        except OSError:
            return False

    def record_verified(self, path: Path, sha256: str) -> None:
        memo = self._memo(path)
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            partial = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
            partial.write_text(_file_state(path, sha256))
            partial.replace(memo)
        except OSError:
            pass  # an unwritable cache folder only means hashing again next time

    def _memo(self, path: Path) -> Path:
        key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
        return self.folder / VERIFIED_FOLDER / key

    def _evict(self, keep: Path) -> None:
        sizes = {}
        for path in self.folder.glob(f"*{SHARD_SUFFIX}"):
            try:  # another process may evict the same file meanwhile
                stat = path.stat()
            except FileNotFoundError:
                continue
            sizes[path] = (stat.st_mtime, stat.st_size)
        total = sum(size for _, size in sizes.values())
        for path in sorted(sizes, key=lambda p: sizes[p][0]):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            total -= sizes[path][1]
            path.unlink(missing_ok=True)


@dataclass
class ShardSet:
    store: Store
    shards: list[ShardInfo]
    schema: pa.Schema
    cache: ShardCache | None = None
    _verified: set[str] = field(default_factory=set, repr=False)
    _open: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _fetching: dict[str, Future] = field(default_factory=dict, repr=False)
    _fetcher: ThreadPoolExecutor | None = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        return self.store.uri

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def local_path(self, shard: ShardInfo) -> Path:
        """Where the shard's bytes are on this machine (downloading it when remote)."""
        if isinstance(self.store, FileStore):
            path = self.store.root / shard.name
            if not path.exists():
                raise DataError(
                    f"data error: shard {self.store.uri_for(shard.name)} is missing; restore it "
                    f"or remove it from {INDEX_NAME}"
                )
            if shard.sha256 and shard.name not in self._verified:
                if not (self.cache and self.cache.verified(path, shard.sha256)):
                    if _file_sha256(path) != shard.sha256:
                        raise DataError(
                            f"data error: shard {self.store.uri_for(shard.name)} does not match "
                            f"the sha256 in {INDEX_NAME}; the shard was replaced or corrupted, "
                            "rewrite it"
                        )
                    if self.cache:
                        self.cache.record_verified(path, shard.sha256)
                self._verified.add(shard.name)
            return path
        if self.cache is None:
            raise DataError(
                f"data error: shards under {self.uri} are remote and no shard cache is set; "
                "set data.streaming.cache_dir"
            )
        pending = self._fetching.pop(shard.name, None)
        if pending is not None:
            pending.result()  # its error (one line naming the shard) is this read's error
        return self.cache.path(self.store, shard)

    def prefetch(self, shard: ShardInfo) -> None:
        """Start downloading a remote shard in a background thread, so that the download
        overlaps with reading the shards before it (local shards: nothing to do). At most
        ``PREFETCH_SHARDS`` are pending; the next :meth:`local_path` of it waits for it."""
        if isinstance(self.store, FileStore) or self.cache is None:
            return
        if not self.cache.largest_bytes:
            # Nothing downloaded in this process yet (discovery reads only footers): the
            # shard's size from one HEAD says whether fetching ahead fits, so that the first
            # shards download ahead too instead of one by one on the reading thread.
            with contextlib.suppress(StorageError):  # the download itself will say what failed
                info = self.store.head(shard.name)
                self.cache.largest_bytes = info.size_bytes if info else 0
        # Room for what is being read (a shard per process, as in one without prefetching),
        # the pending downloads and the one asked for.
        if not self.cache.has_room_for(PREFETCH_SHARDS + 2):
            return
        # Finished ones are dropped: the file is in the cache (or its error recurs on reading).
        self._fetching = {n: f for n, f in self._fetching.items() if not f.done()}
        if shard.name in self._fetching or len(self._fetching) >= PREFETCH_SHARDS:
            return
        if self._fetcher is None:
            # One thread: a download is mostly I/O and hashing, outside the GIL; more at once
            # would split the same network among them (and moto serves one at a time).
            self._fetcher = ThreadPoolExecutor(1, thread_name_prefix="shard-prefetch")
        future = self._fetcher.submit(self.cache.path, self.store, shard)
        _IN_FLIGHT.add(future)
        future.add_done_callback(_IN_FLIGHT.discard)
        self._fetching[shard.name] = future

    def open(self, shard: ShardInfo) -> pq.ParquetFile:
        # One lookup, not a membership test and then a lookup: validation reads shards on
        # several threads, and another one may evict the handle in between.
        handle = self._open.get(shard.name)
        if handle is not None:
            return handle
        path = self.local_path(shard)
        try:
            # pre_buffer=False: a pre-buffered reader keeps the last row group it read (~1 MiB
            # here) for as long as the handle is open, OPEN_FILES of them per split and process;
            # shards are local files by now, where pre-buffering saves nothing.
            handle = pq.ParquetFile(path, pre_buffer=False)
            self._open[shard.name] = handle
            while len(self._open) > OPEN_FILES:
                with contextlib.suppress(KeyError):  # another thread emptied it meanwhile
                    self._open.popitem(last=False)
            return handle
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._unreadable(shard, exc) from None

    def footer(self, shard: ShardInfo) -> pq.FileMetaData:
        """The shard's Parquet footer (row groups, schema). A local shard's comes from opening
        it, as reading does (checked against its sha256 first); a remote shard's from one read
        of the object's last 64 KiB, which also gives its size (one more ranged read when the
        footer is larger), without downloading the shard: its sha256 is checked by the download
        that reads its rows, not here."""
        if isinstance(self.store, FileStore):
            return self.open(shard).metadata
        try:
            with self.store.open_ranged(shard.name) as tail:
                return pq.read_metadata(tail)
        except ArtifactNotFound:
            raise DataError(
                f"data error: shard {self.store.uri_for(shard.name)} is missing; restore it or "
                f"remove it from {INDEX_NAME}"
            ) from None
        except StorageError as exc:
            raise DataError(f"data error: shard {self.store.uri_for(shard.name)}: {exc}") from None
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._unreadable(shard, exc) from None

    def _unreadable(self, shard: ShardInfo, exc: Exception) -> DataError:
        return DataError(
            f"data error: shard {self.store.uri_for(shard.name)} is not a readable Parquet "
            f"file ({exc}); rewrite or remove the shard"
        )

    def read_row_group(
        self,
        shard: ShardInfo,
        group: int,
        columns: list[str] | None = None,
        *,
        use_threads: bool = True,
    ):
        """One row group; ``use_threads=False`` decodes its columns on the calling thread (in
        a loader worker, where other processes already use the other cores)."""
        try:
            return self.open(shard).read_row_group(group, columns=columns, use_threads=use_threads)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(
                f"data error: shard {self.store.uri_for(shard.name)} row group {group} cannot "
                f"be read ({exc}); rewrite or remove the shard"
            ) from None

    def read_rows(self, shard: ShardInfo, rows: np.ndarray, columns: list[str] | None = None):
        """The given rows (any order) of one shard, reading only the row groups that hold them."""
        starts = np.concatenate([[0], np.cumsum(shard.row_group_rows)])
        groups = np.searchsorted(starts, rows, side="right") - 1
        parts = {int(g): self.read_row_group(shard, int(g), columns) for g in np.unique(groups)}
        offset, tables = 0, []
        base = {}
        for g in sorted(parts):
            base[g] = offset
            offset += len(parts[g])
            tables.append(parts[g])
        table = pa.concat_tables(tables)
        local = np.array([base[g] + r - starts[g] for g, r in zip(groups, rows, strict=True)])
        return table.take(pa.array(local, type=pa.int64()))

    def iter_batches(self, shard: ShardInfo, columns: list[str] | None = None):
        """Row groups of one shard in order: what streaming validation reads."""
        for group in range(len(shard.row_group_rows)):
            yield self.read_row_group(shard, group, columns)


def settle_prefetches() -> None:
    """Wait for this process's background shard downloads (their errors are raised when the
    shard is read). Called before forking DataLoader workers: a child forked while a download
    thread holds a lock (in boto3, urllib3, logging) would inherit it held, with no thread left
    to release it."""
    wait(list(_IN_FLIGHT))


def _file_state(path: Path, sha256: str) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns} {stat.st_ino} {sha256}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_shard_prefix(uri: str, *, endpoint_url: str | None = None) -> bool:
    """True when ``uri`` is a folder/prefix holding ``shards.json`` or ``*.parquet`` shards other
    than a pre-split ``train/validation/test`` set."""
    if uri.endswith((".parquet", ".csv", ".jsonl", ".npz")):
        return False
    try:
        names = [k.rsplit("/", 1)[-1] for k in open_store(uri, endpoint_url=endpoint_url).list()]
    except StorageError:
        return False
    if INDEX_NAME in names:
        return True
    presplit = {"train.parquet", "validation.parquet", "test.parquet"}
    parquet = [n for n in names if n.endswith(SHARD_SUFFIX) and not n.startswith(".")]
    return bool(parquet) and not presplit.issubset(parquet)


def discover_shards(
    uri: str, *, endpoint_url: str | None = None, cache: ShardCache | None = None
) -> ShardSet:
    """The shard set under ``uri``, with row counts and row groups from each footer."""
    store = open_store(uri, endpoint_url=endpoint_url)
    keys = [k for k in store.list() if not posixpath.basename(k).startswith(".")]
    if INDEX_NAME in keys:
        index = store.get_editable_bytes(INDEX_NAME)
        try:
            entries = json.loads(index)["shards"]
            listed = [(e["name"], e.get("sha256", "")) for e in entries]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"data error: {store.uri_for(INDEX_NAME)} is not a shard index ({exc}); "
                "rewrite it with trainpipe.data.shards.write_shards or delete it"
            ) from None
        present = set(keys)
        for name, _ in listed:
            if name not in present:
                raise DataError(
                    f"data error: shard {store.uri_for(name)} is listed in {INDEX_NAME} but "
                    f"missing; restore it or remove it from {INDEX_NAME}"
                )
    else:
        listed = [(k, "") for k in keys if k.endswith(SHARD_SUFFIX)]
    if not listed:
        raise DataError(
            f"data error: {uri} holds no *.parquet shards; fix data.source (a prefix of Parquet "
            "shards)"
        )
    return describe_shards(store, listed, cache)


def describe_shards(
    store: Store, listed: list[tuple[str, str]], cache: ShardCache | None = None
) -> ShardSet:
    """The shard set of the given ``(key, sha256)`` shards of ``store`` (row counts and row
    groups from each footer); DataError when one is unreadable or has other columns."""
    shard_set = ShardSet(store, [], pa.schema([]), cache)
    provisional = [ShardInfo(name, 0, (), sha) for name, sha in listed]
    schema = None
    with contextlib.closing(_footers(shard_set, provisional)) as footers:
        for (name, sha), meta in zip(listed, footers, strict=True):
            groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
            shard_set.shards.append(ShardInfo(name, meta.num_rows, groups, sha))
            # Not ``meta.schema``: FileMetaData caches that ParquetSchema, which points back
            # at it, and the cycle keeps the parsed footer (~1 MiB natively, invisible to the
            # GC's thresholds) alive until a full collection: memory growing with the shards.
            this = pq.ParquetSchema(meta).to_arrow_schema()
            if schema is None:
                schema = this
            elif not this.equals(schema, check_metadata=False):
                raise DataError(
                    f"data error: shard {store.uri_for(name)} has schema {this} but the first "
                    f"shard has {schema}; every shard must have the same columns and types"
                )
    shard_set.schema = schema
    return shard_set


def _footers(shard_set: ShardSet, shards: list[ShardInfo]) -> Iterator[pq.FileMetaData]:
    """Each shard's footer, in order (so the first bad shard in the list is the one reported);
    remote ones ``FOOTER_READ_THREADS`` at a time, local ones one by one, as they always were."""
    if isinstance(shard_set.store, FileStore) or len(shards) < 2:
        yield from map(shard_set.footer, shards)
        return
    pool = ThreadPoolExecutor(FOOTER_READ_THREADS, thread_name_prefix="shard-footer")
    try:
        yield from pool.map(shard_set.footer, shards)
    finally:
        pool.shutdown(cancel_futures=True)  # after an error, do not read the rest


def split_shards(
    shards: list[ShardInfo], *, validation_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[ShardInfo]]:
    """Whole shards per split, by a stable hash of (seed, shard name) mapped to [0, 1): below
    ``test_fraction`` is test, then validation up to ``test + validation``, the rest train. A
    shard's split depends on its name alone, so the same shards are the test set in every run,
    on every machine, and when new shards (partitions) arrive. A split the thresholds leave empty
    (few shards) takes the shard nearest to its range instead."""
    if len(shards) < 3:
        raise DataError(
            f"data error: {len(shards)} shard(s) cannot make train, validation and test splits "
            "by shard; write at least 3 shards (more is better: the split is by whole shards)"
        )

    def position(shard: ShardInfo) -> float:
        return shard_position(shard.name, seed)

    ordered = sorted(shards, key=position)
    cut_test, cut_val = test_fraction, test_fraction + validation_fraction
    test = [s for s in ordered if position(s) < cut_test] or ordered[:1]
    rest = [s for s in ordered if s not in test]
    validation = [s for s in rest if position(s) < cut_val] or rest[:1]
    train = [s for s in rest if s not in validation]
    if not train:
        train, validation = validation[1:], validation[:1]
    by_name = lambda group: sorted(group, key=lambda s: s.name)  # noqa: E731
    return {"test": by_name(test), "validation": by_name(validation), "train": by_name(train)}


def shard_position(name: str, seed: int) -> float:
    """A shard's place in [0, 1) by a stable hash of (seed, name): what splits by shard use."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()
    return int(digest[:16], 16) / 2.0**64


def write_shards(
    table: pa.Table,
    uri: str,
    *,
    rows_per_shard: int,
    row_group_rows: int = 1024,
    endpoint_url: str | None = None,
    stem: str = "part",
) -> list[dict]:
    """Write ``table`` as Parquet shards plus ``shards.json`` under ``uri`` (the preparation
    step; also what tests and benchmarks use). Returns the index entries."""
    import io

    store = open_store(uri, endpoint_url=endpoint_url)
    entries = []
    for number, start in enumerate(range(0, len(table), rows_per_shard)):
        part = table.slice(start, rows_per_shard)
        buffer = io.BytesIO()
        pq.write_table(part, buffer, row_group_size=row_group_rows)
        data = buffer.getvalue()
        name = f"{stem}-{number:05d}{SHARD_SUFFIX}"
        store.put_bytes(name, data)
        entries.append({"name": name, "sha256": sha256_bytes(data), "rows": len(part)})
    store.put_bytes(INDEX_NAME, json.dumps({"shards": entries, "written_at": time.time()}).encode())
    return entries
