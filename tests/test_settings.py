"""Settings come from the environment; production settings are safe."""

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "x" * 20 + "-production-like-secret-for-the-deploy-check-0123456789",
    "ALLOWED_HOSTS": "carsite.example.com",
    "DATABASE_URL": "sqlite:////tmp/carsite-deploy-check.sqlite3",
}


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    unwanted = {"SECRET_KEY", "DEBUG", "SECURE_SSL_REDIRECT", "DJANGO_ALLOW_ASYNC_UNSAFE", "STATIC_MANIFEST"}
    clean = {k: v for k, v in os.environ.items() if k not in unwanted}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_refuses_to_start_without_a_real_secret_key_when_debug_is_off():
    result = run_manage("check", env={"DEBUG": "0"})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_refuses_a_short_secret_key():
    result = run_manage("check", env={"DEBUG": "0", "SECRET_KEY": "too-short"})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_deploy_check_is_clean_under_production_settings():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_debug_runs_without_a_secret_key_on_the_embedded_defaults():
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='carsite.settings'; django.setup();"
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER, s.MEDIA_ROOT)"
    )
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL"}}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env={**clean, "DEBUG": "1"}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    engine, eager, media = result.stdout.split()
    assert engine == "django.db.backends.sqlite3"
    assert eager == "True"
    assert media.endswith("var/media")


def test_celery_is_configured_for_long_ml_tasks(settings):
    from carsite.celery import app

    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    assert app.conf.task_time_limit > app.conf.task_soft_time_limit > 0
