"""The Celery app, wired the official Django way (namespace CELERY_, autodiscovered tasks)."""
import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

# The embedded default's `filesystem://` broker, with atomic message writes (see lib/fs_broker.py).
TRANSPORT_ALIASES["filesystem"] = "inferencekey_web.lib.fs_broker:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferencekey_web.settings")

app = Celery("inferencekey_web")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
