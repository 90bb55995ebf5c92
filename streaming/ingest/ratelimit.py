"""The per-write-key rate limit of the ingest API (setting SWITCHBOARD_WRITE_KEY_RATE_LIMIT).

A fixed one-second window counted in Django's cache: with ``REDIS_URL`` set the cache is Redis,
so every web process shares one budget per key; without it each process counts on its own (the
embedded, single-process setup). A batch counts as one call, as it is one HTTP request.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache import cache

log = logging.getLogger(__name__)

_WINDOW_SECONDS = 1


def write_key_rate_check(*, key_id: int) -> float | None:
    """Count one call for this key; return None when allowed, else seconds until the next window."""
    limit = settings.SWITCHBOARD_WRITE_KEY_RATE_LIMIT
    if not limit or limit <= 0:
        return None
    now = time.time()
    window = int(now // _WINDOW_SECONDS)
    name = f"switchboard:write-key-rate:{key_id}:{window}"
    # add() then incr() is atomic on Redis and in local memory; the entry outlives its window a
    # little so a slow request at the boundary still finds it.
    try:
        if cache.add(name, 1, timeout=_WINDOW_SECONDS * 2 + 1):
            count = 1
        else:
            try:
                count = cache.incr(name)
            except ValueError:  # expired between add() and incr()
                cache.set(name, 1, timeout=_WINDOW_SECONDS * 2 + 1)
                count = 1
    except Exception:
        # The limit protects the service; failing every call because the cache is down would
        # be the outage it is meant to prevent. Let the call through.
        log.warning("write key rate limit unavailable (cache error); call allowed", exc_info=True)
        return None
    if count <= limit:
        return None
    return (window + 1) * _WINDOW_SECONDS - now
