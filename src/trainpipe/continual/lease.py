"""One run at a time per model: a lease object with an expiry, taken with conditional writes.

    lease = acquire_lease(store, "digits-classifier", holder=run_id, ttl_s=3600)  # or LeaseHeld
    lease = renew_lease(store, lease, ttl_s=3600)                                  # or LeaseLost
    release_lease(store, lease)
    lease = held_lease(store, "digits-classifier", run_id)  # a later step, in another pod

``continual/<model>/lease.json`` is created with ``if_none_match``; the holder renews it with
``if_match`` on its own etag; once ``expires_at`` has passed anyone may take it over with
``if_match`` on the stale etag, so of two runs racing for an expired lease exactly one wins.
Releasing writes an already-expired record (again ``if_match``) instead of deleting, so a holder
that lost its lease can never remove the new holder's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from trainpipe.errors import TrainpipeError
from trainpipe.storage import PreconditionFailed, Store

_ATTEMPTS = 3


class LeaseHeld(TrainpipeError):
    """Another run holds the lease and it has not expired."""

    def __init__(self, message: str, holder: str, expires_at: float):
        super().__init__(message)
        self.holder = holder
        self.expires_at = expires_at


class LeaseLost(TrainpipeError):
    """The lease changed under its holder (it expired and was taken over)."""


@dataclass(frozen=True)
class Lease:
    key: str
    holder: str
    expires_at: float
    """Unix time in seconds."""
    etag: str


def lease_key(model: str) -> str:
    return f"continual/{model}/lease.json"


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _record(holder: str, now: float, ttl_s: float) -> dict:
    return {
        "holder": holder,
        "acquired_at": _stamp(now),
        "expires_at": now + ttl_s,
        "expires_at_utc": _stamp(now + ttl_s),
    }


def acquire_lease(
    store: Store,
    model: str,
    *,
    holder: str,
    ttl_s: float,
    clock: Callable[[], float] = time.time,
) -> Lease:
    key = lease_key(model)
    for _attempt in range(_ATTEMPTS):
        now = clock()
        record = _record(holder, now, ttl_s)
        try:
            info = store.put_json(key, record, if_none_match=True)
            return Lease(key, holder, record["expires_at"], info.etag)
        except PreconditionFailed:
            pass
        current = store.head(key)
        if current is None:
            continue  # released and deleted by hand meanwhile; create again
        held = store.get_json(key)
        if held["expires_at"] > now:
            raise LeaseHeld(held_message(model, held), held["holder"], held["expires_at"])
        try:  # expired (crashed or released): take it over, unless someone else just did
            info = store.put_json(key, record, if_match=current.etag)
            return Lease(key, holder, record["expires_at"], info.etag)
        except PreconditionFailed:
            continue
    raise LeaseHeld(
        f"the lease of {model} changed hands {_ATTEMPTS} times while run {holder} tried to take "
        "it; another run is starting, nothing to do for this run",
        "unknown",
        clock(),
    )


def renew_lease(
    store: Store, lease: Lease, *, ttl_s: float, clock: Callable[[], float] = time.time
) -> Lease:
    record = _record(lease.holder, clock(), ttl_s)
    try:
        info = store.put_json(lease.key, record, if_match=lease.etag)
    except PreconditionFailed:
        raise LeaseLost(
            f"continual error: run {lease.holder} lost its lease {lease.key} (it expired and "
            "another run took it over); stopping without advancing the watermark"
        ) from None
    return Lease(lease.key, lease.holder, record["expires_at"], info.etag)


def held_message(model: str, record: dict) -> str:
    """What a run that finds ``record`` (a live lease of another run) reports."""
    return (
        f"another run ({record['holder']}) holds the lease of {model} until "
        f"{_stamp(record['expires_at'])}; nothing to do for this run"
    )


def held_lease(store: Store, model: str, holder: str) -> Lease | None:
    """The lease as ``holder`` holds it now (its current etag), for a step of the same run in
    another process; None when the lease is someone else's or was released."""
    key = lease_key(model)
    info = store.head(key)
    if info is None:
        return None
    record = store.get_json(key)
    if record.get("holder") != holder or record.get("released"):
        return None
    # A record changed after the head fails the if_match of whatever the caller writes next.
    return Lease(key, holder, record["expires_at"], info.etag)


def release_lease(
    store: Store,
    lease: Lease,
    *,
    clock: Callable[[], float] = time.time,
    note: dict | None = None,
) -> None:
    """Expire our lease now; a lease someone else took over is left alone. ``note`` is kept in
    the released record (a run that wrote nothing else says why there)."""
    now = clock()
    record = _record(lease.holder, now, 0.0) | {"released": True} | (note or {})
    with contextlib.suppress(PreconditionFailed):
        store.put_json(lease.key, record, if_match=lease.etag)
