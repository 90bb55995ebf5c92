"""Switchboard settings, read from the environment (django-environ).

With no environment at all Switchboard runs embedded: a SQLite file, a Celery broker on the
filesystem and a local-memory cache, so one command starts everything on a fresh machine.
``DATABASE_URL``, ``CELERY_BROKER_URL`` and ``REDIS_URL`` switch to PostgreSQL, Redis or RabbitMQ.
Every setting is listed in the settings table of docs/production.md.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ
from corsheaders.defaults import default_headers
from django.templatetags.static import static

from config.local_secrets import local_secrets_load

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("SWITCHBOARD_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
env.read_env(BASE_DIR / ".env")  # optional; real environment variables win

_fallback = (
    {}
    if env.str("SECRET_KEY", default="") and env.str("SWITCHBOARD_ENCRYPTION_KEYS", default="")
    else local_secrets_load(BASE_DIR / ".local")
)

SECRET_KEY = env.str("SECRET_KEY", default=_fallback.get("SECRET_KEY", ""))
# Fernet keys, newest first: the first encrypts, all decrypt (rotation: prepend a new key,
# run `manage.py switchboard rotate-keys`, then drop the old one).
SWITCHBOARD_ENCRYPTION_KEYS = env.list(
    "SWITCHBOARD_ENCRYPTION_KEYS",
    default=[k for k in _fallback.get("SWITCHBOARD_ENCRYPTION_KEYS", "").split(",") if k],
)
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # The admin's theme (django-unfold) comes before the admin, whose templates it replaces.
    "unfold",
    "unfold.contrib.filters",  # its text filter: event names are typed, not listed
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # WhiteNoise serves /static/ under runserver too, as it does under gunicorn.
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "axes",
    "integrations",
    "streaming",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # /static/ from the web process itself: no proxy needed for a styled admin.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.middleware.NulCharactersRefused",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout answer.
    "axes.middleware.AxesMiddleware",
]

# Admin logins: django-axes locks a username from one address out after repeated wrong
# passwords (SWITCHBOARD_LOGIN_FAILURE_LIMIT, for SWITCHBOARD_LOGIN_LOCKOUT_MINUTES); a
# successful login resets the count. `manage.py axes_reset` lifts every lockout.
AUTHENTICATION_BACKENDS = [
    "config.login_lockout.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("SWITCHBOARD_LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("SWITCHBOARD_LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no start-up banner in every command's output

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'switchboard.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Web, worker and beat share one file: wait for the writer instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
CACHES = {
    "default": (
        {"BACKEND": "config.cache.ReusedClientRedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Times to the second, with the timezone, on every admin page (config/formats/en/formats.py).
FORMAT_MODULE_PATH = ["config.formats"]
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"  # filled by `manage.py collectstatic` (bin/run does it)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Gzip copies made by collectstatic, which WhiteNoise sends to browsers that accept them.
    # Not the manifest variant: it would refuse to render any page before collectstatic ran.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# The admin's theme (django-unfold): its sidebar and index page are the operator's console.
UNFOLD = {
    "SITE_TITLE": "Switchboard",
    "SITE_HEADER": "Switchboard",
    "SITE_SUBHEADER": "Segment calls into Intercom",
    "SITE_SYMBOL": "hub",
    "SITE_URL": None,  # there is no public site: no "View site" link
    "SHOW_VIEW_ON_SITE": False,
    "STYLES": [lambda request: static("switchboard/admin.css")],
    "SCRIPTS": [lambda request: static("switchboard/admin.js")],
    "DASHBOARD_CALLBACK": "streaming.audit.views.admin_index",
    "SIDEBAR": {"navigation": "streaming.audit.views.admin_navigation"},
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Switchboard API",
    "DESCRIPTION": "Segment-compatible ingest (/v1/*) and the delivery audit trail (/api/v1/*).",
    "VERSION": "0.1.0",
}

# Browser SDKs (analytics.js, RudderStack JS) post from the product's own origin.
CORS_URLS_REGEX = r"^/v1/.*$"
CORS_ALLOW_ALL_ORIGINS = env.bool("CORS_ALLOW_ALL_ORIGINS", default=True)
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
# RudderStack's JavaScript SDK sends an AnonymousId header with every call (preflighted).
CORS_ALLOW_HEADERS = (*default_headers, "anonymousid")

# Celery: a message only wakes a lane; losing one loses nothing (the sweeper re-wakes).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Broadcast (control) messages: kombu defaults to ./control in the working directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # A wake-up published while the broker is down fails after one connection attempt instead
    # of holding the ingest answer for seconds: the sweeper wakes the lane once it is back.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"max_retries": 1, "interval_start": 0, "interval_max": 0.2}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# `celery -A config worker` with no flags runs the delivery shape: a thread pool, since a worker
# slot waits on Intercom's answer, not on the CPU (about 1 / latency calls per second each), with
# enough slots to reach Intercom's limit at its usual latency. SQLite (the embedded mode) takes
# one writer at a time, so there a few threads do. --pool / --concurrency still win.
CELERY_WORKER_POOL = env.str("SWITCHBOARD_WORKER_POOL", default="threads")
CELERY_WORKER_CONCURRENCY = env.int(
    "SWITCHBOARD_WORKER_CONCURRENCY",
    default=4 if DATABASES["default"]["ENGINE"].endswith("sqlite3") else 32,
)
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = env.str("SWITCHBOARD_QUEUE", default="switchboard")
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# Switchboard's own settings (docs/production.md, "Settings").
SWITCHBOARD_SWEEP_SECONDS = env.float("SWITCHBOARD_SWEEP_SECONDS", default=5.0)
SWITCHBOARD_RETENTION = timedelta(days=env.int("SWITCHBOARD_RETENTION_DAYS", default=30))
# Delivery: a worker's claim on a lane lapses this long after its last renewal (a killed worker's
# lanes are taken over after it); retries back off from the base, doubling, up to the cap.
SWITCHBOARD_LEASE_SECONDS = env.float("SWITCHBOARD_LEASE_SECONDS", default=60.0)
SWITCHBOARD_RETRY_BASE_SECONDS = env.float("SWITCHBOARD_RETRY_BASE_SECONDS", default=10.0)
SWITCHBOARD_RETRY_MAX_SECONDS = env.float("SWITCHBOARD_RETRY_MAX_SECONDS", default=300.0)
# Alerts (streaming/audit/alerts.py): how often the rules are evaluated; the sender of their
# emails (EMAIL_URL: e.g. smtp://user:password@host:587, read by django-environ); the admin's
# address, which makes the links in alerts absolute.
SWITCHBOARD_ALERTS_SECONDS = env.float("SWITCHBOARD_ALERTS_SECONDS", default=60.0)
# django-environ's idiom: EMAIL_BACKEND, EMAIL_HOST, ... from one URL (console: printed).
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("SWITCHBOARD_ALERTS_FROM", default="switchboard@localhost")
SWITCHBOARD_SITE_URL = env.str("SWITCHBOARD_SITE_URL", default="")
# A sweep that waited in a backlog longer than two intervals is dropped: the next one is due.
CELERY_BEAT_SCHEDULE = {
    "lanes-sweep": {
        "task": "switchboard.lanes_sweep",
        "schedule": SWITCHBOARD_SWEEP_SECONDS,
        "options": {"expires": 2 * SWITCHBOARD_SWEEP_SECONDS},
    },
    "retention-purge": {"task": "switchboard.retention_purge", "schedule": 3600.0},
    "alerts-evaluate": {
        "task": "switchboard.alerts_evaluate",
        "schedule": SWITCHBOARD_ALERTS_SECONDS,
        "options": {"expires": SWITCHBOARD_ALERTS_SECONDS},
    },
}
# The delivery hot path's statements are prepared on PostgreSQL (streaming/statements.py); off for
# a pooler that does not keep prepared statements (PgBouncer in transaction mode before 1.21).
SWITCHBOARD_DATABASE_PREPARE = env.bool("SWITCHBOARD_DATABASE_PREPARE", default=True)
SWITCHBOARD_WRITE_KEY_RATE_LIMIT = env.int("SWITCHBOARD_WRITE_KEY_RATE_LIMIT", default=0)
# A client (IP address) that sends more unknown write keys than this in a minute is refused
# (429) until the minute is over, whatever key it sends; 0 turns the brake off.
SWITCHBOARD_FAILED_WRITE_KEYS_PER_MINUTE = env.int(
    "SWITCHBOARD_FAILED_WRITE_KEYS_PER_MINUTE", default=30
)
SWITCHBOARD_INTERCOM_CONNECT_TIMEOUT = env.float(
    "SWITCHBOARD_INTERCOM_CONNECT_TIMEOUT", default=5.0
)
SWITCHBOARD_INTERCOM_READ_TIMEOUT = env.float("SWITCHBOARD_INTERCOM_READ_TIMEOUT", default=20.0)
# Automatic identify when the host's user model is saved: "app_label.Model" and its trait fields.
SWITCHBOARD_IDENTIFY_MODEL = env.str("SWITCHBOARD_IDENTIFY_MODEL", default="")
SWITCHBOARD_IDENTIFY_TRAITS = env.list("SWITCHBOARD_IDENTIFY_TRAITS", default=["email"])
# The source (by name) that calls of the Python API (streaming.ingest.analytics) go to by default.
SWITCHBOARD_PYTHON_SOURCE = env.str("SWITCHBOARD_PYTHON_SOURCE", default="")
# Where operators and Intercom reach this Switchboard (https://switchboard.example): the webhook
# URL shown in the admin, the OAuth redirect URL and the timeline links set on contacts. Empty:
# built from the admin request's own host (the timeline link then needs it: it is built by a worker).
SWITCHBOARD_PUBLIC_URL = env.str("SWITCHBOARD_PUBLIC_URL", default="").rstrip("/")
# The public Intercom app used by "Connect to Intercom" (OAuth); an app saved in the admin wins.
SWITCHBOARD_INTERCOM_CLIENT_ID = env.str("SWITCHBOARD_INTERCOM_CLIENT_ID", default="")
SWITCHBOARD_INTERCOM_CLIENT_SECRET = env.str("SWITCHBOARD_INTERCOM_CLIENT_SECRET", default="")
# Intercom's authorise page, when not the region's (app.intercom.com, app.eu.intercom.com,
# app.au.intercom.com); a custom-region destination uses <its base URL>/oauth (the sandbox's).
SWITCHBOARD_INTERCOM_OAUTH_AUTHORIZE_URL = env.str(
    "SWITCHBOARD_INTERCOM_OAUTH_AUTHORIZE_URL", default=""
)
# The destination whose Messenger {% intercom_messenger %} renders when none is named.
SWITCHBOARD_MESSENGER_DESTINATION = env.str("SWITCHBOARD_MESSENGER_DESTINATION", default="")
# How long a Messenger JWT stays valid (Intercom advises the length of the app's session).
SWITCHBOARD_MESSENGER_JWT_SECONDS = env.int("SWITCHBOARD_MESSENGER_JWT_SECONDS", default=3600)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
