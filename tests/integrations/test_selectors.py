"""Reading syncs as plain data, and the per-process routes cache ingest relies on (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.core.cache import cache

from integrations.filtering import FilterRule
from integrations.intercom.operations import SyncConfig
from integrations.models import INTERCOM_EVENTS, PropertyMapping, Source, Sync
from integrations.selectors import (
    ROUTES_VERSION_KEY,
    SyncRoute,
    routes_cache_clear,
    routes_for_source,
    sync_config_build,
    sync_for_delivery,
)
from tests.factories import (
    EventFilterFactory,
    PropertyMappingFactory,
    SourceFactory,
    SyncFactory,
)

pytestmark = pytest.mark.django_db

BLOCK_INTERCOM = FilterRule("exclude", event_name=INTERCOM_EVENTS)


@pytest.fixture(autouse=True)
def fresh_routes_cache() -> Iterator[None]:
    # Test transactions roll back without signals: start and end with an empty process cache.
    routes_cache_clear()
    yield
    routes_cache_clear()


def mapping(sync: Sync, target: str, source_path: str, intercom_name: str) -> PropertyMapping:
    return PropertyMappingFactory(
        sync=sync, target=target, source_path=source_path, intercom_name=intercom_name
    )


def test_a_sync_becomes_the_config_the_mapping_reads() -> None:
    sync = SyncFactory(
        send_users=False,
        send_events=True,
        send_companies=False,
        match_by=Sync.MatchBy.EMAIL,
        external_id_path="traits.account_id",
        contact_role=Sync.Role.LEAD,
        missing_contact=Sync.MissingContact.SKIP,
        anonymous=Sync.Anonymous.ANONYMOUS_ID,
        page_handling=Sync.PageHandling.EVENT,
        update_last_seen=True,
        unknown_attributes=Sync.UnknownAttributes.DROP,
        send_all_properties=True,
    )
    target = PropertyMapping.Target
    mapping(sync, target.EVENT_METADATA, "properties.total", "total")
    mapping(sync, target.EVENT_METADATA, "context.app.version", "app_version")
    mapping(sync, target.CONTACT_ATTRIBUTE, "traits.plan", "plan")
    mapping(sync, target.COMPANY_ATTRIBUTE, "traits.tier", "tier")

    assert sync_config_build(sync=sync) == SyncConfig(
        send_users=False,
        send_events=True,
        send_companies=False,
        match_by="email",
        external_id_path="traits.account_id",
        contact_role="lead",
        missing_contact="skip",
        anonymous="anonymous_id",
        page_handling="event",
        update_last_seen=True,
        unknown_attributes="drop",
        send_all_properties=True,
        event_metadata=(("properties.total", "total"), ("context.app.version", "app_version")),
        contact_attributes=(("traits.plan", "plan"),),
        company_attributes=(("traits.tier", "tier"),),
    )


def test_a_source_routes_to_its_syncs_with_their_filters_a_disabled_one_marked() -> None:
    source = SourceFactory()
    enabled = SyncFactory(sources=[source])
    paused = SyncFactory(sources=[source], status=Sync.Status.PAUSED)  # holds: routed
    disabled = SyncFactory(sources=[source], status=Sync.Status.DISABLED)  # drops, counted
    SyncFactory()  # another source's

    assert routes_for_source(source_id=source.pk) == [
        SyncRoute(
            sync_id=sync.pk,
            destination_id=sync.destination_id,
            config=SyncConfig(),
            rules=(BLOCK_INTERCOM,),
            disabled=sync is disabled,
        )
        for sync in (enabled, paused, disabled)
    ]


def test_a_sync_fed_by_two_sources_routes_from_both() -> None:
    first, second = SourceFactory(), SourceFactory()
    sync = SyncFactory(sources=[first, second])

    assert [route.sync_id for route in routes_for_source(source_id=first.pk)] == [sync.pk]
    assert [route.sync_id for route in routes_for_source(source_id=second.pk)] == [sync.pk]


def test_routes_are_read_once_then_served_from_memory(django_assert_num_queries) -> None:
    source = SourceFactory()
    SyncFactory(sources=[source])
    SyncFactory(sources=[source])
    with django_assert_num_queries(3):  # syncs, then their filters and mappings (prefetched)
        routes_for_source(source_id=source.pk)

    with django_assert_num_queries(0):
        routes = routes_for_source(source_id=source.pk)

    assert len(routes) == 2


def _add_filter(sync: Sync, source: Source) -> None:
    EventFilterFactory(sync=sync, action="include", event_name="Order *")


def _remove_filters(sync: Sync, source: Source) -> None:
    sync.filters.all().delete()


def _disable(sync: Sync, source: Source) -> None:
    sync.status = Sync.Status.DISABLED
    sync.save()


def _add_mapping(sync: Sync, source: Source) -> None:
    mapping(sync, PropertyMapping.Target.CONTACT_ATTRIBUTE, "traits.plan", "plan")


def _detach_source(sync: Sync, source: Source) -> None:
    sync.sources.remove(source)


def _new_sync(sync: Sync, source: Source) -> None:
    SyncFactory(sources=[source])


# (change made in the admin, the routes afterwards as (sync id, number of rules, config))
CHANGES = [
    pytest.param(
        _add_filter,
        lambda sync: [(sync.pk, 2, SyncConfig())],
        id="a-new-filter",
    ),
    pytest.param(_remove_filters, lambda sync: [(sync.pk, 0, SyncConfig())], id="filters-deleted"),
    pytest.param(_disable, lambda sync: [(sync.pk, 1, SyncConfig(), True)], id="sync-disabled"),
    pytest.param(
        _add_mapping,
        lambda sync: [(sync.pk, 1, SyncConfig(contact_attributes=(("traits.plan", "plan"),)))],
        id="a-new-mapping",
    ),
    pytest.param(_detach_source, lambda sync: [], id="source-removed-from-sync"),
    pytest.param(
        _new_sync,
        lambda sync: [
            (pk, 1, SyncConfig()) for pk in Sync.objects.order_by("id").values_list("pk", flat=True)
        ],
        id="a-new-sync",
    ),
]


@pytest.mark.parametrize(("change", "expected"), CHANGES)
def test_an_admin_change_reaches_ingest_on_the_next_call(
    change: Callable[[Sync, Source], None], expected: Callable[[Sync], list]
) -> None:
    source = SourceFactory()
    sync = SyncFactory(sources=[source])
    routes_for_source(source_id=source.pk)  # cached

    change(sync, source)

    routes = routes_for_source(source_id=source.pk)
    seen = [(route.sync_id, len(route.rules), route.config, route.disabled) for route in routes]
    # (sync id, number of rules, config), and True for a disabled sync's route
    assert [route if route[3] else route[:3] for route in seen] == expected(sync)


def test_a_version_bumped_by_another_process_reloads_the_routes() -> None:
    source = SourceFactory()
    sync = SyncFactory(sources=[source])
    routes_for_source(source_id=source.pk)
    # Another process's edit: the rows change here without a signal in this process...
    Sync.objects.filter(pk=sync.pk).update(send_events=False)
    assert routes_for_source(source_id=source.pk)[0].config.send_events is True

    # ...and its receiver bumps the shared version.
    cache.incr(ROUTES_VERSION_KEY)

    assert routes_for_source(source_id=source.pk)[0].config.send_events is False


def test_destination_health_updates_keep_the_routes_cached(django_assert_num_queries) -> None:
    source = SourceFactory()
    sync = SyncFactory(sources=[source])
    routes_for_source(source_id=source.pk)
    destination = sync.destination

    destination.last_error = "500 from Intercom"
    destination.save(update_fields=["last_error", "last_error_at"])

    with django_assert_num_queries(0):
        routes_for_source(source_id=source.pk)


def test_a_sync_is_read_once_for_the_delivery_workers_until_the_routes_change(
    django_assert_num_queries,
) -> None:
    sync = SyncFactory(send_events=True)
    mapping(sync, PropertyMapping.Target.EVENT_METADATA, "properties.total", "total")
    with django_assert_num_queries(2):  # the sync with its destination, then its mappings
        loaded = sync_for_delivery(sync_id=sync.pk)
    assert loaded.sync.destination == sync.destination
    assert loaded.config.event_metadata == (("properties.total", "total"),)
    with django_assert_num_queries(0):
        assert sync_for_delivery(sync_id=sync.pk) is loaded

    # another process edits the sync: its receiver bumps the shared version
    Sync.objects.filter(pk=sync.pk).update(send_events=False)
    cache.incr(ROUTES_VERSION_KEY)

    assert sync_for_delivery(sync_id=sync.pk).config.send_events is False


def test_a_deleted_sync_is_none_for_the_delivery_workers() -> None:
    sync = SyncFactory()
    sync_id = sync.pk
    sync.delete()

    assert sync_for_delivery(sync_id=sync_id) is None
