"""The queue of record and the audit trail.

Event (immutable, as received) -> Delivery (event x sync) -> DeliveryAttempt (one HTTP exchange).
A Lane is the ordered stream of one user's deliveries within one sync; a worker holds a lane's
lease while it drains it, which is what keeps a user's calls in order with any number of workers.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import ExpressionWrapper, Q, TextField
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.lookups import IsNull

from integrations.encryption import EncryptedTextField
from integrations.models import Destination, Source, Sync


class CallType(models.TextChoices):
    IDENTIFY = "identify"
    TRACK = "track"
    GROUP = "group"
    PAGE = "page"
    SCREEN = "screen"
    ALIAS = "alias"
    DELETE = "delete"
    AUDIENCE = "audience"  # from POST /api/v1/audiences/{name}/members, never from ingest
    # Not a Segment call: an operator's "Intercom now" read of a contact, logged like a call.
    LOOKUP = "lookup", "Intercom lookup"


# The two places Segment calls carry an email, as expressions: the audit looks an address up in
# them (``streaming.audit.selectors.events_by_email``) and ``Event`` indexes them, so the lookup
# must be written with these very expressions for PostgreSQL to use the indexes. Wrapped as
# plain text: a key transform's own ``__in`` lookup reads its values as JSON documents on SQLite
# ("malformed JSON" for an address); the wrapper adds nothing to the SQL.
TRAITS_EMAIL = ExpressionWrapper(
    KeyTextTransform("email", KeyTransform("traits", "payload")), output_field=TextField()
)
CONTEXT_TRAITS_EMAIL = ExpressionWrapper(
    KeyTextTransform("email", KeyTransform("traits", KeyTransform("context", "payload"))),
    output_field=TextField(),
)


class Event(models.Model):
    """One accepted call, exactly as normalised at ingest. Never modified (except GDPR purge)."""

    # Not indexed on its own: the unique (source, message_id) index leads with it.
    source = models.ForeignKey(
        Source, on_delete=models.PROTECT, related_name="events", db_index=False
    )
    message_id = models.CharField(max_length=255)
    type = models.CharField(max_length=10, choices=CallType.choices)
    user_id = models.CharField(max_length=255, blank=True)
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
        # Exact matches only (a field's db_index would add a second, LIKE index to every insert).
        # The email indexes are partial: only calls that carry an email are in them.
        indexes = [
            models.Index(fields=["received_at"]),
            models.Index(fields=["user_id"], name="event_user_id"),
            models.Index(
                TRAITS_EMAIL, name="event_traits_email", condition=Q(IsNull(TRAITS_EMAIL, False))
            ),
            models.Index(
                CONTEXT_TRAITS_EMAIL,
                name="event_context_traits_email",
                condition=Q(IsNull(CONTEXT_TRAITS_EMAIL, False)),
            ),
        ]

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
    user_key = models.CharField(max_length=255)
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
    # A re-send (``streaming.delivery.resend``) is a new delivery of the same event: the number
    # of the delivery it repeats, kept as a plain number (no foreign key: the original may be
    # purged by retention, and a delete must not scan this column).
    resend_of = models.BigIntegerField(
        "re-send of", null=True, blank=True, help_text="The delivery this one sends again."
    )

    class Meta:
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(
                fields=["lane", "id"],
                name="delivery_pending_by_lane",
                condition=models.Q(status="pending"),
            ),
            # Status first: the admin's status filter and its counts, each sync's backlog, what
            # "replay all" sends, the latest successes of the health page's p95.
            models.Index(fields=["status", "sync", "created_at"], name="delivery_status_sync"),
            models.Index(fields=["created_at"]),
            models.Index(fields=["user_key"], name="delivery_user_key"),
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
    user_key = models.CharField(max_length=255)
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
        indexes = [
            models.Index(fields=["started_at"]),
            models.Index(fields=["user_key"], name="attempt_user_key"),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.url} -> {self.status_code or self.category}"


class KeptOut(models.Model):
    """One call a sync kept out at ingest (its filters, an opt-out, an anonymous call it drops, a
    disabled sync), with the reason: the answer to "why was this never sent?" for one user.

    One small row per (call, sync), written by ``streaming.ingest.filtered`` right after the
    call is stored; no delivery exists for it. ``user_key`` is the call's userId, else its
    anonymousId, so a user's page finds them by an index, anonymous visits included. Purged with
    its event (retention, or a person's deletion). Calls of a person deleted on request are
    never recorded here: only counted.
    """

    # Indexed for the purge, which walks events by id ranges.
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="kept_out")
    # No index of its own: a user's rows are found by user_key, then read with their sync.
    sync = models.ForeignKey(Sync, on_delete=models.CASCADE, related_name="+", db_index=False)
    user_key = models.CharField(max_length=255)
    reason = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        verbose_name = "call kept out"
        verbose_name_plural = "calls kept out"
        indexes = [models.Index(fields=["user_key", "id"], name="kept_out_user_key")]

    def __str__(self) -> str:
        return f"{self.user_key}: kept out of sync {self.sync_id} ({self.reason})"


class DeliveryHour(models.Model):
    """The outcomes of one sync's deliveries created in one (UTC) hour, counted once that hour
    has settled: a summary row of the health page (``streaming.audit.selectors.syncs_health``),
    so that its figures cost the same at a thousand deliveries a day as at a million.

    Only final states are counted (a pending delivery is counted live, with the backlog). A row
    is written for an hour that ended more than ``REOPENED_AFTER`` (and a margin) ago, and
    removed by triggers on ``streaming_delivery`` (migration 0005) whenever a delivery of its
    hour changes a count: a final one changed or replayed, a pending one completed that long
    after its creation, one inserted already final, moved to another hour or sync, or deleted.
    The next read writes it again. PostgreSQL only; elsewhere the page counts deliveries.
    """

    # The advisory lock (class, sync id) the page writes under and the triggers respect, and how
    # late a pending delivery's completion removes its hour's row: both literal in migration 0005.
    LOCK_CLASS = 7305
    REOPENED_AFTER = timedelta(hours=1)

    # Indexed by the unique (sync, hour).
    sync = models.ForeignKey(Sync, on_delete=models.CASCADE, related_name="+", db_index=False)
    hour = models.DateTimeField(help_text="The start of the hour, UTC.")
    delivered_first_try = models.PositiveIntegerField(default=0)
    delivered_after_retry = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    expired = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sync", "hour"], name="delivery_hour_unique")
        ]

    def __str__(self) -> str:
        return f"{self.sync_id} {self.hour:%Y-%m-%d %H}:00"


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


class PersonDeletion(models.Model):
    """A request to delete one person (GDPR/CCPA), and what remains of it once it is done.

    It holds no personal data: the person is named by `subject_hash`, a keyed hash of their user
    id (`streaming.delivery.deletion.subject_hash`), never by the id or the email.
    """

    class Status(models.TextChoices):
        DELETING = "deleting", "Deleting in Intercom"
        FAILED = "failed", "A workspace did not delete: replay its delete, or purge anyway"
        DONE = "done", "Done: deleted and purged"

    class Via(models.TextChoices):
        ADMIN = "admin", "Admin"
        API = "api", "API"

    subject_hash = models.CharField(
        max_length=64, db_index=True, help_text="HMAC-SHA256 of the user id (never the id)."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DELETING)
    requested_by = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    requested_by_name = models.CharField(
        "requested by",
        max_length=150,
        blank=True,
        help_text="The requester's username, kept if the user goes.",
    )
    requested_via = models.CharField(max_length=5, choices=Via.choices)
    requested_at = models.DateTimeField()
    purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When the person's stored data was purged."
    )
    purged = models.JSONField(
        default=dict, blank=True, help_text="How many rows of each kind the purge changed."
    )
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        permissions = [("delete_person", "Can delete a person (GDPR/CCPA)")]
        indexes = [models.Index(fields=["requested_at"])]

    def __str__(self) -> str:
        return f"deletion {self.pk} ({self.status})"


class PersonDeletionTarget(models.Model):
    """One workspace of a deletion: the delete call queued there, and the workspace's answer."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELETED = "deleted", "Deleted"
        ABSENT = "absent", "No contact (already absent)"
        FAILED = "failed", "Failed"
        NOT_KNOWN = "not_known", "User unknown to this workspace"

    deletion = models.ForeignKey(PersonDeletion, on_delete=models.CASCADE, related_name="targets")
    destination = models.ForeignKey(
        Destination, on_delete=models.CASCADE, related_name="person_deletions"
    )
    sync = models.ForeignKey(
        Sync, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    delivery = models.ForeignKey(
        Delivery, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    status_code = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Intercom's HTTP status for the delete."
    )
    error_code = models.CharField(max_length=100, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["deletion", "destination"], name="person_deletion_target_unique"
            )
        ]

    def __str__(self) -> str:
        return f"destination {self.destination_id}: {self.get_status_display()}"


class Suppression(models.Model):
    """A deleted person's id: calls for it are dropped at ingest until an operator lifts it."""

    subject_hash = models.CharField(
        max_length=64, help_text="HMAC-SHA256 of the user id (never the id)."
    )
    deletion = models.ForeignKey(
        PersonDeletion,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="suppressions",
    )
    created_at = models.DateTimeField()
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by_name = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subject_hash"],
                condition=models.Q(lifted_at__isnull=True),
                name="suppression_active_unique",
            )
        ]
        permissions = [("lift_suppression", "Can lift a deleted person's suppression")]

    def __str__(self) -> str:
        return f"suppression {self.subject_hash[:12]}…"


class ResendJob(models.Model):
    """An operator's re-send of a sync's calls in a time range (``streaming.delivery.resend``).

    Created in batches by a Celery task: ``cursor`` (the last original delivery id done) is
    committed with each batch's deliveries, so a task that dies is resumed where it stopped.
    """

    class Status(models.TextChoices):
        RUNNING = "running", "Queuing the re-sends"
        DONE = "done", "Done: every re-send is queued"
        CANCELLED = "cancelled", "Cancelled"

    sync = models.ForeignKey(Sync, on_delete=models.CASCADE, related_name="resend_jobs")
    since = models.DateTimeField(help_text="Deliveries created at or after this time...")
    until = models.DateTimeField(help_text="...and before this one.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    total = models.PositiveIntegerField(default=0, help_text="Calls in the range when it started.")
    queued = models.PositiveIntegerField(default=0, help_text="Re-sends queued so far.")
    cursor = models.BigIntegerField(default=0, help_text="The last original delivery id done.")
    requested_by_name = models.CharField("requested by", max_length=150, blank=True)
    requested_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        permissions = [("resend", "Can re-send calls and backfill host users")]

    def __str__(self) -> str:
        return f"re-send {self.pk} ({self.status})"


class BackfillJob(models.Model):
    """An identify of every existing host user (``streaming.delivery.backfill``).

    ``cursor`` is the primary key of the last user done, committed in the transaction that
    stores that batch's calls: a run that dies (kill -9, a deploy) is resumed from it, and the
    batch in flight, stored or not, is never stored twice (its messageIds are per job and user).
    """

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    model = models.CharField(max_length=100, help_text="The host's model, app_label.Model.")
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="+")
    sync = models.ForeignKey(
        Sync,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Only this sync; empty: every enabled sync of the source.",
    )
    since = models.DateTimeField(null=True, blank=True)
    since_field = models.CharField(max_length=100, blank=True)
    batch_size = models.PositiveIntegerField(default=500)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    total = models.PositiveIntegerField(default=0, help_text="Users to identify when it started.")
    done = models.PositiveIntegerField(default=0, help_text="Users identified so far.")
    cursor = models.CharField(max_length=255, blank=True, help_text="The last primary key done.")
    requested_by_name = models.CharField("requested by", max_length=150, blank=True)
    requested_via = models.CharField(max_length=10, default="command")
    requested_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"backfill {self.pk} of {self.model} ({self.status})"


class AlertRule(models.Model):
    """When to tell someone about a sync, and whom: the conditions (any left empty is off) and
    the channels. Evaluated every ``SWITCHBOARD_ALERTS_SECONDS`` by Celery beat
    (``streaming.audit.alerts``); each alert raised and cleared is an ``Alert``."""

    sync = models.ForeignKey(Sync, on_delete=models.CASCADE, related_name="alert_rules")
    enabled = models.BooleanField(default=True)
    failure_rate_percent = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(99)],
        help_text="Alert when more than this share (%) of the deliveries finished in the window "
        "failed or expired. Empty: off.",
    )
    failure_window_minutes = models.PositiveIntegerField(
        default=15,
        validators=[MinValueValidator(1), MaxValueValidator(1440)],
        help_text="The failure rate's window, in minutes (1 to 1,440).",
    )
    failure_min_deliveries = models.PositiveIntegerField(
        default=10,
        help_text="Judge the failure rate only when at least this many deliveries finished in "
        "the window, so that one failure of one is not a 100 % alert.",
    )
    backlog_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Alert when the oldest pending delivery is older than this, in minutes. "
        "Empty: off.",
    )
    token_refused = models.BooleanField(
        default=True, help_text="Alert when Intercom refuses the destination's token (401)."
    )
    email_to = models.TextField(
        blank=True, help_text="Email addresses, separated by commas or new lines."
    )
    webhook_url = EncryptedTextField(
        blank=True,
        help_text='A Slack-compatible incoming webhook: receives {"text": …} as JSON. '
        "Write-only (it holds a secret); only its host is ever shown.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"alerts of {self.sync}"


class Alert(models.Model):
    """One alert: raised when a rule's condition became true, resolved when it cleared."""

    class Kind(models.TextChoices):
        FAILURE_RATE = "failure_rate", "Failure rate"
        BACKLOG = "backlog", "Backlog too old"
        TOKEN_REFUSED = "token_refused", "Token refused"
        TEST = "test", "Test alert"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    sync = models.ForeignKey(Sync, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    message = models.TextField()
    raised_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_message = models.TextField(blank=True)
    # Where it was sent, and how each channel answered (a webhook named by its host only).
    sent = models.TextField(blank=True)

    class Meta:
        ordering = ["-raised_at", "-id"]
        constraints = [
            # One open alert per rule and condition: two evaluations at once raise it once.
            models.UniqueConstraint(
                fields=["rule", "kind"],
                condition=models.Q(resolved_at__isnull=True) & ~models.Q(kind="test"),
                name="alert_open_unique",
            )
        ]
        indexes = [models.Index(fields=["raised_at"], name="alert_raised_at")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.sync}"


class VisitorLink(models.Model):
    """An anonymousId known to be a user, in a sync that sends visitors as leads.

    Written at ingest by the first identify or alias carrying both ids; from then on calls that
    carry only the anonymousId go to the user's lane (``streaming/ingest/visitors.py``).
    """

    sync = models.ForeignKey(Sync, on_delete=models.CASCADE, related_name="visitor_links")
    anonymous_id = models.CharField(max_length=255)
    user_id = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sync", "anonymous_id"], name="visitor_link_unique")
        ]
        indexes = [models.Index(fields=["user_id"], name="visitor_link_user")]

    def __str__(self) -> str:
        return f"{self.anonymous_id} -> {self.user_id}"


class TagListSent(models.Model):
    """The tag names of a list (``traits.audiences``) last sent for a contact or a company, so
    that a name gone from the list untags it."""

    destination = models.ForeignKey(
        Destination, on_delete=models.CASCADE, related_name="tag_lists_sent"
    )
    owner_key = models.CharField(max_length=255, help_text="user key, or company:<company_id>")
    list_name = models.CharField(max_length=190)
    names = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["destination", "owner_key", "list_name"], name="tag_list_sent_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.owner_key} {self.list_name}: {len(self.names)} tags"


class AudienceChange(models.Model):
    """One ``POST /api/v1/audiences/{name}/members``: who changed which audience, how much.

    Holds counts, not the user ids (those travel as the calls queued in each user's lane).
    """

    audience = models.CharField(max_length=190)
    added = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    deliveries = models.PositiveIntegerField(default=0)
    requested_by_name = models.CharField(max_length=150, blank=True)
    requested_at = models.DateTimeField()

    class Meta:
        ordering = ["-requested_at"]
        permissions = [("change_audience_members", "Can add and remove audience members")]

    def __str__(self) -> str:
        return f"{self.audience}: +{self.added} -{self.removed}"
