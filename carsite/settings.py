"""carsite settings, read from the environment (12-factor).

Unset variables fall back to the embedded default: an SQLite file, in-process tasks and
local media, so that a fresh clone runs with no services at all.
"""

from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from carsite import media_storage

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)

_INSECURE_DEV_KEY = "django-insecure-carsite-development-only"
SECRET_KEY = env.str("SECRET_KEY", default=_INSECURE_DEV_KEY if DEBUG else "")
if not DEBUG and (not SECRET_KEY or SECRET_KEY == _INSECURE_DEV_KEY or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a real secret of at least 50 characters when DEBUG is off. "
        "For local development set DEBUG=1."
    )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "carsite.apps.CarsiteAdminConfig",  # django.contrib.admin, with sign-in attempts limited
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "catalog",
    "classifier",
    "scraping",
]

MIDDLEWARE = [
    "carsite.database_unavailable.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "carsite.security_headers.ContentSecurityPolicyMiddleware",
    "carsite.middleware.RequestBodyLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "carsite.urls"
WSGI_APPLICATION = "carsite.wsgi.application"
ASGI_APPLICATION = "carsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "carsite" / "templates"],
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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'carsite.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Persistent connections (checked before reuse): a new PostgreSQL connection per request or per task
# costs more than the query it was opened for.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that is down or unreachable answers 503 quickly rather than holding the request.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=2)
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL lets the site read while a task writes; the timeout rides out short write locks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHE_URL = env.str("CACHE_URL", default="")
# Upload throttling counts in this cache. With a Redis broker and no CACHE_URL it is that Redis: a
# per-process memory cache would give every web process its own allowance per client.
if not CACHE_URL and env.str("CELERY_BROKER_URL", default="").startswith(("redis://", "rediss://")):
    CACHE_URL = env.str("CELERY_BROKER_URL")
CACHES: dict[str, dict[str, Any]] = {
    "default": environ.Env.cache_url_config(CACHE_URL)
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "carsite"}
}
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # Seconds a cache call may wait on Redis: a hung Redis must not hold every upload (throttles then let it through).
    CACHE_TIMEOUT = env.float("CACHE_TIMEOUT", default=0.5)
    CACHES["default"]["OPTIONS"] = {
        **(CACHES["default"].get("OPTIONS") or {}),
        "socket_timeout": CACHE_TIMEOUT,
        "socket_connect_timeout": CACHE_TIMEOUT,
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
# carsite is not an app, so its own static files (site.css) must be listed to be found and collected.
STATICFILES_DIRS = [BASE_DIR / "carsite" / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Hashed names need ``collectstatic`` first; debug runs and the test suite serve plain names.
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env.bool("STATIC_MANIFEST", default=not DEBUG)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Media on an S3-compatible bucket when S3_BUCKET names one (several hosts share it), else under MEDIA_ROOT.
STORAGES["default"] = media_storage.default_storage(env)
# Media is served by the app itself unless a front proxy takes it over (or it lives on S3).
SERVE_MEDIA = env.bool("SERVE_MEDIA", default=STORAGES["default"]["BACKEND"].endswith("FileSystemStorage"))

FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 60 * 1024 * 1024
FILE_UPLOAD_PERMISSIONS = 0o644

# --- Security (``manage.py check --deploy`` is clean when DEBUG is off) ---
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 60 * 60 * 24 * 30)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Failed admin sign-ins allowed per account and per client address within the window (seconds).
ADMIN_LOGIN_FAILURES_PER_ACCOUNT = env.int("ADMIN_LOGIN_FAILURES_PER_ACCOUNT", default=5)
ADMIN_LOGIN_FAILURES_PER_ADDRESS = env.int("ADMIN_LOGIN_FAILURES_PER_ADDRESS", default=20)
ADMIN_LOGIN_FAILURE_WINDOW = env.int("ADMIN_LOGIN_FAILURE_WINDOW", default=15 * 60)
# Pages, the admin and the API docs load scripts, styles and images from this site only, never inline
# (data: images are icons inside the Swagger UI stylesheet; blob: is the upload page's preview of the chosen photo).
# Photos on S3 come from the bucket's origin.
_IMG_SOURCES = " ".join(filter(None, ("'self' data: blob:", media_storage.media_origin(env))))
CONTENT_SECURITY_POLICY = (
    f"default-src 'self'; img-src {_IMG_SOURCES}; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)

# --- REST API ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["carsite.permissions.StaffModelPermissionsOrReadOnly"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "catalog.filters.AliasOrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "carsite.schema.AutoSchema",
    "EXCEPTION_HANDLER": "carsite.errors.api_exception_handler",
    # Proxies in front of the site whose X-Forwarded-For is believed; 0: the client is REMOTE_ADDR.
    "NUM_PROXIES": env.int("TRUSTED_PROXY_COUNT", default=0),
    "DEFAULT_THROTTLE_RATES": {
        "classify_anon": env.str("CLASSIFY_ANON_RATE", default="30/minute"),
        "classify_user": env.str("CLASSIFY_USER_RATE", default="300/minute"),
        # Feedback on the result page, per signed-in visitor or per address.
        "feedback": env.str("FEEDBACK_RATE", default="30/hour"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "carsite API",
    "DESCRIPTION": "Car catalog, specifications, images and photo classification.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's assets come from the sidecar package: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# --- Celery ---
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
# No broker: run tasks in-process (the embedded default). The same services run either way.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="") or None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
# Long ML tasks: ack after the work is done so a dead worker's job is redelivered,
# and take one job at a time so a busy worker does not hoard the queue.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=60 * 60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=60 * 60 + 300)
# Seconds to wait on the broker for one connect or one reply (a healthy Redis answers in a millisecond):
# a broker that hangs must not hold an upload, which may wait for up to three of them (a publish, then its
# retry on a new connection); the job stays queued and the periodic requeue sends it once the broker is back.
CELERY_BROKER_TIMEOUT = env.float("CELERY_BROKER_TIMEOUT", default=0.5)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Must exceed the longest task, or Redis redelivers a job that is still running.
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=2 * 60 * 60),
    "socket_timeout": CELERY_BROKER_TIMEOUT,
    "socket_connect_timeout": CELERY_BROKER_TIMEOUT,
}
CELERY_BROKER_CONNECTION_TIMEOUT = CELERY_BROKER_TIMEOUT
# One quick second try of a publish, then give up: an upload answers within a few seconds whatever the broker does.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup otherwise closes the database connection before and after every task (a new
# connection per task); tasks call close_old_connections() themselves, which honours CONN_MAX_AGE.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_ROUTES = {
    "scraping.*": {"queue": "scraping"},
    "classifier.*": {"queue": "ml"},
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BEAT_SCHEDULE: dict = {}

# --- carsite ---
CARSITE_SHARED_DATA_DIR = Path(env.str("CARSITE_SHARED_DATA_DIR", default=str(BASE_DIR.parent / "shared" / "data")))
# Labelled demo photos imported and trained on by the run command when present.
CARSITE_DEMO_PHOTOS_DIR = Path(env.str("CARSITE_DEMO_PHOTOS_DIR", default=str(CARSITE_SHARED_DATA_DIR / "car-photos")))
CARSITE_MODELS_DIR = Path(env.str("CARSITE_MODELS_DIR", default=str(VAR_DIR / "models")))
CARSITE_UPLOAD_MAX_BYTES = env.int("CARSITE_UPLOAD_MAX_BYTES", default=10 * 1024 * 1024)
CARSITE_UPLOAD_MAX_PIXELS = env.int("CARSITE_UPLOAD_MAX_PIXELS", default=40_000_000)
# PNG and WebP decode every pixel (JPEG decodes at reduced scale): bench/image_decode_benchmark.py.
CARSITE_UPLOAD_MAX_DECODED_PIXELS = env.int("CARSITE_UPLOAD_MAX_DECODED_PIXELS", default=4_000_000)
CARSITE_IMAGE_MIN_SIDE = env.int("CARSITE_IMAGE_MIN_SIDE", default=64)
CARSITE_IMAGE_MAX_SIDE = env.int("CARSITE_IMAGE_MAX_SIDE", default=1600)
CARSITE_NEAR_DUPLICATE_DISTANCE = env.int("CARSITE_NEAR_DUPLICATE_DISTANCE", default=6)

# --- classifier runtime ---
# Threads one model call may use (ONNX Runtime's intra-op threads, or torch's); keep compute slots x
# threads within the machine's cores.
CARSITE_INFERENCE_THREADS = env.int("CARSITE_INFERENCE_THREADS", default=2)
# What runs the models: "auto" (ONNX Runtime when the bundle has its ONNX export, else torch), "onnxruntime"
# (a bundle without export fails to load instead of falling back) or "torch".
CARSITE_INFERENCE_BACKEND = env.str("CARSITE_INFERENCE_BACKEND", default="auto")
# Model calls one worker process runs at once (0: its cores / CARSITE_INFERENCE_THREADS). A worker started
# with more threads than this keeps the cores computing while its other threads talk to the broker
# and the database.
CARSITE_CLASSIFY_COMPUTE_SLOTS = env.int("CARSITE_CLASSIFY_COMPUTE_SLOTS", default=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- classification ---
# Most photos one API request may send as a batch (several multipart parts named "image").
CARSITE_CLASSIFY_BATCH_LIMIT = env.int("CARSITE_CLASSIFY_BATCH_LIMIT", default=10)
# Larger request bodies are refused (413) before any of them is read; the default fits a full batch of
# photos at the byte limit, with room for the multipart headers.
CARSITE_REQUEST_MAX_BYTES = env.int(
    "CARSITE_REQUEST_MAX_BYTES", default=CARSITE_CLASSIFY_BATCH_LIMIT * CARSITE_UPLOAD_MAX_BYTES + 1024 * 1024
)
# Photos per model call when a model is given several (labelling catalog images by view; a classification
# job is one photo). One at a time runs fastest when threads compute side by side on a CPU (larger calls
# compete for the caches), and a photo's answer then never depends on which photos shared its call.
CARSITE_CLASSIFY_FORWARD_BATCH = env.int("CARSITE_CLASSIFY_FORWARD_BATCH", default=1)
# Jobs one worker task claims and writes together (its own and the oldest queued others): a backlog then
# costs one claim and one write per batch; 1 is one job per task. bench/classify_benchmark.py measures it.
CARSITE_CLASSIFY_CLAIM_BATCH = env.int("CARSITE_CLASSIFY_CLAIM_BATCH", default=8)
# A job still queued this long after its upload (seconds) is taken to have lost its task message (the
# broker restarted or was flushed) and gets another; Celery beat checks every CARSITE_CLASSIFY_REQUEUE_EVERY
# seconds (0: never). The same check sends again the tasks that could not be sent (the broker was down),
# and redoes running jobs whose lease expired.
CARSITE_CLASSIFY_REQUEUE_QUEUED_AFTER = env.int("CARSITE_CLASSIFY_REQUEUE_QUEUED_AFTER", default=30 * 60)
CARSITE_CLASSIFY_REQUEUE_EVERY = env.float("CARSITE_CLASSIFY_REQUEUE_EVERY", default=30)
# A running job's lease (seconds): its worker renews it while the job runs, so a job whose lease has
# expired was left by a dead worker and is redone; dead worker to redone: at most this plus the check above.
CARSITE_CLASSIFY_LEASE_SECONDS = env.float("CARSITE_CLASSIFY_LEASE_SECONDS", default=60)
if CARSITE_CLASSIFY_REQUEUE_EVERY > 0:
    CELERY_BEAT_SCHEDULE["classifier-requeue-stuck"] = {
        "task": "classifier.requeue_stuck",
        "schedule": float(CARSITE_CLASSIFY_REQUEUE_EVERY),
    }
# Test-only: make every classification job sleep this long so worker-kill tests can catch it mid-task.
CARSITE_CLASSIFY_TEST_DELAY_MS = env.int("CARSITE_CLASSIFY_TEST_DELAY_MS", default=0)

# --- scraping ---
# The scraper says who it is and where to reach its operator; sites may block anonymous crawlers.
SCRAPER_CONTACT_URL = env.str("SCRAPER_CONTACT_URL", default="https://github.com/carsite/carsite#scraper")
SCRAPER_USER_AGENT = env.str(
    "SCRAPER_USER_AGENT", default=f"carsite-scraper/1.0 (+{SCRAPER_CONTACT_URL}; car catalog research)"
)
SCRAPER_RATE_PER_HOST = env.float("SCRAPER_RATE_PER_HOST", default=1.0)  # requests/s per host; 0 lifts it
# Where worker processes share the per-host rate limit; by default the Redis broker, if there is one.
SCRAPER_RATE_LIMIT_REDIS_URL = env.str(
    "SCRAPER_RATE_LIMIT_REDIS_URL", default=CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else ""
)
SCRAPER_CONNECT_TIMEOUT = env.float("SCRAPER_CONNECT_TIMEOUT", default=10.0)
SCRAPER_READ_TIMEOUT = env.float("SCRAPER_READ_TIMEOUT", default=30.0)
SCRAPER_RETRIES = env.int("SCRAPER_RETRIES", default=3)
SCRAPER_BACKOFF_BASE = env.float("SCRAPER_BACKOFF_BASE", default=1.0)  # seconds; doubles per retry
SCRAPER_RETRY_AFTER_MAX = env.float("SCRAPER_RETRY_AFTER_MAX", default=120.0)
SCRAPER_MAX_PAGE_BYTES = env.int("SCRAPER_MAX_PAGE_BYTES", default=5 * 1024 * 1024)
SCRAPER_MAX_IMAGE_BYTES = env.int("SCRAPER_MAX_IMAGE_BYTES", default=CARSITE_UPLOAD_MAX_BYTES)
SCRAPER_MAX_REDIRECTS = env.int("SCRAPER_MAX_REDIRECTS", default=5)
# Seconds one download may take, checked as its body arrives (a read timeout restarts with every byte).
SCRAPER_DOWNLOAD_DEADLINE = env.float("SCRAPER_DOWNLOAD_DEADLINE", default=120.0)
# Links followed from one page; the rest are dropped and the run's last error says so.
SCRAPER_MAX_LINKS_PER_PAGE = env.int("SCRAPER_MAX_LINKS_PER_PAGE", default=1000)
# Hosts that may resolve to private/loopback addresses (a local test site); empty in production.
SCRAPER_ALLOWED_PRIVATE_HOSTS = env.list("SCRAPER_ALLOWED_PRIVATE_HOSTS", default=[])
SCRAPER_OBEY_ROBOTS = env.bool("SCRAPER_OBEY_ROBOTS", default=True)
SCRAPER_ROBOTS_CACHE_SECONDS = env.float("SCRAPER_ROBOTS_CACHE_SECONDS", default=3600.0)
# Weekly re-crawl of previous successful runs (crontab: minute hour day-of-month month day-of-week); empty disables.
SCRAPER_RECRAWL_CRON = env.str("SCRAPER_RECRAWL_CRON", default="0 4 * * 1")
if SCRAPER_RECRAWL_CRON.strip():
    from celery.schedules import crontab as _crontab

    if len(SCRAPER_RECRAWL_CRON.split()) != 5:
        raise ImproperlyConfigured(
            f"SCRAPER_RECRAWL_CRON={SCRAPER_RECRAWL_CRON!r} must have five fields: "
            "minute hour day-of-month month day-of-week (e.g. '0 4 * * 1'), or be empty to disable the re-crawl."
        )
    _minute, _hour, _day_of_month, _month, _day_of_week = SCRAPER_RECRAWL_CRON.split()
    CELERY_BEAT_SCHEDULE["scraping-recrawl"] = {
        "task": "scraping.recrawl",
        "schedule": _crontab(
            minute=_minute, hour=_hour, day_of_month=_day_of_month, month_of_year=_month, day_of_week=_day_of_week
        ),
    }
