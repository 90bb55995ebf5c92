"""Control-plane writes: write keys, secret rotation, configuration as code, first-run setup.

Keyword-only functions named ``<entity>_<action>`` (STYLE.md). The admin, the ``switchboard``
management command and the ingest API call these; none of them holds business logic of its own.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import yaml
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models, transaction
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_duration
from django.utils.duration import duration_string

from integrations.encryption import EncryptedTextField, secret_reencrypt
from integrations.models import (
    Destination,
    EventFilter,
    PropertyMapping,
    Source,
    Sync,
    WriteKey,
    write_key_cache_name,
    write_key_hash,
)

# ---------------------------------------------------------------------------------------------
# Write keys

WRITE_KEY_CACHE_SECONDS = 300  # entries are also dropped on every save of the key or its source
WRITE_KEY_TOUCH_SECONDS = 60  # last_used_at is written at most this often per key


def write_key_issue(*, source: Source, label: str = "") -> tuple[WriteKey, str]:
    """Create a key for an HTTP source; the plaintext is returned once and never stored."""
    if source.kind != Source.Kind.HTTP:
        raise ValidationError("Only HTTP sources have write keys.")
    return WriteKey.objects.issue(source=source, label=label)


def write_key_revoke(*, write_key: WriteKey) -> None:
    write_key.revoke()


def write_key_authenticate(*, key: str) -> WriteKey | None:
    """The active write key of an enabled HTTP source matching ``key``, or None.

    Called on every ingest request, so it is cached (by the key's SHA-256, never the plaintext)
    and invalidated by any save of the key or its source. The lookup is by hash: an attacker
    learns nothing from timing, and the final comparison is constant-time anyway.
    """
    if not key or len(key) > 200:
        return None
    key_hash = write_key_hash(key)
    cache_name = write_key_cache_name(key_hash=key_hash)
    used_name = f"switchboard:write-key-used:{key_hash}"
    # One cache round trip for the key and its last-used mark: on this hot path each round trip
    # costs more than the work around it (profiled in bench/b1_ingest_single.py).
    cached = cache.get_many([cache_name, used_name])
    write_key = cached.get(cache_name)
    if write_key is None:
        write_key = (
            WriteKey.objects.select_related("source")
            .filter(key_hash=key_hash, revoked_at__isnull=True)
            .first()
        )
        if write_key is None:
            return None
        cache.set(cache_name, write_key, WRITE_KEY_CACHE_SECONDS)
    if not hmac.compare_digest(write_key.key_hash, key_hash):
        return None
    if (
        write_key.revoked_at is not None
        or not write_key.source.enabled
        or write_key.source.kind != Source.Kind.HTTP
    ):
        return None
    if used_name not in cached:
        _write_key_touch(write_key=write_key, used_name=used_name)
    return write_key


def _write_key_touch(*, write_key: WriteKey, used_name: str) -> None:
    # cache.add is atomic across processes (Redis SET NX): one UPDATE per key per minute, not one
    # per request, so hot keys do not serialise ingest on a row lock.
    if cache.add(used_name, 1, WRITE_KEY_TOUCH_SECONDS):
        now = timezone.now()
        WriteKey.objects.filter(pk=write_key.pk).update(last_used_at=now)
        write_key.last_used_at = now


# ---------------------------------------------------------------------------------------------
# Encryption key rotation


def secrets_rotate() -> int:
    """Re-encrypt every stored secret with the first key of SWITCHBOARD_ENCRYPTION_KEYS.

    Works on the ciphertext (Fernet ``rotate``), so no plaintext is materialised. Returns the
    number of values re-encrypted.
    """
    count = 0
    with transaction.atomic():
        for model in apps.get_models():
            for model_field in model._meta.concrete_fields:
                if not isinstance(model_field, EncryptedTextField):
                    continue
                # Cast to a plain TextField: the raw column, without from_db_value's decryption.
                rows = (
                    model._default_manager.exclude(**{model_field.attname: ""})
                    .annotate(ciphertext=Cast(model_field.attname, models.TextField()))
                    .values_list("pk", "ciphertext")
                )
                for pk, ciphertext in rows.iterator():
                    rotated = secret_reencrypt(ciphertext)
                    model._default_manager.filter(pk=pk).update(
                        **{model_field.attname: models.Value(rotated, models.TextField())}
                    )
                    count += 1
    return count


# ---------------------------------------------------------------------------------------------
# Configuration as code

SOURCE_FIELDS = ("kind", "enabled")
SOURCE_SECRETS = ("webhook_secret",)
DESTINATION_FIELDS = ("region", "base_url", "api_version")
DESTINATION_SECRETS = ("access_token", "identity_verification_secret")
SYNC_FIELDS = (
    "status",
    "send_users",
    "send_events",
    "send_companies",
    "match_by",
    "external_id_path",
    "contact_role",
    "missing_contact",
    "anonymous",
    "page_handling",
    "update_last_seen",
    "unknown_attributes",
    "send_all_properties",
    "retry_window",
)
FILTER_FIELDS = ("action", "event_name", "field", "operator", "value")
MAPPING_FIELDS = ("target", "source_path", "intercom_name")
BOOLEAN_FIELDS = {
    "enabled",
    "send_users",
    "send_events",
    "send_companies",
    "update_last_seen",
    "send_all_properties",
}
ENV_REFERENCE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def config_export() -> str:
    """The YAML of every source, destination and sync, without any secret or write key."""
    document: dict[str, Any] = {"version": 1, "sources": [], "destinations": [], "syncs": []}
    for source in Source.objects.order_by("name"):
        document["sources"].append(
            {"name": source.name, "kind": source.kind, "enabled": source.enabled}
        )
    for destination in Destination.objects.order_by("name"):
        item = {"name": destination.name, "region": destination.region}
        if destination.base_url:
            item["base_url"] = destination.base_url
        item["api_version"] = destination.api_version
        document["destinations"].append(item)
    syncs = Sync.objects.order_by("name").select_related("destination")
    for sync in syncs.prefetch_related("sources", "filters", "mappings"):
        item = {
            "name": sync.name,
            "sources": sorted(source.name for source in sync.sources.all()),
            "destination": sync.destination.name,
        }
        for name in SYNC_FIELDS:
            value = getattr(sync, name)
            item[name] = duration_string(value) if isinstance(value, timedelta) else value
        item["filters"] = [
            {name: getattr(f, name) for name in FILTER_FIELDS if getattr(f, name) != ""}
            for f in sync.filters.all()
        ]
        item["mappings"] = [
            {name: getattr(m, name) for name in MAPPING_FIELDS} for m in sync.mappings.all()
        ]
        document["syncs"].append(item)
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


class ConfigError(Exception):
    """An invalid configuration file; ``problems`` are '<path> (line N): reason' strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class ConfigReport:
    """What an apply changed (or, with dry_run, would change)."""

    changes: list[str] = field(default_factory=list)
    dry_run: bool = False

    def __str__(self) -> str:
        if not self.changes:
            return "no changes"
        prefix = "would " if self.dry_run else ""
        return "\n".join(prefix + change for change in self.changes)


Place = tuple[str | int, ...]


def _path_text(path: Place) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(file)"


class _Document:
    """A YAML document as plain data, remembering the line of every key and item."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Place, int] = {}
        try:
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
            finally:
                loader.dispose()
            self.data = self._convert(loader, node, ()) if node is not None else {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark else "somewhere"
            reason = getattr(error, "problem", None) or str(error)
            raise ConfigError([f"(file) ({where}): not valid YAML: {reason}"]) from None

    def _convert(self, loader: yaml.SafeLoader, node: yaml.Node, path: Place) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise ConfigError(
                        [f"{_path_text(path)} (line {key_node.start_mark.line + 1}): keys are text"]
                    )
                if key in result:
                    raise ConfigError(
                        [
                            f"{_path_text((*path, key))} (line {key_node.start_mark.line + 1}): "
                            "given twice"
                        ]
                    )
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                result[key] = self._convert(loader, value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(loader, item, (*path, i)) for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    def line(self, path: Place) -> int:
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)


class _Problems:
    def __init__(self, document: _Document) -> None:
        self.document = document
        self.items: list[str] = []
        self.places: set[Place] = set()
        self.failed: set[tuple[str, str]] = set()  # (kind, name) given in the file but invalid

    def add(self, path: Place, reason: str) -> None:
        # One reason per place: the first is the cause ("environment variable X is not set"),
        # later ones for the same place are its consequences ("This field cannot be blank.").
        if path in self.places:
            return
        self.places.add(path)
        self.items.append(f"{_path_text(path)} (line {self.document.line(path)}): {reason}")

    def add_validation(self, path: Place, error: ValidationError) -> None:
        if hasattr(error, "error_dict"):
            for name, errors in error.message_dict.items():
                where = path if name == NON_FIELD_ERRORS else (*path, name)
                for message in errors:
                    self.add(where, message)
        else:
            for message in error.messages:
                self.add(path, message)


def _check_list(
    data: Mapping[str, Any], name: str, problems: _Problems, path: Place = ()
) -> list[Any]:
    value = data.get(name, [])
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add((*path, name), "expected a list")
        return []
    return value


def _check_item(
    item: Any,
    path: Place,
    allowed: tuple[str, ...],
    problems: _Problems,
    required: tuple[str, ...] = ("name",),
    seen: dict[str, Place] | None = None,
) -> bool:
    if not isinstance(item, dict):
        problems.add(path, "expected a mapping (key: value lines)")
        return False
    ok = True
    if seen is not None and isinstance(item.get("name"), str):
        if item["name"] in seen:
            problems.add((*path, "name"), f"also given at {_path_text(seen[item['name']])}")
            return False
        seen[item["name"]] = path
    for key in item:
        if key not in allowed:
            problems.add((*path, key), f"unknown key; expected one of: {', '.join(allowed)}")
            ok = False
    for key in required:
        if key not in item or item[key] in (None, ""):
            problems.add((*path, key), "required")
            ok = False
    for key, value in item.items():
        if key in BOOLEAN_FIELDS and not isinstance(value, bool):
            problems.add((*path, key), f"expected true or false, not {value!r}")
            ok = False
        elif key not in (*BOOLEAN_FIELDS, "sources", "filters", "mappings") and not isinstance(
            value, str | int | float
        ):
            problems.add((*path, key), f"expected a single value, not {value!r}")
            ok = False
    return ok


def _secret_value(value: Any, path: Place, environ: Mapping[str, str], problems: _Problems) -> str:
    text = str(value)
    reference = ENV_REFERENCE_RE.fullmatch(text)
    if reference:
        name = reference.group(1)
        if name not in environ:
            problems.add(path, f"environment variable {name} is not set")
            return ""
        return environ[name]
    return text


def _plain_value(name: str, value: Any) -> Any:
    if name == "retry_window":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return timedelta(seconds=value)
        # An unparseable window stays a string so full_clean names it.
        return parse_duration(str(value)) or str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # api_version: 2.16 written without quotes
    return value


def _assign(
    instance: models.Model, item: Mapping[str, Any], names: tuple[str, ...], changed: list[str]
) -> None:
    for name in names:
        if name in item:
            value = _plain_value(name, item[name])
            if getattr(instance, name) != value:
                setattr(instance, name, value)
                changed.append(name)


def _full_clean(instance: models.Model, path: Place, problems: _Problems) -> bool:
    try:
        instance.full_clean()
    except ValidationError as error:
        problems.add_validation(path, error)
        return False
    return True


class _Rollback(Exception):
    pass


def config_apply(
    *, text: str, dry_run: bool = False, environ: Mapping[str, str] | None = None
) -> ConfigReport:
    """Create or update sources, destinations and syncs by name, in one transaction.

    Nothing is deleted that the file does not mention; a sync's filters and mappings, when
    given, become exactly the listed ones. Secrets are given literally or as ``${ENV_VAR}``.
    Raises ``ConfigError`` (and changes nothing) when anything in the file is invalid.
    """
    environ = os.environ if environ is None else environ
    document = _Document(text)
    problems = _Problems(document)
    report = ConfigReport(dry_run=dry_run)
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError(["(file) (line 1): expected a mapping with sources, destinations, syncs"])
    for key in data:
        if key not in ("version", "sources", "destinations", "syncs"):
            problems.add((key,), "unknown key; expected version, sources, destinations, syncs")
    if data.get("version", 1) != 1:
        problems.add(("version",), "only version 1 is understood")
    if problems.items:
        raise ConfigError(problems.items)
    try:
        with transaction.atomic():
            _apply_sources(data, problems, report, environ)
            _apply_destinations(data, problems, report, environ)
            _apply_syncs(data, problems, report)
            if problems.items or dry_run:
                raise _Rollback
    except _Rollback:
        pass
    if problems.items:
        raise ConfigError(problems.items)
    return report


def _apply_sources(
    data: Mapping[str, Any], problems: _Problems, report: ConfigReport, environ: Mapping[str, str]
) -> None:
    allowed = ("name", *SOURCE_FIELDS, *SOURCE_SECRETS)
    seen: dict[str, Place] = {}
    for i, item in enumerate(_check_list(data, "sources", problems)):
        path: Place = ("sources", i)
        if not _check_item(item, path, allowed, problems, seen=seen):
            continue
        before = len(problems.items)
        source = Source.objects.filter(name=item["name"]).first()
        creating = source is None
        source = source or Source(name=item["name"])
        changed: list[str] = []
        _assign(source, item, SOURCE_FIELDS, changed)
        _assign_secrets(source, item, SOURCE_SECRETS, path, environ, problems, changed)
        _full_clean(source, path, problems)
        if len(problems.items) > before:
            problems.failed.add(("source", source.name))
        elif creating or changed:
            source.save()
            report.changes.append(_change_text("source", source.name, creating, changed))


def _apply_destinations(
    data: Mapping[str, Any], problems: _Problems, report: ConfigReport, environ: Mapping[str, str]
) -> None:
    allowed = ("name", *DESTINATION_FIELDS, *DESTINATION_SECRETS)
    seen: dict[str, Place] = {}
    for i, item in enumerate(_check_list(data, "destinations", problems)):
        path: Place = ("destinations", i)
        if not _check_item(item, path, allowed, problems, seen=seen):
            continue
        before = len(problems.items)
        destination = Destination.objects.filter(name=item["name"]).first()
        creating = destination is None
        destination = destination or Destination(name=item["name"])
        changed: list[str] = []
        if "region" in item and "base_url" not in item and item["region"] != "custom":
            # Moving off the custom region: the stored base URL no longer applies.
            item = {**item, "base_url": ""}
        _assign(destination, item, DESTINATION_FIELDS, changed)
        _assign_secrets(destination, item, DESTINATION_SECRETS, path, environ, problems, changed)
        if "access_token" in changed:
            destination.auth_failed_at = None  # a new token releases the held deliveries
        _full_clean(destination, path, problems)
        if len(problems.items) > before:
            problems.failed.add(("destination", destination.name))
        elif creating or changed:
            destination.save()
            report.changes.append(_change_text("destination", destination.name, creating, changed))


def _assign_secrets(
    instance: models.Model,
    item: Mapping[str, Any],
    names: tuple[str, ...],
    path: Place,
    environ: Mapping[str, str],
    problems: _Problems,
    changed: list[str],
) -> None:
    for name in names:
        if name in item:
            value = _secret_value(item[name], (*path, name), environ, problems)
            if getattr(instance, name) != value:
                setattr(instance, name, value)
                changed.append(name)  # the name only: the report never shows a secret


def _apply_syncs(data: Mapping[str, Any], problems: _Problems, report: ConfigReport) -> None:
    allowed = ("name", "sources", "destination", *SYNC_FIELDS, "filters", "mappings")
    seen: dict[str, Place] = {}
    for i, item in enumerate(_check_list(data, "syncs", problems)):
        path: Place = ("syncs", i)
        required = ("name", "destination")
        if not _check_item(item, path, allowed, problems, required=required, seen=seen):
            continue
        sync = Sync.objects.filter(name=item["name"]).first()
        creating = sync is None
        sync = sync or Sync(name=item["name"])
        changed: list[str] = []

        destination = Destination.objects.filter(name=item["destination"]).first()
        if destination is None:
            if ("destination", item["destination"]) not in problems.failed:
                problems.add(
                    (*path, "destination"), f"no destination named {item['destination']!r}"
                )
            continue
        if creating or sync.destination_id != destination.pk:
            sync.destination = destination
            if not creating:
                changed.append("destination")

        sources = _sync_sources(item, path, problems, required=creating)
        if sources is None:
            continue
        _assign(sync, item, SYNC_FIELDS, changed)
        if not _full_clean(sync, path, problems):
            continue
        if creating or changed:
            sync.save()
        if sources and {s.pk for s in sources} != set(sync.sources.values_list("pk", flat=True)):
            sync.sources.set(sources)
            if not creating:
                changed.append("sources")
        if "filters" in item and _sync_rows(
            sync, item, path, "filters", EventFilter, FILTER_FIELDS, problems
        ):
            changed.append("filters")
        if "mappings" in item and _sync_rows(
            sync, item, path, "mappings", PropertyMapping, MAPPING_FIELDS, problems
        ):
            changed.append("mappings")
        if creating or changed:
            report.changes.append(_change_text("sync", sync.name, creating, changed))


def _sync_sources(
    item: Mapping[str, Any], path: Place, problems: _Problems, *, required: bool
) -> list[Source] | None:
    names = item.get("sources")
    if names is None:
        if required:
            problems.add((*path, "sources"), "a sync needs at least one source")
            return None
        return []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        problems.add((*path, "sources"), "expected a non-empty list of source names")
        return None
    sources = []
    for j, name in enumerate(names):
        source = Source.objects.filter(name=str(name)).first()
        if source is None:
            if ("source", str(name)) not in problems.failed:
                problems.add((*path, "sources", j), f"no source named {name!r}")
            return None
        sources.append(source)
    return sources


def _sync_rows(
    sync: Sync,
    item: Mapping[str, Any],
    path: Place,
    key: str,
    model: type[EventFilter] | type[PropertyMapping],
    names: tuple[str, ...],
    problems: _Problems,
) -> bool:
    """Make the sync's filters (or mappings) exactly the listed ones; True when they changed."""
    rows = _check_list(item, key, problems, path)
    wanted = []
    for j, row in enumerate(rows):
        row_path = (*path, key, j)
        required = ("target", "source_path", "intercom_name") if key == "mappings" else ()
        if not _check_item(row, row_path, names, problems, required=required):
            return False
        # Unset keys take the model's defaults, so an omitted `action` compares as "include".
        given = {n: _row_value(row[n]) for n in names if n in row}
        wanted.append(tuple(getattr(model(**given), n) for n in names))
    manager = getattr(sync, key)
    current = [tuple(getattr(r, n) for n in names) for r in manager.order_by("id")]
    # Filters and mappings have no order that matters: compare as sets, so an export (ordered by
    # target) applied over a file (ordered by hand) is still "no changes".
    if sorted(current) == sorted(wanted):
        return False
    manager.all().delete()
    for j, values in enumerate(wanted):
        instance = model(sync=sync, **dict(zip(names, values, strict=True)))
        if _full_clean(instance, (*path, key, j), problems):
            instance.save()
    return True


def _row_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # `value: true` in a filter means the text
    return str(value)


def _change_text(kind: str, name: str, creating: bool, changed: list[str]) -> str:
    if creating:
        return f"create {kind} {name!r}"
    return f"update {kind} {name!r}: {', '.join(changed)}"


# ---------------------------------------------------------------------------------------------
# First run (bin/run)

DEMO_SOURCE = "demo-http"
DEMO_DESTINATION = "demo-sandbox"
DEMO_SYNC = "demo-sync"
DEMO_TOKEN = "demo-token"


def superuser_ensure(*, username: str, password: str) -> bool:
    """Create the superuser unless it exists (an existing password is left alone); True if made."""
    user_model = get_user_model()
    if user_model._default_manager.filter(username=username).exists():
        return False
    user_model._default_manager.create_superuser(username=username, email="", password=password)
    return True


def demo_ensure(*, sandbox_url: str, write_key: str | None) -> str | None:
    """Create once the demo source, destination (the sandbox) and sync.

    ``write_key`` is the plaintext kept from an earlier run; when it no longer authenticates a
    new key is issued and returned (the caller keeps it), otherwise None is returned.
    """
    with transaction.atomic():
        source, _ = Source.objects.get_or_create(
            name=DEMO_SOURCE, defaults={"kind": Source.Kind.HTTP}
        )
        destination = Destination.objects.filter(name=DEMO_DESTINATION).first()
        if destination is None:
            destination = Destination(
                name=DEMO_DESTINATION,
                region=Destination.Region.CUSTOM,
                base_url=sandbox_url,
                access_token=DEMO_TOKEN,
            )
            destination.full_clean()
            destination.save()
        if not Sync.objects.filter(name=DEMO_SYNC).exists():
            sync = Sync(name=DEMO_SYNC, destination=destination)
            sync.full_clean()
            sync.save()
            sync.sources.set([source])
        known = WriteKey.objects.filter(
            source=source, key_hash=write_key_hash(write_key or ""), revoked_at__isnull=True
        )
        if write_key and known.exists():
            return None
        _, plaintext = write_key_issue(source=source, label="demo (bin/run)")
        return plaintext
