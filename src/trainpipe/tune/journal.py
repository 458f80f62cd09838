"""Optuna's journal storage on the artifact store: one study shared by processes and pods.

The journal is a sequence of objects ``0000000000.json``, ``0000000001.json``, ... under a
prefix, each holding a batch of optuna's log records. Appending writes the next number with
put-if-absent (S3 ``IfNoneMatch: *``, or the file store's lock): whoever loses the race reads
what the winner wrote and tries the next number, so every reader sees one total order and no
lock service is needed. Objects are written atomically, so a reader never sees half a batch.
"""

from __future__ import annotations

import json
from typing import Any

from optuna.storages.journal import BaseJournalBackend

from trainpipe.storage import ArtifactNotFound, PreconditionFailed, Store


def _key(number: int) -> str:
    return f"{number:010d}.json"


class StoreJournalBackend(BaseJournalBackend):
    """Optuna journal backend over a :class:`~trainpipe.storage.Store` prefix."""

    def __init__(self, store: Store):
        self.store = store
        self._logs: list[dict[str, Any]] = []
        self._objects_read = 0

    def _catch_up(self) -> None:
        while True:
            try:
                batch = json.loads(self.store.get_bytes(_key(self._objects_read)))
            except ArtifactNotFound:
                return
            self._logs.extend(batch)
            self._objects_read += 1

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        self._catch_up()
        return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = json.dumps(logs).encode()
        while True:
            self._catch_up()
            try:
                self.store.put_bytes(_key(self._objects_read), data, if_none_match=True)
                return
            except PreconditionFailed:
                continue  # another writer took this number; read it and take the next
