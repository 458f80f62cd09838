"""Model registry on the artifact store: immutable versions and an atomic champion pointer.

    registry/<model>/claims/<v>             create-only claim of a version number
    registry/<model>/versions/<v>/          an artifact set: model.onnx, model.json, model.pt,
                                            metrics.json, config.json, lineage.json, ... +
                                            manifest.json (sha256 of every file, written last)
    registry/<model>/champion.json          {"version", "uri", "previous_version", "reason", ...}
    registry/<model>/history/<ts>-v<v>.json one record per promotion or rollback

A version is written completely, then committed by its manifest; it is never written again. The
champion pointer is updated last with a conditional write (compare-and-swap on its etag), so of
two pipelines that promote at once exactly one wins and the other learns it lost.

    registry = Registry(open_store("s3://bucket/prefix"), "digits-classifier")
    version = registry.register(files, run_id=run_id, lineage={...}, summary={...})
    registry.promote(version, reason="gate passed", expected=champion_the_gate_saw)
    registry.rollback()
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trainpipe.artifacts import ArtifactSet, ArtifactWriter
from trainpipe.errors import TrainpipeError
from trainpipe.storage import PreconditionFailed, StorageError, Store, open_store

CHAMPION_NAME = "champion.json"


class RegistryError(TrainpipeError):
    """The registry is inconsistent or an operation on it cannot be done."""


class PromotionConflict(RegistryError):
    """Another promotion changed the champion between our read and our write."""


@dataclass(frozen=True)
class Champion:
    version: str
    uri: str
    previous_version: str | None
    etag: str
    record: dict[str, Any]

    @property
    def model(self) -> str:
        """The model name the pointer was written for ('' in a hand-written pointer)."""
        return str(self.record.get("model", ""))


REGISTRY_PREFIX = "registry"


def model_names(store: Store) -> list[str]:
    """Every model with at least one claimed or committed version in ``store``, sorted."""
    names = set()
    for key in store.list(REGISTRY_PREFIX):
        parts = key.split("/")
        if len(parts) >= 3 and parts[2] in ("versions", "claims", CHAMPION_NAME):
            names.add(parts[1])
    return sorted(names)


class Registry:
    def __init__(self, store: Store, model_name: str, *, prefix: str | None = None):
        self.store = store
        self.model_name = model_name
        self.prefix = f"{REGISTRY_PREFIX}/{model_name}" if prefix is None else prefix.strip("/")

    @classmethod
    def at(cls, model_uri: str, *, endpoint_url: str | None = None) -> Registry:
        """The registry model whose folder is ``model_uri`` (the one holding champion.json),
        e.g. ``s3://bucket/ml/registry/digits-classifier`` as a server is given it."""
        name = model_uri.rstrip("/").rsplit("/", 1)[-1]
        return cls(open_store(model_uri, endpoint_url=endpoint_url), name, prefix="")

    @property
    def uri(self) -> str:
        return self.store.uri_for(self.prefix)

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def versions(self) -> list[str]:
        """Committed versions, oldest first."""
        found = set()
        for key in self.store.list(self._key("versions")):
            parts = (key[len(self.prefix) + 1 :] if self.prefix else key).split("/")
            if len(parts) == 3 and parts[2] == "manifest.json":
                found.add(parts[1])
        return sorted(found, key=int)

    def _claimed(self) -> list[str]:
        return sorted((k.rsplit("/", 1)[-1] for k in self.store.list(self._key("claims"))), key=int)

    def version_uri(self, version: str) -> str:
        return self.store.uri_for(self._key("versions", version))

    def open_version(self, version: str) -> ArtifactSet:
        if version not in self.versions():
            raise RegistryError(
                f"registry error: {self.model_name} has no version {version!r} "
                f"(versions: {', '.join(self.versions()) or 'none'})"
            )
        return ArtifactSet.open_in(self.store, self._key("versions", version))

    def verify_version(self, version: str) -> ArtifactSet:
        """The version, after checking it can be served: its manifest is committed, every file
        matches its recorded sha256, and model.onnx (when it has one) loads in ONNX Runtime.
        Raises RegistryError (or ChecksumMismatch) naming what is wrong."""
        artifacts = self.open_version(version)
        for name in artifacts.names():
            data = artifacts.get_bytes(name)  # ChecksumMismatch when it does not match
            if name == "model.onnx":
                _check_onnx_loads(data, f"{artifacts.uri}/model.onnx")
        return artifacts

    def _unfinished_claim(self, run_id: str) -> str | None:
        """A version number this run claimed before but never committed (the register was
        killed): the run reuses it instead of leaving a gap and a half-written folder."""
        committed = set(self.versions())
        for version in reversed(self._claimed()):
            if version in committed:
                continue
            try:
                claim = self.store.get_json(self._key("claims", version))
            except StorageError:
                continue
            if isinstance(claim, dict) and claim.get("run_id") == run_id:
                return version
        return None

    def _clear_version_folder(self, version: str) -> None:
        """Remove what a killed register left under versions/<v> (no manifest: never read)."""
        for key in self.store.list(self._key("versions", version)):
            self.store.delete(key)
        self.store.discard_temporaries(self._key("versions", version))

    def register(
        self, files: dict[str, bytes], *, run_id: str, lineage: dict[str, str], summary: dict
    ) -> str:
        """Write a new immutable version; returns its number.

        The number is claimed first with a create-only write, so two pipelines registering at
        once never write into the same folder. A run that registers again after being killed
        mid-way reuses its own unfinished claim.
        """
        for _attempt in range(100):
            version = self._unfinished_claim(run_id)
            if version is not None:
                self._clear_version_folder(version)
            else:
                existing = self._claimed()
                version = str(int(existing[-1]) + 1 if existing else 1)
                claim = {"run_id": run_id, "claimed_at": datetime.now(UTC).isoformat()}
                try:
                    self.store.put_json(self._key("claims", version), claim, if_none_match=True)
                except PreconditionFailed:
                    continue  # another pipeline holds this number; try the next one
            writer = ArtifactWriter(
                self.store,
                self._key("versions", version),
                stage="register",
                run_id=run_id,
                inputs=lineage,
            )
            for name, data in files.items():
                if name == "model.json":
                    metadata = json.loads(data)
                    metadata["version"] = version
                    data = json.dumps(metadata, indent=2).encode()
                writer.put_bytes(name, data)
            writer.commit(summary={**summary, "version": version})
            return version
        raise RegistryError(f"registry error: could not allocate a version of {self.model_name}")

    def _pointer(self, version: str, current: Champion | None, reason: str) -> dict:
        """The champion.json record that makes ``version`` the champion after ``current``."""
        return {
            "model": self.model_name,
            "version": version,
            "uri": self.version_uri(version),
            "previous_version": current.version if current else None,
            "updated_at": datetime.now(UTC).isoformat(),
            "reason": reason,
        }

    def champion(self) -> Champion | None:
        info = self.store.head(self._key(CHAMPION_NAME))
        if info is None:
            return None
        try:
            record = self.store.get_json(self._key(CHAMPION_NAME))
            version, uri = str(record["version"]), record["uri"]
        except (StorageError, KeyError, TypeError) as exc:
            raise RegistryError(
                f"registry error: {self.store.uri_for(self._key(CHAMPION_NAME))} is corrupt "
                f"({_first_line(exc)}); nothing was changed. Repair it with `trainpipe registry "
                f"promote VERSION --force --model {self.model_name}`"
            ) from None
        return Champion(version, uri, record.get("previous_version"), info.etag, record)

    def promote(
        self,
        version: str,
        *,
        reason: str,
        expected: Champion | str | None = "read",
        force: bool = False,
    ) -> Champion:
        """Point the champion at ``version`` with compare-and-swap.

        ``expected`` is the champion the caller based its decision on (None: there was none);
        by default the current one is read now. If it changed meanwhile, PromotionConflict.
        ``force`` is for people repairing a corrupt pointer: it overwrites whatever is there,
        without compare-and-swap. Either way the version is verified first (verify_version).
        """
        self.verify_version(version)
        if force:
            return self._force(version, reason)
        current = self.champion() if expected == "read" else expected
        record = self._pointer(version, current, reason)
        try:
            if current is None:
                info = self.store.put_json(self._key(CHAMPION_NAME), record, if_none_match=True)
            else:
                info = self.store.put_json(self._key(CHAMPION_NAME), record, if_match=current.etag)
        except PreconditionFailed:
            raise PromotionConflict(
                f"registry error: the champion of {self.model_name} changed while promoting "
                f"version {version}; another pipeline promoted first, nothing was changed"
            ) from None
        self._record_history(record)
        return Champion(version, record["uri"], record["previous_version"], info.etag, record)

    def _force(self, version: str, reason: str) -> Champion:
        try:
            current = self.champion()
        except RegistryError:
            current = self._last_recorded(other_than=version)  # the pointer is being repaired
        record = self._pointer(version, current, f"{reason} (forced)")
        info = self.store.put_json(self._key(CHAMPION_NAME), record)
        self._record_history(record)
        return Champion(version, record["uri"], record["previous_version"], info.etag, record)

    def _record_history(self, record: dict) -> None:
        stamp = record["updated_at"].replace(":", "").replace("+0000", "Z")
        self.store.put_json(self._key("history", f"{stamp}-v{record['version']}.json"), record)

    def history(self) -> list[dict]:
        return [self.store.get_json(k) for k in self.store.list(self._key("history"))]

    def _last_recorded(self, *, other_than: str) -> Champion | None:
        """The champion the history says was last promoted (other than ``other_than``), when
        the pointer itself is unreadable: a forced repair keeps it as previous_version, so a
        rollback still works."""
        for key in reversed(self.store.list(self._key("history"))):
            try:
                record = self.store.get_json(key)
                version = str(record["version"])
            except (StorageError, KeyError, TypeError):
                continue
            if version != other_than:
                return Champion(version, record.get("uri", ""), None, "", record)
        return None

    def rollback(self) -> Champion:
        """Make the previous champion the champion again."""
        current = self.champion()
        if current is None or not current.previous_version:
            raise RegistryError(
                f"registry error: {self.model_name} has no previous champion to roll back to"
            )
        return self.promote(
            current.previous_version,
            reason=f"rollback from version {current.version}",
            expected=current,
        )


def _check_onnx_loads(data: bytes, uri: str) -> None:
    import onnxruntime as ort

    try:
        ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own unexported exception types
        raise RegistryError(
            f"registry error: {uri} does not load in ONNX Runtime ({_first_line(exc)}); "
            "nothing was changed, promote another version or re-register this one"
        ) from None


def _first_line(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"it has no {exc.args[0]!r} field"
    if isinstance(exc, TypeError):
        return "it is not a JSON object"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
