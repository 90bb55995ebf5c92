"""Where Django's admin discovery looks: the trail's admin lives in the audit room."""

from streaming.audit import admin, alerts_admin, deletion_admin  # noqa: F401
