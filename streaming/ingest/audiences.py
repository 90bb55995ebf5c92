"""Audience membership over HTTP: ``POST /api/v1/audiences/{name}/members``.

An audience or cohort from any tool (Amplitude, a SQL job, a CRM list) becomes an Intercom tag:
``{"add": [user ids], "remove": [user ids]}`` queues, for each user and each sync that sends
users, an ``audience`` call in that user's lane (after the user's earlier calls, like any call),
which tags or untags their contact; the tag is created in Intercom when missing, and a contact
missing on ``add`` is created like a track's is. Tagging twice or untagging an absent tag changes
nothing, so a repeated request is harmless; with an ``Idempotency-Key`` header a repeated
request is not even stored twice.

Token or session authentication, like the other ``/api/v1`` endpoints, and the dedicated
permission ``streaming.change_audience_members``. Bad input is answered 400 with what is wrong
and stores nothing; the answer is 202 with the counts. People deleted on request are left out.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from integrations.intercom.identity import identity_resolve
from integrations.models import TAG_NAME_RE, Sync
from integrations.selectors import sync_config_build
from streaming import storage
from streaming.ingest.suppression import suppressed_user_ids
from streaming.models import AudienceChange, CallType, Lane
from streaming.signals import lanes_queued

MEMBERS_MAX = 10_000  # per request: one transaction, one statement of calls
AUDIENCE_NAME_MAX = 190  # a tag name, as PropertyMapping.intercom_name holds it
USER_ID_MAX = 255


class CanChangeAudiences(permissions.BasePermission):
    message = (
        "You need the 'Can add and remove audience members' permission "
        "(streaming.change_audience_members)."
    )

    def has_permission(self, request: Request, view: object) -> bool:
        return bool(request.user and request.user.has_perm("streaming.change_audience_members"))


class UserIdField(serializers.CharField):
    """A user id as Segment sends it: text, or a number taken as text."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=USER_ID_MAX, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, int | float) and not isinstance(data, bool):
            data = str(data)
        if not isinstance(data, str):
            self.fail("invalid")
        if "\x00" in data:
            raise serializers.ValidationError("A user id cannot contain NUL (\\u0000).")
        return super().to_internal_value(data)


class MembersSerializer(serializers.Serializer):
    add = serializers.ListField(
        child=UserIdField(), required=False, default=list, help_text="User ids to tag."
    )
    remove = serializers.ListField(
        child=UserIdField(), required=False, default=list, help_text="User ids to untag."
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        add = list(dict.fromkeys(data["add"]))
        remove = list(dict.fromkeys(data["remove"]))
        if not add and not remove:
            raise serializers.ValidationError("Give user ids in add, remove, or both.")
        if len(add) + len(remove) > MEMBERS_MAX:
            raise serializers.ValidationError(
                f"At most {MEMBERS_MAX} user ids per request; send the rest in another."
            )
        both = sorted(set(add) & set(remove))
        if both:
            shown = ", ".join(repr(user) for user in both[:5])
            raise serializers.ValidationError(
                f"A user id cannot be both added and removed: {shown}."
            )
        return {"add": add, "remove": remove}


class SyncCountSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    deliveries = serializers.IntegerField()
    skipped = serializers.CharField(help_text="Why this sync takes none, if so.")


class MembersAnswerSerializer(serializers.Serializer):
    audience = serializers.CharField()
    added = serializers.IntegerField(help_text="User ids to tag.")
    removed = serializers.IntegerField(help_text="User ids to untag.")
    suppressed = serializers.IntegerField(help_text="Left out: deleted on request.")
    deliveries = serializers.IntegerField(help_text="Calls queued, one per user and sync.")
    syncs = SyncCountSerializer(many=True)


@dataclass
class AudienceQueued:
    audience: str
    added: int
    removed: int
    suppressed: int = 0
    deliveries: int = 0
    syncs: list[dict[str, Any]] = field(default_factory=list)


def audience_members_change(
    *,
    audience: str,
    add: list[str],
    remove: list[str],
    requested_by: str = "",
    idempotency_key: str = "",
) -> AudienceQueued:
    """Queue an ``audience`` call per user and sync that sends users (see the module doc)."""
    now = timezone.now()
    request_id = idempotency_key or uuid.uuid4().hex
    suppressed = suppressed_user_ids([*add, *remove])
    members = [(user, True) for user in add if user not in suppressed] + [
        (user, False) for user in remove if user not in suppressed
    ]
    queued = AudienceQueued(
        audience=audience, added=len(add), removed=len(remove), suppressed=len(suppressed)
    )
    syncs = (
        Sync.objects.exclude(status=Sync.Status.DISABLED)
        .filter(send_users=True)
        .prefetch_related("mappings", "sources")
        .order_by("id")
    )
    events: dict[str, dict[str, Any]] = {}
    routes: list[tuple[str, int, str]] = []
    for sync in syncs:
        config = sync_config_build(sync=sync)
        sources = sorted(source.pk for source in sync.sources.all())
        count = {"id": sync.pk, "name": sync.name, "deliveries": 0, "skipped": ""}
        queued.syncs.append(count)
        if not sources:
            count["skipped"] = "the sync has no source"
            continue
        for user, member in members:
            digest = hashlib.sha256(
                "\x1f".join([request_id, audience, user, str(sources[0])]).encode()
            ).hexdigest()[:40]
            message_id = f"audience-{digest}"
            call = {
                "type": CallType.AUDIENCE,
                "messageId": message_id,
                "userId": user,
                "audience": audience,
                "member": member,
                "timestamp": now.isoformat(),
            }
            identity = identity_resolve(call=call, config=config)
            if isinstance(identity, str):
                count["skipped"] = f"its users are not known by userId ({identity})"
                break
            events.setdefault(
                message_id,
                {
                    "source_id": sources[0],
                    "message_id": message_id,
                    "type": CallType.AUDIENCE,
                    "user_id": user,
                    "anonymous_id": "",
                    "event_name": audience,
                    "payload": call,
                    "timestamp": now,
                },
            )
            routes.append((message_id, sync.pk, identity.user_key))
            count["deliveries"] += 1
    with transaction.atomic():
        stored = (
            storage.calls_store(
                events=list(events.values()), routes=routes, received_at=now, now=now
            )
            if events
            else storage.Stored(event_ids={}, lane_ids=[])
        )
        AudienceChange.objects.create(
            audience=audience,
            added=len(add),
            removed=len(remove),
            deliveries=len(routes) if stored.event_ids else 0,
            requested_by_name=requested_by,
            requested_at=now,
        )
        lane_ids = sorted(set(stored.lane_ids))
        if lane_ids:
            transaction.on_commit(
                lambda: lanes_queued.send(sender=Lane, lane_ids=lane_ids), robust=True
            )
    if not stored.event_ids:  # a repeated Idempotency-Key: stored already
        for count in queued.syncs:
            count["deliveries"] = 0
    queued.deliveries = sum(count["deliveries"] for count in queued.syncs)
    return queued


def _audience_name_check(name: str) -> str:
    if len(name) > AUDIENCE_NAME_MAX or not TAG_NAME_RE.fullmatch(name):
        raise serializers.ValidationError(
            {
                "audience": [
                    f"An audience name is the tag's name in Intercom: 1 to {AUDIENCE_NAME_MAX} "
                    "characters, without leading or trailing spaces or control characters."
                ]
            }
        )
    return name


class AudienceMembersView(APIView):
    """Add and remove many users of an audience (an Intercom tag) at once."""

    permission_classes = [permissions.IsAuthenticated, CanChangeAudiences]

    @extend_schema(
        summary="Add and remove audience members (an Intercom tag)",
        request=MembersSerializer,
        parameters=[
            OpenApiParameter(
                "name",
                {"type": "string", "pattern": "^[^\\n]+$"},
                OpenApiParameter.PATH,
                description="The audience, which is the tag's name in Intercom (no line breaks).",
            ),
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Optional: a request repeated with the same key is stored once.",
            ),
        ],
        responses={
            202: OpenApiResponse(MembersAnswerSerializer, description="Queued in each lane."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="What is wrong, per field."),
            401: OpenApiResponse(OpenApiTypes.OBJECT, description="No or wrong credentials."),
            403: OpenApiResponse(OpenApiTypes.OBJECT, description="The permission is missing."),
            (404, "text/html"): OpenApiResponse(
                OpenApiTypes.STR, description="A name with a line break (no route)."
            ),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        audience = _audience_name_check(name)
        if not isinstance(request.data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ['Send a JSON object: {"add": [...], "remove": [...]}.']}
            )
        body = MembersSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key", "").strip()[:200]
        queued = audience_members_change(
            audience=audience,
            add=body.validated_data["add"],
            remove=body.validated_data["remove"],
            requested_by=request.user.get_username(),
            idempotency_key=key,
        )
        answer = MembersAnswerSerializer(queued).data
        return Response(answer, status=status.HTTP_202_ACCEPTED)
