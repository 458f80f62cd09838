"""Which shards a process opens: a spy around the real ``ShardSet.local_path`` (every read of a
shard's bytes, local or through the shard cache, goes through it), for tests that must fail when
some shards are read."""

from __future__ import annotations

from trainpipe.data.shards import ShardSet


class ShardReads:
    def __init__(self, monkeypatch):
        self.names: list[str] = []
        real = ShardSet.local_path

        def local_path(shard_set, shard):
            self.names.append(shard.name)
            return real(shard_set, shard)

        monkeypatch.setattr(ShardSet, "local_path", local_path)

    def of(self, partition: str) -> set[str]:
        """Shards read under ``partition`` (names relative to the continual source)."""
        return {n for n in self.names if n.startswith(f"{partition}/")}
