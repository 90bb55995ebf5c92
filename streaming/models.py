"""The queue of record and the audit trail.

Event (immutable, as received) -> Delivery (event x sync) -> DeliveryAttempt (one HTTP exchange).
A Lane is the ordered stream of one user's deliveries within one sync; a worker holds a lane's
lease while it drains it, which is what keeps a user's calls in order with any number of workers.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models

from integrations.models import Destination, Source, Sync


class CallType(models.TextChoices):
    IDENTIFY = "identify"
    TRACK = "track"
    GROUP = "group"
    PAGE = "page"
    SCREEN = "screen"
    ALIAS = "alias"
    DELETE = "delete"


class Event(models.Model):
    """One accepted call, exactly as normalised at ingest. Never modified (except GDPR purge)."""

    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="events")
    message_id = models.CharField(max_length=255)
    type = models.CharField(max_length=10, choices=CallType.choices)
    user_id = models.CharField(max_length=255, blank=True, db_index=True)
    anonymous_id = models.CharField(max_length=255, blank=True)
    event_name = models.CharField(max_length=255, blank=True)
    payload = models.JSONField(
        help_text="The whole call as received, with the corrected timestamp."
    )
    timestamp = models.DateTimeField(help_text="When it happened (clock-skew corrected).")
    received_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "message_id"], name="event_unique_message")
        ]
        indexes = [models.Index(fields=["received_at"])]

    def __str__(self) -> str:
        return f"{self.type} {self.event_name or ''} {self.user_id or self.anonymous_id}".strip()


class Lane(models.Model):
    """The deliveries of one (sync, user), drained in ingest order by one worker at a time."""

    sync = models.ForeignKey(Sync, on_delete=models.CASCADE, related_name="lanes")
    user_key = models.CharField(max_length=255)
    # When the head delivery may next be tried; NULL when the lane is empty.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    leased_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sync", "user_key"], name="lane_unique_user")
        ]
        indexes = [models.Index(fields=["next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.sync_id}:{self.user_key}"


class Delivery(models.Model):
    """One event to one sync: its state, tries, and when it may next be tried."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"
        SKIPPED = "skipped", "Skipped"

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    sync = models.ForeignKey(Sync, on_delete=models.CASCADE, related_name="deliveries")
    lane = models.ForeignKey(Lane, on_delete=models.CASCADE, related_name="deliveries")
    user_key = models.CharField(max_length=255, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Tries that counted (not 429s).")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="Why it failed, expired or was skipped.")
    created_at = models.DateTimeField()
    # The retry window runs from here. NULL means "since created_at" (ingest leaves it NULL, so
    # queuing costs no extra column); a replay sets it to the time of the replay, because an
    # operator replaying last week's delivery wants it retried, not expired at its first error.
    window_started_at = models.DateTimeField(
        null=True, blank=True, help_text="When the retry window started (empty: at creation)."
    )
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(
                fields=["lane", "id"],
                name="delivery_pending_by_lane",
                condition=models.Q(status="pending"),
            ),
            models.Index(fields=["sync", "status", "created_at"]),
            models.Index(fields=["created_at"]),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.status})"

    @property
    def retry_window_start(self) -> datetime:
        """When the sync's retry window started: the last replay, else the creation."""
        return self.window_started_at or self.created_at


class DeliveryAttempt(models.Model):
    """One HTTP exchange with Intercom: created before the request, completed after it."""

    class Category(models.TextChoices):
        IN_FLIGHT = "in_flight", "In flight"
        SUCCESS = "success", "Success"
        RETRYABLE = "retryable", "Retryable error"
        RATE_LIMITED = "rate_limited", "Rate limited (429)"
        PERMANENT = "permanent", "Permanent error"
        NETWORK = "network", "Network error or timeout"

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="attempts")
    user_key = models.CharField(max_length=255, db_index=True)
    method = models.CharField(max_length=7)
    url = models.CharField(max_length=2000)
    request_body = models.JSONField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True, help_text="At most 4 KB of Intercom's answer.")
    category = models.CharField(max_length=12, choices=Category.choices, default=Category.IN_FLIGHT)
    error_code = models.CharField(max_length=100, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["started_at"])]

    def __str__(self) -> str:
        return f"{self.method} {self.url} -> {self.status_code or self.category}"


class ContactLink(models.Model):
    """What we know of a user's Intercom contact in one workspace: its id and what we last sent."""

    destination = models.ForeignKey(
        Destination, on_delete=models.CASCADE, related_name="contact_links"
    )
    user_key = models.CharField(max_length=255)
    contact_id = models.CharField(max_length=64)
    role = models.CharField(max_length=5, default="user")
    fingerprint = models.CharField(max_length=64, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["destination", "user_key"], name="contact_link_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user_key} -> {self.contact_id}"


class KnownEventName(models.Model):
    """An event name a workspace has received through us.

    Intercom keeps at most 120 active event names per workspace and rejects new ones beyond that;
    counting the names we introduced lets the executor refuse a 121st with a clear reason.
    """

    destination = models.ForeignKey(
        Destination, on_delete=models.CASCADE, related_name="known_event_names"
    )
    name = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["destination", "name"], name="known_event_name_unique")
        ]

    def __str__(self) -> str:
        return self.name
