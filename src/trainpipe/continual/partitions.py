"""Partitions under a prefix: each direct child (a file or a folder of files) is one partition.

    store = open_store("s3://bucket/incoming")
    for part in list_partitions(store):         # ordered by name
        table = read_partition(store, part)     # DataReadError when it cannot be read

Names starting with ``.`` or ``_`` (``_SUCCESS``, temp files) are not partitions. With
``data.format: shards`` a partition's ``*.parquet`` keys are its shards, streamed and never read
whole (``continual/sharded.py``); ``read_partition`` is for partitions read into memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from trainpipe.data.validation.io import DataReadError, read_table
from trainpipe.storage import Store


@dataclass(frozen=True)
class Partition:
    name: str
    keys: tuple[str, ...]
    """Keys of its data files, relative to the prefix, sorted."""


def list_partitions(store: Store) -> list[Partition]:
    grouped: dict[str, list[str]] = {}
    for key in store.list():
        name = key.split("/", 1)[0]
        if name.startswith((".", "_")) or key.rsplit("/", 1)[-1].startswith((".", "_")):
            continue
        grouped.setdefault(name, []).append(key)
    return [Partition(name, tuple(sorted(keys))) for name, keys in sorted(grouped.items())]


def new_partitions(partitions: list[Partition], consumed: set[str]) -> list[Partition]:
    """The partitions no successful run has consumed yet, in name order."""
    return [p for p in partitions if p.name not in consumed]


def read_partition(store: Store, partition: Partition) -> pa.Table:
    tables = [
        read_table(store.uri_for(key), endpoint_url=store.endpoint_url) for key in partition.keys
    ]
    try:
        return pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataReadError(
            f"{store.uri_for(partition.name)}: its files have different columns ({exc})"
        ) from None
