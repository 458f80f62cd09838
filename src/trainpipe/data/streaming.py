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

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

# Imported here, not where used: DataLoader workers are forked at every epoch and would each
# import them again (a quarter of a second per worker on a busy machine).
from trainpipe.data.config import DataConfig, StreamingConfig
from trainpipe.data.datasets import Split, feature_layout, label_subset, table_to_arrays
from trainpipe.data.handover import FRESH, HandoverSlots, packed_size, unpack
from trainpipe.data.images import decode_images, is_image_column
from trainpipe.data.shards import ShardInfo, ShardSet, settle_prefetches
from trainpipe.errors import DataError, TrainpipeError
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
    preprocess: dict | None = None
    """A table's fitted preprocessing (``PreprocessSpec.to_dict()``): rows are encoded with it
    (numbers with NaN, category codes), as a single table's stored splits are."""
    task: str = "classification"
    """``regression``: labels are float32 targets rather than indices into ``label_values``."""
    features: bool = False
    """Hand out the preprocessed features the network trains on instead of encoded rows."""
    target_scale: tuple[float, float] | None = None
    """(mean, std): regression targets are handed out standardized with them."""
    _set: ShardSet | None = field(default=None, repr=False, compare=False)
    _loaders: dict = field(default_factory=dict, repr=False, compare=False)
    """DataLoaders (and their worker processes) kept for the next epoch, by how they read."""
    _data_config: DataConfig | None = field(default=None, repr=False, compare=False)
    _layout: tuple | None = field(default=None, repr=False, compare=False)
    _label_lookup: tuple | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return sum(s.rows for s in self.shards)

    def __getstate__(self) -> dict:
        # A boto3 client does not cross into worker processes; each process opens its own.
        return {**self.__dict__, "_set": None, "_loaders": {}}

    def shard_set(self) -> ShardSet:
        if self._set is None:
            store = open_store(self.uri, endpoint_url=self.endpoint_url)
            self._set = ShardSet(store, self.shards, None, self.streaming.cache())
        return self._set

    def replaced(self, **changes) -> StreamSplit:
        """A copy with ``changes``, without this split's open store, loaders and config."""
        return dataclasses.replace(
            self,
            **changes,
            _set=None,
            _loaders={},
            _data_config=None,
            _layout=None,
            _label_lookup=None,
        )

    def with_shards(self, shards: list[ShardInfo]) -> StreamSplit:
        return self.replaced(shards=shards)

    def images(self, table) -> bool:
        first = table.schema.field(self.feature_columns[0])
        return len(self.feature_columns) == 1 and is_image_column(first.type)

    def _config(self) -> DataConfig:
        # Built once: constructing the config per row group showed in the loader's profile.
        if self._data_config is None:
            self._data_config = DataConfig.model_construct(feature_shape=self.feature_shape)
        return self._data_config

    def plain_numeric(self, table) -> bool:
        """Rows used as stored (numbers or fixed-size arrays, class labels): no preprocessing
        and no image decoding, so they can be converted straight into a caller's arrays."""
        return self.preprocess is None and not self.images(table)

    def encode(
        self,
        table,
        where: str = "",
        *,
        decode: bool = True,
        out: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, ...]:
        """(x float32 [n, *feature_shape], label indices int64) of stored rows. Images (a bytes
        column) are decoded here, in the worker that reads them; ``decode=False`` leaves them
        as an object array of bytes, to decode only the rows a batch takes. ``out``: arrays
        of ``len(table)`` rows to fill (rows with :meth:`plain_numeric` only)."""
        where = where or self.uri
        if out is not None:
            x_out, y_out = out
            if self._layout is None:  # every shard has the first one's schema (discovery)
                self._layout = feature_layout(table.schema, tuple(self.feature_columns))
            x, labels, _ = table_to_arrays(
                table,
                self.label_column,
                self.feature_columns,
                where,
                self._config(),
                out=x_out.reshape(len(x_out), -1),
                layout=self._layout,
            )
            y_out[:] = self._label_index(labels)
            return x_out, y_out
        if self.preprocess is not None:
            return self._encode_table(table, where)
        if self.images(table):
            encoded = table.column(self.feature_columns[0]).to_pylist()
            x = (
                decode_images(encoded, self.feature_shape, where)
                if decode
                else np.array([*encoded, None], dtype=object)[:-1]  # keeps 1-D for any bytes
            )
            labels = table.column(self.label_column).to_numpy(zero_copy_only=False)
        else:
            x, labels, _ = table_to_arrays(
                table, self.label_column, self.feature_columns, where, self._config()
            )
        if x.dtype != object:
            x = x.astype(np.float32, copy=False)
        return x, self._label_index(labels)

    def _labels(self) -> tuple[np.ndarray, bool]:
        """(the label values as an array, whether they are 0..n-1), worked out once: every
        piece of every block is encoded with them."""
        if self._label_lookup is None:
            values = np.asarray(self.label_values)
            own = values.dtype.kind in "iu" and np.array_equal(values, np.arange(len(values)))
            self._label_lookup = (values, bool(own))
        return self._label_lookup

    def _label_index(self, labels: np.ndarray) -> np.ndarray:
        values, own_index = self._labels()
        if (
            own_index
            and labels.dtype.kind in "iu"
            and len(labels)
            and labels.min() >= 0
            and labels.max() < len(values)
        ):
            # Labels 0..n-1 (the common case) are their own index: a range check suffices,
            # where the general lookup below costs about as much as converting the rows.
            return labels.astype(np.int64, copy=False)
        index = np.searchsorted(values, labels)
        bad = index >= len(values)
        bad[~bad] = values[index[~bad]] != labels[~bad]
        if bad.any():
            raise DataError(
                f"data error: {self.uri} has label {labels[bad][0]!r} that validation did not "
                "see; rerun validate_data on the current shards"
            )
        return index.astype(np.int64)

    def _encode_table(self, table, where: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows of a preprocessed table: encoded (or its features), and the labels as class
        indices or (standardized) regression targets."""
        from trainpipe.data.datasets import _labels, encode_table
        from trainpipe.data.preprocess import Preprocessor, PreprocessSpec

        spec = PreprocessSpec.from_dict(self.preprocess)
        x = encode_table(table, spec)
        if self.features:
            x = Preprocessor(spec).transform(x)
        labels = _labels(table, self.label_column, where)
        if self.task == "regression":
            y = labels.astype(np.float32)
            if self.target_scale is not None:
                mean, std = self.target_scale
                y = ((y - mean) / std).astype(np.float32)
            return x, y
        return x, self._label_index(labels)


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


PREFETCH_BLOCKS = 4
"""Shuffle blocks ahead of the one being read whose remote shards are fetched in the
background (at most ``shards.PREFETCH_SHARDS`` downloads pending per process)."""


class _BlockReader:
    """One process's decoded rows of the current shuffle block (and the row groups it spans),
    so a transfer is one gather per block straight into its output: memory is about one block,
    whatever the data size."""

    def __init__(self, split: StreamSplit, order: EpochOrder):
        self.split, self.order = split, order
        self.starts = [np.concatenate([[0], np.cumsum(s.row_group_rows)]) for s in split.shards]
        self.blocks: OrderedDict[int, tuple] = OrderedDict()
        self.groups: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()

    def _group(self, shard: int, group: int) -> pa.Table:
        # Kept as read (Arrow columns): a group spanning a block boundary is read once, and each
        # block converts only its own rows, straight into the block's matrix.
        key = (shard, group)
        if key not in self.groups:
            info = self.split.shards[shard]
            # Decoded on this thread: a loader worker is one of several processes already, and
            # in one process handing each column to Arrow's pool cost more than it saved here.
            self.groups[key] = self.split.shard_set().read_row_group(info, group, use_threads=False)
            while len(self.groups) > 4:
                self.groups.popitem(last=False)
        return self.groups[key]

    def _pieces(self, k: int) -> list[tuple[int, int, int, int]]:
        """(shard index, row group, first row, end row within the group) that make up block
        ``k``, in block order."""
        pieces = []
        for shard, a, b in self.order.ranges(k):
            starts = self.starts[shard]
            first = int(np.searchsorted(starts, a, side="right")) - 1
            for group in range(first, len(starts) - 1):
                if starts[group] >= b:
                    break
                lo, hi = max(a, starts[group]), min(b, starts[group + 1])
                pieces.append((shard, group, int(lo - starts[group]), int(hi - starts[group])))
        return pieces

    def prefetch(self, start: int, stop: int) -> None:
        """Start fetching, in the background, the remote shards that epoch positions
        ``start..stop-1`` need, in the order they are needed."""
        block_rows = self.order.block_rows
        needed = dict.fromkeys(
            shard
            for k in range(start // block_rows, (stop - 1) // block_rows + 1)
            for shard, _, _ in self.order.ranges(k)
        )
        shard_set = self.split.shard_set()
        for shard in needed:
            shard_set.prefetch(self.split.shards[shard])

    def block(self, k: int) -> tuple:
        """(x, y, origin of each row as (shard index, row) or None, the block's permutation).
        Origins are kept only for encoded images, whose decoding errors name the row."""
        if k not in self.blocks:
            # The shards of the next few blocks start downloading while this one is read.
            ahead = min(self.order.total, (k + 1 + PREFETCH_BLOCKS) * self.order.block_rows)
            self.prefetch(k * self.order.block_rows, ahead)
            self.blocks[k] = (*self._read_block(k), self.order.permutation(k))
            while len(self.blocks) > 2:  # a transfer moves on block by block
                self.blocks.popitem(last=False)
        return self.blocks[k]

    def _read_block(self, k: int) -> tuple:
        split, shard_set = self.split, self.split.shard_set()
        pieces = self._pieces(k)

        def piece(i: int):
            shard, group, lo, hi = pieces[i]
            name = f"shard {shard_set.store.uri_for(split.shards[shard].name)}"
            return self._group(shard, group).slice(lo, hi - lo), name

        first, name = piece(0)
        if split.plain_numeric(first):
            # Each piece converted into one block matrix right after its row group is read
            # (while the decoded columns are still in the CPU's cache): no copy to join.
            x = np.empty((self.order.block_size(k), *split.feature_shape), dtype=np.float32)
            y = np.empty(len(x), dtype=np.int64)
            offset = 0
            for i in range(len(pieces)):
                table, name = (first, name) if i == 0 else piece(i)
                end = offset + len(table)
                split.encode(table, name, out=(x[offset:end], y[offset:end]))
                offset = end
            return x, y, None
        # Images stay encoded in the block: a worker decodes only the rows it hands out.
        parts = [split.encode(*piece(i), decode=False) for i in range(len(pieces))]
        xs, ys = [p[0] for p in parts], [p[1] for p in parts]
        origins = None
        if xs[0].dtype == object:
            origins = np.concatenate(
                [
                    np.stack([np.full(hi - lo, s), np.arange(lo, hi)], 1)
                    for s, lo, hi in (
                        (shard, self.starts[shard][group] + lo, self.starts[shard][group] + hi)
                        for shard, group, lo, hi in pieces
                    )
                ]
            )
        return (
            xs[0] if len(xs) == 1 else np.concatenate(xs),
            ys[0] if len(ys) == 1 else np.concatenate(ys),
            origins,
        )

    def gather(self, positions: np.ndarray, x_out: np.ndarray, y_out: np.ndarray) -> None:
        """Rows at epoch ``positions`` (ascending) into ``x_out``/``y_out``: one ``take`` per
        block they fall in, written where the caller wants them (shared memory in a worker)."""
        block_rows = self.order.block_rows
        first, last = int(positions[0]) // block_rows, int(positions[-1]) // block_rows
        bounds = np.searchsorted(positions, np.arange(first + 1, last + 1) * block_rows)
        cuts = [0, *bounds.tolist(), len(positions)]
        for k, lo, hi in zip(range(first, last + 1), cuts[:-1], cuts[1:], strict=True):
            if lo == hi:
                continue
            bx, by, origin, perm = self.block(k)
            index = perm[positions[lo:hi] - k * block_rows]
            # mode="clip" takes without numpy's bounds-checking buffer (4x faster here); the
            # indices come from a permutation of the block, so none is out of range.
            np.take(by, index, out=y_out[lo:hi], mode="clip")
            if bx.dtype != object:
                np.take(bx, index, axis=0, out=x_out[lo:hi], mode="clip")
                continue
            self._decode(bx[index], origin[index], x_out[lo:hi])

    def _decode(self, encoded: np.ndarray, origin: np.ndarray, out: np.ndarray) -> None:
        shard_set = self.split.shard_set()

        def where(i: int) -> str:
            shard, row = origin[i]
            return f"shard {shard_set.store.uri_for(self.split.shards[shard].name)} row {row}"

        decode_images(encoded, self.split.feature_shape, where, out=out)


def _rank_positions(
    first: int, stop: int, batch_size: int, total: int, rank: int, world: int
) -> tuple[np.ndarray, list[int]]:
    """Epoch positions of this rank's rows of global batches ``first..stop-1`` (ascending) and
    how many rows each batch gives it."""
    begin = np.arange(first, stop) * batch_size
    end = np.minimum(begin + batch_size, total)
    sizes = np.maximum(0, (end - begin - rank + world - 1) // world)
    if world == 1:
        return np.arange(begin[0], end[-1]), sizes.tolist()
    rows = [np.arange(a + rank, b, world) for a, b in zip(begin, end, strict=True)]
    positions = np.concatenate(rows)
    return positions, sizes.tolist()


class _Batches(torch.utils.data.IterableDataset):
    def __init__(self, split, *, batch_size, rank, world, shuffle, workers=0):
        self.split, self.batch_size = split, batch_size
        self.rank, self.world, self.shuffle = rank, world, shuffle
        # (epoch, first batch, pass number) of the next pass, in shared memory: the worker
        # processes are kept from epoch to epoch and read it when a pass starts.
        self.position = torch.zeros(3, dtype=torch.int64).share_memory_()
        # Transfers a worker can have in flight: those prepared ahead, the one being filled and
        # about two the training process still reads (its last batch is in use while the next
        # transfer arrives); more slots only cost memory, fewer mean fresh buffers.
        self.slots = HandoverSlots(workers, split.streaming.prefetch_batches + 3)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, int, int, int]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch, start_batch, pass_id = self.position.tolist()
        split = self.split
        order = EpochOrder(
            [s.rows for s in split.shards],
            split.seed,
            epoch,
            split.streaming.shuffle_block_rows,
            self.shuffle,
        )
        reader = _BlockReader(split, order)
        batches = math.ceil(order.total / self.batch_size)
        row_bytes = 4 * math.prod(split.feature_shape) + 8
        batch_bytes = row_bytes * math.ceil(self.batch_size / self.world)
        per_chunk = max(1, int(split.streaming.transfer_mib * 2**20 // batch_bytes))
        block_batches, rest = divmod(split.streaming.shuffle_block_rows, self.batch_size)
        if workers > 1 and not rest and per_chunk > block_batches:
            # Whole shuffle blocks per transfer: a block split between the transfers of two
            # workers is read and converted by both (a quarter more work at the defaults).
            per_chunk -= per_chunk % block_batches
        step = workers * per_chunk
        for first in range(start_batch + worker * per_chunk, batches, step):
            stop = min(first + per_chunk, batches)
            positions, sizes = _rank_positions(
                first, stop, self.batch_size, order.total, self.rank, self.world
            )
            # Remote shards of this transfer and of this process's next one start downloading
            # now, in the background, while this one is read.
            ahead = min(first + step + per_chunk, batches) * self.batch_size
            reader.prefetch(first * self.batch_size, min(ahead, order.total))
            specs = self.specs(len(positions), len(sizes))
            if info is None:
                slot, buffer = FRESH, torch.empty(packed_size(specs), dtype=torch.uint8)
            else:
                # Written in place into shared memory (a buffer reused from transfer to
                # transfer): handing it to the training process then copies nothing.
                slot, buffer = self.slots.take(worker, pass_id, packed_size(specs))
            x, y, counts = unpack(buffer, specs)
            counts.copy_(torch.from_numpy(np.asarray(sizes, dtype=np.int64)))
            if len(positions):
                reader.gather(positions, x.numpy(), y.numpy())
            # Plain numbers besides the buffer: the DataLoader converts a list item by item.
            yield buffer, len(positions), len(sizes), worker, slot

    def specs(self, rows: int, batches: int) -> list[tuple[tuple[int, ...], torch.dtype]]:
        """(shape, dtype) of a transfer's features, labels and rows in each batch, packed in
        one buffer."""
        label = torch.float32 if self.split.task == "regression" else torch.int64
        return [
            ((rows, *self.split.feature_shape), torch.float32),
            ((rows,), label),
            ((batches,), torch.int64),
        ]


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
    processes has a fixed cost, which would dominate at small batch sizes. The worker processes
    outlive the pass: the next call with the same reading settings (the next epoch, the next
    validation) reuses them instead of starting new ones, and they end with ``split``. One pass
    per reading settings at a time: starting another abandons the one in progress."""
    workers = split.streaming.loader_workers if workers is None else workers
    key = (batch_size, rank, world, shuffle, pin_memory, workers)
    loader = split._loaders.get(key)
    if loader is None:
        # A copy without the loaders: the DataLoader must not refer back to ``split``, so that
        # dropping the split frees it by reference count and its workers are told to stop
        # while their queues still work (a garbage-collected cycle closes the queues first and
        # each worker then takes a 5 s join timeout to end).
        reader = split.with_shards(split.shards)
        dataset = _Batches(
            reader, batch_size=batch_size, rank=rank, world=world, shuffle=shuffle, workers=workers
        )
        extra = (
            {"prefetch_factor": split.streaming.prefetch_batches, "persistent_workers": True}
            if workers
            else {}
        )
        if workers:
            settle_prefetches()  # workers are forked: no download thread running meanwhile
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            num_workers=workers,
            pin_memory=pin_memory,
            # Its own generator: a DataLoader otherwise draws its workers' seed from the global
            # torch RNG, which would shift dropout draws after a mid-epoch resume.
            generator=torch.Generator().manual_seed(split.seed * 7919 + rank),
            **extra,
        )
        split._loaders[key] = loader
    dataset = loader.dataset
    pass_id = int(dataset.position[2]) + 1
    dataset.position.copy_(torch.tensor([epoch, start_batch, pass_id]))
    try:
        batches = iter(loader)  # with kept workers: returns once they have left the last pass
        if workers:
            dataset.slots.start_pass(pass_id)
        for buffer, rows, count, worker, slot in batches:
            if workers:
                dataset.slots.received(worker, slot, buffer)
            x, y, sizes = unpack(buffer, dataset.specs(rows, count))
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
    return label_subset(split, fraction, seed)


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
    xs, ys, taken = [], [], 0
    for x, y in stream_loader(split, epoch=0, batch_size=batch_rows, shuffle=False, workers=0):
        xs.append(x.numpy())
        ys.append(y.numpy())
        taken += len(y)
        if max_rows is not None and taken >= max_rows:
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    return Split(x[:max_rows], y[:max_rows])
