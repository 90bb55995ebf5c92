"""The control-plane models an operator edits in the admin (DESIGN.md, "Domain vocabulary").

Everything is validated when saved (``clean()``), so a bad sync cannot be saved rather than
failing at delivery time.

Over our usual ~400 lines: the control plane's five models and their save-time validation;
the validation is the point of them (a bad sync cannot be saved), so it stays on the model.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import models
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from integrations.encryption import EncryptedTextField

INTERCOM_EVENTS = "[Intercom] *"  # the names the webhook source gives imported activity


class WebhookMatchBy(models.TextChoices):
    """Which of a contact's identifiers an Intercom notification's calls take as ``userId``."""

    USER_ID_OR_CONTACT = (
        "user_id_or_contact",
        "Intercom's user id (external_id); without one, the Intercom contact id as anonymousId",
    )
    USER_ID = "user_id", "Intercom's user id (external_id); without one, dropped"
    EMAIL = "email", "Email; without one, Intercom's user id; with neither, dropped"


class Source(models.Model):
    """Where calls come from: the HTTP API (write keys) or an Intercom webhook (client secret)."""

    class Kind(models.TextChoices):
        HTTP = "http", "HTTP API (write keys)"
        INTERCOM_WEBHOOK = "intercom_webhook", "Intercom webhook"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.HTTP)
    enabled = models.BooleanField(default=True)
    webhook_secret = EncryptedTextField(
        blank=True,
        help_text="Intercom webhooks only: the app's client secret, used to verify X-Hub-Signature.",
    )
    # Intercom webhooks: who a notification is about (Amplitude's rule: user id or email, with
    # the user id as the fallback of email; neither: dropped, counted below).
    webhook_match_by = models.CharField(
        "Match Intercom's people by",
        max_length=20,
        choices=WebhookMatchBy.choices,
        default=WebhookMatchBy.USER_ID_OR_CONTACT,
    )
    intercom_workspace_name = models.CharField(
        max_length=200,
        blank=True,
        editable=False,
        help_text="The workspace the Intercom app was authorised in (Connect to Intercom).",
    )
    dropped_notifications = models.PositiveBigIntegerField(default=0, editable=False)
    last_dropped_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_dropped_reason = models.CharField(max_length=300, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: object, **kwargs: object) -> None:
        super().save(*args, **kwargs)
        # Authentication caches keys with their source (enabled, kind): drop the stale copies.
        if self.pk:
            for key_hash in self.write_keys.values_list("key_hash", flat=True):
                write_key_cache_forget(key_hash=key_hash)

    def clean(self) -> None:
        if self.kind == self.Kind.HTTP and self.webhook_secret:
            raise ValidationError(
                {"webhook_secret": "Only Intercom webhook sources have a secret; clear it."}
            )
        if self.kind == self.Kind.INTERCOM_WEBHOOK and not self.webhook_secret:
            raise ValidationError(
                {"webhook_secret": "An Intercom webhook source needs the app's client secret."}
            )


def write_key_hash(key: str) -> str:
    # Write keys are 32 random bytes: a plain SHA-256 cannot be brute-forced and keeps the
    # per-request lookup a single indexed equality.
    return hashlib.sha256(key.encode()).hexdigest()


def write_key_cache_name(*, key_hash: str) -> str:
    """The cache entry holding an authenticated key (see services.write_key_authenticate)."""
    return f"switchboard:write-key:{key_hash}"


def write_key_cache_forget(*, key_hash: str) -> None:
    cache.delete(write_key_cache_name(key_hash=key_hash))


class WriteKeyManager(models.Manager["WriteKey"]):
    def issue(self, *, source: Source, label: str = "") -> tuple[WriteKey, str]:
        """Create a key and return it with its plaintext, which is never stored nor shown again."""
        plaintext = "sb_" + secrets.token_urlsafe(32)
        key = self.create(
            source=source, label=label, prefix=plaintext[:10], key_hash=write_key_hash(plaintext)
        )
        return key, plaintext


class WriteKey(models.Model):
    """One of an HTTP source's write keys; several may be active at once to rotate them."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="write_keys")
    label = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, editable=False, help_text="Enough to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = WriteKeyManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.label or self.source.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def save(self, *args: object, **kwargs: object) -> None:
        super().save(*args, **kwargs)
        # A revoked key must stop authenticating at once, in every process sharing the cache.
        write_key_cache_forget(key_hash=self.key_hash)

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


@receiver(post_delete, sender=WriteKey)
def _write_key_deleted(*, instance: WriteKey, **kwargs: object) -> None:
    # A signal, not delete(): deleting a source removes its keys by cascade, without delete().
    write_key_cache_forget(key_hash=instance.key_hash)


class Destination(models.Model):
    """One Intercom workspace (app)."""

    class MessengerSecurity(models.TextChoices):
        # Intercom's identity verification (HMAC of the user id) and its successor, Messenger
        # security with JWTs (signed claims that expire).
        USER_HASH = "user_hash", "Identity verification: user_hash (HMAC-SHA256 of the user id)"
        JWT = "jwt", "Messenger security: a signed JWT (HS256, expires)"

    class Region(models.TextChoices):
        US = "us", "US (api.intercom.io)"
        EU = "eu", "EU (api.eu.intercom.io)"
        AU = "au", "Australia (api.au.intercom.io)"
        CUSTOM = "custom", "Custom base URL (sandbox, proxy)"

    REGION_BASE_URLS = {
        Region.US: "https://api.intercom.io",
        Region.EU: "https://api.eu.intercom.io",
        Region.AU: "https://api.au.intercom.io",
    }
    API_VERSIONS = [(v, v) for v in ("2.10", "2.11", "2.12", "2.13", "2.14", "2.15", "2.16")]

    name = models.CharField(max_length=100, unique=True)
    region = models.CharField(max_length=10, choices=Region.choices, default=Region.US)
    base_url = models.URLField(
        blank=True, help_text="Only for the custom region, e.g. http://127.0.0.1:8765."
    )
    access_token = EncryptedTextField(
        blank=True,
        help_text="Write-only. Paste an access token, or save without one and use "
        "Connect to Intercom.",
    )
    api_version = models.CharField(max_length=5, choices=API_VERSIONS, default="2.16")
    identity_verification_secret = EncryptedTextField(
        blank=True,
        help_text="Optional; signs the Messenger's user_hash or JWT ({% intercom_messenger %}).",
    )
    messenger_security = models.CharField(
        "Messenger security",
        max_length=10,
        choices=MessengerSecurity.choices,
        default=MessengerSecurity.USER_HASH,
    )
    app_id = models.CharField(
        "Intercom app id",
        max_length=50,
        blank=True,
        editable=False,
        help_text="The workspace's app id (GET /me), which the Messenger needs.",
    )
    oauth_connected_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the token came from Connect to Intercom (OAuth); empty for a pasted one.",
    )
    # Health, written by the data plane after each exchange and by "Check connection".
    workspace_name = models.CharField(
        max_length=200, blank=True, editable=False, help_text="As Intercom's GET /me names it."
    )
    last_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_success_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    last_error_at = models.DateTimeField(null=True, blank=True, editable=False)
    auth_failed_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Set when Intercom answered 401; deliveries are held until the token changes.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def api_base_url(self) -> str:
        if self.region == self.Region.CUSTOM:
            return self.base_url.rstrip("/")
        return self.REGION_BASE_URLS[self.region]

    def clean(self) -> None:
        if self.region == self.Region.CUSTOM:
            if not self.base_url:
                raise ValidationError({"base_url": "The custom region needs a base URL."})
            try:
                URLValidator(schemes=["http", "https"])(self.base_url)
            except ValidationError:
                raise ValidationError(
                    {"base_url": "Enter an http:// or https:// URL, e.g. http://127.0.0.1:8765."}
                ) from None
        elif self.base_url:
            raise ValidationError(
                {"base_url": "A base URL is only used with the custom region; clear it."}
            )

    @property
    def is_connected(self) -> bool:
        """A token is stored (pasted or from Connect to Intercom); without one nothing is sent."""
        return bool(self.access_token)


class Sync(models.Model):
    """Source(s) -> Destination, and how calls become Intercom requests."""

    class Status(models.TextChoices):
        # Paused holds: what arrives is stored and waits, nothing is sent until it is enabled
        # again (an operator pausing during an Intercom incident must lose nothing). Disabled
        # drops: what arrives is not stored, only counted (health page, "filtered").
        ENABLED = "enabled", "Enabled: sends"
        PAUSED = "paused", "Paused: holds what arrives, sends it when enabled again"
        DISABLED = "disabled", "Disabled: drops what arrives (counted)"

    class MatchBy(models.TextChoices):
        EXTERNAL_ID = "external_id", "external_id (a user property)"
        EMAIL = "email", "Email"

    class Role(models.TextChoices):
        USER = "user", "User"
        LEAD = "lead", "Lead"

    class MissingContact(models.TextChoices):
        CREATE = "create", "Create a minimal contact, then send"
        RETRY = "retry", "Retry within the retry window"
        SKIP = "skip", "Skip with a reason"

    class Anonymous(models.TextChoices):
        DROP = "drop", "Drop calls without a userId"
        ANONYMOUS_ID = "anonymous_id", "Use anonymousId as the contact's external_id (never merged)"
        # Intercom merges only a lead into a user, and a lead has no external_id: visitors are
        # leads known by the Intercom id Switchboard remembers for their anonymousId.
        LEAD = "lead", "Visitors as leads, merged into the user when identify or alias links them"

    class PageHandling(models.TextChoices):
        IGNORE = "ignore", "Ignore (skipped)"
        LAST_SEEN = "last_seen", "Update the contact's last seen"
        EVENT = "event", "Send as an event 'Viewed <name>'"

    class UnknownAttributes(models.TextChoices):
        CREATE = "create", "Create them in Intercom"
        DROP = "drop", "Drop them (with a reason)"

    name = models.CharField(max_length=100, unique=True)
    sources = models.ManyToManyField(Source, related_name="syncs")
    destination = models.ForeignKey(Destination, on_delete=models.PROTECT, related_name="syncs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ENABLED)
    send_users = models.BooleanField(default=True, help_text="identify -> contacts")
    send_events = models.BooleanField(default=True, help_text="track -> data events")
    send_companies = models.BooleanField(default=True, help_text="group -> companies")
    match_by = models.CharField(max_length=12, choices=MatchBy.choices, default=MatchBy.EXTERNAL_ID)
    external_id_path = models.CharField(
        max_length=200,
        default="userId",
        help_text="Which field is Intercom's external_id: userId, or a path like traits.account_id.",
    )
    contact_role = models.CharField(max_length=5, choices=Role.choices, default=Role.USER)
    missing_contact = models.CharField(
        max_length=10, choices=MissingContact.choices, default=MissingContact.CREATE
    )
    anonymous = models.CharField(
        max_length=15,
        choices=Anonymous.choices,
        default=Anonymous.DROP,
        help_text="Calls without a userId. 'Visitors as leads': an identify or alias carrying "
        "both ids merges the visitor's lead into the user, once; later calls for either id "
        "reach the user.",
    )
    page_handling = models.CharField(
        max_length=10, choices=PageHandling.choices, default=PageHandling.IGNORE
    )
    update_last_seen = models.BooleanField(
        default=False, help_text="Set last_seen_at from the identify call's timestamp."
    )
    unknown_attributes = models.CharField(
        max_length=10, choices=UnknownAttributes.choices, default=UnknownAttributes.CREATE
    )
    send_all_properties = models.BooleanField(
        default=False,
        help_text="Send every trait/property, not only the mapped ones (still within Intercom's "
        "limits).",
    )
    unarchive_contacts = models.BooleanField(
        default=False,
        help_text="When a call is about a contact archived in Intercom, unarchive it and send. "
        "Off: the delivery is skipped, saying the contact is archived.",
    )
    retry_window = models.DurationField(default=timedelta(hours=4))
    timeline_link_attribute = models.CharField(
        "Timeline link attribute",
        max_length=190,
        blank=True,
        help_text="A contact attribute (e.g. switchboard_timeline) set to the user's timeline "
        "in Switchboard with each identify, so an agent opens it from Intercom's inbox. Needs "
        "SWITCHBOARD_PUBLIC_URL. Blank: off.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_enabled(self) -> bool:
        return self.status == self.Status.ENABLED

    def save(self, *args: object, **kwargs: object) -> None:
        creating = self._state.adding
        super().save(*args, **kwargs)
        if creating:
            # Events imported from Intercom must never be sent back into it (a loop).
            self.filters.create(action=EventFilter.Action.EXCLUDE, event_name=INTERCOM_EVENTS)

    def clean(self) -> None:
        # clean() runs even when clean_fields() failed: a bad window is reported there.
        if isinstance(self.retry_window, timedelta) and not (
            timedelta(minutes=1) <= self.retry_window <= timedelta(days=7)
        ):
            raise ValidationError({"retry_window": "Between 1 minute and 7 days."})
        if not re.fullmatch(
            r"(userId|anonymousId|(traits|properties|context)(\.[\w-]+)+)",
            self.external_id_path or "",
        ):
            raise ValidationError(
                {
                    "external_id_path": "userId, anonymousId, or traits.<name> / properties.<name> / "
                    "context.<name>."
                }
            )
        if self.timeline_link_attribute and not INTERCOM_NAME_RE.fullmatch(
            self.timeline_link_attribute
        ):
            raise ValidationError({"timeline_link_attribute": INTERCOM_NAME_HELP})
        if self.timeline_link_attribute and not settings.SWITCHBOARD_PUBLIC_URL:
            raise ValidationError(
                {
                    "timeline_link_attribute": "Set SWITCHBOARD_PUBLIC_URL first (e.g. "
                    "https://switchboard.example): the link must work from Intercom's inbox."
                }
            )


EVENT_NAME_MAX = 255
FIELD_PATH_RE = re.compile(r"(userId|anonymousId|event|(properties|traits|context)(\.[^.\s]+)+)")


class EventFilter(models.Model):
    """Which calls a sync sends.

    A filter matches a call when its event-name pattern (if any) matches the event name and its
    condition (if any) holds. A call is sent when it matches no exclude filter and, if the sync
    has include filters, at least one of them. Name patterns only concern calls with a name
    (track, page, screen); identify, group and alias are judged by condition-only filters.
    """

    class Action(models.TextChoices):
        INCLUDE = "include", "Include"
        EXCLUDE = "exclude", "Exclude"

    class Operator(models.TextChoices):
        EXISTS = "exists", "exists"
        NOT_EXISTS = "not_exists", "does not exist"
        EQUALS = "eq", "="
        NOT_EQUALS = "ne", "!="
        CONTAINS = "contains", "contains"
        IN = "in", "in (comma-separated)"
        GREATER = "gt", ">"
        LESS = "lt", "<"

    VALUELESS_OPERATORS = {Operator.EXISTS, Operator.NOT_EXISTS}

    sync = models.ForeignKey(Sync, on_delete=models.CASCADE, related_name="filters")
    action = models.CharField(max_length=7, choices=Action.choices, default=Action.INCLUDE)
    event_name = models.CharField(
        max_length=EVENT_NAME_MAX,
        blank=True,
        help_text="Event name pattern; * matches anything (e.g. 'Order *'). Blank: any call.",
    )
    field = models.CharField(
        max_length=200,
        blank=True,
        help_text="Condition on userId, properties.x, traits.x or context.x (dots for nesting).",
    )
    operator = models.CharField(max_length=10, choices=Operator.choices, blank=True)
    value = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["sync", "id"]

    def __str__(self) -> str:
        parts = [self.get_action_display()]
        if self.event_name:
            parts.append(f"event {self.event_name!r}")
        if self.field:
            parts.append(f"where {self.field} {self.get_operator_display()} {self.value}".strip())
        return " ".join(parts)

    def clean(self) -> None:
        if not self.event_name and not self.field:
            raise ValidationError("Give an event name pattern, a condition, or both.")
        if self.field:
            if not FIELD_PATH_RE.fullmatch(self.field):
                raise ValidationError(
                    {
                        "field": "Use userId, anonymousId, event, or properties./traits./context. "
                        "followed by a dotted path."
                    }
                )
            if not self.operator:
                raise ValidationError({"operator": "A condition needs an operator."})
            if self.operator not in self.VALUELESS_OPERATORS and self.value == "":
                raise ValidationError({"value": "This operator needs a value."})
            if self.operator in (self.Operator.GREATER, self.Operator.LESS):
                try:
                    float(self.value)
                except ValueError:
                    raise ValidationError({"value": "> and < compare numbers."}) from None
        elif self.operator or self.value:
            raise ValidationError({"field": "An operator or value needs a field."})


# Tag names are free text in Intercom (case-insensitive); only what would read as another tag
# (edge spaces) or break a header or a log line (control characters) is refused.
TAG_NAME_RE = re.compile(r"[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?")

# Intercom attribute names: letters, digits, underscores, hyphens and currency symbols other than
# '$' (reserved, like '.', by Intercom's data model); we also forbid spaces to keep names stable.
INTERCOM_NAME_RE = re.compile(r"[\w\-¢£¤¥€₹₽₩]+")
INTERCOM_NAME_HELP = (
    "Intercom names use letters, digits, '_' , '-' and currency symbols other than '$'; no "
    "spaces, dots or '$'."
)
METADATA_KEYS_MAX = 10  # POST /events metadata, per Intercom's API description


class PropertyMapping(models.Model):
    """One trait or property selected to become Intercom metadata or a custom attribute."""

    class Target(models.TextChoices):
        EVENT_METADATA = "event_metadata", "Event metadata"
        CONTACT_ATTRIBUTE = "contact_attribute", "Contact custom attribute"
        COMPANY_ATTRIBUTE = "company_attribute", "Company custom attribute"
        # A boolean trait (true tags, false untags, under the mapping's Intercom name) or a list
        # of tag names (traits.audiences: each is a tag; names gone since the last call untag).
        CONTACT_TAG = "contact_tag", "Contact tag"
        COMPANY_TAG = "company_tag", "Company tag (group traits)"

    sync = models.ForeignKey(Sync, on_delete=models.CASCADE, related_name="mappings")
    target = models.CharField(max_length=20, choices=Target.choices)
    source_path = models.CharField(
        max_length=200, help_text="properties.plan, traits.company.size, context.device.model"
    )
    intercom_name = models.CharField(
        max_length=190, help_text="The metadata key or custom attribute name in Intercom."
    )

    class Meta:
        ordering = ["sync", "target", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["sync", "target", "intercom_name"], name="mapping_unique_intercom_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.source_path} -> {self.intercom_name} ({self.get_target_display()})"

    def clean(self) -> None:
        if not re.fullmatch(r"(properties|traits|context)(\.[^.\s]+)+", self.source_path or ""):
            raise ValidationError(
                {
                    "source_path": "Start with properties., traits. or context., e.g. properties.plan."
                }
            )
        if self.target in (self.Target.CONTACT_TAG, self.Target.COMPANY_TAG):
            self._tag_clean()
        elif not INTERCOM_NAME_RE.fullmatch(self.intercom_name or ""):
            raise ValidationError(
                {
                    "intercom_name": "Intercom names use letters, digits, '_' , '-' and currency "
                    "symbols other than '$'; no spaces, dots or '$'."
                }
            )
        # The admin's inline formset counts the unsaved siblings itself and sets this flag,
        # because the rows in the database are not what the operator is about to save.
        if getattr(self, "siblings_checked", False):
            return
        if self.target == self.Target.EVENT_METADATA and self.sync_id:
            others = PropertyMapping.objects.filter(
                sync_id=self.sync_id, target=self.Target.EVENT_METADATA
            ).exclude(pk=self.pk)
            if others.count() >= METADATA_KEYS_MAX:
                raise ValidationError(
                    f"Intercom keeps at most {METADATA_KEYS_MAX} metadata keys per event; this "
                    "sync already maps that many."
                )

    def _tag_clean(self) -> None:
        """A tag mapping: the tag's name (or the list's label, for a list of names), and a path
        the call carries: a company tag reads a group call's traits."""
        if not TAG_NAME_RE.fullmatch(self.intercom_name or ""):
            raise ValidationError(
                {
                    "intercom_name": "The tag's name in Intercom (for a list such as "
                    "traits.audiences, a label for the list): text without leading or trailing "
                    "spaces."
                }
            )
        if self.target == self.Target.COMPANY_TAG and not self.source_path.startswith("traits."):
            raise ValidationError(
                {
                    "source_path": "A company tag reads a group call's traits, e.g. "
                    "traits.enterprise."
                }
            )


class IntercomApp(models.Model):
    """The public Intercom app that "Connect to Intercom" authorises (OAuth); one row at most.

    Without it, ``SWITCHBOARD_INTERCOM_CLIENT_ID`` / ``_SECRET`` are used (integrations/oauth.py).
    """

    client_id = models.CharField(max_length=200, help_text="The app's Basic information page.")
    client_secret = EncryptedTextField(help_text="Write-only. Leave blank to keep the stored one.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Intercom app (OAuth)"
        verbose_name_plural = "Intercom app (OAuth)"

    def __str__(self) -> str:
        return f"Intercom app {self.client_id}"

    def save(self, *args: object, **kwargs: object) -> None:
        self.pk = 1  # one app: saving another replaces it
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if not self.client_secret:
            raise ValidationError({"client_secret": "The app's client secret is required."})
