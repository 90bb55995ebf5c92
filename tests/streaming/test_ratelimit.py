"""The per-destination rate limiter against the sandbox's 10-second windows (invariant 4)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
import redis
from django.conf import settings

from integrations.intercom.client import IntercomClient, RateLimit
from integrations.intercom.sandbox import Sandbox
from streaming.delivery.ratelimit import (
    BATCHED_ABOVE,
    RESET_GUARD,
    UNLIMITED_BATCH,
    LocalRateLimiter,
    RedisRateLimiter,
    rate_limiter_get,
)

LIMIT = 100  # calls per 10-second window
CALLERS = 6  # like six worker processes, each calling as fast as it can


def windows_of(sandbox: Sandbox) -> Counter[int]:
    return Counter(int(entry["time"] // 10) for entry in sandbox.requests() if "time" in entry)


def hammer(limiters: list, url: str, until: float) -> list[int]:
    """CALLERS threads, spread over the given limiters, each calling GET /me until ``until``."""
    statuses: list[int] = []
    lock = threading.Lock()

    def caller(limiter: object) -> None:
        client = IntercomClient(
            base_url=url, token="sandbox-token", api_version="2.16", limiter=limiter
        )
        while time.time() < until:
            result = client.me()
            with lock:
                statuses.append(result.status or 0)
        client.close()

    threads = [
        threading.Thread(target=caller, args=(limiters[i % len(limiters)],)) for i in range(CALLERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def first_full_window_end(now: float) -> float:
    return (int(now // 10) + 2) * 10


@pytest.fixture
def limited_sandbox():
    with Sandbox(rate_limit=LIMIT) as sandbox:
        yield sandbox


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")
def test_workers_sharing_the_redis_limiter_never_exceed_a_window_and_use_its_budget(
    limited_sandbox: Sandbox,
) -> None:
    # given two "processes" (separate Redis connections) limiting the same destination
    destination_id = 10_000_000 + uuid.uuid4().int % 1_000_000
    limiters = [
        RedisRateLimiter(
            client=redis.Redis.from_url(settings.REDIS_URL), destination_id=destination_id
        )
        for _ in range(2)
    ]
    limiters[0].reset()
    # when six callers want far more than the limit until a whole window has passed
    end = first_full_window_end(time.time())
    statuses = hammer(limiters, limited_sandbox.url, end)
    # then Intercom never had to refuse a call, and the full window was (nearly) all used
    assert 429 not in statuses
    windows = windows_of(limited_sandbox)
    assert max(windows.values()) <= LIMIT
    full_window = int(end // 10) - 1
    assert windows[full_window] >= 0.9 * LIMIT, windows
    limiters[0].reset()


def test_a_spent_window_holds_calls_until_its_reset() -> None:
    # given an answer saying the window is spent and resets in two seconds
    limiter = LocalRateLimiter()
    limiter.acquire()
    reset_at = int(time.time()) + 2
    limiter.observe(RateLimit(limit=LIMIT, remaining=0, reset_at=reset_at), 200)
    # when the next call wants to go
    limiter.acquire()
    # then it went only after the reset (plus the guard for the header's whole seconds)
    assert time.time() >= reset_at + RESET_GUARD


def test_answers_without_rate_headers_are_not_throttled() -> None:
    # given a workspace that sends no X-RateLimit headers (no limit)
    with Sandbox() as sandbox:
        limiter = LocalRateLimiter()
        client = IntercomClient(base_url=sandbox.url, token="sandbox-token", api_version="2.16")
        client.limiter = limiter
        # when many calls go out
        statuses = [client.me().status for _ in range(50)]
        client.close()
    # then none waited for a window: all went out in the current one
    assert statuses == [200] * 50
    assert len(windows_of(sandbox)) <= 2


def test_each_destination_has_its_own_limiter() -> None:
    assert rate_limiter_get(destination_id=1) is rate_limiter_get(destination_id=1)
    assert rate_limiter_get(destination_id=1) is not rate_limiter_get(destination_id=2)


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")
def test_a_limit_that_appears_after_answers_without_one_is_kept() -> None:
    # given a workspace that answered without rate headers (no limit: calls go out in batches)
    with Sandbox() as sandbox:
        destination_id = 10_000_000 + uuid.uuid4().int % 1_000_000
        limiter = RedisRateLimiter(
            client=redis.Redis.from_url(settings.REDIS_URL), destination_id=destination_id
        )
        limiter.reset()
        client = IntercomClient(
            base_url=sandbox.url, token="sandbox-token", api_version="2.16", limiter=limiter
        )
        assert [client.me().status for _ in range(20)] == [200] * 20
        # when it starts answering with a limit of 100 a window
        sandbox.configure(rate_limit=LIMIT)
        end = first_full_window_end(time.time())
        statuses = hammer([limiter], sandbox.url, end)
        client.close()
        limiter.reset()
    # then the limit holds from the first full window on, without a 429 there
    windows = windows_of(sandbox)
    full_window = int(end // 10) - 1
    assert windows[full_window] <= LIMIT, windows
    assert windows[full_window] >= 0.9 * LIMIT, windows
    assert statuses.count(429) <= UNLIMITED_BATCH


def _scripts_counted(limiter: RedisRateLimiter) -> Counter[str]:
    """Count the Redis scripts the limiter runs (each is a round trip per call it covers)."""
    runs: Counter[str] = Counter()
    for name in ("_acquire", "_observe"):
        script = getattr(limiter, name)

        def counted(*args, _script=script, _name=name, **kwargs):
            runs[_name] += 1
            return _script(*args, **kwargs)

        setattr(limiter, name, counted)
    return runs


def _away_from_a_window_end() -> None:
    if time.time() % 10 > 8:
        time.sleep(10 - time.time() % 10 + 0.05)


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")
def test_a_window_far_above_what_the_workers_use_takes_calls_in_batches() -> None:
    # given a workspace announcing a huge window on every answer (the sandbox's default)
    with Sandbox(rate_limit=1_000_000) as sandbox:
        destination_id = 10_000_000 + uuid.uuid4().int % 1_000_000
        limiter = RedisRateLimiter(
            client=redis.Redis.from_url(settings.REDIS_URL), destination_id=destination_id
        )
        limiter.reset()
        runs = _scripts_counted(limiter)
        client = IntercomClient(
            base_url=sandbox.url, token="sandbox-token", api_version="2.16", limiter=limiter
        )
        # when 200 calls go out
        statuses = [client.me().status for _ in range(200)]
        client.close()
        limiter.reset()
    # then they went in batches: a few scripts, not two per call
    assert statuses == [200] * 200
    assert sum(runs.values()) <= 200 // UNLIMITED_BATCH + 4, runs


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")
def test_a_window_running_low_is_counted_call_by_call() -> None:
    # given a window only a little above what batches are taken from
    _away_from_a_window_end()
    with Sandbox(rate_limit=BATCHED_ABOVE + 5) as sandbox:
        destination_id = 10_000_000 + uuid.uuid4().int % 1_000_000
        limiter = RedisRateLimiter(
            client=redis.Redis.from_url(settings.REDIS_URL), destination_id=destination_id
        )
        limiter.reset()
        client = IntercomClient(
            base_url=sandbox.url, token="sandbox-token", api_version="2.16", limiter=limiter
        )
        for _ in range(20):  # the probe, then a batch whose answers say the window runs low
            client.me()
        runs = _scripts_counted(limiter)
        # when ten more calls go out
        statuses = [client.me().status for _ in range(10)]
        client.close()
        limiter.reset()
    # then each was counted in Redis before it went, and reported after
    assert statuses == [200] * 10
    assert runs == Counter({"_acquire": 10, "_observe": 10})
