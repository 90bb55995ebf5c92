"""factory-boy factories for the models (shared by every test module)."""

from __future__ import annotations

import factory

from integrations.models import Destination, Source, Sync


class SourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Source

    name = factory.Sequence(lambda n: f"source-{n}")
    kind = Source.Kind.HTTP


class DestinationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Destination

    name = factory.Sequence(lambda n: f"workspace-{n}")
    region = Destination.Region.CUSTOM
    base_url = "http://127.0.0.1:8765"
    access_token = factory.Sequence(lambda n: f"dG9rOnRlc3Q{n}token")


class SyncFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Sync
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"sync-{n}")
    destination = factory.SubFactory(DestinationFactory)

    @factory.post_generation
    def sources(self, create: bool, extracted: list[Source] | None, **kwargs: object) -> None:
        if create:
            self.sources.set(extracted if extracted is not None else [SourceFactory()])
