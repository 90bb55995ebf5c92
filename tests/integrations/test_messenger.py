"""The Messenger with identity verification: {% intercom_messenger %} and messenger_settings()."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.template import Context, Template
from django.test import RequestFactory

from integrations.messenger import messenger_settings
from integrations.models import Destination
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db

SECRET = "idv_messenger_secret_PLAINTEXT_31"


@pytest.fixture
def workspace() -> Destination:
    return DestinationFactory(
        name="main",
        region=Destination.Region.EU,
        base_url="",
        app_id="abc123",
        identity_verification_secret=SECRET,
    )


@pytest.fixture
def ada(django_user_model: Any) -> Any:
    return django_user_model.objects.create(
        username="ada", email="ada@example.com", first_name="Ada", last_name="Lovelace"
    )


def render(user: Any, tag: str = "{% intercom_messenger %}") -> str:
    request = RequestFactory().get("/")
    request.user = user
    return Template("{% load switchboard %}" + tag).render(Context({"request": request}))


def settings_in(html: str) -> dict[str, Any]:
    match = re.search(
        r'<script id="switchboard-intercom-settings" type="application/json">(.*?)</script>',
        html,
        re.S,
    )
    assert match, html
    return json.loads(match.group(1))


def test_a_signed_in_user_gets_a_user_hash_of_their_id(workspace, ada):
    html = render(ada)

    values = settings_in(html)
    expected = hmac.new(SECRET.encode(), str(ada.pk).encode(), hashlib.sha256).hexdigest()
    assert values == {
        "app_id": "abc123",
        "api_base": "https://api-iam.eu.intercom.io",
        "user_id": str(ada.pk),
        "email": "ada@example.com",
        "user_hash": expected,
        "name": "Ada Lovelace",
    }
    assert SECRET not in html
    assert "https://widget.intercom.io/widget/" in html


def test_messenger_security_gives_a_signed_jwt_that_expires(workspace, ada, settings):
    settings.SWITCHBOARD_MESSENGER_JWT_SECONDS = 900
    workspace.messenger_security = Destination.MessengerSecurity.JWT
    workspace.save()

    values = settings_in(render(ada))

    assert set(values) == {"app_id", "api_base", "intercom_user_jwt", "name"}
    claims = jwt.decode(values["intercom_user_jwt"], SECRET, algorithms=["HS256"])
    assert claims["user_id"] == str(ada.pk) and claims["email"] == "ada@example.com"
    assert time.time() + 890 < claims["exp"] <= time.time() + 900
    assert jwt.get_unverified_header(values["intercom_user_jwt"])["alg"] == "HS256"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            values["intercom_user_jwt"], "another-secret-of-32-bytes-or-more", algorithms=["HS256"]
        )


def test_a_visitor_gets_the_workspace_only(workspace):
    assert settings_in(render(AnonymousUser())) == {
        "app_id": "abc123",
        "api_base": "https://api-iam.eu.intercom.io",
    }


def test_values_cannot_break_out_of_the_script(workspace, django_user_model):
    mallory = django_user_model.objects.create(
        username="m", email="m@example.com", first_name="</script><script>alert(1)</script>"
    )

    html = render(mallory)

    assert "<script>alert(1)" not in html
    assert settings_in(html)["name"] == "</script><script>alert(1)</script>"


def test_the_python_api_gives_the_same_for_any_front_end(workspace):
    user = SimpleNamespace(pk=42, email="", is_authenticated=True)

    values = messenger_settings(user, destination="main")

    assert values["user_id"] == "42"
    assert values["user_hash"] == hmac.new(SECRET.encode(), b"42", hashlib.sha256).hexdigest()
    assert "email" not in values


def test_the_destination_is_named_when_there_are_several(workspace, ada, settings):
    DestinationFactory(name="other", app_id="zzz999")
    with pytest.raises(ImproperlyConfigured, match="Name the Messenger's destination"):
        render(ada)

    assert settings_in(render(ada, '{% intercom_messenger "other" %}'))["app_id"] == "zzz999"
    settings.SWITCHBOARD_MESSENGER_DESTINATION = "other"
    assert settings_in(render(ada))["app_id"] == "zzz999"


def test_an_unknown_app_id_says_how_to_learn_it(ada):
    DestinationFactory(name="fresh", app_id="")

    with pytest.raises(ImproperlyConfigured, match="use Check connection"):
        messenger_settings(ada)


def test_check_connection_learns_the_app_id(intercom_sandbox):
    from integrations.admin import destination_check

    destination = DestinationFactory(
        base_url=intercom_sandbox.url, access_token=intercom_sandbox.token
    )

    destination_check(destination=destination)

    destination.refresh_from_db()
    assert destination.app_id == "sandbox"
