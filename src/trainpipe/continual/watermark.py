"""The watermark: which partitions the last successful run consumed, kept in the artifact store.

    continual/<model>/watermark.json
      {"sequence": 3, "consumed": [...], "accepted": {"part-0001": "<key of its train split>"},
       "rejected": {"part-0003": "<why>"}, "state": "<prefix of the fixed test/schema>",
       "reference": "<key of the drift reference summary>", "reference_sha256": "...", ...}

It is written with compare-and-swap (create-only the first time, then ``if_match`` on the etag
read when the run started), only after the run finished; a run that fails leaves it alone, so
the next run takes the same partitions again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from trainpipe.errors import TrainpipeError
from trainpipe.storage import PreconditionFailed, Store


class WatermarkConflict(TrainpipeError):
    """Another run advanced the watermark since this run read it."""


@dataclass(frozen=True)
class Watermark:
    sequence: int = 0
    consumed: list[str] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)
    """Accepted partition -> key of its stored training examples (the replay pool)."""
    rejected: dict[str, str] = field(default_factory=dict)
    """Rejected partition -> the reason; never consumed again (republish under a new name)."""
    state: str = ""
    """Prefix holding the accepted schema, the fixed validation/test sets and the labels."""
    run_id: str = ""
    reference: str = ""
    """Key of the stored drift reference: the merged summary of every accepted shard (sharded
    partitions only; '' in a state written before it was stored: the next run rebuilds it)."""
    reference_sha256: str = ""
    """The reference's sha256, checked when it is read."""
    etag: str | None = None
    """The stored object's etag; None when there is no watermark yet."""

    def to_dict(self) -> dict:
        return {
            "sequence": self.sequence,
            "consumed": self.consumed,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "state": self.state,
            "run_id": self.run_id,
            "reference": self.reference,
            "reference_sha256": self.reference_sha256,
            "updated_at": datetime.now(UTC).isoformat(),
        }


def watermark_key(model: str) -> str:
    return f"continual/{model}/watermark.json"


def read_watermark(store: Store, model: str) -> Watermark:
    key = watermark_key(model)
    info = store.head(key)
    if info is None:
        return Watermark()
    record = store.get_json(key)
    return Watermark(
        sequence=record["sequence"],
        consumed=list(record["consumed"]),
        accepted=dict(record["accepted"]),
        rejected=dict(record["rejected"]),
        state=record["state"],
        run_id=record["run_id"],
        reference=record.get("reference", ""),
        reference_sha256=record.get("reference_sha256", ""),
        etag=info.etag,
    )


def advance_watermark(store: Store, model: str, previous: Watermark, new: Watermark) -> Watermark:
    """Write ``new`` only if the watermark is still ``previous``."""
    key = watermark_key(model)
    record = new.to_dict() | {"sequence": previous.sequence + 1}
    try:
        if previous.etag is None:
            info = store.put_json(key, record, if_none_match=True)
        else:
            info = store.put_json(key, record, if_match=previous.etag)
    except PreconditionFailed:
        raise WatermarkConflict(
            f"continual error: the watermark of {model} changed while run {new.run_id} ran "
            "(another run finished first); nothing was advanced, the next run starts from there"
        ) from None
    return replace(new, sequence=record["sequence"], etag=info.etag)
