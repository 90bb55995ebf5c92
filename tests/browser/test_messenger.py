"""{% intercom_messenger %} run by Chromium: the page gets window.intercomSettings and the queue
Intercom's widget reads, whatever the user's name holds."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from django.template import Context, Template
from django.test import RequestFactory

from integrations.models import Destination
from tests.factories import DestinationFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SECRET = "idv_browser_secret_PLAINTEXT_0042"


def test_the_snippet_sets_the_messengers_settings_in_a_browser(browser_context, django_user_model):
    DestinationFactory(
        region=Destination.Region.US,
        base_url="",
        app_id="abc123",
        identity_verification_secret=SECRET,
    )
    user = django_user_model.objects.create(
        username="ada", email="ada@example.com", first_name="</script><b>Ada"
    )
    request = RequestFactory().get("/")
    request.user = user
    snippet = Template("{% load switchboard %}{% intercom_messenger %}").render(
        Context({"request": request})
    )
    page = browser_context.new_page()
    # The widget's own script (widget.intercom.io) is not fetched here: only the snippet runs.
    page.route("**/*", lambda route: route.abort())

    page.set_content(f"<html><head><script></script></head><body>{snippet}</body></html>")

    settings = page.evaluate("window.intercomSettings")
    assert settings == {
        "app_id": "abc123",
        "api_base": "https://api-iam.intercom.io",
        "user_id": str(user.pk),
        "email": "ada@example.com",
        "user_hash": hmac.new(SECRET.encode(), str(user.pk).encode(), hashlib.sha256).hexdigest(),
        "name": "</script><b>Ada",
    }
    assert page.evaluate("typeof window.Intercom") == "function"
    assert page.locator("b").count() == 0  # the name stayed text
    assert page.evaluate("Array.from(document.scripts).some(s => s.src.endsWith('/widget/abc123'))")
