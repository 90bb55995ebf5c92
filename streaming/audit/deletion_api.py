"""Deleting a person over HTTP (GDPR, CCPA): ``POST /api/v1/users/{user_id}/deletion``.

The request is answered at once (202) with the deletion record; the deletes travel through the
delivery lanes like any call, so ``GET /api/v1/deletions/{id}`` (the ``Location`` of the answer)
tells how far it got: each workspace's answer, then the purge. Token or session authentication,
like the audit API; asking needs the dedicated permission ``streaming.delete_person``, reading a
record that or ``streaming.view_persondeletion``. The record holds no personal data, so neither
does any answer.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from streaming.audit.api import AuditRefusal
from streaming.delivery.deletion import DeletionRefused, person_deletion_request
from streaming.models import PersonDeletion, PersonDeletionTarget


class CanDeletePeople(permissions.BasePermission):
    message = "You need the 'Can delete a person (GDPR/CCPA)' permission (streaming.delete_person)."

    def has_permission(self, request: Request, view: object) -> bool:
        return bool(request.user and request.user.has_perm("streaming.delete_person"))


class CanReadDeletions(permissions.BasePermission):
    message = (
        "You need the 'Can delete a person' (streaming.delete_person) or 'Can view person "
        "deletion' (streaming.view_persondeletion) permission."
    )

    def has_permission(self, request: Request, view: object) -> bool:
        user = request.user
        return bool(
            user
            and (
                user.has_perm("streaming.delete_person")
                or user.has_perm("streaming.view_persondeletion")
            )
        )


class DeletionRequestSerializer(serializers.Serializer):
    destinations = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**31 - 1),
        required=False,
        allow_null=True,
        max_length=1000,
        help_text="Destination ids to delete the contact in; absent or null: every "
        "destination whose syncs know the person.",
    )


class DeletionTargetSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(source="destination_id")
    name = serializers.CharField(source="destination.name")

    class Meta:
        model = PersonDeletionTarget
        fields = ["id", "name", "status", "status_code", "error_code", "completed_at"]
        extra_kwargs = {
            "status": {"help_text": "pending, deleted, absent (no contact), failed, not_known."},
            "status_code": {"help_text": "Intercom's HTTP status for the delete call."},
        }


class DeletionSerializer(serializers.ModelSerializer):
    requested_by = serializers.CharField(source="requested_by_name")
    destinations = DeletionTargetSerializer(source="targets", many=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = PersonDeletion
        fields = [
            "id",
            "status",
            "requested_at",
            "requested_by",
            "requested_via",
            "completed_at",
            "purged_at",
            "destinations",
            "url",
        ]
        extra_kwargs = {
            "status": {
                "help_text": "deleting (delete calls on their way), failed (a workspace did not "
                "delete: the person's data is kept until its delete is replayed or the "
                "operator purges anyway), done (deleted and purged)."
            }
        }

    def get_url(self, deletion: PersonDeletion) -> str:
        return reverse("api-deletion", args=[deletion.pk])


def _deletion_read(pk: int) -> PersonDeletion:
    return get_object_or_404(PersonDeletion.objects.prefetch_related("targets__destination"), pk=pk)


_REFUSALS = {
    401: OpenApiResponse(AuditRefusal, description="No credentials, or a wrong token."),
    403: OpenApiResponse(AuditRefusal, description="The account lacks the permission."),
}
_AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    response=[401],
    description="`Token`: the scheme to authenticate with.",
)


class PersonDeletionView(APIView):
    """Delete the contact in each chosen workspace, purge the person's stored data, suppress
    their id: see the module doc."""

    permission_classes = [permissions.IsAuthenticated, CanDeletePeople]

    @extend_schema(
        summary="Delete a person (GDPR/CCPA)",
        request=DeletionRequestSerializer,
        parameters=[
            OpenApiParameter(
                "user_id",
                {"type": "string", "pattern": "^[^\\n]+$"},
                OpenApiParameter.PATH,
                description="The person's userId. It may contain slashes, not line breaks.",
                examples=[OpenApiExample("user", value="user-42")],
            ),
            OpenApiParameter(
                "Location",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                response=[200, 202],
                description="Where to read the deletion's state.",
            ),
            _AUTHENTICATE,
        ],
        responses={
            202: OpenApiResponse(DeletionSerializer, description="Deletion started."),
            200: OpenApiResponse(
                DeletionSerializer,
                description="This person's deletion was asked for already: that record.",
            ),
            400: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="What is wrong, per field (`destinations`, `user_id`), as DRF answers; "
                "or, for NUL (%00) in the path, `{success: false, code: invalid_text, message}`.",
            ),
            **_REFUSALS,
            (404, "text/html"): OpenApiResponse(
                OpenApiTypes.STR, description="A user_id with a line break (no route)."
            ),
        },
    )
    def post(self, request: Request, user_id: str) -> Response:
        body = DeletionRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            requested = person_deletion_request(
                user_id=user_id,
                destination_ids=body.validated_data.get("destinations"),
                requested_by=request.user,
                via=PersonDeletion.Via.API,
            )
        except DeletionRefused as refusal:
            raise serializers.ValidationError({refusal.field: [str(refusal)]}) from refusal
        deletion = _deletion_read(requested.deletion.pk)
        answer = DeletionSerializer(deletion).data
        return Response(
            answer,
            status=status.HTTP_202_ACCEPTED if requested.created else status.HTTP_200_OK,
            headers={"Location": answer["url"]},
        )


class DeletionView(APIView):
    permission_classes = [permissions.IsAuthenticated, CanReadDeletions]

    @extend_schema(
        summary="A person's deletion: each workspace's answer, then the purge",
        parameters=[_AUTHENTICATE],
        responses={
            200: DeletionSerializer,
            **_REFUSALS,
            (404, "application/json"): OpenApiResponse(
                AuditRefusal, description="No such deletion."
            ),
            (404, "text/html"): OpenApiResponse(
                OpenApiTypes.STR, description="An id that is not a number (no route)."
            ),
        },
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(DeletionSerializer(_deletion_read(pk)).data)
