"""Suppression: the user ids of people deleted on request, whose calls ingest drops.

A deleted person's id is never stored: ``subject_hash`` keys it with HMAC-SHA256 under a key
derived from ``SECRET_KEY`` (Django's ``salted_hmac``, with a salt of its own), and only that hash
is kept (``Suppression``, ``PersonDeletion``). Rotating ``SECRET_KEY`` the Django way (the old key
moved to ``SECRET_KEY_FALLBACKS``) keeps old entries working: ids are checked under every key.

Ingest asks ``suppressed_user_ids`` for each batch. The active hashes are kept in each process
and reloaded when a version number in Django's cache changes (``suppressions_changed``, bumped
after commit whenever an entry is added or lifted), so a check costs one cache read (none for the
HTTP API, which reads the version with the write key); without the cache (it is down) the
database is asked for the batch's hashes, and the answer stays correct.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Iterable

from django.conf import settings
from django.core.cache import cache
from django.utils.encoding import force_bytes

from streaming.models import Suppression

logger = logging.getLogger(__name__)

SUPPRESSED_REASON = "suppressed: deleted on request"
_SALT = "switchboard.suppression.subject"
VERSION_KEY = "streaming:suppressions:version"
# A process-local cache backend (the embedded default) cannot carry the version to other
# processes: reload this often whatever it says.
_MAX_AGE_SECONDS = 30.0


def subject_hash(user_id: str, *, secret: str | bytes | None = None) -> str:
    """The keyed hash that stands for ``user_id`` (hex HMAC-SHA256; never the id itself).

    What ``django.utils.crypto.salted_hmac`` answers, with the key derived once per secret:
    ingest hashes every user id of a batch while any suppression is active.
    """
    key = _derived_key(settings.SECRET_KEY if secret is None else secret)
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=8)
def _derived_key(secret: str | bytes) -> bytes:
    # salted_hmac's derivation: sha256(salt + secret) is the HMAC key.
    return hashlib.sha256(_SALT.encode() + force_bytes(secret)).digest()


def subject_hashes(user_id: str) -> list[str]:
    """``user_id``'s hash under the current key, then under each of ``SECRET_KEY_FALLBACKS``."""
    return [subject_hash(user_id)] + [
        subject_hash(user_id, secret=key) for key in settings.SECRET_KEY_FALLBACKS
    ]


class _Active:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version: object = None
        self.loaded_at = 0.0
        self.hashes: frozenset[str] = frozenset()


_active = _Active()


def _version() -> object:
    version = cache.get(VERSION_KEY)
    if version is None:
        cache.add(VERSION_KEY, time.time_ns(), timeout=None)
        version = cache.get(VERSION_KEY)
    return version


def _active_hashes(version: object = None) -> frozenset[str] | None:
    """Every active hash (this process's copy), or None when the cache cannot say if it is
    current. ``version``: the list's version when the caller read it already."""
    try:
        version = _version() if version is None else version
    except Exception:
        logger.warning("suppression list: cache unavailable, asking the database", exc_info=True)
        return None
    now = time.monotonic()
    with _active.lock:
        if version == _active.version and now - _active.loaded_at < _MAX_AGE_SECONDS:
            return _active.hashes
    hashes = frozenset(
        Suppression.objects.filter(lifted_at__isnull=True).values_list("subject_hash", flat=True)
    )
    with _active.lock:
        _active.version, _active.loaded_at, _active.hashes = version, now, hashes
    return hashes


def suppressed_user_ids(user_ids: Iterable[str], *, version: object = None) -> set[str]:
    """Which of ``user_ids`` belong to a person deleted on request (an active suppression).

    With no suppression active (most of the time) nothing is hashed: one cache read, or none
    when the caller read the list's ``version`` (``VERSION_KEY``) already.
    """
    active = _active_hashes(version)
    if active is not None and not active:
        return set()
    by_hash: dict[str, str] = {}
    for user_id in set(user_ids):
        if user_id:
            for digest in subject_hashes(user_id):
                by_hash[digest] = user_id
    if not by_hash:
        return set()
    if active is None:
        active = frozenset(
            Suppression.objects.filter(
                lifted_at__isnull=True, subject_hash__in=list(by_hash)
            ).values_list("subject_hash", flat=True)
        )
    return {user_id for digest, user_id in by_hash.items() if digest in active}


def suppressions_changed() -> None:
    """Tell every process to reload the list (call after the change has committed)."""
    with _active.lock:
        _active.version = None
    try:
        cache.incr(VERSION_KEY)
    except ValueError:
        cache.set(VERSION_KEY, time.time_ns(), timeout=None)
    except Exception:
        # The list is reloaded within _MAX_AGE_SECONDS anyway, and the check falls back to the
        # database while the cache is down.
        logger.warning("suppression list: version not bumped", exc_info=True)
