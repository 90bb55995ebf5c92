"""Hand-written SQL of the hot paths, behind named functions; everything else uses the ORM.

Three statements carry Switchboard's throughput, and each is here because the ORM measured too
slow for it (figures in docs/benchmarks.md, "Where the time goes"):

- ``calls_store``: ingest's events, lanes and deliveries. On PostgreSQL ONE statement
  (data-modifying CTEs over ``unnest`` arrays, bound server-side), so a call costs one round trip
  whatever the batch size; ``bulk_create`` prepared every field of every row in Python, which
  cost more than the database itself, and five round trips dominated a single call.
- ``attempt_create`` / ``attempt_answer``: the attempt row before the request, completed after it.
- ``delivery_state_write``: a delivery's next state, with its lane's due time and its last
  attempt's answer in the same statement (one round trip per Intercom call instead of three).

The delivery statements only match rows by equality, so their SQL is compiled once per shape
(table, columns written, columns matched) and cached; Django compiles a queryset on every run,
which was a third of a worker's CPU. Values are adapted by each model field exactly as the ORM
adapts them, and a column added to a model with a default keeps working.

On PostgreSQL the statements run as prepared statements (``cursor``): the server parses and
plans each shape once per connection. Django leaves preparing off because a pooler in
transaction mode (PgBouncer before 1.21) does not keep prepared statements;
``SWITCHBOARD_DATABASE_PREPARE=false`` turns it off here too. Elsewhere (SQLite, the embedded
mode) the same functions run plain statements in a transaction.

Over our usual ~400 lines on purpose: it is the one place where SQL is written by hand, so a
reviewer of a statement finds its siblings, its cursor and its reasons together.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Exists, Field, Model, Q, Subquery

from integrations.models import Destination, Sync
from streaming.models import Delivery, DeliveryAttempt, Event, Lane

# --- the cursor ---------------------------------------------------------------------------


def cursor() -> CursorWrapper:
    """A cursor of the default database; on PostgreSQL it binds values server-side.

    And, unless ``SWITCHBOARD_DATABASE_PREPARE`` is off or Django is logging queries, it
    prepares each statement it runs. Wrapped like Django's own cursors (error translation,
    execute wrappers, the query log), through Django's public wrapper methods.
    """
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return connection.cursor()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns preparing off for the connection; with a threshold no statement reaches,
        # only what asks for it (``prepare=True``) is prepared.
        raw.prepare_threshold = sys.maxsize
    if connection.queries_logged:
        # psycopg keeps no text of a prepared statement where Django's query log reads it: while
        # queries are logged (DEBUG, a test's query capture) statements run unprepared.
        return connection.make_debug_cursor(_server_binding_cursor(prepare=False)(raw))
    return connection.make_cursor(_server_binding_cursor(prepare=True)(raw))


@functools.cache
def _server_binding_cursor(*, prepare: bool) -> type:
    # Imported here: an embedded (SQLite) setup never loads psycopg.
    import psycopg

    class ServerBindingCursor(psycopg.Cursor):
        """psycopg's own cursor (it binds server-side; Django's binds client-side), preparing
        each statement unless told otherwise."""

        def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
            options.setdefault("prepare", prepare and settings.SWITCHBOARD_DATABASE_PREPARE)
            return super().execute(query, params, **options)

    return ServerBindingCursor


# --- compiled statements ------------------------------------------------------------------


def _field(model: type[Model], name: str) -> Field:
    return model._meta.pk if name == "pk" else model._meta.get_field(name)


@functools.cache
def insert_fields(model: type[Model]) -> tuple[Field, ...]:
    """The columns an INSERT into ``model`` writes: every concrete one but the primary key."""
    return tuple(f for f in model._meta.concrete_fields if not f.primary_key)


@functools.cache
def _update_sql(model: type[Model], columns: tuple[str, ...], matched: tuple[str, ...]) -> str:
    quote = connections["default"].ops.quote_name
    assignments = ", ".join(f"{quote(_field(model, n).column)} = %s" for n in columns)
    conditions = " AND ".join(f"{quote(_field(model, n).column)} = %s" for n in matched)
    return f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {conditions}"


@functools.cache
def _insert_sql(model: type[Model], returning: bool) -> str:
    quote = connections["default"].ops.quote_name
    fields = insert_fields(model)
    columns = ", ".join(quote(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders})"
    return f"{sql} RETURNING {quote(model._meta.pk.column)}" if returning else sql


@dataclass(frozen=True)
class RowsUpdate:
    """An UPDATE still to run: the rows of ``model`` whose fields equal ``where`` get ``values``.

    What ``model.objects.filter(**where).update(**values)`` does, for plain values.
    """

    model: type[Model]
    where: dict[str, Any]
    values: dict[str, Any]

    def as_sql(self) -> tuple[str, list[Any]]:
        connection = connections["default"]
        sql = _update_sql(self.model, tuple(self.values), tuple(self.where))
        params = [
            _field(self.model, name).get_db_prep_save(value, connection)
            for name, value in self.values.items()
        ]
        params += [
            _field(self.model, name).get_db_prep_value(value, connection)
            for name, value in self.where.items()
        ]
        return sql, params

    def run(self) -> int:
        sql, params = self.as_sql()
        with cursor() as rows:
            rows.execute(sql, params)
            return rows.rowcount


def rows_update_together(main: RowsUpdate, *others: RowsUpdate) -> int:
    """Run UPDATEs as one statement, hence one round trip; returns the rows ``main`` changed.

    On PostgreSQL the others ride along as data-modifying CTEs, which run exactly once whether
    or not the main statement reads them, all in the statement's one transaction. Elsewhere
    (SQLite, the embedded mode) they run one after the other in a transaction.
    """
    connection = connections["default"]
    if not others:
        return main.run()
    if connection.vendor != "postgresql":
        with transaction.atomic():
            for other in others:
                other.run()
            return main.run()
    parts, params = [], []
    for index, other in enumerate(others):
        statement, values = other.as_sql()
        parts.append(f"also_{index} AS ({statement})")
        params.extend(values)
    statement, values = main.as_sql()
    params.extend(values)
    with cursor() as rows:
        rows.execute(f"WITH {', '.join(parts)} {statement}", params)
        return rows.rowcount


def row_insert(model: type[Model], **values: Any) -> int:
    """Insert one row (fields not given take their defaults) and return its primary key.

    What ``model.objects.create(**values).pk`` does, without building a model instance or
    compiling the INSERT, and without the save signals.
    """
    connection = connections["default"]
    fields = insert_fields(model)
    unknown = values.keys() - {field.attname for field in fields}
    if unknown:
        raise TypeError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    params = []
    for field in fields:
        value = values[field.attname] if field.attname in values else field.get_default()
        params.append(field.get_db_prep_save(value, connection))
    returning = connection.features.can_return_columns_from_insert
    with cursor() as rows:
        rows.execute(_insert_sql(model, returning), params)
        return rows.fetchone()[0] if returning else rows.lastrowid


# --- attempts and delivery states ---------------------------------------------------------

_UNCHANGED = object()


def attempt_create(
    *,
    delivery_id: int,
    event_id: int,
    user_key: str,
    method: str,
    url: str,
    request_body: Any,
    started_at: datetime,
) -> int:
    """The attempt row, written before the request leaves; returns its id."""
    return row_insert(
        DeliveryAttempt,
        delivery_id=delivery_id,
        event_id=event_id,
        user_key=user_key,
        method=method,
        url=url,
        request_body=request_body,
        started_at=started_at,
    )


def attempt_answer(attempt_id: int, **answer: Any) -> RowsUpdate:
    """The completion of an attempt with Intercom's answer, to run now (``.run()``) or with the
    delivery's next state (``delivery_state_write``)."""
    return RowsUpdate(DeliveryAttempt, {"pk": attempt_id}, answer)


def delivery_state_write(
    *,
    delivery_id: int,
    values: Mapping[str, Any],
    lane_id: int | None = None,
    lane_due: datetime | None | object = _UNCHANGED,
    answer: RowsUpdate | None = None,
) -> bool:
    """Move a PENDING delivery to ``values``; False when it was no longer pending.

    In the same statement: its lane's next due time (``lane_due``, when given) and the answer
    to its last attempt (``answer``), which run whether or not the delivery was still pending.
    """
    others = []
    if lane_due is not _UNCHANGED:
        others.append(RowsUpdate(Lane, {"pk": lane_id}, {"next_attempt_at": lane_due}))
    if answer is not None:
        others.append(answer)
    moved = rows_update_together(
        RowsUpdate(Delivery, {"pk": delivery_id, "status": Delivery.Status.PENDING}, dict(values)),
        *others,
    )
    return bool(moved)


# --- lanes: the claim, the heads and the release -------------------------------------------


@functools.cache
def _row_reader(model: type[Model]) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    """(attnames, converters per column) to build ``model`` instances from its columns read by
    hand, converted exactly as a queryset converts them (a JSON column is text until then)."""
    connection = connections["default"]
    fields = model._meta.concrete_fields
    converters = tuple(
        (
            *connection.ops.get_db_converters(field.cached_col),
            *field.get_db_converters(connection),
        )
        for field in fields
    )
    return tuple(field.attname for field in fields), converters


def _instance(model: type[Model], values: Sequence[Any]) -> Model:
    connection = connections["default"]
    names, converters = _row_reader(model)
    converted = []
    for value, column_converters in zip(values, converters, strict=True):
        for converter in column_converters:
            value = converter(value, None, connection)
        converted.append(value)
    return model.from_db("default", names, converted)


def _columns(model: type[Model], alias: str) -> str:
    return ", ".join(f"{alias}.{_quote(f.column)}" for f in model._meta.concrete_fields)


@functools.cache
def _lanes_claim_sql() -> str:
    """One statement that leases the given lanes that are free, whose sync is enabled and
    whose destination is not held, and whose head delivery is due; and returns the first
    pending deliveries of each lane it leased, with their events.

    ``SKIP LOCKED``: a lane whose row another transaction is writing (an ingest adding to it, a
    worker releasing it) is left alone rather than waited for, so that a claim never waits in
    a lock cycle with an ingest that locks the same lanes in another order; that other
    transaction's own wake-up (or its worker's claim after the release) takes the lane.
    """
    q = _quote
    lane, delivery, event = (q(m._meta.db_table) for m in (Lane, Delivery, Event))
    sync, destination = q(Sync._meta.db_table), q(Destination._meta.db_table)
    return (
        "WITH candidates AS MATERIALIZED ("
        f" SELECT lane.{q('id')} FROM {lane} lane"
        f" WHERE lane.{q('id')} = ANY(%s::bigint[])"
        f" AND (lane.{q('leased_until')} IS NULL OR lane.{q('leased_until')} < %s)"
        f" AND EXISTS (SELECT 1 FROM {sync} s JOIN {destination} d"
        f" ON d.{q('id')} = s.{q('destination_id')}"
        f" WHERE s.{q('id')} = lane.{q('sync_id')} AND s.{q('status')} = %s"
        f" AND d.{q('auth_failed_at')} IS NULL)"
        f" AND EXISTS (SELECT 1 FROM (SELECT head.{q('next_attempt_at')} FROM {delivery} head"
        f" WHERE head.{q('lane_id')} = lane.{q('id')} AND head.{q('status')} = %s"
        f" ORDER BY head.{q('id')} LIMIT 1) h"
        f" WHERE h.{q('next_attempt_at')} IS NULL OR h.{q('next_attempt_at')} <= %s)"
        " FOR UPDATE OF lane SKIP LOCKED),"
        f" claimed AS (UPDATE {lane} SET {q('leased_until')} = %s, {q('lease_token')} = %s"
        f" FROM candidates WHERE {lane}.{q('id')} = candidates.{q('id')}"
        f" RETURNING {lane}.{q('id')})"
        f" SELECT {_columns(Delivery, 'd')}, {_columns(Event, 'e')} FROM claimed c"
        f" CROSS JOIN LATERAL (SELECT * FROM {delivery} pending"
        f" WHERE pending.{q('lane_id')} = c.{q('id')} AND pending.{q('status')} = %s"
        f" ORDER BY pending.{q('id')} LIMIT %s) d"
        f" JOIN {event} e ON e.{q('id')} = d.{q('event_id')}"
        f" ORDER BY d.{q('lane_id')}, d.{q('id')}"
    )


def lanes_claim(
    *, lane_ids: Sequence[int], token: str, leased_until: datetime, now: datetime, heads: int
) -> dict[int, list[Delivery]]:
    """Lease, with ``token`` until ``leased_until``, those of ``lane_ids`` that nobody holds,
    whose sync is enabled and destination not held after a 401, and whose head is due.

    Returns {lane id: its first ``heads`` pending deliveries, in order, each with its event} of
    the lanes leased. PostgreSQL: one statement, whatever the number of lanes (a wake-up names
    up to ten). Elsewhere a statement per lane, as the claim was before.
    """
    enabled, pending = Sync.Status.ENABLED, Delivery.Status.PENDING
    connection = connections["default"]
    if not lane_ids:
        return {}
    if connection.vendor != "postgresql":
        return _lanes_claim_one_by_one(lane_ids, token, leased_until, now, heads)
    params = [list(lane_ids), now, enabled, pending, now, leased_until, token, pending, heads]
    split = len(Delivery._meta.concrete_fields)
    claimed: dict[int, list[Delivery]] = {}
    with cursor() as statement:
        statement.execute(_lanes_claim_sql(), params)
        rows = statement.fetchall()
    for row in rows:
        delivery = _instance(Delivery, row[:split])
        delivery.event = _instance(Event, row[split:])
        claimed.setdefault(delivery.lane_id, []).append(delivery)
    return claimed


def _lanes_claim_one_by_one(
    lane_ids: Sequence[int], token: str, leased_until: datetime, now: datetime, heads: int
) -> dict[int, list[Delivery]]:
    claimed: dict[int, list[Delivery]] = {}
    for lane_id in sorted(lane_ids):
        pending = Delivery.objects.filter(lane_id=lane_id, status=Delivery.Status.PENDING)
        head_due = Delivery.objects.filter(
            pk=Subquery(pending.order_by("id").values("id")[:1])
        ).filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        leased = (
            Lane.objects.filter(pk=lane_id)
            .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
            .filter(
                Exists(head_due),
                sync__status=Sync.Status.ENABLED,
                sync__destination__auth_failed_at__isnull=True,
            )
            .update(leased_until=leased_until, lease_token=token)
        )
        if leased:
            claimed[lane_id] = list(pending.select_related("event").order_by("id")[:heads])
    return claimed


# Leave a lane's due time as it is on release (its head's state change already wrote it).
LANE_DUE_UNCHANGED = _UNCHANGED


def lanes_release(*, token: str, due: Mapping[int, datetime | None | object]) -> None:
    """End the lease ``token`` on the lanes of ``due``, writing each lane's next due time
    (None: empty; ``LANE_DUE_UNCHANGED``: keep it) in the same statement.

    PostgreSQL: one statement. Its lanes are locked in (sync, user) order, the order ingest
    locks the lanes it adds to, so that a release and an ingest never wait for each other in
    a cycle.
    """
    if not due:
        return
    connection = connections["default"]
    lane_ids = sorted(due)
    if connection.vendor != "postgresql":
        with transaction.atomic():
            for lane_id in lane_ids:
                kept = {} if due[lane_id] is _UNCHANGED else {"next_attempt_at": due[lane_id]}
                Lane.objects.filter(pk=lane_id, lease_token=token).update(
                    leased_until=None, lease_token="", **kept
                )
        return
    keep = [due[lane_id] is _UNCHANGED for lane_id in lane_ids]
    times = [None if due[lane_id] is _UNCHANGED else due[lane_id] for lane_id in lane_ids]
    with cursor() as statement:
        statement.execute(_lanes_release_sql(), [lane_ids, token, lane_ids, keep, times])


@functools.cache
def _lanes_release_sql() -> str:
    q = _quote
    lane, delivery = q(Lane._meta.db_table), q(Delivery._meta.db_table)
    due = q("next_attempt_at")
    # A lane released as empty that holds a pending delivery after all (one stored after the
    # claim read its heads) stays due: the worker claims it again at once, but if it dies first
    # the sweeper's next pass finds it, rather than the once-a-minute search for orphans.
    pending = (
        f"EXISTS (SELECT 1 FROM {delivery} p WHERE p.{q('lane_id')} = {lane}.{q('id')}"
        f" AND p.{q('status')} = '{Delivery.Status.PENDING.value}')"
    )
    return (
        f"WITH held AS MATERIALIZED (SELECT lane.{q('id')} FROM {lane} lane"
        f" WHERE lane.{q('id')} = ANY(%s::bigint[]) AND lane.{q('lease_token')} = %s"
        f" ORDER BY lane.{q('sync_id')}, lane.{q('user_key')} FOR UPDATE)"
        f" UPDATE {lane} SET {q('leased_until')} = NULL, {q('lease_token')} = '',"
        f" {due} = CASE WHEN ends.keep THEN {lane}.{due} WHEN ends.due IS NOT NULL THEN ends.due"
        f" WHEN {pending} THEN now() ELSE NULL END"
        " FROM held JOIN unnest(%s::bigint[], %s::boolean[], %s::timestamptz[])"
        f" AS ends(id, keep, due) ON ends.id = held.{q('id')}"
        f" WHERE {lane}.{q('id')} = held.{q('id')}"
    )


# --- ingest -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """What ``calls_store`` wrote: {messageId: event id} of the new events, and the lanes due."""

    event_ids: dict[str, int]
    lane_ids: list[int]


def calls_store(
    *,
    events: Sequence[Mapping[str, Any]],
    routes: Sequence[tuple[str, int, str]],
    received_at: datetime,
    now: datetime,
) -> Stored:
    """Insert ``events`` (rows of Event columns), skipping messageIds the source already sent,
    and for each new event its ``routes`` (messageId, sync id, lane user key): the lanes of
    (sync, user), idle ones due ``now``, and one pending Delivery each, in call order.

    PostgreSQL: one statement (see the module doc). Elsewhere three, in a transaction.
    """
    connection = transaction.get_connection()
    adapt = connection.ops.adapt_datetimefield_value
    if connection.vendor == "postgresql":
        return _calls_store_one_statement(events, routes, received_at, adapt(now))
    payload_field = Event._meta.get_field("payload")
    rows = [
        {
            **event,
            "payload": payload_field.get_db_prep_save(event["payload"], connection),
            "timestamp": adapt(event["timestamp"]),
            "received_at": adapt(received_at),
        }
        for event in events
    ]
    return _calls_store_atomic(rows, routes, adapt(received_at), adapt(now))


def _quote(name: str) -> str:
    return transaction.get_connection().ops.quote_name(name)


def _events_conflict() -> str:
    # A messageId the source already sent is acknowledged and skipped.
    return f"ON CONFLICT ({_quote('source_id')}, {_quote('message_id')}) DO NOTHING"


def _lane_conflict() -> str:
    # An idle lane (next_attempt_at NULL) becomes due now; a lane waiting for a retry keeps its
    # backoff, which the ORM's update_conflicts cannot express (it would overwrite it).
    due = _quote("next_attempt_at")
    return (
        f"ON CONFLICT ({_quote('sync_id')}, {_quote('user_key')}) DO UPDATE SET "
        f"{due} = COALESCE({_quote(Lane._meta.db_table)}.{due}, EXCLUDED.{due})"
    )


def _defaults(model: type[Model], given: Iterable[str]) -> dict[str, Any]:
    """The prepared default of every column of ``model`` not ``given``."""
    connection = transaction.get_connection()
    constant = _constant_defaults(model)
    return {
        f.attname: (
            constant[f.attname]
            if f.attname in constant
            else f.get_db_prep_save(f.get_default(), connection)
        )
        for f in insert_fields(model)
        if f.attname not in given
    }


@functools.cache
def _constant_defaults(model: type[Model]) -> dict[str, Any]:
    """The prepared defaults that cannot change (not callables), prepared once: preparing every
    default on every ingest was a tenth of a single call's CPU."""
    connection = transaction.get_connection()
    return {
        f.attname: f.get_db_prep_save(f.get_default(), connection)
        for f in insert_fields(model)
        if not f.has_default() or not callable(f.default)
    }


@functools.cache
def _events_insert_sql() -> str:
    """PostgreSQL: insert the events, numbered in call order but written in messageId order.

    Concurrent batches that repeat the same messageIds (an SDK resending after a timeout) take
    the unique index's locks in one order, messageId order, so they wait for each other instead
    of deadlocking; their ids are drawn from the sequence first, in call order, so that an
    event's id still tells the order in which its batch sent it. One parameter: the events as
    one JSON array of objects (``_events_document``), which PostgreSQL reads in call order with
    ``jsonb_to_recordset``.
    """
    connection = transaction.get_connection()
    fields = insert_fields(Event)
    columns = ", ".join(f"{_quote(f.column)} {f.db_type(connection)}" for f in fields)
    names = ", ".join(_quote(f.column) for f in fields)
    table = _quote(Event._meta.db_table)
    pk = _quote(Event._meta.pk.column)
    numbered = (
        # The sequence's name is looked up once per statement (a scalar subquery).
        f"SELECT nextval((SELECT pg_get_serial_sequence("
        f"{_literal(Event._meta.db_table)}, {_literal(Event._meta.pk.column)}))) AS {pk}, u.*"
        f" FROM jsonb_to_recordset(%s::jsonb) AS u({columns})"
    )
    return (
        f"INSERT INTO {table} ({pk}, {names}) SELECT * FROM ({numbered}) n"
        f" ORDER BY n.{_quote('message_id')} {_events_conflict()}"
        f" RETURNING {pk}, {_quote('message_id')}"
    )


def _events_document(events: Sequence[Mapping[str, Any]], received_at: datetime) -> str:
    """The events as the JSON text ``_events_insert_sql`` reads: one object per event, keyed by
    column, the payload nested as it is stored, times in ISO 8601.

    One ``json.dumps`` for the whole batch: passing a PostgreSQL array per column made psycopg
    inspect and adapt every value of every column in Python, and encode each payload on its own,
    which cost more than the statement (docs/benchmarks.md, B1 and B2). The payload is encoded
    with the model field's encoder, as the ORM would encode it.
    """
    columns = {f.attname: f.column for f in insert_fields(Event)}
    missing = columns.keys() - {*events[0], "received_at"}
    if missing:
        raise TypeError(f"events without {', '.join(sorted(missing))}")
    received = received_at.isoformat()
    rows = []
    for event in events:
        row = {columns[name]: value for name, value in event.items()}
        row[columns["timestamp"]] = event["timestamp"].isoformat()
        row[columns["received_at"]] = received
        rows.append(row)
    return json.dumps(rows, cls=Event._meta.get_field("payload").encoder)


def _literal(value: Any) -> str:
    """``value`` as an SQL literal for a statement whose text is built once (PostgreSQL)."""
    connection = transaction.get_connection()
    # A % in the literal would read as a placeholder of the server-bound statement.
    return connection.ops.compose_sql("%s", [value]).replace("%", "%%")


@functools.cache
def _select_list(
    model: type[Model], given: tuple[tuple[str, str], ...], bound: tuple[str, ...]
) -> tuple[str, str, tuple[str, ...]]:
    """(columns, expressions, parameters) of an ``INSERT .. SELECT`` into ``model``: the
    ``given`` (field, SQL expression) pairs; a parameter for each ``bound`` field and each field
    whose default is computed (``_bound_params`` fills them, in the order of ``parameters``);
    and every other column its constant default, written into the statement once: adapting the
    same dozen constants on every call was a twentieth of a single call's CPU."""
    connection = transaction.get_connection()
    constant = _constant_defaults(model)
    expressions, parameters = [], []
    given_sql = dict(given)
    fields = insert_fields(model)
    for f in fields:
        cast = f"::{f.db_type(connection)}"
        if f.attname in given_sql:
            expressions.append(given_sql[f.attname])
        elif f.attname in bound or f.attname not in constant:
            parameters.append(f.attname)
            expressions.append(f"%b{cast}")
        else:
            expressions.append(_literal(constant[f.attname]) + cast)
    columns = ", ".join(_quote(f.column) for f in fields)
    return columns, ", ".join(expressions), tuple(parameters)


def _bound_params(
    model: type[Model], parameters: tuple[str, ...], values: Mapping[str, Any]
) -> list:
    """The values of ``_select_list``'s ``parameters``: ``values``, else the field's default."""
    connection = transaction.get_connection()
    fields = {f.attname: f for f in insert_fields(model)}
    return [
        values[name]
        if name in values
        else fields[name].get_db_prep_save(fields[name].get_default(), connection)
        for name in parameters
    ]


_LANE_BOUND = ("next_attempt_at",)
_DELIVERY_BOUND = ("created_at",)
_LANE_GIVEN = (("sync_id", "k.sync_id"), ("user_key", "k.user_key"))
_DELIVERY_GIVEN = (
    ("event_id", "r.event_id"),
    ("sync_id", "r.sync_id"),
    ("lane_id", "l.id"),
    ("user_key", "r.user_key"),
)


@functools.cache
def _calls_store_sql(routed: bool) -> str:
    """The one statement of ``_calls_store_one_statement``, built once per shape: events only,
    or events with their lanes and deliveries."""
    q = _quote
    sql = f"WITH new_events AS ({_events_insert_sql()})"
    if not routed:
        return sql + f" SELECT {q('id')}, {q('message_id')}, NULL FROM new_events"
    sql += (
        # The routes as one JSON array of [messageId, sync id, user key], in call order.
        ", routed AS (SELECT r.position, (r.route->>1)::bigint AS sync_id,"
        " r.route->>2 AS user_key, e.id AS event_id"
        " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS r(route, position)"
        f" JOIN new_events e ON e.{q('message_id')} = r.route->>0)"
    )
    columns, values, _ = _select_list(Lane, _LANE_GIVEN, _LANE_BOUND)
    sql += (
        f", lanes AS (INSERT INTO {q(Lane._meta.db_table)} ({columns})"
        f" SELECT {values} FROM (SELECT DISTINCT sync_id, user_key FROM routed) k"
        f" ORDER BY k.sync_id, k.user_key {_lane_conflict()}"
        f" RETURNING {q('id')}, {q('sync_id')}, {q('user_key')})"
    )
    columns, values, _ = _select_list(Delivery, _DELIVERY_GIVEN, _DELIVERY_BOUND)
    return sql + (
        f", deliveries AS (INSERT INTO {q(Delivery._meta.db_table)} ({columns})"
        f" SELECT {values} FROM routed r JOIN lanes l"
        f" ON l.{q('sync_id')} = r.sync_id AND l.{q('user_key')} = r.user_key"
        " ORDER BY r.position)"
        f" SELECT {q('id')}, {q('message_id')}, NULL FROM new_events"
        f" UNION ALL SELECT NULL, NULL, {q('id')} FROM lanes"
    )


def _calls_store_one_statement(
    events: Sequence[Mapping[str, Any]],
    routes: Sequence[tuple[str, int, str]],
    received_at: datetime,
    due: Any,
) -> Stored:
    """Data-modifying CTEs: the events insert returns the new events, and only their routes
    upsert lanes (in (sync, user) order, so that concurrent ingests lock shared lanes in the
    same order) and insert deliveries (in call order). Outside a caller's transaction the
    statement commits on its own, without BEGIN and COMMIT round trips. The statement's text
    is built once per shape (``_calls_store_sql``): only the parameters change."""
    params: list[Any] = [_events_document(events, received_at)]
    if routes:
        params.append(json.dumps(routes))
        lane = _select_list(Lane, _LANE_GIVEN, _LANE_BOUND)[2]
        params += _bound_params(Lane, lane, {"next_attempt_at": due})
        delivery = _select_list(Delivery, _DELIVERY_GIVEN, _DELIVERY_BOUND)[2]
        params += _bound_params(Delivery, delivery, {"created_at": received_at})
    with cursor() as statement:
        statement.execute(_calls_store_sql(bool(routes)), params)
        result = statement.fetchall()
    return Stored(
        event_ids={message_id: pk for pk, message_id, _ in result if pk is not None},
        lane_ids=[lane_id for pk, _, lane_id in result if pk is None],
    )


def _values_insert(
    model: type[Model], rows: list[dict[str, Any]], suffix: str = ""
) -> list[tuple[Any, ...]]:
    """A multi-row ``INSERT .. VALUES`` (any database) of ``rows``, returning what ``suffix``
    asks for."""
    fields = insert_fields(model)
    defaults = _defaults(model, rows[0])
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params: list[Any] = []
    for row in rows:
        params += [row[f.attname] if f.attname in row else defaults[f.attname] for f in fields]
    columns = ", ".join(_quote(f.column) for f in fields)
    sql = (
        f"INSERT INTO {_quote(model._meta.db_table)} ({columns}) VALUES "
        + ", ".join([placeholders] * len(rows))
        + (f" {suffix}" if suffix else "")
    )
    with transaction.get_connection().cursor() as statement:
        statement.execute(sql, params)
        return statement.fetchall() if "RETURNING" in suffix else []


def _calls_store_atomic(
    rows: list[dict[str, Any]], routes: Sequence[tuple[str, int, str]], received: Any, due: Any
) -> Stored:
    """Events, lanes and deliveries in three statements inside one transaction (SQLite >= 3.35
    has ``ON CONFLICT .. RETURNING`` too: which calls are new is known without a race)."""
    q = _quote
    with transaction.atomic():
        inserted = _values_insert(
            Event, rows, f"{_events_conflict()} RETURNING {q('id')}, {q('message_id')}"
        )
        event_ids = {message_id: pk for pk, message_id in inserted}
        new_routes = [route for route in routes if route[0] in event_ids]
        if not new_routes:
            return Stored(event_ids=event_ids, lane_ids=[])
        # Sorted, so that concurrent ingests lock shared lanes in the same order.
        keys = sorted({(sync_id, user_key) for _, sync_id, user_key in new_routes})
        lanes = _values_insert(
            Lane,
            [{"sync_id": s, "user_key": u, "next_attempt_at": due} for s, u in keys],
            f"{_lane_conflict()} RETURNING {q('id')}, {q('sync_id')}, {q('user_key')}",
        )
        lane_ids = {(sync_id, user_key): lane_id for lane_id, sync_id, user_key in lanes}
        _values_insert(
            Delivery,
            [
                {
                    "event_id": event_ids[message_id],
                    "sync_id": sync_id,
                    "lane_id": lane_ids[(sync_id, user_key)],
                    "user_key": user_key,
                    "created_at": received,
                }
                for message_id, sync_id, user_key in new_routes
            ],
        )
    return Stored(event_ids=event_ids, lane_ids=list(lane_ids.values()))
