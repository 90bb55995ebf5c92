"""B2: batch ingest. POST /v1/batch with 100 track calls a request, through gunicorn, closed
loop: durable events/s (each 200 means the events and their deliveries are committed).

In the same run, the limit of the machine: the same rows (events and their deliveries) written
straight into PostgreSQL with COPY, one transaction per 100 events, at the same concurrency,
into copies of the tables with the same indexes; the ratio says how much the pipeline costs on
top of the writes. Target: >= 3,000 events/s (anchor: RudderStack's gateway, 1.7K/s on 2 cores
with the database on another machine; here the database and the load share the 2 cores).

    .venv/bin/python bench/b2_ingest_batch.py [--quick] [--repeats N] [--profile]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    HttpPool,
    Stack,
    basic_auth,
    closed_loop,
    median,
    profile_print,
    profile_summary,
    profile_wait,
    py_spy_record,
    result_write,
    switchboard_setup,
    table_print,
)

NAME = "b2_ingest_batch"
BATCH = 100


def batch_body(tag: str, n: int) -> dict:
    now = datetime.now(UTC).isoformat()
    return {
        "batch": [
            {
                "type": "track",
                # A new user per event: every event creates its lane, the dearest case.
                "userId": f"user-{tag}-{n}-{i}",
                "event": "Bench Event",
                "messageId": f"{tag}-{n}-{i}",
                "timestamp": now,
                "properties": {"plan": "pro", "n": i, "price": 12.5},
            }
            for i in range(BATCH)
        ]
    }


def copy_limit(
    database_url: str, *, concurrency: int, seconds: float, source_id: int, sync_id: int
) -> dict:
    """Events and deliveries written with COPY, 100 events a transaction, ``concurrency`` threads."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in ("event", "delivery"):
            conn.execute(f"DROP TABLE IF EXISTS bench_copy_{table}")
            conn.execute(f"CREATE TABLE bench_copy_{table} (LIKE streaming_{table} INCLUDING ALL)")
        lane_id = conn.execute("SELECT coalesce(max(id), 0) FROM streaming_lane").fetchone()[0]
    done = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    tag = uuid.uuid4().hex[:8]

    def loop(thread: int) -> None:
        n = 0
        with psycopg.connect(database_url) as conn:
            while time.perf_counter() < stop_at:
                body = batch_body(f"{tag}-{thread}", n)["batch"]
                now = datetime.now(UTC)
                with conn.transaction(), conn.cursor() as cur:
                    with cur.copy(
                        "COPY bench_copy_event (source_id, message_id, type, user_id, anonymous_id,"
                        " event_name, payload, timestamp, received_at) FROM STDIN"
                    ) as copy:
                        for call in body:
                            copy.write_row(
                                (
                                    source_id,
                                    call["messageId"],
                                    "track",
                                    call["userId"],
                                    "",
                                    call["event"],
                                    json.dumps(call),
                                    now,
                                    now,
                                )
                            )
                    # The deliveries reference the events by id: take them back as ingest does.
                    cur.execute(
                        "SELECT id FROM bench_copy_event WHERE source_id = %s AND message_id = ANY(%s)",
                        (source_id, [c["messageId"] for c in body]),
                    )
                    ids = [r[0] for r in cur.fetchall()]
                    with cur.copy(
                        "COPY bench_copy_delivery (event_id, sync_id, lane_id, user_key, status,"
                        " attempts, reason, created_at) FROM STDIN"
                    ) as copy:
                        for event_id, call in zip(ids, body, strict=False):
                            copy.write_row(
                                (
                                    event_id,
                                    sync_id,
                                    lane_id or 1,
                                    call["userId"],
                                    "pending",
                                    0,
                                    "",
                                    now,
                                )
                            )
                n += 1
                with lock:
                    done[0] += BATCH

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in ("delivery", "event"):
            conn.execute(f"DROP TABLE IF EXISTS bench_copy_{table}")
    return {
        "events": done[0],
        "seconds": round(elapsed, 2),
        "events_per_s": round(done[0] / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--web-threads", type=int, default=2)
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the web workers in the last repeat"
    )
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    seconds = args.seconds or (5.0 if args.quick else 20.0)

    stack = Stack(NAME)
    stack.database_reset()
    stack.redis_flush()
    stack.django()
    setup = switchboard_setup(sandbox_url="http://127.0.0.1:9")
    web = stack.gunicorn_start(workers=args.web_workers, threads=args.web_threads)
    pool = HttpPool(
        web.url,
        headers={"Authorization": basic_auth(setup.write_key), "Content-Type": "application/json"},
        timeout=60,
    )
    tag = uuid.uuid4().hex[:8]

    def request(thread: int, n: int) -> tuple[str, str, bytes]:
        return (
            "POST",
            "/v1/batch",
            json.dumps(batch_body(f"{tag}-{thread}-{uuid.uuid4().hex[:4]}", n)).encode(),
        )

    closed_loop(pool, concurrency=args.concurrency, seconds=2, request=request, warmup=0)
    pipeline: list[dict] = []
    limit: list[dict] = []
    profile = None
    for repeat in range(repeats):
        spies = []
        if args.profile and repeat == repeats - 1:
            spies = py_spy_record(web.pids(), seconds=seconds, out=stack.logs / "b2-profile")
        run = closed_loop(pool, concurrency=args.concurrency, seconds=seconds, request=request)
        summary = run.summary(per_request=BATCH)
        if spies:
            profile_wait(spies)
            profile = profile_summary(sorted(stack.logs.glob("b2-profile-*.txt")))
        pipeline.append(summary)
        copied = copy_limit(
            stack.database_url, concurrency=args.concurrency, seconds=seconds,
            source_id=setup.source_id, sync_id=setup.sync_id,
        )  # fmt: skip
        limit.append(copied)
        print(f"  repeat {repeat + 1}: pipeline {summary} | COPY {copied}", flush=True)

    # Check that the answers were true: every acknowledged event is in the database.
    from streaming.models import Delivery, Event

    stored = Event.objects.count()
    deliveries = Delivery.objects.count()
    events_per_s = median(r["events_per_s"] for r in pipeline)
    copy_per_s = median(r["events_per_s"] for r in limit)
    figures = {
        "events_per_s": events_per_s,
        "p50_ms_per_batch": median(r["p50_ms"] for r in pipeline),
        "p99_ms_per_batch": median(r["p99_ms"] for r in pipeline),
        "copy_events_per_s": copy_per_s,
        "ratio_to_copy": round(events_per_s / copy_per_s, 3) if copy_per_s else None,
        "errors": sum(sum(r["errors"].values()) for r in pipeline),
        "events_stored": stored,
        "deliveries_stored": deliveries,
        "target": ">= 3000 events/s",
        "met": events_per_s >= 3000,
        "pipeline_repeats": pipeline,
        "copy_repeats": limit,
    }
    table_print(
        f"B2 batch ingest ({BATCH} events a batch, concurrency {args.concurrency}, gunicorn -w {args.web_workers} --threads {args.web_threads}; median of {repeats})",
        ["what", "events/s", "p50 ms/batch", "p99 ms/batch", "ratio"],
        [
            [
                "POST /v1/batch (durable)",
                events_per_s,
                figures["p50_ms_per_batch"],
                figures["p99_ms_per_batch"],
                figures["ratio_to_copy"],
            ],
            ["COPY events+deliveries", copy_per_s, "", "", 1.0],
        ],
    )
    if profile:
        profile_print("B2 web workers", profile)
    result_write(
        NAME,
        quick=args.quick,
        config={
            "batch": BATCH,
            "users": "a new user per event",
            "seconds": seconds,
            "repeats": repeats,
            "concurrency": args.concurrency,
            "gunicorn": {"workers": args.web_workers, "threads": args.web_threads},
            "syncs": 1,
            "workers_running": 0,
        },
        figures=figures,
        profile=profile,
    )


if __name__ == "__main__":
    main()
