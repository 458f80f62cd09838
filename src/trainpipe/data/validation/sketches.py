"""Mergeable summaries of a column: what streaming validation keeps instead of the data.

    a, b = ColumnSketch(), ColumnSketch()
    a.update(values_of_shard_1); b.update(values_of_shard_2)
    a.merge(b)                       # same summary as one sketch over both shards
    a.quantiles([0.5]), a.distinct(), a.histogram(20)

Each piece has a size that does not grow with the rows: moments (count, mean, M2 merged with
Chan's formula), min/max, NaN/inf/null counts, a KLL-style quantile sketch (``k`` items per
level, about log2(n/k) levels; rank error around 1/k per level), a HyperLogLog distinct count
(4096 registers, about 1.6% standard error), and value counts for categories capped at
``MAX_CATEGORIES`` distinct values. Histograms are drawn from the quantile sketch's weighted
items, so they merge too.

``to_dict()``/``from_dict()`` store a sketch as JSON-safe values (arrays as base64 of their
little-endian bytes): exact, so a stored sketch merges and answers as the one it was made from.
"""

from __future__ import annotations

import base64
from collections import Counter

import numpy as np

QUANTILE_K = 256
HLL_BITS = 12
MAX_CATEGORIES = 10_000


class QuantileSketch:
    """Sorted compactors: level ``i`` holds items of weight ``2**i``."""

    def __init__(self, k: int = QUANTILE_K):
        self.k = k
        self.levels: list[np.ndarray] = [np.empty(0)]
        self._flip = 0  # alternates which half survives, so the error does not drift one way

    def update(self, values: np.ndarray) -> None:
        self.levels[0] = np.concatenate([self.levels[0], np.asarray(values, dtype=np.float64)])
        self._compress()

    def merge(self, other: QuantileSketch) -> None:
        for i, items in enumerate(other.levels):
            if i == len(self.levels):
                self.levels.append(np.empty(0))
            self.levels[i] = np.concatenate([self.levels[i], items])
        self._compress()

    def _compress(self) -> None:
        i = 0
        while i < len(self.levels):
            items = self.levels[i]
            if len(items) > self.k:
                items = np.sort(items)
                kept = items[len(items) - len(items) % 2 :]  # an odd one out stays
                pairs = items[: len(items) - len(items) % 2]
                promoted = pairs[self._flip :: 2]
                self._flip ^= 1
                self.levels[i] = kept
                if i + 1 == len(self.levels):
                    self.levels.append(np.empty(0))
                self.levels[i + 1] = np.concatenate([self.levels[i + 1], promoted])
            i += 1

    def weighted(self) -> tuple[np.ndarray, np.ndarray]:
        items = np.concatenate(self.levels)
        weights = np.concatenate([np.full(len(v), 2.0**i) for i, v in enumerate(self.levels)])
        order = np.argsort(items, kind="stable")
        return items[order], weights[order]

    def quantiles(self, qs: list[float]) -> list[float]:
        items, weights = self.weighted()
        if len(items) == 0:
            return [float("nan")] * len(qs)
        cumulative = np.cumsum(weights) / weights.sum()
        index = np.minimum(np.searchsorted(cumulative, qs, side="left"), len(items) - 1)
        return [float(items[i]) for i in index]

    def bin_counts(self, edges: np.ndarray) -> np.ndarray:
        """Approximate counts of values in the bins between ``edges`` (open outer bins)."""
        items, weights = self.weighted()
        slots = np.searchsorted(edges, items, side="right")
        return np.bincount(slots, weights=weights, minlength=len(edges) + 1)

    def to_dict(self) -> dict:
        return {"k": self.k, "flip": self._flip, "levels": [_packed(v) for v in self.levels]}

    @classmethod
    def from_dict(cls, data: dict) -> QuantileSketch:
        sketch = cls(int(data["k"]))
        sketch._flip = int(data["flip"]) & 1
        sketch.levels = [_unpacked(v, "<f8") for v in data["levels"]] or [np.empty(0)]
        return sketch


def _mix64(h: np.ndarray) -> np.ndarray:
    # splitmix64 finalizer: spreads row hashes over all 64 bits for HyperLogLog.
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


class DistinctSketch:
    """HyperLogLog over uint64 value hashes."""

    def __init__(self, bits: int = HLL_BITS):
        self.bits = bits
        self.registers = np.zeros(1 << bits, dtype=np.uint8)

    def update(self, hashes: np.ndarray) -> None:
        h = _mix64(np.asarray(hashes, dtype=np.uint64))
        slot = (h >> np.uint64(64 - self.bits)).astype(np.int64)
        rest = (h << np.uint64(self.bits)) | np.uint64(1 << (self.bits - 1))
        # Leading zeros of the remaining bits + 1: position of the first set bit.
        rank = 64 - np.floor(np.log2(rest.astype(np.float64))).astype(np.int64)
        np.maximum.at(self.registers, slot, rank.astype(np.uint8))

    def merge(self, other: DistinctSketch) -> None:
        np.maximum(self.registers, other.registers, out=self.registers)

    def to_dict(self) -> dict:
        return {"bits": self.bits, "registers": _packed(self.registers)}

    @classmethod
    def from_dict(cls, data: dict) -> DistinctSketch:
        sketch = cls(int(data["bits"]))
        registers = _unpacked(data["registers"], "u1")
        if len(registers) != len(sketch.registers):
            raise ValueError(f"{len(registers)} HyperLogLog registers for {data['bits']} bits")
        sketch.registers = registers.copy()
        return sketch

    def estimate(self) -> int:
        m = len(self.registers)
        raw = 0.7213 / (1 + 1.079 / m) * m * m / np.sum(2.0 ** -self.registers.astype(np.float64))
        zeros = int((self.registers == 0).sum())
        if raw <= 2.5 * m and zeros:
            return round(m * np.log(m / zeros))  # linear counting for small sets
        return round(raw)


_COUNTS = ("categorical", "count", "missing", "nan", "inf", "finite")


def _packed(values: np.ndarray) -> str:
    little = values.astype(values.dtype.newbyteorder("<"), copy=False)
    return base64.b64encode(little.tobytes()).decode("ascii")


def _unpacked(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text, validate=True), dtype=dtype).astype(
        np.dtype(dtype).newbyteorder("=")
    )


def counter_to_dict(counts: Counter) -> dict:
    """Value counts as JSON: the values validation counts (strings, integers, booleans and
    numbers: categories and labels) read back equal to, and hashing as, the originals."""
    values = list(counts)
    odd = {type(v).__name__ for v in values if not isinstance(v, str | int | float)}
    if odd:
        raise ValueError(f"cannot store category values of type {sorted(odd)} as JSON")
    return {"values": values, "counts": [int(c) for c in counts.values()]}


def counter_from_dict(data: dict) -> Counter:
    values, numbers = list(data["values"]), list(data["counts"])
    if len(values) != len(numbers):
        raise ValueError(f"{len(values)} values for {len(numbers)} counts")
    return Counter(dict(zip(values, (int(c) for c in numbers), strict=True)))


class ColumnSketch:
    """Everything streaming validation keeps about one column."""

    def __init__(self, categorical: bool = False):
        self.categorical = categorical
        self.count = 0
        self.missing = 0
        self.nan = 0
        self.inf = 0
        self.finite = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.quantile = QuantileSketch()
        self.distinct = DistinctSketch()
        self.categories: Counter | None = Counter() if categorical else None

    def update_numeric(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        self.nan += int(np.isnan(values).sum())
        self.inf += int(np.isinf(values).sum())
        finite = values[np.isfinite(values)]
        if len(finite):
            other = ColumnSketch()
            other.finite, other.mean = len(finite), float(finite.mean())
            other.m2 = float(((finite - other.mean) ** 2).sum())
            other.min, other.max = float(finite.min()), float(finite.max())
            self._merge_moments(other)
            self.quantile.update(finite)

    def update_categories(self, values: list) -> None:
        if self.categories is None or len(self.categories) > MAX_CATEGORIES:
            return
        self.categories.update(values)

    def _merge_moments(self, other: ColumnSketch) -> None:
        n = self.finite + other.finite
        if not other.finite:
            return
        delta = other.mean - self.mean
        self.mean += delta * other.finite / n
        self.m2 += other.m2 + delta * delta * self.finite * other.finite / n
        self.finite = n
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)

    def merge(self, other: ColumnSketch) -> None:
        self.count += other.count
        self.missing += other.missing
        self.nan += other.nan
        self.inf += other.inf
        self._merge_moments(other)
        self.quantile.merge(other.quantile)
        self.distinct.merge(other.distinct)
        if (
            self.categories is not None
            and other.categories is not None
            and len(self.categories) <= MAX_CATEGORIES
        ):
            self.categories.update(other.categories)

    def to_dict(self) -> dict:
        finite = {name: getattr(self, name) for name in ("mean", "m2", "min", "max")}
        return {
            **{name: getattr(self, name) for name in _COUNTS},
            # min/max are infinite before any finite value: JSON has no infinity.
            **{k: v if np.isfinite(v) else None for k, v in finite.items()},
            "quantile": self.quantile.to_dict(),
            "distinct": self.distinct.to_dict(),
            "categories": None if self.categories is None else counter_to_dict(self.categories),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ColumnSketch:
        sketch = cls(categorical=bool(data["categorical"]))
        for name in _COUNTS[1:]:
            setattr(sketch, name, int(data[name]))
        sketch.mean = float(data["mean"]) if data["mean"] is not None else 0.0
        sketch.m2 = float(data["m2"]) if data["m2"] is not None else 0.0
        sketch.min = float(data["min"]) if data["min"] is not None else float("inf")
        sketch.max = float(data["max"]) if data["max"] is not None else float("-inf")
        sketch.quantile = QuantileSketch.from_dict(data["quantile"])
        sketch.distinct = DistinctSketch.from_dict(data["distinct"])
        if data["categories"] is not None:
            sketch.categories = counter_from_dict(data["categories"])
        return sketch

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.finite)) if self.finite else float("nan")

    def histogram(self, bins: int) -> tuple[list[float], list[int]]:
        if not self.finite:
            return [], []
        lo, hi = self.min, self.max if self.max > self.min else self.min + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        counts = self.quantile.bin_counts(edges[1:-1])
        return edges.tolist(), [round(c) for c in counts]
