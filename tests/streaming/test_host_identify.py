"""Automatic identify when the host's user model is saved (SWITCHBOARD_IDENTIFY_MODEL)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import override_settings

from integrations.selectors import routes_cache_clear
from streaming.ingest.host_identify import host_identify_connect, host_identify_disconnect
from streaming.models import Delivery, Event

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # the source SWITCHBOARD_PYTHON_SOURCE names below
    pytest.mark.source_fields(name="app"),
]


@pytest.fixture(autouse=True)
def identify_users():
    cache.clear()
    routes_cache_clear()
    with override_settings(
        SWITCHBOARD_IDENTIFY_MODEL="auth.User",
        SWITCHBOARD_IDENTIFY_TRAITS=["email", "first_name"],
        SWITCHBOARD_PYTHON_SOURCE="app",
    ):
        host_identify_connect()
        yield
        host_identify_disconnect()
    routes_cache_clear()


def test_saving_a_user_identifies_it_after_commit(sync):
    with transaction.atomic():
        user = get_user_model().objects.create(
            username="ada", email="ada@example.com", first_name="Ada"
        )
        assert not Event.objects.exists()  # not before the signup commits

    event = Event.objects.get()
    assert (event.type, event.user_id) == ("identify", str(user.pk))
    assert event.payload["traits"] == {"email": "ada@example.com", "first_name": "Ada"}
    assert Delivery.objects.get().user_key == str(user.pk)


def test_a_rolled_back_save_identifies_nothing(sync):
    with pytest.raises(RuntimeError), transaction.atomic():
        get_user_model().objects.create(username="ada", email="ada@example.com")
        raise RuntimeError("signup failed")

    assert not Event.objects.exists()


def test_a_save_that_touches_no_trait_sends_nothing(sync):
    user = get_user_model().objects.create(username="ada", email="ada@example.com")
    Event.objects.all().delete()

    user.save(update_fields=["last_login"])
    user.email = "ada@new.example.com"
    user.save(update_fields=["email"])

    assert [e.payload["traits"]["email"] for e in Event.objects.all()] == ["ada@new.example.com"]


def test_a_failing_identify_never_breaks_the_hosts_save(caplog):
    # no source named "app": the identify cannot be ingested
    user = get_user_model().objects.create(username="ada", email="ada@example.com")

    assert get_user_model().objects.filter(pk=user.pk).exists()
    assert not Event.objects.exists()
    assert "automatic identify" in caplog.text


def test_an_unknown_model_is_a_configuration_error():
    with (
        override_settings(SWITCHBOARD_IDENTIFY_MODEL="nope.Person"),
        pytest.raises(ImproperlyConfigured),
    ):
        host_identify_connect()
