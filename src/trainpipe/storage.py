"""The one seam for artifact I/O: ``file://`` and ``s3://`` behind the same small interface.

Every write is atomic (nothing is visible under its final key until it is complete) and records
the object's sha256; every read recomputes the sha256 and refuses data that does not match.

    store = open_store("s3://bucket/prefix")       # endpoint from AWS_ENDPOINT_URL or endpoint_url
    info = store.put_bytes("runs/r1/model.pt", data)
    data = store.get_bytes("runs/r1/model.pt")      # raises ChecksumMismatch on corruption

Conditional writes (``if_none_match`` / ``if_match``) give compare-and-swap on a single key, which
the registry's champion pointer and the training lease are built on.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import posixpath
import random
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from trainpipe.errors import TrainpipeError

SHA256_METADATA_KEY = "sha256"
_T = TypeVar("_T")
_CHUNK_BYTES = 8 * 1024 * 1024

log = logging.getLogger("trainpipe.storage")

READ_ATTEMPTS = 8
"""Tries per S3 read whose body arrives truncated, reset or corrupt (each verified by sha256)."""

RETRY_BASE_S = 0.2
"""First backoff between read attempts; doubles each time, with full jitter, capped below."""

RETRY_CAP_S = 5.0
"""Longest single backoff between read attempts."""

REQUEST_ATTEMPTS = 6
"""botocore's own tries per S3 request (503 SlowDown, 5xx, resets before a response arrives);
more would make an unreachable endpoint take minutes to report."""

RANGED_TAIL_BYTES = 64 * 1024
"""What ``open_ranged`` reads from an object's end up front: pyarrow's first read when it looks
for a Parquet footer, so a footer that fits costs exactly one request."""

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class StorageError(TrainpipeError):
    """Artifact storage failed; the message says what and how to fix it."""


class ArtifactNotFound(StorageError):
    """The requested object does not exist."""


class ChecksumMismatch(StorageError):
    """The object's bytes do not match the sha256 recorded when it was written."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


class TransientReadError(StorageError):
    """A read was cut short (truncated body, reset connection); trying again may succeed."""


def backoff_s(attempt: int) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
    return random.uniform(0, min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size_bytes: int
    sha256: str
    etag: str
    """Opaque version token for ``if_match``."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def join_uri(base: str, *parts: str) -> str:
    """Join path parts onto a URI without doubling or losing slashes."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])


class Store(ABC):
    """A rooted key space. Keys are relative POSIX paths; ``uri_for(key)`` names them."""

    uri: str
    endpoint_url: str | None = None
    """S3 endpoint this store talks to; carried into every store reopened from its URIs."""
    read_attempts: int = 1
    """Tries per read; local files are not retried (a mismatch there is real corruption)."""

    @abstractmethod
    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        """Write atomically. ``if_none_match``: only if absent; ``if_match``: only if unchanged."""

    @abstractmethod
    def put_file(self, key: str, path: str | Path) -> ObjectInfo:
        """Upload a local file atomically (streamed; for large artifacts)."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size, recorded sha256 and etag, or None when the key does not exist."""

    @abstractmethod
    def _read(self, key: str) -> tuple[bytes, ObjectInfo]:
        """Raw bytes plus the recorded info; raises ArtifactNotFound."""

    @abstractmethod
    def _download(self, key: str, path: Path) -> ObjectInfo:
        """Stream the object to ``path``; raises ArtifactNotFound."""

    @abstractmethod
    def _read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from byte ``start`` (fewer only where the object ends first);
        raises ArtifactNotFound, TransientReadError for a body cut short."""

    @abstractmethod
    def _read_tail(self, key: str, n_bytes: int) -> tuple[bytes, int]:
        """The last ``n_bytes`` bytes (the whole object when it is shorter) and the object's
        size, in one request; raises ArtifactNotFound, TransientReadError for a body cut short."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one key; a missing key is not an error."""

    @abstractmethod
    def discard_temporaries(self, prefix: str) -> int:
        """Remove what killed writers left under ``prefix`` (temp files, unfinished uploads);
        only for a prefix no live writer uses. Returns how many were removed."""

    def uri_for(self, key: str) -> str:
        return join_uri(self.uri, key)

    def child(self, prefix: str) -> Store:
        """The same store rooted one level down."""
        return self.reopen(self.uri_for(prefix))

    def reopen(self, uri: str) -> Store:
        """A store for another URI with this store's settings (the S3 endpoint)."""
        return open_store(uri, endpoint_url=self.endpoint_url)

    def _retrying(self, key: str, read: Callable[[], _T]) -> _T:
        """``read()`` with bounded retries on cut-short bodies and on bytes that do not match
        the sha256 recorded with the object (a corrupt transfer, not a corrupt object, when a
        later try matches). A mismatch against a manifest is never retried: that is final."""
        for attempt in range(1, self.read_attempts + 1):
            try:
                return read()
            except (TransientReadError, _StoredChecksumMismatch) as exc:
                if attempt == self.read_attempts:
                    if isinstance(exc, _StoredChecksumMismatch):
                        raise ChecksumMismatch(str(exc)) from None
                    raise
                delay = backoff_s(attempt)
                log.warning(
                    "read of %s failed (%s); retry %d/%d in %.2f s",
                    self.uri_for(key),
                    exc,
                    attempt,
                    self.read_attempts - 1,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def get_bytes(self, key: str, *, sha256: str | None = None) -> bytes:
        """Read and verify against the recorded sha256 (and ``sha256`` when given)."""

        def read() -> bytes:
            data, info = self._read(key)
            _verify(self.uri_for(key), sha256_bytes(data), info.sha256, sha256)
            return data

        return self._retrying(key, read)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Exactly ``length`` bytes from byte ``start`` of the object, without transferring the
        rest (a Parquet footer from the end of a shard; ``head`` gives the size). The recorded
        sha256 covers the whole object, so a part cannot be checked against it: only a whole
        read (``get_bytes``/``get_file``) verifies. A range that runs past the end of the object
        is a StorageError naming both; a body cut short in transfer is retried as whole reads
        are."""
        if start < 0 or length < 0:
            raise ValueError(f"byte range start={start}, length={length} must not be negative")
        if length == 0:
            return b""
        data = self._retrying(key, lambda: self._read_range(key, start, length))
        if len(data) != length:
            raise self._range_past_end(key, start, length, start + len(data))
        return data

    def get_tail(self, key: str, n_bytes: int) -> tuple[bytes, int]:
        """The last ``n_bytes`` bytes of the object (all of it when it is shorter) and its size
        in bytes, from one request: S3's suffix range ``bytes=-N``, whose answer carries the
        object's size, so no HEAD is needed. Like ``get_range``: not checked against the
        recorded sha256, a body cut short is retried, a missing key is ArtifactNotFound."""
        if n_bytes <= 0:
            raise ValueError(f"tail length n_bytes={n_bytes} must be positive")

        def read() -> tuple[bytes, int]:
            data, size_bytes = self._read_tail(key, n_bytes)
            if len(data) != min(n_bytes, size_bytes):
                raise TransientReadError(
                    f"read of the last {n_bytes} bytes of {self.uri_for(key)} "
                    f"({size_bytes} bytes) returned {len(data)} bytes"
                )
            return data, size_bytes

        return self._retrying(key, read)

    def _range_past_end(
        self, key: str, start: int, length: int, size_bytes: int | None
    ) -> StorageError:
        size = f"{size_bytes} bytes" if size_bytes is not None else f"it ends before byte {start}"
        return StorageError(
            f"bytes {start}-{start + length - 1} of {self.uri_for(key)} run past the end of the "
            f"object ({size}): it was replaced or cut short since its size was read; read its "
            "size again, or restore it from its producer"
        )

    def open_ranged(self, key: str, *, tail_bytes: int = RANGED_TAIL_BYTES) -> RangedReader:
        """The object as a read-only, seekable file for readers that need a little of a large
        object (pyarrow reading a Parquet footer). Opening it is one request, ``get_tail``: the
        size and the last ``tail_bytes`` bytes, from which reads of the end are served; any
        other read is one ranged read of the bytes asked for. ArtifactNotFound when it does not
        exist. Nothing read through it is checked against the recorded sha256 (that covers the
        whole object)."""
        tail, size_bytes = self.get_tail(key, tail_bytes)
        return RangedReader(self, key, size_bytes, tail=tail)

    def _missing(self, key: str) -> ArtifactNotFound:
        return ArtifactNotFound(
            f"missing artifact: {self.uri_for(key)} does not exist; check the URI or run the "
            "stage that produces it first"
        )

    def get_editable_bytes(self, key: str) -> bytes:
        """Read a file people are meant to edit by hand (a schema, a config) without the sha256
        check: its recorded digest goes stale with every edit. Never use it for artifacts."""
        return self._retrying(key, lambda: self._read(key)[0])

    def get_file(self, key: str, path: str | Path, *, sha256: str | None = None) -> ObjectInfo:
        """Download to ``path`` atomically and verify; a bad download leaves nothing behind."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)

        def download() -> ObjectInfo:
            with _atomic_local_path(path) as tmp:
                info = self._download(key, tmp)
                _verify(self.uri_for(key), sha256_file(tmp), info.sha256, sha256)
            return info

        return self._retrying(key, download)

    def put_json(self, key: str, obj: Any, **conditions: Any) -> ObjectInfo:
        data = json.dumps(obj, indent=2, sort_keys=True).encode()
        return self.put_bytes(key, data, **conditions)

    def get_json(self, key: str, *, sha256: str | None = None) -> Any:
        data = self.get_bytes(key, sha256=sha256)
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise StorageError(
                f"{self.uri_for(key)} is not valid JSON ({exc}); the object is corrupt, "
                "restore it from its producer or rerun the stage that writes it"
            ) from exc

    def exists(self, key: str) -> bool:
        return self.head(key) is not None


class RangedReader(io.RawIOBase):
    """A stored object of known size as a read-only file. ``tail``, the object's last bytes
    when the opener already has them, serves every read of the end; any other read is one
    ``get_range`` of exactly the bytes asked for that lie before the tail (nothing is read
    ahead), so a reader that seeks to the end and reads a footer transfers what it reads."""

    def __init__(self, store: Store, key: str, size_bytes: int, *, tail: bytes = b""):
        super().__init__()
        if len(tail) > size_bytes:
            raise ValueError(f"a tail of {len(tail)} bytes is longer than the object")
        self._store = store
        self._key = key
        self._size_bytes = size_bytes
        self._tail = tail
        self._tail_start = size_bytes - len(tail)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size_bytes}
        position = base[whence] + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        start = self._position
        end = start + max(0, min(len(buffer), self._size_bytes - start))
        before_tail = max(0, min(end, self._tail_start) - start)
        if before_tail:
            buffer[:before_tail] = self._store.get_range(self._key, start, before_tail)
        in_tail = end - start - before_tail
        if in_tail:
            offset = start + before_tail - self._tail_start
            buffer[before_tail : before_tail + in_tail] = self._tail[offset : offset + in_tail]
        self._position = end
        return end - start


class _StoredChecksumMismatch(ChecksumMismatch):
    """The bytes read do not match the digest stored with the object: retried, since a
    transfer cut short or garbled in flight looks the same as corruption at rest."""


def _verify(uri: str, actual: str, recorded: str, expected: str | None) -> None:
    if recorded and actual != recorded:
        raise _StoredChecksumMismatch(
            f"{uri} is corrupt: sha256 {actual[:12]}… does not match the recorded "
            f"{recorded[:12]}…; rerun the stage that wrote it"
        )
    if expected and actual != expected:
        raise ChecksumMismatch(
            f"{uri} does not match its manifest: sha256 {actual[:12]}… is not the expected "
            f"{expected[:12]}…; the artifact was replaced or corrupted, "
            "rerun the stage that wrote it"
        )


@functools.cache
def file_mode() -> int:
    """The mode ``open()`` would give a new file under the process umask (usually 0644 or 0664).

    mkstemp creates 0600 files; artifacts are renamed from such temp files, so they get this mode
    instead, readable by the group as any other file the user writes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)  # no /proc: read the umask the only other way, by setting it
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def _atomic_local_path(final: Path) -> Iterator[Path]:
    """A temp path beside ``final`` that is renamed over it only if the block succeeds."""
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.fchmod(fd, file_mode())
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


BOOKKEEPING_DIR = ".trainpipe"


class FileStore(Store):
    """A directory on a local or mounted filesystem.

    The sha256 of ``a/b`` is recorded in the sidecar ``a/.trainpipe/b.sha256``, written before the
    data is renamed into place, so a reader that can see the data can always check it. The
    sidecars and the per-key lock files live in that hidden sub-folder, out of the way of people
    looking at their artifacts; keys never include hidden names, so ``list`` skips it.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.uri = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        normalized = posixpath.normpath(key)
        if normalized.startswith(("../", "/")) or normalized == "..":
            raise StorageError(f"key {key!r} escapes the store root {self.uri}")
        return self.root / normalized

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.parent / BOOKKEEPING_DIR / f"{path.name}.sha256"

    @staticmethod
    def _legacy_sidecar(path: Path) -> Path:
        """Where stores written before 0.2 keep the sha256: beside the file."""
        return path.with_name(f".{path.name}.sha256")

    @contextlib.contextmanager
    def _key_lock(self, path: Path) -> Iterator[None]:
        (path.parent / BOOKKEEPING_DIR).mkdir(parents=True, exist_ok=True)
        lock_path = path.parent / BOOKKEEPING_DIR / f"{path.name}.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _commit(self, path: Path, tmp: Path, digest: str) -> None:
        with _atomic_local_path(self._sidecar(path)) as side_tmp:
            side_tmp.write_text(digest)
        os.replace(tmp, path)

    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        path = self._path(key)
        digest = sha256_bytes(data)
        with self._key_lock(path):
            current = self.head(key)
            if if_none_match and current is not None:
                raise PreconditionFailed(f"{self.uri_for(key)} already exists")
            if if_match is not None and (current is None or current.etag != if_match):
                raise PreconditionFailed(f"{self.uri_for(key)} changed since it was read")
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.fchmod(fd, file_mode())
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                self._commit(path, tmp, digest)
            finally:
                tmp.unlink(missing_ok=True)
        return ObjectInfo(key, len(data), digest, digest)

    def put_file(self, key: str, path: str | Path) -> ObjectInfo:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        with self._key_lock(final), _atomic_local_path(final) as tmp:
            digest = hashlib.sha256()
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                for chunk in iter(lambda: src.read(_CHUNK_BYTES), b""):
                    digest.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            hexdigest = digest.hexdigest()
            with _atomic_local_path(self._sidecar(final)) as side_tmp:
                side_tmp.write_text(hexdigest)
            size = tmp.stat().st_size
        return ObjectInfo(key, size, hexdigest, hexdigest)

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            size = path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):  # a file where a folder was expected
            return None
        digest = ""
        for sidecar in (self._sidecar(path), self._legacy_sidecar(path)):
            with contextlib.suppress(FileNotFoundError):
                digest = sidecar.read_text().strip()
                break
        return ObjectInfo(key, size, digest, digest)

    def _read(self, key: str) -> tuple[bytes, ObjectInfo]:
        info = self.head(key)
        if info is None or self._path(key).is_dir():
            raise self._missing(key)
        return self._path(key).read_bytes(), info

    def _download(self, key: str, path: Path) -> ObjectInfo:
        info = self.head(key)
        if info is None:
            raise self._missing(key)
        with open(self._path(key), "rb") as src, open(path, "wb") as dst:
            for chunk in iter(lambda: src.read(_CHUNK_BYTES), b""):
                dst.write(chunk)
        return info

    def _read_range(self, key: str, start: int, length: int) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read(length)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._missing(key) from None

    def _read_tail(self, key: str, n_bytes: int) -> tuple[bytes, int]:
        try:
            with open(self._path(key), "rb") as f:
                size_bytes = os.fstat(f.fileno()).st_size
                f.seek(max(0, size_bytes - n_bytes))
                return f.read(n_bytes), size_bytes
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._missing(key) from None

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            relative = path.relative_to(self.root)
            # Hidden names are bookkeeping (sidecars, locks, temp files), never keys.
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                keys.append(relative.as_posix())
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        self._sidecar(path).unlink(missing_ok=True)
        self._legacy_sidecar(path).unlink(missing_ok=True)

    def discard_temporaries(self, prefix: str) -> int:
        base = self._path(prefix)
        if not base.is_dir():
            return 0
        stale = [p for p in base.rglob(".*.tmp") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)


class S3Store(Store):
    """An S3 bucket and prefix through boto3 (AWS, MinIO, SeaweedFS, Ceph, moto).

    Credentials come from the standard AWS chain (env, shared config, IRSA); the endpoint from
    ``endpoint_url`` or AWS_ENDPOINT_URL. The sha256 is stored as object metadata.
    """

    read_attempts = READ_ATTEMPTS

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        # "standard" retries 503 SlowDown, other 5xx and connections reset before an answer,
        # with jittered exponential backoff; body reads are retried by Store._retrying.
        config = Config(
            retries={"mode": "standard", "total_max_attempts": REQUEST_ATTEMPTS},
            connect_timeout=10,
            read_timeout=60,
        )
        self._client = boto3.client("s3", endpoint_url=self.endpoint_url, config=config)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}".lstrip("/") if self.prefix else key

    def _translate(self, exc: Exception, key: str) -> StorageError:
        from botocore.exceptions import ClientError, NoCredentialsError

        uri = self.uri_for(key)
        if isinstance(exc, NoCredentialsError):
            return StorageError(
                f"no AWS credentials for {uri}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "a profile, or IRSA on the pod"
            )
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return ArtifactNotFound(
                    f"missing artifact: {uri} does not exist; check the URI or run the stage "
                    "that produces it first"
                )
            if code == "NoSuchBucket":
                return StorageError(
                    f"bucket {self.bucket!r} does not exist at "
                    f"{self.endpoint_url or 'AWS S3'}; create it or fix the storage URI"
                )
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return PreconditionFailed(f"{uri} changed since it was read ({code})")
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StorageError(f"access to {uri} denied ({code}); check the credentials")
            return StorageError(f"S3 request for {uri} failed: {code or exc}")
        from botocore.exceptions import EndpointConnectionError

        if isinstance(exc, EndpointConnectionError):
            return StorageError(
                f"cannot reach the S3 endpoint for {uri} ({exc}); check AWS_ENDPOINT_URL "
                "or storage.endpoint_url"
            )
        return StorageError(f"S3 request for {uri} failed: {exc}")

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )
        from urllib3.exceptions import HTTPError as URLLib3Error

        try:
            yield
        except (
            IncompleteReadError,
            ResponseStreamingError,
            ConnectionClosedError,
            ReadTimeoutError,
            URLLib3Error,
            ConnectionError,
        ) as exc:
            uri = self.uri_for(key)
            raise TransientReadError(f"S3 read of {uri} was cut short: {exc}") from exc
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, key) from exc

    def _conditional_write_landed(self, key: str, digest: str) -> ObjectInfo | None:
        """After PreconditionFailed: the object when it already holds exactly our bytes.

        A conditional write the server applied but whose answer was lost gets retried by
        botocore, and the retry loses against our own first write. Our callers' records carry
        timestamps and run ids, so equal bytes mean it is our write, and it succeeded.
        """
        info = self.head(key)
        return info if info is not None and info.sha256 == digest else None

    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        digest = sha256_bytes(data)
        kwargs: dict[str, Any] = {"Metadata": {SHA256_METADATA_KEY: digest}}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            with self._errors(key):
                response = self._client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=data, **kwargs
                )
        except PreconditionFailed:
            landed = self._conditional_write_landed(key, digest)
            if landed is None:
                raise
            return landed
        except TransientReadError as exc:
            # The answer to a write was lost: the write may or may not have been applied.
            landed = self._conditional_write_landed(key, digest)
            if landed is None:
                raise StorageError(f"S3 write of {self.uri_for(key)} failed: {exc}") from exc
            return landed
        return ObjectInfo(key, len(data), digest, response["ETag"])

    def put_file(self, key: str, path: str | Path) -> ObjectInfo:
        # upload_file switches to multipart for large files; S3 makes the object visible only
        # when the upload completes, which is the atomicity we need.
        from boto3.exceptions import S3UploadFailedError

        digest = sha256_file(path)
        try:
            with self._errors(key):
                self._client.upload_file(
                    str(path),
                    self.bucket,
                    self._key(key),
                    ExtraArgs={"Metadata": {SHA256_METADATA_KEY: digest}},
                )
        except (S3UploadFailedError, TransientReadError) as exc:
            raise StorageError(f"S3 upload of {self.uri_for(key)} failed: {exc}") from exc
        info = self.head(key)
        assert info is not None, "object must exist right after a completed upload"
        return info

    def head(self, key: str) -> ObjectInfo | None:
        return self._retrying(key, lambda: self._head(key))

    def _head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            with self._errors(key):
                response = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in (
                "404",
                "NoSuchKey",
                "NotFound",
            ):
                return None
            raise
        return ObjectInfo(
            key,
            response["ContentLength"],
            response.get("Metadata", {}).get(SHA256_METADATA_KEY, ""),
            response["ETag"],
        )

    def _read(self, key: str) -> tuple[bytes, ObjectInfo]:
        with self._errors(key):
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            with contextlib.closing(response["Body"]) as body:
                data = body.read()
        if len(data) != response["ContentLength"]:
            raise TransientReadError(
                f"S3 read of {self.uri_for(key)} returned {len(data)} of "
                f"{response['ContentLength']} bytes"
            )
        info = ObjectInfo(
            key,
            len(data),
            response.get("Metadata", {}).get(SHA256_METADATA_KEY, ""),
            response["ETag"],
        )
        return data, info

    def _get_ranged(self, key: str, byte_range: str) -> tuple[bytes, dict[str, Any]] | None:
        """One GET with ``Range: byte_range``: the body (checked against its Content-Length)
        and the response, or None when the server answers that no byte is in the range."""
        from botocore.exceptions import ClientError

        try:
            with self._errors(key):
                response = self._client.get_object(
                    Bucket=self.bucket, Key=self._key(key), Range=byte_range
                )
                with contextlib.closing(response["Body"]) as body:
                    data = body.read()
        except StorageError as exc:
            cause = exc.__cause__
            code = (
                cause.response.get("Error", {}).get("Code")
                if isinstance(cause, ClientError)
                else None
            )
            if code in ("InvalidRange", "416"):
                return None
            raise
        if len(data) != response["ContentLength"]:
            raise TransientReadError(
                f"S3 read of {self.uri_for(key)} {byte_range} returned {len(data)} of "
                f"{response['ContentLength']} bytes"
            )
        return data, response

    def _ranges_ignored(self, key: str, asked: str, got_bytes: int) -> StorageError:
        return StorageError(
            f"the S3 endpoint answered a read of {asked} of {self.uri_for(key)} with "
            f"{got_bytes} bytes: it does not support ranged reads; use an S3 service that does "
            "(AWS, MinIO, Ceph and SeaweedFS all do)"
        )

    def _read_range(self, key: str, start: int, length: int) -> bytes:
        answer = self._get_ranged(key, f"bytes={start}-{start + length - 1}")
        if answer is None:
            raise self._range_past_end(key, start, length, None)
        data, _ = answer
        if len(data) > length:  # a 200 with the whole object: the Range header was ignored
            raise self._ranges_ignored(key, f"bytes {start}-{start + length - 1}", len(data))
        return data

    def _read_tail(self, key: str, n_bytes: int) -> tuple[bytes, int]:
        answer = self._get_ranged(key, f"bytes=-{n_bytes}")
        if answer is None:  # no last bytes to give: the object is empty
            return b"", 0
        data, response = answer
        content_range = response.get("ContentRange")
        if content_range is None:
            # A 200 with the whole object, which is a suffix's answer only when the object is
            # no longer than the suffix (moto answers an empty object so). Anything longer is
            # an endpoint that ignores Range, and would download every shard whole to read its
            # footer: refused, as get_range refuses it.
            if len(data) > n_bytes:
                raise self._ranges_ignored(key, f"the last {n_bytes} bytes", len(data))
            return data, len(data)
        match = _CONTENT_RANGE.fullmatch(content_range.strip())
        if (
            match is None
            or int(match[2]) != int(match[3]) - 1
            or int(match[2]) - int(match[1]) + 1 != len(data)
        ):
            raise StorageError(
                f"the S3 endpoint answered a read of the last {n_bytes} bytes of "
                f"{self.uri_for(key)} with Content-Range {content_range!r}, not the object's "
                "end; use an S3 service that supports suffix ranges (bytes=-N), as AWS S3 does"
            )
        return data, int(match[3])

    def _download(self, key: str, path: Path) -> ObjectInfo:
        info = self.head(key)
        if info is None:
            raise self._translate(_not_found_error(), key)
        from s3transfer.exceptions import RetriesExceededError

        try:
            with self._errors(key):
                self._client.download_file(self.bucket, self._key(key), str(path))
        except RetriesExceededError as exc:
            raise TransientReadError(f"S3 download of {self.uri_for(key)} failed: {exc}") from exc
        return info

    def list(self, prefix: str = "") -> list[str]:
        return self._retrying(prefix, lambda: self._list(prefix))

    def _list(self, prefix: str) -> list[str]:
        full_prefix = self._key(prefix)
        strip = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        with self._errors(prefix):
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for obj in page.get("Contents", []):
                    keys.append(obj["Key"][len(strip) :])
        return sorted(keys)

    def delete(self, key: str) -> None:
        with self._errors(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def discard_temporaries(self, prefix: str) -> int:
        # S3's temp files are multipart uploads that never completed: invisible, but billed.
        with self._errors(prefix):
            listed = self._client.list_multipart_uploads(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            uploads = listed.get("Uploads", [])
            for upload in uploads:
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        return len(uploads)


def _not_found_error() -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": "NoSuchKey", "Message": "Not Found"}}, "HeadObject")


def open_store(uri: str, *, endpoint_url: str | None = None) -> Store:
    """A Store for ``file:///path``, a plain local path, or ``s3://bucket/prefix``."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if len(parsed.netloc) < 3:
            raise StorageError(f"storage URI {uri!r} has no valid bucket; use s3://bucket/prefix")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=endpoint_url)
    if parsed.scheme == "file":
        return FileStore(parsed.path)
    if parsed.scheme == "":
        return FileStore(uri)
    raise StorageError(
        f"unsupported storage URI scheme {parsed.scheme!r} in {uri!r}; use file:// or s3://"
    )


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://b/p/x/file.onnx`` -> (``s3://b/p/x``, ``file.onnx``)."""
    head, _, tail = uri.rstrip("/").rpartition("/")
    return head, tail
