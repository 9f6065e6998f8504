"""/healthz: the process is up. /readyz: the database answers."""
from django.db import connection
from django.http import JsonResponse


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any database failure means not ready
        return JsonResponse({"status": "unavailable", "error": f"database: {exc.__class__.__name__}"}, status=503)
    return JsonResponse({"status": "ok"})
