"""Run every benchmark and the drills, one after the other (they share Redis databases 7 and 8,
so never two at once), then print the summary and drill tables from their results.

    .venv/bin/python bench/run_all.py [--quick] [--only b1,b2,...] [--skip drills] [--profile]
    .venv/bin/python bench/run_all.py --summary-only --readme   # rewrite the published tables only

``--readme`` rewrites the marked regions where the figures are published (``PUBLISHED``: the
summary, ``<!-- bench:summary -->`` ... ``<!-- /bench:summary -->``, in README.md; the drills,
``<!-- bench:drills -->`` ... ``<!-- /bench:drills -->``, in docs/benchmarks.md) from the result
files in bench/results/, so the published figures are always the recorded ones: a benchmark
without a result file reads "not measured yet", never a hand-written figure.
"""

from __future__ import annotations

import argparse
import json
import re
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
    ("b7", "b7_one_event_per_user"),
    ("b8", "b8_worker_defaults"),
    ("b9", "b9_audit_scale"),
    ("b10", "b10_backfill"),
    ("drills", "drills"),
]
PROFILED = {"b2", "b3"}
# Where ``--readme`` writes each table: the summary leads the README, the drills sit beside their
# definitions in docs/benchmarks.md.
PUBLISHED = {"summary": ROOT / "README.md", "drills": ROOT / "docs" / "benchmarks.md"}
NOT_MEASURED = "not measured yet"

# figure, target and anchor of each benchmark (../shared/DESIGN.md, "Targets"), in table order.
FIGURES = {
    "b1_ingest_single": (
        "B1 single-call ingest",
        ">= 400 calls/s, p99 <= 50 ms at c=8, or >= 0.6 of a one-INSERT Django view",
        "-",
    ),
    "b2_ingest_batch": (
        "B2 batch ingest (durable)",
        ">= 15,000 events/s and >= 0.5 of COPY per batch",
        "RudderStack gateway 1.7K/s on 2 cores, DB elsewhere",
    ),
    "b3_delivery": (
        "B3 delivery, 80 ms, no limit",
        ">= 400 calls/s, >= 0.5 of bare",
        "Intercom allows ~166 calls/s per app",
    ),
    "b4_end_to_end": ("B4 end to end at 100/s", "p95 <= 2 s", "-"),
    "b5_rate_limit": ("B5 rate limit, 2x overload", "0 windows over, >= 90 % budget", "-"),
    "b6_identify_cost": (
        "B6 identify cost",
        "warm <= 1.1 calls",
        "2-3 calls per identify in every peer",
    ),
    "b7_one_event_per_user": (
        "B7 delivery, one event per user",
        ">= 400 calls/s, >= 0.5 of bare",
        "a backfill or a campaign: every lane one call",
    ),
    "b8_worker_defaults": (
        "B8 B7 with the worker started without flags",
        "within 10 % of B7",
        "`celery -A config worker`, as a Celery user types it",
    ),
    "b9_audit_scale": (
        "B9 audit at 5 M events",
        "every page <= 300 ms and <= 2x its time at 100 K",
        "-",
    ),
    "b10_backfill": (
        "B10 backfill of 200,000 host users, killed and resumed",
        "0 windows over the limit, no one identified twice beyond the batch in flight",
        "Intercom's default 10,000 calls/min; peers offer no backfill of the host's users",
    ),
}


def _load(name: str, quick: bool) -> dict[str, Any] | None:
    path = RESULTS / f"{name}{'.quick' if quick else ''}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _measured(name: str, document: dict[str, Any]) -> tuple[str, str]:
    """(measured, met) of one result file."""
    f = document["figures"]
    if name == "b1_ingest_single":
        levels = document["configuration"]["concurrency"]
        best = f["target"]["best_concurrency"]
        measured = ", ".join(
            f"c={c}: {f[str(c)]['calls_per_s']:.0f}/s p99 {f[str(c)]['p99_ms']:.0f} ms"
            for c in levels
        )
        if "ratio_to_reference" in f.get("8", {}):
            measured += f"; at c=8 {f['8']['ratio_to_reference']} of the one-INSERT view"
        met = f["target"]["met_at_concurrency"] or 8 in f["target"].get(
            "ratio_met_at_concurrency", []
        )
        return measured, "yes" if met else f"no (best c={best})"
    if name == "b2_ingest_batch":
        measured = (
            f"{f['events_per_s']:.0f} events/s; COPY {f['copy_events_per_s']:.0f}/s; "
            f"ratio {f['ratio_to_copy']}"
        )
    elif name == "b8_worker_defaults":
        b7 = _load("b7_one_event_per_user", document["quick"])
        b7_rate = b7["figures"]["calls_per_s"] if b7 else None
        share = round(f["calls_per_s"] / b7_rate, 3) if b7_rate else None
        measured = f"{f['calls_per_s']:.0f} calls/s; {share if share else '-'} of B7"
        return measured, "yes" if share and share >= 0.9 else ("-" if share is None else "no")
    elif name in ("b3_delivery", "b7_one_event_per_user"):
        measured = (
            f"{f['calls_per_s']:.0f} calls/s; bare loop {f['bare_loop_calls_per_s']:.0f}/s; "
            f"ratio {f['ratio_to_bare']}; naive {f['naive_calls_per_s'] or '-'}"
        )
        if f.get("statements_per_call"):
            measured += f"; {f['statements_per_call']} statements/call"
    elif name == "b4_end_to_end":
        measured = f"p50 {f['p50_s']} s, p95 {f['p95_s']} s, p99 {f['p99_s']} s"
    elif name == "b5_rate_limit":
        ours, naive = f["switchboard"], f.get("naive")
        measured = (
            f"max {ours['max_calls_in_a_window']}/window, {ours['windows_over_limit']} over, "
            f"{ours['responses_429']} 429s, budget {ours['budget_used']}"
        )
        if naive:
            measured += (
                f"; naive: {naive['windows_over_limit']} windows over, "
                f"{naive['responses_429']} 429s, lost {naive['lost']}"
            )
    elif name == "b9_audit_scale":
        summary = f["summary"]
        slowest, slowest_ms = summary["slowest"]
        steepest, ratio = summary["steepest"]
        measured = (
            f"at {summary['largest']}: slowest page {slowest} {slowest_ms:.0f} ms; steepest "
            f"{steepest}, {ratio}x its {summary['smallest']} time; "
            f"{summary['bytes_per_event']:,} bytes/event"
        )
        if summary.get("purge_rows_per_s"):
            measured += (
                f"; purge {summary['purge_rows_per_s']:,.0f} rows/s, ingest p99 "
                f"{summary['ingest_p99_ms_during_purge']:.0f} ms during it "
                f"({summary['ingest_p99_ms_alone']:.0f} ms without)"
            )
    elif name == "b10_backfill":
        measured = (
            f"{f['users']:,} users in {f['seconds_to_finish']:.0f} s, {f['calls_per_s']} calls/s; "
            f"max {f['max_calls_in_a_window']}/window, {f['windows_over_limit']} over, "
            f"{f['responses_429']} 429s; killed at {f['users_stored_at_kill']:,}: "
            f"{f['contacts_upserted_twice']} identified twice, {f['users_not_identified']} missed"
        )
    else:
        measured = "; ".join(
            f"{case}: {v['calls_per_identify']}"
            for case, v in f["cases"].items()
            if "track" not in case
        )
    return measured, "yes" if f["met"] else "no"


def summary_rows(quick: bool) -> list[list[str]]:
    """figure | measured | target | anchor | met | command, one row per benchmark; a benchmark
    without a result file reads "not measured yet"."""
    rows: list[list[str]] = []
    flag = " --quick" if quick else ""
    for name, (figure, target, anchor) in FIGURES.items():
        document = _load(name, quick)
        measured, met = _measured(name, document) if document else (NOT_MEASURED, "-")
        rows.append([figure, measured, target, anchor, met, f"`bench/{name}.py{flag}`"])
    return rows


def provenance(names: list[str], quick: bool) -> str:
    """Which run each figure comes from (git revision, when), so a stale figure shows."""
    parts = []
    for name in names:
        document = _load(name, quick)
        if document:
            when = document["finished_at"].replace("T", " ")[:16]
            parts.append(f"`{name}` {document['revision']}, {when} UTC")
    return "Results: " + ("; ".join(parts) if parts else "none yet") + "."


DRILL_HEADERS = [
    "fault",
    "accepted",
    "delivered",
    "expired/failed",
    "lost",
    "duplicates",
    "in flight",
    "order violations",
]


def drill_rows(quick: bool) -> list[list[str]]:
    """One row per drill of bench/results/drills.json (DRILL_HEADERS)."""
    drills = _load("drills", quick)
    if not drills:
        return []
    rows = []
    for _name, r in drills["figures"].items():
        if not isinstance(r, dict):
            continue
        if "error" in r:
            rows.append([r["fault"], "error: " + r["error"][:80], "", "", "", "", "", ""])
            continue
        rows.append(
            [
                r["fault"],
                str(r["accepted"]),
                str(r["delivered"]),
                str(r["expired_or_failed"]),
                str(r["lost"]),
                str(r["duplicates"]),
                # lanes held at the fault, or (faults without one) attempts left unfinished
                str(r.get("in_flight", r["in_flight_attempts_left"])),
                str(r["order_violations"]),
            ]
        )
    return rows


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def region_write(region: str, content: str) -> None:
    """Replace what lies between ``<!-- bench:<region> -->`` and its closing marker, in the file
    ``PUBLISHED`` names for that region, by ``content``."""
    path = PUBLISHED[region]
    pattern = re.compile(
        rf"(<!-- bench:{region} -->\n).*?(<!-- /bench:{region} -->)", flags=re.DOTALL
    )
    text = path.read_text()
    if not pattern.search(text):
        raise SystemExit(
            f"{path.relative_to(ROOT)} has no <!-- bench:{region} --> ... "
            f"<!-- /bench:{region} --> region"
        )
    path.write_text(pattern.sub(lambda match: match[1] + content + "\n" + match[2], text, count=1))
    print(f"-> {path.relative_to(ROOT)} (bench:{region})")


def readme_write(summary: list[list[str]], drills: list[list[str]]) -> None:
    """Rewrite the published benchmark and drill tables from the recorded (not quick) results."""
    summary_headers = ["figure", "measured", "target", "anchor", "met", "reproduce"]
    summary_text = (
        markdown(summary_headers, summary) + "\n\n" + provenance(list(FIGURES), quick=False)
    )
    drill_rows_or_none = drills or [["all drills", NOT_MEASURED, "", "", "", "", "", ""]]
    drill_text = (
        markdown(DRILL_HEADERS, drill_rows_or_none)
        + "\n\n"
        + provenance(["drills"], quick=False)
        + " Reproduce: `bench/drills.py`."
    )
    region_write("summary", summary_text)
    region_write("drills", drill_text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="")
    parser.add_argument("--skip", default="")
    parser.add_argument("--profile", action="store_true", help="profile B2 and B3 (py-spy)")
    parser.add_argument(
        "--summary-only", action="store_true", help="print the tables from existing results"
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help="also rewrite the published tables (README.md's summary, docs/benchmarks.md's drills)",
    )
    args = parser.parse_args()
    if args.readme and args.quick:
        parser.error("--readme publishes recorded results only; quick runs are not recorded")
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
    headers = ["figure", "measured", "target", "anchor", "met", "reproduce"]
    rows = summary_rows(args.quick)
    print("\n" + markdown(headers, rows))
    drills = drill_rows(args.quick)
    if drills:
        print("\n" + markdown(DRILL_HEADERS, drills))
    if args.readme:
        readme_write(rows, drills)
    if not args.summary_only:
        result_write(
            "run_all",
            quick=args.quick,
            config={"runs": runs},
            figures={"summary": rows, "drills": drills},
        )


if __name__ == "__main__":
    main()
