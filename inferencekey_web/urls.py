from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from workers import agent_dist

from . import health, views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("workloads.api_urls")),
    path("api/", include("workers.api_urls")),
    # Any other /api path: the JSON 404 as a route, so it holds under DEBUG too (where Django
    # answers unmatched URLs with its technical HTML page instead of handler404).
    re_path(r"^api(?:/.*)?$", csrf_exempt(views.not_found)),
    path("admin/", admin.site.urls),
    # The worker agent as one file for GPU hosts (see workers/agent_dist.py and the join command).
    path("agent/" + agent_dist.FILE_NAME, agent_dist.download, name="agent-pyz"),
    # The dashboard (server-rendered, htmx).
    path("", views.home, name="home"),
    path("", include("accounts.urls")),
    path("", include("workloads.urls")),
    path("", include("catalog.urls")),
    path("", include("workers.urls")),
]

handler404 = "inferencekey_web.views.not_found"
