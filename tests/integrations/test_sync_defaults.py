import pytest

from integrations.models import INTERCOM_EVENTS, EventFilter
from tests.factories import SyncFactory

pytestmark = pytest.mark.django_db


def test_a_new_sync_excludes_events_imported_from_intercom():
    sync = SyncFactory()

    (only_filter,) = sync.filters.all()
    assert only_filter.action == EventFilter.Action.EXCLUDE
    assert only_filter.event_name == INTERCOM_EVENTS
