"""Teams (tenants), memberships with roles, projects, and the two credential families.

An SDK token (`ik_sdk_`) drives the control plane of one project; a data key (`ik_live_`) calls
inference on chosen workloads of one project, or on all of them. Only hashes are stored.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from inferencekey_web.lib.ids import new_key_id, new_project_id, new_team_id


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Team(models.Model):
    """A tenant: the isolation boundary for projects, workers, keys and members."""

    id = models.CharField(primary_key=True, max_length=32, default=new_team_id, editable=False)
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=63, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="teams")

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="uniq_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"

    def can(self, role: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


class Project(models.Model):
    """Groups workloads, SDK tokens and data keys. Its slug is unique within its team."""

    id = models.CharField(primary_key=True, max_length=32, default=new_project_id, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=120)
    slug = models.CharField(max_length=63)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "slug"], name="uniq_project_slug_per_team")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.team.slug}/{self.slug}"


class CredentialQuerySet(models.QuerySet):
    def active(self):
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class Credential(models.Model):
    """Common columns of SDK tokens and data keys: public lookup id, hash, lifecycle."""

    id = models.CharField(primary_key=True, max_length=32, default=new_key_id, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    name = models.CharField(max_length=120, blank=True)
    lookup_id = models.CharField(max_length=8, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = CredentialQuerySet.as_manager()
    PREFIX = ""

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def display(self) -> str:
        return f"{self.PREFIX}{self.lookup_id}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())

    def __str__(self) -> str:
        return self.display


class SdkScope(models.TextChoices):
    WORKLOAD_READ = "workload:read", "workload:read"
    WORKLOAD_WRITE = "workload:write", "workload:write"
    ASSIGNMENT_WRITE = "assignment:write", "assignment:write"


ALL_SDK_SCOPES = [s.value for s in SdkScope]


class SdkToken(Credential):
    """`ik_sdk_…`: control-plane token for one project."""

    PREFIX = "ik_sdk_"
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="sdk_tokens")
    scopes = models.JSONField(default=list)

    class Meta(Credential.Meta):
        abstract = False


class DataKey(Credential):
    """`ik_live_…`: data-plane key for chosen workloads of one project, or the whole project."""

    PREFIX = "ik_live_"
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="data_keys")
    all_workloads = models.BooleanField(default=True)
    workloads = models.ManyToManyField("workloads.Workload", blank=True, related_name="data_keys")

    class Meta(Credential.Meta):
        abstract = False

    def covers(self, workload_id: str) -> bool:
        return self.all_workloads or self.workloads.filter(pk=workload_id).exists()


class Invitation(models.Model):
    """A pending invitation to join a team: nothing changes for the invitee until they accept it,
    logged in as the invited email (the emailed link carries a secret; only its hash is stored)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    secret_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} → {self.team} ({self.role})"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.expires_at > timezone.now()
