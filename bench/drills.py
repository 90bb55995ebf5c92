"""Fault drills: what is lost, duplicated or reordered when things break under load.

Each drill runs the whole stack as real processes: a PRIVATE PostgreSQL cluster (initdb/pg_ctl
on a free port under /tmp, so restarting it disturbs nobody), a PRIVATE redis-server as the
Celery broker (likewise), the Intercom sandbox, gunicorn, Celery workers (prefork, so that a
worker has a main process and pool children) and Celery beat (the sweeper). Calls go over HTTP
at a steady rate: each user's identify, then tracks. A call is *accepted* when the API answered
200. Once the fault is over the drill waits until every accepted call reached the sandbox (or
nothing moved for a while) and reports, from the sandbox's request log:

- delivered: accepted calls the sandbox answered 2xx at least once;
- expired / failed: deliveries that ended visibly (the operator sees them and can replay);
- lost: accepted, not delivered and not visibly ended (the invariant says 0);
- duplicates: 2xx requests for the same call beyond the first;
- in flight: attempts a killed process left unfinished (duplicates must stay <= this);
- order violations: a user's call reaching the sandbox before one ingested earlier.

The calls, the verdict and the private redis-server come from faults.py, which the short drills
of tests/streaming/test_drills.py share.

    .venv/bin/python bench/drills.py [--quick] [--only kill9_children,broker_restart,...]

Worker settings for the drills (so that a drill takes minutes, not hours): sweep every 2 s,
lease 10 s, retries from 2 s doubling to 30 s, Intercom read timeout 3 s.

Over our usual ~400 lines: eight drills, each a short scenario (break something, send, check
nothing was lost), and the verdict table they share.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    PYTHON,
    RESULTS,
    HttpPool,
    Sandbox,
    Stack,
    basic_auth,
    free_port,
    result_write,
    spawn,
    stop,
    switchboard_setup,
    table_print,
)
from faults import PrivateRedis, Sent, call_identify, call_track, sandbox_verdict  # noqa: E402

NAME = "drills"
DRILL_SETTINGS = {
    "SWITCHBOARD_SWEEP_SECONDS": "2",
    "SWITCHBOARD_LEASE_SECONDS": "10",
    "SWITCHBOARD_RETRY_BASE_SECONDS": "2",
    "SWITCHBOARD_RETRY_MAX_SECONDS": "30",
    "SWITCHBOARD_INTERCOM_READ_TIMEOUT": "3",
    "DATABASE_CONN_MAX_AGE": "60",
}


# --- private servers ------------------------------------------------------------------------


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port (initdb runs as the postgres user)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="sb-bench-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        bindir = Path(
            subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
            or "/usr/lib/postgresql/15/bin"
        )
        self.pg_ctl = str(bindir / "pg_ctl")
        self.initdb = str(bindir / "initdb")

    def _as_postgres(self, command: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return command

    def start(self) -> None:
        if not self.data.exists():
            shutil.chown(self.root, "postgres") if os.geteuid() == 0 else None
            subprocess.run(
                self._as_postgres(
                    [
                        self.initdb,
                        "-D",
                        str(self.data),
                        "-A",
                        "trust",
                        "-U",
                        "postgres",
                        "--no-sync",
                    ]
                ),
                check=True,
                capture_output=True,
            )
        subprocess.run(
            self._as_postgres(
                [
                    self.pg_ctl,
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-w",
                    "-o",
                    f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def restart(self, mode: str) -> float:
        """``pg_ctl restart -m fast|immediate``; returns the seconds it took."""
        started = time.perf_counter()
        subprocess.run(
            self._as_postgres(
                [
                    self.pg_ctl,
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-w",
                    "-m",
                    mode,
                    "-o",
                    f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200",
                    "restart",
                ]
            ),
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(
                self._as_postgres([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"]),
                check=True,
                capture_output=True,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/sb_bench_drills"


# --- one drill ------------------------------------------------------------------------------


@dataclass
class Drill:
    name: str
    fault: str
    inject: Callable[[DrillRun], dict[str, Any]]
    users: int = 30
    tracks: int = 15
    rate: float = 40.0
    sandbox: dict[str, Any] | None = None
    sync: dict[str, Any] | None = None
    settle: float = 180.0


class DrillRun:
    """The stack of one drill and the calls it accepted."""

    def __init__(self, drill: Drill, *, pg: PrivatePostgres) -> None:
        from django.db import connections

        self.drill = drill
        self.pg = pg
        self.stack = Stack(f"{NAME}_{drill.name}", database_url=self.pg.url)
        self.broker = PrivateRedis(self.stack.logs)
        self.broker.start()
        self.stack.broker_url = self.broker.url
        self.stack.settings.update(DRILL_SETTINGS)
        from django.conf import settings

        if settings.configured:
            connections.close_all()  # the database is dropped and created again
        self.stack.database_reset()
        self.stack.redis_flush()
        self.stack.django()
        self.sandbox: Sandbox = self.stack.sandbox_start(latency_ms=20, **(drill.sandbox or {}))
        self.setup = switchboard_setup(
            sandbox_url=self.sandbox.url, send_all_properties=True, **(drill.sync or {})
        )
        from streaming.delivery.ratelimit import rate_limiter_get

        rate_limiter_get(destination_id=self.setup.destination_id).reset()
        self.web = self.stack.gunicorn_start(workers=2, threads=4)
        self.workers = self.stack.workers_start(2, pool="prefork", concurrency=3)
        self.beat = spawn(
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "-s",
                str(self.stack.logs / "beat-schedule"),
                "--loglevel=INFO",
            ],
            env=self.stack.environment(),
            log=self.stack.logs / "beat.log",
        )
        self.accepted: dict[str, Sent] = {}
        self.refused = 0
        self.lock = threading.Lock()

    def feed(self, *, during: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Send the calls at the drill's rate; call ``during`` a third of the way through."""
        drill = self.drill
        tag = uuid.uuid4().hex[:6]
        users = [f"{tag}-u{i}" for i in range(drill.users)]
        base = int(time.time()) - 3600
        plan: list[tuple[str, str, dict]] = []
        for round_ in range(drill.tracks + 1):
            for u, user in enumerate(users):
                mid = f"{tag}-{u}-{round_}"
                if round_ == 0:
                    plan.append(("/v1/identify", "identify", call_identify(user, mid)))
                else:
                    plan.append(
                        (
                            "/v1/track",
                            "track",
                            call_track(user, mid, round_, created_at=base + round_),
                        )
                    )
        pool = HttpPool(
            self.web.url,
            headers={
                "Authorization": basic_auth(self.setup.write_key),
                "Content-Type": "application/json",
            },
            timeout=30,
        )
        fault_report: dict[str, Any] = {}
        fault_at = len(plan) // 3

        fault_window = [float("inf"), float("inf")]
        refused_at: list[float] = []

        answered = [threading.Event() for _ in plan]

        def send(index: int) -> None:
            # Like an SDK, a user's next call leaves once the previous one was answered, so
            # that the order sent is the order ingested.
            if index >= drill.users:
                answered[index - drill.users].wait()
            path, kind, call = plan[index]
            began = time.time()
            status, _ = pool.request("POST", path, json.dumps(call).encode())
            with self.lock:
                if status == 200:
                    self.accepted[call["messageId"]] = Sent(call["userId"], kind, 0)
                else:
                    self.refused += 1
                    refused_at.append(began)
            answered[index].set()

        def fault() -> None:
            fault_window[0] = time.time()
            fault_report.update(during())
            fault_window[1] = time.time()

        threads: list[threading.Thread] = []
        started = time.perf_counter()
        fault_thread = None
        for index in range(len(plan)):
            due = started + index / drill.rate
            time.sleep(max(due - time.perf_counter(), 0))
            if index == fault_at:
                fault_thread = threading.Thread(target=fault)
                fault_thread.start()
            t = threading.Thread(target=send, args=(index,))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        if fault_thread is not None:
            fault_thread.join()
        # Refusals are fine while the database is down (the client retries); after it is back,
        # every call must be accepted again.
        fault_report["refused_before_fault"] = sum(1 for t in refused_at if t < fault_window[0])
        fault_report["refused_after_fault"] = sum(1 for t in refused_at if t > fault_window[1] + 1)
        fault_report["calls_sent"] = len(plan)
        return fault_report

    def settle(self) -> dict[str, Any]:
        """Wait for every accepted call to arrive, or for a long quiet; then judge."""
        from django.db import connection

        from streaming.models import Delivery, DeliveryAttempt, Event

        deadline = time.monotonic() + self.drill.settle
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                connection.close()
                if not Delivery.objects.filter(status="pending").exists():
                    break
            time.sleep(1)
        connection.close()
        ids = dict(
            Event.objects.filter(message_id__in=list(self.accepted)).values_list("message_id", "id")
        )
        for mid, sent in self.accepted.items():
            sent.order = ids.get(mid, -1)
        requests = self.sandbox.requests(0)
        # Kept for a post-mortem: every request the sandbox received, with the accepted calls.
        (self.stack.logs / "sandbox-requests.json").write_text(
            json.dumps(
                {"requests": requests, "accepted": {k: vars(v) for k, v in self.accepted.items()}}
            )
        )
        verdict = sandbox_verdict(self.accepted, requests)
        statuses = dict(
            Delivery.objects.values_list("status").annotate(
                n=__import__("django.db.models", fromlist=["Count"]).Count("id")
            )
        )
        stored = len(ids)
        visible_end = Delivery.objects.filter(
            event__message_id__in=list(self.accepted), status__in=["expired", "failed"]
        ).count()
        in_flight = DeliveryAttempt.objects.filter(category="in_flight").count()
        lost = verdict["not_delivered"] - visible_end
        return {
            **verdict,
            "refused": self.refused,
            "in_flight_at_fault": 0,  # replaced by the fault's own sample, where it kills
            "stored": stored,
            "expired_or_failed": visible_end,
            "pending_at_end": statuses.get("pending", 0),
            "lost": lost,
            "in_flight_attempts_left": in_flight,
            "deliveries_by_status": statuses,
        }

    def close(self) -> None:
        from django.db import connections

        connections.close_all()
        for process in [self.beat, *self.workers, self.web.process]:
            stop(
                process,
                sig=signal.SIGQUIT if process is not self.web.process else signal.SIGTERM,
                timeout=5,
            )
        if self.sandbox.process is not None:
            stop(self.sandbox.process)
        with contextlib.suppress(Exception):
            self.broker.shutdown_nosave()


# --- the faults -----------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def leases_held() -> int:
    """Lanes a worker holds right now: an upper bound of the deliveries in flight."""
    from django.db import connection
    from django.utils import timezone

    from streaming.models import Lane

    try:
        return Lane.objects.filter(leased_until__gt=timezone.now()).count()
    finally:
        connection.close()


def kill9_children(run: DrillRun) -> dict[str, Any]:
    """SIGKILL every pool child of both workers, twice, 3 s apart (the main processes respawn them)."""
    killed = 0
    in_flight = 0
    for _ in range(2):
        in_flight += leases_held()
        for worker in run.workers:
            for child in _children(worker.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
                    killed += 1
        time.sleep(3)
    return {"children_killed": killed, "in_flight_at_fault": in_flight}


def kill9_main(run: DrillRun) -> dict[str, Any]:
    """SIGKILL one worker's main process and its children; a new worker starts 5 s later."""
    victim = run.workers[0]
    in_flight = leases_held()
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    time.sleep(5)
    run.workers[0] = run.stack.workers_start(1, pool="prefork", concurrency=3)[0]
    return {"killed_pid": victim.pid, "in_flight_at_fault": in_flight}


def broker_restart(run: DrillRun) -> dict[str, Any]:
    """Redis SHUTDOWN NOSAVE (every queued wake-up lost); started again on the same port 10 s later."""
    in_flight = leases_held()
    run.broker.shutdown_nosave()
    time.sleep(10)
    run.broker.start()
    return {"broker_down_s": 10, "in_flight_at_fault": in_flight}


def pg_restart(mode: str) -> Callable[[DrillRun], dict[str, Any]]:
    def inject(run: DrillRun) -> dict[str, Any]:
        in_flight = leases_held()
        return {
            "restart_s": round(run.pg.restart(mode), 2),
            "mode": mode,
            "in_flight_at_fault": in_flight,
        }

    return inject


def sandbox_503(seconds: float) -> Callable[[DrillRun], dict[str, Any]]:
    def inject(run: DrillRun) -> dict[str, Any]:
        run.sandbox.configure(force_status=503, force_count=10**9)
        time.sleep(seconds)
        run.sandbox.configure(force_count=0)
        return {"503_for_s": seconds}

    return inject


def sandbox_hang(share: float, seconds: float) -> Callable[[DrillRun], dict[str, Any]]:
    def inject(run: DrillRun) -> dict[str, Any]:
        run.sandbox.configure(hang_rate=share, hang_seconds=10)
        time.sleep(seconds)
        run.sandbox.configure(hang_rate=0)
        return {"hang_share": share, "for_s": seconds, "client_read_timeout_s": 3}

    return inject


def drills_all(quick: bool) -> list[Drill]:
    outage = 60.0 if quick else 300.0
    return [
        Drill("kill9_children", "kill -9 of the workers' pool children (x2)", kill9_children),
        Drill("kill9_main", "kill -9 of a worker's main process (and children)", kill9_main),
        Drill("broker_restart", "Redis broker SHUTDOWN NOSAVE, back after 10 s", broker_restart),
        Drill("pg_restart_fast", "PostgreSQL restart -m fast", pg_restart("fast")),
        Drill(
            "pg_restart_immediate",
            "PostgreSQL restart -m immediate (crash)",
            pg_restart("immediate"),
        ),
        Drill(
            "sandbox_503",
            f"Intercom answers 503 for {outage:g} s",
            sandbox_503(outage),
            settle=outage + 240,
        ),
        Drill(
            "hang_20",
            "20 % of Intercom calls hang past the 3 s client timeout (20 s)",
            sandbox_hang(0.2, 20),
        ),
        Drill(
            "retry_window",
            "Intercom 503 for 40 s, sync retry window 15 s",
            sandbox_503(40),
            sync={"retry_window": timedelta(seconds=15)},
            settle=200,
        ),
    ]


def drill_run(drill: Drill, *, pg: PrivatePostgres) -> dict[str, Any]:
    run = DrillRun(drill, pg=pg)
    try:
        fault = run.feed(during=lambda: drill.inject(run))
        outcome = run.settle()
    finally:
        run.close()
    outcome["in_flight_at_fault"] = fault.get("in_flight_at_fault", 0)
    # What a killed process may have sent without recording it: its leased lanes' heads, or the
    # attempts it left unfinished.
    outcome["in_flight"] = max(outcome["in_flight_at_fault"], outcome["in_flight_attempts_left"])
    return {"fault": drill.fault, "injected": fault, **outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 503 outage lasts 60 s, not 5 min")
    parser.add_argument("--only", default="", help="comma-separated drill names")
    args = parser.parse_args()
    wanted = {x for x in args.only.split(",") if x}
    results: dict[str, Any] = {}
    # One private cluster for the run (Django in this process keeps its address); each drill
    # gets a fresh database in it.
    pg = PrivatePostgres()
    pg.start()
    try:
        for drill in drills_all(args.quick):
            if wanted and drill.name not in wanted:
                continue
            print(f"drill {drill.name}: {drill.fault}", flush=True)
            try:
                results[drill.name] = drill_run(drill, pg=pg)
            except Exception as exc:  # a drill that breaks the harness is reported; others run
                results[drill.name] = {
                    "fault": drill.fault,
                    "error": f"{type(exc).__name__}: {exc}",
                }
            print(f"  {results[drill.name]}", flush=True)
    finally:
        pg.stop()
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append([name, r["error"][:60], "", "", "", "", "", "", ""])
            continue
        rows.append(
            [
                name,
                r["accepted"],
                r["refused"],
                r["delivered"],
                r["expired_or_failed"],
                r["lost"],
                r["duplicates"],
                r.get("in_flight", r["in_flight_attempts_left"]),
                r["order_violations"],
            ]
        )
    table_print(
        "Fault drills (calls over HTTP; lost = accepted, not delivered, not visibly expired/failed)",
        [
            "drill",
            "accepted",
            "refused",
            "delivered",
            "expired/failed",
            "lost",
            "dups",
            "in flight",
            "order",
        ],
        rows,
    )
    if wanted:
        # A partial run updates its drills in the recorded results and keeps the others.
        previous = RESULTS / f"{NAME}{'.quick' if args.quick else ''}.json"
        if previous.exists():
            kept = json.loads(previous.read_text())["figures"]
            kept.pop("all_invariants_held", None)
            results = {**kept, **results}
    ok = all(
        "error" not in r
        and r["lost"] == 0
        and r["duplicates"] <= r.get("in_flight", r["in_flight_attempts_left"])
        and r["order_violations"] == 0
        for r in results.values()
    )
    result_write(
        NAME,
        quick=args.quick,
        config={
            "worker_settings": DRILL_SETTINGS,
            "workers": "2 x prefork 3 + beat",
            "gunicorn": {"workers": 2, "threads": 4},
            "sandbox_latency_ms": 20,
            "drills": list(results),
        },
        figures={**results, "all_invariants_held": ok},
    )


if __name__ == "__main__":
    main()
