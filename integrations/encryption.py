"""Secrets at rest: Fernet with a key list, so keys rotate without downtime.

The first key of ``SWITCHBOARD_ENCRYPTION_KEYS`` encrypts; every key decrypts. After prepending a
new key, ``manage.py switchboard rotate-keys`` re-encrypts every stored secret with it.
"""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models


@cache
def _fernet() -> MultiFernet:
    keys = settings.SWITCHBOARD_ENCRYPTION_KEYS
    if not keys:
        raise ImproperlyConfigured(
            "SWITCHBOARD_ENCRYPTION_KEYS is empty: secrets cannot be stored."
        )
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as error:
        raise ImproperlyConfigured(
            "SWITCHBOARD_ENCRYPTION_KEYS must be url-safe base64 Fernet keys "
            "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key())')."
        ) from error


def _keys_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "SWITCHBOARD_ENCRYPTION_KEYS":
        _fernet.cache_clear()


setting_changed.connect(_keys_changed)


def secret_encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def secret_decrypt(ciphertext: str) -> str:
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as error:
        raise ImproperlyConfigured(
            "A stored secret cannot be decrypted with SWITCHBOARD_ENCRYPTION_KEYS "
            "(was a key removed before `switchboard rotate-keys` ran?)."
        ) from error


def secret_reencrypt(ciphertext: str) -> str:
    """The same secret under the newest key."""
    return _fernet().rotate(ciphertext.encode()).decode()


class EncryptedTextField(models.TextField):
    """A text field stored as a Fernet token; Python code sees the plaintext ('' when unset)."""

    def from_db_value(self, value: str | None, expression: object, connection: object) -> str:
        return secret_decrypt(value) if value else ""

    def get_prep_value(self, value: str | None) -> str:
        return secret_encrypt(value) if value else ""
