"""The operator's console for the control plane: sources, write keys, destinations, syncs.

Every ModelAdmin derives from django-unfold's (the admin's theme). Secrets are write-only
(integrations/forms.py). A write key is issued by a POST that redirects to the one page showing
its plaintext, once: the key waits for that page encrypted in the session, and a reload finds it
gone (never a second key). Intercom's GET /me checks a destination's token when it is saved and
on "Check connection", and its answer is recorded on the destination's health fields.

Over our usual ~400 lines: one ModelAdmin per control-plane model, plus the write-key pages, the
token check, and Django's users and groups in the theme; each is short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST
from unfold.admin import ModelAdmin, TabularInline
from unfold.forms import AdminPasswordChangeForm, UserChangeForm, UserCreationForm
from unfold.widgets import UnfoldAdminCheckboxSelectMultipleWidget

from integrations import oauth, services
from integrations.encryption import secret_decrypt, secret_encrypt
from integrations.forms import (
    DestinationForm,
    IntercomAppForm,
    PropertyMappingInlineForm,
    PropertyMappingInlineFormSet,
    SourceForm,
    SyncForm,
    WriteKeyInlineForm,
    WriteKeyIssueForm,
)
from integrations.models import (
    Destination,
    EventFilter,
    IntercomApp,
    PropertyMapping,
    Source,
    Sync,
    WriteKey,
)
from integrations.public_url import public_url


def _log(request: HttpRequest, obj: Any, action_flag: int, message: str) -> None:
    LogEntry.objects.log_actions(
        user_id=request.user.pk,
        queryset=[obj],
        action_flag=action_flag,
        change_message=message,
        single_object=True,
    )


# --- sources and write keys ----------------------------------------------------------------

# The plaintext of keys just issued waits here, encrypted, for the one page that shows it: the
# issuing POST redirects to that page (a reload must not issue another key), which pops it.
ISSUED_KEYS_SESSION = "switchboard:issued-write-keys"


class WriteKeyInline(TabularInline):
    model = WriteKey
    form = WriteKeyInlineForm
    fields = ["prefix_shown", "label", "status", "created_at", "last_used_at", "revoke"]
    readonly_fields = ["prefix_shown", "status", "created_at", "last_used_at"]
    extra = 0
    can_delete = False
    verbose_name_plural = "Write keys (issue a new one with the button at the top right)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are issued through the one-time page, never typed in

    @admin.display(description="Key")
    def prefix_shown(self, key: WriteKey) -> str:
        return f"{key.prefix}…"

    @admin.display(description="Status")
    def status(self, key: WriteKey) -> str:
        if key.is_active:
            return "active"
        return f"revoked {date_format(timezone.localtime(key.revoked_at), 'DATETIME_FORMAT')}"


@admin.register(Source)
class SourceAdmin(ModelAdmin):
    """Sources and their write keys. The data plane re-registers it with the source's traffic
    (``streaming.audit.admin.SourceWithTrafficAdmin``): the control plane never reads events."""

    form = SourceForm
    list_display = ["name", "kind", "enabled", "active_write_keys", "created_at"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "write_keys__label", "write_keys__prefix"]
    inlines = [WriteKeyInline]
    actions = ["issue_write_keys"]
    readonly_fields = ["webhook_url", "used_by", "intercom_connection", "dropped"]
    # Each kind shows its own parts, also while the kind is being chosen (Alpine, in the page).
    conditional_fields = {
        "webhook_secret": "kind == 'intercom_webhook'",
        "clear_webhook_secret": "kind == 'intercom_webhook'",
        "webhook_match_by": "kind == 'intercom_webhook'",
    }

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The secret is hidden in the page unless the kind is "Intercom webhook" (see
        # conditional_fields): switching the kind shows it without a reload.
        fields = ["name", "kind", "enabled", "webhook_secret"]
        if obj is not None and obj.webhook_secret:
            fields.append("clear_webhook_secret")  # only when there is something to clear
        if obj is None or obj.kind == Source.Kind.INTERCOM_WEBHOOK:
            fields.append("webhook_match_by")
        if obj is not None and obj.kind == Source.Kind.INTERCOM_WEBHOOK:
            fields += ["webhook_url", "intercom_connection", "dropped"]
        if obj is not None:
            fields.append("used_by")
        return fields

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        # Keys are issued once the source exists; a webhook source has none: Intercom signs
        # its calls with the app's client secret.
        if obj is None or obj.kind != Source.Kind.HTTP:
            return []
        return super().get_inlines(request, obj)

    def response_add(self, request: HttpRequest, obj: Source, post_url_continue: Any = None) -> Any:
        if obj.kind != Source.Kind.HTTP or "_addanother" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        # An HTTP source is of no use without a key: go where it is issued.
        self.message_user(
            request,
            f"The source “{obj}” was added. Issue its first write key: clients send it with "
            "every call.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:integrations_source_issue_key", args=[obj.pk]))

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        source = super().get_object(request, object_id, from_field)
        if source is not None:
            # A display method only gets the object: the absolute URL needs the request's host.
            # (A URL name, not an import: the control plane never imports the data plane.)
            path = reverse("intercom-webhook", kwargs={"source_id": source.pk})
            source.webhook_url_absolute = public_url(path, request=request)
        return source

    @admin.display(description="Webhook URL")
    def webhook_url(self, source: Source) -> str:
        url = getattr(source, "webhook_url_absolute", "")
        if not url:
            return "-"
        return format_html(
            "<code>{}</code><div class='help'>Paste it as the endpoint URL in Intercom's "
            "Developer Hub (your app &rarr; Configure &rarr; Webhooks), over HTTPS, and use the "
            "app's client secret (Basic information page) as this source's webhook secret, or "
            "use Connect to Intercom. If Intercom reaches Switchboard under another host name "
            "than this admin, set SWITCHBOARD_PUBLIC_URL. See docs/webhooks.md.</div>",
            url,
        )

    @admin.display(description="Intercom workspace")
    def intercom_connection(self, source: Source) -> str:
        if source.intercom_workspace_name:
            return (
                f"“{source.intercom_workspace_name}”: the Intercom app is authorised there, and "
                "its client secret verifies the notifications."
            )
        return "Not connected with Connect to Intercom (a pasted client secret works as well)."

    @admin.display(description="Dropped notifications")
    def dropped(self, source: Source) -> str:
        if not source.dropped_notifications:
            return "None: every notification named someone."
        return format_html(
            "{} <span class='sb-muted'>(the last at {}: {})</span>",
            ngettext(
                "%(n)d notification dropped",
                "%(n)d notifications dropped",
                source.dropped_notifications,
            )
            % {"n": source.dropped_notifications},
            _when(source.last_dropped_at),
            source.last_dropped_reason,
        )

    @admin.display(description="Used by")
    def used_by(self, source: Source) -> str:
        syncs = source.syncs.select_related("destination").order_by("name")
        if not syncs:
            return "No sync sends this source's calls anywhere yet."
        return format_html(
            '<ul class="sb-plain-list">{}</ul>',
            format_html_join(
                "",
                '<li><a href="{}">{}</a> &rarr; {} <span class="sb-muted">({})</span></li>',
                (
                    (
                        reverse("admin:integrations_sync_change", args=[sync.pk]),
                        sync.name,
                        sync.destination.name,
                        sync.status,
                    )
                    for sync in syncs
                ),
            ),
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Source]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                active_keys=Count("write_keys", filter=Q(write_keys__revoked_at__isnull=True))
            )
        )

    @admin.display(description="Active write keys", ordering="active_keys")
    def active_write_keys(self, source: Source) -> int | str:
        return source.active_keys if source.kind == Source.Kind.HTTP else "-"

    def get_urls(self) -> list[Any]:
        issue = self.admin_site.admin_view(self.issue_write_key_view)
        issued = self.admin_site.admin_view(self.issued_write_keys_view)
        connect = self.admin_site.admin_view(self.connect_view)
        return [
            # Before the change view's "<path:object_id>/", which would take it for an id.
            path("write-key-issued/", issued, name="integrations_source_key_issued"),
            path("<path:object_id>/issue-write-key/", issue, name="integrations_source_issue_key"),
            path("<path:object_id>/connect/", connect, name="integrations_source_connect"),
            *super().get_urls(),
        ]

    def connect_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Connect to Intercom for a webhook source: asks the region, then off to Intercom."""
        source = get_object_or_404(Source, pk=object_id, kind=Source.Kind.INTERCOM_WEBHOOK)
        if not self.has_change_permission(request, source):
            raise PermissionDenied
        error = ""
        if request.method == "POST":
            try:
                target = oauth.source_target(source, region=request.POST.get("region", ""))
                return HttpResponseRedirect(oauth_redirect(request, target))
            except oauth.OAuthError as exc:
                error = str(exc)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Connect {source} to Intercom",
            "opts": self.opts,
            "original": source,
            "regions": [(r, Destination.Region(r).label) for r in oauth.AUTHORIZE_URLS],
            "error": error,
        }
        return TemplateResponse(request, "admin/integrations/source_connect.html", context)

    def issue_write_key_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        source = get_object_or_404(Source, pk=object_id)
        if not self.has_change_permission(request, source):
            raise PermissionDenied
        if source.kind != Source.Kind.HTTP:
            raise Http404("Only HTTP sources have write keys.")
        form = WriteKeyIssueForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            key, plaintext = services.write_key_issue(
                source=source, label=form.cleaned_data["label"]
            )
            _log(request, source, CHANGE, f"Issued write key {key.prefix}…")
            return self._issued_redirect(request, [(key, plaintext)])
        context = {
            **self.admin_site.each_context(request),
            "title": f"Issue a new write key for {source}",
            "opts": self.opts,
            "original": source,
            "form": form,
        }
        return TemplateResponse(request, "admin/integrations/write_key_issue.html", context)

    def _issued_redirect(
        self, request: HttpRequest, issued: list[tuple[WriteKey, str]]
    ) -> HttpResponseRedirect:
        request.session[ISSUED_KEYS_SESSION] = [
            {"key": key.pk, "secret": secret_encrypt(plaintext)} for key, plaintext in issued
        ]
        query = urlencode([("source", key.source_id) for key, _ in issued])
        return HttpResponseRedirect(reverse("admin:integrations_source_key_issued") + "?" + query)

    def issued_write_keys_view(self, request: HttpRequest) -> HttpResponse:
        """The one page that shows new keys; shown once: a reload finds them gone."""
        held = request.session.pop(ISSUED_KEYS_SESSION, [])
        keys = WriteKey.objects.select_related("source").in_bulk([item["key"] for item in held])
        issued = [
            (keys[item["key"]].source, keys[item["key"]], secret_decrypt(item["secret"]))
            for item in held
            if item["key"] in keys and self.has_change_permission(request, keys[item["key"]].source)
        ]
        source_ids = [int(i) for i in request.GET.getlist("source") if i.isdigit()]
        sources = [source for source, _, _ in issued] or list(
            Source.objects.filter(pk__in=source_ids).order_by("name")
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "New write key" if len(issued) <= 1 else "New write keys",
            "issued": issued,
            "sources": list(dict.fromkeys(sources)),
            "ingest_url": request.build_absolute_uri("/v1/track"),
        }
        response = TemplateResponse(request, "admin/integrations/write_key_issued.html", context)
        # The only page that ever shows a key: no browser or proxy may keep a copy.
        add_never_cache_headers(response)
        response["Cache-Control"] += ", no-store"
        return response

    @admin.action(description="Issue a new write key (shown once)")
    def issue_write_keys(self, request: HttpRequest, queryset: QuerySet[Source]) -> Any:
        issued = []
        for source in queryset:
            if source.kind != Source.Kind.HTTP:
                self.message_user(
                    request,
                    f"{source} receives Intercom webhooks, which need no write key: none issued.",
                    messages.WARNING,
                )
                continue
            key, plaintext = services.write_key_issue(source=source, label="")
            _log(request, source, CHANGE, f"Issued write key {key.prefix}…")
            issued.append((key, plaintext))
        return self._issued_redirect(request, issued) if issued else None


class ActiveKeyFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[WriteKey]) -> QuerySet[WriteKey]:
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(WriteKey)
class WriteKeyAdmin(ModelAdmin):
    list_display = ["__str__", "source", "label", "status", "created_at", "last_used_at"]
    list_filter = [ActiveKeyFilter, "source"]
    search_fields = ["label", "prefix", "source__name"]
    fields = ["source", "prefix", "label", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["source", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issue keys from the source's page: that is where the plaintext is shown

    @admin.display(description="Status")
    def status(self, key: WriteKey) -> str:
        return "active" if key.is_active else "revoked"

    @admin.action(description="Revoke the selected write keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[WriteKey]) -> None:
        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            services.write_key_revoke(write_key=key)  # one by one: each drops its cache entry
            _log(request, key, CHANGE, "Revoked.")
            revoked += 1
        text = ngettext(
            "%(n)d write key revoked: calls sent with it are refused from now on.",
            "%(n)d write keys revoked: calls sent with them are refused from now on.",
            revoked,
        )
        self.message_user(request, text % {"n": revoked}, messages.SUCCESS)


# --- destinations ---------------------------------------------------------------------------


@admin.register(Destination)
class DestinationAdmin(ModelAdmin):
    form = DestinationForm
    list_display = [
        "name",
        "region",
        "api_base_url",
        "api_version",
        "workspace_name",
        "health",
        "last_checked_at",
    ]
    list_filter = ["region", "api_version"]
    search_fields = ["name", "base_url", "workspace_name"]
    readonly_fields = [
        "connection",
        "workspace_name",
        "app_id",
        "last_checked_at",
        "last_success_at",
        "last_error",
        "last_error_at",
        "auth_failed_at",
    ]
    fieldsets = [
        (None, {"fields": ["name", "region", "base_url", "api_version"]}),
        (
            "Secrets (write-only)",
            {
                "fields": [
                    "access_token",
                    "identity_verification_secret",
                    "clear_identity_verification_secret",
                    "messenger_security",
                ]
            },
        ),
        ("Health", {"fields": readonly_fields}),
    ]
    conditional_fields = {"base_url": "region == 'custom'"}

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or not obj.identity_verification_secret:
            # The "clear" box only exists when there is something to clear.
            fieldsets = [
                (
                    name,
                    {**opts, "fields": [f for f in opts["fields"] if not f.startswith("clear_")]},
                )
                for name, opts in fieldsets
            ]
        if obj is None:
            fieldsets = [fieldset for fieldset in fieldsets if fieldset[0] != "Health"]
        return fieldsets

    @admin.display(description="Connection")
    def connection(self, destination: Destination) -> str:
        if not destination.is_connected:
            return (
                "Not connected: nothing is sent until you use Connect to Intercom or paste a token."
            )
        workspace = f"“{destination.workspace_name}”" if destination.workspace_name else "?"
        if destination.oauth_connected_at:
            return (
                f"Connected to workspace {workspace} with Connect to Intercom at "
                f"{_when(destination.oauth_connected_at)}."
            )
        return f"A pasted access token is stored (workspace {workspace})."

    @admin.display(description="Health")
    def health(self, destination: Destination) -> str:
        if not destination.is_connected:
            return "not connected"
        if destination.auth_failed_at:
            return "token rejected (401): deliveries held"
        if destination.last_error_at and (
            not destination.last_success_at
            or destination.last_error_at > destination.last_success_at
        ):
            return f"error: {destination.last_error[:80]}"
        return "ok" if destination.last_success_at else "never used"

    def save_model(self, request: HttpRequest, obj: Destination, form: Form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not obj.is_connected:
            # Held like a refused token: a token saved or connected later releases it.
            Destination.objects.filter(pk=obj.pk, auth_failed_at__isnull=True).update(
                auth_failed_at=timezone.now()
            )
            self.message_user(
                request,
                "Saved without a token: nothing is sent to this workspace until you use "
                "Connect to Intercom or paste an access token.",
                messages.WARNING,
            )
        elif "access_token" in form.changed_data:
            # A wrong token is found now, by the operator who typed it, not by the first delivery.
            check = destination_check(destination=obj)
            self.message_user(request, check.on_save, check.level)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(require_POST(self.check_connection_view))
        connect = self.admin_site.admin_view(require_POST(self.connect_view))
        disconnect = self.admin_site.admin_view(require_POST(self.disconnect_view))
        callback = self.admin_site.admin_view(self.oauth_callback_view)
        return [
            # Intercom's app settings list one redirect URL: every connection comes back here.
            path("oauth-callback/", callback, name="integrations_intercom_oauth_callback"),
            path(
                "<path:object_id>/check-connection/",
                view,
                name="integrations_destination_check_connection",
            ),
            path("<path:object_id>/connect/", connect, name="integrations_destination_connect"),
            path(
                "<path:object_id>/disconnect/",
                disconnect,
                name="integrations_destination_disconnect",
            ),
            *super().get_urls(),
        ]

    def _changeable(self, request: HttpRequest, object_id: Any) -> Destination:
        destination = get_object_or_404(Destination, pk=object_id)
        if not self.has_change_permission(request, destination):
            raise PermissionDenied
        return destination

    def _change_page(self, destination_id: int) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse("admin:integrations_destination_change", args=[destination_id])
        )

    def connect_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        destination = self._changeable(request, object_id)
        try:
            target = oauth.destination_target(destination)
            return HttpResponseRedirect(oauth_redirect(request, target))
        except oauth.OAuthError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return self._change_page(destination.pk)

    def disconnect_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        destination = self._changeable(request, object_id)
        destination.access_token = ""
        destination.oauth_connected_at = None
        destination.save(update_fields=["access_token", "oauth_connected_at"])
        # Held like a refused token, so nothing is sent without one; a new token releases it.
        Destination.objects.filter(pk=destination.pk).update(auth_failed_at=timezone.now())
        _log(request, destination, CHANGE, "Disconnected from Intercom: the token was forgotten.")
        self.message_user(
            request,
            f"Disconnected: the token of “{destination}” is forgotten. Deliveries to it wait "
            "until you connect again or paste a token.",
            messages.SUCCESS,
        )
        return self._change_page(destination.pk)

    def oauth_callback_view(self, request: HttpRequest) -> HttpResponse:
        """Intercom sends the operator back here with ``code`` and ``state`` (or ``error``)."""
        try:
            target = oauth.oauth_state_read(
                session=request.session, state=request.GET.get("state", "")
            )
        except oauth.OAuthError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:integrations_destination_changelist"))
        model = Destination if target.kind == "destination" else Source
        obj = get_object_or_404(model, pk=target.pk)
        back = HttpResponseRedirect(
            reverse(f"admin:integrations_{target.kind}_change", args=[target.pk])
        )
        if not self.admin_site.get_model_admin(model).has_change_permission(request, obj):
            raise PermissionDenied
        if request.GET.get("error"):
            text = oauth.oauth_denied_message(
                error=request.GET["error"], description=request.GET.get("error_description", "")
            )
            self.message_user(request, text, messages.ERROR)
            return back
        try:
            token = oauth.oauth_code_exchange(
                target=target,
                code=request.GET.get("code", ""),
                redirect_uri=oauth_redirect_uri(request),
            )
        except oauth.OAuthError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return back
        if isinstance(obj, Destination):
            self._connected(request, obj, token)
        else:
            self._source_connected(request, obj, target, token)
        return back

    def _connected(self, request: HttpRequest, destination: Destination, token: str) -> None:
        destination.access_token = token
        destination.oauth_connected_at = timezone.now()
        destination.auth_failed_at = None
        destination.save()
        _log(request, destination, CHANGE, "Connected to Intercom (OAuth): a new token is stored.")
        check = destination_check(destination=destination)
        if check.ok:
            text = (
                f"Connected to Intercom workspace “{destination.workspace_name or '?'}”: the "
                "token is stored encrypted, and deliveries use it from now on."
            )
            self.message_user(request, text, messages.SUCCESS)
        else:
            self.message_user(request, check.on_save, messages.WARNING)

    def _source_connected(
        self, request: HttpRequest, source: Source, target: oauth.OAuthTarget, token: str
    ) -> None:
        # Intercom signs a public app's notifications with the app's client secret: the one
        # just used to connect. The token only names the workspace; it is not kept.
        from integrations.intercom.client import IntercomClient

        app = oauth.oauth_app()
        api_base = target.token_url.removesuffix(oauth.TOKEN_PATH)
        client = IntercomClient(base_url=api_base, token=token, api_version="2.16")
        try:
            answer = client.me()
        finally:
            client.close()
        body = answer.body if answer.ok and isinstance(answer.body, dict) else {}
        app_part = body.get("app") if isinstance(body.get("app"), dict) else {}
        source.intercom_workspace_name = str(app_part.get("name") or "?")[:200]
        if app is not None:
            source.webhook_secret = app.client_secret
        source.save()
        _log(request, source, CHANGE, "Connected to Intercom (OAuth): webhook secret set.")
        self.message_user(
            request,
            f"Connected to Intercom workspace “{source.intercom_workspace_name}”: the app's "
            "client secret now verifies this source's notifications.",
            messages.SUCCESS,
        )

    def check_connection_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        destination = get_object_or_404(Destination, pk=object_id)
        if not self.has_change_permission(request, destination):
            raise PermissionDenied
        check = destination_check(destination=destination)
        self.message_user(request, check.text, messages.SUCCESS if check.ok else messages.ERROR)
        return HttpResponseRedirect(
            reverse("admin:integrations_destination_change", args=[destination.pk])
        )


def oauth_redirect_uri(request: HttpRequest) -> str:
    """The one redirect URL to list in the Intercom app's settings (Authentication page)."""
    return public_url(reverse("admin:integrations_intercom_oauth_callback"), request=request)


def oauth_redirect(request: HttpRequest, target: oauth.OAuthTarget) -> str:
    return oauth.oauth_start(
        session=request.session, target=target, redirect_uri=oauth_redirect_uri(request)
    )


def _when(at: Any) -> str:
    return date_format(timezone.localtime(at), "DATETIME_FORMAT") if at else "-"


@dataclass(frozen=True)
class ConnectionCheck:
    """Intercom's answer to GET /me, described for "Check connection" and for a saved token."""

    ok: bool
    token_refused: bool
    text: str  # what "Check connection" says
    on_save: str  # what saving a new token says

    @property
    def level(self) -> int:
        return messages.SUCCESS if self.ok else messages.WARNING


def destination_check(*, destination: Destination) -> ConnectionCheck:
    """Ask Intercom who the token belongs to (GET /me); record and describe the answer."""
    from integrations.intercom.client import IntercomClient, classify

    result = IntercomClient.from_destination(destination).me()
    verdict = classify(result)
    now = timezone.now()
    destination.last_checked_at = now
    fields = ["last_checked_at"]
    if verdict.kind == "success":
        body = result.body if isinstance(result.body, dict) else {}
        app = body.get("app") if isinstance(body.get("app"), dict) else {}
        destination.workspace_name = str(app.get("name") or "")[:200]
        destination.app_id = str(app.get("id_code") or "")[:50]
        destination.last_success_at = now
        destination.auth_failed_at = None
        fields += ["workspace_name", "app_id", "last_success_at", "auth_failed_at"]
        admin_name = body.get("name") or "?"
        email = f" <{body['email']}>" if body.get("email") else ""
        workspace = f"“{destination.workspace_name or '?'}”"
        check = ConnectionCheck(
            ok=True,
            token_refused=False,
            text=f"Connected to Intercom workspace {workspace} as admin {admin_name}{email}.",
            on_save=f"Intercom accepted the token: it belongs to admin {admin_name}{email} "
            f"of workspace {workspace}.",
        )
    else:
        status = f"HTTP {result.status}" if result.status is not None else "no answer"
        reason = ": ".join(part for part in (verdict.code, verdict.message) if part)
        text = f"Intercom check failed ({status}): {reason or 'no details'}"
        destination.last_error = text
        destination.last_error_at = now
        fields += ["last_error", "last_error_at"]
        if verdict.kind == "auth":
            destination.auth_failed_at = now
            fields.append("auth_failed_at")
            on_save = (
                f"Saved, but Intercom refused this token ({status}: {reason or 'no details'}). "
                "Nothing is sent to this workspace until a token that works is saved: copy it "
                "again from the Intercom app's Authentication page."
            )
        elif result.status is None:
            on_save = (
                f"Saved, but Intercom could not be reached to check the token ({reason}). "
                "Check the region or base URL, then use Check connection."
            )
        else:
            on_save = (
                f"Saved, but Intercom did not confirm the token ({status}: "
                f"{reason or 'no details'}). Use Check connection to try again."
            )
        check = ConnectionCheck(
            ok=False, token_refused=verdict.kind == "auth", text=text, on_save=on_save
        )
    destination.save(update_fields=fields)
    return check


# --- syncs -----------------------------------------------------------------------------------


class EventFilterInline(TabularInline):
    model = EventFilter
    fields = ["action", "event_name", "field", "operator", "value"]
    extra = 0


class PropertyMappingInline(TabularInline):
    model = PropertyMapping
    form = PropertyMappingInlineForm
    formset = PropertyMappingInlineFormSet
    fields = ["target", "source_path", "intercom_name"]
    extra = 0


@admin.register(Sync)
class SyncAdmin(ModelAdmin):
    form = SyncForm
    list_display = [
        "name",
        "status",
        "source_names",
        "destination",
        "send_users",
        "send_events",
        "send_companies",
    ]
    list_filter = ["status", "destination", "sources", "send_users", "send_events"]
    list_select_related = ["destination"]
    search_fields = ["name", "destination__name", "sources__name"]
    inlines = [EventFilterInline, PropertyMappingInline]
    actions = ["pause", "enable"]
    fieldsets = [
        (None, {"fields": ["name", "status", "sources", "destination"]}),
        ("What to send", {"fields": ["send_users", "send_events", "send_companies"]}),
        (
            "Identity",
            {"fields": ["match_by", "external_id_path", "contact_role", "anonymous"]},
        ),
        ("Link back from Intercom", {"fields": ["timeline_link_attribute"]}),
        (
            "Behaviour",
            {
                "fields": [
                    "missing_contact",
                    "page_handling",
                    "update_last_seen",
                    "unknown_attributes",
                    "send_all_properties",
                    "unarchive_contacts",
                    "retry_window",
                ]
            },
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Sync]:
        return super().get_queryset(request).prefetch_related("sources")

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "sources":
            # A handful of sources: boxes to tick, narrower than the two-list selector.
            kwargs["widget"] = UnfoldAdminCheckboxSelectMultipleWidget
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    @admin.display(description="Sources")
    def source_names(self, sync: Sync) -> str:
        return ", ".join(source.name for source in sync.sources.all())

    @admin.action(description="Pause the selected syncs")
    def pause(self, request: HttpRequest, queryset: QuerySet[Sync]) -> None:
        self._set_status(request, queryset, Sync.Status.PAUSED)

    @admin.action(description="Enable the selected syncs")
    def enable(self, request: HttpRequest, queryset: QuerySet[Sync]) -> None:
        self._set_status(request, queryset, Sync.Status.ENABLED)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Sync], status: str) -> None:
        changed = 0
        for sync in queryset.exclude(status=status):
            sync.status = status
            sync.save(update_fields=["status"])
            _log(request, sync, CHANGE, f"Status set to {status}.")
            changed += 1
        if status == Sync.Status.PAUSED:
            # Pause holds (Sync.Status): what arrives is stored and waits for the sync.
            text = ngettext(
                "%(n)d sync paused: what arrives is kept, and sent in order once it is "
                "enabled again.",
                "%(n)d syncs paused: what arrives is kept, and sent in order once they are "
                "enabled again.",
                changed,
            )
        else:
            text = ngettext(
                "%(n)d sync enabled: what it held goes out now, in each user's order.",
                "%(n)d syncs enabled: what they held goes out now, in each user's order.",
                changed,
            )
        self.message_user(request, text % {"n": changed}, messages.SUCCESS)


@admin.register(EventFilter)
class EventFilterAdmin(ModelAdmin):
    list_display = ["__str__", "sync", "action", "event_name", "field", "operator", "value"]
    list_filter = ["action", "operator", "sync"]
    search_fields = ["event_name", "field", "value", "sync__name"]
    list_select_related = ["sync"]


@admin.register(PropertyMapping)
class PropertyMappingAdmin(ModelAdmin):
    list_display = ["intercom_name", "source_path", "target", "sync"]
    list_filter = ["target", "sync"]
    search_fields = ["intercom_name", "source_path", "sync__name"]
    list_select_related = ["sync"]


@admin.register(IntercomApp)
class IntercomAppAdmin(ModelAdmin):
    """The public Intercom app of Connect to Intercom: its client id and (write-only) secret."""

    form = IntercomAppForm
    list_display = ["client_id", "updated_at"]
    readonly_fields = ["redirect_url"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["client_id", "client_secret"] + (["redirect_url"] if obj is not None else [])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not IntercomApp.objects.exists()

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        app = super().get_object(request, object_id, from_field)
        if app is not None:
            # A display method only gets the object; the URL may need the request's host.
            app.redirect_url_absolute = oauth_redirect_uri(request)
        return app

    @admin.display(description="Redirect URL")
    def redirect_url(self, app: IntercomApp) -> str:
        return format_html(
            "<code>{}</code><div class='help'>List it among the app's redirect URLs "
            "(Developer Hub &rarr; your app &rarr; Authentication, Use OAuth).</div>",
            getattr(app, "redirect_url_absolute", ""),
        )


# --- who operates: Django's users and groups, in the console's theme ---------------------------

admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(DjangoUserAdmin, ModelAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin, ModelAdmin):
    pass
