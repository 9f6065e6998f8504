"""Production settings pass `manage.py check --deploy` and refuse to start without a real SECRET_KEY."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _check(env_changes: dict) -> subprocess.CompletedProcess:
    # A clean environment: the browser tests set DJANGO_ALLOW_ASYNC_UNSAFE, which --deploy rightly refuses.
    dropped = ("SECRET_KEY", "DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(DJANGO_SETTINGS_MODULE="inferencekey_web.settings_production", **env_changes)
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


SMTP = {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "smtp.example.com"}


def test_deploy_check_passes_with_production_settings():
    result = _check({"SECRET_KEY": secrets.token_urlsafe(64), **SMTP})
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_check_refuses_the_console_email_backend():
    result = _check({"SECRET_KEY": secrets.token_urlsafe(64)})
    assert result.returncode != 0 and "inferencekey.E001" in result.stdout + result.stderr


def test_production_settings_refuse_a_missing_secret_key():
    result = _check({})
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_production_settings_refuse_a_short_secret_key():
    assert _check({"SECRET_KEY": "short"}).returncode != 0
