"""Content hashes of table rows, for duplicate and leakage checks, without per-row Python.

Each column is hashed to uint64 from its values (strings from their bytes, arrays from all their
elements), so hashes from different tables are comparable; columns are folded together with a
64-bit mixer. Two distinct rows collide with probability about n^2 / 2^65 (3e-8 for a million
rows), which is negligible for counting duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STRING_BASE = np.uint64(0x100000001B3)
_NULL_HASH = np.uint64(0x6A09E667F3BCC909)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, elementwise on uint64 (wrapping arithmetic is intended)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def row_hashes(table: pa.Table, columns: Sequence[str] | None = None) -> np.ndarray:
    """One uint64 per row over ``columns`` (all by default)."""
    names = list(columns) if columns is not None else table.column_names
    h = np.full(table.num_rows, _GOLDEN, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in names:
            h = _mix(h * _STRING_BASE + column_hash(table.column(name)))
    return h


def column_hash(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    t = array.type
    if pa.types.is_fixed_size_list(t):
        # .values keeps the slots of null rows (list_flatten drops them); nulls are masked below.
        slots = array.values.slice(array.offset * t.list_size, len(array) * t.list_size)
        values = _numeric_bits(slots).reshape(len(array), t.list_size)
        weights = _mix(np.arange(1, t.list_size + 1, dtype=np.uint64))
        with np.errstate(over="ignore"):
            h = (_mix(values) * weights).sum(axis=1, dtype=np.uint64)
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        h = _repeated_string_hash(array)
    elif pa.types.is_string_view(t):
        h = _repeated_string_hash(array.cast(pa.large_string()))
    elif pa.types.is_null(t):
        h = np.zeros(len(array), dtype=np.uint64)
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        array = array.cast(pa.large_list(t.value_type))
        offsets = np.asarray(array.offsets)
        h = _segment_hash(_mix(_numeric_bits(pc.list_flatten(array))), offsets)
    else:
        h = _mix(_numeric_bits(array))
    if array.null_count:
        h = np.where(array.is_valid().to_numpy(zero_copy_only=False), h, _NULL_HASH)
    return h


def _numeric_bits(array: pa.Array) -> np.ndarray:
    """Values as uint64 bit patterns; ints and floats of equal value hash alike (1 == 1.0)."""
    if pa.types.is_boolean(array.type):
        array = array.cast(pa.int8())
    values = array.to_numpy(zero_copy_only=False).astype(np.float64)
    values = np.where(values == 0.0, 0.0, values)  # -0.0 and 0.0 are the same example
    values = np.where(np.isnan(values), np.nan, values)  # one NaN bit pattern
    return values.view(np.uint64)


def _repeated_string_hash(array: pa.Array) -> np.ndarray:
    """String hashes; categories (few distinct values) hash each distinct value once."""
    if len(array) < 1024:
        return _string_hash(array)
    encoded = pc.dictionary_encode(array)
    if len(encoded.dictionary) > len(array) // 4:
        return _string_hash(array)
    indices = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
    return _string_hash(encoded.dictionary)[indices]


def _string_hash(array: pa.Array) -> np.ndarray:
    """Hash of each string's bytes (see :func:`_segment_hash`)."""
    array = array.cast(pa.large_binary())
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[
        array.offset : array.offset + len(array) + 1
    ]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    return _segment_hash(data[: int(offsets[-1])].astype(np.uint64) + np.uint64(1), offsets)


def _segment_hash(elements: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Polynomial hash sum(e_i * B^i) mod 2^64 of each segment ``elements[o[k]:o[k+1]]``."""
    n = len(offsets) - 1
    start = int(offsets[0])
    lengths = np.diff(offsets)
    h = np.zeros(n, dtype=np.uint64)
    if int(offsets[-1]) > start:
        data = elements[start : int(offsets[-1])]
        position = np.arange(len(data), dtype=np.int64) - np.repeat(offsets[:-1] - start, lengths)
        with np.errstate(over="ignore"):
            powers = np.cumprod(np.full(int(lengths.max()), _STRING_BASE, dtype=np.uint64))
            weighted = data * powers[position]
        nonempty = lengths > 0
        h[nonempty] = np.add.reduceat(weighted, (offsets[:-1] - start)[nonempty])
    with np.errstate(over="ignore"):
        return _mix(h + lengths.astype(np.uint64) * _GOLDEN)


def duplicate_count(hashes: np.ndarray) -> int:
    """Rows that repeat an earlier row."""
    if len(hashes) == 0:
        return 0
    return int(len(hashes) - pc.count_distinct(pa.array(hashes)).as_py())


def shared_count(hashes: np.ndarray, others: np.ndarray) -> int:
    """Rows of ``hashes`` whose content also appears in ``others``."""
    if len(hashes) == 0 or len(others) == 0:
        return 0
    return int(pc.sum(pc.is_in(pa.array(hashes), value_set=pa.array(others))).as_py() or 0)
