"""Ingest: store accepted calls as Events and fan them out to one Delivery per matching Sync.

``events_ingest`` is the one door into the queue of record, used by the HTTP API, the Python
API and the Intercom webhook source:

1. calls repeating a messageId within the batch are acknowledged and dropped, and so are the
   calls of a person deleted on request (``suppression``: not stored, counted per sync like
   filtered calls, with the reason "suppressed: deleted on request");
2. each sync of the source gives its verdict on each call (``routes_plan``): filtered out with a
   reason (a disabled sync drops everything), or delivered in the lane of the user that
   ``identity_resolve`` names (a paused sync's deliveries wait in their lanes);
3. ``storage.calls_store`` writes the events (a messageId the source already sent is skipped),
   the lanes and the deliveries in one transaction (one statement on PostgreSQL); then the
   (call, sync) pairs kept out are recorded with their reason, one INSERT (``filtered``);
4. only after commit: the lanes are announced (``lanes_queued``, which wakes the workers), the
   filtered calls are counted, and ``event_ingested`` is sent.

The API answers 200 only once this returns, so its speed is the ingest throughput.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db import OperationalError, transaction
from django.utils import timezone

from integrations.filtering import filters_evaluate
from integrations.intercom.identity import identity_resolve
from integrations.models import Source
from integrations.selectors import routes_for_source
from streaming import storage
from streaming.ingest.filtered import KeptOutCall, filtered_count, kept_out_record
from streaming.ingest.segment import Call
from streaming.ingest.suppression import SUPPRESSED_REASON, suppressed_user_ids
from streaming.ingest.visitors import VisitorRouting
from streaming.models import Lane
from streaming.signals import event_ingested, lanes_queued

log = logging.getLogger(__name__)

_CONTENTION_RETRIES = 6  # pauses of about 20, 40, 80, 160, 320 ms between them
USER_KEY_MAX_LENGTH = Lane._meta.get_field("user_key").max_length
SYNC_DISABLED = "the sync is disabled: what arrives is dropped"


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did."""

    event_ids: list[int] = field(default_factory=list)  # newly stored, in call order
    duplicates: list[str] = field(default_factory=list)  # messageIds already stored: acknowledged
    deliveries: int = 0
    lane_ids: list[int] = field(default_factory=list)
    filtered: int = 0  # (call, sync) pairs a sync filtered out (suppressed ones included)
    suppressed: int = 0  # calls of people deleted on request: acknowledged, not stored


@dataclass(frozen=True)
class CacheVersions:
    """The versions of the routes and of the suppressions as the caller read them from the cache
    (the HTTP API reads them with the write key, in one round trip); None: read them here."""

    routes: object = None
    suppressions: object = None


@dataclass(frozen=True)
class Route:
    """A call's verdict for one sync: deliver in lane ``user_key``, or filtered for ``reason``."""

    sync_id: int
    user_key: str = ""
    reason: str = ""


def routes_plan(
    calls: Sequence[Call],
    source_id: int,
    visitors: VisitorRouting | None = None,
    *,
    routes_version: object = None,
) -> list[list[Route]]:
    """Per call, each sync's verdict (pure Python once the routes and ``visitors`` are loaded)."""
    routes = routes_for_source(source_id=source_id, version=routes_version)
    plans: list[list[Route]] = []
    for call in calls:
        verdicts: list[Route] = []
        for route in routes:
            if route.disabled:
                verdicts.append(Route(sync_id=route.sync_id, reason=SYNC_DISABLED))
                continue
            reason = filters_evaluate(call=call.payload, rules=route.rules)
            if reason is not None:
                verdicts.append(Route(sync_id=route.sync_id, reason=reason))
                continue
            identity = identity_resolve(call=call.payload, config=route.config)
            if isinstance(identity, str):
                verdicts.append(Route(sync_id=route.sync_id, reason=identity))
            elif len(identity.user_key) > USER_KEY_MAX_LENGTH:
                # The lane key column is bounded; an id this long is no Intercom id either.
                reason = f"user id longer than {USER_KEY_MAX_LENGTH} characters"
                verdicts.append(Route(sync_id=route.sync_id, reason=reason))
            else:
                user_key = (
                    visitors.lane_key(route=route, call=call, identity=identity)
                    if visitors is not None
                    else identity.user_key
                )
                verdicts.append(Route(sync_id=route.sync_id, user_key=user_key))
        plans.append(verdicts)
    return plans


def events_ingest(
    *,
    source: Source,
    calls: Sequence[Call],
    received_at: datetime,
    sync_ids: Collection[int] | None = None,
    versions: CacheVersions | None = None,
) -> IngestResult:
    """Store valid, normalised calls and their deliveries in one transaction (see module doc).

    Calls repeating a messageId (already stored for this source, or earlier in ``calls``) are
    acknowledged in ``duplicates`` and neither stored nor delivered again. ``sync_ids`` limits
    the syncs the calls go to (a backfill into one sync); the others do not see them at all.
    ``versions``: the configuration's versions when the caller read them already.
    """
    versions = versions or CacheVersions()
    unique: dict[str, Call] = {}
    repeated: list[str] = []
    for call in calls:
        if call.message_id in unique:
            repeated.append(call.message_id)
        else:
            unique[call.message_id] = call
    if not unique:
        return IngestResult(duplicates=repeated)
    batch = list(unique.values())
    filtered: Counter[tuple[int, str]] = Counter()
    suppressed_ids = suppressed_user_ids(
        (call.user_id for call in batch), version=versions.suppressions
    )
    suppressed = 0
    if suppressed_ids:
        kept = [call for call in batch if call.user_id not in suppressed_ids]
        suppressed = len(batch) - len(kept)
        for route in routes_for_source(source_id=source.pk, version=versions.routes):
            filtered[(route.sync_id, SUPPRESSED_REASON)] += suppressed
        batch = kept
    if not batch:
        _after_commit(source=source, event_ids=[], lane_ids=[], filtered=filtered, at=received_at)
        return IngestResult(
            duplicates=repeated, filtered=sum(filtered.values()), suppressed=suppressed
        )
    routes = routes_for_source(source_id=source.pk, version=versions.routes)
    visitors = VisitorRouting(routes=routes, calls=batch)
    plans = routes_plan(batch, source.pk, visitors, routes_version=versions.routes)
    if sync_ids is not None:
        plans = [[v for v in verdicts if v.sync_id in sync_ids] for verdicts in plans]
    stored = _store(source=source, calls=batch, plans=plans, received_at=received_at)
    visitors.store()

    event_ids: list[int] = []
    duplicates = list(repeated)
    deliveries = 0
    kept_out: list[KeptOutCall] = []
    for call, verdicts in zip(batch, plans, strict=True):
        event_id = stored.event_ids.get(call.message_id)
        if event_id is None:
            duplicates.append(call.message_id)
            continue
        event_ids.append(event_id)
        for verdict in verdicts:
            if verdict.reason:
                filtered[(verdict.sync_id, verdict.reason)] += 1
                kept_out.append(
                    KeptOutCall(
                        event_id=event_id,
                        sync_id=verdict.sync_id,
                        user_key=call.user_id or call.anonymous_id,
                        reason=verdict.reason,
                    )
                )
            else:
                deliveries += 1
    lane_ids = sorted(set(stored.lane_ids))
    kept_out_record(calls=kept_out, at=received_at)
    _after_commit(
        source=source, event_ids=event_ids, lane_ids=lane_ids, filtered=filtered, at=received_at
    )
    return IngestResult(
        event_ids=event_ids,
        duplicates=duplicates,
        deliveries=deliveries,
        lane_ids=lane_ids,
        filtered=sum(filtered.values()),
        suppressed=suppressed,
    )


def _store(
    *, source: Source, calls: list[Call], plans: list[list[Route]], received_at: datetime
) -> storage.Stored:
    events = [
        {
            "source_id": source.pk,
            "message_id": call.message_id,
            "type": call.type,
            "user_id": call.user_id,
            "anonymous_id": call.anonymous_id,
            "event_name": call.event_name,
            "payload": call.payload,
            "timestamp": call.timestamp,
        }
        for call in calls
    ]
    routes = [
        (call.message_id, verdict.sync_id, verdict.user_key)
        for call, verdicts in zip(calls, plans, strict=True)
        for verdict in verdicts
        if not verdict.reason
    ]
    attempt = 0
    while True:
        attempt += 1
        try:
            return storage.calls_store(
                events=events, routes=routes, received_at=received_at, now=timezone.now()
            )
        except OperationalError as exc:
            # Contention that PostgreSQL resolves by aborting one side (a deadlock between
            # lanes, a serialization failure) leaves nothing written: the statement runs again
            # after a short randomised pause. Inside a caller's transaction there is nothing safe
            # to retry, so the error goes up.
            if (
                not _is_contention(exc)
                or attempt >= _CONTENTION_RETRIES
                or transaction.get_connection().in_atomic_block
            ):
                raise
            log.warning(
                "ingest contention on source %s, retrying (%s): %s", source.pk, attempt, exc
            )
            time.sleep(random.uniform(0.5, 1.5) * 0.01 * 2**attempt)


def _is_contention(error: OperationalError) -> bool:
    # SQLSTATE 40P01 deadlock_detected, 40001 serialization_failure (psycopg's ``sqlstate``).
    cause = error.__cause__
    state = getattr(cause, "sqlstate", None)
    return state in ("40P01", "40001") or "deadlock" in str(error).lower()


def _after_commit(
    *,
    source: Source,
    event_ids: list[int],
    lane_ids: list[int],
    filtered: Counter[tuple[int, str]],
    at: datetime,
) -> None:
    """Queue what follows the commit.

    Inside a caller's transaction the hooks run once it commits; after the one-statement ingest
    they run at once, the statement having committed. The calls are accepted whatever happens
    next: these hooks are robust (an error is logged, never turned into an error answer that
    would make clients resend what is already stored).
    """
    if lane_ids:
        transaction.on_commit(
            lambda: lanes_queued.send(sender=Lane, lane_ids=lane_ids), robust=True
        )
    if filtered:
        transaction.on_commit(lambda: filtered_count(counts=filtered, at=at), robust=True)
    if event_ids:
        transaction.on_commit(
            lambda: event_ingested.send(sender=Source, source_id=source.pk, event_ids=event_ids),
            robust=True,
        )
