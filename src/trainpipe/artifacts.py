"""Artifact sets: a folder of files plus a ``manifest.json`` written last.

A stage writes its outputs into an :class:`ArtifactWriter`; ``commit()`` writes the manifest
(sha256, size, lineage, timing) only after every file is in place, so a folder without a
manifest is by definition incomplete and is never read. :class:`ArtifactSet` reads a committed
folder and checks every file against the manifest.

    writer = ArtifactWriter(open_store(uri), "runs/r1/pretrain", stage="pretrain", run_id="r1")
    writer.put_bytes("encoder.pt", data)
    writer.commit(summary={"final_loss": 0.12})
    encoder = ArtifactSet.open_in(store, "runs/r1/pretrain").get_bytes("encoder.pt")
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainpipe import __version__
from trainpipe.storage import (
    ArtifactNotFound,
    ObjectInfo,
    StorageError,
    Store,
    join_uri,
    open_store,
)

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1


class ArtifactWriter:
    """Collects one stage's outputs under ``store/prefix`` and commits them with a manifest."""

    def __init__(
        self,
        store: Store,
        prefix: str,
        *,
        stage: str,
        run_id: str,
        inputs: dict[str, str] | None = None,
        started: tuple[datetime, float] | None = None,
    ):
        """``started``: (wall clock, monotonic) when the producing work began, so the manifest's
        ``wall_s`` covers the work and not just the writing; defaults to now."""
        self.store = store
        self.prefix = prefix.strip("/")
        self.stage = stage
        self.run_id = run_id
        self.inputs = dict(inputs or {})
        self.files: dict[str, dict[str, Any]] = {}
        self._started_at, self._started_monotonic = started or (datetime.now(UTC), time.monotonic())
        if store.exists(self._key(MANIFEST_NAME)):
            raise StorageError(
                f"{self.uri} is already committed; artifact sets are immutable, "
                "use a new run id or version"
            )

    @property
    def uri(self) -> str:
        return self.store.uri_for(self.prefix)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _record(self, name: str, info: ObjectInfo) -> str:
        self.files[name] = {"sha256": info.sha256, "size_bytes": info.size_bytes}
        return self.store.uri_for(self._key(name))

    def put_bytes(self, name: str, data: bytes) -> str:
        return self._record(name, self.store.put_bytes(self._key(name), data))

    def put_json(self, name: str, obj: Any) -> str:
        return self._record(name, self.store.put_json(self._key(name), obj))

    def put_text(self, name: str, text: str) -> str:
        return self.put_bytes(name, text.encode())

    def put_file(self, name: str, path: str | Path) -> str:
        return self._record(name, self.store.put_file(self._key(name), path))

    def commit(self, *, summary: dict[str, Any] | None = None) -> str:
        """Write the manifest last; returns the artifact set's URI."""
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "stage": self.stage,
            "run_id": self.run_id,
            "started_at": self._started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "wall_s": round(time.monotonic() - self._started_monotonic, 3),
            "files": self.files,
            "lineage": {"inputs": self.inputs, "code_version": __version__},
            "summary": summary or {},
        }
        self.store.put_json(self._key(MANIFEST_NAME), manifest, if_none_match=True)
        return self.uri


class ArtifactSet:
    """A committed artifact folder; every read is checked against the manifest's sha256."""

    def __init__(self, store: Store, manifest: dict[str, Any]):
        self.store = store
        self.manifest = manifest

    @classmethod
    def open(cls, uri: str, *, endpoint_url: str | None = None) -> ArtifactSet:
        return cls.from_store(open_store(uri, endpoint_url=endpoint_url))

    @classmethod
    def open_in(cls, store: Store, prefix: str) -> ArtifactSet:
        """The artifact set under ``prefix`` of ``store``, with the store's settings (endpoint)."""
        return cls.from_store(store.child(prefix))

    @classmethod
    def from_store(cls, store: Store) -> ArtifactSet:
        """The artifact set rooted at ``store``."""
        uri = store.uri
        try:
            manifest = store.get_json(MANIFEST_NAME)
        except ArtifactNotFound as exc:
            raise ArtifactNotFound(
                f"missing artifact: {join_uri(uri, MANIFEST_NAME)} does not exist, so {uri} is "
                "not a complete artifact set; run the stage that produces it (again)"
            ) from exc
        if manifest.get("schema_version") != MANIFEST_SCHEMA_VERSION:
            raise StorageError(
                f"{uri}/manifest.json has schema_version {manifest.get('schema_version')!r}; "
                f"this trainpipe reads version {MANIFEST_SCHEMA_VERSION}"
            )
        return cls(store, manifest)

    @property
    def uri(self) -> str:
        return self.store.uri

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest.get("summary", {})

    def names(self) -> list[str]:
        return sorted(self.manifest["files"])

    def _expected_sha256(self, name: str) -> str:
        try:
            return self.manifest["files"][name]["sha256"]
        except KeyError:
            raise ArtifactNotFound(
                f"missing artifact: {name!r} is not in {self.uri}/manifest.json "
                f"(it lists {', '.join(self.names()) or 'nothing'})"
            ) from None

    def get_bytes(self, name: str) -> bytes:
        return self.store.get_bytes(name, sha256=self._expected_sha256(name))

    def get_json(self, name: str) -> Any:
        return json.loads(self.get_bytes(name))

    def get_file(self, name: str, path: str | Path) -> Path:
        self.store.get_file(name, path, sha256=self._expected_sha256(name))
        return Path(path)

    def uri_for(self, name: str) -> str:
        return self.store.uri_for(name)
