"""The one settings module. Every value comes from the environment (docs/configuration.md).

Embedded mode (the default) runs on SQLite under ``var/`` with no Redis: Celery tasks run eagerly in
the calling process and caches live in files. ``APPLIANCE_ENV=production`` refuses to load with
unsafe values (see appliance.core.startup).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from appliance.core.env import env_bool, env_int, env_list, env_secret, env_str
from appliance.core.startup import production_problems

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("APPLIANCE_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)

APPLIANCE_ENV = env_str("APPLIANCE_ENV", "embedded")
if APPLIANCE_ENV not in {"embedded", "production"}:
    raise ImproperlyConfigured(
        f"APPLIANCE_ENV must be embedded or production, not {APPLIANCE_ENV!r}"
    )
PRODUCTION = APPLIANCE_ENV == "production"


def _embedded_secret_key() -> str:
    """A per-install key kept in var/ (mode 0600), so no fixed default key ever exists."""
    path = VAR_DIR / "secret_key"
    try:  # O_EXCL: of two processes starting at once, one writes and both read the same key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("insecure-embedded-" + secrets.token_urlsafe(48))
    for _ in range(50):
        key = path.read_text(encoding="utf-8").strip()
        if key:
            return key
        time.sleep(0.01)  # the other process is still writing it
    raise ImproperlyConfigured(f"{path} is empty; delete it to generate a new key.")


SECRET_KEY = env_secret("APPLIANCE_SECRET_KEY") or ("" if PRODUCTION else _embedded_secret_key())
DEBUG = env_bool("APPLIANCE_DEBUG", False)
ALLOWED_HOSTS = env_list(
    "APPLIANCE_ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost"]
)
CSRF_TRUSTED_ORIGINS = env_list("APPLIANCE_CSRF_TRUSTED_ORIGINS", [])

DATABASE_URL = env_secret("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "appliance.sqlite3"),
            # IMMEDIATE serialises writers up front, so audit sequence numbers never race. WAL lets
            # readers (the gateway, the console) go on while one writer commits; synchronous=FULL
            # keeps every committed audit event through a power cut.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
            },
            "CONN_MAX_AGE": 60,  # the gateway's database thread keeps its connection
            "CONN_HEALTH_CHECKS": True,
        }
    }
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"].setdefault("TEST", {})["NAME"] = ""  # in-memory for tests

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "ninja",  # serves Swagger UI and ReDoc from local static files, not a CDN
    "appliance.core",
    "appliance.accounts",
    "appliance.audit",
    "appliance.registry",
    "appliance.fleet",
    "appliance.routing",  # routes (virtual models), task classes, cost models, evaluations
    "appliance.access",
    "appliance.gateway",
    "django_htmx",
    "appliance.console",  # the web console (templates + htmx), on the same services
    "appliance.privacy",  # stored content (keep_encrypted policy), erasure, master key rotation
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "appliance.core.middleware.RequestContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "appliance.accounts.middleware.SessionLimitsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "appliance.console.middleware.ConsoleHeadersMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "appliance.urls"
ASGI_APPLICATION = "appliance.asgi.application"
WSGI_APPLICATION = "appliance.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "appliance.console.nav.navigation",
            ]
        },
    }
]

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "appliance.accounts.passwords.MaximumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
]

# Failed sign-ins: after this many failures for one user name (or from one address) within the
# window, every attempt for it answers 429 until the window passes.
APPLIANCE_LOGIN_MAX_FAILURES = env_int("APPLIANCE_LOGIN_MAX_FAILURES", 5, minimum=1)
APPLIANCE_LOGIN_WINDOW_SECONDS = env_int("APPLIANCE_LOGIN_WINDOW_SECONDS", 900, minimum=1)

REDIS_URL = env_secret("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
else:
    # Shared by every process of the embedded appliance, unlike the in-memory cache.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }
    CELERY_BROKER_URL = "memory://"
    CELERY_TASK_ALWAYS_EAGER = True  # no broker: jobs run in the process that enqueued them
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("APPLIANCE_TASK_TIME_LIMIT", 6 * 3600, minimum=60)

SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_COOKIE_AGE = env_int("APPLIANCE_SESSION_MAX_AGE", 12 * 3600, minimum=300)
# Single sign-on through the organisation's identity provider (OpenID Connect): off unless an
# issuer is set. Roles come from the groups claim: "admin=IT-Admins,operator=IT-Ops,...".
APPLIANCE_OIDC_ISSUER = env_str("APPLIANCE_OIDC_ISSUER", "").rstrip("/")
APPLIANCE_OIDC_CLIENT_ID = env_str("APPLIANCE_OIDC_CLIENT_ID", "")
APPLIANCE_OIDC_CLIENT_SECRET = env_secret("APPLIANCE_OIDC_CLIENT_SECRET", "")
APPLIANCE_OIDC_SCOPES = env_str("APPLIANCE_OIDC_SCOPES", "openid profile email groups")
APPLIANCE_OIDC_GROUPS_CLAIM = env_str("APPLIANCE_OIDC_GROUPS_CLAIM", "groups")
APPLIANCE_OIDC_ROLE_GROUPS = env_list("APPLIANCE_OIDC_ROLE_GROUPS", [])
# Authentication methods (the ID token's "amr") that count as a second factor done at the IdP.
APPLIANCE_OIDC_MFA_METHODS = env_list(
    "APPLIANCE_OIDC_MFA_METHODS", ["mfa", "otp", "hwk", "swk", "sc", "fido", "face", "fpt"]
)
APPLIANCE_OIDC_LABEL = env_str("APPLIANCE_OIDC_LABEL", "Sign in with your organisation")
# Sign-in with the organisation's directory (LDAP / Active Directory): off unless a URL is set.
# Role groups are "role=group DN" pairs separated by ";" (DNs hold commas).
APPLIANCE_LDAP_URL = env_str("APPLIANCE_LDAP_URL", "")
APPLIANCE_LDAP_START_TLS = env_bool("APPLIANCE_LDAP_START_TLS", False)
APPLIANCE_LDAP_BIND_DN = env_str("APPLIANCE_LDAP_BIND_DN", "")
APPLIANCE_LDAP_BIND_PASSWORD = env_secret("APPLIANCE_LDAP_BIND_PASSWORD", "")
APPLIANCE_LDAP_USER_BASE = env_str("APPLIANCE_LDAP_USER_BASE", "")
APPLIANCE_LDAP_USER_FILTER = env_str("APPLIANCE_LDAP_USER_FILTER", "(sAMAccountName={username})")
APPLIANCE_LDAP_ROLE_GROUPS = env_str("APPLIANCE_LDAP_ROLE_GROUPS", "")
# Local accounts first; a directory account has no password here, so only the directory signs
# it in.
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "appliance.accounts.ldap.LdapBackend",
]
# Idle sign-out (HIPAA automatic logoff), enforced on the server by SessionLimitsMiddleware.
APPLIANCE_SESSION_IDLE_SECONDS = env_int("APPLIANCE_SESSION_IDLE_SECONDS", 15 * 60, minimum=10)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if PRODUCTION:
    SECURE_HSTS_SECONDS = env_int("APPLIANCE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = not PRODUCTION  # embedded mode serves without collectstatic

# Registry: where imported files are kept, and which directories an import may read from.
APPLIANCE_ARTIFACT_ROOT = Path(
    env_str("APPLIANCE_ARTIFACT_ROOT", str(VAR_DIR / "artifacts"))
).resolve()
APPLIANCE_IMPORT_ROOTS = [
    Path(p).resolve() for p in env_list("APPLIANCE_IMPORT_ROOTS", [str(VAR_DIR / "import")])
]
(VAR_DIR / "import").mkdir(exist_ok=True, mode=0o700)
APPLIANCE_MAX_UPLOAD_BYTES = env_int("APPLIANCE_MAX_UPLOAD_BYTES", 2 * 1024**3, minimum=1024)
APPLIANCE_STAGING_DIR = VAR_DIR / "staging"
FILE_UPLOAD_TEMP_DIR = str(VAR_DIR / "tmp")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(exist_ok=True, mode=0o700)
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024  # JSON bodies; uploads stream to FILE_UPLOAD_TEMP_DIR

# Fleet: how often agents heartbeat, when a silent node counts as offline, how long GPU history
# is kept at each resolution, and how long an enrollment token lives.
APPLIANCE_HEARTBEAT_SECONDS = env_int("APPLIANCE_HEARTBEAT_SECONDS", 10, minimum=1)
APPLIANCE_NODE_OFFLINE_AFTER_MISSED = env_int("APPLIANCE_NODE_OFFLINE_AFTER_MISSED", 3, minimum=1)
APPLIANCE_GPU_RAW_RETENTION_HOURS = env_int("APPLIANCE_GPU_RAW_RETENTION_HOURS", 24, minimum=1)
APPLIANCE_GPU_MINUTE_RETENTION_DAYS = env_int("APPLIANCE_GPU_MINUTE_RETENTION_DAYS", 14, minimum=1)
APPLIANCE_GPU_HOUR_RETENTION_DAYS = env_int("APPLIANCE_GPU_HOUR_RETENTION_DAYS", 400, minimum=1)
APPLIANCE_ENROLLMENT_TOKEN_HOURS = env_int("APPLIANCE_ENROLLMENT_TOKEN_HOURS", 24, minimum=1)

# The gateway (/v1): see docs/configuration.md.
APPLIANCE_GATEWAY_TIMEOUT_SECONDS = env_int("APPLIANCE_GATEWAY_TIMEOUT_SECONDS", 300, minimum=1)
APPLIANCE_GATEWAY_CONNECT_TIMEOUT_SECONDS = env_int(
    "APPLIANCE_GATEWAY_CONNECT_TIMEOUT_SECONDS", 3, minimum=1
)
APPLIANCE_GATEWAY_MAX_BODY_BYTES = env_int(
    "APPLIANCE_GATEWAY_MAX_BODY_BYTES", 1024**2, minimum=1024
)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(DATA_UPLOAD_MAX_MEMORY_SIZE, APPLIANCE_GATEWAY_MAX_BODY_BYTES)
APPLIANCE_GATEWAY_CACHE_SECONDS = env_int("APPLIANCE_GATEWAY_CACHE_SECONDS", 30, minimum=0)
APPLIANCE_GATEWAY_ROUTES_SECONDS = env_int("APPLIANCE_GATEWAY_ROUTES_SECONDS", 2, minimum=0)
APPLIANCE_USAGE_ROLLUP_MINUTES = env_int("APPLIANCE_USAGE_ROLLUP_MINUTES", 5, minimum=1)

# Routing and cost (docs/routing.md): the semantic classifier's time limit; the currency that
# prices and cost reports are in (ISO 4217, one for the whole appliance).
APPLIANCE_ROUTING_SEMANTIC_TIMEOUT_MS = env_int(
    "APPLIANCE_ROUTING_SEMANTIC_TIMEOUT_MS", 2000, minimum=50
)
APPLIANCE_CURRENCY = env_str("APPLIANCE_CURRENCY", "EUR")
if not (
    len(APPLIANCE_CURRENCY) == 3 and APPLIANCE_CURRENCY.isascii() and APPLIANCE_CURRENCY.isupper()
):
    raise ImproperlyConfigured(
        f"APPLIANCE_CURRENCY must be a three-letter ISO 4217 code, not {APPLIANCE_CURRENCY!r}"
    )

# Audit: the checkpoint origin (names this log in signed notes), how often idle checkpoints are
# re-signed, where export bundles are written; the master key (see appliance/core/crypto.py).
APPLIANCE_AUDIT_ORIGIN = env_str("APPLIANCE_AUDIT_ORIGIN", "appliance/audit")
if (
    not APPLIANCE_AUDIT_ORIGIN.isprintable()
    or " " in APPLIANCE_AUDIT_ORIGIN
    or ("+" in APPLIANCE_AUDIT_ORIGIN)
):  # a signed note's key name (C2SP) is one printable word without '+'
    raise ImproperlyConfigured(
        f"APPLIANCE_AUDIT_ORIGIN must be printable, without spaces or '+', "
        f"not {APPLIANCE_AUDIT_ORIGIN!r}"
    )
APPLIANCE_ORGANISATION = env_str("APPLIANCE_ORGANISATION", "(set APPLIANCE_ORGANISATION)")
APPLIANCE_AUDIT_IDLE_CHECKPOINT_MINUTES = env_int(
    "APPLIANCE_AUDIT_IDLE_CHECKPOINT_MINUTES", 60, minimum=1
)
APPLIANCE_AUDIT_EXPORT_DIR = Path(
    env_str("APPLIANCE_AUDIT_EXPORT_DIR", str(VAR_DIR / "exports"))
).resolve()
APPLIANCE_MASTER_KEY_PATH = VAR_DIR / "master.key"

# Audit witness: forward every audit event and checkpoint to a syslog receiver (SIEM) over TCP,
# TLS in production (docs/audit-witness.md). No address, no traffic.
APPLIANCE_AUDIT_WITNESS_ADDRESS = env_str("APPLIANCE_AUDIT_WITNESS_ADDRESS")
APPLIANCE_AUDIT_WITNESS_TLS = env_bool("APPLIANCE_AUDIT_WITNESS_TLS", PRODUCTION)
APPLIANCE_AUDIT_WITNESS_CA_FILE = env_str("APPLIANCE_AUDIT_WITNESS_CA_FILE")
APPLIANCE_AUDIT_WITNESS_SPOOL_DIR = Path(
    env_str("APPLIANCE_AUDIT_WITNESS_SPOOL_DIR", str(VAR_DIR / "witness"))
).resolve()
APPLIANCE_AUDIT_WITNESS_HOSTNAME = env_str("APPLIANCE_AUDIT_WITNESS_HOSTNAME", socket.gethostname())
APPLIANCE_AUDIT_WITNESS_BATCH = env_int("APPLIANCE_AUDIT_WITNESS_BATCH", 500, minimum=1)

# Checked once every setting it looks at has been read.
_problems = (
    production_problems(
        debug=DEBUG,
        secret_key=SECRET_KEY,
        database_engine=DATABASES["default"]["ENGINE"],
        allowed_hosts=ALLOWED_HOSTS,
        witness_address=APPLIANCE_AUDIT_WITNESS_ADDRESS,
        witness_tls=APPLIANCE_AUDIT_WITNESS_TLS,
        oidc_issuer=APPLIANCE_OIDC_ISSUER,
        ldap_url=APPLIANCE_LDAP_URL,
        ldap_start_tls=APPLIANCE_LDAP_START_TLS,
    )
    if PRODUCTION
    else []
)
if _problems:
    raise ImproperlyConfigured("Refusing to start in production mode:\n  " + "\n  ".join(_problems))

# Periodic jobs (celery beat in production; `make run` runs them in process).
CELERY_BEAT_SCHEDULE = {
    "fleet-mark-offline-nodes": {
        "task": "fleet.mark_offline_nodes",
        "schedule": float(APPLIANCE_HEARTBEAT_SECONDS),
    },
    "fleet-rollup-gpu-samples": {"task": "fleet.rollup_gpu_samples", "schedule": 60.0},
    "gateway-rollup-usage": {
        "task": "gateway.rollup_usage",
        "schedule": 60.0 * APPLIANCE_USAGE_ROLLUP_MINUTES,
    },
    "audit-checkpoint": {"task": "audit.checkpoint", "schedule": 60.0},
    "accounts-expire-break-glass": {"task": "accounts.expire_break_glass", "schedule": 60.0},
    "audit-verify": {"task": "audit.verify", "schedule": 24 * 3600.0},
    "audit-retention-purge": {"task": "audit.retention_purge", "schedule": 24 * 3600.0},
    "routing-refresh-costs": {"task": "routing.refresh_costs", "schedule": 3600.0},
    "routing-sweep-evaluations": {"task": "routing.sweep_evaluations", "schedule": 900.0},
}
if APPLIANCE_AUDIT_WITNESS_ADDRESS:
    CELERY_BEAT_SCHEDULE["audit-witness-forward"] = {
        "task": "audit.witness_forward",
        "schedule": 60.0,
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    },
    "filters": {"request_id": {"()": "appliance.core.context.RequestIdLogFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("APPLIANCE_LOG_LEVEL", "INFO")},
    # Django logs request details for 4xx/5xx; the request line is enough, never bodies.
    # HTTP clients log every call's URL at INFO: noise on the gateway's hot path.
    "loggers": {
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
