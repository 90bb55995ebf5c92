"""The hot paths' statements, compiled once per shape rather than once per call.

Django compiles a queryset to SQL every time it runs. For the statements each Intercom call
costs (the attempt's INSERT; the delivery's state change with the attempt's completion) that
compiling was about a third of a worker's CPU (B3 profile). They only ever match rows by
equality, so the SQL of a shape (table, columns set, columns matched) is built once and cached;
only the values change, adapted by each field exactly as the ORM adapts them.

On PostgreSQL they, and ingest's one statement, also run as prepared statements (``cursor``), so
the server parses and plans each shape once per connection instead of once per call: in B3
this took the delivery rate from about 350 to about 400 calls/s. Django leaves prepared
statements off because a pooler in transaction mode (PgBouncer before 1.21) does not keep them;
``SWITCHBOARD_DATABASE_PREPARE=false`` turns them off here too.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Model


def cursor() -> CursorWrapper:
    """A cursor of the default database; on PostgreSQL it binds values server-side.

    And, unless ``SWITCHBOARD_DATABASE_PREPARE`` is off, it prepares each statement it runs.
    Wrapped like Django's own cursors: error translation, query logging and execute wrappers
    (which tests and benches count queries with) see every statement.
    """
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return connection.cursor()
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns preparing off for the connection; with a threshold no statement reaches,
        # only what asks for it (``prepare=True``) is prepared.
        raw.prepare_threshold = sys.maxsize
    return connection._prepare_cursor(_preparing_cursor_class()(raw))


@functools.cache
def _preparing_cursor_class() -> type:
    # Imported here: the module needs psycopg, which an embedded (SQLite) setup never loads.
    from django.db.backends.postgresql.base import ServerBindingCursor

    class PreparingCursor(ServerBindingCursor):
        """Django's server-side binding cursor, preparing what it runs (if the setting says so)."""

        def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
            options.setdefault("prepare", settings.SWITCHBOARD_DATABASE_PREPARE)
            return super().execute(query, params, **options)

        def _send_query_prepared(self, name: bytes, pgq: Any, **options: Any) -> None:
            # psycopg records the query it sends unprepared only; Django reads it back for
            # its query log and capture (debug pages, tests, B6's query counts).
            self._query = pgq
            super()._send_query_prepared(name, pgq, **options)

    return PreparingCursor


def _field(model: type[Model], name: str) -> Field:
    return model._meta.pk if name == "pk" else model._meta.get_field(name)


@functools.cache
def _update_sql(model: type[Model], columns: tuple[str, ...], matched: tuple[str, ...]) -> str:
    quote = connections["default"].ops.quote_name
    assignments = ", ".join(f"{quote(_field(model, n).column)} = %s" for n in columns)
    conditions = " AND ".join(f"{quote(_field(model, n).column)} = %s" for n in matched)
    return f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {conditions}"


@functools.cache
def insert_fields(model: type[Model]) -> tuple[Field, ...]:
    """The columns an INSERT into ``model`` writes: every concrete one but the primary key."""
    return tuple(f for f in model._meta.concrete_fields if not f.primary_key)


@functools.cache
def _insert_sql(model: type[Model], returning: bool) -> str:
    quote = connections["default"].ops.quote_name
    fields = insert_fields(model)
    columns = ", ".join(quote(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders})"
    return f"{sql} RETURNING {quote(model._meta.pk.column)}" if returning else sql


@dataclass(frozen=True)
class RowsUpdate:
    """An UPDATE still to run: the rows of ``model`` whose fields equal ``where`` get ``values``.

    What ``model.objects.filter(**where).update(**values)`` does, for plain values.
    """

    model: type[Model]
    where: dict[str, Any]
    values: dict[str, Any]

    def as_sql(self) -> tuple[str, list[Any]]:
        connection = connections["default"]
        sql = _update_sql(self.model, tuple(self.values), tuple(self.where))
        params = [
            _field(self.model, name).get_db_prep_save(value, connection)
            for name, value in self.values.items()
        ]
        params += [
            _field(self.model, name).get_db_prep_value(value, connection)
            for name, value in self.where.items()
        ]
        return sql, params

    def run(self) -> int:
        sql, params = self.as_sql()
        with cursor() as rows:
            rows.execute(sql, params)
            return rows.rowcount


def rows_update_together(main: RowsUpdate, *others: RowsUpdate) -> int:
    """Run UPDATEs as one statement, hence one round trip; returns the rows ``main`` changed.

    On PostgreSQL the others ride along as data-modifying CTEs, which run exactly once whether
    or not the main statement reads them, all in the statement's one transaction. Elsewhere
    (SQLite, the embedded mode) they run one after the other in a transaction.
    """
    connection = connections["default"]
    if not others:
        return main.run()
    if connection.vendor != "postgresql":
        with transaction.atomic():
            for other in others:
                other.run()
            return main.run()
    parts, params = [], []
    for index, other in enumerate(others):
        statement, values = other.as_sql()
        parts.append(f"also_{index} AS ({statement})")
        params.extend(values)
    statement, values = main.as_sql()
    params.extend(values)
    with cursor() as rows:
        rows.execute(f"WITH {', '.join(parts)} {statement}", params)
        return rows.rowcount


def row_insert(model: type[Model], **values: Any) -> int:
    """Insert one row (fields not given take their defaults) and return its primary key.

    What ``model.objects.create(**values).pk`` does, without building a model instance or
    compiling the INSERT, and without the save signals.
    """
    connection = connections["default"]
    fields = insert_fields(model)
    unknown = values.keys() - {field.attname for field in fields}
    if unknown:
        raise TypeError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    params = []
    for field in fields:
        value = values[field.attname] if field.attname in values else field.get_default()
        params.append(field.get_db_prep_save(value, connection))
    returning = connection.features.can_return_columns_from_insert
    with cursor() as rows:
        rows.execute(_insert_sql(model, returning), params)
        return rows.fetchone()[0] if returning else rows.lastrowid
