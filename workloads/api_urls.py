from django.urls import path

from . import api

urlpatterns = [
    path("projects/<str:project>/workloads", api.ProjectWorkloadsView.as_view(), name="api-workloads"),
    path("workloads/<str:workload>", api.WorkloadDetailView.as_view(), name="api-workload"),
]
