"""Date and time formats of the admin (``FORMAT_MODULE_PATH``), one module per language."""
