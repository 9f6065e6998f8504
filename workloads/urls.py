from django.urls import path

from . import views

app_name = "workloads"

# `-/` marks the project's own pages: a canonical slug can never be "-", so no workload shadows them.
_base = "t/<slug:team>/p/<str:project>/workloads/"
_one = _base + "<str:slug>/"

urlpatterns = [
    path(_base, views.workload_list, name="list"),
    path(_base + "-/new/", views.workload_create, name="create"),
    path(_base + "-/schedule-preview/", views.schedule_preview_view, name="schedule_preview"),
    path(_base + "-/pool-preview/", views.pool_preview_view, name="pool_preview"),
    path(_one, views.workload_detail, name="detail"),
    path(_one + "live/", views.workload_live, name="live"),
    path(_one + "edit/", views.workload_edit, name="edit"),
    path(_one + "delete/", views.workload_delete, name="delete"),
    path(_one + "test/", views.workload_test, name="test"),
]
