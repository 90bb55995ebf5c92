"""English formats: an audit trail is read to the second, and says which timezone it is in.

Every datetime of the admin (lists, readonly fields, inlines) goes through these, so
"2026-11-23 15:31:07 UTC" reads the same on every page and sorts as it reads.
"""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
