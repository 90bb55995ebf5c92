"""B10: a backfill of 200,000 host users, killed in the middle and resumed.

``auth.User`` rows are created in the benchmark database; ``manage.py switchboard backfill
--model auth.User`` runs as its own process, and is killed with SIGKILL once it has stored about
half of them; the same command is run again and resumes from its cursor. Workers as
docs/production.md says (2 processes, a thread pool of 32 each, beat) deliver the identifies to
the sandbox, which allows Intercom's default limit (10,000 calls a minute per app: 1,666 per
10-second window) and announces it in X-RateLimit-*.

Measured: how long the command took (both runs), how long until every delivery succeeded, the
Intercom calls per second over that time, each sandbox window's count (none may be over the
limit; 429s), and duplicates: contacts upserted more than once in the sandbox beyond those of
the batch in flight when the command was killed, and users with more than one backfill call.

    .venv/bin/python bench/b10_backfill.py [--quick] [--users N] [--batch-size N]

``--quick`` is 20,000 users (about 4 minutes of delivery at the limit; 200,000 take about 40,
each new contact costing two calls: a lookup, then the create).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    PYTHON,
    ROOT,
    Sandbox,
    Stack,
    result_write,
    stop,
    switchboard_setup,
    table_print,
)

NAME = "b10_backfill"
LIMIT = 1666  # Intercom's default, 10,000 a minute per app, per 10-second window
WINDOW = 10


def users_create(count: int) -> None:
    """``count`` host users, as a host app holds them (bulk insert; no signals)."""
    from django.contrib.auth.models import User

    step = 10_000
    for start in range(0, count, step):
        User.objects.bulk_create(
            User(username=f"member-{n}", email=f"member-{n}@example.com")
            for n in range(start, min(start + step, count))
        )


def command_start(stack: Stack, sync_name: str, batch_size: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                PYTHON, "manage.py", "switchboard", "backfill", "--model", "auth.User",
                "--sync", sync_name, "--batch-size", str(batch_size), "--no-progress",
            ],
            cwd=ROOT,
            env=stack.environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


class SandboxTally:
    """The sandbox's request log read as it grows: upserts per contact, answers per window."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.seq = 0
        self.upserts: Counter[str] = Counter()
        self.windows: dict[int, Counter] = {}
        self.requests = 0
        self.first = self.last = None

    def read(self) -> None:
        entries = self.sandbox.requests(self.seq)
        for entry in entries:
            self.seq = max(self.seq, entry["seq"])
            if entry["path"].startswith("/_sandbox"):
                continue
            self.requests += 1
            self.first = self.first or entry["time"]
            self.last = entry["time"]
            window = int(entry["time"] // WINDOW) * WINDOW
            self.windows.setdefault(window, Counter())[entry["status"]] += 1
            body = entry["body"] if isinstance(entry["body"], dict) else {}
            if (
                entry["method"] in ("POST", "PUT")
                and entry["path"].startswith("/contacts")
                and 200 <= entry["status"] < 300
                and body.get("external_id")
            ):
                self.upserts[body["external_id"]] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    users = args.users or (20_000 if args.quick else 200_000)

    stack = Stack(NAME)
    stack.database_reset()
    stack.redis_flush()
    stack.django()
    sandbox = stack.sandbox_start()
    sandbox.configure(rate_limit=LIMIT, latency_ms=80)
    setup = switchboard_setup(sandbox_url=sandbox.url)
    from integrations.models import Sync
    from streaming.models import BackfillJob, Delivery, Event

    sync = Sync.objects.get(pk=setup.sync_id)
    print(f"creating {users:,} host users", flush=True)
    users_create(users)
    workers = stack.workers_start(args.workers, concurrency=args.concurrency, beat=True)
    tally = SandboxTally(sandbox)
    log = stack.logs / "backfill-command.log"

    # The first run, killed once about half the users are stored.
    started = time.time()
    first = command_start(stack, sync.name, args.batch_size, log)
    while True:
        done = BackfillJob.objects.values_list("done", flat=True).first() or 0
        if done >= users // 2 or first.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = time.time()
    job = BackfillJob.objects.get()
    done_at_kill = job.done
    print(f"killed the backfill at {done_at_kill:,} of {users:,} users", flush=True)

    # The same command again: it resumes from the job's cursor.
    second = command_start(stack, sync.name, args.batch_size, log)
    if second.wait() != 0:
        raise SystemExit(f"the resumed backfill failed:\n{log.read_text()[-3000:]}")
    command_done_at = time.time()
    job.refresh_from_db()
    print(f"backfill stored: {job.done:,} users, {command_done_at - started:.0f} s", flush=True)

    # Delivery: until nothing is pending (or nothing moved for two minutes).
    last_pending, still_since = -1, time.time()
    while True:
        tally.read()
        pending = Delivery.objects.filter(sync=sync, status=Delivery.Status.PENDING).count()
        if pending == 0:
            break
        if pending != last_pending:
            last_pending, still_since = pending, time.time()
        elif time.time() - still_since > 120:
            print(f"stuck with {pending} pending", flush=True)
            break
        print(f"  {pending:,} pending, {tally.requests:,} Intercom calls so far", flush=True)
        time.sleep(10)
    delivered_at = time.time()
    time.sleep(2)
    tally.read()
    for worker in workers:
        stop(worker)

    statuses = dict(Counter(Delivery.objects.filter(sync=sync).values_list("status", flat=True)))
    events_per_user = Counter(
        Event.objects.filter(message_id__startswith=f"sb-backfill-{job.pk}-").values_list(
            "user_id", flat=True
        )
    )
    state_windows = {w["start"]: w for w in sandbox.state()["windows"]}
    per_window = {w: sum(c.values()) for w, c in sorted(tally.windows.items())}
    over = [w for w, n in per_window.items() if n > LIMIT]
    duration = delivered_at - started
    figures = {
        "users": users,
        "identified": len(tally.upserts),
        "deliveries_by_status": statuses,
        "command_seconds": round(command_done_at - started, 1),
        "killed_after_s": round(killed_at - started, 1),
        "users_stored_at_kill": done_at_kill,
        "seconds_to_finish": round(duration, 1),
        "intercom_calls": tally.requests,
        "calls_per_s": round(tally.requests / duration, 1),
        "calls_per_s_while_sending": round(
            tally.requests / max((tally.last or 0) - (tally.first or 0), 1e-9), 1
        ),
        "max_calls_in_a_window": max(per_window.values(), default=0),
        "windows_over_limit": len(over),
        "responses_429": sum(c.get(429, 0) for c in tally.windows.values()),
        "sandbox_windows_over_limit": sum(
            1 for w in state_windows.values() if w["requests"] - w["rate_limited"] > LIMIT
        ),
        "contacts_upserted_twice": sum(1 for n in tally.upserts.values() if n > 1),
        "users_with_two_backfill_calls": sum(1 for n in events_per_user.values() if n > 1),
        "batch_in_flight_at_kill": args.batch_size,
        "users_not_identified": users - len(tally.upserts),
    }
    figures["met"] = (
        figures["windows_over_limit"] == 0
        and figures["contacts_upserted_twice"] <= args.batch_size
        and figures["users_not_identified"] == 0
    )
    table_print(
        f"B10 backfill of {users:,} users, limit {LIMIT}/{WINDOW} s, killed at {done_at_kill:,}",
        ["finish s", "calls", "calls/s", "max/window", "windows over", "429s", "twice", "missed"],
        [
            [
                figures["seconds_to_finish"],
                figures["intercom_calls"],
                figures["calls_per_s"],
                figures["max_calls_in_a_window"],
                figures["windows_over_limit"],
                figures["responses_429"],
                figures["contacts_upserted_twice"],
                figures["users_not_identified"],
            ]
        ],
    )
    result_write(
        NAME,
        quick=args.quick,
        config={
            "users": users,
            "batch_size": args.batch_size,
            "limit_per_window": LIMIT,
            "window_s": WINDOW,
            "latency_ms": 80,
            "workers": args.workers,
            "pool": "threads",
            "concurrency_per_worker": args.concurrency,
        },
        figures={**figures, "per_window": {str(w): n for w, n in per_window.items()}},
    )


if __name__ == "__main__":
    main()
