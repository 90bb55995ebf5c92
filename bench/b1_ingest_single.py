"""B1: single-call ingest. POST /v1/track with a write key, through gunicorn, closed loop at
several concurrencies: calls/s and p50/p99 of the answer time. Target: >= 400 calls/s with
p99 <= 50 ms at 8 clients, or >= 0.6 of the reference.

The reference, measured in the same run by the same gunicorn: a minimal Django view that writes
the same body with one INSERT into a copy of the events table (``bench/b1_reference_urls.py``).
At each level and repeat the two are loaded one after the other; the ratio is the ingest API's
calls/s over the reference's.

    .venv/bin/python bench/b1_ingest_single.py [--quick] [--repeats N] [--profile]
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
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
    profile_print,
    profile_summary,
    profile_wait,
    py_spy_record,
    result_write,
    switchboard_setup,
    table_print,
)

NAME = "b1_ingest_single"
REFERENCE_PATH = "/bench/insert-one"
# The machine is shared: the two sides alternate in slices of this many seconds, so that a burst
# of other work weighs on both alike.
SLICE_SECONDS = 2.0


def side_by_side(
    pool: HttpPool, *, concurrency: int, seconds: float, requests: list[Callable]
) -> list[LoadResult]:
    """Each of ``requests`` loaded for ``seconds`` in all, in alternating slices."""
    slices = max(1, round(seconds / SLICE_SECONDS))
    samples: list[list] = [[] for _ in requests]
    for _ in range(slices):
        for index, request in enumerate(requests):
            run = closed_loop(
                pool,
                concurrency=concurrency,
                seconds=seconds / slices,
                request=request,
                warmup=0.2,
            )
            samples[index].extend(run.samples)
    return [LoadResult(found, seconds) for found in samples]


def reference_table_create(database_url: str) -> None:
    """The reference view's table: the events table's columns and indexes, no foreign key."""
    import psycopg

    from bench.b1_reference_urls import REFERENCE_TABLE

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {REFERENCE_TABLE}")
        conn.execute(f"CREATE TABLE {REFERENCE_TABLE} (LIKE streaming_event INCLUDING ALL)")


def reference_rows(database_url: str) -> int:
    import psycopg

    from bench.b1_reference_urls import REFERENCE_TABLE

    with psycopg.connect(database_url) as conn:
        return conn.execute(f"SELECT count(*) FROM {REFERENCE_TABLE}").fetchone()[0]


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
    reference_table_create(stack.database_url)
    # One server for both: the product's settings, whose URLconf also serves the reference.
    web = stack.gunicorn_start(
        workers=args.web_workers,
        threads=args.web_threads,
        DJANGO_SETTINGS_MODULE="bench.b1_reference_settings",
    )
    pool = HttpPool(
        web.url,
        headers={"Authorization": basic_auth(setup.write_key), "Content-Type": "application/json"},
    )
    run_tag = uuid.uuid4().hex[:8]

    def requester(path: str) -> Callable[[int, int], tuple[str, str, bytes]]:
        def request(thread: int, n: int) -> tuple[str, str, bytes]:
            body = {
                # A new user per call: every call creates its lane, the dearest case.
                "userId": f"user-{run_tag}-{thread}-{n}",
                "event": "Bench Event",
                "messageId": f"{run_tag}-{path[1]}-{thread}-{n}-{uuid.uuid4().hex[:6]}",
                "properties": {"plan": "pro", "n": n},
            }
            return "POST", path, json.dumps(body).encode()

        return request

    ingest, reference = requester("/v1/track"), requester(REFERENCE_PATH)
    for warm in (ingest, reference):  # warm every worker on both paths
        closed_loop(pool, concurrency=8, seconds=2, request=warm, warmup=0)
    runs: dict[int, list[dict]] = {c: [] for c in levels}
    references: dict[int, list[dict]] = {c: [] for c in levels}
    profile = None
    for repeat in range(repeats):
        for concurrency in levels:
            spies = []
            if args.profile and repeat == repeats - 1 and concurrency == max(levels):
                spies = py_spy_record(web.pids(), seconds=seconds, out=stack.logs / "b1-profile")
            ours, theirs = side_by_side(
                pool, concurrency=concurrency, seconds=seconds, requests=[ingest, reference]
            )
            summary, versus = ours.summary(), theirs.summary()
            if spies:
                profile_wait(spies)
                profile = profile_summary(sorted(stack.logs.glob("b1-profile-*.txt")))
            summary["ratio_to_reference"] = (
                round(summary["calls_per_s"] / versus["calls_per_s"], 3)
                if versus["calls_per_s"]
                else None
            )
            runs[concurrency].append(summary)
            references[concurrency].append(versus)
            print(f"  repeat {repeat + 1} c={concurrency}: {summary}", flush=True)
            print(f"  repeat {repeat + 1} c={concurrency} reference: {versus}", flush=True)

    figures: dict[str, Any] = {
        str(c): {
            "calls_per_s": median(r["calls_per_s"] for r in rs),
            "p50_ms": median(r["p50_ms"] for r in rs),
            "p99_ms": median(r["p99_ms"] for r in rs),
            "errors": sum(sum(r["errors"].values()) for r in rs),
            "reference_calls_per_s": median(r["calls_per_s"] for r in references[c]),
            "reference_p99_ms": median(r["p99_ms"] for r in references[c]),
            # Each repeat's ratio was measured side by side; their median, not a ratio of
            # medians taken minutes apart.
            "ratio_to_reference": median(r["ratio_to_reference"] or 0 for r in rs),
            "repeats": rs,
            "reference_repeats": references[c],
        }
        for c, rs in runs.items()
    }
    best = max(levels, key=lambda c: figures[str(c)]["calls_per_s"])
    figures["target"] = {
        "calls_per_s": ">= 400",
        "p99_ms": "<= 50",
        "ratio_to_reference": ">= 0.6 at 8 clients",
        "met_at_concurrency": [
            c
            for c in levels
            if figures[str(c)]["calls_per_s"] >= 400 and figures[str(c)]["p99_ms"] <= 50
        ],
        "ratio_met_at_concurrency": [
            c for c in levels if figures[str(c)]["ratio_to_reference"] >= 0.6
        ],
        "best_concurrency": best,
    }
    figures["reference_rows_stored"] = reference_rows(stack.database_url)
    table_print(
        f"B1 single-call ingest (POST /v1/track, gunicorn -w {args.web_workers} --threads {args.web_threads}; median of {repeats})",
        ["concurrency", "calls/s", "p50 ms", "p99 ms", "errors", "reference/s", "ratio"],
        [
            [
                c,
                figures[str(c)]["calls_per_s"],
                figures[str(c)]["p50_ms"],
                figures[str(c)]["p99_ms"],
                figures[str(c)]["errors"],
                figures[str(c)]["reference_calls_per_s"],
                figures[str(c)]["ratio_to_reference"],
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
            "reference": (
                f"POST {REFERENCE_PATH}: one INSERT through Django's cursor into a copy of the"
                " events table with its indexes, same server, same middleware"
            ),
            "database": "PostgreSQL (same machine)",
            "broker": "Redis",
            "workers_running": 0,
        },
        figures=figures,
        profile=profile,
    )


if __name__ == "__main__":
    main()
