"""Control-plane writes: write keys and secret rotation.

Keyword-only functions named ``<entity>_<action>`` (STYLE.md). The admin, the ``switchboard``
management command and the ingest API call these; none of them holds business logic of its own.
Configuration as code lives in ``integrations.config_as_code``, first-run setup in
``integrations.first_run``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models.functions import Cast
from django.utils import timezone

from integrations.encryption import EncryptedTextField, secret_reencrypt
from integrations.models import Source, WriteKey, write_key_cache_name, write_key_hash

# ---------------------------------------------------------------------------------------------
# Write keys

WRITE_KEY_CACHE_SECONDS = 300  # entries are also dropped on every save of the key or its source
WRITE_KEY_TOUCH_SECONDS = 60  # last_used_at is written at most this often per key
FAILED_KEYS_WINDOW_SECONDS = 60


class TooManyFailedKeys(Exception):
    """A client sent more unknown write keys than ``SWITCHBOARD_FAILED_WRITE_KEYS_PER_MINUTE``:
    every key it sends is refused until ``retry_after`` seconds have passed."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many unknown write keys; retry after {retry_after} s")
        self.retry_after = retry_after


def write_key_issue(*, source: Source, label: str = "") -> tuple[WriteKey, str]:
    """Create a key for an HTTP source; the plaintext is returned once and never stored."""
    if source.kind != Source.Kind.HTTP:
        raise ValidationError("Only HTTP sources have write keys.")
    return WriteKey.objects.issue(source=source, label=label)


def write_key_revoke(*, write_key: WriteKey) -> None:
    write_key.revoke()


def write_key_cache_names(*, key: str, client: str = "") -> list[str]:
    """The cache entries ``write_key_authenticate`` reads for ``key`` sent by ``client``.

    A caller with cache entries of its own to read (ingest: the routes' and the suppressions'
    versions) reads these with them in one round trip and hands the answer over as ``cached``.
    """
    key_hash = write_key_hash(key)
    names = [write_key_cache_name(key_hash=key_hash), f"switchboard:write-key-used:{key_hash}"]
    return [*names, f"switchboard:write-key-blocked:{client}"] if client else names


def write_key_authenticate(
    *, key: str, client: str = "", cached: Mapping[str, Any] | None = None
) -> WriteKey | None:
    """The active write key of an enabled HTTP source matching ``key``, or None.

    Called on every ingest request, so it is cached (by the key's SHA-256, never the plaintext)
    and invalidated by any save of the key or its source. The lookup is by hash: an attacker
    learns nothing from timing, and the final comparison is constant-time anyway.

    ``client`` (the caller's IP address) brakes guessing: once it sent
    ``SWITCHBOARD_FAILED_WRITE_KEYS_PER_MINUTE`` unknown keys in a minute, every key it sends,
    a right one included, raises ``TooManyFailedKeys`` until the minute is over.

    ``cached``: what the cache answered for ``write_key_cache_names`` (read by the caller),
    instead of reading it here.
    """
    blocked_name = f"switchboard:write-key-blocked:{client}"
    if not key or len(key) > 200:
        _failure_record(client=client, blocked_name=blocked_name)
        return None
    key_hash = write_key_hash(key)
    cache_name = write_key_cache_name(key_hash=key_hash)
    used_name = f"switchboard:write-key-used:{key_hash}"
    # One cache round trip for the key, its last-used mark and the client's brake: on this hot
    # path each round trip costs more than the work around it (docs/benchmarks.md, B1).
    if cached is None:
        cached = cache.get_many(write_key_cache_names(key=key, client=client))
    if blocked_name in cached:
        raise TooManyFailedKeys(max(1, int(cached[blocked_name] - time.time()) + 1))
    write_key = cached.get(cache_name)
    if write_key is None:
        write_key = (
            WriteKey.objects.select_related("source")
            .filter(key_hash=key_hash, revoked_at__isnull=True)
            .first()
        )
        if write_key is None:
            _failure_record(client=client, blocked_name=blocked_name)
            return None
        cache.set(cache_name, write_key, WRITE_KEY_CACHE_SECONDS)
    if not hmac.compare_digest(write_key.key_hash, key_hash):
        return None
    if (
        write_key.revoked_at is not None
        or not write_key.source.enabled
        or write_key.source.kind != Source.Kind.HTTP
    ):
        return None
    if used_name not in cached:
        _write_key_touch(write_key=write_key, used_name=used_name)
    return write_key


def _failure_record(*, client: str, blocked_name: str) -> None:
    """Count an unknown key sent by ``client``; block the client once it sent too many."""
    limit = settings.SWITCHBOARD_FAILED_WRITE_KEYS_PER_MINUTE
    if not client or limit <= 0:
        return
    window = int(time.time() // FAILED_KEYS_WINDOW_SECONDS)
    name = f"switchboard:write-key-failures:{client}:{window}"
    try:
        count = 1 if cache.add(name, 1, FAILED_KEYS_WINDOW_SECONDS * 2) else cache.incr(name)
        if count >= limit:
            until = (window + 1) * FAILED_KEYS_WINDOW_SECONDS
            cache.set(blocked_name, until, max(1, int(until - time.time()) + 1))
    except ValueError:  # the counter expired between add() and incr(): a new window
        return


def _write_key_touch(*, write_key: WriteKey, used_name: str) -> None:
    # cache.add is atomic across processes (Redis SET NX): one UPDATE per key per minute, not one
    # per request, so hot keys do not serialise ingest on a row lock.
    if cache.add(used_name, 1, WRITE_KEY_TOUCH_SECONDS):
        now = timezone.now()
        WriteKey.objects.filter(pk=write_key.pk).update(last_used_at=now)
        write_key.last_used_at = now


# ---------------------------------------------------------------------------------------------
# Encryption key rotation


def secrets_rotate() -> int:
    """Re-encrypt every stored secret with the first key of SWITCHBOARD_ENCRYPTION_KEYS.

    Works on the ciphertext (Fernet ``rotate``), so no plaintext is materialised. Returns the
    number of values re-encrypted.
    """
    count = 0
    with transaction.atomic():
        for model in apps.get_models():
            for model_field in model._meta.concrete_fields:
                if not isinstance(model_field, EncryptedTextField):
                    continue
                # Cast to a plain TextField: the raw column, without from_db_value's decryption.
                rows = (
                    model._default_manager.exclude(**{model_field.attname: ""})
                    .annotate(ciphertext=Cast(model_field.attname, models.TextField()))
                    .values_list("pk", "ciphertext")
                )
                for pk, ciphertext in rows.iterator():
                    rotated = secret_reencrypt(ciphertext)
                    model._default_manager.filter(pk=pk).update(
                        **{model_field.attname: models.Value(rotated, models.TextField())}
                    )
                    count += 1
    return count
