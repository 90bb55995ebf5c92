"""What every benchmark and drill shares: the stack it runs (PostgreSQL database, Redis, the
Intercom sandbox, gunicorn, Celery workers, all as real processes), load generators, the
statistics, the profiler, and the result file.

Defaults (overridable by environment): ``BENCH_DATABASE_URL`` postgres://postgres@127.0.0.1:5432/
sb_bench, ``BENCH_REDIS_URL`` redis://127.0.0.1:6379/7 (cache and rate limiter) and
``BENCH_BROKER_URL`` redis://127.0.0.1:6379/8 (Celery). The database is dropped, created and
migrated by each script; the two Redis databases are flushed. Every process a script starts is
in its own process group and is ended when the script exits, whatever happens.

Over our usual ~400 lines: it is the one toolbox every bench script shares (the processes of a
stack, load generators, percentiles, profiles, result files), so that each script reads as
its measurement alone.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# The calls that say which they are and the verdict on what reached the sandbox are shared with
# the tests' drills; re-exported for the benchmarks, which judge a run the same way.
from faults import Sent as Sent
from faults import call_identify as call_identify
from faults import call_track as call_track
from faults import sandbox_verdict as sandbox_verdict

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
# Each script adds its own suffix: sb_bench_b1, sb_bench_b2, ... sb_bench_drills.
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/sb_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/8")
SANDBOX_TOKEN = "bench-sandbox-token"
QUEUE = "sb-bench"


# --- the machine and the revision ---------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    load = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{rev}{'-dirty' if dirty else ''}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- results --------------------------------------------------------------------------------


def table_print(title: str, headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    rows = [[_cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def result_write(
    name: str, *, quick: bool, config: dict[str, Any], figures: Any, **extra: Any
) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}{'.quick' if quick else ''}.json"
    document = {
        "benchmark": name,
        "quick": quick,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "machine": machine_info(),
        "configuration": config,
        "figures": figures,
        **extra,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"-> {path.relative_to(ROOT)}", flush=True)
    return path


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else 0.0


# --- processes ------------------------------------------------------------------------------

_started: list[subprocess.Popen[bytes]] = []


def _end_all() -> None:
    for process in reversed(_started):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in reversed(_started):
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


atexit.register(_end_all)


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def spawn(
    command: list[str], *, env: dict[str, str], log: Path, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """Start a process in its own group (so that ending it ends its children), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _started.append(process)
    return process


def stop(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 15
) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    if process in _started:
        _started.remove(process)


def wait_for(
    predicate: Callable[[], bool], *, timeout: float, what: str, every: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)


def log_dir(name: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"sb-bench-{name}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- the stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    """The environment of one benchmark: database, Redis, queue, and the processes it runs."""

    name: str
    database_url: str = ""
    redis_url: str = REDIS_URL
    broker_url: str = BROKER_URL
    queue: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        # A script stopped with SIGTERM still ends the processes it started (atexit).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _on_signal)
        self.logs = log_dir(self.name)
        # A database and a queue per script. The Redis databases are shared: the limiter's keys
        # are per destination id, so two scripts must not run at once (run_all runs them in turn).
        short = self.name.split("_")[0]
        self.database_url = self.database_url or f"{DATABASE_URL}_{short}"
        self.queue = self.queue or f"{QUEUE}-{short}"

    def environment(self, **extra: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "BENCH_"))}
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "CELERY_BROKER_URL": self.broker_url,
                "SWITCHBOARD_QUEUE": self.queue,
                "SWITCHBOARD_VAR_DIR": str(self.logs),
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "CELERY_TASK_ALWAYS_EAGER": "false",
                "PYTHONUNBUFFERED": "1",
                "LOG_LEVEL": "WARNING",
            }
        )
        env.update(self.settings)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    # The database and Redis --------------------------------------------------------------

    def database_reset(self) -> None:
        """Drop, create and migrate the benchmark database (never any other)."""
        import psycopg

        parts = urlsplit(self.database_url)
        name = parts.path.lstrip("/")
        if not name.startswith("sb_bench"):
            raise SystemExit(f"refusing to drop {name!r}: benchmark databases are sb_bench*")
        admin = self.database_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=ROOT,
            env=self.environment(),
            check=True,
        )

    def redis_flush(self) -> None:
        import redis

        for url in {self.redis_url, self.broker_url}:
            if url.startswith("redis://"):
                redis.Redis.from_url(url).flushdb()

    def django(self) -> None:
        """Set up Django in this process against the stack (once per process)."""
        os.environ.update(self.environment())
        import django
        from django.conf import settings

        if not settings.configured or not getattr(self, "_django_ready", False):
            django.setup()
            self._django_ready = True

    # Processes -----------------------------------------------------------------------------

    def sandbox_start(self, **config: Any) -> Sandbox:
        """The Intercom sandbox as its own process (its threads must not share our GIL)."""
        log = self.logs / f"sandbox-{uuid.uuid4().hex[:6]}.log"
        port = free_port()
        command = [
            PYTHON,
            "manage.py",
            "intercom_sandbox",
            "--port",
            str(port),
            "--token",
            SANDBOX_TOKEN,
        ]
        process = spawn(command, env=self.environment(), log=log)
        sandbox = Sandbox(url=f"http://127.0.0.1:{port}", process=process)
        wait_for(sandbox.up, timeout=30, what=f"the sandbox ({log})")
        if config:
            sandbox.configure(**config)
        return sandbox

    def gunicorn_start(self, *, workers: int = 3, threads: int = 4, **env: Any) -> Web:
        port = free_port()
        log = self.logs / f"gunicorn-{port}.log"
        command = [
            PYTHON, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}",
            "-w", str(workers), "--threads", str(threads), "--backlog", "2048",
            "--keep-alive", "30", "--log-level", "warning",
        ]  # fmt: skip
        process = spawn(command, env=self.environment(**env), log=log)
        web = Web(url=f"http://127.0.0.1:{port}", process=process, log=log)
        wait_for(web.up, timeout=60, what=f"gunicorn ({log})")
        return web

    def workers_start(
        self,
        count: int = 1,
        *,
        pool: str | None = "threads",
        concurrency: int | None = 16,
        beat: bool = False,
        app: str = "config",
        queue: str | None = None,
        **env: Any,
    ) -> list[subprocess.Popen[bytes]]:
        """``count`` real ``celery -A <app> worker`` processes; waits until each consumes.

        ``pool`` or ``concurrency`` None: that flag is left out (the settings' default applies)."""
        started = []
        queue = queue or self.queue
        for index in range(count):
            tag = uuid.uuid4().hex[:6]
            log = self.logs / f"worker-{app}-{tag}.log"
            command = [
                PYTHON, "-m", "celery", "-A", app, "worker",
                *([f"--pool={pool}"] if pool else []),
                *([f"--concurrency={concurrency}"] if concurrency else []),
                "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-Q", queue, "-n", f"w{index}-{tag}@%h", "--loglevel=INFO",
            ]  # fmt: skip
            if beat and index == 0:
                command += ["-B", "-s", str(self.logs / f"beat-{tag}")]
            process = spawn(command, env=self.environment(**env), log=log)
            process.log = log  # type: ignore[attr-defined]
            started.append(process)
        for process in started:
            wait_for(
                lambda p=process: b" ready." in p.log.read_bytes() or p.poll() is not None,
                timeout=60,
                what=f"a worker ({process.log})",
            )
            if process.poll() is not None:
                raise RuntimeError(f"worker died:\n{process.log.read_text()[-3000:]}")
        return started


@dataclass
class Web:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def up(self) -> bool:
        try:
            conn = http.client.HTTPConnection(
                urlsplit(self.url).hostname, urlsplit(self.url).port, timeout=2
            )
            conn.request("GET", "/v1/track")
            conn.getresponse().read()
            conn.close()
            return True
        except OSError:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn died:\n{self.log.read_text()[-3000:]}") from None
            return False

    def pids(self) -> list[int]:
        """The gunicorn arbiter's worker processes (the ones that serve requests)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return [int(x) for x in out.split()]


@dataclass
class Sandbox:
    """A sandbox process and its control endpoint."""

    url: str
    process: subprocess.Popen[bytes] | None = None

    def _call(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
        conn.close()
        return json.loads(data) if data else None

    def up(self) -> bool:
        try:
            self._call("GET", "/_sandbox/config", timeout=2)
            return True
        except OSError:
            return False

    def configure(self, **values: Any) -> dict[str, Any]:
        return self._call("POST", "/_sandbox/config", values)

    def reset(self) -> None:
        self._call("POST", "/_sandbox/reset", {})

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", f"/_sandbox/requests?since={since}")["requests"]

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_sandbox/state")

    def contacts_create(self, users: Iterable[str], *, threads: int = 16) -> None:
        """Users that already exist in the workspace (so that events need one call each)."""
        users = list(users)
        pool = HttpPool(
            self.url,
            headers={
                "Authorization": f"Bearer {SANDBOX_TOKEN}",
                "Content-Type": "application/json",
                "Intercom-Version": "2.16",
                "Accept": "application/json",
            },
        )

        def create(user: str) -> None:
            status, _ = pool.request(
                "POST",
                "/contacts",
                json.dumps({"role": "user", "external_id": user, "email": f"{user}@example.com"}),
            )
            if status not in (200, 409):
                raise RuntimeError(f"sandbox refused contact {user}: {status}")

        threads_run(threads, users, create)


# --- HTTP load ------------------------------------------------------------------------------


class HttpPool:
    """Keep-alive connections, one per thread, for a load generator (http.client: cheap)."""

    def __init__(
        self, base_url: str, *, headers: dict[str, str] | None = None, timeout: float = 30
    ) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.headers = headers or {}
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def request(self, method: str, path: str, body: bytes | str | None = None) -> tuple[int, bytes]:
        """(status, body); status 0 when the connection failed (after one reconnect)."""
        for attempt in range(2):
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=self.headers)
                answer = conn.getresponse()
                data = answer.read()
                if answer.getheader("Connection", "").lower() == "close":
                    conn.close()
                    self._local.conn = None
                return answer.status, data
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:
                    return 0, b""
        return 0, b""


def basic_auth(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def threads_run(count: int, items: Iterable[Any], work: Callable[[Any], None]) -> None:
    """Run ``work`` over ``items`` on ``count`` threads; re-raise the first error."""
    items = iter(list(items))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def loop() -> None:
        while not errors:
            with lock:
                item = next(items, None)
            if item is None:
                return
            try:
                work(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                errors.append(exc)

    pool = [threading.Thread(target=loop, daemon=True) for _ in range(count)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]


@dataclass
class LoadResult:
    """What a load run saw: one (started, seconds, status) per request."""

    samples: list[tuple[float, float, int]]
    elapsed: float

    def ok(self) -> list[tuple[float, float, int]]:
        return [s for s in self.samples if s[2] == 200]

    def summary(self, *, per_request: int = 1) -> dict[str, Any]:
        ok = self.ok()
        latencies = [s[1] * 1000 for s in ok]
        return {
            "requests": len(self.samples),
            "ok": len(ok),
            "errors": dict(Counter(s[2] for s in self.samples if s[2] != 200)),
            "seconds": round(self.elapsed, 2),
            "calls_per_s": round(len(ok) / self.elapsed, 1) if self.elapsed else 0,
            "events_per_s": round(len(ok) * per_request / self.elapsed, 1) if self.elapsed else 0,
            "p50_ms": round(percentile(latencies, 0.50), 1),
            "p95_ms": round(percentile(latencies, 0.95), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1),
        }


def closed_loop(
    pool: HttpPool,
    *,
    concurrency: int,
    seconds: float,
    request: Callable[[int, int], tuple[str, str, bytes]],
    warmup: float = 1.0,
) -> LoadResult:
    """``concurrency`` threads each sending the next request as soon as the last answered.

    ``request(thread, n)`` builds (method, path, body). The first ``warmup`` seconds are sent
    but not counted (connections, caches, JIT-less Python warming its imports).
    """
    samples: list[tuple[float, float, int]] = []
    lock = threading.Lock()
    start = time.perf_counter()
    count_from = start + warmup
    stop_at = count_from + seconds

    def loop(thread: int) -> None:
        n = 0
        mine = []
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                break
            method, path, body = request(thread, n)
            status, _ = pool.request(method, path, body)
            took = time.perf_counter() - began
            if began >= count_from:
                mine.append((began, took, status))
            n += 1
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Rates are per second of the counted window (requests that began inside it).
    return LoadResult(samples, seconds)


def open_loop(
    pool: HttpPool,
    *,
    rate: float,
    seconds: float,
    request: Callable[[int], tuple[str, str, bytes]],
    threads: int = 16,
    on_answer: Callable[[int, int, bytes], None] | None = None,
) -> LoadResult:
    """Requests at a steady ``rate`` per second for ``seconds`` whatever the answers' speed
    (open loop: a slow server makes requests queue, as real clients do)."""
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    samples: list[tuple[float, float, int]] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def loop() -> None:
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            method, path, body = request(n)
            began = time.perf_counter()
            status, data = pool.request(method, path, body)
            took = time.perf_counter() - began
            if on_answer is not None:
                on_answer(n, status, data)
            with lock:
                samples.append((began, took, status))

    pool_threads = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for t in pool_threads:
        t.start()
    for t in pool_threads:
        t.join()
    return LoadResult(samples, time.perf_counter() - start)


# --- the product's configuration ------------------------------------------------------------


@dataclass
class Setup:
    write_key: str
    source_id: int
    destination_id: int
    sync_id: int


def switchboard_setup(*, sandbox_url: str, **sync_fields: Any) -> Setup:
    """A source with a write key -> a sync -> a destination at the sandbox (Django must be set up)."""
    from integrations.models import Destination, Source, Sync
    from integrations.services import write_key_issue

    tag = uuid.uuid4().hex[:6]
    source = Source.objects.create(name=f"bench-{tag}", kind=Source.Kind.HTTP)
    _, key = write_key_issue(source=source, label="bench")
    destination = Destination.objects.create(
        name=f"sandbox-{tag}",
        region=Destination.Region.CUSTOM,
        base_url=sandbox_url,
        access_token=SANDBOX_TOKEN,
    )
    sync = Sync.objects.create(name=f"bench-{tag}", destination=destination, **sync_fields)
    sync.sources.set([source])
    return Setup(write_key=key, source_id=source.pk, destination_id=destination.pk, sync_id=sync.pk)


def queued_messages(broker_url: str, queue: str) -> int:
    import redis

    return int(redis.Redis.from_url(broker_url).llen(queue))


# --- profiles -------------------------------------------------------------------------------


def py_spy_record(
    pids: list[int], *, seconds: float, out: Path, rate: int = 100
) -> list[subprocess.Popen[bytes]]:
    """Start py-spy on each process (collapsed stacks); join them with ``profile_wait``."""
    spy = str(Path(PYTHON).parent / "py-spy")
    procs = []
    for pid in pids:
        target = out.with_name(f"{out.stem}-{pid}.txt")
        command = [
            spy,
            "record",
            "--format",
            "raw",
            "--nonblocking",
            "-r",
            str(rate),
            "-d",
            str(int(seconds)),
            "-p",
            str(pid),
            "-o",
            str(target),
        ]
        procs.append(
            spawn(command, env=dict(os.environ), log=out.with_name(f"{out.stem}-{pid}.log"))
        )
    return procs


def profile_wait(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            stop(p)
        if p in _started:
            _started.remove(p)


_FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:]+)(?::(?P<line>\d+))?\)$")


def profile_summary(files: Iterable[Path], *, top: int = 15) -> dict[str, Any]:
    """Shares of samples from py-spy collapsed stacks (idle samples are dropped by py-spy).

    ``inclusive``: share of busy samples with this project function on the stack;
    ``self_by_area``: where the CPU actually is (leaf frame's package: psycopg, django.db, json...).
    """
    inclusive: Counter[str] = Counter()
    leaf_area: Counter[str] = Counter()
    leaf_function: Counter[str] = Counter()
    total = 0
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            seen = set()
            for frame in frames:
                match = _FRAME.match(frame.strip())
                if not match:
                    continue
                file = match["file"]
                rel = _project_path(file)
                if rel is None:
                    continue
                key = f"{rel}:{match['func']}"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += n
            leaf = _FRAME.match(frames[-1].strip()) if frames else None
            leaf_area[_area(leaf["file"]) if leaf else "?"] += n
            if leaf:
                leaf_function[f"{leaf['file']}:{leaf['func']}"] += n
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "inclusive": [(k, round(100 * v / total, 1)) for k, v in inclusive.most_common(top)],
        "self_by_area": [(k, round(100 * v / total, 1)) for k, v in leaf_area.most_common(top)],
        "self_by_function": [
            (k, round(100 * v / total, 1)) for k, v in leaf_function.most_common(top)
        ],
    }


def _project_path(file: str) -> str | None:
    # py-spy names files relative to their sys.path entry: "streaming/ingest.py".
    if file.startswith(PROJECT_PACKAGES):
        return file
    return None


PROJECT_PACKAGES = ("streaming/", "integrations/", "config/", "bench/")


def _area(file: str) -> str:
    """The library a leaf frame is in: django/db/models, psycopg, redis, json, socket..."""
    parts = file.split("/")
    if parts[0] in ("streaming", "integrations", "config", "bench"):
        return file
    if parts[0] == "django" and len(parts) > 2:
        return "/".join(parts[:3])
    if (
        parts[0] in ("rest_framework", "celery", "kombu", "requests", "urllib3", "gunicorn")
        and len(parts) > 1
    ):
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py")


def profile_print(title: str, summary: dict[str, Any]) -> None:
    if not summary.get("samples"):
        print(f"{title}: no samples", flush=True)
        return
    table_print(
        f"{title} ({summary['samples']} samples) — project functions, inclusive",
        ["function", "% of busy samples"],
        summary["inclusive"],
    )
    table_print(
        f"{title} — leaf frame by area (self time)",
        ["area", "% of busy samples"],
        summary["self_by_area"],
    )


@contextlib.contextmanager
def timed() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    yield lambda: time.perf_counter() - start


# --- what reached the sandbox ---------------------------------------------------------------


def window_counts(requests: list[dict[str, Any]], *, window: float = 10.0) -> dict[int, Counter]:
    """Per fixed window (aligned as the sandbox aligns them): count of requests by status."""
    windows: dict[int, Counter] = {}
    for entry in requests:
        windows.setdefault(int(entry["time"] // window), Counter())[int(entry["status"] or 0)] += 1
    return windows
