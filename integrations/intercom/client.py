"""The Intercom REST client: HTTP only.

One pooled ``requests.Session`` per client, reused across threads and calls. ``request`` never
raises for HTTP or network trouble: it returns a ``Result`` that the caller logs and hands to
``classify``, the single place that decides what is retryable. The access token lives only in the
session's headers; it is kept out of every ``repr``, log line and exception text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal, Protocol
from urllib.parse import urlencode

import requests
import requests.auth
from requests.adapters import HTTPAdapter

logger = logging.getLogger(__name__)

EXCERPT_LIMIT = 4096
# Many lane workers may share one destination's client in one process (threads or gevent).
POOL_SIZE = 128

try:
    _VERSION = metadata.version("switchboard")
except metadata.PackageNotFoundError:  # running from a checkout that was never installed
    _VERSION = "0.0.0"
USER_AGENT = f"switchboard/{_VERSION}"


@dataclass(frozen=True)
class RateLimit:
    """Intercom's X-RateLimit-* headers: calls allowed per window, left, and the reset (epoch s)."""

    limit: int
    remaining: int
    reset_at: int


@dataclass
class Result:
    """One HTTP exchange as the attempt log stores it (never the token)."""

    method: str
    url: str
    status: int | None
    body: Any
    excerpt: str
    duration_ms: int
    rate_limit: RateLimit | None = None
    network_error: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def verdict(self) -> Classification:
        """What this answer means for a retry (``classify``; a POST is taken as creating)."""
        return classify(self, creating=self.method == "POST")


class RateLimiter(Protocol):
    """Shared per-destination limiter (a Redis-backed one lives in the data plane)."""

    def acquire(self) -> None:
        """Called before each request; may block until the window has room."""

    def observe(self, rate_limit: RateLimit | None, status: int | None) -> None:
        """Called after each response with Intercom's headers (None on network errors)."""


# --- errors -------------------------------------------------------------------------------


class IntercomError(Exception):
    """An Intercom answer the executor cannot continue with. Carries what the attempt log shows."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str = "", excerpt: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.excerpt = excerpt

    def __str__(self) -> str:
        parts = [f"HTTP {self.status}" if self.status is not None else "no response"]
        if self.code:
            parts.append(self.code)
        parts.append(self.message)
        return ": ".join(parts)


class RetryableError(IntercomError):
    """Try again later (network, timeout, 408, 5xx, 409 on create, contact not there yet)."""


class PermanentError(IntercomError):
    """Sending the same thing again cannot succeed; the delivery fails with this reason."""


class AuthenticationError(PermanentError):
    """401: the token is wrong or revoked. The destination is held until the token changes."""


class RateLimitedError(RetryableError):
    """429: wait until ``reset_at`` (epoch seconds); this is not a failed try."""

    def __init__(self, message: str, *, reset_at: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reset_at = reset_at


# --- classification -----------------------------------------------------------------------

Kind = Literal["success", "retryable", "rate_limited", "permanent", "auth"]


@dataclass(frozen=True)
class Classification:
    kind: Kind
    code: str = ""
    message: str = ""


def error_details(result: Result) -> tuple[str, str]:
    """(code, message) of the first entry of Intercom's ``error.list`` envelope, if any."""
    body = result.body
    if isinstance(body, dict) and body.get("type") == "error.list":
        errors = body.get("errors") or []
        if errors and isinstance(errors[0], dict):
            return str(errors[0].get("code") or ""), str(errors[0].get("message") or "")
    return "", ""


def classify(result: Result, *, creating: bool = False) -> Classification:
    """Decide what a result means for a retry. ``creating``: the request was a POST that creates.

    409 on create is retryable because it means Intercom's search index has not caught up with a
    contact that does exist: the next attempt finds it (the executor also takes the id at once).
    """
    if result.status is None:
        return Classification("retryable", "network_error", result.network_error)
    code, message = error_details(result)
    status = result.status
    if 200 <= status < 300:
        return Classification("success")
    message = message or result.excerpt[:200] or f"HTTP {status}"
    if status == 401:
        return Classification("auth", code or "unauthorized", message)
    if status == 429:
        return Classification("rate_limited", code or "rate_limit_exceeded", message)
    if status == 408 or status >= 500 or (status == 409 and creating):
        return Classification("retryable", code, message)
    return Classification("permanent", code, message)


def error_for(result: Result, *, creating: bool = False) -> IntercomError:
    """The typed error for a non-success result (the executor raises it)."""
    verdict = classify(result, creating=creating)
    common = {"status": result.status, "code": verdict.code, "excerpt": result.excerpt}
    message = f"{result.method} {result.url}: {verdict.message}"
    if verdict.kind == "rate_limited":
        reset_at = result.rate_limit.reset_at if result.rate_limit else None
        return RateLimitedError(message, reset_at=reset_at, **common)
    if verdict.kind == "auth":
        return AuthenticationError(message, **common)
    if verdict.kind == "retryable":
        return RetryableError(message, **common)
    if verdict.kind == "success":
        raise ValueError("a successful result is not an error")
    return PermanentError(message, **common)


# --- the client ---------------------------------------------------------------------------


class _BearerAuth(requests.auth.AuthBase):
    """Adds the token per request, never from a ~/.netrc entry."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "<BearerAuth ***>"


def _rate_limit_parse(headers: Any) -> RateLimit | None:
    try:
        return RateLimit(
            limit=int(headers["X-RateLimit-Limit"]),
            remaining=int(headers["X-RateLimit-Remaining"]),
            reset_at=int(float(headers["X-RateLimit-Reset"])),
        )
    except (KeyError, TypeError, ValueError):
        return None


class IntercomClient:
    """HTTP to one Intercom workspace. Thread-safe: share one per destination per process."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        api_version: str,
        limiter: RateLimiter | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self.limiter = limiter
        self.timeout = (connect_timeout, read_timeout)
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.auth = _BearerAuth(token)
        # The environment's proxy and CA bundle settings, read once: left to requests, every
        # call scans the whole environment for them (a measurable share of a worker's CPU: docs/benchmarks.md).
        # The token being an explicit ``auth``, no ~/.netrc lookup is lost with trust_env.
        self._session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        self._session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        self._session.trust_env = False
        self._session.headers.update(
            {
                "Intercom-Version": api_version,
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            }
        )

    def __repr__(self) -> str:
        return f"<IntercomClient {self.base_url} version={self.api_version}>"

    @classmethod
    def from_destination(
        cls, destination: Any, *, limiter: RateLimiter | None = None
    ) -> IntercomClient:
        """The cached client of a Destination: one per destination, token, URL and timeouts."""
        from django.conf import settings

        token = destination.access_token
        timeouts = (
            settings.SWITCHBOARD_INTERCOM_CONNECT_TIMEOUT,
            settings.SWITCHBOARD_INTERCOM_READ_TIMEOUT,
        )
        key = (
            destination.pk,
            hashlib.sha256(token.encode()).hexdigest(),
            destination.api_base_url,
            destination.api_version,
            timeouts,
        )
        with _cache_lock:
            client = _clients.get(key)
            if client is None:
                client = cls(
                    base_url=destination.api_base_url,
                    token=token,
                    api_version=destination.api_version,
                    limiter=limiter,
                    connect_timeout=timeouts[0],
                    read_timeout=timeouts[1],
                )
                _clients[key] = client
            elif limiter is not None:
                # One limiter per destination: a fresh handle to it replaces the old one.
                client.limiter = limiter
            return client

    def url_for(self, path: str, params: dict[str, Any] | None = None) -> str:
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        return url

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Result:
        """Send one request. Never raises for HTTP or network errors."""
        url = self.url_for(path, params)
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        if self.limiter is not None:
            self.limiter.acquire()
        started = time.monotonic()
        try:
            response = self._session.request(method, url, data=data, timeout=self.timeout)
        except requests.Timeout as exc:
            result = self._network_result(method, url, started, f"timeout: {type(exc).__name__}")
        except requests.RequestException as exc:
            # The exception text names the URL and the reason, never the headers.
            result = self._network_result(
                method, url, started, f"{type(exc).__name__}: {_short(str(exc))}"
            )
        else:
            text = response.text
            try:
                parsed = json.loads(text) if text.strip() else None
            except ValueError:
                parsed = None
            result = Result(
                method=method,
                url=url,
                status=response.status_code,
                body=parsed,
                excerpt=text[:EXCERPT_LIMIT],
                duration_ms=int((time.monotonic() - started) * 1000),
                rate_limit=_rate_limit_parse(response.headers),
                headers={k: v for k, v in response.headers.items() if k.lower() == "link"},
            )
        if self.limiter is not None:
            self.limiter.observe(result.rate_limit, result.status)
        logger.debug(
            "intercom %s %s -> %s in %d ms",
            method,
            url,
            result.status if result.status is not None else result.network_error,
            result.duration_ms,
        )
        return result

    def _network_result(self, method: str, url: str, started: float, error: str) -> Result:
        return Result(
            method=method,
            url=url,
            status=None,
            body=None,
            excerpt="",
            duration_ms=int((time.monotonic() - started) * 1000),
            network_error=error,
        )

    def me(self) -> Result:
        """GET /me: the admin and workspace behind the token ("check connection")."""
        return self.request("GET", "/me")

    def close(self) -> None:
        self._session.close()


def _short(text: str) -> str:
    return text if len(text) <= 300 else text[:300] + "..."


_clients: dict[tuple[Any, ...], IntercomClient] = {}
_cache_lock = threading.Lock()
