"""What syncs kept out at ingest, counted per sync and reason.

A call a sync filters out (by its event filters, or because it has no usable identity) is not
stored: it is counted in the cache, in hourly buckets kept 48 hours, for the health page.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta

from django.core.cache import cache
from django.utils import timezone

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
