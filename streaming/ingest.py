"""Ingest: store accepted calls as Events and fan them out to one Delivery per matching Sync.

``events_ingest`` is the one door into the queue of record, used by the HTTP API, the Python
API and the Intercom webhook source. In ONE transaction it inserts the events (a messageId the
source already sent is acknowledged and skipped, by ``ON CONFLICT DO NOTHING``), upserts the
lanes of (sync, user) and inserts the deliveries; only after commit does it wake the lanes and
send ``event_ingested``. On PostgreSQL that is one statement (one round trip, committing on its
own), elsewhere three in a transaction, whatever the batch size: the API answers 200 only once
this returns, so its speed is the ingest throughput.

What a sync filters out (by its event filters, or because the call has no usable identity) is
not stored: it is counted per sync and reason in the cache, in hourly buckets kept 48 hours,
and ``filtered_counts`` reads them back for the admin.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import OperationalError, models, transaction
from django.utils import timezone

from integrations.filtering import filters_evaluate
from integrations.intercom.transforms import identity_resolve
from integrations.models import Source
from integrations.selectors import routes_for_source
from streaming import statements
from streaming.models import Delivery, Event, Lane
from streaming.segment import Call
from streaming.signals import event_ingested
from streaming.tasks import lanes_wake_soon

log = logging.getLogger(__name__)

FILTERED_BUCKET = timedelta(hours=1)
FILTERED_KEEP = timedelta(hours=48)
_DEADLOCK_RETRIES = 5
USER_KEY_MAX_LENGTH = Lane._meta.get_field("user_key").max_length


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did."""

    event_ids: list[int] = field(default_factory=list)  # newly stored, in call order
    duplicates: list[str] = field(default_factory=list)  # messageIds already stored: acknowledged
    deliveries: int = 0
    lane_ids: list[int] = field(default_factory=list)
    filtered: int = 0  # (call, sync) pairs a sync filtered out


@dataclass(frozen=True)
class _Route:
    """A call's verdict for one sync: deliver in lane ``user_key``, or filtered for ``reason``."""

    sync_id: int
    user_key: str = ""
    reason: str = ""


def _routes_plan(calls: Sequence[Call], source_id: int) -> list[list[_Route]]:
    """Per call, each enabled sync's verdict (pure Python once the routes are loaded)."""
    routes = routes_for_source(source_id=source_id)
    plans: list[list[_Route]] = []
    for call in calls:
        verdicts: list[_Route] = []
        for route in routes:
            reason = filters_evaluate(call=call.payload, rules=route.rules)
            if reason is not None:
                verdicts.append(_Route(sync_id=route.sync_id, reason=reason))
                continue
            identity = identity_resolve(call=call.payload, config=route.config)
            if isinstance(identity, str):
                verdicts.append(_Route(sync_id=route.sync_id, reason=identity))
            elif len(identity.user_key) > USER_KEY_MAX_LENGTH:
                # The lane key column is bounded; an id this long is no Intercom id either.
                verdicts.append(
                    _Route(
                        sync_id=route.sync_id,
                        reason=f"user id longer than {USER_KEY_MAX_LENGTH} characters",
                    )
                )
            else:
                verdicts.append(_Route(sync_id=route.sync_id, user_key=identity.user_key))
        plans.append(verdicts)
    return plans


def _insert_parts(
    model: type[models.Model], rows: list[dict[str, Any]]
) -> tuple[tuple[models.Field, ...], set[str], dict[str, Any]]:
    """The model's columns, those ``rows`` give, and the prepared default of every other one."""
    connection = transaction.get_connection()
    fields = statements.insert_fields(model)
    given = set(rows[0])
    constants = {
        f.attname: f.get_db_prep_save(f.get_default(), connection)
        for f in fields
        if f.attname not in given
    }
    return fields, given, constants


def _unnest_insert_sql(
    model: type[models.Model], rows: list[dict[str, Any]], *, suffix: str = ""
) -> tuple[str, list[Any]]:
    """PostgreSQL: ``INSERT .. SELECT * FROM unnest(arrays)`` of ``rows`` and its parameters.

    One array per column, bound server-side in binary: the statement text is the same for any
    batch size (so the server prepares it once per connection) and values are never quoted
    into SQL. The client-side binding Django uses re-parses a VALUES list of thousands of
    placeholders on every call, which cost more than the insert itself.
    """
    connection = transaction.get_connection()
    quote = connection.ops.quote_name
    fields, given, constants = _insert_parts(model, rows)
    arrays = [
        [row[f.attname] for row in rows]
        if f.attname in given
        else [constants[f.attname]] * len(rows)
        for f in fields
    ]
    casts = ", ".join(f"%b::{f.db_type(connection)}[]" for f in fields)
    columns = ", ".join(quote(f.column) for f in fields)
    table = quote(model._meta.db_table)
    return f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({casts}){suffix}", arrays


def _postgresql_execute(sql: str, params: list[Any], *, returning: bool) -> list[tuple[Any, ...]]:
    # Server-side binding (the %b placeholders), prepared once per statement shape.
    with statements.cursor() as rows:
        rows.execute(sql, params)
        return rows.fetchall() if returning else []


def _rows_insert(
    model: type[models.Model],
    rows: list[dict[str, Any]],
    *,
    conflict: str = "",
    returning: tuple[str, ...] = (),
) -> list[tuple[Any, ...]]:
    """One multi-row ``INSERT`` of ``rows`` ({column attname: database-ready value}).

    ``bulk_create`` prepares every field of every row through the ORM, which costs more than the
    database itself at batch sizes (profiled: about two thirds of an ingest). Here the columns a
    row gives are passed as they are, and every other column gets its field default, prepared
    once per statement, so a field added to the model with a default keeps working.
    """
    connection = transaction.get_connection()
    quote = connection.ops.quote_name
    suffix = f" {conflict}" if conflict else ""
    if returning:
        suffix += " RETURNING " + ", ".join(quote(column) for column in returning)
    if connection.vendor == "postgresql":
        sql, arrays = _unnest_insert_sql(model, rows, suffix=suffix)
        return _postgresql_execute(sql, arrays, returning=bool(returning))
    fields, given, constants = _insert_parts(model, rows)
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(f.column) for f in fields)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params: list[Any] = []
    for row in rows:
        params += [row[f.attname] if f.attname in given else constants[f.attname] for f in fields]
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([placeholders] * len(rows)) + suffix
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if returning else []


def _event_rows(
    *, source: Source, calls: Sequence[Call], received_at: datetime
) -> list[dict[str, Any]]:
    connection = transaction.get_connection()
    adapt_datetime = connection.ops.adapt_datetimefield_value
    payload_field = Event._meta.get_field("payload")
    received = adapt_datetime(received_at)
    return [
        {
            "source_id": source.pk,
            "message_id": call.message_id,
            "type": call.type,
            "user_id": call.user_id,
            "anonymous_id": call.anonymous_id,
            "event_name": call.event_name,
            "payload": payload_field.get_db_prep_save(call.payload, connection),
            "timestamp": adapt_datetime(call.timestamp),
            "received_at": received,
        }
        for call in calls
    ]


def _events_conflict() -> str:
    # A messageId the source already sent is acknowledged and skipped.
    quote = transaction.get_connection().ops.quote_name
    return f"ON CONFLICT ({quote('source_id')}, {quote('message_id')}) DO NOTHING"


def _events_insert(
    *, source: Source, calls: Sequence[Call], received_at: datetime
) -> dict[str, int]:
    """Insert the events; return {messageId: id} for those that were new.

    ``ON CONFLICT DO NOTHING RETURNING`` (PostgreSQL, and SQLite >= 3.35) returns exactly the
    rows that did not conflict: which calls are new is known in one statement, without a race
    with a concurrent copy of the same batch (``bulk_create(ignore_conflicts=True)`` cannot say).
    """
    inserted = _rows_insert(
        Event,
        _event_rows(source=source, calls=calls, received_at=received_at),
        conflict=_events_conflict(),
        returning=("id", "message_id"),
    )
    return {message_id: pk for pk, message_id in inserted}


def _lane_conflict() -> str:
    # An idle lane (next_attempt_at NULL) becomes due now; a lane waiting for a retry keeps its
    # backoff, which the ORM's update_conflicts cannot express (it would overwrite it).
    quote = transaction.get_connection().ops.quote_name
    next_attempt = quote("next_attempt_at")
    return (
        f"ON CONFLICT ({quote('sync_id')}, {quote('user_key')}) DO UPDATE SET "
        f"{next_attempt} = COALESCE({quote(Lane._meta.db_table)}.{next_attempt}, "
        f"EXCLUDED.{next_attempt})"
    )


def _lanes_upsert(*, keys: Iterable[tuple[int, str]], now: datetime) -> dict[tuple[int, str], int]:
    """Make sure a Lane exists for each (sync, user); mark idle ones due now; return their ids.

    One statement whatever the number of lanes: ``INSERT .. ON CONFLICT DO UPDATE .. RETURNING``
    (PostgreSQL, and SQLite >= 3.35) inserts the new lanes and returns every id.
    """
    # Sorted, so that concurrent ingests lock shared lanes in the same order (no deadlock).
    ordered = sorted(set(keys))
    due = transaction.get_connection().ops.adapt_datetimefield_value(now)
    rows = _rows_insert(
        Lane,
        [
            {"sync_id": sync_id, "user_key": user_key, "next_attempt_at": due}
            for sync_id, user_key in ordered
        ],
        conflict=_lane_conflict(),
        returning=("id", "sync_id", "user_key"),
    )
    return {(sync_id, user_key): lane_id for lane_id, sync_id, user_key in rows}


def events_ingest(*, source: Source, calls: Sequence[Call], received_at: datetime) -> IngestResult:
    """Store valid, normalised calls and their deliveries in one transaction (see module doc).

    Calls repeating a messageId (already stored for this source, or earlier in ``calls``) are
    acknowledged in ``duplicates`` and neither stored nor delivered again.
    """
    unique: list[Call] = []
    seen: set[str] = set()
    repeated: list[str] = []
    for call in calls:
        if call.message_id in seen:
            repeated.append(call.message_id)
        else:
            seen.add(call.message_id)
            unique.append(call)
    if not unique:
        return IngestResult(duplicates=repeated)

    plans = _routes_plan(unique, source.pk)
    store = (
        _ingest_one_statement
        if transaction.get_connection().vendor == "postgresql"
        else _ingest_atomic
    )
    attempt = 0
    while True:
        attempt += 1
        try:
            return store(
                source=source, calls=unique, plans=plans, received_at=received_at, repeated=repeated
            )
        except OperationalError as exc:
            # Two batches repeating the same messageIds in a different order can deadlock on the
            # unique index; PostgreSQL aborts one, which can simply run again. Inside a caller's
            # transaction there is nothing safe to retry, so the error goes up.
            deadlock = "deadlock" in str(exc).lower()
            if (
                not deadlock
                or attempt >= _DEADLOCK_RETRIES
                or transaction.get_connection().in_atomic_block
            ):
                raise
            log.warning("ingest deadlock on source %s, retrying (%s)", source.pk, attempt)


@dataclass
class _Outcome:
    """What the events insert decided: new events, duplicates, deliveries to queue, filtered."""

    event_ids: list[int]
    duplicates: list[str]
    pending: list[tuple[int, _Route]]
    filtered: Counter[tuple[int, str]]


def _outcome(
    calls: list[Call], plans: list[list[_Route]], new_ids: Mapping[str, int], repeated: list[str]
) -> _Outcome:
    outcome = _Outcome(event_ids=[], duplicates=list(repeated), pending=[], filtered=Counter())
    for call, verdicts in zip(calls, plans, strict=True):
        event_id = new_ids.get(call.message_id)
        if event_id is None:
            outcome.duplicates.append(call.message_id)
            continue
        outcome.event_ids.append(event_id)
        for verdict in verdicts:
            if verdict.reason:
                outcome.filtered[(verdict.sync_id, verdict.reason)] += 1
            else:
                outcome.pending.append((event_id, verdict))
    return outcome


def _accepted(
    *, source: Source, outcome: _Outcome, lane_ids: Iterable[int], received_at: datetime
) -> IngestResult:
    """Queue what follows the commit, and say what was stored.

    Registered inside the ingest transaction, the hooks run once it commits (or once the
    caller's transaction does); after the one-statement ingest they run at once, the statement
    having committed. The calls are accepted whatever happens next: these hooks are robust (an
    error is logged, never turned into an error answer that would make clients resend what is
    already stored).
    """
    woken = sorted(set(lane_ids))
    filtered = outcome.filtered
    event_ids = outcome.event_ids
    if woken:
        transaction.on_commit(lambda: lanes_wake_soon(woken), robust=True)
    if filtered:
        transaction.on_commit(lambda: filtered_count(counts=filtered, at=received_at), robust=True)
    if event_ids:
        transaction.on_commit(
            lambda: event_ingested.send(sender=Source, source_id=source.pk, event_ids=event_ids),
            robust=True,
        )
    return IngestResult(
        event_ids=event_ids,
        duplicates=outcome.duplicates,
        deliveries=len(outcome.pending),
        lane_ids=woken,
        filtered=sum(filtered.values()),
    )


def _ingest_atomic(
    *,
    source: Source,
    calls: list[Call],
    plans: list[list[_Route]],
    received_at: datetime,
    repeated: list[str],
) -> IngestResult:
    """Events, lanes and deliveries in three statements inside one transaction (any database)."""
    now = timezone.now()
    with transaction.atomic():
        new_ids = _events_insert(source=source, calls=calls, received_at=received_at)
        outcome = _outcome(calls, plans, new_ids, repeated)
        lane_ids: dict[tuple[int, str], int] = {}
        if outcome.pending:
            lane_ids = _lanes_upsert(
                keys=((verdict.sync_id, verdict.user_key) for _, verdict in outcome.pending),
                now=now,
            )
            created = transaction.get_connection().ops.adapt_datetimefield_value(received_at)
            _rows_insert(
                Delivery,
                [
                    {
                        "event_id": event_id,
                        "sync_id": verdict.sync_id,
                        "lane_id": lane_ids[(verdict.sync_id, verdict.user_key)],
                        "user_key": verdict.user_key,
                        "created_at": created,
                    }
                    for event_id, verdict in outcome.pending
                ],
            )
        return _accepted(
            source=source, outcome=outcome, lane_ids=lane_ids.values(), received_at=received_at
        )


@dataclass(frozen=True)
class _Bound:
    """A value bound as a parameter of an ``INSERT .. SELECT``, cast to its column's type."""

    value: Any


def _select_list(
    model: type[models.Model], given: Mapping[str, str | _Bound], params: list[Any]
) -> tuple[str, str]:
    """(columns, expressions) of an ``INSERT .. SELECT`` into ``model``.

    The ``given`` columns ({attname: SQL expression or bound value}) as given, every other one
    its field default (so a field added with a default keeps working). Bound values are appended
    to ``params`` in the order of the expressions, where their placeholders are.
    """
    connection = transaction.get_connection()
    quote = connection.ops.quote_name
    fields, _, constants = _insert_parts(model, [dict.fromkeys(given)])
    expressions = []
    for f in fields:
        expression = given.get(f.attname)
        if isinstance(expression, str):
            expressions.append(expression)
            continue
        params.append(constants[f.attname] if expression is None else expression.value)
        expressions.append(f"%b::{f.db_type(connection)}")
    return ", ".join(quote(f.column) for f in fields), ", ".join(expressions)


def _ingest_one_statement(
    *,
    source: Source,
    calls: list[Call],
    plans: list[list[_Route]],
    received_at: datetime,
    repeated: list[str],
) -> IngestResult:
    """PostgreSQL: events, lanes and deliveries in ONE statement, hence one round trip.

    Data-modifying CTEs: the events insert returns the new events, and only their routes upsert
    lanes (in (sync, user) order, as ``_lanes_upsert``, so that concurrent ingests lock shared
    lanes in the same order) and insert deliveries (in call order). Outside a caller's
    transaction the statement commits on its own (autocommit) without BEGIN and COMMIT round
    trips; inside one it is part of it. A single call cost five round trips before (profiled:
    most of its database time).
    """
    connection = transaction.get_connection()
    quote = connection.ops.quote_name
    adapt_datetime = connection.ops.adapt_datetimefield_value
    events_sql, params = _unnest_insert_sql(
        Event,
        _event_rows(source=source, calls=calls, received_at=received_at),
        suffix=f" {_events_conflict()} RETURNING {quote('id')}, {quote('message_id')}",
    )
    routes = [
        (call.message_id, verdict.sync_id, verdict.user_key)
        for call, verdicts in zip(calls, plans, strict=True)
        for verdict in verdicts
        if not verdict.reason
    ]
    sql = f"WITH new_events AS ({events_sql})"
    if not routes:
        sql += f" SELECT {quote('id')}, {quote('message_id')}, NULL FROM new_events"
    else:
        params += [list(column) for column in zip(*routes, strict=True)]
        sql += (
            ", routed AS (SELECT r.position, r.sync_id, r.user_key, e.id AS event_id"
            " FROM unnest(%b::text[], %b::bigint[], %b::text[]) WITH ORDINALITY"
            " AS r(message_id, sync_id, user_key, position)"
            f" JOIN new_events e ON e.{quote('message_id')} = r.message_id)"
        )
        columns, values = _select_list(
            Lane,
            {
                "sync_id": "k.sync_id",
                "user_key": "k.user_key",
                "next_attempt_at": _Bound(adapt_datetime(timezone.now())),
            },
            params,
        )
        sql += (
            f", lanes AS (INSERT INTO {quote(Lane._meta.db_table)} ({columns})"
            f" SELECT {values} FROM (SELECT DISTINCT sync_id, user_key FROM routed) k"
            f" ORDER BY k.sync_id, k.user_key {_lane_conflict()}"
            f" RETURNING {quote('id')}, {quote('sync_id')}, {quote('user_key')})"
        )
        columns, values = _select_list(
            Delivery,
            {
                "event_id": "r.event_id",
                "sync_id": "r.sync_id",
                "lane_id": "l.id",
                "user_key": "r.user_key",
                "created_at": _Bound(adapt_datetime(received_at)),
            },
            params,
        )
        sql += (
            f", deliveries AS (INSERT INTO {quote(Delivery._meta.db_table)} ({columns})"
            f" SELECT {values} FROM routed r JOIN lanes l"
            f" ON l.{quote('sync_id')} = r.sync_id AND l.{quote('user_key')} = r.user_key"
            " ORDER BY r.position)"
            f" SELECT {quote('id')}, {quote('message_id')}, NULL FROM new_events"
            f" UNION ALL SELECT NULL, NULL, {quote('id')} FROM lanes"
        )
    rows = _postgresql_execute(sql, params, returning=True)
    new_ids = {message_id: pk for pk, message_id, _ in rows if pk is not None}
    lane_ids = [lane_id for pk, _, lane_id in rows if pk is None]
    return _accepted(
        source=source,
        outcome=_outcome(calls, plans, new_ids, repeated),
        lane_ids=lane_ids,
        received_at=received_at,
    )


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
