"""First-run setup (`manage.py switchboard bootstrap`, run by bin/run): admin login and demo.

Both functions are idempotent: a second run finds what the first made and leaves it alone.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from integrations.models import Destination, Source, Sync, WriteKey, write_key_hash
from integrations.services import write_key_issue

DEMO_SOURCE = "demo-http"
DEMO_DESTINATION = "demo-sandbox"
DEMO_SYNC = "demo-sync"
DEMO_TOKEN = "demo-token"


def superuser_ensure(*, username: str, password: str) -> bool:
    """Create the superuser unless it exists (an existing password is left alone); True if made."""
    user_model = get_user_model()
    if user_model._default_manager.filter(username=username).exists():
        return False
    user_model._default_manager.create_superuser(username=username, email="", password=password)
    return True


def demo_ensure(*, sandbox_url: str, write_key: str | None) -> str | None:
    """Create once the demo source, destination (the sandbox) and sync.

    ``write_key`` is the plaintext kept from an earlier run; when it no longer authenticates a
    new key is issued and returned (the caller keeps it), otherwise None is returned.
    """
    with transaction.atomic():
        source, _ = Source.objects.get_or_create(
            name=DEMO_SOURCE, defaults={"kind": Source.Kind.HTTP}
        )
        destination = Destination.objects.filter(name=DEMO_DESTINATION).first()
        if destination is None:
            destination = Destination(
                name=DEMO_DESTINATION,
                region=Destination.Region.CUSTOM,
                base_url=sandbox_url,
                access_token=DEMO_TOKEN,
            )
            destination.full_clean()
            destination.save()
        if not Sync.objects.filter(name=DEMO_SYNC).exists():
            sync = Sync(name=DEMO_SYNC, destination=destination)
            sync.full_clean()
            sync.save()
            sync.sources.set([source])
        known = WriteKey.objects.filter(
            source=source, key_hash=write_key_hash(write_key or ""), revoked_at__isnull=True
        )
        if write_key and known.exists():
            return None
        _, plaintext = write_key_issue(source=source, label="demo (bin/run)")
        return plaintext
