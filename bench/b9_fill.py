"""B9's data: an audit trail at production size, written by PostgreSQL itself.

``trail_fill`` writes ``events`` calls received over 30 days by 200,000 users into one sync:
one delivery each in the state a month of traffic leaves (mostly delivered, some after a retry,
some failed, expired, skipped; the last two minutes still pending), and two HTTP attempts per
delivery that was tried, with Intercom's answers. Payloads are about 1 KB of Segment call
(context, page, user agent, properties; identify traits with an email; a third of the users send
through an SDK that copies the traits, email included, into every call's ``context.traits``).

Rows come from ``INSERT .. SELECT generate_series`` with the values drawn from hashes of the row
number, so the same size always gives the same rows; the secondary indexes are dropped during
the load and built again afterwards (as a restore does), and foreign keys are not checked row by
row (``session_replication_role = replica``: the rows are consistent by construction). Then
``VACUUM ANALYZE``, the state autovacuum leaves a table in.

Three *probe* users (``probe-1`` .. ``probe-3``, ``probe-N@example.com``) have 30 events each
spread over the 30 days at every size, so that the pages about one user show the same rows at
100 K and at 5 M events: what changes between sizes is only the size of the tables around them.

Over our usual ~400 lines: this is mostly SQL, the shape of a month of traffic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

USERS = 200_000
DAYS = 30
PROBES = 3
PROBE_EVENTS = 30
CHUNK = 100_000
# Deliveries received in the last two minutes are still pending (the live backlog).
PENDING_SECONDS = 120

TABLES = ("streaming_event", "streaming_delivery", "streaming_deliveryattempt", "streaming_lane")


@dataclass(frozen=True)
class Trail:
    """What ``trail_fill`` wrote: where the month starts and ends, and how long it took."""

    events: int
    start: datetime
    end: datetime
    seconds: dict[str, float]


# Values of row ``i``: hashes of (i, k) are the dice. ``probe`` events are every ``stride``-th.
_ROW = """
    SELECT i,
        CASE WHEN i %% %(stride)s = 0
            THEN 'probe-' || ((i / %(stride)s) %% %(probes)s + 1)
            ELSE 'user-' || (abs(hashint8extended(i, 1)) %% %(users)s) END AS user_id,
        %(start)s::timestamptz + %(span)s::interval * (i - 1) / %(events)s AS received_at,
        abs(hashint8extended(i, 2)) AS roll,
        abs(hashint8extended(i, 3)) AS roll2,
        abs(hashint8extended(i, 4)) %% 1000 AS outcome,
        md5(i::text) AS hash
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
"""

_KIND = (
    """
    SELECT r.*,
        CASE
            WHEN r.user_id LIKE 'probe-%%' THEN
                CASE WHEN (r.i / %(stride)s / %(probes)s) %% 10 = 0 THEN 'identify' ELSE 'track' END
            WHEN r.roll %% 100 < 10 THEN 'identify'
            WHEN r.roll %% 100 < 20 THEN 'page'
            ELSE 'track' END AS type,
        (ARRAY['Order Completed', 'Product Viewed', 'Product Added', 'Cart Viewed',
               'Checkout Started', 'Payment Info Entered', 'Coupon Applied', 'Product Removed',
               'Products Searched', 'Signed In', 'Signed Out', 'Plan Changed',
               'Trial Started', 'Invite Sent', 'Report Exported', 'Dashboard Viewed',
               'Project Created', 'File Uploaded', 'Comment Added', 'Subscription Renewed'])
            [1 + (r.roll2 %% 20)::int] AS event_name,
        r.user_id || '@example.com' AS email,
        -- A third of the users' SDK copies traits into every call's context (RudderStack's do).
        (r.roll2 / 7) %% 3 = 0 OR r.user_id LIKE 'probe-%%' AS context_traits,
        substr(r.hash, 1, 8) || '-' || substr(r.hash, 9, 4) || '-4' || substr(r.hash, 14, 3)
            || '-a' || substr(r.hash, 18, 3) || '-' || substr(r.hash, 21, 12) AS message_id,
        'anon-' || substr(md5(r.user_id), 1, 20) AS anonymous_id,
        to_char(r.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS received_iso,
        to_char((r.received_at - interval '1 millisecond' * (r.roll %% 900))
            AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS timestamp_iso,
        1000 + r.roll2 %% 9000 AS product
    FROM ("""
    + _ROW
    + """) r
"""
)

_PAYLOAD = """
    jsonb_strip_nulls(jsonb_build_object(
        'type', k.type,
        'event', CASE WHEN k.type = 'track' THEN k.event_name END,
        'name', CASE WHEN k.type = 'page' THEN 'Product' END,
        'userId', k.user_id,
        'anonymousId', k.anonymous_id,
        'messageId', k.message_id,
        'timestamp', k.timestamp_iso,
        'sentAt', k.timestamp_iso,
        'receivedAt', k.received_iso,
        'properties', CASE WHEN k.type = 'track' THEN jsonb_build_object(
                'order_id', 'ord-' || substr(k.hash, 1, 12), 'product_id', 'prod-' || k.product,
                'sku', 'SKU-' || k.product || '-' || (k.roll %% 7), 'category', 'Games',
                'name', 'Monopoly: 3rd Edition', 'price', 19 + k.roll %% 80,
                'quantity', 1 + k.roll %% 3, 'revenue', 25 + k.roll %% 400, 'currency', 'EUR',
                'coupon', CASE WHEN k.roll %% 5 = 0 THEN 'WINTER10' END,
                'plan', (ARRAY['free', 'starter', 'pro', 'enterprise'])[1 + (k.roll %% 4)::int])
            WHEN k.type = 'page' THEN jsonb_build_object(
                'path', '/products/' || k.product, 'referrer', 'https://www.google.com/',
                'search', '', 'title', 'Product ' || k.product || ' | Example Shop',
                'url', 'https://shop.example.com/products/' || k.product) END,
        'traits', CASE WHEN k.type = 'identify' THEN jsonb_build_object(
                'email', k.email, 'name', 'Ada ' || initcap(substr(k.hash, 1, 7)),
                'firstName', 'Ada', 'lastName', initcap(substr(k.hash, 1, 7)),
                'plan', (ARRAY['free', 'starter', 'pro', 'enterprise'])[1 + (k.roll %% 4)::int],
                'createdAt', '2024-0' || (1 + k.roll %% 9) || '-1' || (k.roll %% 9) || 'T10:00:00Z',
                'phone', '+49 30 ' || (1000000 + k.roll %% 8999999),
                'title', 'Head of Growth',
                'company', jsonb_build_object('id', 'company-' || (k.roll %% 20000),
                    'name', 'Company ' || (k.roll %% 20000), 'plan', 'pro')) END,
        'context', jsonb_build_object(
            'library', jsonb_build_object('name', 'analytics.js', 'version', 'next-1.55.0'),
            'ip', '10.' || (k.roll %% 250) || '.' || (k.roll2 %% 250) || '.' || (k.i %% 250),
            'locale', 'en-US', 'timezone', 'Europe/Berlin',
            'userAgent', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 '
                '(KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36',
            'page', jsonb_build_object(
                'path', '/products/' || k.product, 'referrer', 'https://www.google.com/',
                'search', '', 'title', 'Product ' || k.product || ' | Example Shop',
                'url', 'https://shop.example.com/products/' || k.product),
            'traits', CASE WHEN k.context_traits THEN jsonb_build_object(
                'email', k.email, 'plan', (ARRAY['free', 'starter', 'pro', 'enterprise'])
                    [1 + (k.roll %% 4)::int]) END),
        'integrations', jsonb_build_object('All', true)
    ))
"""

EVENTS_SQL = (
    """
    INSERT INTO streaming_event (id, source_id, message_id, type, user_id, anonymous_id,
        event_name, payload, "timestamp", received_at)
    SELECT k.i, %(source)s, k.message_id, k.type, k.user_id, k.anonymous_id,
        CASE WHEN k.type = 'track' THEN k.event_name ELSE '' END, """
    + _PAYLOAD
    + """,
        k.received_at - interval '1 millisecond' * (k.roll %% 900), k.received_at
    FROM ("""
    + _KIND
    + ") k"
)

# The outcome of each delivery, per thousand: 15 failed, 10 expired, 10 skipped, 45 delivered
# after a retry, the rest delivered at the first try; pending if received in the last minutes.
_DELIVERY = (
    """
    SELECT k.*,
        CASE
            WHEN k.received_at > %(end)s::timestamptz - interval '1 second' * %(pending)s
                THEN 'pending'
            WHEN k.outcome < 15 THEN 'failed'
            WHEN k.outcome < 25 THEN 'expired'
            WHEN k.outcome < 35 THEN 'skipped'
            ELSE 'succeeded' END AS status,
        CASE WHEN k.outcome >= 35 AND k.outcome < 80 THEN 2 ELSE 1 END AS tries
    FROM ("""
    + _KIND
    + ") k"
)

DELIVERIES_SQL = (
    """
    INSERT INTO streaming_delivery (id, event_id, sync_id, lane_id, user_key, status, attempts,
        next_attempt_at, reason, created_at, completed_at)
    SELECT d.i, d.i, %(sync)s,
        CASE WHEN d.user_id LIKE 'probe-%%' THEN %(users)s + substr(d.user_id, 7)::int
            ELSE substr(d.user_id, 6)::int + 1 END,
        d.user_id, d.status,
        CASE d.status WHEN 'pending' THEN 0 WHEN 'expired' THEN 9 WHEN 'skipped' THEN 0
            ELSE d.tries END,
        CASE WHEN d.status = 'pending' THEN d.received_at END,
        CASE d.status
            WHEN 'failed' THEN 'HTTP 400 parameter_invalid: Custom attribute ''plan_tier'' '
                'does not exist (create it in Intercom, or let the sync create it)'
            WHEN 'expired' THEN 'The retry window (4 h) was used up; last error: HTTP 503 '
                'service_unavailable: Sorry, the API service is temporarily unavailable'
            WHEN 'skipped' THEN 'Nothing to send: the sync sends no page calls'
            ELSE '' END,
        d.received_at,
        CASE d.status
            WHEN 'pending' THEN NULL
            WHEN 'expired' THEN d.received_at + interval '4 hours'
            WHEN 'skipped' THEN d.received_at + interval '3 milliseconds'
            ELSE d.received_at + interval '1 millisecond' * (150 + d.roll %% 1800)
                + CASE WHEN d.tries > 1 THEN interval '1 second' * (10 + d.roll2 %% 30)
                    ELSE interval '0' END END
    FROM ("""
    + _DELIVERY
    + ") d"
)

# Two HTTP exchanges per delivery that was tried: an identify finds the contact then updates
# it; a track or page is sent as an event, the first time answered 429 (or 503 for a delivery
# retried), the second 202 (or Intercom's 400 for a failed one).
ATTEMPTS_SQL = (
    """
    INSERT INTO streaming_deliveryattempt (id, delivery_id, event_id, user_key, method, url,
        request_body, status_code, response_excerpt, category, error_code, duration_ms,
        started_at)
    SELECT 2 * d.i - 2 + n, d.i, d.i, d.user_id,
        CASE WHEN d.type = 'identify' THEN (ARRAY['GET', 'PUT'])[n] ELSE 'POST' END,
        CASE WHEN d.type = 'identify' THEN
            (ARRAY['https://api.intercom.io/contacts/find_by_external_id/' || d.user_id,
                   'https://api.intercom.io/contacts/' || substr(d.hash, 1, 24)])[n]
            ELSE 'https://api.intercom.io/events' END,
        CASE
            WHEN d.type = 'identify' AND n = 1 THEN NULL
            WHEN d.type = 'identify' THEN jsonb_build_object(
                'role', 'user', 'external_id', d.user_id, 'email', d.email,
                'name', 'Ada ' || initcap(substr(d.hash, 1, 7)),
                'signed_up_at', 1700000000 + d.roll %% 10000000,
                'custom_attributes', jsonb_build_object(
                    'plan', (ARRAY['free', 'starter', 'pro', 'enterprise'])[1 + (d.roll %% 4)::int],
                    'title', 'Head of Growth', 'phone', '+49 30 ' || (1000000 + d.roll %% 8999999)))
            ELSE jsonb_build_object(
                'event_name', coalesce(nullif(d.event_name, ''), 'Viewed Product Page'),
                'created_at', extract(epoch FROM d.received_at)::bigint,
                'user_id', d.user_id,
                'metadata', jsonb_build_object(
                    'order_id', 'ord-' || substr(d.hash, 1, 12), 'product_id', 'prod-' || d.product,
                    'price', jsonb_build_object('amount', 100 * (25 + d.roll %% 400),
                        'currency', 'EUR'),
                    'plan', (ARRAY['free', 'starter', 'pro', 'enterprise'])[1 + (d.roll %% 4)::int],
                    'quantity', 1 + d.roll %% 3)) END,
        CASE
            WHEN d.type = 'identify' THEN 200
            WHEN n = 1 AND d.tries > 1 THEN 503
            WHEN n = 1 THEN 429
            WHEN d.status = 'failed' THEN 400
            WHEN d.status = 'expired' THEN 503
            ELSE 202 END,
        CASE
            WHEN d.type = 'identify' THEN '{"type":"contact","id":"' || substr(d.hash, 1, 24)
                || '","workspace_id":"ecahpwf5","external_id":"' || d.user_id
                || '","role":"user","email":"' || d.email || '","name":"Ada '
                || initcap(substr(d.hash, 1, 7)) || '","has_hard_bounced":false,'
                || '"marked_email_as_spam":false,"unsubscribed_from_emails":false,'
                || '"created_at":1700000000,"updated_at":' || extract(epoch FROM d.received_at)::bigint
                || ',"custom_attributes":{"plan":"pro"}}'
            WHEN n = 1 AND d.tries > 1 OR d.status = 'expired' THEN
                '{"type":"error.list","request_id":"' || substr(d.hash, 1, 20) || '","errors":'
                || '[{"code":"service_unavailable","message":"Sorry, the API service is '
                || 'temporarily unavailable"}]}'
            WHEN n = 1 THEN '{"type":"error.list","request_id":"' || substr(d.hash, 1, 20)
                || '","errors":[{"code":"rate_limit_exceeded","message":"You have exceeded the '
                || 'rate limit. Please try again later."}]}'
            WHEN d.status = 'failed' THEN '{"type":"error.list","request_id":"'
                || substr(d.hash, 1, 20) || '","errors":[{"code":"parameter_invalid",'
                || '"message":"Custom attribute ''plan_tier'' does not exist"}]}'
            ELSE '' END,
        CASE
            WHEN d.type = 'identify' THEN 'success'
            WHEN n = 1 AND d.tries > 1 OR d.status = 'expired' THEN 'retryable'
            WHEN n = 1 THEN 'rate_limited'
            WHEN d.status = 'failed' THEN 'permanent'
            ELSE 'success' END,
        CASE
            WHEN d.type = 'identify' THEN ''
            WHEN n = 1 AND d.tries > 1 OR d.status = 'expired' THEN 'service_unavailable'
            WHEN n = 1 THEN 'rate_limit_exceeded'
            WHEN d.status = 'failed' THEN 'parameter_invalid'
            ELSE '' END,
        40 + d.roll %% 200,
        d.received_at + interval '1 millisecond' * (20 + n * 60)
            + CASE WHEN n = 2 AND d.tries > 1 THEN interval '1 second' * (10 + d.roll2 %% 30)
                ELSE interval '0' END
    FROM ("""
    + _DELIVERY
    + """) d CROSS JOIN (VALUES (1), (2)) AS tries(n)
    WHERE d.status NOT IN ('pending', 'skipped')
    """
)

LANES_SQL = """
    INSERT INTO streaming_lane (id, sync_id, user_key, next_attempt_at, lease_token)
    SELECT u + 1, %(sync)s, 'user-' || u, NULL::timestamptz, '' FROM generate_series(0, %(users)s - 1) AS u
    UNION ALL
    SELECT %(users)s + p, %(sync)s, 'probe-' || p, NULL, '' FROM generate_series(1, %(probes)s) AS p
"""


def _secondary_indexes(conn: psycopg.Connection) -> list[tuple[str, str, str | None]]:
    """(name, CREATE statement, constraint table or None) of every index but the primary keys
    of the trail's tables; a unique constraint is re-added as a constraint."""
    rows = conn.execute(
        """
        SELECT i.relname, pg_get_indexdef(i.oid), c.conname, t.relname,
            pg_get_constraintdef(c.oid)
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.contype IN ('u', 'p')
        WHERE t.relname = ANY(%s) AND NOT x.indisprimary
        """,
        [list(TABLES)],
    ).fetchall()
    indexes = []
    for name, definition, constraint, table, constraint_definition in rows:
        if constraint:
            indexes.append(
                (
                    constraint,
                    f'ALTER TABLE "{table}" ADD CONSTRAINT "{constraint}" {constraint_definition}',
                    table,
                )
            )
        else:
            indexes.append((name, definition, None))
    return indexes


def trail_fill(
    database_url: str,
    *,
    events: int,
    source_id: int,
    sync_id: int,
    progress: Callable[[str], None] = print,
) -> Trail:
    """Fill the (empty) trail tables with ``events`` calls over the 30 days up to now."""
    end = datetime.now(UTC)
    start = end - timedelta(days=DAYS)
    stride = max(events // (PROBES * PROBE_EVENTS), 1)
    params = {
        "events": events,
        "start": start,
        "end": end,
        "span": timedelta(days=DAYS),
        "stride": stride,
        "probes": PROBES,
        "users": USERS,
        "pending": PENDING_SECONDS,
        "source": source_id,
        "sync": sync_id,
    }
    seconds: dict[str, float] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        indexes = _secondary_indexes(conn)
        for name, _, constraint_table in indexes:
            if constraint_table:
                conn.execute(f'ALTER TABLE "{constraint_table}" DROP CONSTRAINT "{name}"')
            else:
                conn.execute(f'DROP INDEX "{name}"')
        conn.execute(LANES_SQL, params)

    began = time.perf_counter()
    # Two writers (the machine's two cores): events on one, deliveries then attempts on the other.
    failures: list[BaseException] = []

    def write(label: str, statements: list[str]) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("SET session_replication_role = replica")
                conn.execute("SET synchronous_commit = off")
                for sql in statements:
                    for lo in range(1, events + 1, CHUNK):
                        hi = min(lo + CHUNK - 1, events)
                        conn.execute(sql, {**params, "lo": lo, "hi": hi})
                        progress(f"    {label}: {hi:,} of {events:,}")
        except BaseException as error:  # noqa: BLE001 - re-raised below
            failures.append(error)

    writers = [
        threading.Thread(target=write, args=("events", [EVENTS_SQL])),
        threading.Thread(
            target=write, args=("deliveries, attempts", [DELIVERIES_SQL, ATTEMPTS_SQL])
        ),
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    if failures:
        raise failures[0]
    seconds["rows"] = round(time.perf_counter() - began, 1)

    began = time.perf_counter()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        for table in TABLES:
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {table}))"
            )
        for _, statement, _ in indexes:
            conn.execute(statement)
    seconds["indexes"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"VACUUM ANALYZE {table}")
    seconds["vacuum"] = round(time.perf_counter() - began, 1)
    return Trail(events=events, start=start, end=end, seconds=seconds)
