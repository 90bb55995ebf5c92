from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import m2m_changed, post_delete, post_save


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Configuration"

    def ready(self) -> None:
        from integrations.models import Destination, EventFilter, PropertyMapping, Source, Sync
        from integrations.selectors import routes_changed

        # Ingest caches the routes per process; any edit of what they are built from bumps the
        # shared version so every process reloads them (integrations/selectors.py).
        for model in (Source, Destination, Sync, EventFilter, PropertyMapping):
            for signal in (post_save, post_delete):
                signal.connect(
                    routes_changed, sender=model, dispatch_uid=f"routes.{model.__name__}"
                )
        m2m_changed.connect(
            routes_changed, sender=Sync.sources.through, dispatch_uid="routes.sources"
        )
