"""Writes and credential checks for accounts (HackSoft-style `<entity>_<action>` functions)."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core import signing
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from inferencekey_web.lib import credentials
from inferencekey_web.lib.slugs import canonical_slug

from . import throttle
from .models import ALL_SDK_SCOPES, DataKey, Invitation, Membership, Project, Role, SdkToken, Team

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


INVITATION_TTL = timedelta(days=7)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def _user_by_email(email: str):
    User = get_user_model()
    return User.objects.filter(username=email).first() or User.objects.filter(email__iexact=email).first()


def invitation_create(*, team: Team, email: str, role: str, invited_by=None, accept_url, client: str = "") -> Invitation:
    """Invite `email` to `team`: a pending invitation, emailed as a link; nothing changes for the
    invitee until they accept it (`invitation_accept`). Whether the address has an account is not
    told to the inviter. A newer invitation replaces a pending one for the same address."""
    email = email.strip().lower()
    user = _user_by_email(email)
    if user is not None and Membership.objects.filter(team=team, user=user).exists():
        raise AlreadyMember(email)  # the inviter sees the member list anyway: nothing revealed
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        Invitation.objects.filter(team=team, email=email, accepted_at__isnull=True).delete()
        invitation = Invitation.objects.create(
            team=team, email=email, role=role, secret_hash=_secret_hash(secret), invited_by=invited_by,
            expires_at=timezone.now() + INVITATION_TTL)
    if throttle.consume("mail_address", email):
        inviter = getattr(invited_by, "email", "") or "A teammate"
        send_mail(
            subject=f"You were invited to {team.name} on InferenceKey",
            message=(f"{inviter} invited you to the team {team.name} as {Role(role).label.lower()}.\n\n"
                     f"Open this link to accept (valid {INVITATION_TTL.days} days; you will log in, or choose a "
                     f"password if you have no account yet):\n{accept_url(secret)}\n\n"
                     f"If you do not want to join, ignore this email."),
            from_email=None,
            recipient_list=[email],
        )
    return invitation


def invitation_get(secret: str) -> Invitation | None:
    """The pending invitation this link secret opens, or None (unknown, used or expired)."""
    invitation = Invitation.objects.select_related("team").filter(secret_hash=_secret_hash(secret or "")).first()
    return invitation if invitation is not None and invitation.is_pending else None


class WrongInvitee(Exception):
    """The invitation is for another email address than the logged-in user's."""


def invitation_accept(*, invitation: Invitation, user) -> Membership:
    """Join the team as the invited role; only the invited email may accept."""
    if (user.email or user.get_username()).strip().lower() != invitation.email:
        raise WrongInvitee(invitation.email)
    with transaction.atomic():
        taken = Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).update(accepted_at=timezone.now())
        membership = Membership.objects.filter(team=invitation.team, user=user).first()
        if taken and membership is None:
            membership = Membership.objects.create(team=invitation.team, user=user, role=invitation.role)
    if membership is None:
        raise Invitation.DoesNotExist("this invitation was already used")
    return membership


def invitation_revoke(*, invitation: Invitation) -> None:
    invitation.delete()


# --- sign-up --------------------------------------------------------------------------------


SIGNUP_SALT = "accounts.signup"
SIGNUP_MAX_AGE = timedelta(days=3)


def signup_request(*, email: str, password: str, team_name: str, confirm_url, login_url: str, reset_url: str,
                   client: str = "") -> None:
    """Start a sign-up without telling the caller whether `email` has an account: a new address
    gets an inactive account and a confirmation link; an existing account's owner gets an email
    saying someone tried (log in or reset the password instead). Mails are throttled per address
    and per client."""
    email = email.strip().lower()
    User = get_user_model()
    user = _user_by_email(email)
    pending = user is not None and not user.is_active and not user.memberships.exists()
    if user is None or pending:
        if user is None:
            user = User(username=email, email=email, is_active=False)
        user.set_password(password)
        try:
            user.save()
        except IntegrityError:  # a concurrent sign-up for the same address
            return
        token = signing.dumps({"u": user.pk, "t": team_name, "h": default_token_generator.make_token(user)},
                              salt=SIGNUP_SALT)
        subject, body = ("Confirm your InferenceKey account",
                         f"Open this link to finish creating your account:\n{confirm_url(token)}\n\n"
                         f"If you did not sign up, ignore this email.")
    else:
        subject, body = ("Someone tried to sign up with your email",
                         f"Someone (maybe you) tried to create an InferenceKey account with this address, which "
                         f"already has one. Log in: {login_url}\nForgot the password? {reset_url}\n\n"
                         f"If it was not you, nothing changed and you can ignore this email.")
    if throttle.consume("mail_client", client) and throttle.consume("mail_address", email):
        send_mail(subject=subject, message=body, from_email=None, recipient_list=[email])


class SignupLinkInvalid(Exception):
    pass


def signup_confirm(*, token: str):
    """Activate the account a confirmation link names and create its team; returns (user, team)."""
    try:
        data = signing.loads(token, salt=SIGNUP_SALT, max_age=SIGNUP_MAX_AGE)
    except signing.BadSignature:
        raise SignupLinkInvalid("this link is invalid or expired") from None
    user = get_user_model().objects.filter(pk=data.get("u")).first()
    if user is None or user.is_active or not default_token_generator.check_token(user, data.get("h", "")):
        raise SignupLinkInvalid("this link is invalid, expired or already used")
    email = user.email
    with transaction.atomic():
        if not type(user).objects.filter(pk=user.pk, is_active=False).update(is_active=True):
            raise SignupLinkInvalid("this link was already used")
        user.is_active = True
        team = team_create(name=data.get("t") or f"{email.split('@')[0]}'s team", owner=user)
    return user, team


def account_create_for_invitation(*, invitation: Invitation, password: str):
    """An invitee without an account chooses a password: the emailed link proved the address."""
    User = get_user_model()
    try:
        user = User.objects.create_user(username=invitation.email, email=invitation.email, password=password)
    except IntegrityError:
        raise AccountExists(invitation.email) from None
    return user


class AccountExists(Exception):
    pass


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
