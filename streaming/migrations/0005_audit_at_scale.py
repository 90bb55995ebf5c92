"""The audit at production size (issue 11, bench/b9_audit_scale.py).

- Indexes that match the audit's queries: the events' emails (``traits.email``,
  ``context.traits.email``; partial: only calls that carry one), deliveries by status first.
- No LIKE twin for the user columns (``db_index`` made two indexes each; only exact matches are
  ever asked) and no index on the events' source (the unique (source, message_id) leads with
  it): four fewer index writes per call ingested. The plain indexes are renamed, not rebuilt.
- ``DeliveryHour``, the health page's summary rows, and the triggers that remove a row whenever
  a delivery of its hour changes what it counts (see the model).

On PostgreSQL indexes are built and dropped CONCURRENTLY, so a large trail keeps taking calls
while this runs (hence ``atomic = False``); elsewhere (SQLite, the embedded mode) plainly.
"""

import django.db.models.deletion
import django.db.models.fields.json
import django.db.models.lookups
from django.db import migrations, models

# (old name, new name, table, column) of the user columns' indexes; Django named the old ones.
USER_INDEXES = [
    ("streaming_event_user_id_384df5bc", "event_user_id", "streaming_event", "user_id"),
    ("streaming_delivery_user_key_34fccffa", "delivery_user_key", "streaming_delivery", "user_key"),
    (
        "streaming_deliveryattempt_user_key_8d8576d8",
        "attempt_user_key",
        "streaming_deliveryattempt",
        "user_key",
    ),
]
EVENT_SOURCE_INDEX = ("streaming_event_source_id_a22616aa", "streaming_event", "source_id")


def user_indexes_rename(apps, schema_editor):
    run = schema_editor.execute
    postgresql = schema_editor.connection.vendor == "postgresql"
    for old, new, table, column in USER_INDEXES:
        if postgresql:
            run(f'DROP INDEX CONCURRENTLY IF EXISTS "{old}_like"')
            run(f'ALTER INDEX IF EXISTS "{old}" RENAME TO "{new}"')
            run(f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{new}" ON "{table}" ("{column}")')
        else:
            run(f'DROP INDEX IF EXISTS "{old}"')
            run(f'CREATE INDEX "{new}" ON "{table}" ("{column}")')
    name, table, column = EVENT_SOURCE_INDEX
    run(f'DROP INDEX {"CONCURRENTLY " if postgresql else ""}IF EXISTS "{name}"')


def user_indexes_rename_back(apps, schema_editor):
    run = schema_editor.execute
    postgresql = schema_editor.connection.vendor == "postgresql"
    for old, new, table, column in USER_INDEXES:
        if postgresql:
            run(f'ALTER INDEX IF EXISTS "{new}" RENAME TO "{old}"')
            run(
                f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{old}_like" ON "{table}" '
                f'("{column}" varchar_pattern_ops)'
            )
        else:
            run(f'DROP INDEX IF EXISTS "{new}"')
            run(f'CREATE INDEX "{old}" ON "{table}" ("{column}")')
    name, table, column = EVENT_SOURCE_INDEX
    run(
        f'CREATE INDEX {"CONCURRENTLY " if postgresql else ""}IF NOT EXISTS "{name}" '
        f'ON "{table}" ("{column}")'
    )


class AddIndexOnline(migrations.AddIndex):
    """``AddIndex``, CONCURRENTLY on PostgreSQL (the table stays writable while it builds)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.add_index(model, self.index, concurrently=True)
        else:
            schema_editor.add_index(model, self.index)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.remove_index(model, self.index, concurrently=True)
        else:
            schema_editor.remove_index(model, self.index)


class RemoveIndexOnline(migrations.RemoveIndex):
    """``RemoveIndex``, CONCURRENTLY on PostgreSQL."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        index = from_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.remove_index(model, index, concurrently=True)
        else:
            schema_editor.remove_index(model, index)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        index = to_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.add_index(model, index, concurrently=True)
        else:
            schema_editor.add_index(model, index)


# The summary rows' guards. 7305 is DeliveryHour.LOCK_CLASS: the health page holds the
# exclusive form of the same advisory lock (per sync) while it writes and reads summaries, so a
# change committed meanwhile is either seen by it or removes what it wrote. The 1 hour is
# DeliveryHour.REOPENED_AFTER: the page only writes hours that ended longer ago than that.
TRIGGERS = """
CREATE FUNCTION streaming_delivery_hour_reopen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        PERFORM pg_advisory_xact_lock_shared(7305, OLD.sync_id::integer);
        DELETE FROM streaming_deliveryhour
        WHERE sync_id = OLD.sync_id AND hour = date_trunc('hour', OLD.created_at, 'UTC');
    END IF;
    PERFORM pg_advisory_xact_lock_shared(7305, NEW.sync_id::integer);
    DELETE FROM streaming_deliveryhour
    WHERE sync_id = NEW.sync_id AND hour = date_trunc('hour', NEW.created_at, 'UTC');
    RETURN NULL;
END $$;

CREATE FUNCTION streaming_delivery_hours_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7305, s.sync_id::integer)
    FROM (SELECT DISTINCT sync_id FROM gone WHERE status <> 'pending' ORDER BY 1) s;
    DELETE FROM streaming_deliveryhour h
    USING (SELECT DISTINCT sync_id, date_trunc('hour', created_at, 'UTC') AS hour
           FROM gone WHERE status <> 'pending') g
    WHERE h.sync_id = g.sync_id AND h.hour = g.hour;
    RETURN NULL;
END $$;

-- Ingest inserts pending deliveries: this never runs for them.
CREATE TRIGGER delivery_hour_inserted AFTER INSERT ON streaming_delivery
FOR EACH ROW WHEN (NEW.status <> 'pending')
EXECUTE FUNCTION streaming_delivery_hour_reopen();

-- A worker completing a delivery within the hour does not run it either.
CREATE TRIGGER delivery_hour_updated
AFTER UPDATE OF status, attempts, created_at, sync_id ON streaming_delivery
FOR EACH ROW WHEN (
    OLD.created_at IS DISTINCT FROM NEW.created_at
    OR OLD.sync_id IS DISTINCT FROM NEW.sync_id
    OR (OLD.status <> 'pending'
        AND (OLD.status IS DISTINCT FROM NEW.status OR OLD.attempts IS DISTINCT FROM NEW.attempts))
    OR (OLD.status = 'pending' AND NEW.status <> 'pending'
        AND NEW.created_at < clock_timestamp() - interval '1 hour')
)
EXECUTE FUNCTION streaming_delivery_hour_reopen();

CREATE TRIGGER delivery_hours_deleted AFTER DELETE ON streaming_delivery
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
EXECUTE FUNCTION streaming_delivery_hours_forget();
"""

TRIGGERS_DROP = """
DROP TRIGGER IF EXISTS delivery_hours_deleted ON streaming_delivery;
DROP TRIGGER IF EXISTS delivery_hour_updated ON streaming_delivery;
DROP TRIGGER IF EXISTS delivery_hour_inserted ON streaming_delivery;
DROP FUNCTION IF EXISTS streaming_delivery_hours_forget();
DROP FUNCTION IF EXISTS streaming_delivery_hour_reopen();
"""


def triggers_create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRIGGERS)


def triggers_drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRIGGERS_DROP)


TRAITS_EMAIL = models.ExpressionWrapper(
    django.db.models.fields.json.KeyTextTransform(
        "email", django.db.models.fields.json.KeyTransform("traits", "payload")
    ),
    output_field=models.TextField(),
)
CONTEXT_TRAITS_EMAIL = models.ExpressionWrapper(
    django.db.models.fields.json.KeyTextTransform(
        "email",
        django.db.models.fields.json.KeyTransform(
            "traits", django.db.models.fields.json.KeyTransform("context", "payload")
        ),
    ),
    output_field=models.TextField(),
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("integrations", "0004_sync_status_disabled"),
        ("streaming", "0004_deletion"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="event",
                    name="user_id",
                    field=models.CharField(blank=True, max_length=255),
                ),
                migrations.AlterField(
                    model_name="delivery",
                    name="user_key",
                    field=models.CharField(max_length=255),
                ),
                migrations.AlterField(
                    model_name="deliveryattempt",
                    name="user_key",
                    field=models.CharField(max_length=255),
                ),
                migrations.AlterField(
                    model_name="event",
                    name="source",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="events",
                        to="integrations.source",
                    ),
                ),
                migrations.AddIndex(
                    model_name="event",
                    index=models.Index(fields=["user_id"], name="event_user_id"),
                ),
                migrations.AddIndex(
                    model_name="delivery",
                    index=models.Index(fields=["user_key"], name="delivery_user_key"),
                ),
                migrations.AddIndex(
                    model_name="deliveryattempt",
                    index=models.Index(fields=["user_key"], name="attempt_user_key"),
                ),
            ],
            database_operations=[
                migrations.RunPython(user_indexes_rename, user_indexes_rename_back),
            ],
        ),
        AddIndexOnline(
            model_name="delivery",
            index=models.Index(
                fields=["status", "sync", "created_at"], name="delivery_status_sync"
            ),
        ),
        RemoveIndexOnline(model_name="delivery", name="streaming_d_sync_id_b4de79_idx"),
        AddIndexOnline(
            model_name="event",
            index=models.Index(
                TRAITS_EMAIL,
                condition=models.Q(django.db.models.lookups.IsNull(TRAITS_EMAIL, False)),
                name="event_traits_email",
            ),
        ),
        AddIndexOnline(
            model_name="event",
            index=models.Index(
                CONTEXT_TRAITS_EMAIL,
                condition=models.Q(django.db.models.lookups.IsNull(CONTEXT_TRAITS_EMAIL, False)),
                name="event_context_traits_email",
            ),
        ),
        migrations.CreateModel(
            name="DeliveryHour",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("hour", models.DateTimeField(help_text="The start of the hour, UTC.")),
                ("delivered_first_try", models.PositiveIntegerField(default=0)),
                ("delivered_after_retry", models.PositiveIntegerField(default=0)),
                ("failed", models.PositiveIntegerField(default=0)),
                ("expired", models.PositiveIntegerField(default=0)),
                ("skipped", models.PositiveIntegerField(default=0)),
                (
                    "sync",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="integrations.sync",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("sync", "hour"), name="delivery_hour_unique")
                ],
            },
        ),
        migrations.RunPython(triggers_create, triggers_drop),
    ]
