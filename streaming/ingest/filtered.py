"""What syncs kept out at ingest: counted per sync and reason, and recorded per user.

A call a sync keeps out (its event filters, an opt-out, an anonymous call it drops, no usable
identity, a disabled sync) gets no delivery. Two traces remain:

- a counter in the cache, in hourly buckets kept 48 hours, for the health page
  (``filtered_count`` / ``filtered_counts``);
- one ``KeptOut`` row per (call, sync), with the reason, so that a user's timeline and the
  audit API say why a call was never sent (``kept_out_record``). Written right after the calls
  are stored, in one INSERT per batch (inside the caller's transaction when there is one); it
  never fails an ingest, whose calls are stored by then. Calls of a person deleted on request
  are counted only: recording their id would keep what the deletion removed.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.utils import timezone

from streaming.models import KeptOut

logger = logging.getLogger(__name__)

FILTERED_BUCKET = timedelta(hours=1)
FILTERED_KEEP = timedelta(hours=48)


def _bucket(at: datetime) -> int:
    return int(at.timestamp() // FILTERED_BUCKET.total_seconds())


def _filtered_index_name(sync_id: int, bucket: int) -> str:
    return f"switchboard:filtered:{sync_id}:{bucket}"


def _filtered_counter_name(sync_id: int, bucket: int, reason: str) -> str:
    # Reasons are free text: hash them into a key every cache backend accepts.
    digest = hashlib.sha1(reason.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"switchboard:filtered:{sync_id}:{bucket}:{digest}"


def filtered_count(*, counts: Mapping[tuple[int, str], int], at: datetime) -> None:
    """Add filtered-out calls, {(sync_id, reason): n}, to the hour bucket of ``at``."""
    bucket = _bucket(at)
    timeout = int(FILTERED_KEEP.total_seconds())
    new_reasons: dict[int, set[str]] = {}
    for (sync_id, reason), n in counts.items():
        name = _filtered_counter_name(sync_id, bucket, reason)
        if cache.add(name, n, timeout=timeout):
            new_reasons.setdefault(sync_id, set()).add(reason)
            continue
        try:
            cache.incr(name, n)
        except ValueError:  # expired between add() and incr()
            cache.set(name, n, timeout=timeout)
            new_reasons.setdefault(sync_id, set()).add(reason)
    for sync_id, reasons in new_reasons.items():
        # The index of reasons changes only when a new reason appears in the hour, so this
        # read-modify-write is rare; the counters themselves are atomic increments.
        index_name = _filtered_index_name(sync_id, bucket)
        known = set(cache.get(index_name) or ())
        if not reasons <= known:
            cache.set(index_name, sorted(known | reasons), timeout=timeout)


def filtered_counts(*, sync_id: int, since: datetime) -> dict[str, int]:
    """How many calls this sync filtered out since ``since`` (at most 48 h back), per reason.

    Counted by hour, so the hour containing ``since`` is included whole.
    """
    now = timezone.now()
    first = max(_bucket(since), _bucket(now - FILTERED_KEEP))
    buckets = range(first, _bucket(now) + 1)
    indexes = cache.get_many([_filtered_index_name(sync_id, b) for b in buckets])
    names: dict[str, str] = {}
    for bucket in buckets:
        for reason in indexes.get(_filtered_index_name(sync_id, bucket)) or ():
            names[_filtered_counter_name(sync_id, bucket, reason)] = reason
    totals: Counter[str] = Counter()
    for name, n in cache.get_many(list(names)).items():
        totals[names[name]] += int(n)
    return dict(totals)


@dataclass(frozen=True)
class KeptOutCall:
    """One stored call one sync kept out, and why."""

    event_id: int
    sync_id: int
    user_key: str  # the call's userId, else its anonymousId
    reason: str


def kept_out_record(*, calls: list[KeptOutCall], at: datetime) -> None:
    """Record, per user, the calls syncs kept out (one INSERT for the batch).

    The calls are stored and accepted by now: an error here is logged, never raised, so that
    a client is not told to resend what is already stored. Inside a caller's transaction the
    rows commit with the calls (a savepoint keeps a failure from aborting it).
    """
    if not calls:
        return
    rows = [
        KeptOut(
            event_id=call.event_id,
            sync_id=call.sync_id,
            user_key=call.user_key[: KeptOut._meta.get_field("user_key").max_length],
            reason=call.reason,
            created_at=at,
        )
        for call in calls
    ]
    try:
        with transaction.atomic():
            KeptOut.objects.bulk_create(rows)
    except DatabaseError:
        logger.exception("could not record %d calls kept out by syncs", len(rows))
