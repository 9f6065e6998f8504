from django.urls import path

from . import views

app_name = "workers"

_base = "t/<slug:team>/workers/"

urlpatterns = [
    path(_base, views.worker_list, name="list"),
    path(_base + "-/new/", views.worker_register, name="register"),
    path(_base + "<str:pk>/", views.worker_detail, name="detail"),
    path(_base + "<str:pk>/drain/", views.worker_drain, name="drain"),
    path(_base + "<str:pk>/delete/", views.worker_delete, name="delete"),
]
