"""Tag mappings are validated when saved: a tag's name is free text, a company tag reads traits."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from integrations.models import PropertyMapping
from tests.factories import SyncFactory

pytestmark = pytest.mark.django_db
T = PropertyMapping.Target


@pytest.mark.parametrize(
    ("target", "source_path", "name"),
    [
        (T.CONTACT_TAG, "traits.vip", "VIP customer"),
        (T.CONTACT_TAG, "traits.audiences", "audiences"),
        (T.COMPANY_TAG, "traits.enterprise", "Enterprise (EMEA)"),
    ],
)
def test_a_tag_mapping_with_a_free_text_name_is_accepted(target, source_path, name):
    mapping = PropertyMapping(sync=SyncFactory(), target=target, source_path=source_path)
    mapping.intercom_name = name

    mapping.full_clean()


@pytest.mark.parametrize(
    ("target", "source_path", "name", "field"),
    [
        (T.CONTACT_TAG, "traits.vip", " VIP", "intercom_name"),
        (T.CONTACT_TAG, "traits.vip", "VIP\n", "intercom_name"),
        (T.COMPANY_TAG, "properties.enterprise", "Enterprise", "source_path"),
        # an attribute keeps Intercom's stricter attribute names
        (T.CONTACT_ATTRIBUTE, "traits.vip", "VIP customer", "intercom_name"),
    ],
)
def test_a_bad_tag_mapping_cannot_be_saved(target, source_path, name, field):
    mapping = PropertyMapping(
        sync=SyncFactory(), target=target, source_path=source_path, intercom_name=name
    )

    with pytest.raises(ValidationError) as refused:
        mapping.full_clean()

    assert field in refused.value.message_dict
