"""GPU Resources: the catalog (sortable, filterable, with $/h and $/month) and the team's own GPUs."""
from __future__ import annotations

from django import forms
from django.shortcuts import render

from accounts.permissions import team_view
from workers.models import Gpu, Worker

from .models import GpuType
from .offers import cuda_versions, gpu_rows

SORTS = {
    "vram": lambda r: (-r.gpu.vram_gb, r.gpu.display_name),
    "price": lambda r: (r.usd_per_hour is None, r.usd_per_hour or 0, r.gpu.display_name),
    "architecture": lambda r: (r.gpu.architecture, -r.gpu.vram_gb),
    "name": lambda r: r.gpu.display_name,
}


class CatalogFilters(forms.Form):
    vendor = forms.ChoiceField(required=False)
    cuda = forms.ChoiceField(label="CUDA version", required=False)
    sort = forms.ChoiceField(required=False, choices=[("vram", "VRAM"), ("price", "Price"),
                                                      ("architecture", "Architecture"), ("name", "Name")])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        vendors = GpuType.objects.order_by("vendor").values_list("vendor", flat=True).distinct()
        self.fields["vendor"].choices = [("", "Any vendor")] + [(v, v) for v in vendors]
        self.fields["cuda"].choices = [("", "Any CUDA")] + [(v, f"CUDA {v}") for v in cuda_versions()]


@team_view()
def gpu_resources(request):
    filters = CatalogFilters(request.GET)
    chosen = filters.cleaned_data if filters.is_valid() else {}
    rows = gpu_rows()
    if chosen.get("vendor"):
        rows = [r for r in rows if r.gpu.vendor == chosen["vendor"]]
    if chosen.get("cuda"):
        rows = [r for r in rows if chosen["cuda"] in r.gpu.cuda_versions]
    sort = chosen.get("sort") or "vram"
    rows.sort(key=SORTS[sort])
    team_gpus = Gpu.objects.filter(worker__team=request.team).select_related("worker").order_by("worker__name", "index")
    template = "catalog/gpus.html#catalog" if request.htmx and not request.htmx.boosted else "catalog/gpus.html"
    return render(request, template, {
        "filters": filters, "rows": rows, "sort": sort, "team_gpus": team_gpus,
        "worker_count": Worker.objects.filter(team=request.team).count(),
    })
