"""Run every benchmark and the drills, one after the other (they share Redis databases 7 and 8,
so never two at once), then print the summary table of docs/benchmarks.md from their results.

    .venv/bin/python bench/run_all.py [--quick] [--only b1,b2,...] [--skip drills] [--profile]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import PYTHON, RESULTS, ROOT, result_write  # noqa: E402

SCRIPTS = [
    ("b1", "b1_ingest_single"),
    ("b2", "b2_ingest_batch"),
    ("b3", "b3_delivery"),
    ("b4", "b4_end_to_end"),
    ("b5", "b5_rate_limit"),
    ("b6", "b6_identify_cost"),
    ("drills", "drills"),
]
PROFILED = {"b2", "b3"}


def _load(name: str, quick: bool) -> dict[str, Any] | None:
    path = RESULTS / f"{name}{'.quick' if quick else ''}.json"
    return json.loads(path.read_text()) if path.exists() else None


def summary_rows(quick: bool) -> list[list[str]]:
    """figure | measured | target | met | command, from the result files."""
    rows: list[list[str]] = []
    flag = " --quick" if quick else ""
    b1 = _load("b1_ingest_single", quick)
    if b1:
        f = b1["figures"]
        levels = b1["configuration"]["concurrency"]
        best = f["target"]["best_concurrency"]
        rows.append(
            [
                "B1 single-call ingest",
                ", ".join(
                    f"c={c}: {f[str(c)]['calls_per_s']:.0f}/s p99 {f[str(c)]['p99_ms']:.0f} ms"
                    for c in levels
                ),
                ">= 400 calls/s, p99 <= 50 ms",
                "yes" if f["target"]["met_at_concurrency"] else f"no (best c={best})",
                f"bench/b1_ingest_single.py{flag}",
            ]
        )
    b2 = _load("b2_ingest_batch", quick)
    if b2:
        f = b2["figures"]
        rows.append(
            [
                "B2 batch ingest (durable)",
                f"{f['events_per_s']:.0f} events/s; COPY {f['copy_events_per_s']:.0f}/s; ratio {f['ratio_to_copy']}",
                ">= 3,000 events/s (RudderStack 1.7K/s)",
                "yes" if f["met"] else "no",
                f"bench/b2_ingest_batch.py{flag}",
            ]
        )
    b3 = _load("b3_delivery", quick)
    if b3:
        f = b3["figures"]
        rows.append(
            [
                "B3 delivery, 80 ms, no limit",
                f"{f['calls_per_s']:.0f} calls/s; bare loop {f['bare_loop_calls_per_s']:.0f}/s; ratio {f['ratio_to_bare']}; naive {f['naive_calls_per_s']}",
                ">= 400 calls/s, >= 0.5 of bare",
                "yes" if f["met"] else "no",
                f"bench/b3_delivery.py{flag}",
            ]
        )
    b4 = _load("b4_end_to_end", quick)
    if b4:
        f = b4["figures"]
        rows.append(
            [
                "B4 end to end at 100/s",
                f"p50 {f['p50_s']} s, p95 {f['p95_s']} s, p99 {f['p99_s']} s",
                "p95 <= 2 s",
                "yes" if f["met"] else "no",
                f"bench/b4_end_to_end.py{flag}",
            ]
        )
    b5 = _load("b5_rate_limit", quick)
    if b5:
        f = b5["figures"]["switchboard"]
        n = b5["figures"].get("naive")
        naive = (
            f"; naive: {n['windows_over_limit']} windows over, {n['responses_429']} 429s, lost {n['lost']}"
            if n
            else ""
        )
        rows.append(
            [
                "B5 rate limit, 2x overload",
                f"max {f['max_calls_in_a_window']}/window, {f['windows_over_limit']} over, {f['responses_429']} 429s, budget {f['budget_used']}{naive}",
                "0 windows over, >= 90 % budget",
                "yes" if b5["figures"]["met"] else "no",
                f"bench/b5_rate_limit.py{flag}",
            ]
        )
    b6 = _load("b6_identify_cost", quick)
    if b6:
        c = b6["figures"]["cases"]
        rows.append(
            [
                "B6 identify cost",
                "; ".join(
                    f"{k}: {v['calls_per_identify']}" for k, v in c.items() if "track" not in k
                ),
                "warm <= 1.1 calls",
                "yes" if b6["figures"]["met"] else "no",
                f"bench/b6_identify_cost.py{flag}",
            ]
        )
    return rows


def drill_rows(quick: bool) -> list[list[str]]:
    drills = _load("drills", quick)
    if not drills:
        return []
    rows = []
    for _name, r in drills["figures"].items():
        if not isinstance(r, dict):
            continue
        if "error" in r:
            rows.append([r["fault"], "error: " + r["error"][:80], "", "", "", "", ""])
            continue
        rows.append(
            [
                r["fault"],
                str(r["accepted"]),
                str(r["delivered"]),
                str(r["expired_or_failed"]),
                str(r["lost"]),
                f"{r['duplicates']} (in flight {r.get('in_flight', r['in_flight_attempts_left'])})",
                str(r["order_violations"]),
            ]
        )
    return rows


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="")
    parser.add_argument("--skip", default="")
    parser.add_argument("--profile", action="store_true", help="profile B2 and B3 (py-spy)")
    parser.add_argument(
        "--summary-only", action="store_true", help="print the tables from existing results"
    )
    args = parser.parse_args()
    only = {x for x in args.only.split(",") if x}
    skip = {x for x in args.skip.split(",") if x}
    runs = {}
    if not args.summary_only:
        for key, script in SCRIPTS:
            if (only and key not in only) or key in skip:
                continue
            command = [PYTHON, str(ROOT / "bench" / f"{script}.py")]
            if args.quick:
                command.append("--quick")
            if args.profile and key in PROFILED:
                command.append("--profile")
            print(f"=== {' '.join(command[1:])}", flush=True)
            started = time.perf_counter()
            code = subprocess.run(command, cwd=ROOT).returncode
            runs[script] = {"exit": code, "seconds": round(time.perf_counter() - started, 1)}
    headers = ["figure", "measured", "target", "met", "reproduce"]
    rows = summary_rows(args.quick)
    print("\n" + markdown(headers, rows))
    drill_headers = [
        "fault",
        "accepted",
        "delivered",
        "expired/failed",
        "lost",
        "duplicates",
        "order violations",
    ]
    drills = drill_rows(args.quick)
    if drills:
        print("\n" + markdown(drill_headers, drills))
    if not args.summary_only:
        result_write(
            "run_all",
            quick=args.quick,
            config={"runs": runs},
            figures={"summary": rows, "drills": drills},
        )


if __name__ == "__main__":
    main()
