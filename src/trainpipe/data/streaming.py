"""Training input from Parquet shards: a deterministic global order, read by DataLoader workers.

    split = StreamSplit(...)                       # one split's shards and how to encode rows
    for x, y in stream_loader(split, epoch=1, batch_size=64, start_batch=0, rank=0, world=1):
        ...                                        # this rank's share of each global batch

The order of an epoch is defined without ranks or workers: the shards are permuted by
(seed, epoch), their rows concatenated, and each block of ``shuffle_block_rows`` consecutive
positions is permuted by (seed, epoch, block). Global batch ``b`` is positions
``[b*B, (b+1)*B)``; rank ``r`` takes positions ``r::world`` of it (as the in-memory Trainer
does), and DataLoader worker ``w`` of ``K`` builds runs of ``c`` consecutive batches in turn
(run ``j`` goes to worker ``j % K``; the DataLoader hands them back in order). So any number of
ranks and workers sees the same global sequence, and resuming at batch ``b`` of an epoch needs
only (epoch, b), which the Trainer's checkpoint already holds. Row counts come from Parquet
footers, so a worker reads only the row groups of the blocks its batches touch; memory is
bounded by the shuffle block (two decoded blocks and a few row groups per worker), not by the
data.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from trainpipe.data.config import StreamingConfig
from trainpipe.data.shards import ShardInfo, ShardSet
from trainpipe.errors import TrainpipeError
from trainpipe.storage import open_store


@dataclass
class StreamSplit:
    """One split of a sharded source: which shards, and how a row becomes (x, label index)."""

    uri: str
    shards: list[ShardInfo]
    label_column: str
    feature_columns: list[str]
    feature_shape: list[int]
    label_values: list
    streaming: StreamingConfig
    seed: int = 0
    endpoint_url: str | None = None
    _set: ShardSet | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return sum(s.rows for s in self.shards)

    def __getstate__(self) -> dict:
        # A boto3 client does not cross into worker processes; each process opens its own.
        return {**self.__dict__, "_set": None}

    def shard_set(self) -> ShardSet:
        if self._set is None:
            store = open_store(self.uri, endpoint_url=self.endpoint_url)
            self._set = ShardSet(store, self.shards, None, self.streaming.cache())
        return self._set

    def with_shards(self, shards: list[ShardInfo]) -> StreamSplit:
        return StreamSplit(
            self.uri,
            shards,
            self.label_column,
            self.feature_columns,
            self.feature_shape,
            self.label_values,
            self.streaming,
            self.seed,
            self.endpoint_url,
        )

    def images(self, table) -> bool:
        from trainpipe.data.images import is_image_column

        first = table.schema.field(self.feature_columns[0])
        return len(self.feature_columns) == 1 and is_image_column(first.type)

    def encode(self, table, where: str = "", *, decode: bool = True) -> tuple[np.ndarray, ...]:
        """(x float32 [n, *feature_shape], label indices int64) of stored rows. Images (a bytes
        column) are decoded here, in the worker that reads them; ``decode=False`` leaves them
        as an object array of bytes, to decode only the rows a batch takes."""
        from trainpipe.data.config import DataConfig
        from trainpipe.data.datasets import table_to_arrays
        from trainpipe.data.images import decode_images

        where = where or self.uri
        if self.images(table):
            encoded = table.column(self.feature_columns[0]).to_pylist()
            x = (
                decode_images(encoded, self.feature_shape, where)
                if decode
                else np.array([*encoded, None], dtype=object)[:-1]  # keeps 1-D for any bytes
            )
            labels = table.column(self.label_column).to_numpy(zero_copy_only=False)
        else:
            cfg = DataConfig.model_construct(feature_shape=self.feature_shape)
            x, labels, _ = table_to_arrays(
                table, self.label_column, self.feature_columns, where, cfg
            )
        values = np.asarray(self.label_values)
        index = np.searchsorted(values, labels)
        bad = index >= len(values)
        bad[~bad] = values[index[~bad]] != labels[~bad]
        if bad.any():
            from trainpipe.errors import DataError

            raise DataError(
                f"data error: {self.uri} has label {labels[bad][0]!r} that validation did not "
                "see; rerun validate_data on the current shards"
            )
        if x.dtype != object:
            x = x.astype(np.float32, copy=False)
        return x, index.astype(np.int64)


class EpochOrder:
    """The global order of one epoch, block by block: which stored rows make up block ``k``
    (consecutive rows of the permuted shards) and the permutation applied within it."""

    def __init__(self, shard_rows: list[int], seed: int, epoch: int, block_rows: int, shuffle):
        rows = np.asarray(shard_rows, dtype=np.int64)
        self.total = int(rows.sum())
        self.seed, self.epoch, self.block_rows, self.shuffle = seed, epoch, block_rows, shuffle
        self.shard_order = (
            np.random.default_rng([seed, epoch]).permutation(len(rows))
            if shuffle
            else np.arange(len(rows))
        )
        self.ends = np.cumsum(rows[self.shard_order])
        self.starts = self.ends - rows[self.shard_order]

    def block_size(self, block: int) -> int:
        return min(self.block_rows, self.total - block * self.block_rows)

    def ranges(self, block: int) -> list[tuple[int, int, int]]:
        """(shard index, first row, end row) of the stored rows that form ``block``."""
        lo, hi = block * self.block_rows, block * self.block_rows + self.block_size(block)
        first = int(np.searchsorted(self.ends, lo, side="right"))
        out = []
        for slot in range(first, len(self.ends)):
            if self.starts[slot] >= hi:
                break
            a, b = max(lo, self.starts[slot]), min(hi, self.ends[slot])
            offset = int(self.starts[slot])
            out.append((int(self.shard_order[slot]), int(a) - offset, int(b) - offset))
        return out

    def permutation(self, block: int) -> np.ndarray:
        size = self.block_size(block)
        if not self.shuffle:
            return np.arange(size)
        return np.random.default_rng([self.seed, self.epoch, block]).permutation(size)


class _BlockReader:
    """One process's decoded rows of the current shuffle block (and the row groups it spans),
    so a batch is a single gather: memory is about one block, whatever the data size."""

    def __init__(self, split: StreamSplit, order: EpochOrder):
        self.split, self.order = split, order
        self.starts = [np.concatenate([[0], np.cumsum(s.row_group_rows)]) for s in split.shards]
        self.blocks: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self.groups: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def _group(self, shard: int, group: int) -> tuple[np.ndarray, np.ndarray]:
        key = (shard, group)
        if key not in self.groups:
            shard_set, info = self.split.shard_set(), self.split.shards[shard]
            table = shard_set.read_row_group(info, group)
            where = f"shard {shard_set.store.uri_for(info.name)}"
            # Images stay encoded in the block: a worker decodes only the rows it hands out.
            self.groups[key] = self.split.encode(table, where, decode=False)
            while len(self.groups) > 4:  # groups spanning a block boundary are read once
                self.groups.popitem(last=False)
        return self.groups[key]

    def block(self, k: int) -> tuple[np.ndarray, ...]:
        """(x, y, origin: shard index and row of each, the block's permutation)."""
        if k not in self.blocks:
            xs, ys, origins = [], [], []
            for shard, a, b in self.order.ranges(k):
                starts = self.starts[shard]
                first = int(np.searchsorted(starts, a, side="right")) - 1
                for group in range(first, len(starts) - 1):
                    if starts[group] >= b:
                        break
                    gx, gy = self._group(shard, group)
                    lo, hi = max(a, starts[group]), min(b, starts[group + 1])
                    xs.append(gx[lo - starts[group] : hi - starts[group]])
                    ys.append(gy[lo - starts[group] : hi - starts[group]])
                    origins.append(np.stack([np.full(hi - lo, shard), np.arange(lo, hi)], 1))
            self.blocks[k] = (
                np.concatenate(xs),
                np.concatenate(ys),
                np.concatenate(origins),
                self.order.permutation(k),
            )
            while len(self.blocks) > 2:  # a batch may straddle two blocks
                self.blocks.popitem(last=False)
        return self.blocks[k]

    def _finish(self, x: np.ndarray, origin: np.ndarray) -> np.ndarray:
        if x.dtype != object:
            return x
        from trainpipe.data.images import decode_images

        shard_set = self.split.shard_set()

        def where(i: int) -> str:
            shard, row = origin[i]
            return f"shard {shard_set.store.uri_for(self.split.shards[shard].name)} row {row}"

        return decode_images(x, self.split.feature_shape, where)

    def rows(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        block_rows = self.order.block_rows
        first, last = int(positions[0]) // block_rows, int(positions[-1]) // block_rows
        if first == last:
            bx, by, origin, perm = self.block(first)
            index = perm[positions - first * block_rows]
            return self._finish(bx[index], origin[index]), by[index]
        x = np.empty((len(positions), *self.split.feature_shape), dtype=np.float32)
        y = np.empty(len(positions), dtype=np.int64)
        for k in range(first, last + 1):
            mask = positions // block_rows == k
            bx, by, origin, perm = self.block(k)
            index = perm[positions[mask] - k * block_rows]
            x[mask], y[mask] = self._finish(bx[index], origin[index]), by[index]
        return x, y


class _Batches(torch.utils.data.IterableDataset):
    def __init__(self, split, *, epoch, batch_size, start_batch, rank, world, shuffle):
        self.split, self.epoch, self.batch_size = split, epoch, batch_size
        self.start_batch, self.rank, self.world, self.shuffle = start_batch, rank, world, shuffle

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        split = self.split
        order = EpochOrder(
            [s.rows for s in split.shards],
            split.seed,
            self.epoch,
            split.streaming.shuffle_block_rows,
            self.shuffle,
        )
        reader = _BlockReader(split, order)
        batches = math.ceil(order.total / self.batch_size)
        row_bytes = 4 * math.prod(split.feature_shape) + 8
        batch_bytes = row_bytes * math.ceil(self.batch_size / self.world)
        per_chunk = max(1, int(split.streaming.transfer_mib * 2**20 // batch_bytes))
        for first in range(self.start_batch + worker * per_chunk, batches, workers * per_chunk):
            xs, ys, sizes = [], [], []
            for batch in range(first, min(first + per_chunk, batches)):
                stop = min((batch + 1) * self.batch_size, order.total)
                positions = np.arange(batch * self.batch_size, stop)[self.rank :: self.world]
                if len(positions):
                    x, y = reader.rows(positions)
                    xs.append(x)
                    ys.append(y)
                sizes.append(len(positions))
            if not xs:
                xs.append(np.empty((0, *split.feature_shape), dtype=np.float32))
                ys.append(np.empty(0, dtype=np.int64))
            yield (
                torch.from_numpy(np.concatenate(xs)),
                torch.from_numpy(np.concatenate(ys)),
                torch.tensor(sizes),
            )


def stream_loader(
    split: StreamSplit,
    *,
    epoch: int,
    batch_size: int,
    start_batch: int = 0,
    rank: int = 0,
    world: int = 1,
    shuffle: bool = True,
    pin_memory: bool = False,
    workers: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``start_batch..`` of ``epoch``: this rank's share of each global batch, in order.

    Workers hand over about ``transfer_mib`` (several batches) at a time: each transfer between
    processes has a fixed cost, which would dominate at small batch sizes."""
    workers = split.streaming.loader_workers if workers is None else workers
    dataset = _Batches(
        split,
        epoch=epoch,
        batch_size=batch_size,
        start_batch=start_batch,
        rank=rank,
        world=world,
        shuffle=shuffle,
    )
    extra = {"prefetch_factor": split.streaming.prefetch_batches} if workers else {}
    # Its own generator: a DataLoader otherwise draws its workers' seed from the global torch
    # RNG, which would shift dropout draws after a mid-epoch resume.
    generator = torch.Generator().manual_seed(split.seed * 7919 + epoch)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        generator=generator,
        **extra,
    )
    try:
        for x, y, sizes in loader:
            counts = sizes.tolist()
            yield from zip(x.split(counts), y.split(counts), strict=True)
    except TrainpipeError as exc:
        # A worker's error arrives with its traceback in the message; keep the one line.
        last = str(exc).strip().splitlines()[-1]
        raise type(exc)(last.split(": ", 1)[1] if last.startswith("trainpipe.") else last) from None


def shard_subset(split: StreamSplit, fraction: float, seed: int) -> StreamSplit:
    """A seeded share of a streamed split's shards (at least one): the labelled subset of a
    sharded source is chosen by whole shards, so it needs no row index in memory."""
    if fraction >= 1.0:
        return split
    order = np.random.default_rng(seed).permutation(len(split.shards))
    keep = sorted(order[: max(1, round(len(split.shards) * fraction))])
    return split.with_shards([split.shards[i] for i in keep])


def labelled_subset(split, fraction: float, seed: int):
    """The labelled share fine-tuning trains on: stratified rows of an in-memory split, whole
    shards of a streamed one."""
    if isinstance(split, StreamSplit):
        return shard_subset(split, fraction, seed)
    from trainpipe.data.datasets import label_subset

    return label_subset(split, fraction, seed)


def arrays_of(dataset):
    """A dataset with streamed splits read into arrays: validation and test whole, training a
    bounded sample (``SAMPLE_ROWS``), for stages that need arrays (evaluate, export, deploy)."""
    if not isinstance(dataset.train, StreamSplit):
        return dataset
    import dataclasses

    return dataclasses.replace(
        dataset,
        train=materialize(dataset.train),
        validation=materialize(dataset.validation, None),
        test=materialize(dataset.test, None),
    )


SAMPLE_ROWS = 20_000
"""Rows of a streamed split that consumers needing arrays (a linear baseline, ONNX parity and
int8 checks, the deploy smoke test) take: the first shards' rows, in storage order."""


def materialize(split, max_rows: int | None = SAMPLE_ROWS):
    """An in-memory split as it is; a streamed one as arrays of its first ``max_rows`` rows."""
    if not isinstance(split, StreamSplit):
        return split
    return read_all(split, max_rows)


def read_all(split: StreamSplit, max_rows: int | None = None, batch_rows: int = 4096):
    """The split's first ``max_rows`` rows (all by default) in storage order, as a ``Split``."""
    from trainpipe.data.datasets import Split

    xs, ys, taken = [], [], 0
    for x, y in stream_loader(split, epoch=0, batch_size=batch_rows, shuffle=False, workers=0):
        xs.append(x.numpy())
        ys.append(y.numpy())
        taken += len(y)
        if max_rows is not None and taken >= max_rows:
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    return Split(x[:max_rows], y[:max_rows])
