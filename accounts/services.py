"""Writes and credential checks for accounts (HackSoft-style `<entity>_<action>` functions)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from inferencekey_web.lib import credentials
from inferencekey_web.lib.slugs import canonical_slug

from .models import ALL_SDK_SCOPES, DataKey, Membership, Project, Role, SdkToken, Team

# last_used_at is informational: write it at most once a minute per credential, not per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def unique_slug(base: str, taken) -> str:
    slug = canonical_slug(base)[:55] or "project"
    candidate, n = slug, 1
    while taken(candidate):
        n += 1
        candidate = f"{slug}-{n}"
    return candidate


def team_create(*, name: str, owner, slug: str | None = None) -> Team:
    with transaction.atomic():
        team = Team.objects.create(
            name=name, slug=slug or unique_slug(name, lambda s: Team.objects.filter(slug=s).exists())
        )
        Membership.objects.create(team=team, user=owner, role=Role.OWNER)
    return team


def project_create(*, team: Team, name: str, slug: str | None = None) -> Project:
    slug = canonical_slug(slug) if slug else unique_slug(name, lambda s: team.projects.filter(slug=s).exists())
    return Project.objects.create(team=team, name=name, slug=slug)


@dataclass(frozen=True)
class Issued:
    """A freshly minted credential: `value` is shown once and never stored."""

    record: SdkToken | DataKey
    value: str


def sdk_token_create(*, project: Project, name: str = "", scopes=None, created_by=None, expires_at=None) -> Issued:
    minted = credentials.mint(credentials.SDK_PREFIX)
    record = SdkToken.objects.create(
        project=project,
        name=name,
        scopes=list(scopes) if scopes else list(ALL_SDK_SCOPES),
        lookup_id=minted.lookup_id,
        secret_hash=minted.secret_hash,
        created_by=created_by,
        expires_at=expires_at,
    )
    return Issued(record, minted.value)


def data_key_create(
    *, project: Project, name: str = "", workloads=None, created_by=None, expires_at=None
) -> Issued:
    minted = credentials.mint(credentials.LIVE_PREFIX)
    with transaction.atomic():
        record = DataKey.objects.create(
            project=project,
            name=name,
            all_workloads=not workloads,
            lookup_id=minted.lookup_id,
            secret_hash=minted.secret_hash,
            created_by=created_by,
            expires_at=expires_at,
        )
        if workloads:
            record.workloads.set(workloads)
    return Issued(record, minted.value)


def credential_revoke(*, credential: SdkToken | DataKey) -> None:
    type(credential).objects.filter(pk=credential.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def lookup(model, value: str):
    """The active credential of `model` matching `value`, or None. One indexed query."""
    parsed = credentials.parse(value)
    if not parsed or parsed[0] != model.PREFIX:
        return None
    record = model.objects.active().select_related("project", "project__team").filter(lookup_id=parsed[1]).first()
    if record is None or not credentials.matches(value, record.secret_hash):
        return None
    now = timezone.now()
    if record.last_used_at is None or now - record.last_used_at > LAST_USED_RESOLUTION:
        model.objects.filter(pk=record.pk).update(last_used_at=now)
        record.last_used_at = now
    return record


def user_get_or_create(*, email: str):
    User = get_user_model()
    email = email.strip().lower()
    try:
        user, _ = User.objects.get_or_create(username=email, defaults={"email": email})
    except IntegrityError:
        user = User.objects.get(username=email)
    return user


# --- dashboard: projects, team and members ------------------------------------------------


class LastOwner(Exception):
    """The team would be left without an owner."""


class AlreadyMember(Exception):
    pass


def project_rename(*, project: Project, name: str, slug: str | None = None) -> Project:
    """Rename a project; a new slug changes its URLs (and the SDK's `project=`), so it is optional."""
    project.name = name
    fields = ["name"]
    if slug and canonical_slug(slug) != project.slug:
        project.slug = canonical_slug(slug)
        fields.append("slug")
    project.save(update_fields=fields)
    return project


def team_rename(*, team: Team, name: str) -> Team:
    team.name = name
    team.save(update_fields=["name"])
    return team


@dataclass(frozen=True)
class Invited:
    membership: Membership
    created_user: bool  # True: a new account was made and a "set your password" email was sent


def membership_invite(*, team: Team, email: str, role: str, invited_by=None, set_password_url=None) -> Invited:
    """Add `email` to `team`. An existing account is added as is; otherwise an account with an
    unusable password is created and `set_password_url(user)` is emailed so they can choose one."""
    from django.core.mail import send_mail

    email = email.strip().lower()
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.filter(username=email).first() or User.objects.filter(email__iexact=email).first()
        created = user is None
        if created:
            user = User(username=email, email=email)
            user.set_unusable_password()
            user.save()
        if Membership.objects.filter(team=team, user=user).exists():
            raise AlreadyMember(email)
        membership = Membership.objects.create(team=team, user=user, role=role)
    if created and set_password_url is not None:
        inviter = getattr(invited_by, "email", "") or "A teammate"
        send_mail(
            subject=f"You were invited to {team.name} on InferenceKey",
            message=(f"{inviter} added you to the team {team.name} as {Role(role).label.lower()}.\n\n"
                     f"Choose a password to sign in:\n{set_password_url(user)}\n"),
            from_email=None,
            recipient_list=[email],
        )
    return Invited(membership, created)


def _lock_owners(team: Team) -> list[int]:
    # Lock the owner rows so two owners demoting each other at once cannot both succeed.
    return list(Membership.objects.select_for_update().filter(team=team, role=Role.OWNER).values_list("pk", flat=True))


def membership_role_change(*, membership: Membership, role: str) -> Membership:
    with transaction.atomic():
        owners = _lock_owners(membership.team)
        if role != Role.OWNER and owners == [membership.pk]:
            raise LastOwner("the last owner cannot be demoted; make someone else owner first")
        Membership.objects.filter(pk=membership.pk).update(role=role)
    membership.role = role
    return membership


def membership_remove(*, membership: Membership) -> None:
    with transaction.atomic():
        owners = _lock_owners(membership.team)
        if owners == [membership.pk]:
            raise LastOwner("the last owner cannot leave or be removed; make someone else owner first")
        membership.delete()
