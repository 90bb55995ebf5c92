"""B9: the audit at production size. Every audit page and the audit API, timed warm (median of 5)
at 100 K / 1 M / 5 M events with their deliveries and attempts (``b9_fill``: 1 KB payloads,
2 attempts per delivery, 200,000 users over 30 days); storage bytes per event; and the retention
purge's rate while single-call ingest runs, with ingest's p99 during the purge and without it.

Before and after in one run: each size is filled once with the schema before migration
``0005_audit_at_scale``, the pages are timed with the code of the base revision (``git archive
HEAD``, or ``--before-code DIR``), the migration is applied to the filled tables (its duration is
a figure too), and the pages are timed again with this checkout's code. Targets: every page
<= 300 ms at 5 M, and no page slower at 5 M than at 100 K by more than 2x.

    .venv/bin/python bench/b9_audit_scale.py [--quick] [--sizes 100k,1m,5m] [--repeats 5]
        [--no-before] [--before-purge-seconds 120] [--no-purge]

The pages run through Django's test client in a child process that imports the code being
measured (so before and after never share a process); the ingest load is gunicorn with a
closed loop of 8 clients posting single tracks (B1's shape).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    PYTHON,
    ROOT,
    HttpPool,
    LoadResult,
    Stack,
    basic_auth,
    closed_loop,
    result_write,
    stop,
    switchboard_setup,
    table_print,
)

NAME = "b9_audit_scale"
SIZES = {"100k": 100_000, "1m": 1_000_000, "5m": 5_000_000}
MIGRATION = "0005_audit_at_scale"
TARGET_MS = 300
TARGET_RATIO = 2.0
PURGE_RETENTION_DAYS = 15  # half of the 30 days filled is past retention
PROBE_USER = "probe-1"
PROBE_EMAIL = "probe-1@example.com"
TRAIL = ("streaming_event", "streaming_delivery", "streaming_deliveryattempt")

# (key, what) of every page timed; the URL of each is built in the child (``_page_urls``).
PAGES = [
    ("deliveries", "deliveries list"),
    ("deliveries_failed", "deliveries, status = failed"),
    ("deliveries_user", "deliveries, search user id"),
    ("deliveries_email", "deliveries, search email"),
    ("deliveries_last", "deliveries, last page"),
    ("deliveries_middle", "deliveries, middle page"),
    ("timeline_user", "timeline by user id"),
    ("timeline_email", "timeline by email"),
    ("health", "sync health"),
    ("events", "events list"),
    ("attempts", "attempts list"),
    ("api", "GET /api/v1/users/{id}/deliveries"),
    ("overview", "overview (admin index), charts by hour"),
    ("overview_hour", "overview, charts by minute"),
    ("overview_month", "overview, charts by day (30 days)"),
]


# --- the child: time the pages with one revision's code ----------------------------------------


def _page_urls(last_page: int) -> dict[str, str]:
    deliveries = "/admin/streaming/delivery/"
    return {
        "deliveries": deliveries,
        "deliveries_failed": f"{deliveries}?status__exact=failed",
        "deliveries_user": f"{deliveries}?q={PROBE_USER}",
        "deliveries_email": f"{deliveries}?q={PROBE_EMAIL}",
        "deliveries_last": f"{deliveries}?p={last_page}",
        "deliveries_middle": f"{deliveries}?p={max(last_page // 2, 1)}",
        "timeline_user": f"{deliveries}timeline/?q={PROBE_USER}",
        "timeline_email": f"{deliveries}timeline/?q={PROBE_EMAIL}",
        "health": f"{deliveries}health/",
        "events": "/admin/streaming/event/",
        "attempts": "/admin/streaming/deliveryattempt/",
        "api": f"/api/v1/users/{PROBE_USER}/deliveries",
        "overview": "/admin/",
        "overview_hour": "/admin/?span=hour",
        "overview_month": "/admin/?span=month",
    }


def pages_time(*, repeats: int, only: list[str]) -> dict[str, Any]:
    """In the child: each page once to warm it, then ``repeats`` times; milliseconds."""
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client

    import streaming

    user, _ = User.objects.get_or_create(
        username="bench-b9", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    with connection.cursor() as cursor:
        # The last page as the list shows it: its count is PostgreSQL's estimate (both revisions).
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = 'streaming_delivery'"
        )
        last_page = max(math.ceil(cursor.fetchone()[0] / 100), 1)
    urls = _page_urls(last_page)
    timings: dict[str, Any] = {"code": str(Path(streaming.__file__).parents[1]), "pages": {}}
    for key in only:
        url = urls[key]
        began = time.perf_counter()
        response = client.get(url)
        warm_up = time.perf_counter() - began
        runs = []
        for _ in range(repeats):
            began = time.perf_counter()
            response = client.get(url)
            assert response.content is not None
            runs.append((time.perf_counter() - began) * 1000)
        timings["pages"][key] = {
            "url": url,
            "status": response.status_code,
            "median_ms": round(statistics.median(runs), 1),
            "runs_ms": [round(r, 1) for r in runs],
            "first_ms": round(warm_up * 1000, 1),
        }
        print(f"      {key:<20} {timings['pages'][key]['median_ms']:>10,.1f} ms", file=sys.stderr)
    return timings


def pages_measure(stack: Stack, code: Path, *, repeats: int, only: list[str]) -> dict[str, Any]:
    """Run ``pages_time`` in a child process whose imports come from ``code``."""
    command = [
        PYTHON,
        str(Path(__file__).resolve()),
        "--child-pages",
        ",".join(only),
        "--repeats",
        str(repeats),
    ]
    env = stack.environment(PYTHONPATH=str(code), LOG_LEVEL="ERROR")
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
    sys.stderr.write(done.stderr[-4000:] if done.returncode else done.stderr)
    if done.returncode:
        raise RuntimeError(f"timing the pages with {code} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the database -----------------------------------------------------------------------------


def migration_before() -> str:
    """The migration ``MIGRATION`` follows: the schema the "before" code runs on."""
    module = importlib.import_module(f"streaming.migrations.{MIGRATION}")
    (previous,) = [name for app, name in module.Migration.dependencies if app == "streaming"]
    return previous


def manage(stack: Stack, *args: str) -> float:
    began = time.perf_counter()
    subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=stack.environment(), check=True)
    return round(time.perf_counter() - began, 1)


def sql(stack: Stack, statement: str, params: Any = None) -> list[tuple]:
    import psycopg

    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def storage(stack: Stack, events: int) -> dict[str, Any]:
    """Bytes of the three tables (heap, TOAST and indexes) per event."""
    sizes = dict(
        sql(stack, "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname = ANY(%s)",
            [list(TRAIL)])
    )  # fmt: skip
    indexes = dict(
        sql(stack, "SELECT relname, pg_indexes_size(oid) FROM pg_class WHERE relname = ANY(%s)",
            [list(TRAIL)])
    )  # fmt: skip
    total = sum(sizes.values())
    return {
        "bytes_per_event": round(total / events),
        "total_mb": round(total / 2**20),
        "index_bytes_per_event": round(sum(indexes.values()) / events),
        "tables_mb": {k: round(v / 2**20) for k, v in sizes.items()},
    }


def deleted_and_updated(stack: Stack) -> dict[str, tuple[int, int]]:
    return {
        name: (deleted, updated)
        for name, deleted, updated in sql(
            stack,
            "SELECT relname, n_tup_del, n_tup_upd FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            [list(TRAIL)],
        )
    }


# --- the retention purge under ingest -----------------------------------------------------------


def ingest_request(tag: str) -> Any:
    def request(thread: int, n: int) -> tuple[str, str, bytes]:
        body = {
            "userId": f"ingest-{tag}-{thread}-{n}",
            "event": "Bench Event",
            "messageId": f"{tag}-{thread}-{n}",
            "properties": {"plan": "pro", "n": n},
        }
        return "POST", "/v1/track", json.dumps(body).encode()

    return request


def load_while(pool: HttpPool, alive: Any, *, window: float = 5.0) -> LoadResult:
    """B1's closed loop at 8 clients, in windows, for as long as ``alive()``."""
    samples: list[tuple[float, float, int]] = []
    elapsed = 0.0
    tag = uuid.uuid4().hex[:8]
    n = 0
    while alive():
        run = closed_loop(
            pool, concurrency=8, seconds=window, request=ingest_request(f"{tag}-{n}"), warmup=0
        )
        samples += run.samples
        elapsed += run.elapsed
        n += 1
    return LoadResult(samples, elapsed)


def purge_run(
    stack: Stack, code: Path, pool: HttpPool, *, timeout: float, events_past: int
) -> dict[str, Any]:
    """Run ``code``'s retention_purge (retention ``PURGE_RETENTION_DAYS``) in a child while
    the ingest load runs; rows deleted and payloads blanked per second, ingest latency."""
    # A run without its time budget (this checkout's purge has one; the base revision's not).
    snippet = (
        "import inspect, django; django.setup()\n"
        "from streaming.delivery.sweep import retention_purge\n"
        "budget = 'seconds' in inspect.signature(retention_purge).parameters\n"
        "print(retention_purge(**({'seconds': 1e9} if budget else {})))\n"
    )
    env = stack.environment(
        PYTHONPATH=str(code), SWITCHBOARD_RETENTION_DAYS=PURGE_RETENTION_DAYS, LOG_LEVEL="INFO"
    )
    before = deleted_and_updated(stack)
    log = stack.logs / f"purge-{uuid.uuid4().hex[:6]}.log"
    began = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(
            [PYTHON, "-c", snippet], cwd=code, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    timeline: list[dict[str, Any]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(5.0):
            now = deleted_and_updated(stack)
            timeline.append(
                {
                    "second": round(time.perf_counter() - began, 1),
                    "deleted": sum(now[t][0] - before[t][0] for t in TRAIL),
                    "blanked": now["streaming_event"][1] - before["streaming_event"][1],
                }
            )

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    deadline = began + timeout
    load = load_while(pool, lambda: child.poll() is None and time.perf_counter() < deadline)
    finished = child.poll() is not None
    if not finished:
        child.terminate()
        child.wait(30)
    seconds = time.perf_counter() - began
    stop.set()
    sampler.join()
    time.sleep(1.5)  # table statistics reach pg_stat within a second
    after = deleted_and_updated(stack)
    deleted = {t: after[t][0] - before[t][0] for t in TRAIL}
    blanked = after["streaming_event"][1] - before["streaming_event"][1]
    rows = sum(deleted.values()) + blanked
    quarter = max(len(timeline) // 4, 1)

    def rate(points: list[dict[str, Any]]) -> float:
        if len(points) < 2:
            return 0.0
        done = points[-1]["deleted"] + points[-1]["blanked"]
        done -= points[0]["deleted"] + points[0]["blanked"]
        return round(done / (points[-1]["second"] - points[0]["second"]), 1)

    summary = load.summary()
    return {
        "finished": finished,
        "seconds": round(seconds, 1),
        "events_past_retention": events_past,
        "deleted": deleted,
        "payloads_blanked": blanked,
        "rows_per_s": round(rows / seconds, 1),
        "rows_per_s_first_quarter": rate(timeline[: quarter + 1]),
        "rows_per_s_last_quarter": rate(timeline[-quarter - 1 :]),
        "ingest": summary,
        "timeline": timeline,
        "output": log.read_text()[-2000:],
    }


def ingest_alone(pool: HttpPool, seconds: float) -> dict[str, Any]:
    return closed_loop(
        pool, concurrency=8, seconds=seconds, request=ingest_request(uuid.uuid4().hex[:8])
    ).summary()


# --- one size -----------------------------------------------------------------------------------


def size_run(
    stack: Stack, label: str, events: int, args: argparse.Namespace, before_code: Path | None
) -> dict[str, Any]:
    from bench.b9_fill import trail_fill

    print(f"=== {label}: {events:,} events", flush=True)
    result: dict[str, Any] = {"events": events}
    from django.db import connections

    connections.close_all()  # the database is dropped and made again
    stack.database_reset()
    stack.redis_flush()
    previous = migration_before()
    result["migrate_back_s"] = manage(
        stack, "migrate", "streaming", previous, "--no-input", "-v", "0"
    )
    setup = switchboard_setup(sandbox_url="http://127.0.0.1:9")
    trail = trail_fill(
        stack.database_url,
        events=events,
        source_id=setup.source_id,
        sync_id=setup.sync_id,
        progress=lambda line: print(line, flush=True) if args.verbose else None,
    )
    result["fill_seconds"] = trail.seconds
    print(f"  filled in {trail.seconds}", flush=True)
    only = [key for key, _ in PAGES]
    if before_code is not None:
        result["storage_before"] = storage(stack, events)
        print(f"  before ({before_code}):", flush=True)
        result["before"] = pages_measure(stack, before_code, repeats=args.repeats, only=only)
    result["migration_s"] = manage(
        stack, "migrate", "streaming", MIGRATION, "--no-input", "-v", "0"
    )
    # Autovacuum's ANALYZE would follow a new expression index; here it is run at once.
    for table in TRAIL:
        sql(stack, f"ANALYZE {table}")
    print(f"  migration {MIGRATION}: {result['migration_s']} s", flush=True)
    # The migrations after it (newer tables this checkout reads, such as the kept-out calls).
    manage(stack, "migrate", "--no-input", "-v", "0")
    result["storage_after"] = storage(stack, events)
    print("  after (this checkout):", flush=True)
    result["after"] = pages_measure(stack, ROOT, repeats=args.repeats, only=only)

    if args.no_purge:
        return result
    web = stack.gunicorn_start(workers=3, threads=4)
    pool = HttpPool(
        web.url,
        headers={"Authorization": basic_auth(setup.write_key), "Content-Type": "application/json"},
    )
    closed_loop(pool, concurrency=8, seconds=2, request=ingest_request("warm"), warmup=0)
    result["ingest_alone"] = ingest_alone(pool, args.ingest_seconds)
    print(f"  ingest alone: {result['ingest_alone']}", flush=True)
    past = sql(
        stack,
        "SELECT count(*) FROM streaming_event WHERE received_at < now() - %s * interval '1 day'",
        [PURGE_RETENTION_DAYS],
    )[0][0]
    if before_code is not None and args.before_purge_seconds > 0:
        result["purge_before"] = purge_run(
            stack, before_code, pool, timeout=args.before_purge_seconds, events_past=past
        )
        print(f"  purge (before): {_purge_line(result['purge_before'])}", flush=True)
    result["purge_after"] = purge_run(
        stack, ROOT, pool, timeout=args.purge_timeout, events_past=past
    )
    print(f"  purge (after): {_purge_line(result['purge_after'])}", flush=True)
    stop(web.process)
    return result


def _purge_line(purge: dict[str, Any]) -> str:
    return (
        f"{purge['rows_per_s']:,.0f} rows/s over {purge['seconds']} s "
        f"({'done' if purge['finished'] else 'stopped'}), deleted {purge['deleted']}, "
        f"blanked {purge['payloads_blanked']:,}; ingest p99 {purge['ingest']['p99_ms']} ms"
    )


# --- the report ---------------------------------------------------------------------------------


def figures_summarise(sizes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline: each page's after-fix time at the largest size, its ratio to the smallest,
    and whether both targets hold."""
    labels = list(sizes)
    small, large = labels[0], labels[-1]
    pages = {}
    for key, _ in PAGES:
        after_large = sizes[large]["after"]["pages"][key]["median_ms"]
        after_small = sizes[small]["after"]["pages"][key]["median_ms"]
        pages[key] = {
            "ms": after_large,
            "ratio": round(after_large / after_small, 2) if after_small else None,
        }
    slowest = max(pages, key=lambda k: pages[k]["ms"])
    steepest = max(pages, key=lambda k: pages[k]["ratio"] or 0)
    purge = sizes[large].get("purge_after")
    return {
        "largest": large,
        "smallest": small,
        "pages": pages,
        "slowest": [slowest, pages[slowest]["ms"]],
        "steepest": [steepest, pages[steepest]["ratio"]],
        "bytes_per_event": sizes[large]["storage_after"]["bytes_per_event"],
        "purge_rows_per_s": purge["rows_per_s"] if purge else None,
        "ingest_p99_ms_during_purge": purge["ingest"]["p99_ms"] if purge else None,
        "ingest_p99_ms_alone": sizes[large]["ingest_alone"]["p99_ms"] if purge else None,
        "met": pages[slowest]["ms"] <= TARGET_MS
        and (len(labels) < 2 or (pages[steepest]["ratio"] or 0) <= TARGET_RATIO),
    }


def report(sizes: dict[str, dict[str, Any]]) -> None:
    labels = list(sizes)
    headers = ["page"]
    for label in labels:
        headers += [f"{label} before", f"{label} after"]
    rows = []
    for key, what in PAGES:
        row: list[Any] = [what]
        for label in labels:
            before = sizes[label].get("before", {}).get("pages", {}).get(key, {})
            row += [before.get("median_ms", "-"), sizes[label]["after"]["pages"][key]["median_ms"]]
        rows.append(row)
    storage_row: list[Any] = ["bytes per event"]
    for label in labels:
        storage_row += [
            sizes[label].get("storage_before", {}).get("bytes_per_event", "-"),
            sizes[label]["storage_after"]["bytes_per_event"],
        ]
    rows.append(storage_row)
    table_print("B9 audit at scale (ms, warm, median)", headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 K and 1 M only")
    parser.add_argument("--sizes", default="", help="comma-separated: 100k,1m,5m")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--before-code",
        default="",
        help="a folder of the code to time first (default: the revision before the migration)",
    )
    parser.add_argument("--no-before", action="store_true", help="time this checkout only")
    parser.add_argument("--no-purge", action="store_true")
    parser.add_argument("--purge-timeout", type=float, default=900.0)
    parser.add_argument("--before-purge-seconds", type=float, default=120.0)
    parser.add_argument("--ingest-seconds", type=float, default=20.0)
    parser.add_argument("--verbose", action="store_true", help="the fill's progress")
    parser.add_argument("--child-pages", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_pages:
        # The child imports the project from its working directory: the code being measured.
        sys.path.insert(0, os.getcwd())
        print(json.dumps(pages_time(repeats=args.repeats, only=args.child_pages.split(","))))
        return

    labels = [s for s in args.sizes.split(",") if s] or (
        ["100k", "1m"] if args.quick else list(SIZES)
    )
    stack = Stack(NAME)
    stack.django()
    before_code = None
    if not args.no_before:
        before_code = (
            Path(args.before_code) if args.before_code else _revision_export(_revision_before())
        )
    sizes = {label: size_run(stack, label, SIZES[label], args, before_code) for label in labels}
    report(sizes)
    summary = figures_summarise(sizes)
    print(json.dumps({k: v for k, v in summary.items() if k != "pages"}), flush=True)
    result_write(
        NAME,
        quick=args.quick or set(labels) != set(SIZES),
        config={
            "sizes": {label: SIZES[label] for label in labels},
            "repeats": args.repeats,
            "users": 200_000,
            "days": 30,
            "attempts_per_delivery": 2,
            "payload_bytes": "about 1 KB",
            "probe_user": PROBE_USER,
            "before_code": str(before_code) if before_code else None,
            "before_revision": args.before_code or (None if args.no_before else _revision_before()),
            "purge_retention_days": PURGE_RETENTION_DAYS,
            "ingest_load": "POST /v1/track, closed loop, 8 clients, gunicorn -w 3 --threads 4",
        },
        figures={"summary": summary, "sizes": sizes, "met": summary["met"]},
    )


def _revision_before() -> str:
    """The revision before ``MIGRATION`` was committed (HEAD while it is not)."""
    added = subprocess.run(
        ["git", "log", "-n", "1", "--diff-filter=A", "--format=%H", "--",
         f"streaming/migrations/{MIGRATION}.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return f"{added}^" if added else "HEAD"


def _revision_export(revision: str) -> Path:
    """The code of ``revision`` in a temporary folder (``git archive``: the checkout untouched)."""
    target = Path(tempfile.mkdtemp(prefix="sb-b9-before-"))
    archive = subprocess.run(
        ["git", "archive", revision], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    # The same generated secrets (.local/secrets.env): the stored tokens must decrypt.
    if (ROOT / ".local").exists():
        (target / ".local").symlink_to(ROOT / ".local")
    return target


if __name__ == "__main__":
    main()
