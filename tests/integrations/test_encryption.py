"""Secrets at rest: only Fernet ciphertext in the database, and the key list rotates."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from integrations.models import Destination, Source
from tests.factories import DestinationFactory, SourceFactory

pytestmark = pytest.mark.django_db

TOKEN = "tok_PLAINTEXT_4711"
IDENTITY_SECRET = "idv_PLAINTEXT_0815"
WEBHOOK_SECRET = "whs_PLAINTEXT_1234"


def raw_rows() -> list[str]:
    """The secret columns exactly as the database holds them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token, identity_verification_secret FROM integrations_destination"
        )
        rows = [value for row in cursor.fetchall() for value in row]
        cursor.execute("SELECT webhook_secret FROM integrations_source WHERE webhook_secret <> ''")
        rows += [row[0] for row in cursor.fetchall()]
    return rows


@pytest.fixture
def stored_secrets() -> tuple[Destination, Source]:
    destination = DestinationFactory(
        access_token=TOKEN, identity_verification_secret=IDENTITY_SECRET
    )
    source = SourceFactory(kind="intercom_webhook", webhook_secret=WEBHOOK_SECRET)
    return destination, source


def test_secrets_are_encrypted_at_rest(stored_secrets):
    rows = raw_rows()

    assert len(rows) == 3
    for value in rows:
        assert value.startswith("gAAAAA")  # a Fernet token
        for secret in (TOKEN, IDENTITY_SECRET, WEBHOOK_SECRET):
            assert secret not in value
    destination = Destination.objects.get()
    assert destination.access_token == TOKEN
    assert destination.identity_verification_secret == IDENTITY_SECRET
    assert Source.objects.get().webhook_secret == WEBHOOK_SECRET


def test_an_unset_optional_secret_stays_empty():
    DestinationFactory(identity_verification_secret="")

    assert Destination.objects.get().identity_verification_secret == ""
    assert "" in raw_rows()


def test_rotate_keys_re_encrypts_every_secret_with_the_new_key(stored_secrets, settings, capsys):
    old_key = settings.SWITCHBOARD_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    before = raw_rows()

    # given a new key prepended (old ones still decrypt)
    settings.SWITCHBOARD_ENCRYPTION_KEYS = [new_key, old_key]
    call_command("switchboard", "rotate-keys")

    assert "re-encrypted 3 secret(s)" in capsys.readouterr().out
    after = raw_rows()
    assert after != before
    for value in after:
        Fernet(new_key.encode()).decrypt(value.encode())  # readable with the new key alone
    # then the old key can be dropped
    settings.SWITCHBOARD_ENCRYPTION_KEYS = [new_key]
    destination = Destination.objects.get()
    assert (destination.access_token, destination.identity_verification_secret) == (
        TOKEN,
        IDENTITY_SECRET,
    )
    assert Source.objects.get().webhook_secret == WEBHOOK_SECRET


def test_dropping_a_key_before_rotating_is_a_clear_error(stored_secrets, settings):
    settings.SWITCHBOARD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(ImproperlyConfigured, match="was a key removed before"):
        Destination.objects.get()


def test_no_encryption_key_at_all_is_a_clear_error(settings):
    settings.SWITCHBOARD_ENCRYPTION_KEYS = []

    with pytest.raises(ImproperlyConfigured, match="SWITCHBOARD_ENCRYPTION_KEYS is empty"):
        DestinationFactory()
