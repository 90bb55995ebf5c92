"""B1: single-call ingest. POST /v1/track with a write key, through gunicorn, closed loop at
several concurrencies: calls/s and p50/p99 of the answer time. Target: >= 400 calls/s with
p99 <= 50 ms.

    .venv/bin/python bench/b1_ingest_single.py [--quick] [--repeats N] [--profile]
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
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

NAME = "b1_ingest_single"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--web-threads", type=int, default=4)
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the web workers at the top level"
    )
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    seconds = args.seconds or (4.0 if args.quick else 15.0)
    levels = [int(x) for x in args.concurrency.split(",")]

    stack = Stack(NAME)
    stack.database_reset()
    stack.redis_flush()
    stack.django()
    # No worker runs: only the ingest path is measured (wake-ups wait in the broker).
    setup = switchboard_setup(sandbox_url="http://127.0.0.1:9")
    web = stack.gunicorn_start(workers=args.web_workers, threads=args.web_threads)
    pool = HttpPool(
        web.url,
        headers={"Authorization": basic_auth(setup.write_key), "Content-Type": "application/json"},
    )
    run_tag = uuid.uuid4().hex[:8]

    def request(thread: int, n: int) -> tuple[str, str, bytes]:
        body = {
            # A new user per call: every call creates its lane, the dearest case.
            "userId": f"user-{run_tag}-{thread}-{n}",
            "event": "Bench Event",
            "messageId": f"{run_tag}-{thread}-{n}-{uuid.uuid4().hex[:6]}",
            "properties": {"plan": "pro", "n": n},
        }
        return "POST", "/v1/track", json.dumps(body).encode()

    closed_loop(pool, concurrency=8, seconds=2, request=request, warmup=0)  # warm every worker
    runs: dict[int, list[dict]] = {c: [] for c in levels}
    profile = None
    for repeat in range(repeats):
        for concurrency in levels:
            spies = []
            if args.profile and repeat == repeats - 1 and concurrency == max(levels):
                spies = py_spy_record(web.pids(), seconds=seconds, out=stack.logs / "b1-profile")
            summary = closed_loop(
                pool, concurrency=concurrency, seconds=seconds, request=request
            ).summary()
            if spies:
                profile_wait(spies)
                profile = profile_summary(sorted(stack.logs.glob("b1-profile-*.txt")))
            runs[concurrency].append(summary)
            print(f"  repeat {repeat + 1} c={concurrency}: {summary}", flush=True)

    figures = {
        str(c): {
            "calls_per_s": median(r["calls_per_s"] for r in rs),
            "p50_ms": median(r["p50_ms"] for r in rs),
            "p99_ms": median(r["p99_ms"] for r in rs),
            "errors": sum(sum(r["errors"].values()) for r in rs),
            "repeats": rs,
        }
        for c, rs in runs.items()
    }
    best = max(levels, key=lambda c: figures[str(c)]["calls_per_s"])
    figures["target"] = {
        "calls_per_s": ">= 400",
        "p99_ms": "<= 50",
        "met_at_concurrency": [
            c
            for c in levels
            if figures[str(c)]["calls_per_s"] >= 400 and figures[str(c)]["p99_ms"] <= 50
        ],
        "best_concurrency": best,
    }
    table_print(
        f"B1 single-call ingest (POST /v1/track, gunicorn -w {args.web_workers} --threads {args.web_threads}; median of {repeats})",
        ["concurrency", "calls/s", "p50 ms", "p99 ms", "errors"],
        [
            [
                c,
                figures[str(c)]["calls_per_s"],
                figures[str(c)]["p50_ms"],
                figures[str(c)]["p99_ms"],
                figures[str(c)]["errors"],
            ]
            for c in levels
        ],
    )
    if profile:
        profile_print("B1 web workers", profile)
    result_write(
        NAME,
        quick=args.quick,
        config={
            "seconds": seconds,
            "repeats": repeats,
            "concurrency": levels,
            "gunicorn": {"workers": args.web_workers, "threads": args.web_threads},
            "database": "PostgreSQL (same machine)",
            "broker": "Redis",
            "workers_running": 0,
        },
        figures=figures,
        profile=profile,
    )


if __name__ == "__main__":
    main()
