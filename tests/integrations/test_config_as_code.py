"""`manage.py switchboard export | apply`: a round trip without secrets, idempotent, all or nothing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from integrations.config_as_code import ConfigError, config_apply, config_export
from integrations.models import Destination, EventFilter, PropertyMapping, Source, Sync, WriteKey
from tests.factories import DestinationFactory, SourceFactory, SyncFactory

pytestmark = pytest.mark.django_db

ENV = {"INTERCOM_TOKEN": "tok_PLAINTEXT_env", "HOOK_SECRET": "whs_PLAINTEXT_env"}

CONFIG = textwrap.dedent(
    """\
    version: 1
    sources:
      - name: web
        kind: http
      - name: intercom-activity
        kind: intercom_webhook
        webhook_secret: ${HOOK_SECRET}
    destinations:
      - name: main
        region: eu
        api_version: "2.14"
        access_token: ${INTERCOM_TOKEN}
    syncs:
      - name: web-to-main
        sources: [web]
        destination: main
        status: paused
        match_by: email
        retry_window: "02:00:00"
        filters:
          - action: exclude
            event_name: "[Intercom] *"
          - field: properties.plan
            operator: eq
            value: pro
        mappings:
          - target: event_metadata
            source_path: properties.plan
            intercom_name: plan
    """
)


def state() -> tuple:
    """Everything apply could change, to prove that something did not change."""
    return (
        config_export(),
        list(Source.objects.values_list("name", "webhook_secret")),
        list(Destination.objects.values_list("name", "access_token")),
        list(EventFilter.objects.values_list("id", flat=True)),
        list(PropertyMapping.objects.values_list("id", flat=True)),
    )


def test_apply_creates_everything_by_name():
    report = config_apply(text=CONFIG, environ=ENV)

    assert str(report).splitlines() == [
        "create source 'web'",
        "create source 'intercom-activity'",
        "create destination 'main'",
        "create sync 'web-to-main'",
    ]
    sync = Sync.objects.get(name="web-to-main")
    assert (sync.status, sync.match_by, sync.retry_window.total_seconds()) == (
        "paused",
        "email",
        7200,
    )
    assert [s.name for s in sync.sources.all()] == ["web"]
    assert sync.destination.access_token == "tok_PLAINTEXT_env"
    assert sync.destination.api_base_url == "https://api.eu.intercom.io"
    assert Source.objects.get(name="intercom-activity").webhook_secret == "whs_PLAINTEXT_env"
    assert [str(f) for f in sync.filters.all()] == [
        "Exclude event '[Intercom] *'",
        "Include where properties.plan = pro",
    ]
    assert sync.mappings.get().intercom_name == "plan"


def test_applying_the_same_file_twice_changes_nothing_the_second_time():
    config_apply(text=CONFIG, environ=ENV)
    before = state()

    report = config_apply(text=CONFIG, environ=ENV)

    assert str(report) == "no changes"
    assert state() == before


def test_export_holds_no_secret_and_no_write_key():
    config_apply(text=CONFIG, environ=ENV)
    _, plaintext = WriteKey.objects.issue(source=Source.objects.get(name="web"))
    destination = Destination.objects.get(name="main")
    destination.identity_verification_secret = "idv_PLAINTEXT"
    destination.save()

    exported = config_export()

    for secret in ("PLAINTEXT", plaintext, plaintext[:10], "access_token", "webhook_secret"):
        assert secret not in exported
    assert "write_key" not in exported and "key_hash" not in exported


def test_export_then_apply_on_an_empty_installation_rebuilds_the_same_configuration():
    # given a configuration built in the admin
    web = SourceFactory(name="web")
    destination = DestinationFactory(name="sandbox")
    sync = SyncFactory(name="all", sources=[web], destination=destination, send_companies=False)
    EventFilter.objects.create(sync=sync, field="traits.email", operator="contains", value="@")
    PropertyMapping.objects.create(
        sync=sync, target="contact_attribute", source_path="traits.plan", intercom_name="plan"
    )
    exported = config_export()

    # when everything is deleted and the export applied again, with the token from the env
    Sync.objects.all().delete()
    Destination.objects.all().delete()
    Source.objects.all().delete()
    with_token = exported.replace(
        "  api_version: '2.16'\n", "  api_version: '2.16'\n  access_token: ${INTERCOM_TOKEN}\n"
    )
    config_apply(text=with_token, environ=ENV)

    # then the configuration is the same, filters and mappings included
    assert config_export() == exported
    assert str(config_apply(text=with_token, environ=ENV)) == "no changes"


def test_apply_updates_only_what_differs_and_names_it():
    config_apply(text=CONFIG, environ=ENV)
    changed = CONFIG.replace("status: paused", "status: enabled").replace(
        "value: pro", "value: team"
    )

    report = config_apply(text=changed, environ={**ENV, "INTERCOM_TOKEN": "rotated"})

    assert str(report).splitlines() == [
        "update destination 'main': access_token",
        "update sync 'web-to-main': status, filters",
    ]
    assert "rotated" not in str(report)
    assert Sync.objects.get().filters.get(field="properties.plan").value == "team"


def test_dry_run_reports_and_changes_nothing():
    config_apply(text=CONFIG, environ=ENV)
    before = state()

    report = config_apply(
        text=CONFIG.replace("status: paused", "status: enabled"), dry_run=True, environ=ENV
    )

    assert str(report) == "would update sync 'web-to-main': status"
    assert state() == before


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        (
            CONFIG.replace("        value: pro\n", "        value: [pro\n"),
            "(line 26): not valid YAML",
        ),
        (
            CONFIG.replace("    match_by: email\n", "    match_by: email\n    colour: blue\n"),
            "syncs[0].colour (line 19): unknown key",
        ),
        (
            CONFIG.replace("operator: eq", "operator: equals"),
            "syncs[0].filters[1].operator (line 24): Value 'equals' is not a valid choice.",
        ),
        (
            CONFIG.replace("        value: pro\n", ""),
            "syncs[0].filters[1].value (line 23): This operator needs a value.",
        ),
        (
            CONFIG.replace('retry_window: "02:00:00"', 'retry_window: "00:00:10"'),
            "syncs[0].retry_window (line 19): Between 1 minute and 7 days.",
        ),
        (
            CONFIG.replace("intercom_name: plan", "intercom_name: my plan"),
            "syncs[0].mappings[0].intercom_name (line 29): Intercom names use letters",
        ),
        (
            CONFIG.replace("region: eu", "region: mars"),
            "destinations[0].region (line 10): Value 'mars' is not a valid choice.",
        ),
        (
            CONFIG.replace("sources: [web]", "sources: [web, mobile]"),
            "syncs[0].sources[1] (line 15): no source named 'mobile'",
        ),
        (
            CONFIG.replace(
                "    status: paused\n", "    status: paused\n    send_users: yes please\n"
            ),
            "syncs[0].send_users (line 18): expected true or false",
        ),
        (
            CONFIG.replace("${INTERCOM_TOKEN}", "${NOT_SET_ANYWHERE}"),
            "destinations[0].access_token (line 12): environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            CONFIG.replace("  - name: intercom-activity", "  - name: web"),
            "sources[1].name (line 5): also given at sources[0]",
        ),
    ],
)
def test_a_broken_file_changes_nothing_and_says_where_and_why(broken: str, expected: str):
    config_apply(text=CONFIG.replace("status: paused", "status: enabled"), environ=ENV)
    before = state()

    with pytest.raises(ConfigError) as caught:
        config_apply(text=broken, environ=ENV)

    assert expected in str(caught.value)
    assert state() == before


def test_a_broken_file_creates_nothing_even_when_the_error_comes_last():
    broken = CONFIG.replace("intercom_name: plan", "intercom_name: $plan")

    with pytest.raises(ConfigError):
        config_apply(text=broken, environ=ENV)

    assert not Source.objects.exists() and not Destination.objects.exists()
    assert not Sync.objects.exists()


def test_an_eleventh_metadata_mapping_in_a_file_is_refused_at_its_place():
    rows = "".join(
        f"      - target: event_metadata\n"
        f"        source_path: properties.p{i}\n"
        f"        intercom_name: p{i}\n"
        for i in range(11)
    )
    text = CONFIG.split("    mappings:\n")[0] + "    mappings:\n" + rows

    with pytest.raises(ConfigError) as caught:
        config_apply(text=text, environ=ENV)

    assert "syncs[0].mappings[10] (line 57): Intercom keeps at most 10 metadata keys" in str(
        caught.value
    )


def test_the_command_applies_a_file_and_exports(tmp_path: Path, monkeypatch, capsys):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "switchboard.yaml"
    path.write_text(CONFIG)

    call_command("switchboard", "apply", str(path), "--dry-run")
    assert "would create sync 'web-to-main'" in capsys.readouterr().out
    assert not Sync.objects.exists()

    call_command("switchboard", "apply", str(path))
    call_command("switchboard", "apply", str(path))
    out = capsys.readouterr().out
    assert "create sync 'web-to-main'" in out and out.endswith("no changes\n")

    call_command("switchboard", "export")
    assert "name: web-to-main" in capsys.readouterr().out


def test_the_command_fails_with_every_problem_listed(tmp_path: Path):
    path = tmp_path / "switchboard.yaml"
    path.write_text(CONFIG.replace("kind: http", "kind: ftp"))

    with pytest.raises(CommandError) as caught:
        call_command("switchboard", "apply", str(path))

    message = str(caught.value)
    assert "is invalid, nothing was changed" in message
    assert "sources[0].kind (line 4): Value 'ftp' is not a valid choice." in message
    assert "environment variable HOOK_SECRET is not set" in message
    assert not Source.objects.exists()


def test_an_export_applied_over_a_hand_ordered_file_is_no_change():
    text = CONFIG + (
        "      - target: contact_attribute\n"
        "        source_path: traits.plan\n"
        "        intercom_name: plan\n"
    )
    config_apply(text=text, environ=ENV)
    exported = config_export()
    assert exported.index("contact_attribute") < exported.index("event_metadata")  # reordered

    report = config_apply(text=exported, environ=ENV)

    assert str(report) == "no changes"
