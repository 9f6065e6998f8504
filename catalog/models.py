"""GPU Resources catalog: GPU types as cloud catalogs name them, and their hourly price offers."""
from __future__ import annotations

from django.db import models


class GpuType(models.Model):
    display_name = models.CharField(max_length=120, unique=True)  # e.g. "NVIDIA A100-SXM4-80GB"
    vendor = models.CharField(max_length=32)
    architecture = models.CharField(max_length=64)
    compute_capability = models.CharField(max_length=8, blank=True)
    vram_gb = models.PositiveIntegerField()
    memory_type = models.CharField(max_length=32, blank=True)
    segment = models.CharField(max_length=16, default="datacenter")  # datacenter | workstation | consumer
    cuda_versions = models.JSONField(default=list)  # CUDA toolkit versions it can run, e.g. ["12.8", "13.0"]
    # SkyPilot's accelerator name (`A100-80GB`, `L4`); empty: the skypilot capacity provider does not offer it.
    skypilot_name = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["vendor", "-vram_gb", "display_name"]

    def __str__(self) -> str:
        return self.display_name

    @property
    def cheapest_offer(self):
        offers = [o for o in self.offers.all() if o.pricing == "on_demand"] or list(self.offers.all())
        return min(offers, key=lambda o: o.usd_per_hour, default=None)


class GpuOffer(models.Model):
    gpu_type = models.ForeignKey(GpuType, on_delete=models.CASCADE, related_name="offers")
    provider = models.CharField(max_length=64)
    region = models.CharField(max_length=64, blank=True)
    pricing = models.CharField(max_length=16, choices=[("on_demand", "On-demand"), ("spot", "Spot")], default="on_demand")
    usd_per_hour = models.DecimalField(max_digits=8, decimal_places=3)
    source = models.CharField(max_length=300, blank=True)
    as_of = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["usd_per_hour"]

    def __str__(self) -> str:
        return f"{self.gpu_type} @ {self.provider} {self.pricing} ${self.usd_per_hour}/h"

    @property
    def usd_per_month(self):
        return self.usd_per_hour * 730  # the usual cloud month of 730 hours
