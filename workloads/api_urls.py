from django.urls import path

from . import api, readiness

urlpatterns = [
    path("projects/<str:project>/workloads", api.ProjectWorkloadsView.as_view(), name="api-workloads"),
    path("projects/<str:project>/workloads/<str:slug>/readiness-events", readiness.readiness_events, name="api-readiness"),
    path("workloads/<str:workload>", api.WorkloadDetailView.as_view(), name="api-workload"),
]
