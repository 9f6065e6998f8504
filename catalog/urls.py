from django.urls import path

from . import views

app_name = "catalog"

urlpatterns = [
    path("t/<slug:team>/gpus/", views.gpu_resources, name="gpus"),
]
