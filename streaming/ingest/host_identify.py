"""Automatic identify when the host application's user model is saved (optional).

With ``SWITCHBOARD_IDENTIFY_MODEL = "app_label.Model"`` every save of that model sends an
identify call for it (userId = its primary key, traits = the fields named in
``SWITCHBOARD_IDENTIFY_TRAITS``) into the source ``SWITCHBOARD_PYTHON_SOURCE``. The call is
ingested once the host's transaction commits, so a rolled-back signup sends nothing; and a save
that touched none of the trait fields (``update_fields=["last_login"]`` at every login) sends
nothing either.
"""

from __future__ import annotations

import logging
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models, transaction
from django.db.models.signals import post_save

log = logging.getLogger(__name__)

_DISPATCH_UID = "switchboard-host-identify"


def host_identify_traits(*, instance: models.Model) -> dict[str, Any]:
    """The configured trait fields of ``instance`` (missing attributes are left out)."""
    traits: dict[str, Any] = {}
    for name in settings.SWITCHBOARD_IDENTIFY_TRAITS:
        value = getattr(instance, name, None)
        if callable(value):
            value = value()  # e.g. get_full_name
        if value is not None and value != "":
            traits[name] = value
    return traits


def host_identify_send(*, user_id: str, traits: dict[str, Any]) -> None:
    """Ingest the identify call; never raises into the host (it runs after its commit)."""
    from streaming.ingest import analytics

    try:
        analytics.identify(user_id, traits)
    except Exception:
        log.exception("automatic identify of user %s failed", user_id)


def _on_save(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return  # loading fixtures is not a user changing
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and not set(update_fields) & set(
        settings.SWITCHBOARD_IDENTIFY_TRAITS
    ):
        return
    user_id = str(instance.pk)
    traits = host_identify_traits(instance=instance)
    # Read now (the instance may change before commit), send after commit.
    transaction.on_commit(
        lambda: host_identify_send(user_id=user_id, traits=traits),
        using=kwargs.get("using"),
    )


def host_identify_connect() -> type[models.Model] | None:
    """Connect the post_save receiver when SWITCHBOARD_IDENTIFY_MODEL is set (AppConfig.ready)."""
    label = settings.SWITCHBOARD_IDENTIFY_MODEL
    if not label:
        return None
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"SWITCHBOARD_IDENTIFY_MODEL={label!r} is not an installed model (app_label.Model)."
        ) from exc
    post_save.connect(_on_save, sender=model, dispatch_uid=_DISPATCH_UID)
    return model


def host_identify_disconnect() -> None:
    label = settings.SWITCHBOARD_IDENTIFY_MODEL
    if label:
        post_save.disconnect(sender=apps.get_model(label), dispatch_uid=_DISPATCH_UID)
