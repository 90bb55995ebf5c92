"""Re-sending one user's current profile over HTTP: ``POST /api/v1/users/{user_id}/resend``.

The body names the sync (``{"sync": 3}``); the answer (202) is the queued delivery: one identify
whose traits are the user's latest, merged from every identify the sync received for them
(``streaming.delivery.resend.profile_resend``), sent after what is queued in their lane. Token or
session authentication, like the audit API; it needs the permission ``streaming.resend``
("Can re-send calls and backfill host users").
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from integrations.models import Sync
from streaming.audit.api import AuditRefusal
from streaming.delivery.resend import ResendRefused, profile_resend


class CanResend(permissions.BasePermission):
    message = (
        "You need the 'Can re-send calls and backfill host users' permission (streaming.resend)."
    )

    def has_permission(self, request: Request, view: object) -> bool:
        return bool(request.user and request.user.has_perm("streaming.resend"))


class ProfileResendRequest(serializers.Serializer):
    sync = serializers.PrimaryKeyRelatedField(
        queryset=Sync.objects.select_related("destination"),
        help_text="The id of the sync to re-send the profile to.",
    )


class ProfileResendAnswer(serializers.Serializer):
    delivery = serializers.IntegerField(help_text="The queued delivery (its id).")
    sync = serializers.IntegerField()
    user_key = serializers.CharField(
        help_text="The lane it waits in (the user, as the sync names them)."
    )
    status = serializers.CharField(help_text="pending: it goes out after what is queued before it.")
    traits = serializers.DictField(help_text="The traits sent: the latest value of each.")


class ProfileResendView(APIView):
    """Queue one identify with the user's current profile, to one sync."""

    permission_classes = [permissions.IsAuthenticated, CanResend]

    @extend_schema(
        summary="Re-send a user's current profile to a sync",
        request=ProfileResendRequest,
        parameters=[
            OpenApiParameter(
                "user_id",
                {"type": "string", "pattern": "^[^\\n]+$"},
                OpenApiParameter.PATH,
                description="The user's userId. It may contain slashes, not line breaks.",
                examples=[OpenApiExample("user", value="user-42")],
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
            202: ProfileResendAnswer,
            400: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="What is wrong, per field (`sync`, `user_id`): no such sync, a "
                "disabled sync, a user the sync never identified, a person deleted on request.",
            ),
            401: OpenApiResponse(AuditRefusal, description="No credentials, or a wrong token."),
            403: OpenApiResponse(AuditRefusal, description="The account lacks the permission."),
            (404, "text/html"): OpenApiResponse(
                OpenApiTypes.STR, description="A user_id with a line break (no route)."
            ),
        },
    )
    def post(self, request: Request, user_id: str) -> Response:
        body = ProfileResendRequest(data=request.data)
        body.is_valid(raise_exception=True)
        sync = body.validated_data["sync"]
        try:
            delivery = profile_resend(
                sync=sync, user_id=user_id, requested_by=request.user.get_username()
            )
        except ResendRefused as refusal:
            raise serializers.ValidationError({refusal.field: [str(refusal)]}) from refusal
        answer = {
            "delivery": delivery.pk,
            "sync": sync.pk,
            "user_key": delivery.user_key,
            "status": delivery.status,
            "traits": delivery.event.payload.get("traits", {}),
        }
        return Response(ProfileResendAnswer(answer).data, status=status.HTTP_202_ACCEPTED)
