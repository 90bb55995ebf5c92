"""Every bad value an operator can save is refused by full_clean() with a reason that says why."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from integrations.models import (
    Destination,
    EventFilter,
    PropertyMapping,
    Source,
    Sync,
    WriteKey,
)
from tests.factories import (
    DestinationFactory,
    PropertyMappingFactory,
    SourceFactory,
    SyncFactory,
)

pytestmark = pytest.mark.django_db


def errors_of(instance: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        instance.full_clean()
    return caught.value.message_dict


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"kind": "http", "webhook_secret": "s"}, "webhook_secret", "Only Intercom webhook"),
        ({"kind": "intercom_webhook"}, "webhook_secret", "needs the app's client secret"),
        ({"kind": "smtp"}, "kind", "is not a valid choice"),
        ({"name": ""}, "name", "cannot be blank"),
    ],
)
def test_a_bad_source_is_refused(values: dict[str, Any], field: str, message: str):
    source = Source(**{"name": "web", **values})

    assert message in " ".join(errors_of(source)[field])


def test_source_names_are_unique():
    SourceFactory(name="web")

    assert "already exists" in errors_of(Source(name="web"))["name"][0]


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"region": "custom", "base_url": ""}, "base_url", "The custom region needs a base URL."),
        ({"region": "custom", "base_url": "ftp://x.example"}, "base_url", "http:// or https://"),
        ({"region": "us", "base_url": "http://x.example"}, "base_url", "only used with the custom"),
        ({"api_version": "1.4"}, "api_version", "is not a valid choice"),
        ({"region": "mars"}, "region", "is not a valid choice"),
    ],
)
def test_a_bad_destination_is_refused(values: dict[str, Any], field: str, message: str):
    destination = Destination(**{"name": "w", "region": "us", "access_token": "t", **values})

    assert message in " ".join(errors_of(destination)[field])


def test_a_good_destination_knows_its_api_base_url():
    eu = Destination(name="eu", region="eu", access_token="t")
    custom = Destination(
        name="c", region="custom", base_url="http://127.0.0.1:8765/", access_token="t"
    )

    eu.full_clean()
    custom.full_clean()

    assert eu.api_base_url == "https://api.eu.intercom.io"
    assert custom.api_base_url == "http://127.0.0.1:8765"


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"retry_window": timedelta(seconds=30)}, "retry_window", "Between 1 minute and 7 days."),
        ({"retry_window": timedelta(days=8)}, "retry_window", "Between 1 minute and 7 days."),
        ({"retry_window": "soon"}, "retry_window", "invalid format"),
        ({"external_id_path": "email"}, "external_id_path", "userId, anonymousId, or traits."),
        ({"external_id_path": "traits."}, "external_id_path", "traits.<name>"),
        ({"status": "running"}, "status", "is not a valid choice"),
        ({"contact_role": "visitor"}, "contact_role", "is not a valid choice"),
        ({"missing_contact": "ignore"}, "missing_contact", "is not a valid choice"),
        ({"page_handling": "all"}, "page_handling", "is not a valid choice"),
    ],
)
def test_a_bad_sync_is_refused(values: dict[str, Any], field: str, message: str):
    sync = Sync(**{"name": "s", "destination": DestinationFactory(), **values})

    assert message in " ".join(errors_of(sync)[field])


def test_a_sync_may_take_its_external_id_from_a_trait():
    sync = Sync(name="s", destination=DestinationFactory(), external_id_path="traits.account_id")

    sync.full_clean()


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({}, "__all__", "Give an event name pattern, a condition, or both."),
        (
            {"field": "plan", "operator": "eq", "value": "x"},
            "field",
            "properties./traits./context.",
        ),
        ({"field": "properties.plan"}, "operator", "A condition needs an operator."),
        ({"field": "properties.plan", "operator": "eq"}, "value", "This operator needs a value."),
        ({"field": "properties.n", "operator": "gt", "value": "many"}, "value", "compare numbers"),
        ({"event_name": "x", "operator": "eq"}, "field", "An operator or value needs a field."),
        ({"event_name": "x", "action": "maybe"}, "action", "is not a valid choice"),
        ({"field": "properties.n", "operator": "like", "value": "1"}, "operator", "valid choice"),
    ],
)
def test_a_bad_event_filter_is_refused(values: dict[str, Any], field: str, message: str):
    event_filter = EventFilter(**{"sync": SyncFactory(), **values})

    assert message in " ".join(errors_of(event_filter)[field])


@pytest.mark.parametrize(
    "values",
    [
        {"event_name": "Order *"},
        {"field": "properties.plan", "operator": "exists"},
        {"event_name": "Signed up", "field": "traits.age", "operator": "lt", "value": "18"},
        {"field": "context.locale", "operator": "in", "value": "de,fr"},
    ],
)
def test_good_event_filters_are_accepted(values: dict[str, Any]):
    EventFilter(**{"sync": SyncFactory(), **values}).full_clean()


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"source_path": "plan"}, "source_path", "Start with properties., traits. or context."),
        ({"source_path": "properties."}, "source_path", "Start with properties."),
        ({"intercom_name": "has space"}, "intercom_name", "no spaces, dots or '$'"),
        ({"intercom_name": "a.b"}, "intercom_name", "no spaces, dots or '$'"),
        ({"intercom_name": "$price"}, "intercom_name", "no spaces, dots or '$'"),
        ({"target": "conversation"}, "target", "is not a valid choice"),
    ],
)
def test_a_bad_property_mapping_is_refused(values: dict[str, Any], field: str, message: str):
    mapping = PropertyMapping(
        **{
            "sync": SyncFactory(),
            "target": "contact_attribute",
            "source_path": "traits.plan",
            "intercom_name": "plan",
            **values,
        }
    )

    assert message in " ".join(errors_of(mapping)[field])


def test_an_eleventh_event_metadata_mapping_is_refused():
    sync = SyncFactory()
    for i in range(10):
        PropertyMappingFactory(
            sync=sync,
            target="event_metadata",
            source_path=f"properties.p{i}",
            intercom_name=f"p{i}",
        )
    eleventh = PropertyMapping(
        sync=sync, target="event_metadata", source_path="properties.x", intercom_name="x"
    )
    attribute = PropertyMapping(
        sync=sync, target="contact_attribute", source_path="traits.x", intercom_name="x"
    )

    assert "at most 10 metadata keys" in errors_of(eleventh)["__all__"][0]
    attribute.full_clean()  # the limit concerns event metadata only


def test_two_mappings_cannot_write_the_same_intercom_name():
    sync = SyncFactory()
    PropertyMappingFactory(
        sync=sync, target="contact_attribute", source_path="traits.plan", intercom_name="plan"
    )
    duplicate = PropertyMapping(
        sync=sync, target="contact_attribute", source_path="traits.tier", intercom_name="plan"
    )

    assert "already exists" in " ".join(errors_of(duplicate)["__all__"])


def test_a_write_key_shows_its_prefix_not_its_secret():
    key, plaintext = WriteKey.objects.issue(source=SourceFactory(name="web"), label="site")

    assert str(key) == f"{plaintext[:10]}… (site)"
    assert key.prefix == plaintext[:10] and plaintext not in key.key_hash
