"""The sandbox's HTTP face: routing, auth, rate limit, fault injection and the control endpoint.

A stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 keep-alive: one thread per connection, and
injected latency is a sleep, so 64 keep-alive connections at 80 ms cost no CPU while waiting.
Every answer is written with a single ``sendall`` (headers and body together): two small writes
would meet Nagle's algorithm and the peer's delayed ACK and add ~40 ms per request.

Control endpoint (no token, no latency, no rate limit; see docs/intercom-http.md):
``POST /_sandbox/config`` (JSON of ``SandboxConfig`` fields; answers the whole config),
``POST /_sandbox/reset`` (data, log and config back to the start), ``GET /_sandbox/requests``
(``?since=<seq>``), ``GET /_sandbox/state``.

Over our usual ~400 lines: the HTTP side of the sandbox (routing, auth, latency, rate limit,
fault injection, the control endpoint), kept apart from the workspace's data.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from integrations.intercom.sandbox.oauth import SandboxOAuth
from integrations.intercom.sandbox.workspace import Answer, Workspace, error

# The log keeps the most recent requests only, so a long benchmark cannot exhaust memory.
REQUEST_LOG_LIMIT = 100_000
WINDOW_HISTORY = 720  # two hours of 10-second windows
WINDOW_SECONDS = 10


@dataclass
class SandboxConfig:
    """Everything a test or benchmark can tune, by flag or by ``POST /_sandbox/config``."""

    token: str = "sandbox-token"
    latency_ms: float = 0.0
    error_rate: float = 0.0  # share of API requests answered 500/502/503
    hang_rate: float = 0.0  # share of API requests that never answer (until hang_seconds)
    hang_seconds: float = 60.0
    rate_limit: int = 0  # requests per 10-second window; 0 = the workspace default below
    # Intercom sends X-RateLimit-* on every authenticated answer, limit or not. Its documented
    # default (10,000 a minute per app, ~1,666 a window) would throttle the delivery benchmarks,
    # which measure Switchboard, not Intercom's budget: the sandbox's default window is far
    # above anything a test machine can send, yet announced like Intercom's. 0 = no limit and
    # no headers (a proxy that strips them).
    default_rate_limit: int = 1_000_000
    search_lag_seconds: float = 0.0
    event_name_limit: int = 120
    # The next ``force_count`` API requests (optionally only those whose path starts with
    # ``force_path`` and whose method is ``force_method``) answer ``force_status``.
    force_status: int = 0
    force_count: int = 0
    force_path: str = ""
    force_method: str = ""
    # The public app that Connect to Intercom authorises (sandbox/oauth.py).
    oauth_client_id: str = "sandbox-client-id"
    oauth_client_secret: str = "sandbox-client-secret"

    def update(self, values: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown sandbox setting(s): {', '.join(sorted(unknown))}")
        for name, value in values.items():
            current = getattr(self, name)
            setattr(self, name, type(current)(value))


FORCED_ERRORS = {
    400: ("parameter_invalid", "Forced by the sandbox"),
    401: ("unauthorized", "Access Token Invalid"),
    403: ("forbidden", "Forced by the sandbox"),
    404: ("not_found", "Resource Not Found"),
    408: ("request_timeout", "Request Timeout"),
    409: ("conflict", "Forced by the sandbox"),
    422: ("parameter_invalid", "Forced by the sandbox"),
    429: ("rate_limit_exceeded", "Exceeded rate limit of requests per window"),
    500: ("server_error", "Internal Server Error"),
    502: ("bad_gateway", "Bad Gateway"),
    503: ("service_unavailable", "Service Unavailable"),
    504: ("gateway_timeout", "Gateway Timeout"),
}

_CONTACT = r"(?P<contact_id>[^/]+)"


class SandboxCore:
    """The state behind one sandbox server: workspace, config, request log, rate window."""

    def __init__(self, config: SandboxConfig) -> None:
        self.initial = SandboxConfig(**asdict(config))
        self.config = config
        self.lock = threading.Lock()
        self.workspace = Workspace(search_lag_seconds=config.search_lag_seconds)
        self.workspace.event_name_limit = config.event_name_limit
        self.log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_LIMIT)
        self.oauth = SandboxOAuth(config.oauth_client_id, config.oauth_client_secret)
        self.seq = 0
        self.generation = 0  # bumped by reset: requests begun before it are not logged after
        self.window = 0
        self.window_count = 0
        # Per 10-second window (its start, epoch s): authorized requests answered vs refused 429.
        self.windows: dict[int, dict[str, int]] = {}
        # Set on reset/stop so hanging requests end instead of holding threads.
        self.release = threading.Event()
        self.routes: list[tuple[str, re.Pattern[str], Any]] = [
            ("GET", re.compile(r"/me"), lambda m, q, b: self.workspace.me()),
            ("POST", re.compile(r"/contacts"), lambda m, q, b: self.workspace.contact_create(b)),
            (
                "POST",
                re.compile(r"/contacts/search"),
                lambda m, q, b: self.workspace.contact_search(b),
            ),
            (
                "POST",
                re.compile(r"/contacts/merge"),
                lambda m, q, b: self.workspace.contact_merge(b),
            ),
            (
                "GET",
                re.compile(r"/contacts/find_by_external_id/(?P<external_id>.+)"),
                lambda m, q, b: self.workspace.contact_find_by_external_id(
                    unquote(m["external_id"])
                ),
            ),
            (
                "GET",
                re.compile(rf"/contacts/{_CONTACT}"),
                lambda m, q, b: self.workspace.contact_get(m["contact_id"]),
            ),
            (
                "PUT",
                re.compile(rf"/contacts/{_CONTACT}"),
                lambda m, q, b: self.workspace.contact_update(m["contact_id"], b),
            ),
            (
                "DELETE",
                re.compile(rf"/contacts/{_CONTACT}"),
                lambda m, q, b: self.workspace.contact_delete(m["contact_id"]),
            ),
            (
                "POST",
                re.compile(rf"/contacts/{_CONTACT}/archive"),
                lambda m, q, b: self.workspace.contact_archive(m["contact_id"], True),
            ),
            (
                "POST",
                re.compile(rf"/contacts/{_CONTACT}/unarchive"),
                lambda m, q, b: self.workspace.contact_archive(m["contact_id"], False),
            ),
            (
                "POST",
                re.compile(rf"/contacts/{_CONTACT}/companies"),
                lambda m, q, b: self.workspace.company_attach(m["contact_id"], b),
            ),
            (
                "DELETE",
                re.compile(rf"/contacts/{_CONTACT}/companies/(?P<company_id>[^/]+)"),
                lambda m, q, b: self.workspace.company_detach(m["contact_id"], m["company_id"]),
            ),
            (
                "POST",
                re.compile(rf"/contacts/{_CONTACT}/tags"),
                lambda m, q, b: self.workspace.contact_tag_add(m["contact_id"], b),
            ),
            (
                "DELETE",
                re.compile(rf"/contacts/{_CONTACT}/tags/(?P<tag_id>[^/]+)"),
                lambda m, q, b: self.workspace.contact_tag_remove(m["contact_id"], m["tag_id"]),
            ),
            ("POST", re.compile(r"/companies"), lambda m, q, b: self.workspace.company_upsert(b)),
            ("GET", re.compile(r"/companies"), self._companies_get),
            ("POST", re.compile(r"/events"), lambda m, q, b: self.workspace.event_create(b)),
            (
                "GET",
                re.compile(r"/data_attributes"),
                lambda m, q, b: self.workspace.attribute_list(q.get("model")),
            ),
            (
                "POST",
                re.compile(r"/data_attributes"),
                lambda m, q, b: self.workspace.attribute_create(b),
            ),
            ("POST", re.compile(r"/tags"), lambda m, q, b: self.workspace.tag_create(b)),
            ("GET", re.compile(r"/tags"), lambda m, q, b: self.workspace.tag_list()),
        ]

    def _companies_get(self, match: Any, query: dict[str, str], body: Any) -> Answer:
        if query.get("company_id"):
            return self.workspace.company_find(query["company_id"])
        return self.workspace.company_list()

    # --- control --------------------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.release.set()
            self.release = threading.Event()
            self.config.__dict__.update(asdict(self.initial))
            self.workspace = Workspace(search_lag_seconds=self.config.search_lag_seconds)
            self.workspace.event_name_limit = self.config.event_name_limit
            self.log.clear()
            self.oauth.reset()
            self.oauth.client_id = self.config.oauth_client_id
            self.oauth.client_secret = self.config.oauth_client_secret
            self.generation += 1
            self.window = 0
            self.window_count = 0
            self.windows = {}

    def configure(self, values: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.config.update(values)
            self.oauth.client_id = self.config.oauth_client_id
            self.oauth.client_secret = self.config.oauth_client_secret
            self.workspace.search_lag_seconds = self.config.search_lag_seconds
            self.workspace.event_name_limit = self.config.event_name_limit
            return asdict(self.config)

    def requests_since(self, since: int) -> list[dict[str, Any]]:
        with self.lock:
            return [entry for entry in self.log if entry["seq"] > since]

    def state(self) -> dict[str, Any]:
        with self.lock:
            snapshot = self.workspace.snapshot()
            snapshot["counts"]["requests"] = len(self.log)
            snapshot["windows"] = [
                {"start": start, **counts} for start, counts in sorted(self.windows.items())
            ]
            return snapshot

    # --- one API request ------------------------------------------------------------------

    def decide(
        self, method: str, path: str, headers: Any
    ) -> tuple[Answer | None, str, dict[str, str]]:
        """Auth, rate limit and faults, before routing: (answer or None, fault, rate headers)."""
        config = self.config
        rate_headers: dict[str, str] = {}
        with self.lock:
            if headers.get("Authorization") != f"Bearer {config.token}":
                return error(401, "unauthorized", "Access Token Invalid"), "", {}
            window = int(time.time() // WINDOW_SECONDS)
            if window != self.window:
                self.window, self.window_count = window, 0
                if len(self.windows) >= WINDOW_HISTORY:
                    del self.windows[min(self.windows)]
            self.window_count += 1
            stats = self.windows.setdefault(
                window * WINDOW_SECONDS, {"requests": 0, "rate_limited": 0}
            )
            limit = config.rate_limit or config.default_rate_limit
            if limit:
                remaining = max(limit - self.window_count, 0)
                rate_headers = {
                    "X-RateLimit-Limit": str(limit),
                    "X-RateLimit-Remaining": str(remaining),
                    "X-RateLimit-Reset": str((window + 1) * WINDOW_SECONDS),
                }
                if self.window_count > limit:
                    stats["rate_limited"] += 1
                    return (
                        error(
                            429,
                            "rate_limit_exceeded",
                            "You have exceeded the rate limit. Please try again later.",
                            rate_headers,
                        ),
                        "",
                        rate_headers,
                    )
            stats["requests"] += 1
            if (
                config.force_count > 0
                and path.startswith(config.force_path)
                and (not config.force_method or config.force_method.upper() == method)
            ):
                config.force_count -= 1
                code, message = FORCED_ERRORS.get(
                    config.force_status, ("error", f"Forced status {config.force_status}")
                )
                return error(config.force_status, code, message, rate_headers), "forced", {}
        if config.hang_rate and random.random() < config.hang_rate:
            return None, "hang", {}
        if config.error_rate and random.random() < config.error_rate:
            status = random.choice((500, 502, 503))
            code, message = FORCED_ERRORS[status]
            return error(status, code, message, rate_headers), "error", {}
        return None, "", rate_headers

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        path_known = False
        for route_method, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            path_known = True
            if route_method == method:
                with self.lock:
                    return handler(match, query, body)
        if path_known:
            return error(405, "method_not_allowed", f"{method} is not allowed on {path}")
        return error(404, "not_found", f"No route for {method} {path}")

    def record(self, entry: dict[str, Any], generation: int) -> None:
        with self.lock:
            if generation != self.generation:
                return
            self.seq += 1
            entry["seq"] = self.seq
            self.log.append(entry)


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "IntercomSandbox/1"
    sys_version = ""
    disable_nagle_algorithm = True
    server: SandboxHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence per-request stderr lines: the request log is GET /_sandbox/requests."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        if payload:
            lines.append("Content-Type: application/json; charset=utf-8")
        lines.append(f"Content-Length: {len(payload)}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + payload)

    def _send_raw(
        self, status: int, content_type: str, payload: bytes, headers: dict[str, str]
    ) -> None:
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(payload)}")
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + payload)

    def _handle(self) -> None:
        core = self.server.core
        method = self.command
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
                body = raw.decode("utf-8", "replace")

        if path.startswith("/_sandbox/"):
            self._control(core, method, path, query, body)
            return
        if core.oauth.handles(path):
            status, content_type, payload, headers = core.oauth.handle(
                method, path, query, raw, core.config.token
            )
            self._send_raw(status, content_type, payload, headers)
            return

        started = time.time()
        generation = core.generation
        answer, fault, rate_headers = core.decide(method, path, self.headers)
        release = core.release
        if core.config.latency_ms:
            # The latency is the whole answer time as the client sees it, processing included.
            time.sleep(max(core.config.latency_ms / 1000 - (time.time() - started), 0))
        if fault == "hang":
            release.wait(core.config.hang_seconds)
            self._record(core, generation, method, parts, body, raw, 0, started, "hang")
            self.close_connection = True
            return
        if answer is None:
            if bad_json:
                answer = error(400, "parameter_invalid", "The request body is not valid JSON")
            elif method in ("POST", "PUT") and raw and not isinstance(body, dict):
                answer = error(400, "parameter_invalid", "The request body must be an object")
            else:
                answer = core.route(method, path, query, body if isinstance(body, dict) else {})
        status, payload, headers = answer
        headers = {**rate_headers, **headers}
        self._record(core, generation, method, parts, body, raw, status, started, fault)
        self._send(status, payload, headers)

    def _record(
        self,
        core: SandboxCore,
        generation: int,
        method: str,
        parts: Any,
        body: Any,
        raw: bytes,
        status: int,
        started: float,
        fault: str,
    ) -> None:
        core.record(
            {
                "time": started,
                "method": method,
                "path": parts.path,
                "query": parts.query,
                "headers": {k: v for k, v in self.headers.items() if k.lower() != "authorization"},
                "auth_scheme": (self.headers.get("Authorization") or "").partition(" ")[0],
                "authorized": self.headers.get("Authorization") == f"Bearer {core.config.token}",
                "body": body,
                "raw_body": raw.decode("utf-8", "replace"),
                "status": status,
                "fault": fault,
            },
            generation,
        )

    def _control(
        self, core: SandboxCore, method: str, path: str, query: dict[str, str], body: Any
    ) -> None:
        if method == "POST" and path == "/_sandbox/config":
            try:
                self._send(200, core.configure(body or {}))
            except (ValueError, TypeError) as exc:
                self._send(400, {"error": str(exc)})
        elif method == "POST" and path == "/_sandbox/reset":
            core.reset()
            self._send(200, {"reset": True})
        elif method == "GET" and path == "/_sandbox/requests":
            since = int(query.get("since") or 0)
            self._send(200, {"requests": core.requests_since(since)})
        elif method == "GET" and path == "/_sandbox/state":
            self._send(200, core.state())
        elif method == "GET" and path == "/_sandbox/oauth":
            self._send(200, {"oauth": core.oauth.snapshot()})
        elif method == "GET" and path == "/_sandbox/config":
            self._send(200, asdict(core.config))
        else:
            self._send(404, {"error": f"no control endpoint {method} {path}"})


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], core: SandboxCore) -> None:
        self.core = core
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, SandboxHandler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.discard(request)

    def close_connections(self) -> None:
        """Drop idle keep-alive connections so their threads end with the server."""
        with self.connections_lock:
            for connection in list(self.connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
