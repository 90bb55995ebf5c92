"""Connect to Intercom (OAuth) from the admin, against the sandbox's authorise page and token
exchange over real HTTP: the operator's session plays the browser, ``requests`` plays the clicks
on Intercom's page."""

from __future__ import annotations

import socket
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from integrations import oauth
from integrations.models import Destination, IntercomApp, Source
from tests.factories import DestinationFactory, SourceFactory, SyncFactory

pytestmark = pytest.mark.django_db

CLIENT_ID = "sandbox-client-id"
CLIENT_SECRET = "sandbox-client-secret"
CALLBACK = "/admin/integrations/destination/oauth-callback/"


@pytest.fixture(autouse=True)
def oauth_app_settings(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.SWITCHBOARD_INTERCOM_CLIENT_ID = CLIENT_ID
    settings.SWITCHBOARD_INTERCOM_CLIENT_SECRET = CLIENT_SECRET


@pytest.fixture
def operator(client: Client, django_user_model: Any) -> Client:
    user = django_user_model.objects.create_superuser(username="operator", password=None)
    client.force_login(user)
    return client


def said(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def connect(operator: Client, destination: Destination) -> str:
    """Click Connect: the URL of Intercom's authorise page the admin redirects to."""
    response = operator.post(
        reverse("admin:integrations_destination_connect", args=[destination.pk])
    )
    assert response.status_code == 302
    return response["Location"]


def decide(authorise_url: str, decision: str) -> str:
    """Open Intercom's page and click a button: the redirect back to Switchboard."""
    page = requests.get(authorise_url, timeout=5)
    assert page.status_code == 200
    assert "Authorise" in page.text and "Deny" in page.text
    query = {k: v[-1] for k, v in parse_qs(urlsplit(authorise_url).query).items()}
    origin = authorise_url.split("/oauth?")[0]
    answer = requests.post(
        origin + "/oauth/decide",
        data={**query, "decision": decision},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 302
    return answer.headers["Location"]


def come_back(operator: Client, redirect: str) -> Any:
    parts = urlsplit(redirect)
    assert parts.path == CALLBACK
    return operator.get(parts.path + "?" + parts.query)


@pytest.fixture
def unconnected(intercom_sandbox: Any) -> Destination:
    return DestinationFactory(name="prod", base_url=intercom_sandbox.url, access_token="")


def test_connect_sends_the_operator_to_intercoms_authorise_page_with_a_signed_state(
    operator, unconnected, intercom_sandbox
):
    url = connect(operator, unconnected)

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert url.startswith(intercom_sandbox.url + "/oauth?")
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == ["http://testserver" + CALLBACK]
    assert CLIENT_SECRET not in url
    assert oauth.oauth_state_read(session=operator.session, state=query["state"][0]).pk == (
        unconnected.pk
    )


def test_authorising_stores_the_token_encrypted_and_names_the_workspace(
    operator, unconnected, intercom_sandbox
):
    response = come_back(operator, decide(connect(operator, unconnected), "authorise"))

    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:integrations_destination_change", args=[unconnected.pk]
    )
    unconnected.refresh_from_db()
    assert unconnected.access_token == intercom_sandbox.token
    assert unconnected.oauth_connected_at is not None
    assert unconnected.workspace_name == "Switchboard Sandbox"
    assert said(response) == [
        "Connected to Intercom workspace “Switchboard Sandbox”: the token is stored encrypted, "
        "and deliveries use it from now on."
    ]
    raw = Destination.objects.filter(pk=unconnected.pk).values_list("access_token", flat=True)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token FROM integrations_destination WHERE id = %s", [unconnected.pk]
        )
        stored = cursor.fetchone()[0]
    assert intercom_sandbox.token not in stored and raw  # Fernet at rest
    exchange = [e for e in intercom_sandbox.sandbox.oauth_log() if e["step"] == "token_exchange"]
    assert exchange[0]["client_id"] == CLIENT_ID and exchange[0]["client_secret_ok"]
    # the page says so, and never shows the token
    page = operator.get(reverse("admin:integrations_destination_change", args=[unconnected.pk]))
    html = page.content.decode()
    assert "Connected to workspace “Switchboard Sandbox” with Connect to Intercom" in html
    assert intercom_sandbox.token not in html
    assert "Disconnect" in html


def test_denying_changes_nothing_and_says_so(operator, intercom_sandbox):
    destination = DestinationFactory(base_url=intercom_sandbox.url, access_token="pasted")

    response = come_back(operator, decide(connect(operator, destination), "deny"))

    destination.refresh_from_db()
    assert destination.access_token == "pasted"
    assert destination.oauth_connected_at is None
    assert said(response) == [
        "Intercom says the app was not authorised (you, or Intercom, declined). Nothing changed: "
        "the stored token, if any, is kept."
    ]


@pytest.mark.parametrize("tamper", ["forged", "replayed", "expired", "other_session"])
def test_a_callback_whose_state_is_not_ours_fresh_and_unused_is_refused(
    operator, unconnected, intercom_sandbox, tamper, monkeypatch, django_user_model
):
    redirect = decide(connect(operator, unconnected), "authorise")
    parts = urlsplit(redirect)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    client = operator
    if tamper == "forged":
        query["state"] = query["state"][:-3] + "abc"
    elif tamper == "replayed":
        operator.get(come_back(operator, redirect)["Location"])  # the first use connects
        Destination.objects.filter(pk=unconnected.pk).update(access_token="")
    elif tamper == "expired":
        monkeypatch.setattr(oauth, "STATE_MAX_AGE", -1)
    else:
        client = Client()
        other = django_user_model.objects.create_superuser(username="other", password=None)
        client.force_login(other)

    response = client.get(CALLBACK, query)

    unconnected.refresh_from_db()
    assert unconnected.access_token == ""
    assert response["Location"] == reverse("admin:integrations_destination_changelist")
    assert said(response) == [oauth.STATE_REFUSED]


def test_an_exchange_intercom_refuses_changes_nothing(
    operator, unconnected, intercom_sandbox, settings
):
    redirect = decide(connect(operator, unconnected), "authorise")
    settings.SWITCHBOARD_INTERCOM_CLIENT_SECRET = "not-the-apps-secret"

    response = come_back(operator, redirect)

    unconnected.refresh_from_db()
    assert unconnected.access_token == ""
    assert said(response) == [
        "Intercom refused to exchange the authorisation code (HTTP 401: unauthorized: The client "
        "id or secret is not the app's.). Nothing changed; try Connect to Intercom again, and "
        "check the app's client id and secret."
    ]


def test_intercom_out_of_reach_during_the_exchange_changes_nothing(operator, intercom_sandbox):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    destination = DestinationFactory(base_url=closed, access_token="")
    authorise_url = connect(operator, destination)
    # Intercom's page is the sandbox's; the exchange goes to the unreachable host.
    redirect = decide(authorise_url.replace(closed, intercom_sandbox.url), "authorise")

    response = come_back(operator, redirect)

    destination.refresh_from_db()
    assert destination.access_token == ""
    assert said(response) == [
        "Intercom could not be reached to finish connecting (ConnectionError). Nothing changed; "
        "try Connect to Intercom again."
    ]


def test_without_an_app_connect_says_what_to_set_up(operator, unconnected, settings):
    settings.SWITCHBOARD_INTERCOM_CLIENT_ID = ""

    response = operator.post(
        reverse("admin:integrations_destination_connect", args=[unconnected.pk])
    )

    assert response["Location"] == reverse(
        "admin:integrations_destination_change", args=[unconnected.pk]
    )
    assert "No Intercom app is set up for Connect to Intercom" in said(response)[0]


def test_an_app_saved_in_the_admin_wins_and_its_secret_is_never_shown(operator, settings):
    settings.SWITCHBOARD_INTERCOM_CLIENT_ID = ""
    response = operator.post(
        reverse("admin:integrations_intercomapp_add"),
        {"client_id": "app-from-admin", "client_secret": "s3cret-from-admin"},
    )
    assert response.status_code == 302
    app = oauth.oauth_app()
    assert app == oauth.OAuthApp("app-from-admin", "s3cret-from-admin")
    assert "s3cret" not in repr(app)

    page = operator.get(reverse("admin:integrations_intercomapp_change", args=[1]))
    html = page.content.decode()
    assert "s3cret-from-admin" not in html
    assert "http://testserver" + CALLBACK in html  # the redirect URL to list in Intercom
    assert IntercomApp.objects.count() == 1


def test_disconnect_forgets_the_token_and_holds_deliveries(operator, intercom_sandbox):
    destination = DestinationFactory(base_url=intercom_sandbox.url, access_token="pasted")

    response = operator.post(
        reverse("admin:integrations_destination_disconnect", args=[destination.pk])
    )

    destination.refresh_from_db()
    assert destination.access_token == ""
    assert destination.auth_failed_at is not None
    assert said(response)[0].startswith("Disconnected: the token of")
    page = operator.get(reverse("admin:integrations_destination_change", args=[destination.pk]))
    assert "Not connected: nothing is sent until you use Connect to Intercom" in (
        page.content.decode()
    )


def test_the_redirect_url_uses_the_public_base_url(operator, unconnected, settings):
    settings.SWITCHBOARD_PUBLIC_URL = "https://switchboard.example"

    url = connect(operator, unconnected)

    assert parse_qs(urlsplit(url).query)["redirect_uri"] == [
        "https://switchboard.example" + CALLBACK
    ]


def test_a_webhook_source_connects_and_takes_the_apps_client_secret(
    operator, intercom_sandbox, settings
):
    settings.SWITCHBOARD_INTERCOM_OAUTH_AUTHORIZE_URL = intercom_sandbox.url + "/oauth"
    source = SourceFactory(kind=Source.Kind.INTERCOM_WEBHOOK, webhook_secret="pasted-secret")
    url = reverse("admin:integrations_source_connect", args=[source.pk])
    assert "The workspace's region" in operator.get(url).content.decode()

    response = operator.post(url, {"region": "eu"})
    response = come_back(operator, decide(response["Location"], "authorise"))

    source.refresh_from_db()
    assert source.webhook_secret == CLIENT_SECRET
    assert source.intercom_workspace_name == "Switchboard Sandbox"
    assert said(response) == [
        "Connected to Intercom workspace “Switchboard Sandbox”: the app's client secret now "
        "verifies this source's notifications."
    ]
    assert (
        CLIENT_SECRET
        not in operator.get(
            reverse("admin:integrations_source_change", args=[source.pk])
        ).content.decode()
    )


@pytest.mark.parametrize(
    ("region", "authorise", "token"),
    [
        ("us", "https://app.intercom.com/oauth", "https://api.intercom.io/auth/eagle/token"),
        ("eu", "https://app.eu.intercom.com/oauth", "https://api.eu.intercom.io/auth/eagle/token"),
        ("au", "https://app.au.intercom.com/oauth", "https://api.au.intercom.io/auth/eagle/token"),
    ],
)
def test_the_region_decides_intercoms_hosts(region, authorise, token):
    destination = Destination(pk=7, region=region)

    target = oauth.destination_target(destination)

    assert (target.authorize_url, target.token_url) == (authorise, token)


def test_the_webhook_url_shown_uses_the_public_base_url(operator, settings):
    settings.SWITCHBOARD_PUBLIC_URL = "https://switchboard.example"
    source = SourceFactory(kind=Source.Kind.INTERCOM_WEBHOOK, webhook_secret="s")

    html = operator.get(reverse("admin:integrations_source_change", args=[source.pk])).content

    assert f"https://switchboard.example/webhooks/intercom/{source.pk}" in html.decode()
    assert "http://testserver/webhooks/" not in html.decode()


def test_calls_waiting_for_a_token_go_out_once_connected(operator, intercom_sandbox, settings):
    from streaming.models import Delivery
    from tests.streaming.delivery_setup import drain_all, identify, ingest, statuses

    sync = SyncFactory(
        destination=DestinationFactory(base_url=intercom_sandbox.url, access_token="")
    )
    Destination.objects.filter(pk=sync.destination_id).update(auth_failed_at=timezone.now())
    deliveries = ingest(sync, [identify("u-42")])
    drain_all(sync)
    assert statuses(deliveries) == [Delivery.Status.PENDING]  # held: nothing to send with
    assert intercom_sandbox.requests == []

    come_back(operator, decide(connect(operator, sync.destination), "authorise"))
    drain_all(sync)

    assert statuses(deliveries) == [Delivery.Status.SUCCEEDED]
    (contact,) = intercom_sandbox.state()["contacts"]
    assert contact["external_id"] == "u-42"


def test_a_webhook_source_connect_without_a_region_says_so(operator):
    source = SourceFactory(kind=Source.Kind.INTERCOM_WEBHOOK, webhook_secret="s")

    response = operator.post(
        reverse("admin:integrations_source_connect", args=[source.pk]), {"region": "mars"}
    )

    assert response.status_code == 200
    page = unescape(response.content.decode())
    assert "Choose the workspace's region: US, EU or Australia." in page
