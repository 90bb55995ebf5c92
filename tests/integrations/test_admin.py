"""The control-plane admin as an operator uses it: secrets stay write-only, keys show once."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from integrations.intercom.sandbox import Sandbox
from integrations.models import Destination, PropertyMapping, Source, Sync, WriteKey
from integrations.services import write_key_authenticate
from tests.factories import (
    DestinationFactory,
    PropertyMappingFactory,
    SourceFactory,
    SyncFactory,
)

pytestmark = pytest.mark.django_db

TOKEN = "tok_PLAINTEXT_access_token_4711"
IDENTITY_SECRET = "idv_PLAINTEXT_identity_secret_0815"
WEBHOOK_SECRET = "whs_PLAINTEXT_client_secret_1234"
SECRETS = (TOKEN, IDENTITY_SECRET, WEBHOOK_SECRET)


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    # PBKDF2 costs a second per hash on a shared 2-core machine; the admin does not care.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def operator(client: Client, django_user_model: Any) -> Client:
    user = django_user_model.objects.create_superuser(username="operator", password=None)
    client.force_login(user)
    return client


def form_data(response: Any) -> dict[str, Any]:
    """What the browser would post back from an admin change form, unchanged."""
    data: dict[str, Any] = {}

    def add(form: Any) -> None:
        for bound in form:
            value = bound.value()
            if value is None or value is False:
                continue
            if value is True:
                value = "on"
            data[bound.html_name] = value

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        add(formset.management_form)
        for form in formset.forms:
            add(form)
    return data


def assert_no_secret(html: str) -> None:
    for secret in SECRETS:
        assert secret not in html


def pages_of(operator: Client, obj: Any) -> list[str]:
    """Every admin page that shows the object: changelist, change form, history, delete page."""
    opts = obj._meta
    names = ["changelist", "change", "history", "delete"]
    pages = []
    for name in names:
        args = [] if name == "changelist" else [obj.pk]
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_{name}", args=args)
        response = operator.get(url)
        assert response.status_code == 200, url
        pages.append(response.content.decode())
    return pages


def test_secrets_saved_in_the_admin_never_appear_in_any_admin_page(
    operator: Client, sandbox_url: str
):
    # given a destination and a webhook source created through the admin (saving a token asks
    # the workspace's GET /me: here the sandbox, which refuses this token)
    response = operator.post(
        reverse("admin:integrations_destination_add"),
        {
            "name": "production",
            "region": "custom",
            "base_url": sandbox_url,
            "api_version": "2.16",
            "access_token": TOKEN,
            "identity_verification_secret": IDENTITY_SECRET,
        },
    )
    assert response.status_code == 302, response.content.decode()
    response = operator.post(
        reverse("admin:integrations_source_add"),
        {
            "name": "intercom-activity",
            "kind": "intercom_webhook",
            "enabled": "on",
            "webhook_secret": WEBHOOK_SECRET,
            "write_keys-TOTAL_FORMS": "0",
            "write_keys-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()
    destination = Destination.objects.get(name="production")
    source = Source.objects.get(name="intercom-activity")
    assert destination.access_token == TOKEN
    assert source.webhook_secret == WEBHOOK_SECRET

    # when the operator then edits them, changing a secret
    change = operator.get(reverse("admin:integrations_destination_change", args=[destination.pk]))
    data = form_data(change)
    data["access_token"] = TOKEN + "-new"
    assert operator.post(change.wsgi_request.path, data).status_code == 302

    # then no page shows a secret: lists, forms, history, delete confirmations, change messages
    sync = SyncFactory(destination=destination, sources=[source])
    for obj in (destination, source, sync):
        for html in pages_of(operator, obj):
            assert_no_secret(html)
            assert TOKEN + "-new" not in html
    for entry in LogEntry.objects.all():
        assert_no_secret(entry.change_message + entry.object_repr)
    assert "Access token" in LogEntry.objects.first().get_change_message()


def test_a_blank_secret_field_keeps_the_stored_value(operator: Client):
    destination = DestinationFactory(
        access_token=TOKEN, identity_verification_secret=IDENTITY_SECRET
    )
    url = reverse("admin:integrations_destination_change", args=[destination.pk])
    data = form_data(operator.get(url))
    assert data["access_token"] == ""  # the form never carries the stored value

    data["api_version"] = "2.14"
    response = operator.post(url, data)

    assert response.status_code == 302
    destination.refresh_from_db()
    assert (destination.api_version, destination.access_token) == ("2.14", TOKEN)
    assert destination.identity_verification_secret == IDENTITY_SECRET
    assert "access token" not in LogEntry.objects.get().get_change_message().lower()


def test_the_optional_identity_secret_can_be_cleared_but_the_token_cannot(operator: Client):
    destination = DestinationFactory(identity_verification_secret=IDENTITY_SECRET)
    url = reverse("admin:integrations_destination_change", args=[destination.pk])
    data = form_data(operator.get(url))
    assert "clear_access_token" not in data

    data["clear_identity_verification_secret"] = "on"
    assert operator.post(url, data).status_code == 302

    destination.refresh_from_db()
    assert destination.identity_verification_secret == ""
    assert destination.access_token  # untouched


def test_a_new_destination_without_a_token_is_saved_not_connected_and_held(operator: Client):
    # Connect to Intercom (OAuth) needs the destination first: a token is no longer required.
    response = operator.post(
        reverse("admin:integrations_destination_add"),
        {"name": "x", "region": "us", "api_version": "2.16", "access_token": ""},
        follow=True,
    )

    destination = Destination.objects.get(name="x")
    assert not destination.is_connected
    assert destination.auth_failed_at is not None  # nothing is sent until a token comes
    assert (
        "Saved without a token: nothing is sent to this workspace until you use Connect to "
        "Intercom or paste an access token." in response.content.decode()
    )


def test_a_new_token_releases_a_destination_held_after_a_401(operator: Client, sandbox_url: str):
    destination = DestinationFactory(base_url=sandbox_url)  # saving a token checks it there
    Destination.objects.filter(pk=destination.pk).update(auth_failed_at="2026-01-01T00:00:00Z")
    url = reverse("admin:integrations_destination_change", args=[destination.pk])
    data = form_data(operator.get(url))
    data["access_token"] = "right-token"

    operator.post(url, data)

    destination.refresh_from_db()
    assert destination.auth_failed_at is None


def test_issuing_a_write_key_shows_it_once_and_stores_only_its_hash(operator: Client):
    source = SourceFactory(name="web")
    issue_url = reverse("admin:integrations_source_issue_key", args=[source.pk])
    source_page = operator.get(reverse("admin:integrations_source_change", args=[source.pk]))
    assert issue_url in source_page.content.decode()  # the "Issue a new write key" button

    response = operator.post(issue_url, {"label": "web app"}, follow=True)  # POST, then GET

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    key = WriteKey.objects.get(source=source)
    plaintext = response.context["issued"][0][2]
    assert plaintext in response.content.decode()
    assert write_key_authenticate(key=plaintext) == key
    assert plaintext not in key.key_hash and plaintext not in key.prefix + key.label
    # and never again: the source page and the key list show the prefix only
    for html in pages_of(operator, source) + pages_of(operator, key):
        assert plaintext not in html
    assert (
        f"{key.prefix}…"
        in operator.get(
            reverse("admin:integrations_source_change", args=[source.pk])
        ).content.decode()
    )
    for entry in LogEntry.objects.all():
        assert plaintext not in entry.change_message


def test_the_issue_action_gives_one_key_per_http_source(operator: Client):
    web, app = SourceFactory(name="web"), SourceFactory(name="app")
    hooks = SourceFactory(name="hooks", kind="intercom_webhook", webhook_secret=WEBHOOK_SECRET)

    response = operator.post(
        reverse("admin:integrations_source_changelist"),
        {"action": "issue_write_keys", "_selected_action": [web.pk, app.pk, hooks.pk]},
        follow=True,
    )

    assert response.status_code == 200
    issued = response.context["issued"]
    assert {source.name for source, _, _ in issued} == {"web", "app"}
    for source, _, plaintext in issued:
        assert write_key_authenticate(key=plaintext).source == source
    assert not hooks.write_keys.exists()


def test_revoking_a_key_in_the_source_page_stops_it_at_once(operator: Client):
    source = SourceFactory()
    key, plaintext = WriteKey.objects.issue(source=source, label="old")
    assert write_key_authenticate(key=plaintext) == key  # cached now
    url = reverse("admin:integrations_source_change", args=[source.pk])
    data = form_data(operator.get(url))
    data["write_keys-0-revoke"] = "on"

    assert operator.post(url, data).status_code == 302

    key.refresh_from_db()
    assert key.revoked_at is not None
    assert write_key_authenticate(key=plaintext) is None
    assert "revoked" in operator.get(url).content.decode()


def test_the_revoke_action_revokes_the_selected_keys_only(operator: Client):
    source = SourceFactory()
    (old, old_plain), (new, new_plain) = (
        WriteKey.objects.issue(source=source),
        WriteKey.objects.issue(source=source),
    )

    operator.post(
        reverse("admin:integrations_writekey_changelist"),
        {"action": "revoke", "_selected_action": [old.pk]},
    )

    assert write_key_authenticate(key=old_plain) is None
    assert write_key_authenticate(key=new_plain) == new


def mapping_rows(count: int, start: int = 0) -> dict[str, str]:
    data = {}
    for i in range(count):
        data.update(
            {
                f"mappings-{start + i}-target": "event_metadata",
                f"mappings-{start + i}-source_path": f"properties.p{start + i}",
                f"mappings-{start + i}-intercom_name": f"p{start + i}",
            }
        )
    return data


def test_a_sync_cannot_map_more_than_ten_properties_to_event_metadata(operator: Client):
    sync = SyncFactory()
    url = reverse("admin:integrations_sync_change", args=[sync.pk])
    data = form_data(operator.get(url))
    data.update(mapping_rows(11))
    data["mappings-TOTAL_FORMS"] = "11"

    response = operator.post(url, data)

    assert response.status_code == 200
    assert "would map 11 properties to event metadata" in response.content.decode()
    assert "at most 10 metadata keys" in response.content.decode()
    assert not PropertyMapping.objects.exists()

    data.update(mapping_rows(1, start=10) | {"mappings-TOTAL_FORMS": "10"})
    assert operator.post(url, data).status_code == 302
    assert sync.mappings.count() == 10


def test_with_ten_mappings_one_can_be_swapped_for_another_in_one_save(operator: Client):
    sync = SyncFactory()
    for i in range(10):
        PropertyMappingFactory(
            sync=sync,
            target="event_metadata",
            source_path=f"properties.p{i}",
            intercom_name=f"p{i}",
        )
    url = reverse("admin:integrations_sync_change", args=[sync.pk])
    data = form_data(operator.get(url))
    data["mappings-0-DELETE"] = "on"
    data.update(mapping_rows(1, start=10))
    data["mappings-TOTAL_FORMS"] = "11"

    response = operator.post(url, data)

    assert response.status_code == 302, response.context["errors"]
    assert sorted(sync.mappings.values_list("intercom_name", flat=True)) == sorted(
        [f"p{i}" for i in range(1, 11)]
    )


def test_a_bad_filter_in_a_sync_is_refused_with_its_reason(operator: Client):
    sync = SyncFactory()
    url = reverse("admin:integrations_sync_change", args=[sync.pk])
    data = form_data(operator.get(url))
    data.update(
        {
            "filters-1-action": "include",
            "filters-1-field": "properties.amount",
            "filters-1-operator": "gt",
            "filters-1-value": "lots",
            "filters-TOTAL_FORMS": "2",
        }
    )

    response = operator.post(url, data)

    assert response.status_code == 200
    assert "&gt; and &lt; compare numbers." in response.content.decode()
    assert sync.filters.count() == 1


def test_an_operator_finds_syncs_by_status_destination_and_search(operator: Client):
    eu = DestinationFactory(name="eu-workspace")
    SyncFactory(name="billing", destination=eu, status="paused")
    SyncFactory(name="product")
    url = reverse("admin:integrations_sync_changelist")

    paused = operator.get(url, {"status__exact": "paused"}).context["cl"].result_list
    by_destination = operator.get(url, {"destination__id__exact": eu.pk}).context["cl"].result_list
    searched = operator.get(url, {"q": "eu-workspace"}).context["cl"].result_list

    assert [s.name for s in paused] == [s.name for s in by_destination] == ["billing"]
    assert [s.name for s in searched] == ["billing"]
    DestinationFactory(name="us-workspace", region="us", base_url="")
    regions = operator.get(
        reverse("admin:integrations_destination_changelist"), {"region__exact": "custom"}
    )
    assert {d.name for d in regions.context["cl"].result_list} == {
        "eu-workspace",
        Sync.objects.get(name="product").destination.name,
    }
    kinds = operator.get(reverse("admin:integrations_source_changelist"), {"kind__exact": "http"})
    assert kinds.context["cl"].result_count == 2


def test_pausing_syncs_from_the_list(operator: Client):
    sync = SyncFactory()

    operator.post(
        reverse("admin:integrations_sync_changelist"),
        {"action": "pause", "_selected_action": [sync.pk]},
    )

    sync.refresh_from_db()
    assert sync.status == Sync.Status.PAUSED


@pytest.fixture
def sandbox_url() -> Any:
    sandbox = Sandbox(token="right-token")
    url = sandbox.start()
    yield url
    sandbox.stop()


def test_check_connection_shows_the_workspace_and_admin(operator: Client, sandbox_url: str):
    destination = DestinationFactory(base_url=sandbox_url, access_token="right-token")
    url = reverse("admin:integrations_destination_check_connection", args=[destination.pk])
    page = operator.get(reverse("admin:integrations_destination_change", args=[destination.pk]))
    assert f'action="{url}"' in page.content.decode()  # the "Check connection" button

    response = operator.post(url, follow=True)

    html = response.content.decode()
    assert "Connected to Intercom workspace “Switchboard Sandbox” as admin Sandbox Operator" in html
    destination.refresh_from_db()
    assert destination.workspace_name == "Switchboard Sandbox"
    assert destination.last_checked_at and destination.last_success_at
    assert "right-token" not in html


def test_check_connection_with_a_wrong_token_shows_intercoms_error(
    operator: Client, sandbox_url: str
):
    destination = DestinationFactory(base_url=sandbox_url, access_token="wrong-token")
    url = reverse("admin:integrations_destination_check_connection", args=[destination.pk])

    response = operator.post(url, follow=True)

    html = response.content.decode()
    assert "Intercom check failed (HTTP 401): unauthorized: Access Token Invalid" in html
    destination.refresh_from_db()
    assert destination.auth_failed_at is not None
    assert "401" in destination.last_error
    assert (
        "token rejected"
        in operator.get(reverse("admin:integrations_destination_changelist")).content.decode()
    )
    assert "wrong-token" not in html


def test_check_connection_reports_an_unreachable_workspace(operator: Client):
    destination = DestinationFactory(base_url="http://127.0.0.1:9")  # discard port: refused
    url = reverse("admin:integrations_destination_check_connection", args=[destination.pk])

    response = operator.post(url, follow=True)

    assert "Intercom check failed (no answer)" in response.content.decode()
    destination.refresh_from_db()
    assert destination.last_error_at is not None


def test_check_connection_refuses_get(operator: Client):
    destination = DestinationFactory()
    url = reverse("admin:integrations_destination_check_connection", args=[destination.pk])

    assert operator.get(url).status_code == 405


def test_bootstrap_creates_the_admin_once_and_its_login_works(tmp_path, capsys):
    call_command("switchboard", "bootstrap", "--local-dir", str(tmp_path))
    password = (tmp_path / "admin-password").read_text().strip()
    first = capsys.readouterr().out

    call_command("switchboard", "bootstrap", "--local-dir", str(tmp_path))
    second = capsys.readouterr().out

    assert "http://127.0.0.1:8000/admin/" in first and f"admin / {password}" in first
    assert f"admin / {password}" in second and "already exists" in second
    assert Client().login(username="admin", password=password)


def test_bootstrap_demo_creates_a_working_key_once(tmp_path, capsys):
    args = ["switchboard", "bootstrap", "--local-dir", str(tmp_path)]
    call_command(*args, "--demo-sandbox-url", "http://127.0.0.1:8765")
    key = (tmp_path / "demo-write-key").read_text().strip()
    assert key in capsys.readouterr().out

    call_command(*args, "--demo-sandbox-url", "http://127.0.0.1:8765")

    assert key in capsys.readouterr().out
    assert WriteKey.objects.count() == 1
    sync = Sync.objects.get()
    assert write_key_authenticate(key=key).source in sync.sources.all()
    assert (sync.destination.api_base_url, sync.destination.access_token) == (
        "http://127.0.0.1:8765",
        "demo-token",
    )
