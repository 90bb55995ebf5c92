"""Write keys: hashed at rest, several active at once for rotation, revocation is immediate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.models import Source, WriteKey, write_key_hash
from integrations.services import write_key_authenticate, write_key_issue, write_key_revoke
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache():
    # Redis outlives the test database: key ids repeat from one run to the next.
    cache.clear()
    yield
    cache.clear()


def test_a_write_key_is_stored_only_as_its_hash():
    key, plaintext = write_key_issue(source=SourceFactory(), label="web")

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM integrations_writekey WHERE id = %s", [key.pk])
        row = " ".join(str(value) for value in cursor.fetchone())
    assert plaintext not in row
    assert key.key_hash == write_key_hash(plaintext)
    assert plaintext.startswith("sb_") and len(plaintext) > 40


def test_only_http_sources_get_write_keys():
    hooks = SourceFactory(kind=Source.Kind.INTERCOM_WEBHOOK, webhook_secret="s")

    with pytest.raises(ValidationError, match="Only HTTP sources have write keys."):
        write_key_issue(source=hooks)


def test_two_active_keys_both_authenticate_during_a_rotation():
    source = SourceFactory()
    old, old_plain = write_key_issue(source=source, label="old")
    new, new_plain = write_key_issue(source=source, label="new")

    assert write_key_authenticate(key=old_plain) == old
    assert write_key_authenticate(key=new_plain) == new
    assert write_key_authenticate(key=new_plain).source == source

    write_key_revoke(write_key=old)

    assert write_key_authenticate(key=old_plain) is None
    assert write_key_authenticate(key=new_plain) == new


def test_unknown_or_malformed_keys_do_not_authenticate():
    write_key_issue(source=SourceFactory())

    assert write_key_authenticate(key="sb_" + "x" * 43) is None
    assert write_key_authenticate(key="") is None
    assert write_key_authenticate(key="x" * 10_000) is None


def test_revocation_wins_over_the_cache_immediately():
    key, plaintext = write_key_issue(source=SourceFactory())
    assert write_key_authenticate(key=plaintext) == key  # now cached

    WriteKey.objects.get(pk=key.pk).revoke()

    assert write_key_authenticate(key=plaintext) is None


def test_deleting_a_source_stops_its_cached_keys_immediately():
    source = SourceFactory()
    key, plaintext = write_key_issue(source=source)
    assert write_key_authenticate(key=plaintext) == key

    Source.objects.filter(pk=source.pk).delete()  # the admin's bulk delete: no Model.delete()

    assert write_key_authenticate(key=plaintext) is None


def test_a_disabled_source_stops_its_keys_immediately():
    source = SourceFactory()
    key, plaintext = write_key_issue(source=source)
    assert write_key_authenticate(key=plaintext) == key

    source.enabled = False
    source.save()

    assert write_key_authenticate(key=plaintext) is None


def test_a_cached_key_authenticates_without_touching_the_database():
    key, plaintext = write_key_issue(source=SourceFactory())
    write_key_authenticate(key=plaintext)

    with CaptureQueriesContext(connection) as queries:
        assert write_key_authenticate(key=plaintext) == key

    assert len(queries) == 0


def test_last_used_at_is_written_at_most_once_a_minute():
    key, plaintext = write_key_issue(source=SourceFactory())

    write_key_authenticate(key=plaintext)
    first = WriteKey.objects.get(pk=key.pk).last_used_at
    long_ago = timezone.now() - timedelta(hours=1)
    WriteKey.objects.filter(pk=key.pk).update(last_used_at=long_ago)
    write_key_authenticate(key=plaintext)  # within the same minute: no write
    second = WriteKey.objects.get(pk=key.pk).last_used_at
    cache.delete(f"switchboard:write-key-used:{write_key_hash(plaintext)}")  # a minute passing
    write_key_authenticate(key=plaintext)
    third = WriteKey.objects.get(pk=key.pk).last_used_at

    assert first is not None
    assert second == long_ago
    assert third > long_ago
