"""Fixtures shared by the streaming tests.

``fresh_cache`` empties the cache and this process's routes before and after a test: the
database rolls back after each test, Redis and the routes cache do not. A module opts in with
``pytest.mark.usefixtures("fresh_cache")``.

``source``, ``destination`` and ``sync`` are rows from the factories: an HTTP source, a
workspace nothing listens at, and an enabled sync from that source into that workspace. A module
whose tests need them a particular way says so once, at its top, with the factory's fields::

    pytestmark = pytest.mark.source_fields(name="backend")
    pytestmark = pytest.mark.destination_fields(name="Main workspace")
    pytestmark = pytest.mark.sync_fields(name="app-to-intercom")

(a module whose sync must reach a live server overrides ``destination``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from integrations.models import Destination, Source, Sync
from integrations.selectors import routes_cache_clear
from tests.factories import DestinationFactory, SourceFactory, SyncFactory

FIELD_MARKERS = {
    "source_fields": "source",
    "destination_fields": "destination",
    "sync_fields": "sync",
}


def pytest_configure(config: pytest.Config) -> None:
    for marker, fixture in FIELD_MARKERS.items():
        config.addinivalue_line(
            "markers", f"{marker}(**fields): factory fields of the `{fixture}` fixture's row"
        )


def _marked_fields(request: pytest.FixtureRequest, marker: str) -> dict[str, Any]:
    mark = request.node.get_closest_marker(marker)
    return dict(mark.kwargs) if mark else {}


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    # Rate-limit windows, filtered counts, authenticated keys and the routes live in the cache.
    cache.clear()
    routes_cache_clear()
    yield
    cache.clear()
    routes_cache_clear()


@pytest.fixture
def source(request: pytest.FixtureRequest, db: None) -> Source:
    return SourceFactory(**_marked_fields(request, "source_fields"))


@pytest.fixture
def destination(request: pytest.FixtureRequest, db: None) -> Destination:
    return DestinationFactory(**_marked_fields(request, "destination_fields"))


@pytest.fixture
def sync(request: pytest.FixtureRequest, source: Source, destination: Destination) -> Sync:
    return SyncFactory(
        sources=[source], destination=destination, **_marked_fields(request, "sync_fields")
    )
