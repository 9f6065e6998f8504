"""Branded error pages the templates alone cannot give: the CSRF failure page (Django's own is a
bare technical page). 404/403/500 are templates/404.html, 403.html and 500.html."""
from __future__ import annotations

from django.shortcuts import render

CSRF_MESSAGE = "This page was open too long or its form is out of date. Reload the page and try again."


def csrf_failure(request, reason: str = ""):
    response = render(request, "403_csrf.html", {"message": CSRF_MESSAGE}, status=403)
    response["X-Error-Message"] = CSRF_MESSAGE  # static/js/app.js shows it for htmx requests
    return response
