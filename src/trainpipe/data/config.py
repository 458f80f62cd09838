"""Where the data comes from and how it is split."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from trainpipe.configbase import Section

if TYPE_CHECKING:
    from trainpipe.data.shards import ShardCache

BUILTIN_DIGITS = "digits"


# Defined here rather than in data/streaming.py (which imports torch) so that the config loads
# where torch is not installed, such as the serving image.
class StreamingConfig(Section):
    shuffle_block_rows: int = Field(8192, gt=0)
    """Rows permuted together after the shard order is shuffled: larger mixes better and holds
    more row groups in each worker's memory."""

    loader_workers: int = Field(2, ge=0)
    """DataLoader worker processes reading and decoding shards (0 reads in the training
    process)."""

    prefetch_batches: int = Field(2, gt=0)
    """Transfers (of about ``transfer_mib`` each) each worker prepares ahead of training."""

    transfer_mib: float = Field(8.0, gt=0)
    """About how much a worker hands to the training process at once (whole batches, at least
    one): each transfer between processes has a fixed cost that small batches would pay often
    (with 2 workers, 8 took 13% less loader CPU than 4). Each worker keeps
    ``prefetch_batches + 3`` shared buffers of this size for its transfers."""

    cache_dir: str = "/tmp/trainpipe-shards"
    """Local folder for copies of remote (s3://) shards; local shards are read in place."""

    cache_max_gib: float = Field(20.0, gt=0)
    """Size limit of the shard cache; least recently used shards are evicted beyond it."""

    def cache(self) -> ShardCache:
        from trainpipe.data.shards import ShardCache  # pyarrow: not in the serving image

        return ShardCache(self.cache_dir, int(self.cache_max_gib * 2**30))


class DataConfig(Section):
    source: str = BUILTIN_DIGITS
    """``digits`` (scikit-learn's 8x8 handwritten digits, no download), or a URI (file://, s3://,
    or a local path) to a .parquet/.csv/.npz file, or to a folder holding train.*, validation.*
    and test.* files that are already split."""

    format: Literal["auto", "files", "shards"] = "auto"
    """``shards``: ``source`` is a folder/prefix of Parquet shards streamed shard by shard (never
    loaded whole; split by shard); ``files``: one file or a train/validation/test folder loaded
    into memory; ``auto``: shards when the folder holds ``shards.json`` or ``*.parquet`` files
    other than train/validation/test."""

    streaming: StreamingConfig = StreamingConfig()
    """How sharded sources are shuffled, read and cached (used when the source is sharded)."""

    label_column: str = "label"
    """Column with the class label (tables); ``y`` is used for .npz arrays."""

    task: Literal["auto", "classification", "regression"] = "auto"
    """What the label is: ``auto`` makes it regression for a numeric label with fractional
    values or more than ``max_classes`` distinct values, classification otherwise."""

    max_classes: int = Field(50, ge=2, le=100_000)
    """``auto``: a numeric label with more distinct values than this is a regression target."""

    feature_columns: list[str] | None = None
    """Numeric feature columns; None takes every column except the label."""

    categorical_columns: list[str] | None = None
    """Feature columns to encode as categories (one-hot with a reserved bucket for unseen
    values). None: string and boolean columns, and integer columns with at most
    ``max_int_categories`` distinct values."""

    max_int_categories: int = Field(10, ge=0, le=1000)
    """Integer columns with at most this many distinct values are categorical when
    ``categorical_columns`` is None (0: integers are always numeric)."""

    feature_shape: list[int] | None = None
    """Reshape each example's features to this shape (e.g. [1, 8, 8] for images); None keeps
    them flat (tables) or uses the array's own shape (.npz)."""

    validation_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    """Share of examples held out for validation when the pipeline splits the data."""

    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    """Share of examples held out for the final test when the pipeline splits the data."""

    split_seed: int = 0
    """Seed of the stratified split, fixed so every run sees the same test set."""

    schema_uri: str | None = None
    """A data schema (YAML, as `trainpipe validate --write-schema` writes it) the data must
    satisfy; None infers one from the data itself, so only data-quality problems block."""

    reference_uri: str | None = None
    """Reference data (the last accepted data, or training data when checking serving data)
    to measure drift against; None skips drift checks."""

    @field_validator("source")
    @classmethod
    def _not_empty(cls, source: str) -> str:
        if not source.strip():
            raise ValueError(
                "is empty; give 'digits', a .parquet/.csv/.jsonl/.npz file or a folder of "
                "split files (a path, file:// or s3:// URI)"
            )
        return source

    @model_validator(mode="after")
    def _check_fractions(self) -> DataConfig:
        if self.validation_fraction + self.test_fraction >= 0.8:
            raise ValueError(
                f"validation_fraction + test_fraction = "
                f"{self.validation_fraction + self.test_fraction:.2f} leaves under 20% for "
                "training; lower one of them"
            )
        if self.feature_shape is not None and any(d <= 0 for d in self.feature_shape):
            raise ValueError(f"feature_shape {self.feature_shape} must hold positive sizes")
        return self
