"""Data-plane URLs: the Segment-compatible ingest API under /v1/, the Intercom webhook source."""

from __future__ import annotations

from django.urls import path

from streaming.audit import api as audit_api
from streaming.audit import deletion_api, resend_api
from streaming.ingest import api, audiences, intercom_webhook

urlpatterns = [
    path("v1/identify", api.IdentifyView.as_view(), name="v1-identify"),
    path("v1/track", api.TrackView.as_view(), name="v1-track"),
    path("v1/group", api.GroupView.as_view(), name="v1-group"),
    path("v1/page", api.PageView.as_view(), name="v1-page"),
    path("v1/screen", api.ScreenView.as_view(), name="v1-screen"),
    path("v1/alias", api.AliasView.as_view(), name="v1-alias"),
    path("v1/batch", api.BatchView.as_view(), name="v1-batch"),
    # Segment's name for backfills of historical data: the same as a batch.
    path("v1/import", api.ImportView.as_view(), name="v1-import"),
    # analytics.js (Segment's browser SDK) with apiHost "<switchboard host>/v1".
    path("v1/i", api.short_path_view(api.IdentifyView).as_view()),
    path("v1/t", api.short_path_view(api.TrackView).as_view()),
    path("v1/g", api.short_path_view(api.GroupView).as_view()),
    path("v1/p", api.short_path_view(api.PageView).as_view()),
    path("v1/s", api.short_path_view(api.ScreenView).as_view()),
    path("v1/a", api.short_path_view(api.AliasView).as_view()),
    path("v1/b", api.short_path_view(api.BatchView).as_view()),
    # Intercom's signed notifications for one intercom_webhook source (streaming/ingest/intercom_webhook.py).
    path(
        "webhooks/intercom/<int:source_id>",
        intercom_webhook.IntercomWebhookView.as_view(),
        name="intercom-webhook",
    ),
    # The delivery audit trail (streaming/audit/api.py; a user id may contain slashes: ``path``).
    path(
        "api/v1/users/<path:user_id>/deliveries",
        audit_api.UserDeliveriesView.as_view(),
        name="api-user-deliveries",
    ),
    # Deleting a person (streaming/audit/deletion_api.py).
    path(
        "api/v1/users/<path:user_id>/deletion",
        deletion_api.PersonDeletionView.as_view(),
        name="api-user-deletion",
    ),
    path("api/v1/deletions/<int:pk>", deletion_api.DeletionView.as_view(), name="api-deletion"),
    # Re-sending a user's current profile (streaming/audit/resend_api.py).
    path(
        "api/v1/users/<path:user_id>/resend",
        resend_api.ProfileResendView.as_view(),
        name="api-user-resend",
    ),
    # Audience membership as Intercom tags (streaming/ingest/audiences.py).
    path(
        "api/v1/audiences/<path:name>/members",
        audiences.AudienceMembersView.as_view(),
        name="api-audience-members",
    ),
]
