"""Configuration as code: sources, destinations and syncs as one YAML file, exported and applied.

Owns ``config_export`` (the file, never a secret or a write key), ``config_apply`` (create or
update by name, all or nothing, secrets given literally or as ``${ENV_VAR}``) and the reading of
the file: ``_Document`` keeps the line of every key so each problem says where it is.

Every kind of named object is a ``_Kind`` description (its model, plain fields, secrets, links to
other named objects and owned rows); one generic export and one generic apply work from it, so a
new kind is a description, not a copy.

It is longer than our usual ~400 lines on purpose: the YAML reader that remembers line numbers,
the problem list and the apply are one concern (every problem the apply finds is reported at its
line in the file); split up, a reader would chase one error message across three modules.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models, transaction
from django.utils.dateparse import parse_duration
from django.utils.duration import duration_string

from integrations.models import Destination, EventFilter, PropertyMapping, Source, Sync

ENV_REFERENCE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Place = tuple[str | int, ...]


@dataclass(frozen=True)
class _Rows:
    """A list of rows a named object owns (a sync's filters): applied as exactly the listed set."""

    key: str
    model: type[models.Model]
    fields: tuple[str, ...]
    required: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return self.fields

    @property
    def list_keys(self) -> tuple[str, ...]:
        return ()  # a row's values are all single values


@dataclass(frozen=True)
class _Kind:
    """How one kind of named object is exported and applied (the extension point for a new kind).

    ``key`` is its list in the file; objects are matched by their ``name``. ``fields`` are
    exported and applied; ``secrets`` are applied, never exported. ``links`` name other objects
    (a foreign key or a many-to-many; a new object needs at least one of each many-to-many).
    ``rows`` are lists it owns, replaced as a set. ``normalise`` completes an item with what its
    keys imply before anything is assigned; ``before_save`` adds the side effects of a change
    once the object is valid.
    """

    key: str
    model: type[models.Model]
    fields: tuple[str, ...]
    secrets: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    rows: tuple[_Rows, ...] = ()
    required: tuple[str, ...] = ("name",)
    omit_when_empty: tuple[str, ...] = ()  # fields left out of the export when blank
    normalise: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    before_save: Callable[[Any, list[str]], None] | None = None

    @property
    def label(self) -> str:
        """How reports and problems name one object of this kind: its model's name (sync)."""
        return str(self.model._meta.model_name)

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key an item of this kind may hold, in the order the export writes them."""
        return ("name", *self.links, *self.fields, *self.secrets, *(r.key for r in self.rows))

    @property
    def list_keys(self) -> tuple[str, ...]:
        return (*(link for link in self.links if self.is_many(link)), *(r.key for r in self.rows))

    def is_many(self, link: str) -> bool:
        return self.model._meta.get_field(link).many_to_many


def _destination_normalise(item: dict[str, Any]) -> dict[str, Any]:
    if "region" in item and "base_url" not in item and item["region"] != "custom":
        # Moving off the custom region: the stored base URL no longer applies.
        return {**item, "base_url": ""}
    return item


def _destination_before_save(destination: Destination, changed: list[str]) -> None:
    if "access_token" in changed:
        destination.auth_failed_at = None  # a new token releases the held deliveries


FILTERS = _Rows("filters", EventFilter, ("action", "event_name", "field", "operator", "value"))
MAPPINGS = _Rows(
    "mappings",
    PropertyMapping,
    ("target", "source_path", "intercom_name"),
    required=("target", "source_path", "intercom_name"),
)
SOURCES = _Kind(
    key="sources",
    model=Source,
    fields=("kind", "enabled", "webhook_match_by"),
    secrets=("webhook_secret",),
)
DESTINATIONS = _Kind(
    key="destinations",
    model=Destination,
    fields=("region", "base_url", "api_version", "messenger_security"),
    secrets=("access_token", "identity_verification_secret"),
    omit_when_empty=("base_url",),
    normalise=_destination_normalise,
    before_save=_destination_before_save,
)
SYNCS = _Kind(
    key="syncs",
    model=Sync,
    fields=(
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
        "unarchive_contacts",
        "retry_window",
        "timeline_link_attribute",
    ),
    links=("sources", "destination"),
    rows=(FILTERS, MAPPINGS),
    required=("name", "destination"),
)
KINDS = (SOURCES, DESTINATIONS, SYNCS)  # in apply order: a sync names sources and a destination


# ---------------------------------------------------------------------------------------------
# Export


def config_export() -> str:
    """The YAML of every source, destination and sync, without any secret or write key."""
    document: dict[str, Any] = {"version": 1}
    for kind in KINDS:
        objects = kind.model._default_manager.order_by("name")
        foreign_keys = [link for link in kind.links if not kind.is_many(link)]
        if foreign_keys:  # select_related() without names would follow every foreign key
            objects = objects.select_related(*foreign_keys)
        objects = objects.prefetch_related(*kind.list_keys)
        document[kind.key] = [_export_item(kind, instance) for instance in objects]
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _export_item(kind: _Kind, instance: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"name": instance.name}
    for link in kind.links:
        related = getattr(instance, link)
        item[link] = sorted(o.name for o in related.all()) if kind.is_many(link) else related.name
    for name in kind.fields:
        value = getattr(instance, name)
        if name in kind.omit_when_empty and not value:
            continue
        item[name] = duration_string(value) if isinstance(value, timedelta) else value
    for rows in kind.rows:
        item[rows.key] = [
            {name: getattr(row, name) for name in rows.fields if getattr(row, name) != ""}
            for row in getattr(instance, rows.key).all()
        ]
    return item


# ---------------------------------------------------------------------------------------------
# The file and its problems


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
        self.failed: set[tuple[str, str]] = set()  # (label, name) given in the file but invalid

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
    problems: _Problems,
    spec: _Kind | _Rows,
    seen: dict[str, Place] | None = None,
) -> bool:
    """Whether ``item`` has the shape ``spec`` describes; the model validates the values later."""
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
        if key not in spec.keys:
            problems.add((*path, key), f"unknown key; expected one of: {', '.join(spec.keys)}")
            ok = False
    for key in spec.required:
        if key not in item or item[key] in (None, ""):
            problems.add((*path, key), "required")
            ok = False
    meta = spec.model._meta
    booleans = {f.name for f in meta.concrete_fields if isinstance(f, models.BooleanField)}
    for key, value in item.items():
        if key in booleans:
            if not isinstance(value, bool):
                problems.add((*path, key), f"expected true or false, not {value!r}")
                ok = False
        elif key not in spec.list_keys and not isinstance(value, str | int | float):
            problems.add((*path, key), f"expected a single value, not {value!r}")
            ok = False
    return ok


# ---------------------------------------------------------------------------------------------
# Apply


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
    kind_keys = [kind.key for kind in KINDS]
    if not isinstance(data, dict):
        raise ConfigError([f"(file) (line 1): expected a mapping with {', '.join(kind_keys)}"])
    for key in data:
        if key not in ("version", *kind_keys):
            problems.add((key,), f"unknown key; expected version, {', '.join(kind_keys)}")
    if data.get("version", 1) != 1:
        problems.add(("version",), "only version 1 is understood")
    if problems.items:
        raise ConfigError(problems.items)
    try:
        with transaction.atomic():
            for kind in KINDS:
                _apply_kind(kind, data, problems, report, environ)
            if problems.items or dry_run:
                raise _Rollback
    except _Rollback:
        pass
    if problems.items:
        raise ConfigError(problems.items)
    return report


def _apply_kind(
    kind: _Kind,
    data: Mapping[str, Any],
    problems: _Problems,
    report: ConfigReport,
    environ: Mapping[str, str],
) -> None:
    seen: dict[str, Place] = {}
    for i, item in enumerate(_check_list(data, kind.key, problems)):
        path: Place = (kind.key, i)
        if _check_item(item, path, problems, kind, seen=seen):
            _apply_item(kind, item, path, problems, report, environ)


def _apply_item(
    kind: _Kind,
    item: dict[str, Any],
    path: Place,
    problems: _Problems,
    report: ConfigReport,
    environ: Mapping[str, str],
) -> None:
    """Create or update one named object: links, fields, secrets, validation, save, rows."""
    if kind.normalise:
        item = kind.normalise(item)
    before = len(problems.items)
    instance = kind.model._default_manager.filter(name=item["name"]).first()
    creating = instance is None
    instance = instance or kind.model(name=item["name"])
    changed: list[str] = []
    many = _links_resolve(kind, instance, item, path, problems, creating=creating, changed=changed)
    if many is None:
        return
    _assign(instance, item, kind.fields, changed)
    _assign_secrets(instance, item, kind.secrets, path, environ, problems, changed)
    if not _full_clean(instance, path, problems) or len(problems.items) > before:
        problems.failed.add((kind.label, item["name"]))
        return
    if kind.before_save:
        kind.before_save(instance, changed)
    if creating or changed:
        instance.save()
    for link, related in many.items():
        manager = getattr(instance, link)
        if related and {r.pk for r in related} != set(manager.values_list("pk", flat=True)):
            manager.set(related)
            if not creating:
                changed.append(link)
    for rows in kind.rows:
        if rows.key in item and _rows_apply(instance, item, path, rows, problems):
            changed.append(rows.key)
    if creating:
        report.changes.append(f"create {kind.label} {instance.name!r}")
    elif changed:
        report.changes.append(f"update {kind.label} {instance.name!r}: {', '.join(changed)}")


def _links_resolve(
    kind: _Kind,
    instance: Any,
    item: Mapping[str, Any],
    path: Place,
    problems: _Problems,
    *,
    creating: bool,
    changed: list[str],
) -> dict[str, list[models.Model]] | None:
    """Find the objects the item names; the many-to-many ones to set after the save, or None.

    Foreign keys are set now, before validation needs them; many-to-many rows wait for the save.
    """
    many: dict[str, list[models.Model]] = {}
    for link in sorted(kind.links, key=kind.is_many):  # foreign keys first
        model_field = kind.model._meta.get_field(link)
        if kind.is_many(link):
            related = _many_find(kind, model_field, item, path, problems, creating=creating)
            if related is None:
                return None
            many[link] = related
        elif link in item:
            target = _named_find(model_field.related_model, item[link], (*path, link), problems)
            if target is None:
                return None
            if creating or getattr(instance, model_field.attname) != target.pk:
                setattr(instance, link, target)
                if not creating:
                    changed.append(link)
    return many


def _many_find(
    kind: _Kind,
    model_field: Any,
    item: Mapping[str, Any],
    path: Place,
    problems: _Problems,
    *,
    creating: bool,
) -> list[models.Model] | None:
    """The objects a many-to-many key names ([] when an update leaves it out), or None."""
    link, label = model_field.name, model_field.related_model._meta.model_name
    names = item.get(link)
    if names is None:
        if creating:
            problems.add((*path, link), f"a {kind.label} needs at least one {label}")
            return None
        return []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        problems.add((*path, link), f"expected a non-empty list of {label} names")
        return None
    found = []
    for j, name in enumerate(names):
        target = _named_find(model_field.related_model, name, (*path, link, j), problems)
        if target is None:
            return None
        found.append(target)
    return found


def _named_find(
    model: type[models.Model], name: Any, path: Place, problems: _Problems
) -> models.Model | None:
    label = model._meta.model_name
    target = model._default_manager.filter(name=str(name)).first()
    # An object the file gives but could not apply is reported at its own place, not again here.
    if target is None and (label, str(name)) not in problems.failed:
        problems.add(path, f"no {label} named {name!r}")
    return target


def _plain_value(model_field: Any, value: Any) -> Any:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(model_field, models.DurationField):
        if is_number:
            return timedelta(seconds=value)
        # An unparseable duration stays a string so full_clean names it.
        return parse_duration(str(value)) or str(value)
    if is_number:
        return str(value)  # api_version: 2.16 written without quotes
    return value


def _assign(
    instance: models.Model, item: Mapping[str, Any], names: tuple[str, ...], changed: list[str]
) -> None:
    for name in names:
        if name in item:
            value = _plain_value(instance._meta.get_field(name), item[name])
            if getattr(instance, name) != value:
                setattr(instance, name, value)
                changed.append(name)


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


def _full_clean(instance: models.Model, path: Place, problems: _Problems) -> bool:
    try:
        instance.full_clean()
    except ValidationError as error:
        problems.add_validation(path, error)
        return False
    return True


def _rows_apply(
    owner: models.Model, item: Mapping[str, Any], path: Place, rows: _Rows, problems: _Problems
) -> bool:
    """Make the owner's rows (a sync's filters) exactly the listed ones; True when they changed."""
    wanted = []
    for j, row in enumerate(_check_list(item, rows.key, problems, path)):
        row_path = (*path, rows.key, j)
        if not _check_item(row, row_path, problems, rows):
            return False
        # Unset keys take the model's defaults, so an omitted `action` compares as "include".
        given = {n: _row_value(row[n]) for n in rows.fields if n in row}
        wanted.append(tuple(getattr(rows.model(**given), n) for n in rows.fields))
    manager = getattr(owner, rows.key)
    current = [tuple(getattr(r, n) for n in rows.fields) for r in manager.order_by("id")]
    # Rows have no order that matters: compare as sets, so an export (mappings ordered by target)
    # applied over a file (ordered by hand) is still "no changes".
    if sorted(current) == sorted(wanted):
        return False
    manager.all().delete()
    for j, values in enumerate(wanted):
        row = rows.model(**dict(zip(rows.fields, values, strict=True)))
        setattr(row, manager.field.name, owner)  # the row's foreign key to its owner
        if _full_clean(row, (*path, rows.key, j), problems):
            row.save()
    return True


def _row_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # `value: true` in a filter means the text
    return str(value)
