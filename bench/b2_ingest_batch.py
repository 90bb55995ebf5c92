"""B2: batch ingest. POST /v1/batch with 100 track calls a request, through gunicorn, closed
loop: durable events/s (each 200 means the events, their lanes and deliveries are committed).

In the same run, the reference: what a bulk loader writes on this machine. As many client
processes as the pipeline has clients, each committing one COPY of a batch's 100 events at a
time (the same rows: the events' columns and a JSON payload of each call) into a table with the
events table's columns and every index. Each repeat measures the pipeline, then the reference;
the ratio is the pipeline's events/s over the reference's in that repeat. Targets: >= 15,000
events/s durable and >= 0.5 of the reference (anchor: RudderStack's gateway, 1.7K/s on 2 cores
with the database on another machine; here the database and the load share the 2 cores).

    .venv/bin/python bench/b2_ingest_batch.py [--quick] [--repeats N] [--profile]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    HttpPool,
    LoadResult,
    Stack,
    basic_auth,
    closed_loop,
    median,
    percentile,
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
# The machine is shared: the pipeline and the reference alternate in slices of this many
# seconds, so that a burst of other work weighs on both alike.
SLICE_SECONDS = 2.5


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


COPY_TABLE = "bench_copy_event"


def copy_table_create(database_url: str) -> None:
    """The reference's table: the events table's columns and every index (its unique messageId
    index, the user, time and email indexes), without foreign keys."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
        conn.execute(f"CREATE TABLE {COPY_TABLE} (LIKE streaming_event INCLUDING ALL)")


def _copy_client(
    database_url: str, source_id: int, tag: str, start_at: float, stop_at: float
) -> tuple[int, list[float]]:
    """One bulk-loading client (its own process): a batch's rows, one COPY, one commit; again."""
    conn = _copy_connection(database_url)
    events, latencies, n = 0, [], 0
    while time.time() < start_at:
        time.sleep(0.005)
    while time.time() < stop_at:
        began = time.perf_counter()
        now = datetime.now(UTC)
        with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(
                f"COPY {COPY_TABLE} (source_id, message_id, type, user_id, anonymous_id,"
                " event_name, payload, timestamp, received_at) FROM STDIN"
            ) as copy,
        ):
            for call in batch_body(f"{tag}-{n}", n)["batch"]:
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
        latencies.append(time.perf_counter() - began)
        events += BATCH
        n += 1
    return events, latencies


_connections: dict[str, Any] = {}


def _copy_connection(database_url: str) -> Any:
    """The client process's one connection, kept between slices as a loader keeps its own."""
    import psycopg

    if database_url not in _connections:
        _connections[database_url] = psycopg.connect(database_url)
    return _connections[database_url]


def _copy_ready(database_url: str) -> None:
    _copy_connection(database_url)  # connected before the clock starts


class CopyReference:
    """What a bulk loader writes: ``clients`` processes, each committing one COPY of a batch's
    100 events at a time into a table with the events table's indexes (``copy_table_create``).

    Processes, not threads: the rows are built in Python, and threads sharing one interpreter
    lock would measure that lock rather than PostgreSQL. They are started once and reused.
    """

    def __init__(self, database_url: str, *, clients: int, source_id: int) -> None:
        self.database_url, self.clients, self.source_id = database_url, clients, source_id
        self.pool = multiprocessing.get_context("spawn").Pool(clients)
        self.pool.starmap(_copy_ready, [(database_url,)] * clients)
        self.runs = 0

    def run(self, seconds: float) -> tuple[int, list[float]]:
        """(events committed, latency of each COPY) of every client loading for ``seconds``."""
        self.runs += 1
        tag = f"{uuid.uuid4().hex[:8]}-{self.runs}"
        start_at = time.time() + 0.3  # every client connected before the clock starts
        results = self.pool.starmap(
            _copy_client,
            [
                (self.database_url, self.source_id, f"{tag}-{i}", start_at, start_at + seconds)
                for i in range(self.clients)
            ],
        )
        return sum(r[0] for r in results), [s for r in results for s in r[1]]

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


def copy_summary(events: int, latencies: list[float], seconds: float) -> dict:
    milliseconds = [s * 1000 for s in latencies]
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": round(events / seconds, 1),
        "p50_ms": round(percentile(milliseconds, 0.5), 1),
        "p99_ms": round(percentile(milliseconds, 0.99), 1),
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
    copy_table_create(stack.database_url)
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
    reference = CopyReference(
        stack.database_url, clients=args.concurrency, source_id=setup.source_id
    )
    reference.run(1.0)  # warm, as the pipeline was
    pipeline: list[dict] = []
    limit: list[dict] = []
    profile = None
    for repeat in range(repeats):
        spies = []
        if args.profile and repeat == repeats - 1:
            spies = py_spy_record(web.pids(), seconds=seconds, out=stack.logs / "b2-profile")
        slices = max(1, round(seconds / SLICE_SECONDS))
        samples: list = []
        copied_events, copy_latencies = 0, []
        for _ in range(slices):
            run = closed_loop(
                pool,
                concurrency=args.concurrency,
                seconds=seconds / slices,
                request=request,
                warmup=0.3,
            )
            samples.extend(run.samples)
            events, latencies = reference.run(seconds / slices)
            copied_events += events
            copy_latencies += latencies
        summary = LoadResult(samples, seconds).summary(per_request=BATCH)
        copied = copy_summary(copied_events, copy_latencies, seconds)
        if spies:
            profile_wait(spies)
            profile = profile_summary(sorted(stack.logs.glob("b2-profile-*.txt")))
        summary["ratio_to_copy"] = (
            round(summary["events_per_s"] / copied["events_per_s"], 3)
            if copied["events_per_s"]
            else None
        )
        pipeline.append(summary)
        limit.append(copied)
        print(f"  repeat {repeat + 1}: pipeline {summary} | COPY {copied}", flush=True)

    reference.close()
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
        # Each repeat's ratio was measured side by side; their median.
        "ratio_to_copy": median(r["ratio_to_copy"] or 0 for r in pipeline),
        "errors": sum(sum(r["errors"].values()) for r in pipeline),
        "events_stored": stored,
        "deliveries_stored": deliveries,
        "target": ">= 15000 events/s and >= 0.5 of COPY",
        "met": events_per_s >= 15000 and median(r["ratio_to_copy"] or 0 for r in pipeline) >= 0.5,
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
            [
                "COPY per batch (reference)",
                copy_per_s,
                median(r["p50_ms"] for r in limit),
                median(r["p99_ms"] for r in limit),
                1.0,
            ],
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
            "reference": (
                f"{args.concurrency} processes, one COPY of {BATCH} events a transaction into"
                " a copy of the events table with its indexes"
            ),
            "workers_running": 0,
        },
        figures=figures,
        profile=profile,
    )


if __name__ == "__main__":
    main()
