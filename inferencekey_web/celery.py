"""The Celery app, wired the official Django way (namespace CELERY_, autodiscovered tasks)."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferencekey_web.settings")

app = Celery("inferencekey_web")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
