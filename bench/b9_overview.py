"""B9, the overview's share: the admin's landing page (charts by minute, hour and day, figures,
backlog, headroom) beside the timeline and sync health, at 1 M deliveries (``b9_fill``: 1 M
events over 30 days by 200,000 users, one delivery and 2 attempts each), timed warm (median of
``--repeats``) with this checkout's code. Target: every page <= 300 ms.

    .venv/bin/python bench/b9_overview.py [--events 1000000] [--repeats 7]

The pages run in a child process through Django's test client, as in ``b9_audit_scale`` (whose
page list and timing this reuses); the first view of each page, which writes the hourly summary
rows the later views read, is reported apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.b9_audit_scale import TRAIL, pages_measure, sql  # noqa: E402
from bench.harness import ROOT, Stack, result_write, switchboard_setup, table_print  # noqa: E402

NAME = "b9_overview"
TARGET_MS = 300
PAGES = ["overview", "overview_hour", "overview_month", "timeline_user", "timeline_email", "health"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    from bench.b9_fill import trail_fill

    stack = Stack(NAME)
    stack.django()
    stack.database_reset()
    stack.redis_flush()
    setup = switchboard_setup(sandbox_url="http://127.0.0.1:9")
    trail = trail_fill(
        stack.database_url, events=args.events, source_id=setup.source_id, sync_id=setup.sync_id
    )
    for table in TRAIL:
        sql(stack, f"ANALYZE {table}")
    deliveries = sql(stack, "SELECT count(*) FROM streaming_delivery")[0][0]
    print(f"filled {deliveries:,} deliveries in {trail.seconds}", flush=True)
    timings = pages_measure(stack, ROOT, repeats=args.repeats, only=PAGES)
    pages = timings["pages"]
    slowest = max(pages, key=lambda key: pages[key]["median_ms"])
    met = all(page["status"] == 200 for page in pages.values()) and (
        pages[slowest]["median_ms"] <= TARGET_MS
    )
    table_print(
        f"B9 overview at {deliveries:,} deliveries (ms, warm)",
        ["page", "median", "first view", "status"],
        [[key, p["median_ms"], p["first_ms"], p["status"]] for key, p in pages.items()],
    )
    summary = {"deliveries": deliveries, "slowest": [slowest, pages[slowest]["median_ms"]]}
    print(json.dumps({**summary, "met": met}), flush=True)
    result_write(
        NAME,
        quick=args.events != 1_000_000,
        config={
            "events": args.events,
            "repeats": args.repeats,
            "fill": "bench/b9_fill.py: 200,000 users over 30 days, 2 attempts per delivery",
            "target_ms": TARGET_MS,
        },
        figures={"summary": summary, "pages": pages, "fill": trail.seconds, "met": met},
    )


if __name__ == "__main__":
    main()
