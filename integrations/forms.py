"""Admin forms: write-only secrets, write-key revocation and the per-sync metadata limit.

Secrets (access tokens, webhook and identity-verification secrets) are write-only: the widget
never renders a stored value, a blank field keeps it, and optional ones have an explicit "clear"
box. Because the form's initial value is blank, the admin's change message names the field only
when a new value was typed, and never carries the value itself.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone
from unfold.widgets import (
    UnfoldAdminPasswordWidget,
    UnfoldAdminTextInputWidget,
    UnfoldBooleanSwitchWidget,
    UnfoldBooleanWidget,
)

from integrations.models import (
    METADATA_KEYS_MAX,
    Destination,
    IntercomApp,
    PropertyMapping,
    Source,
    Sync,
    WebhookMatchBy,
    WriteKey,
)


def _secret_widget() -> forms.PasswordInput:
    # render_value=False: not even a re-displayed form after a validation error shows the value.
    # Unfold's widget: the admin's theme only styles the widgets it knows.
    return UnfoldAdminPasswordWidget(render_value=False, attrs={"autocomplete": "new-password"})


class SecretFieldsForm(forms.ModelForm):
    """A ModelForm whose ``secret_fields`` are write-only.

    An optional secret gets a declared ``clear_<name>`` box; the admin shows it only when a value
    is stored (the admin builds its form class from declared fields, not from ``__init__``).
    """

    secret_fields: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in self.secret_fields:
            stored = bool(self.instance.pk and getattr(self.instance, name))
            model_field = self.instance._meta.get_field(name)
            self.fields[name] = forms.CharField(
                label=model_field.verbose_name.capitalize(),
                required=False,
                strip=True,
                widget=_secret_widget(),
                help_text=(
                    "A value is stored (hidden). Leave blank to keep it; type a new one to replace it."
                    if stored
                    else model_field.help_text
                ),
            )
            self.initial[name] = ""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for name in self.secret_fields:
            if cleaned.get(f"clear_{name}"):
                if cleaned.get(name):
                    self.add_error(name, "Type a new value or tick 'clear', not both.")
                cleaned[name] = ""
            elif not cleaned.get(name) and self.instance.pk:
                # construct_instance() has not run yet: the instance still holds the stored value.
                cleaned[name] = getattr(self.instance, name)
        return cleaned


def _clear_box(what: str) -> forms.BooleanField:
    return forms.BooleanField(
        label=f"Clear the stored {what}", required=False, widget=UnfoldBooleanSwitchWidget
    )


class SourceForm(SecretFieldsForm):
    secret_fields = ("webhook_secret",)
    clear_webhook_secret = _clear_box("webhook secret")

    class Meta:
        model = Source
        fields = ["name", "kind", "enabled", "webhook_secret", "webhook_match_by"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Only for webhook sources: a form posted without it keeps what is stored (or the default).
        if "webhook_match_by" in self.fields:  # the admin leaves it out for HTTP sources
            self.fields["webhook_match_by"].required = False

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "webhook_match_by" in self.fields and not cleaned.get("webhook_match_by"):
            cleaned["webhook_match_by"] = self.instance.webhook_match_by or (
                WebhookMatchBy.USER_ID_OR_CONTACT
            )
        return cleaned


# The model's own words (Destination.clean), for a URL the form cannot even parse.
BASE_URL_INVALID = "Enter an http:// or https:// URL, e.g. http://127.0.0.1:8765."


class DestinationForm(SecretFieldsForm):
    secret_fields = ("access_token", "identity_verification_secret")
    clear_identity_verification_secret = _clear_box("identity verification secret")
    # The sandbox and local proxies are plain http: say so rather than let Django guess https.
    base_url = forms.URLField(
        label="Base URL",
        assume_scheme="http",
        required=False,
        max_length=200,
        widget=UnfoldAdminTextInputWidget(attrs={"placeholder": "http://127.0.0.1:8765"}),
        help_text=Destination._meta.get_field("base_url").help_text,
        error_messages={"invalid": BASE_URL_INVALID},
    )

    class Meta:
        model = Destination
        fields = [
            "name",
            "region",
            "base_url",
            "api_version",
            "access_token",
            "identity_verification_secret",
            "messenger_security",
        ]
        labels = {"api_version": "Intercom API version"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Only for the Messenger: a form posted without it keeps the default (user_hash).
        self.fields["messenger_security"].required = False

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not cleaned.get("messenger_security"):
            cleaned["messenger_security"] = (
                self.instance.messenger_security or Destination.MessengerSecurity.USER_HASH
            )
        if cleaned.get("region") != Destination.Region.CUSTOM:
            # The field is only shown for the custom region: what it held is not kept.
            cleaned["base_url"] = ""
            self.errors.pop("base_url", None)
        return cleaned

    def _post_clean(self) -> None:
        typed_url_refused = self.has_error("base_url")
        super()._post_clean()
        if typed_url_refused:
            # The model then saw no URL and asks for one ("needs a base URL"): the refusal of
            # the URL the operator typed is the one message that applies.
            del self.errors["base_url"][1:]

    def save(self, commit: bool = True) -> Destination:
        if "access_token" in self.changed_data:
            # Deliveries held after a 401 wait for a new token: this is it.
            self.instance.auth_failed_at = None
        return super().save(commit=commit)


class IntercomAppForm(SecretFieldsForm):
    secret_fields = ("client_secret",)

    class Meta:
        model = IntercomApp
        fields = ["client_id", "client_secret"]


class SyncForm(forms.ModelForm):
    class Meta:
        model = Sync
        fields = [
            "name",
            "status",
            "sources",
            "destination",
            "send_users",
            "send_events",
            "send_companies",
            "match_by",
            "external_id_path",
            "contact_role",
            "anonymous",
            "missing_contact",
            "page_handling",
            "update_last_seen",
            "unknown_attributes",
            "send_all_properties",
            "unarchive_contacts",
            "retry_window",
            "timeline_link_attribute",
        ]
        help_texts = {"retry_window": "How long to keep retrying, e.g. 04:00:00 (1 min to 7 days)."}


class WriteKeyInlineForm(forms.ModelForm):
    """Label and a "revoke" box; the key itself is never shown after it was issued."""

    revoke = forms.BooleanField(
        required=False, widget=UnfoldBooleanWidget, help_text="Stops this key at once."
    )

    class Meta:
        model = WriteKey
        fields = ["label"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.instance.is_active:
            self.fields["revoke"].disabled = True
            self.fields["revoke"].initial = True

    def save(self, commit: bool = True) -> WriteKey:
        if self.cleaned_data.get("revoke") and self.instance.revoked_at is None:
            self.instance.revoked_at = timezone.now()
        return super().save(commit=commit)


class WriteKeyIssueForm(forms.Form):
    label = forms.CharField(
        max_length=100,
        required=False,
        widget=UnfoldAdminTextInputWidget,
        help_text="Who uses it, e.g. 'web app (production)'.",
    )


class PropertyMappingInlineForm(forms.ModelForm):
    class Meta:
        model = PropertyMapping
        fields = ["target", "source_path", "intercom_name"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The formset counts this sync's metadata mappings as they are about to be saved; the
        # model's own check would count the rows already in the database instead.
        self.instance.siblings_checked = True


class PropertyMappingInlineFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        metadata = [
            form
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and form.cleaned_data.get("target") == PropertyMapping.Target.EVENT_METADATA
        ]
        if len(metadata) > METADATA_KEYS_MAX:
            raise ValidationError(
                f"This sync would map {len(metadata)} properties to event metadata; Intercom keeps "
                f"at most {METADATA_KEYS_MAX} metadata keys per event. Remove "
                f"{len(metadata) - METADATA_KEYS_MAX} of them."
            )
