from django.urls import path

from . import agent_api, api

urlpatterns = [
    path("agent/register", agent_api.register, name="agent-register"),
    path("agent/heartbeat", agent_api.heartbeat, name="agent-heartbeat"),
    path("agent/offline", agent_api.offline, name="agent-offline"),
    path("projects/<str:project>/workers", api.ProjectWorkersView.as_view(), name="api-workers"),
    path("catalog/gpus", api.CatalogGpusView.as_view(), name="api-catalog-gpus"),
]
