"""Reads of the control plane, as plain data for the pure mapping and the ingest hot path.

``sync_config_build`` turns a Sync row into the ``SyncConfig`` the transforms read;
``sync_for_delivery`` keeps that and the sync's row, with its destination, in each process for
the delivery workers, reloaded with the routes (the same version number, the same max age).
``routes_for_source`` answers, for every ingested call, "which enabled syncs take calls from this
source, with which settings and filters": it is cached in each process and reloaded (one query set
with prefetches) when a version number kept in Django's cache changes. The receivers connected in
``IntegrationsConfig.ready()`` bump that version whenever a Source, Destination, Sync, EventFilter
or PropertyMapping changes, so every process sees an edit made in the admin on its next call.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.urls import reverse

from integrations.filtering import FilterRule
from integrations.intercom.operations import SyncConfig
from integrations.models import Destination, PropertyMapping, Sync
from integrations.public_url import public_url

logger = logging.getLogger(__name__)

ROUTES_VERSION_KEY = "integrations:routes:version"
# Also reload this often whatever the version says: a process-local cache backend (the embedded
# default) cannot carry the version to other processes, and a lost bump must not last forever.
ROUTES_MAX_AGE_SECONDS = 30.0
# Destination columns the data plane writes after exchanges; they never change a route.
DESTINATION_HEALTH_FIELDS = frozenset(
    {"last_success_at", "last_error", "last_error_at", "auth_failed_at"}
)


@dataclass(frozen=True)
class SyncRoute:
    """One sync that takes the calls of a source: where they go and how.

    Enabled and paused syncs store deliveries (a paused one holds them); a disabled one is
    routed too, so that what it drops is counted.
    """

    sync_id: int
    destination_id: int
    config: SyncConfig
    rules: tuple[FilterRule, ...]
    disabled: bool = False


def sync_config_build(*, sync: Sync) -> SyncConfig:
    """The parts of ``sync`` the mapping reads (uses ``sync.mappings`` prefetches if present)."""
    by_target: dict[str, list[tuple[str, str]]] = {target: [] for target in PropertyMapping.Target}
    for mapping in sync.mappings.all():
        by_target[mapping.target].append((mapping.source_path, mapping.intercom_name))
    return SyncConfig(
        send_users=sync.send_users,
        send_events=sync.send_events,
        send_companies=sync.send_companies,
        match_by=sync.match_by,
        external_id_path=sync.external_id_path,
        contact_role=sync.contact_role,
        missing_contact=sync.missing_contact,
        anonymous=sync.anonymous,
        page_handling=sync.page_handling,
        update_last_seen=sync.update_last_seen,
        unknown_attributes=sync.unknown_attributes,
        send_all_properties=sync.send_all_properties,
        unarchive_contacts=sync.unarchive_contacts,
        event_metadata=tuple(by_target[PropertyMapping.Target.EVENT_METADATA]),
        contact_attributes=tuple(by_target[PropertyMapping.Target.CONTACT_ATTRIBUTE]),
        company_attributes=tuple(by_target[PropertyMapping.Target.COMPANY_ATTRIBUTE]),
        contact_tags=tuple(by_target[PropertyMapping.Target.CONTACT_TAG]),
        company_tags=tuple(by_target[PropertyMapping.Target.COMPANY_TAG]),
        timeline_link_attribute=sync.timeline_link_attribute,
        timeline_url=timeline_url() if sync.timeline_link_attribute else "",
    )


def timeline_url() -> str:
    """The user timeline's URL without the user (``?q=`` last), under SWITCHBOARD_PUBLIC_URL.

    Empty without that setting (a worker has no request to take a host from); a sync naming a
    timeline link attribute cannot be saved without it.
    """
    if not settings.SWITCHBOARD_PUBLIC_URL:
        return ""
    # A URL name, not an import: the control plane never imports the data plane's views.
    return public_url(reverse("admin:streaming_timeline")) + "?q="


def filter_rules_build(*, sync: Sync) -> tuple[FilterRule, ...]:
    """The sync's EventFilter rows, compiled (uses ``sync.filters`` prefetches if present)."""
    return tuple(
        FilterRule(
            action=row.action,
            event_name=row.event_name,
            field=row.field,
            operator=row.operator,
            value=row.value,
        )
        for row in sync.filters.all()
    )


@dataclass(frozen=True)
class SyncForDelivery:
    """What a delivery worker reads about a sync: its row (with the destination) and mapping.

    One instance is shared by the threads of a process.
    """

    sync: Sync
    config: SyncConfig


class _RoutesCache:
    """This process's copy of the routes per source, and of the syncs per id for the delivery
    workers, valid for one version of the configuration."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version: Any = None
        self.loaded_at = 0.0
        self.by_source: dict[int, tuple[SyncRoute, ...]] = {}
        self.syncs: dict[int, SyncForDelivery] = {}

    def keep_if_current(self, version: Any) -> None:
        """Forget everything unless it was loaded for ``version`` and is young enough (call
        with ``lock`` held)."""
        now = time.monotonic()
        if version != self.version or now - self.loaded_at > ROUTES_MAX_AGE_SECONDS:
            self.version = version
            self.loaded_at = now
            self.by_source = {}
            self.syncs = {}


_routes_cache = _RoutesCache()


def _routes_version() -> Any:
    try:
        version = cache.get(ROUTES_VERSION_KEY)
        if version is None:
            # A start value from the clock, not 1: a process that saw an evicted key's old value
            # must never mistake the new one for it.
            cache.add(ROUTES_VERSION_KEY, time.time_ns(), timeout=None)
            version = cache.get(ROUTES_VERSION_KEY)
        return version
    except Exception:
        # Ingest must not fail because the cache is down; the max age still bounds staleness.
        logger.warning("routes version unreadable; relying on the max age", exc_info=True)
        return _routes_cache.version


def _routes_load(source_id: int) -> tuple[SyncRoute, ...]:
    syncs = (
        Sync.objects.filter(sources__id=source_id)
        .prefetch_related("filters", "mappings")
        .order_by("id")
    )
    return tuple(
        SyncRoute(
            sync_id=sync.pk,
            destination_id=sync.destination_id,
            config=sync_config_build(sync=sync),
            rules=filter_rules_build(sync=sync),
            disabled=sync.status == Sync.Status.DISABLED,
        )
        for sync in syncs
    )


def routes_for_source(*, source_id: int, version: Any = None) -> list[SyncRoute]:
    """The enabled syncs that take ``source_id``'s calls (one cache read when nothing changed).

    ``version``: the value of ``ROUTES_VERSION_KEY`` when the caller read it already (ingest
    reads it with the write key, in the same round trip); None to read it here.
    """
    if version is None:
        version = _routes_version()
    with _routes_cache.lock:
        _routes_cache.keep_if_current(version)
        routes = _routes_cache.by_source.get(source_id)
    if routes is None:
        # Loaded outside the lock: a slow query must not stall other sources' ingest.
        routes = _routes_load(source_id)
        with _routes_cache.lock:
            if _routes_cache.version == version:
                _routes_cache.by_source[source_id] = routes
    return list(routes)


def sync_for_delivery(*, sync_id: int) -> SyncForDelivery | None:
    """The sync ``sync_id`` as the delivery workers read it; None once it was deleted.

    Cached with the routes: a worker read the sync, its destination and its mappings for every
    lane it drained (two of the eight statements a single-delivery lane cost), although they
    only change when the routes' version does. Whether the sync is paused or its destination
    held after a 401 is not read from here: the lane's claim checks both in the database.
    """
    version = _routes_version()
    with _routes_cache.lock:
        _routes_cache.keep_if_current(version)
        loaded = _routes_cache.syncs.get(sync_id)
    if loaded is None:
        sync = (
            Sync.objects.select_related("destination")
            .prefetch_related("mappings")
            .filter(pk=sync_id)
            .first()
        )
        if sync is None:
            return None
        loaded = SyncForDelivery(sync=sync, config=sync_config_build(sync=sync))
        with _routes_cache.lock:
            if _routes_cache.version == version:
                _routes_cache.syncs[sync_id] = loaded
    return loaded


def routes_cache_clear() -> None:
    """Forget this process's routes and syncs (tests whose database rolls back without
    signals)."""
    with _routes_cache.lock:
        _routes_cache.version = None
        _routes_cache.by_source = {}
        _routes_cache.syncs = {}


def routes_version_bump() -> None:
    """Tell every process that the routes changed."""
    try:
        cache.incr(ROUTES_VERSION_KEY)
    except ValueError:  # no version yet (or evicted)
        cache.set(ROUTES_VERSION_KEY, time.time_ns(), timeout=None)
    except Exception:
        # A configuration edit must not fail because the cache is down; see ROUTES_MAX_AGE.
        logger.warning("routes version not bumped", exc_info=True)


def routes_changed(sender: type, **kwargs: Any) -> None:
    """Receiver for post_save, post_delete and m2m_changed of the models routes are built from."""
    if kwargs.get("action", "post_").startswith("pre_"):  # m2m_changed fires before and after
        return
    update_fields = kwargs.get("update_fields")
    if sender is Destination and update_fields and set(update_fields) <= DESTINATION_HEALTH_FIELDS:
        return
    routes_version_bump()
    # Bump again after commit: a process that reloaded between the first bump and the commit
    # read the old rows and would keep them under the new version.
    transaction.on_commit(routes_version_bump, using=kwargs.get("using"))
