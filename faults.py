"""What a fault drill needs wherever it runs: bench/drills.py (the long drills, over HTTP) and
tests/streaming/test_drills.py (the short ones, in CI) judge with the same code.

- ``call_identify`` / ``call_track``: calls that carry their messageId to Intercom (in the
  contact's name, in the event's metadata), so that the sandbox's request log says which call
  each request delivered;
- ``sandbox_verdict``: what ingest accepted against what the sandbox answered 2xx: delivered,
  duplicates, order violations;
- ``PrivateRedis``: a throw-away redis-server to break (no persistence: shutting it down loses
  every queued message).

It imports neither Django nor the project, so bench/ does not depend on tests/ nor the tests on
bench/.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

# --- calls that say which they are ----------------------------------------------------------

NAME_MARK = "bench-mid:"


def call_identify(user: str, mid: str) -> dict[str, Any]:
    """An identify whose messageId can be read back from what the sandbox received (the name)."""
    return {
        "type": "identify",
        "userId": user,
        "messageId": mid,
        "traits": {"email": f"{user}@example.com", "name": f"{NAME_MARK}{mid}"},
    }


def call_track(user: str, mid: str, seq: int, *, created_at: int) -> dict[str, Any]:
    """A track whose messageId travels as metadata (the sync sends all properties)."""
    return {
        "type": "track",
        "userId": user,
        "messageId": mid,
        "event": "Bench Event",
        "timestamp": datetime.fromtimestamp(created_at, UTC).isoformat(),
        "created_at": created_at,
        "properties": {"mid": mid, "seq": seq},
    }


def request_mid(entry: dict[str, Any]) -> str | None:
    """The messageId a sandbox request carries, if it is one of ours."""
    body = entry.get("body")
    if not isinstance(body, dict):
        return None
    if entry["path"] == "/events":
        metadata = body.get("metadata") or {}
        mid = metadata.get("mid")
        return str(mid) if mid is not None else None
    if entry["path"].startswith("/contacts") and entry["method"] in ("POST", "PUT"):
        name = body.get("name")
        if isinstance(name, str) and name.startswith(NAME_MARK):
            return name[len(NAME_MARK) :]
    return None


# --- the verdict ----------------------------------------------------------------------------


@dataclass
class Sent:
    """One accepted call: whose, which kind, its place in the user's ingest order."""

    user: str
    kind: str
    order: int


def sandbox_verdict(accepted: dict[str, Sent], requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Accepted vs what the sandbox answered 2xx: delivered, lost, duplicates, order violations.

    duplicates: 2xx requests for the same call beyond the first. Order (``Sent.order`` is the
    ingest order, e.g. the Event id): a user's call that first reached the sandbox before a call
    ingested earlier for the same user, or a track whose earlier identify never arrived.
    """
    first_ok: dict[str, int] = {}
    ok = Counter()
    received = Counter()
    answers: Counter[str] = Counter()
    for entry in sorted(requests, key=lambda e: e["seq"]):
        mid = request_mid(entry)
        if mid is None or mid not in accepted:
            continue
        received[mid] += 1
        answers[f"{entry['method']} {entry['path'].split('/')[1]} {entry.get('status')}"] += 1
        if 200 <= int(entry.get("status") or 0) < 300:
            ok[mid] += 1
            first_ok.setdefault(mid, entry["seq"])
    delivered = sum(1 for mid in accepted if ok[mid])
    duplicates = sum(max(ok[mid] - 1, 0) for mid in accepted)
    by_user: dict[str, list[tuple[int, str, str]]] = {}
    for mid, sent in accepted.items():
        by_user.setdefault(sent.user, []).append((sent.order, sent.kind, mid))
    violations = 0
    examples: list[list[tuple[str, str, int | None, int, int]]] = []
    for calls in by_user.values():
        calls.sort()
        # Every call must reach Intercom after all calls ingested before it for the same user;
        # a track whose earlier identify never arrived is out of order too.
        latest = -1
        identify_missing = False
        for _, kind, mid in calls:
            at = first_ok.get(mid)
            if at is None:
                identify_missing = identify_missing or kind == "identify"
                continue
            if at < latest or (kind == "track" and identify_missing):
                violations += 1
                if len(examples) < 5:
                    examples.append(
                        [(k, m, first_ok.get(m), ok[m], received[m]) for _, k, m in calls]
                    )
            latest = max(latest, at)
    return {
        "accepted": len(accepted),
        "delivered": delivered,
        "not_delivered": len(accepted) - delivered,
        "duplicates": duplicates,
        "order_violations": violations,
        "requests_for_accepted": sum(received.values()),
        "answers": dict(answers),
        # (kind, messageId, sandbox seq of its first 2xx, 2xx count, requests) of a user's calls
        "order_violation_examples": examples,
    }


# --- a broker to break ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A throw-away redis-server on a free port, logging to ``workdir``; it keeps nothing, so a
    shutdown or a kill loses every queued message. ``start()`` again serves the same port.

    Whatever happens to the drill, the server is killed when the process exits.
    """

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        atexit.register(self.kill)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        with open(self.workdir / f"redis-{self.port}.log", "ab") as log:
            self.process = subprocess.Popen(
                command,
                env=dict(os.environ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise TimeoutError("redis-server did not start") from None
                time.sleep(0.05)

    def shutdown_nosave(self) -> None:
        """SHUTDOWN NOSAVE: Redis's own clean stop, keeping nothing."""
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis.from_url(self.url).shutdown(nosave=True)
        if self.process is not None:
            self.process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: a crash, no clean-up at all."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
