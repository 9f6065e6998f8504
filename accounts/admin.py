"""Admin for teams, memberships, projects and credentials. Credentials are minted by the
dashboard or the bootstrap command (the secret is shown once), so the admin can only inspect
and revoke them."""
from __future__ import annotations

from django.contrib import admin
from django.utils import timezone

from .models import DataKey, Invitation, Membership, Project, SdkToken, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "id", "created_at"]
    search_fields = ["slug", "name", "id"]
    readonly_fields = ["id", "created_at"]
    inlines = [MembershipInline]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Inspect and withdraw (delete) invitations; the link's secret is only in the emailed link."""

    list_display = ["email", "team", "role", "created_at", "expires_at", "accepted_at"]
    list_filter = ["role"]
    search_fields = ["email", "team__slug"]
    readonly_fields = ["team", "email", "role", "secret_hash", "invited_by", "created_at", "expires_at", "accepted_at"]

    def has_add_permission(self, request):
        return False


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__email", "user__username", "team__slug"]
    list_select_related = ["user", "team"]
    autocomplete_fields = ["user", "team"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "team", "id", "created_at"]
    list_filter = ["team"]
    search_fields = ["slug", "name", "id", "team__slug"]
    list_select_related = ["team"]
    readonly_fields = ["id", "created_at"]


@admin.action(description="Revoke the selected credentials")
def revoke(modeladmin, request, queryset):
    queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


class CredentialAdmin(admin.ModelAdmin):
    list_display = ["display", "name", "project", "created_by", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at", "expires_at"]
    search_fields = ["lookup_id", "name", "project__slug", "created_by__email"]
    list_select_related = ["project", "project__team", "created_by"]
    readonly_fields = ["id", "project", "lookup_id", "created_by", "created_at", "last_used_at"]
    exclude = ["secret_hash"]
    actions = [revoke]

    def has_add_permission(self, request):
        return False


@admin.register(SdkToken)
class SdkTokenAdmin(CredentialAdmin):
    list_display = CredentialAdmin.list_display + ["scopes"]


@admin.register(DataKey)
class DataKeyAdmin(CredentialAdmin):
    list_display = CredentialAdmin.list_display + ["all_workloads"]
    list_filter = CredentialAdmin.list_filter + ["all_workloads"]
    filter_horizontal = ["workloads"]
