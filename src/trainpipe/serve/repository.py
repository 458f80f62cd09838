"""Which model the server answers with, and following the registry's champion pointer.

``--model`` is a model package (a folder with manifest.json and model.json), a registry model
(the folder holding champion.json), or a single ``.onnx`` file (inside a package it is served as
that package, with its manifest checks). For a registry model a background thread re-reads
champion.json every ``poll_interval_s``; when it names another version, that version is loaded,
verified and warmed up off the request path, then swapped in with one reference assignment.
Requests that already picked the old model finish on it (its batcher drains before it stops).
A version that fails to load or verify is refused once (logged, counted in
``trainpipe_serve_model_loads{outcome="refused"}``) and the old version keeps serving until
champion.json changes again.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading

from trainpipe.artifacts import MANIFEST_NAME
from trainpipe.registry import CHAMPION_NAME, Champion, Registry, RegistryError
from trainpipe.serve.config import ServeConfig
from trainpipe.serve.errors import ModelLoadError, ModelNotFound, ModelNotReady
from trainpipe.serve.metrics import ServeMetrics
from trainpipe.serve.model import MODEL_FILE, LoadedModel, load_model_package, load_onnx_file
from trainpipe.storage import StorageError, open_store, split_uri

log = logging.getLogger("trainpipe.serve")

OLD_MODEL_DRAIN_S = 30.0
"""How long a swap waits for requests admitted to the old model before releasing it."""


class ModelRepository:
    def __init__(self, model_uri: str, config: ServeConfig, metrics: ServeMetrics):
        self.model_uri = model_uri.rstrip("/")
        self.config = config
        self.metrics = metrics
        self._current: LoadedModel | None = None
        self._follows_registry = False
        self._refused: Champion | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._swap_lock = threading.Lock()

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def follows_registry(self) -> bool:
        return self._follows_registry

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The served model by name (and version); raises ModelNotReady or ModelNotFound."""
        model = self._current
        if model is None:
            raise ModelNotReady(
                f"no model is loaded yet (loading {self.model_uri}); retry when "
                "/v2/health/ready answers 200"
            )
        if name != model.name:
            raise ModelNotFound(
                f"model {name!r} is not served here; this server serves {model.name!r}"
            )
        if version is not None and version != model.version:
            raise ModelNotFound(
                f"version {version!r} of model {name!r} is not loaded; this server serves "
                f"version {model.version!r} (omit the version to use it)"
            )
        return model

    # -- loading -------------------------------------------------------------------------------

    def source_kind(self) -> str:
        """What ``model_uri`` names: "registry", "package", "onnx-in-package" or "onnx"; raises
        ModelLoadError (one line naming the fix) when it is none of them."""
        try:
            if self.model_uri.endswith(".onnx"):
                folder, name = split_uri(self.model_uri)
                store = open_store(folder, endpoint_url=self.config.endpoint_url)
                if not store.exists(name):
                    raise ModelLoadError(
                        f"{self.model_uri} does not exist; pass an existing .onnx file, a "
                        "model package folder or a registry model folder"
                    )
                packaged = name == MODEL_FILE and store.exists(MANIFEST_NAME)
                return "onnx-in-package" if packaged else "onnx"
            store = open_store(self.model_uri, endpoint_url=self.config.endpoint_url)
            if store.exists(CHAMPION_NAME):
                return "registry"
            if store.exists(MANIFEST_NAME):
                return "package"
        except StorageError as exc:
            raise ModelLoadError(f"cannot read {self.model_uri}: {exc}") from exc
        raise ModelLoadError(
            f"{self.model_uri} is neither a model package (no {MANIFEST_NAME}) nor a registry "
            f"model (no {CHAMPION_NAME}) nor an .onnx file; pass model.onnx, a registry version "
            "folder, the registry model folder, or an export stage output"
        )

    def describe(self) -> str:
        """One phrase for the startup line: what kind of source is served from where."""
        return {
            "registry": "the champion of registry model",
            "package": "model package",
            "onnx-in-package": "the model package holding",
            "onnx": "the single ONNX file",
        }[self.source_kind()]

    def load_initial(self) -> LoadedModel:
        """Load what ``model_uri`` names; raises ModelLoadError (the server cannot start)."""
        kind = self.source_kind()
        try:
            if kind == "registry":
                self._follows_registry = True
                champion = self._read_champion()
                model = self._load(champion.uri, champion)
            elif kind == "package":
                model = self._load(self.model_uri, None)
            elif kind == "onnx-in-package":
                model = self._load(split_uri(self.model_uri)[0], None)
            else:
                model = load_onnx_file(self.model_uri, self.config, metrics=self.metrics)
                self.metrics.model_loads.labels(model=model.name, outcome="ok").inc()
        except StorageError as exc:
            raise ModelLoadError(f"cannot read {self.model_uri}: {exc}") from exc
        self._install(model)
        return model

    def _read_champion(self) -> Champion:
        """The pointer, read by the registry's own reader (same checks as the pipeline's)."""
        try:
            champion = Registry.at(self.model_uri, endpoint_url=self.config.endpoint_url).champion()
        except RegistryError as exc:
            raise ModelLoadError(str(exc)) from exc
        if champion is None:
            raise ModelLoadError(f"{self.model_uri}/{CHAMPION_NAME} is gone; promote a version")
        return champion

    def _load(self, uri: str, champion: Champion | None) -> LoadedModel:
        # The model name is only known after model.json is read; label metrics by the champion's
        # name when there is one so a refused load is still attributed.
        label = champion.model if champion else "unknown"
        try:
            model = load_model_package(uri, self.config, metrics=self.metrics)
            if champion is not None and (champion.model, champion.version) != (
                model.name,
                model.version,
            ):
                model.close()
                raise ModelLoadError(
                    f"{self.model_uri}/{CHAMPION_NAME} names {champion.model} version "
                    f"{champion.version} but {uri} holds {model.name} version {model.version}; "
                    "point the champion at the right version folder"
                )
        except ModelLoadError:
            self.metrics.model_loads.labels(model=label, outcome="refused").inc()
            raise
        self.metrics.model_loads.labels(model=model.name, outcome="ok").inc()
        return model

    def _install(self, model: LoadedModel) -> None:
        with self._swap_lock:
            old = self._current
            self._current = model
            self.metrics.set_loaded(
                model.name, model.version, (old.name, old.version) if old else None
            )
        if old is not None:
            old.close()
            log.info(
                "now serving %s version %s (was version %s)", model.name, model.version, old.version
            )
            old.batcher.join(OLD_MODEL_DRAIN_S)  # requests admitted before the swap finish
            del old
            _release_freed_memory()

    # -- following the registry ----------------------------------------------------------------

    def poll_once(self) -> bool:
        """Check champion.json once; load and switch if it moved. True when the model changed."""
        try:
            champion = self._read_champion()
        except (StorageError, ModelLoadError) as exc:
            log.warning("cannot read the champion pointer, keeping the current model: %s", exc)
            return False
        current = self._current
        if current is not None and (champion.model, champion.version) == (
            current.name,
            current.version,
        ):
            return False
        if champion == self._refused:
            return False
        log.info(
            "champion moved to %s version %s (%s); loading it",
            *(champion.model, champion.version),
            champion.uri,
        )
        try:
            model = self._load(champion.uri, champion)
        except ModelLoadError as exc:
            self._refused = champion
            log.error(
                "refused %s version %s, still serving version %s: %s",
                champion.model,
                champion.version,
                current.version if current else "none",
                exc,
            )
            return False
        self._refused = None
        self._install(model)
        return True

    def start_following(self) -> None:
        """Poll the champion in a daemon thread (only for a registry model URI)."""
        if not self._follows_registry or self._poller is not None:
            return
        self._poller = threading.Thread(
            target=self._follow, name="trainpipe-champion-poller", daemon=True
        )
        self._poller.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.config.poll_interval_s):
            try:
                self.poll_once()
            except Exception:  # a bug here must not kill following for the server's lifetime
                log.exception(
                    "polling the champion failed; retrying in %s s", self.config.poll_interval_s
                )

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
        model = self._current
        if model is not None:
            model.close()


def _release_freed_memory() -> None:
    """Free the old session now and hand its memory back to the OS.

    The model and its batcher reference each other (the worker holds ``model.run``), so the
    session goes only when the cycle collector runs. And glibc keeps the freed ONNX Runtime
    arena in the heap, where the next session's allocations fragment it: without trimming,
    RSS grew about 1.6 MB per swap of a 6 MB model, linearly. malloc_trim is glibc's; other C
    libraries (musl, macOS) do without. In a process whose heap is frozen (``freeze_heap``) the
    old model may be among the frozen objects: it is thawed for this collection.
    """
    frozen = gc.get_freeze_count() > 0
    if frozen:
        gc.unfreeze()
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    if frozen:
        gc.freeze()


def freeze_heap() -> None:
    """Collect, then move every object alive now out of the cycle collector's sight.

    For the server's own process, once the model is loaded: the startup heap (about 50,000
    objects: libraries, the app, the model) is otherwise traversed by every full collection,
    which the objects of requests in flight trigger about once a second under load, each a pause
    of 10-80 ms for every request in flight (the p99 at 32 connections). Frozen objects are
    still freed by reference counting; only cycles among them wait for the next model swap.
    """
    gc.collect()
    gc.freeze()


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()
