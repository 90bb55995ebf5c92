"""The delivery audit trail over HTTP: ``GET /api/v1/users/{user_id}/deliveries``.

"What did we send to Intercom about user X, when, and what did Intercom say?" for support tools.
Beside the deliveries (``results``), ``kept_out`` says which calls a sync never sent, and why.
Token (``Authorization: Token <key>``, rest_framework.authtoken) or session authentication; only
users holding ``streaming.view_delivery``. Newest first, paginated (``?page=``). It shows what
the attempt log holds and nothing more: never a request header, token or secret.
"""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import generics, permissions, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

from streaming.audit.selectors import KEPT_OUT_SHOWN, kept_out_of_user
from streaming.delivery.replay import TEST_MESSAGE_PREFIX
from streaming.models import Delivery, DeliveryAttempt, Event, KeptOut


class CanViewDeliveries(permissions.BasePermission):
    message = "You need the 'Can view delivery' permission (streaming.view_delivery)."

    def has_permission(self, request: Request, view: object) -> bool:
        return bool(request.user and request.user.has_perm("streaming.view_delivery"))


class AuditEventSerializer(serializers.ModelSerializer):
    messageId = serializers.CharField(source="message_id")  # noqa: N815 (Segment's spelling)
    name = serializers.CharField(source="event_name")
    userId = serializers.CharField(source="user_id")  # noqa: N815
    receivedAt = serializers.DateTimeField(source="received_at")  # noqa: N815

    class Meta:
        model = Event
        fields = ["id", "type", "name", "timestamp", "messageId", "userId", "receivedAt"]


class AuditAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = [
            "id",
            "started_at",
            "method",
            "url",
            "status_code",
            "response_excerpt",
            "duration_ms",
            "category",
            "error_code",
        ]


class AuditSyncSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    destination = serializers.CharField(source="destination.name")


class AuditDeliverySerializer(serializers.ModelSerializer):
    event = AuditEventSerializer()
    sync = AuditSyncSerializer()
    attempts = AuditAttemptSerializer(source="attempt_log", many=True)
    tries = serializers.IntegerField(source="attempts")
    test = serializers.SerializerMethodField()

    class Meta:
        model = Delivery
        fields = [
            "id",
            "status",
            "reason",
            "tries",
            "created_at",
            "completed_at",
            "next_attempt_at",
            "test",
            "event",
            "sync",
            "attempts",
        ]

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_test(self, delivery: Delivery) -> bool:
        return delivery.event.message_id.startswith(TEST_MESSAGE_PREFIX)


class AuditKeptOutSerializer(serializers.ModelSerializer):
    """A call a sync kept out at ingest: no delivery was made, and this is why."""

    event = AuditEventSerializer()
    sync = AuditSyncSerializer()
    at = serializers.DateTimeField(source="created_at")

    class Meta:
        model = KeptOut
        fields = ["reason", "at", "event", "sync"]


class AuditPagination(PageNumberPagination):
    """Django REST framework's pages, plus ``kept_out``: the user's latest calls that syncs kept
    out (the same on every page)."""

    def get_paginated_response_schema(self, schema: dict) -> dict:
        paginated = super().get_paginated_response_schema(schema)
        paginated["properties"]["kept_out"] = {
            "type": "array",
            "description": f"The user's latest {KEPT_OUT_SHOWN} calls that a sync kept out at "
            "ingest (its filters, an opt-out, an anonymous call it drops, a disabled sync), "
            "newest first, each with the reason; no delivery exists for them.",
            # Written out: the components it names are those of the deliveries' own schema.
            "items": {
                "type": "object",
                "required": ["reason", "at", "event", "sync"],
                "properties": {
                    "reason": {"type": "string"},
                    "at": {"type": "string", "format": "date-time"},
                    "event": {"$ref": "#/components/schemas/AuditEvent"},
                    "sync": {"$ref": "#/components/schemas/AuditSync"},
                },
            },
        }
        paginated["required"] = [*paginated.get("required", []), "kept_out"]
        return paginated


# --- the OpenAPI description: the parameters, and the answers other than 200 ----------------------


class AuditRefusal(serializers.Serializer):
    """DRF's answer to a request it refuses."""

    detail = serializers.CharField()


class InvalidText(serializers.Serializer):
    """The answer to a NUL character in the path or the query (config.middleware)."""

    success = serializers.BooleanField(help_text="Always false.")
    code = serializers.ChoiceField(choices=["invalid_text"])
    message = serializers.CharField()


_NOT_FOUND = (
    "No such page (JSON), or a path no route matches (Django's HTML page): a user_id with a "
    "line break, or one that is `.` or `..`."
)


@extend_schema(
    parameters=[
        OpenApiParameter(
            "user_id",
            # Django's <path:> converter matches any character but a line break.
            {"type": "string", "pattern": "^[^\\n]+$"},
            OpenApiParameter.PATH,
            description="An event's userId, or the key a sync matched the user by (an external "
            "id, an email). It may contain slashes, not line breaks.",
            examples=[OpenApiExample("user", value="user-42")],
        ),
        OpenApiParameter(
            "page",
            {
                "oneOf": [
                    {"type": "integer", "minimum": 1},
                    {"type": "string", "enum": ["last", ""]},
                ]
            },
            OpenApiParameter.QUERY,
            description="A page number (50 deliveries a page), `last`, or empty for the first.",
        ),
        OpenApiParameter(
            "WWW-Authenticate",
            OpenApiTypes.STR,
            OpenApiParameter.HEADER,
            required=True,
            response=[401],
            description="`Token`: the scheme to authenticate with.",
        ),
    ],
    responses={
        200: AuditDeliverySerializer(many=True),
        400: OpenApiResponse(InvalidText, description="The path or the query holds NUL (%00)."),
        401: OpenApiResponse(AuditRefusal, description="No credentials, or a wrong token."),
        403: OpenApiResponse(
            AuditRefusal, description="The account lacks streaming.view_delivery."
        ),
        # A path that reaches no route at all (a user_id with a line break; "." or "..", which
        # HTTP clients resolve away) gets Django's own page: one description serves both.
        (404, "application/json"): OpenApiResponse(AuditRefusal, description=_NOT_FOUND),
        (404, "text/html"): OpenApiResponse(OpenApiTypes.STR, description=_NOT_FOUND),
    },
)
class UserDeliveriesView(generics.ListAPIView):
    """Every delivery about one user, newest first, each with its event and HTTP attempts, and
    the user's latest calls that syncs kept out, with why (``kept_out``).

    A user is matched by the events' ``userId`` and by the lane key a sync chose for them (an
    external id taken from a trait, or an email for syncs matching by email).
    """

    serializer_class = AuditDeliverySerializer
    permission_classes = [permissions.IsAuthenticated, CanViewDeliveries]
    pagination_class = AuditPagination

    def get_paginated_response(self, data: list) -> Response:
        response = super().get_paginated_response(data)
        response.data["kept_out"] = AuditKeptOutSerializer(
            kept_out_of_user(user_id=self.kwargs["user_id"]), many=True
        ).data
        return response

    def get_queryset(self) -> QuerySet[Delivery]:
        user_id = self.kwargs["user_id"]
        # Two indexed lookups united, rather than one OR across a join that could use neither.
        by_event = Delivery.objects.filter(event__user_id=user_id).values("id")
        by_key = Delivery.objects.filter(user_key=user_id).values("id")
        return (
            Delivery.objects.filter(id__in=by_event.union(by_key))
            .select_related("event", "sync__destination")
            .prefetch_related(
                Prefetch("attempt_log", queryset=DeliveryAttempt.objects.order_by("id"))
            )
            .order_by("-created_at", "-id")
        )
