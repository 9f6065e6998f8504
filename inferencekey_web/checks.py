"""System checks of the deployment (`manage.py check --deploy`), registered by accounts.apps."""
from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, register

# Backends that deliver nothing: the console and file backends write reset and invite links (which
# are credentials) into the server's log or disk; locmem and dummy drop them.
NON_DELIVERING_EMAIL_BACKENDS = {
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.filebased.EmailBackend",
    "django.core.mail.backends.locmem.EmailBackend",
    "django.core.mail.backends.dummy.EmailBackend",
}


@register(Tags.security, deploy=True)
def check_email_backend(app_configs, **kwargs):
    if settings.EMAIL_BACKEND in NON_DELIVERING_EMAIL_BACKENDS:
        return [Error(
            f"EMAIL_BACKEND is {settings.EMAIL_BACKEND}: password reset and invite mails would not be "
            "delivered (the console backend prints their links, credentials, into the server log).",
            hint="Set EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend with EMAIL_HOST, EMAIL_PORT, "
                 "EMAIL_HOST_USER, EMAIL_HOST_PASSWORD and EMAIL_USE_TLS (or another delivering backend).",
            id="inferencekey.E001",
        )]
    return []
