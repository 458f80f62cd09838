"""Which shards a process opens: a spy around the real ``ShardSet.local_path`` (every read of a
shard's rows, local or through the shard cache, goes through it) and ``ShardSet.footer`` (a
remote shard's footer is read by ranged reads, without ``local_path``), for tests that must fail
when some shards are read."""

from __future__ import annotations

from trainpipe.data.shards import ShardSet


class ShardReads:
    def __init__(self, monkeypatch):
        self.names: list[str] = []
        for method in ("local_path", "footer"):
            self._spy(monkeypatch, method)

    def _spy(self, monkeypatch, method: str) -> None:
        real = getattr(ShardSet, method)

        def spied(shard_set, shard):
            self.names.append(shard.name)
            return real(shard_set, shard)

        monkeypatch.setattr(ShardSet, method, spied)

    def of(self, partition: str) -> set[str]:
        """Shards read under ``partition`` (names relative to the continual source)."""
        return {n for n in self.names if n.startswith(f"{partition}/")}
