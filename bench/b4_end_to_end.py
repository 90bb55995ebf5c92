"""B4: end to end at a steady 100 events/s: from ingest (``Event.received_at``) to delivered
(``Delivery.completed_at``), with the sandbox at 80 ms latency.

Calls go over HTTP (gunicorn) at a fixed rate whatever the answers' speed (open loop): one in ten
is a new user's identify (a cold contact: two Intercom calls), the rest are tracks of users
identified before. Real Celery workers (one runs beat, the sweeper) deliver. Target: p95 <= 2 s.

    .venv/bin/python bench/b4_end_to_end.py [--quick] [--rate 100] [--seconds 120]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from bench.harness import (  # noqa: E402
    HttpPool,
    Stack,
    basic_auth,
    call_identify,
    call_track,
    open_loop,
    percentile,
    result_write,
    switchboard_setup,
    table_print,
    wait_for,
)

NAME = "b4_end_to_end"
LATENCY_MS = 80


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool", default="threads")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    seconds = args.seconds or (20.0 if args.quick else 120.0)

    stack = Stack(NAME)
    stack.database_reset()
    stack.redis_flush()
    stack.django()
    sandbox = stack.sandbox_start(latency_ms=LATENCY_MS)
    setup = switchboard_setup(sandbox_url=sandbox.url, send_all_properties=True)
    web = stack.gunicorn_start(workers=2, threads=4)
    workers = stack.workers_start(
        args.workers, pool=args.pool, concurrency=args.concurrency, beat=True
    )
    pool = HttpPool(
        web.url,
        headers={"Authorization": basic_auth(setup.write_key), "Content-Type": "application/json"},
    )
    tag = uuid.uuid4().hex[:6]
    base = int(time.time())

    def request(n: int) -> tuple[str, str, bytes]:
        if n % 10 == 0:
            call = call_identify(f"{tag}-u{n // 10}", f"{tag}-{n}")
            return "POST", "/v1/identify", json.dumps(call).encode()
        user = f"{tag}-u{max(n // 10 - 3, 0)}"  # identified a few seconds of traffic earlier
        call = call_track(user, f"{tag}-{n}", n, created_at=base + n)
        return "POST", "/v1/track", json.dumps(call).encode()

    load = open_loop(pool, rate=args.rate, seconds=seconds, request=request, threads=16)
    ingest = load.summary()

    from django.db.models import Count, Q

    from streaming.models import Delivery

    def settled() -> bool:
        return not Delivery.objects.filter(status="pending").exists()

    with contextlib.suppress(TimeoutError):
        wait_for(settled, timeout=120, what="the backlog to drain", every=0.5)
    rows = list(
        Delivery.objects.filter(completed_at__isnull=False, status="succeeded").values_list(
            "event__received_at", "completed_at"
        )
    )
    latencies = [(done - received).total_seconds() for received, done in rows]
    counts = Delivery.objects.aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=Q(status="succeeded")),
        pending=Count("id", filter=Q(status="pending")),
    )
    figures = {
        "offered_per_s": args.rate,
        "ingest": ingest,
        "deliveries": counts,
        "p50_s": round(percentile(latencies, 0.50), 3),
        "p95_s": round(percentile(latencies, 0.95), 3),
        "p99_s": round(percentile(latencies, 0.99), 3),
        "max_s": round(max(latencies), 3) if latencies else None,
        "target": "p95 <= 2 s",
        "met": bool(latencies) and percentile(latencies, 0.95) <= 2.0 and counts["pending"] == 0,
    }
    table_print(
        f"B4 end to end at {args.rate:g} events/s for {seconds:g} s (sandbox {LATENCY_MS} ms; {args.workers} x {args.pool} {args.concurrency})",
        ["accepted", "delivered", "pending", "p50 s", "p95 s", "p99 s", "ingest p99 ms"],
        [
            [
                ingest["ok"],
                counts["succeeded"],
                counts["pending"],
                figures["p50_s"],
                figures["p95_s"],
                figures["p99_s"],
                ingest["p99_ms"],
            ]
        ],
    )
    del workers
    result_write(
        NAME,
        quick=args.quick,
        config={
            "rate": args.rate,
            "seconds": seconds,
            "latency_ms": LATENCY_MS,
            "identify_share": 0.1,
            "workers": args.workers,
            "pool": args.pool,
            "concurrency_per_worker": args.concurrency,
            "gunicorn": {"workers": 2, "threads": 4},
        },
        figures=figures,
    )


if __name__ == "__main__":
    main()
