"""B1's reference server: Switchboard's own settings with a URLconf that adds the reference view.

B1 starts one gunicorn with ``DJANGO_SETTINGS_MODULE=bench.b1_reference_settings``, so that the
ingest API and the minimal INSERT view it is compared with run in the same processes, under the
same middleware, database connection settings and gunicorn flags. The product's own URLs never
serve the reference view.
"""

from config.settings import *  # noqa: F403 - the product's settings, unchanged but one

ROOT_URLCONF = "bench.b1_reference_urls"
