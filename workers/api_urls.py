from django.urls import path

from . import agent_api

urlpatterns = [
    path("agent/register", agent_api.register, name="agent-register"),
    path("agent/heartbeat", agent_api.heartbeat, name="agent-heartbeat"),
    path("agent/offline", agent_api.offline, name="agent-offline"),
]
