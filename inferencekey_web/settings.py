"""Settings, all read from the environment (see README for the variables).

The embedded default needs nothing external: SQLite and a filesystem Celery broker under
INFERENCEKEY_DATA_DIR. Production sets DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis).
"""
from __future__ import annotations

from pathlib import Path

import dj_database_url

from inferencekey_web.lib.env import env_bool, env_float, env_int, env_list, env_str
from inferencekey_web.lib.secret_key import data_dir_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("INFERENCEKEY_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
_INSECURE_KEY = "insecure-dev-key-set-SECRET_KEY-in-production"  # refused by the production settings
# Without SECRET_KEY: a random key generated once into the data dir (mode 0600), never a public one.
SECRET_KEY = env_str("SECRET_KEY") or data_dir_secret_key(DATA_DIR)
# Seals workload secrets at rest (lib/sealing.py); derived from SECRET_KEY when unset.
INFERENCEKEY_SECRETS_KEY = env_str("INFERENCEKEY_SECRETS_KEY")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
CSRF_FAILURE_VIEW = "inferencekey_web.error_pages.csrf_failure"  # a branded page, not Django's debug-style one

# The public URL users and the SDK reach this server at (printed by `bootstrap`).
BASE_URL = env_str("INFERENCEKEY_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Redoc served from our own static files, no CDN
    "django_htmx",
    "template_partials",
    "accounts",
    "catalog",
    "workers",
    "workloads",
    "gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Above WhiteNoise, so static files get the same frame and content-security headers as pages.
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "inferencekey_web.lib.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "inferencekey_web.urls"
# The SDK never sends a trailing slash; API routes are defined without one and must not redirect.
APPEND_SLASH = False

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

WSGI_APPLICATION = "inferencekey_web.wsgi.application"
ASGI_APPLICATION = "inferencekey_web.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("DB_POOL", True):
    # Under ASGI every request may run on another thread, so persistent connections do not help;
    # psycopg's pool (Django ≥ 5.1) keeps connections open across requests instead.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": env_int("DB_POOL_MAX", 10), "timeout": 30}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let the web server, Celery, the agent's heartbeats and `manage.py` share one
    # SQLite file. BEGIN IMMEDIATE takes the write lock when a transaction starts: a deferred one that
    # reads first and then writes cannot wait for the lock (SQLite answers "database is locked" at once,
    # the busy timeout does not apply), which is what broke `bootstrap` and the reconciler under load.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": env_int("SQLITE_BUSY_TIMEOUT_S", 30), "transaction_mode": "IMMEDIATE",
         "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
    # A file, not shared-cache memory, so the live test server's threads wait on locks instead of failing.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# ModelBackend that refuses password checks while an account or client address is throttled
# (accounts/throttle.py).
AUTHENTICATION_BACKENDS = ["accounts.throttle.ThrottledModelBackend"]
# Counters shared by every web process: the database cache (no extra service; its table is made by
# a migration) or Redis with THROTTLE_CACHE_URL=redis://…
_THROTTLE_CACHE_URL = env_str("THROTTLE_CACHE_URL", "")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _THROTTLE_CACHE_URL}
        if _THROTTLE_CACHE_URL
        else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "ik_throttle_cache"}
    ),
}
# (events, window in seconds) per kind; see accounts/throttle.py.
ACCOUNT_THROTTLES = {
    "login_account": (env_int("THROTTLE_LOGIN_FAILURES_PER_ACCOUNT", 10), 900),
    "login_client": (env_int("THROTTLE_LOGIN_FAILURES_PER_CLIENT", 50), 900),
    "mail_address": (env_int("THROTTLE_MAILS_PER_ADDRESS", 3), 3600),  # reset, sign-up, invitation mails
    "mail_client": (env_int("THROTTLE_MAILS_PER_CLIENT", 20), 3600),
}
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Request bodies: refused over these caps before Django reads them (inferencekey_web/lib/body_limits.py,
# in front of Django in asgi.py); the first matching path prefix wins, else DATA_UPLOAD_MAX_MEMORY_SIZE.
# Nothing here takes file uploads, so nothing is ever spooled to disk past the caps.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
REQUEST_BODY_LIMITS = [
    ("/api/agent/register", 64 * 1024),  # unauthenticated until the join token is checked
    ("/api/agent/heartbeat", 2 * 1024 * 1024),  # replica states with log tails (4 KiB each)
    ("/api/", 1024 * 1024),  # workload specs are a few KiB
]
REQUEST_BODY_IDLE_TIMEOUT_S = env_float("REQUEST_BODY_IDLE_TIMEOUT_S", 30.0)  # a trickled body → 408

# The console backend suits one machine; `check --deploy` refuses it (inferencekey_web/checks.py):
# production sets a delivering backend, e.g. smtp with the EMAIL_HOST… variables below.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "InferenceKey <noreply@localhost>")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["inferencekey_web.lib.json_input.BoundedJSONParser"],  # depth-bounded, keys checked
    "EXCEPTION_HANDLER": "inferencekey_web.lib.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "InferenceKey self-hosted API",
    "DESCRIPTION": "Control plane spoken by the official `inferencekey` SDK (ik_sdk_ tokens).",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "REDOC_DIST": "SIDECAR",
}

# Celery: the official Django recipe (CELERY_ namespace). Without a broker URL the embedded
# default uses kombu's filesystem transport under the data dir: no external service needed.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _queue_dir = DATA_DIR / "broker"
    (_queue_dir / "queue").mkdir(parents=True, exist_ok=True)
    (_queue_dir / "processed").mkdir(parents=True, exist_ok=True)
    (_queue_dir / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "queue"),
        "data_folder_out": str(_queue_dir / "queue"),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-task leaves the message for another run
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
SWEEP_INTERVAL_S = env_int("INFERENCEKEY_SWEEP_INTERVAL_S", 10)
# Autoscaler (workloads/autoscaling.py): a pass over the autoscaling workloads this often; a gateway
# also queues one at once for a workload it holds a request for. Demand is shared through Redis when
# INFERENCEKEY_DEMAND_URL, CELERY_BROKER_URL or THROTTLE_CACHE_URL is redis://…, else through the database.
AUTOSCALE_INTERVAL_S = env_int("INFERENCEKEY_AUTOSCALE_INTERVAL_S", 5)
DEMAND_URL = env_str("INFERENCEKEY_DEMAND_URL", "")
# How long the gateway holds a request for a workload with no ready replica (scaled to zero,
# starting) before 503 cold_start_timeout.
COLD_START_HOLD_S = env_float("INFERENCEKEY_COLD_START_HOLD_S", 600.0)
CELERY_BEAT_SCHEDULE = {
    # `expires` so missed sweeps do not pile up behind a stopped worker.
    "sweep": {"task": "workloads.tasks.sweep", "schedule": float(SWEEP_INTERVAL_S), "options": {"expires": SWEEP_INTERVAL_S}},
    "capacity-sweep": {"task": "workers.tasks.capacity_sweep", "schedule": float(SWEEP_INTERVAL_S),
                       "options": {"expires": SWEEP_INTERVAL_S}},
    "autoscale": {"task": "workloads.tasks.autoscale", "schedule": float(AUTOSCALE_INTERVAL_S),
                  "options": {"expires": AUTOSCALE_INTERVAL_S}},
}

# Worker liveness (see workers/): offline after WORKER_OFFLINE_AFTER_S without a heartbeat,
# replicas rescheduled after a further WORKER_RESCHEDULE_AFTER_S, so a blip causes no storm.
WORKER_OFFLINE_AFTER_S = env_int("INFERENCEKEY_WORKER_OFFLINE_AFTER_S", 60)
WORKER_RESCHEDULE_AFTER_S = env_int("INFERENCEKEY_WORKER_RESCHEDULE_AFTER_S", 120)
HEARTBEAT_INTERVAL_S = env_float("INFERENCEKEY_HEARTBEAT_INTERVAL_S", 3.0)
# The shared (team-less) local worker `up` starts: a one-machine convenience where every team's
# engines run as this machine's user. On here; off under the production settings unless opted in.
ALLOW_SHARED_WORKER = env_bool("INFERENCEKEY_ALLOW_SHARED_WORKER", True)

# Cloud capacity (workers/providers/, workers/capacity.py): which provider makes machines for
# `workers.source = "cloud"`, how long an instance's agent may take to register before the
# instance is replaced, and where agents reach this server.
CLOUD_PROVIDER = env_str("INFERENCEKEY_CLOUD_PROVIDER", "local")
CLOUD_BOOT_DEADLINE_S = env_int("INFERENCEKEY_CLOUD_BOOT_DEADLINE_S", 600)
CLOUD_SCALE_UP_DELAY_S = env_float("INFERENCEKEY_CLOUD_SCALE_UP_DELAY_S", 30.0)  # not from zero
CLOUD_SERVER_URL = env_str("INFERENCEKEY_CLOUD_SERVER_URL", "")  # default: INFERENCEKEY_BASE_URL / what `up` recorded
CLOUD_AGENT_PATH = env_str("INFERENCEKEY_AGENT_PATH", "")  # local provider: engine binaries (`up --agent-path`)
K8S_NAMESPACE = env_str("INFERENCEKEY_K8S_NAMESPACE", "default")
K8S_IMAGE = env_str("INFERENCEKEY_K8S_IMAGE", "vllm/vllm-openai:latest")  # needs python3 ≥ 3.11 and the engines
K8S_API_URL = env_str("INFERENCEKEY_K8S_API_URL", "")  # default: kubeconfig, else in-cluster config

# Readiness SSE streams (`wait_until_ready`) one SDK token may hold open per web process (429 past it).
READINESS_MAX_STREAMS_PER_TOKEN = env_int("INFERENCEKEY_READINESS_MAX_STREAMS_PER_TOKEN", 20)

# Gateway (data plane): route/key cache and upstream limits.
# Keys and routes are never served from the cache past this age (refreshed ahead at half of it):
# a revoked key stops working on the data plane within ~1 s.
GATEWAY_CACHE_TTL_S = env_float("GATEWAY_CACHE_TTL_S", 1.0)
# Request bodies per route (413 past the cap, checked from content-length before reading and
# while reading chunked bodies): GATEWAY_MAX_BODY_BYTES for every route unless the route's own
# GATEWAY_MAX_BODY_BYTES_CHAT / _COMPLETIONS / _EMBEDDINGS / _RERANK says otherwise.
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024)
GATEWAY_MAX_BODY_BYTES_BY_ROUTE = {
    route: env_int(f"GATEWAY_MAX_BODY_BYTES_{route.upper()}", GATEWAY_MAX_BODY_BYTES)
    for route in ("chat", "completions", "embeddings", "rerank")
}
GATEWAY_CONNECT_TIMEOUT_S = env_float("GATEWAY_CONNECT_TIMEOUT_S", 5.0)
# Time to first byte: an engine that accepted a request and sends no response head within this is
# answered 504 (a non-streamed generation longer than this must stream, or raise the bound).
GATEWAY_FIRST_BYTE_TIMEOUT_S = env_float("GATEWAY_FIRST_BYTE_TIMEOUT_S", 120.0)
GATEWAY_READ_TIMEOUT_S = env_float("GATEWAY_READ_TIMEOUT_S", 600.0)  # idle between body chunks (streams pause)
# Non-streamed answers are held whole only up to this (to fill `model`, sort rerank results); larger
# ones are streamed through when they need no reshaping, else 502.
GATEWAY_MAX_BUFFERED_RESPONSE_BYTES = env_int("GATEWAY_MAX_BUFFERED_RESPONSE_BYTES", 16 * 1024 * 1024)
GATEWAY_MAX_IDLE_PER_ENGINE = env_int("GATEWAY_MAX_IDLE_PER_ENGINE", 256)

# How long the ASGI server keeps an idle client connection open (`uvicorn --timeout-keep-alive`).
# Longer than common clients' pool idle time (reqwest, under the SDK: 90 s; urllib3/httpx: none or
# 5 s), so a pooled connection is always closed by the client first, never under a request.
KEEPALIVE_S = env_int("INFERENCEKEY_KEEPALIVE_S", 125)

# Security headers; production turns on the secure-cookie and HSTS settings via env.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CONTENT_SECURITY_POLICY = env_str(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
    "form-action 'self'",
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
