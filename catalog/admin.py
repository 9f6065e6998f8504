from __future__ import annotations

from django.contrib import admin

from .models import GpuOffer, GpuType


class GpuOfferInline(admin.TabularInline):
    model = GpuOffer
    extra = 0


@admin.register(GpuType)
class GpuTypeAdmin(admin.ModelAdmin):
    list_display = ["display_name", "vendor", "architecture", "vram_gb", "memory_type", "segment", "compute_capability"]
    list_filter = ["vendor", "architecture", "segment"]
    search_fields = ["display_name", "architecture"]
    inlines = [GpuOfferInline]


@admin.register(GpuOffer)
class GpuOfferAdmin(admin.ModelAdmin):
    list_display = ["gpu_type", "provider", "region", "pricing", "usd_per_hour", "as_of"]
    list_filter = ["provider", "pricing"]
    search_fields = ["gpu_type__display_name", "provider", "region"]
    list_select_related = ["gpu_type"]
