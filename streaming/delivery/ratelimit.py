"""One rate limiter per Intercom destination, shared by every worker (DESIGN.md, invariant 4).

Intercom counts calls in windows (10 seconds for the per-app and per-workspace limits) and tells
each answer how many calls the current window allows (``X-RateLimit-Limit``), how many are left
(``X-RateLimit-Remaining``) and when it resets (``X-RateLimit-Reset``, Unix seconds). The headers
are the truth: some accounts have lower limits than the documented ones, so no constant is
assumed. Until a first answer has told us the limit, one call at a time goes out; answers
without the headers mean there is no limit.

The limiter counts, per window, the calls the workers have started. An answer's headers lower the
count of calls left (never raise it within a window) after subtracting the calls still in flight,
because Intercom has not counted those yet. A new window is only assumed ``RESET_GUARD`` seconds
after the announced reset, since the header has a whole-second resolution and a call sent early
would be counted in the old, spent window. With ``REDIS_URL`` the state lives in Redis and one Lua
script per call keeps it consistent across processes and machines (Redis's clock is the one
clock); without it (the embedded single-machine mode) it lives in the process.

A workspace whose answers carry no limit (a proxy) is not throttled at all, and paying two
scripts per call there for nothing was a fifth of a worker's time. There a process takes
``UNLIMITED_BATCH`` calls at once, for at most ``UNLIMITED_TOKENS_SECONDS``, and does not report
their answers unless one announces a window with fewer than ``BATCHED_ABOVE`` calls left or is a
429: then the spare calls are dropped and the script decides again. The same holds for a window
whose limit is far beyond what the workers can send (the sandbox's default, which announces
1,000,000 a window as Intercom announces its limit on every answer): while ``BATCHED_ABOVE``
calls or more are left, calls are taken in batches (taken off the window's count, not counted
in flight). Below that, and always at Intercom's real limits (about 1,666 a window for 10,000 a
minute), one script per call keeps the count exact. A batch's calls may still go out after
their window ended (a second at most), in the next one, uncounted there: the per-call answers
of that window's last ``BATCHED_ABOVE`` calls correct the count, and when a limit appears
where there was none, the calls already out can overshoot the first window; the 429s that
follow wait for the reset without counting a try.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

WINDOW_SECONDS = 10.0  # Intercom's window, used until an answer tells us the real reset time
RESET_GUARD = 1.0
# A call that never reported back (its worker died) stops counting as in flight after this.
IN_FLIGHT_TTL = 60.0
LONGEST_SLEEP = 1.0  # re-check at least this often: another worker's answer may change things
UNLIMITED_BATCH = 64  # calls a process takes at once from a workspace without a limit
# ... and for how long at most, so that a limit another process learns of applies here soon.
UNLIMITED_TOKENS_SECONDS = 1.0
# A window with at least this many calls left is "far above what the workers can use": 64
# batches, more than 64 processes could take within UNLIMITED_TOKENS_SECONDS of a window's end.
BATCHED_ABOVE = 64 * UNLIMITED_BATCH


class RateLimiter(Protocol):
    def acquire(self) -> None: ...

    def observe(self, rate_limit: Any, status: int | None) -> None: ...


@dataclass(frozen=True)
class Observation:
    """The rate-limit headers of one answer, as plain numbers (any of them may be missing)."""

    limit: int | None
    remaining: int | None
    reset_at: float | None

    @classmethod
    def from_headers(cls, rate_limit: Any) -> Observation:
        """Accept the client's rate-limit object, a header mapping, or None."""
        if rate_limit is None:
            return cls(None, None, None)
        if isinstance(rate_limit, dict):
            lowered = {str(k).lower(): v for k, v in rate_limit.items()}
            values = (
                lowered.get("x-ratelimit-limit", lowered.get("limit")),
                lowered.get("x-ratelimit-remaining", lowered.get("remaining")),
                lowered.get("x-ratelimit-reset", lowered.get("reset_at", lowered.get("reset"))),
            )
        else:
            values = (
                getattr(rate_limit, "limit", None),
                getattr(rate_limit, "remaining", None),
                getattr(rate_limit, "reset_at", getattr(rate_limit, "reset", None)),
            )
        limit, remaining, reset_at = (_number(v) for v in values)
        return cls(
            int(limit) if limit is not None else None,
            int(remaining) if remaining is not None else None,
            _epoch(reset_at),
        )


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)


# Limit -1: not known yet, one call at a time until an answer tells; 0: answers carry no limit.
# KEYS[1]: state hash, KEYS[2]: in-flight sorted set. ARGV: call id, window, guard, in-flight ttl,
# calls wanted in a batch, calls left in the window from which batches are taken. Returns
# {seconds to wait ("0": go), calls granted, 1 when the granted call is counted in flight, 0 for
# calls taken in a batch}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window, guard, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
redis.call('EXPIRE', KEYS[2], 86400)
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or '-1')
if limit < 0 and redis.call('ZCARD', KEYS[2]) > 0 then
  return {tostring(PROBE_WAIT), 0, 0}
end
if limit == 0 then
  return {'0', tonumber(ARGV[5]), 0}
end
if limit < 0 then
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  return {'0', 1, 1}
end
local window_end = tonumber(redis.call('HGET', KEYS[1], 'window_end') or '0')
local remaining = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')
if now >= window_end + guard then
  window_end = now + window
  remaining = limit - redis.call('ZCARD', KEYS[2])
  redis.call('HSET', KEYS[1], 'window_end', tostring(window_end))
end
if remaining <= 0 then
  redis.call('HSET', KEYS[1], 'remaining', tostring(remaining))
  return {tostring(window_end + guard - now), 0, 0}
end
if remaining >= tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'remaining', tostring(remaining - tonumber(ARGV[5])))
  redis.call('EXPIRE', KEYS[1], 86400)
  return {'0', tonumber(ARGV[5]), 0}
end
redis.call('HSET', KEYS[1], 'remaining', tostring(remaining - 1))
redis.call('EXPIRE', KEYS[1], 86400)
redis.call('ZADD', KEYS[2], now, ARGV[1])
return {'0', 1, 1}
""".replace("PROBE_WAIT", "0.02")

# ARGV: limit, remaining, reset_at ('' when absent), status, window, guard, 1 when the call was
# counted in flight.
_OBSERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[7] == '1' then
  redis.call('ZPOPMIN', KEYS[2])
end
local limit, remaining, reset_at = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local status, window, guard = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local state = redis.call('HMGET', KEYS[1], 'limit', 'window_end', 'remaining')
local known_limit = tonumber(state[1] or '-1')
local window_end = tonumber(state[2] or '0')
local left = tonumber(state[3] or '0')
local in_flight = redis.call('ZCARD', KEYS[2])
if limit then
  redis.call('HSET', KEYS[1], 'limit', tostring(limit))
elseif status > 0 and status ~= 429 and known_limit < 0 then
  redis.call('HSET', KEYS[1], 'limit', '0')
end
if status == 429 and not (reset_at and reset_at + guard > now) then
  reset_at = math.max(window_end, now + window)
  remaining = 0
end
if remaining and reset_at and reset_at + guard > now then
  local fresh = remaining - in_flight
  if known_limit <= 0 or math.abs(reset_at - window_end) >= 1 then
    if reset_at < window_end then
      fresh = math.min(fresh, left)
    end
    window_end = reset_at
    left = fresh
  else
    left = math.min(left, fresh)
  end
  if status == 429 then
    left = 0
  end
  redis.call('HSET', KEYS[1], 'window_end', tostring(window_end), 'remaining', tostring(left))
end
redis.call('EXPIRE', KEYS[1], 86400)
return 'ok'
"""


class RedisRateLimiter:
    """The limiter of one destination, its state in Redis, shared by every worker."""

    def __init__(self, *, client: Any, destination_id: int) -> None:
        self._redis = client
        self._keys = [f"sb:ratelimit:{destination_id}", f"sb:ratelimit:{destination_id}:flight"]
        self._acquire = client.register_script(_ACQUIRE)
        self._observe = client.register_script(_OBSERVE)
        # Calls this process took at once from a workspace without a limit (see module doc).
        self._spare_lock = threading.Lock()
        self._spare = 0
        self._spare_until = 0.0
        # Whether the calling thread's current call is counted in flight (acquire -> observe).
        self._call = threading.local()

    def _spare_take(self) -> bool:
        with self._spare_lock:
            if self._spare > 0 and time.monotonic() < self._spare_until:
                self._spare -= 1
                return True
            return False

    def _spare_drop(self) -> None:
        with self._spare_lock:
            self._spare = 0

    def acquire(self) -> None:
        if self._spare_take():
            self._call.counted = False
            return
        call_id = uuid.uuid4().hex
        while True:
            wait, granted, counted = self._acquire(
                keys=self._keys,
                args=[
                    call_id,
                    WINDOW_SECONDS,
                    RESET_GUARD,
                    IN_FLIGHT_TTL,
                    UNLIMITED_BATCH,
                    BATCHED_ABOVE,
                ],
            )
            if float(wait) <= 0:
                self._call.counted = bool(int(counted))
                if not self._call.counted and int(granted) > 1:
                    with self._spare_lock:
                        self._spare += int(granted) - 1
                        self._spare_until = time.monotonic() + UNLIMITED_TOKENS_SECONDS
                return
            time.sleep(min(float(wait), LONGEST_SLEEP))

    def observe(self, rate_limit: Any, status: int | None) -> None:
        seen = Observation.from_headers(rate_limit)
        counted = getattr(self._call, "counted", True)
        if not counted:
            if status != 429 and (
                seen.limit is None or seen.remaining is None or seen.remaining >= BATCHED_ABOVE
            ):
                return  # still no limit, or far from it: nothing to tell the other workers
            # A limit appeared, or the window runs low: the calls taken in a batch stop here,
            # the script decides again.
            self._spare_drop()
        self._observe(
            keys=self._keys,
            args=[
                "" if seen.limit is None else seen.limit,
                "" if seen.remaining is None else seen.remaining,
                "" if seen.reset_at is None else seen.reset_at,
                status or 0,
                WINDOW_SECONDS,
                RESET_GUARD,
                1 if counted else 0,
            ],
        )

    def reset(self) -> None:
        """Forget what the headers said (tests, or after the destination's token changed)."""
        self._spare_drop()
        self._redis.delete(*self._keys)

    def window_limit(self) -> int | None:
        """The calls a window allows, as Intercom's headers last said; None when not told."""
        limit = _number(self._redis.hget(self._keys[0], "limit"))
        return int(limit) if limit is not None and limit > 0 else None


class LocalRateLimiter:
    """The same rules as the Redis script, for one process (the embedded mode)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limit: int | None = None
        self._window_end = 0.0
        self._remaining = 0
        self._in_flight: list[float] = []

    def _forget_lost(self, now: float) -> None:
        self._in_flight = [t for t in self._in_flight if t > now - IN_FLIGHT_TTL]

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.time()
                self._forget_lost(now)
                if self._limit is None and self._in_flight:
                    wait = 0.02
                elif not self._limit:
                    self._in_flight.append(now)
                    return
                else:
                    if now >= self._window_end + RESET_GUARD:
                        self._window_end = now + WINDOW_SECONDS
                        self._remaining = self._limit - len(self._in_flight)
                    if self._remaining > 0:
                        self._remaining -= 1
                        self._in_flight.append(now)
                        return
                    wait = self._window_end + RESET_GUARD - now
            time.sleep(min(wait, LONGEST_SLEEP))

    def observe(self, rate_limit: Any, status: int | None) -> None:
        seen = Observation.from_headers(rate_limit)
        with self._lock:
            now = time.time()
            if self._in_flight:
                self._in_flight.pop(0)
            known = bool(self._limit)
            if seen.limit is not None:
                self._limit = seen.limit
            elif status and status != 429 and self._limit is None:
                self._limit = 0
            remaining, reset_at = seen.remaining, seen.reset_at
            if status == 429 and not (reset_at and reset_at + RESET_GUARD > now):
                reset_at = max(self._window_end, now + WINDOW_SECONDS)
                remaining = 0
            if remaining is None or reset_at is None or reset_at + RESET_GUARD <= now:
                return
            fresh = remaining - len(self._in_flight)
            if not known or abs(reset_at - self._window_end) >= 1:
                if reset_at < self._window_end:
                    fresh = min(fresh, self._remaining)
                self._window_end = reset_at
                self._remaining = fresh
            else:
                self._remaining = min(self._remaining, fresh)
            if status == 429:
                self._remaining = 0

    def reset(self) -> None:
        with self._lock:
            self.__init__()

    def window_limit(self) -> int | None:
        """The calls a window allows, as Intercom's headers last said; None when not told."""
        with self._lock:
            return self._limit or None


_limiters: dict[int, RedisRateLimiter | LocalRateLimiter] = {}
_redis_client: Any = None
_lock = threading.Lock()


def rate_limiter_get(*, destination_id: int) -> RedisRateLimiter | LocalRateLimiter:
    """The limiter of a destination: in Redis when ``REDIS_URL`` is set, else in this process."""
    global _redis_client
    with _lock:
        limiter = _limiters.get(destination_id)
        if limiter is None:
            if settings.REDIS_URL:
                import redis

                if _redis_client is None:
                    _redis_client = redis.Redis.from_url(settings.REDIS_URL)
                limiter = RedisRateLimiter(client=_redis_client, destination_id=destination_id)
            else:
                limiter = LocalRateLimiter()
            _limiters[destination_id] = limiter
        return limiter


@dataclass(frozen=True)
class LimiterState:
    """What the shared limiter knows of a workspace's current window (the overview's headroom).

    ``limit`` None: no answer has told it yet; 0: answers carry no limit (not throttled).
    """

    limit: int | None
    remaining: int | None
    window_end: float | None  # Unix seconds, Redis's clock


def limiter_state(*, destination_id: int) -> LimiterState | None:
    """The limiter's state in Redis, read without touching it; None without ``REDIS_URL`` (the
    embedded mode's limiter lives in the worker's process, out of the web process's sight)."""
    if not settings.REDIS_URL:
        return None
    global _redis_client
    with _lock:
        if _redis_client is None:
            import redis

            _redis_client = redis.Redis.from_url(settings.REDIS_URL)
        client = _redis_client
    limit, remaining, window_end = client.hmget(
        f"sb:ratelimit:{destination_id}", "limit", "remaining", "window_end"
    )
    limit_number = _number(limit.decode() if limit else None)
    return LimiterState(
        limit=None if limit_number is None or limit_number < 0 else int(limit_number),
        remaining=None if remaining is None else int(float(remaining.decode())),
        window_end=_number(window_end.decode() if window_end else None),
    )
