"""B3: delivery throughput against the Intercom sandbox at 80 ms latency, no rate limit.

Track events of users who already exist in the workspace (one Intercom call each) are queued,
then real ``celery -A config worker`` processes drain them, every attempt logged as a
DeliveryAttempt. Measured in the same run, against the same sandbox, at the same concurrency:

- Switchboard: Intercom calls/s the sandbox received (steady window after a warm-up);
- a bare ``requests.Session`` loop posting the same events (the ceiling of Python + sandbox), in
  the workers' shape: as many processes, each with as many threads (one process of 64 threads
  would be held back by its one GIL, flattering the ratio);
- the naive baseline (bench/baseline_naive.py: a Celery task per event, no log, no limiter).

Targets: >= 400 calls/s and >= 0.5 of the bare loop.

    .venv/bin/python bench/b3_delivery.py [--quick] [--repeats N] [--profile]
        [--events-per-user N] [--worker-defaults] [--name NAME]

The same script measures B7 (``--events-per-user 1``: one event per user, a backfill or a
campaign, every lane a single delivery) and B8 (B7 with the workers started as
``celery -A config worker`` with no pool or concurrency flag): bench/b7_one_event_per_user.py
and bench/b8_worker_defaults.py run it so.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from bench.harness import (  # noqa: E402
    SANDBOX_TOKEN,
    Sandbox,
    Stack,
    call_track,
    median,
    profile_print,
    profile_summary,
    profile_wait,
    py_spy_record,
    result_write,
    stop,
    switchboard_setup,
    table_print,
)

NAME = "b3_delivery"
LATENCY_MS = 80


def calls_in_window(
    sandbox: Sandbox, since_seq: int, *, warmup: float, seconds: float
) -> tuple[float, int, list[dict]]:
    """Calls/s the sandbox received in [first + warmup, first + warmup + seconds]."""
    entries = [e for e in sandbox.requests(since_seq) if not e["path"].startswith("/_sandbox")]
    if not entries:
        return 0.0, since_seq, []
    first = min(e["time"] for e in entries)
    lo, hi = first + warmup, first + warmup + seconds
    inside = [e for e in entries if lo <= e["time"] < hi]
    last_seq = max(e["seq"] for e in entries)
    return len(inside) / seconds, last_seq, entries


def database_transactions(database_url: str) -> int:
    """Transactions the benchmark database has committed or rolled back so far.

    The workers run in autocommit, so each of their statements is one transaction: the change
    over a run, divided by the calls delivered, is the statements a call costs (measured from
    outside, with every process's share; pg_stat_statements would need a restart of the
    shared server to load).
    """
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        # Backends report their counters when they go idle or end; force a fresh snapshot.
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    return int(row[0])


def bare_loop(
    url: str, users: list[str], *, processes: int, concurrency: int, seconds: float
) -> float:
    """The bare loop in ``processes`` processes of ``concurrency`` threads: calls/s in all."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        rates = pool.starmap(
            _bare_loop_process, [(url, users, concurrency, seconds, i) for i in range(processes)]
        )
    return sum(rates)


def _bare_loop_process(
    url: str, users: list[str], concurrency: int, seconds: float, process: int
) -> float:
    """The same POST /events from ``concurrency`` threads, each with a requests.Session."""
    done = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def loop(index: int) -> None:
        session = requests.Session()
        session.headers.update(
            {
                "Authorization": f"Bearer {SANDBOX_TOKEN}",
                "Intercom-Version": "2.16",
                "Accept": "application/json",
            }
        )
        n = 0
        while time.perf_counter() < stop_at:
            user = users[((process * concurrency + index) * 31 + n) % len(users)]
            body = {
                "event_name": "Bench Event",
                "created_at": int(time.time()) - n,
                "user_id": user,
                "metadata": {"n": n},
            }
            response = session.post(f"{url}/events", json=body, timeout=20)
            if 200 <= response.status_code < 300:
                n += 1
        with lock:
            done[0] += n

    started = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--pool", default="threads")
    parser.add_argument("--concurrency", type=int, default=32, help="per worker process")
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument(
        "--events-per-user", type=int, default=0, help="0: long lanes (B3); 1: one each (B7)"
    )
    parser.add_argument(
        "--worker-defaults",
        action="store_true",
        help="Switchboard's workers without --pool/--concurrency, as a user types them (B8)",
    )
    parser.add_argument("--name", default=NAME, help="the result file's name")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the workers in the last repeat"
    )
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    seconds = args.seconds or (6.0 if args.quick else 20.0)
    warmup = 3.0
    total_concurrency = args.workers * args.concurrency
    # Enough queued work to outlast the window at ~1,000 calls/s.
    users_count = 400 if args.quick else 1000
    per_user = max(4, int(1000 * (warmup + seconds + 5) / users_count) + 1)
    if args.events_per_user:
        per_user = args.events_per_user
        users_count = int(1000 * (warmup + seconds + 5) / per_user) + 1

    stack = Stack(args.name)
    stack.database_reset()
    stack.redis_flush()
    stack.django()
    sandbox = stack.sandbox_start()
    users = [f"user-{i}" for i in range(users_count)]
    sandbox.contacts_create(users)
    sandbox.configure(latency_ms=LATENCY_MS)
    setup = switchboard_setup(sandbox_url=sandbox.url, send_all_properties=True)

    from django.utils import timezone

    from bench.baseline_naive import naive_enqueue
    from integrations.models import Source
    from streaming.ingest.events import events_ingest
    from streaming.ingest.segment import call_normalise
    from streaming.models import DeliveryAttempt

    source = Source.objects.get(pk=setup.source_id)
    ours, bare, naive = [], [], []
    seq = max([e["seq"] for e in sandbox.requests(0)] or [0])
    profile = None
    for repeat in range(repeats):
        # given: the backlog, queued while no worker runs (their wake-ups wait in the broker)
        tag = uuid.uuid4().hex[:6]
        base = int(time.time()) - 86400
        raw = [
            call_track(user, f"{tag}-{u}-{k}", k, created_at=base - k)
            for k in range(per_user)
            for u, user in enumerate(users)
        ]
        now = timezone.now()
        for start in range(0, len(raw), 500):
            calls = [
                call_normalise(c, call_type=None, received_at=now) for c in raw[start : start + 500]
            ]
            events_ingest(source=source, calls=calls, received_at=now)
        # when: the workers start
        attempts_before = DeliveryAttempt.objects.count()
        transactions_before = database_transactions(stack.database_url)
        workers = stack.workers_start(
            args.workers,
            pool=None if args.worker_defaults else args.pool,
            concurrency=None if args.worker_defaults else args.concurrency,
        )
        spies = []
        if args.profile and repeat == repeats - 1:
            time.sleep(warmup)
            spies = py_spy_record(
                [w.pid for w in workers], seconds=seconds, out=stack.logs / "b3-profile"
            )
            time.sleep(seconds + 1)
        else:
            time.sleep(warmup + seconds + 1)
        for worker in workers:
            stop(worker)
        if spies:
            profile_wait(spies)
            profile = profile_summary(sorted(stack.logs.glob("b3-profile-*.txt")))
        rate, new_seq, entries = calls_in_window(sandbox, seq, warmup=warmup, seconds=seconds)
        attempts = DeliveryAttempt.objects.count() - attempts_before
        time.sleep(1.0)  # the stopped workers' statistics reach the collector
        transactions = database_transactions(stack.database_url) - transactions_before
        ours.append(
            {
                "calls_per_s": round(rate, 1),
                "calls": len(entries),
                "attempts_logged": attempts,
                "statements_per_call": round(transactions / attempts, 2) if attempts else None,
            }
        )
        seq = new_seq
        from streaming.models import Delivery

        Delivery.objects.filter(status="pending").update(
            status="skipped", reason="bench: backlog left"
        )
        import redis

        redis.Redis.from_url(stack.broker_url).delete(stack.queue)

        # the bare loop, same sandbox, same concurrency, same processes x threads
        bare_rate = bare_loop(
            sandbox.url,
            users,
            processes=args.workers,
            concurrency=args.concurrency,
            seconds=seconds,
        )
        bare.append({"calls_per_s": round(bare_rate, 1)})
        seq = max([e["seq"] for e in sandbox.requests(seq)] or [seq])

        # the naive baseline, same workers' shape
        if not args.no_naive:
            naive_calls = [
                {
                    "type": "track",
                    "userId": c["userId"],
                    "event": c["event"],
                    "created_at": c["created_at"],
                    "properties": c["properties"],
                }
                for c in raw
            ]
            naive_enqueue(base_url=sandbox.url, token=SANDBOX_TOKEN, calls=naive_calls)
            from bench.baseline_naive import QUEUE

            naive_workers = stack.workers_start(
                args.workers,
                pool=args.pool,
                concurrency=args.concurrency,
                app="bench.baseline_naive",
                queue=QUEUE,
            )
            time.sleep(warmup + seconds + 1)
            for worker in naive_workers:
                stop(worker)
            naive_rate, seq, naive_entries = calls_in_window(
                sandbox, seq, warmup=warmup, seconds=seconds
            )
            naive.append({"calls_per_s": round(naive_rate, 1), "calls": len(naive_entries)})
            import redis

            redis.Redis.from_url(stack.broker_url).delete(QUEUE)
        print(
            f"  repeat {repeat + 1}: switchboard {ours[-1]} | bare {bare[-1]} | naive {naive[-1] if naive else '-'}",
            flush=True,
        )

    ours_rate = median(r["calls_per_s"] for r in ours)
    bare_rate = median(r["calls_per_s"] for r in bare)
    naive_rate = median(r["calls_per_s"] for r in naive) if naive else None
    ratio = round(ours_rate / bare_rate, 3) if bare_rate else None
    figures = {
        "calls_per_s": ours_rate,
        "bare_loop_calls_per_s": bare_rate,
        "ratio_to_bare": ratio,
        "naive_calls_per_s": naive_rate,
        "naive_ratio_to_bare": round(naive_rate / bare_rate, 3)
        if naive_rate and bare_rate
        else None,
        "every_attempt_logged": all(r["attempts_logged"] >= r["calls"] for r in ours),
        "statements_per_call": median(
            [r["statements_per_call"] for r in ours if r["statements_per_call"] is not None] or [0]
        ),
        "target": ">= 400 calls/s and >= 0.5 of the bare loop",
        "met": ours_rate >= 400 and (ratio or 0) >= 0.5,
        "switchboard_repeats": ours,
        "bare_repeats": bare,
        "naive_repeats": naive,
    }
    table_print(
        f"{args.name} at {LATENCY_MS} ms latency, {per_user} event(s) per user, no limit, concurrency {total_concurrency} ({args.workers} x {args.pool} {args.concurrency}); median of {repeats}",
        ["what", "Intercom calls/s", "ratio to bare loop"],
        [
            ["Switchboard (lanes, limiter, attempt log)", ours_rate, ratio],
            [
                "naive Celery task per event",
                naive_rate if naive_rate is not None else "-",
                figures["naive_ratio_to_bare"] or "-",
            ],
            ["bare requests.Session loop", bare_rate, 1.0],
        ],
    )
    print(
        "database statements per delivered call (workers' transactions / attempts): "
        f"{figures['statements_per_call']}",
        flush=True,
    )
    if profile:
        profile_print("B3 workers", profile)
    result_write(
        args.name,
        quick=args.quick,
        config={
            "latency_ms": LATENCY_MS,
            "rate_limit": None,
            "seconds": seconds,
            "warmup": warmup,
            "repeats": repeats,
            "workers": args.workers,
            "pool": "settings' default" if args.worker_defaults else args.pool,
            "concurrency_per_worker": "settings' default"
            if args.worker_defaults
            else args.concurrency,
            "bare_loop_shape": f"{args.workers} processes x {args.concurrency} threads",
            "users": users_count,
            "events_per_user": per_user,
        },
        figures=figures,
        profile=profile,
    )


if __name__ == "__main__":
    main()
