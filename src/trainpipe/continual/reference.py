"""The stored drift reference of continual retraining on shards: the merged summary
(:class:`~trainpipe.data.validation.streaming.ShardSummary`) of every accepted shard, so a run
compares new partitions against it without reading the accepted shards again.

    key, sha256 = store_reference(store, "continual/m/reference/r2.json", summary)
    summary = load_reference(store, model, watermark)   # checks the sha256 the watermark records

Each run that changes it writes a new key (never over the one the watermark points at); the
watermark's compare-and-swap then commits the new key together with the accepted partitions,
so a run that dies before advancing the watermark leaves the old reference in force (and its
own file unused). Once the watermark has moved on, ``finish_run`` deletes the superseded one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable

from trainpipe.continual.watermark import Watermark
from trainpipe.data.validation.streaming import ShardSummary
from trainpipe.errors import DataError, TrainpipeError
from trainpipe.storage import ArtifactNotFound, ChecksumMismatch, Store, sha256_bytes


class DriftReferenceError(TrainpipeError):
    """The stored drift reference is missing or unreadable."""


def merged(summaries: Iterable[ShardSummary]) -> ShardSummary:
    """One summary of all ``summaries`` (copied: they stay as they were), without anomalies
    (a reference only serves drift and statistics)."""
    total = ShardSummary()
    for summary in summaries:
        total.merge(copy.deepcopy(summary))
    total.anomalies.clear()
    return total


def store_reference(store: Store, key: str, summary: ShardSummary) -> tuple[str, str]:
    """Write ``summary`` as JSON (atomically, as every store write); returns (key, sha256)."""
    try:
        record = summary.to_dict()
    except ValueError as exc:
        raise DataError(
            f"data error: the drift reference of the accepted data cannot be stored ({exc}); "
            "convert that column to numbers or strings, or drop it"
        ) from None
    data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    store.put_bytes(key, data)
    return key, sha256_bytes(data)


def load_reference(store: Store, model: str, watermark: Watermark) -> ShardSummary:
    """The summary the watermark points at, checked against its recorded sha256;
    DriftReferenceError (one line naming the object and the fix) when it cannot be used."""
    key = watermark.reference
    try:
        data = store.get_bytes(key, sha256=watermark.reference_sha256 or None)
        return ShardSummary.from_dict(json.loads(data))
    except ArtifactNotFound:
        problem = "is missing"
    except ChecksumMismatch:
        problem = "is corrupt (its sha256 is not the one the watermark records)"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problem = f"is not valid JSON ({exc})"
    except ValueError as exc:
        problem = f"is not a drift reference: {exc}"
    raise DriftReferenceError(
        f"continual error: the drift reference {store.uri_for(key)} of model {model} "
        f"{problem}; restore it, or run once with --set continual.rebuild_reference=true to "
        "rebuild it from the accepted shards"
    )
