"""B5: rate-limit conformance under 2x overload.

The sandbox allows 167 calls per 10-second window (Intercom's per-app 10,000/min spread over
windows, scaled down so that a laptop can overload it) and announces it in X-RateLimit-*.
Calls are offered at twice that (33.4 events/s) over HTTP for the run; every event is one
Intercom call (the users exist in the workspace). Then, in the same run, the naive baseline
(bench/baseline_naive.py) gets the same offered load. For each: calls in each window (max),
windows over the limit, 429s, the share of the budget used while a backlog existed, and, once
drained, lost, duplicates and order violations. Targets: 0 windows over, >= 90 % of the budget.

    .venv/bin/python bench/b5_rate_limit.py [--quick] [--seconds 120]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    SANDBOX_TOKEN,
    HttpPool,
    Sandbox,
    Sent,
    Stack,
    basic_auth,
    call_track,
    open_loop,
    result_write,
    sandbox_verdict,
    stop,
    switchboard_setup,
    table_print,
    window_counts,
)

NAME = "b5_rate_limit"
LIMIT = 167
WINDOW = 10


def wait_window_start() -> None:
    """Start on a fresh sandbox window, so the offered period covers whole windows."""
    time.sleep(WINDOW - (time.time() % WINDOW) + 0.05)


def conformance(requests: list[dict], *, load_start: float, load_end: float) -> dict:
    api = [e for e in requests if not e["path"].startswith("/_sandbox")]
    windows = window_counts(api, window=WINDOW)
    first, last = int(load_start // WINDOW) + 1, int(load_end // WINDOW) - 1  # whole windows only
    loaded = {w: c for w, c in windows.items() if first <= w <= last}
    over = [w for w, c in windows.items() if sum(c.values()) > LIMIT]
    ok_in_loaded = sum(sum(n for s, n in c.items() if 200 <= s < 300) for c in loaded.values())
    return {
        "windows_measured": len(loaded),
        "max_calls_in_a_window": max((sum(c.values()) for c in windows.values()), default=0),
        "max_2xx_in_a_window": max(
            (sum(n for s, n in c.items() if 200 <= s < 300) for c in windows.values()), default=0
        ),
        "windows_over_limit": len(over),
        "responses_429": sum(c.get(429, 0) for c in windows.values()),
        "budget_used": round(ok_in_loaded / (LIMIT * len(loaded)), 3) if loaded else None,
        "per_window": {str(w * WINDOW): dict(c) for w, c in sorted(windows.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-naive", action="store_true")
    args = parser.parse_args()
    seconds = args.seconds or (30.0 if args.quick else 120.0)
    rate = 2 * LIMIT / WINDOW
    drain_timeout = seconds * 1.5 + 60

    stack = Stack(NAME)
    stack.database_reset()
    stack.redis_flush()
    stack.django()
    sandbox = stack.sandbox_start()
    users = [f"user-{i}" for i in range(200)]
    sandbox.contacts_create(users)
    sandbox.configure(rate_limit=LIMIT, latency_ms=80)
    setup = switchboard_setup(sandbox_url=sandbox.url, send_all_properties=True)
    web = stack.gunicorn_start(workers=2, threads=4)
    workers = stack.workers_start(args.workers, concurrency=args.concurrency, beat=True)
    pool = HttpPool(
        web.url,
        headers={"Authorization": basic_auth(setup.write_key), "Content-Type": "application/json"},
    )
    results = {}

    # --- Switchboard ---------------------------------------------------------------------
    tag = uuid.uuid4().hex[:6]
    base = int(time.time()) - 3600
    accepted: dict[str, Sent] = {}
    lock = threading.Lock()

    def track_for(n: int) -> dict:
        user = users[n % len(users)]
        return call_track(user, f"{tag}-{n}", n, created_at=base + n)

    def request(n: int) -> tuple[str, str, bytes]:
        return "POST", "/v1/track", json.dumps(track_for(n)).encode()

    def on_answer(n: int, status: int, body: bytes) -> None:
        if status == 200:
            with lock:
                accepted[f"{tag}-{n}"] = Sent(users[n % len(users)], "track", n)

    seq_before = max([e["seq"] for e in sandbox.requests(0)] or [0])
    wait_window_start()
    load_start = time.time()
    open_loop(pool, rate=rate, seconds=seconds, request=request, on_answer=on_answer, threads=8)
    load_end = time.time()
    results["switchboard"] = _drain_and_judge(
        stack, sandbox, accepted, seq_before, load_start, load_end, drain_timeout, switchboard=True
    )
    for worker in workers:
        stop(worker)

    # --- the naive baseline, same offered load --------------------------------------------
    if not args.no_naive:
        from bench.baseline_naive import QUEUE, naive_enqueue

        naive_workers = stack.workers_start(
            args.workers, concurrency=args.concurrency, app="bench.baseline_naive", queue=QUEUE
        )
        tag = uuid.uuid4().hex[:6]
        naive_accepted: dict[str, Sent] = {}
        seq_before = max([e["seq"] for e in sandbox.requests(0)] or [0])
        wait_window_start()
        load_start = time.time()
        total = int(rate * seconds)
        for n in range(total):
            due = load_start + n / rate
            time.sleep(max(due - time.time(), 0))
            call = call_track(users[n % len(users)], f"{tag}-{n}", n, created_at=base + n)
            naive_enqueue(base_url=sandbox.url, token=SANDBOX_TOKEN, calls=[call])
            naive_accepted[f"{tag}-{n}"] = Sent(users[n % len(users)], "track", n)
        load_end = time.time()
        results["naive"] = _drain_and_judge(
            stack,
            sandbox,
            naive_accepted,
            seq_before,
            load_start,
            load_end,
            drain_timeout,
            switchboard=False,
        )
        for worker in naive_workers:
            stop(worker)

    rows = []
    for who, r in results.items():
        rows.append(
            [
                who,
                r["max_calls_in_a_window"],
                r["windows_over_limit"],
                r["responses_429"],
                r["budget_used"],
                r["accepted"],
                r["delivered"],
                r["lost"],
                r["duplicates"],
                r["order_violations"],
            ]
        )
    table_print(
        f"B5 rate-limit conformance: limit {LIMIT}/{WINDOW} s, offered {rate:.1f} events/s for {seconds:g} s",
        [
            "who",
            "max calls/window",
            "windows over",
            "429s",
            "budget used",
            "accepted",
            "delivered",
            "lost",
            "dups",
            "order",
        ],
        rows,
    )
    sb = results["switchboard"]
    figures = {
        **results,
        "target": "0 windows over the limit, >= 90 % of the budget used",
        "met": sb["windows_over_limit"] == 0 and (sb["budget_used"] or 0) >= 0.9,
    }
    result_write(
        NAME,
        quick=args.quick,
        config={
            "limit": LIMIT,
            "window_s": WINDOW,
            "offered_per_s": rate,
            "seconds": seconds,
            "latency_ms": 80,
            "workers": args.workers,
            "pool": "threads",
            "concurrency_per_worker": args.concurrency,
        },
        figures=figures,
    )


def _drain_and_judge(
    stack: Stack,
    sandbox: Sandbox,
    accepted: dict,
    seq_before: int,
    load_start: float,
    load_end: float,
    timeout: float,
    *,
    switchboard: bool,
) -> dict:
    """Wait until every accepted call reached the sandbox or nothing moves any more; judge."""
    deadline = time.time() + timeout
    last_count, still_since = -1, time.time()
    while time.time() < deadline:
        requests = sandbox.requests(seq_before)
        verdict = sandbox_verdict(accepted, requests)
        if verdict["delivered"] == len(accepted):
            break
        count = len(requests)
        if count != last_count:
            last_count, still_since = count, time.time()
        elif time.time() - still_since > 60:
            break  # nothing reached the sandbox for a minute: what is missing is lost
        time.sleep(2)
    requests = sandbox.requests(seq_before)
    verdict = sandbox_verdict(accepted, requests)
    figures = conformance(requests, load_start=load_start, load_end=load_end)
    if switchboard:
        from streaming.models import Delivery

        figures["deliveries_by_status"] = dict(
            Delivery.objects.values_list("status").annotate(
                n=__import__("django.db.models", fromlist=["Count"]).Count("id")
            )
        )
    return {**verdict, "lost": verdict["not_delivered"], **figures}


if __name__ == "__main__":
    main()
