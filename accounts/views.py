"""Dashboard pages for accounts: sign-up and log-in, teams, projects, members, SDK tokens, API keys.

Views parse, call one service, render. Team-scoped views are wrapped in `team_view(role)`
(accounts/permissions.py), which turns a foreign team into 404 and a low role into 403.
"""
from __future__ import annotations

from urllib.parse import quote as urlquote

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from . import services, throttle
from .forms import (
    DataKeyForm,
    EmailAuthenticationForm,
    InvitationSignupForm,
    InvitedUserPasswordResetForm,
    InviteForm,
    ProjectForm,
    RoleForm,
    SdkTokenForm,
    SignupForm,
    TeamForm,
)
from .models import DataKey, Invitation, Membership, Role, SdkToken
from .permissions import (
    MANAGE_CREDENTIALS,
    MANAGE_MEMBERS,
    MANAGE_PROJECTS,
    MANAGE_TEAM,
    team_view,
)

# --- sign-up, log-in, password reset ------------------------------------------------------


def signup(request):
    """Sign-up answers the same whether or not the email has an account: a confirmation link for a
    new address, a "someone tried" note to an existing one (services.signup_request)."""
    if request.user.is_authenticated:
        return redirect("home")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.signup_request(
            email=form.cleaned_data["email"], password=form.cleaned_data["password1"],
            team_name=form.cleaned_data["team_name"],
            confirm_url=lambda token: request.build_absolute_uri(reverse("accounts:signup_confirm", args=[token])),
            login_url=request.build_absolute_uri(reverse("accounts:login")),
            reset_url=request.build_absolute_uri(reverse("accounts:password_reset")),
            client=throttle.client_address(request))
        return redirect(f"{reverse('accounts:signup_sent')}?email={urlquote(form.cleaned_data['email'])}")
    return render(request, "accounts/signup.html", {"form": form})


def signup_sent(request):
    return render(request, "accounts/signup_sent.html", {
        "email": request.GET.get("email", "")[:254], "console_mail": _console_mail()})


def _console_mail() -> bool:
    return settings.EMAIL_BACKEND == "django.core.mail.backends.console.EmailBackend"


@never_cache
def signup_confirm(request, token: str):
    # A POST, so a mail scanner prefetching the link neither uses it nor gets a session.
    if request.method != "POST":
        return render(request, "accounts/signup_confirm.html", {"token": token})
    try:
        user, team = services.signup_confirm(token=token)
    except services.SignupLinkInvalid as exc:
        return render(request, "accounts/signup_confirm.html", {"error": str(exc).capitalize() + "."}, status=400)
    login(request, user)
    messages.success(request, f"Welcome! You own the team {team.name}. Create a project to start.")
    return redirect("accounts:team_home", team=team.slug)


login_view = auth_views.LoginView.as_view(
    template_name="accounts/login.html", authentication_form=EmailAuthenticationForm, redirect_authenticated_user=True
)
logout_view = auth_views.LogoutView.as_view()
password_reset = auth_views.PasswordResetView.as_view(
    template_name="accounts/password_reset.html",
    form_class=InvitedUserPasswordResetForm,
    email_template_name="accounts/email/password_reset.txt",
    subject_template_name="accounts/email/password_reset_subject.txt",
    success_url=reverse_lazy("accounts:password_reset_done"),
)
password_reset_done = auth_views.PasswordResetDoneView.as_view(template_name="accounts/password_reset_done.html")
class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    def form_valid(self, form):
        # Whoever holds the emailed link owns the account: a lock-out from failed log-ins ends here.
        throttle.clear("login_account", self.user.get_username())
        return super().form_valid(form)


password_reset_confirm = PasswordResetConfirmView.as_view(
    template_name="accounts/password_reset_confirm.html", success_url=reverse_lazy("accounts:password_reset_complete")
)
password_reset_complete = auth_views.PasswordResetCompleteView.as_view(
    template_name="accounts/password_reset_complete.html"
)


# --- teams and projects ---------------------------------------------------------------------


@login_required
def team_create(request):
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        team = services.team_create(name=form.cleaned_data["name"], owner=request.user)
        messages.success(request, f"Team {team.name} created.")
        return redirect("accounts:team_home", team=team.slug)
    return render(request, "accounts/team_create.html", {"form": form})


@team_view()
def team_home(request):
    projects = request.team.projects.annotate(workload_count=Count("workloads"))
    return render(request, "accounts/team_home.html", {"projects": projects, "form": ProjectForm(team=request.team)})


@team_view(MANAGE_TEAM)
def team_settings(request):
    form = TeamForm(request.POST or None, initial={"name": request.team.name})
    if request.method == "POST" and form.is_valid():
        services.team_rename(team=request.team, name=form.cleaned_data["name"])
        messages.success(request, "Team renamed.")
        return redirect("accounts:team_settings", team=request.team.slug)
    return render(request, "accounts/team_settings.html", {"form": form})


@team_view(MANAGE_PROJECTS)
def project_create(request):
    form = ProjectForm(request.POST or None, team=request.team)
    if request.method == "POST" and form.is_valid():
        project = services.project_create(team=request.team, name=form.cleaned_data["name"],
                                          slug=form.cleaned_data["slug"] or None)
        messages.success(request, f"Project {project.name} created. Declare its first workload.")
        return redirect("workloads:list", team=request.team.slug, project=project.slug)
    return render(request, "accounts/project_form.html", {"form": form})


@team_view(project=True)
def project_home(request, project):
    return redirect("workloads:list", team=request.team.slug, project=project.slug)


@team_view(MANAGE_PROJECTS, project=True)
def project_settings(request, project):
    form = ProjectForm(request.POST or None, team=request.team, instance=project,
                       initial={"name": project.name, "slug": project.slug})
    if request.method == "POST" and form.is_valid():
        services.project_rename(project=project, name=form.cleaned_data["name"], slug=form.cleaned_data["slug"] or None)
        messages.success(request, "Project renamed.")
        return redirect("accounts:project_settings", team=request.team.slug, project=project.slug)
    return render(request, "accounts/project_form.html", {"form": form, "project": project})


# --- members ----------------------------------------------------------------------------------


def _members_page(request, invite_form=None, status=200):
    memberships = request.team.memberships.select_related("user").order_by("user__email")
    invitations = [i for i in request.team.invitations.all() if i.is_pending] if request.membership.can(Role.ADMIN) else []
    return render(request, "accounts/members.html", {
        "memberships": memberships,
        "invitations": invitations,
        "invite_form": invite_form or InviteForm(inviter_role=request.membership.role),
        "roles": Role.choices,
    }, status=status)


@team_view()
def members(request):
    return _members_page(request)


@require_POST
@team_view(MANAGE_MEMBERS)
def member_invite(request):
    form = InviteForm(request.POST, inviter_role=request.membership.role)
    if not form.is_valid():
        return _members_page(request, form, status=400)
    try:
        invitation = services.invitation_create(
            team=request.team, email=form.cleaned_data["email"], role=form.cleaned_data["role"],
            invited_by=request.user,
            accept_url=lambda secret: request.build_absolute_uri(reverse("accounts:invitation", args=[secret])))
    except services.AlreadyMember:
        form.add_error("email", "Already a member of this team.")
        return _members_page(request, form, status=400)
    # The same words whether or not the address has an account.
    messages.success(request, f"Invitation sent to {invitation.email}. They join the team when they accept it.")
    return redirect("accounts:members", team=request.team.slug)


@require_POST
@team_view(MANAGE_MEMBERS)
def invitation_revoke(request, pk: int):
    invitation = get_object_or_404(Invitation, pk=pk, team=request.team, accepted_at__isnull=True)
    services.invitation_revoke(invitation=invitation)
    messages.success(request, f"Invitation to {invitation.email} withdrawn.")
    return redirect("accounts:members", team=request.team.slug)


@never_cache
def invitation(request, secret: str):
    """The emailed link: accept when logged in as the invited email; otherwise log in, or choose
    a password when the address has no account (the link proves it is theirs)."""
    invitation = services.invitation_get(secret)
    if invitation is None:
        return render(request, "accounts/invitation.html", {"invalid": True}, status=404)
    context = {"invitation": invitation, "login_url": f"{reverse('accounts:login')}?next={urlquote(request.path)}"}
    if request.user.is_authenticated:
        if request.method == "POST":
            try:
                services.invitation_accept(invitation=invitation, user=request.user)
            except services.WrongInvitee:
                return render(request, "accounts/invitation.html", {**context, "wrong_user": True}, status=403)
            except Invitation.DoesNotExist:
                return render(request, "accounts/invitation.html", {"invalid": True}, status=404)
            messages.success(request, f"You joined {invitation.team.name}.")
            return redirect("accounts:team_home", team=invitation.team.slug)
        wrong = (request.user.email or request.user.get_username()).lower() != invitation.email
        return render(request, "accounts/invitation.html", {**context, "wrong_user": wrong}, status=403 if wrong else 200)
    form = InvitationSignupForm(request.POST or None, email=invitation.email)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.account_create_for_invitation(invitation=invitation, password=form.cleaned_data["password1"])
        except services.AccountExists:
            form.add_error(None, "This address already has an account: log in to accept.")
        else:
            login(request, user)
            services.invitation_accept(invitation=invitation, user=user)
            messages.success(request, f"Welcome! You joined {invitation.team.name}.")
            return redirect("accounts:team_home", team=invitation.team.slug)
    return render(request, "accounts/invitation.html", {**context, "form": form}, status=400 if form.errors else 200)


def _target_membership(request, pk: int) -> Membership:
    target = get_object_or_404(Membership.objects.select_related("user"), pk=pk, team=request.team)
    # Only owners touch owners: an admin cannot demote or remove the people above them.
    if target.role == Role.OWNER and not request.membership.can(Role.OWNER):
        raise PermissionDenied("Only an owner can change another owner.")
    return target


@require_POST
@team_view(MANAGE_MEMBERS)
def member_role(request, pk: int):
    target = _target_membership(request, pk)
    form = RoleForm(request.POST, changer_role=request.membership.role)
    if not form.is_valid():
        messages.error(request, "You cannot give that role.")
    else:
        try:
            services.membership_role_change(membership=target, role=form.cleaned_data["role"])
            messages.success(request, f"{target.user.email} is now {Role(target.role).label.lower()}.")
        except services.LastOwner as exc:
            messages.error(request, str(exc).capitalize() + ".")
    return redirect("accounts:members", team=request.team.slug)


@team_view(MANAGE_MEMBERS)
def member_remove(request, pk: int):
    target = _target_membership(request, pk)
    if request.method == "POST":
        return _remove(request, target, f"{target.user.email} was removed from the team.")
    return render(request, "accounts/member_remove.html", {"target": target})


@require_POST
@team_view()
def team_leave(request):
    return _remove(request, request.membership, f"You left {request.team.name}.")


def _remove(request, membership: Membership, done: str):
    try:
        services.membership_remove(membership=membership)
    except services.LastOwner as exc:
        messages.error(request, str(exc).capitalize() + ".")
        return redirect("accounts:members", team=request.team.slug)
    messages.success(request, done)
    if membership.user_id == request.user.id:
        return redirect("home")
    return redirect("accounts:members", team=request.team.slug)


# --- SDK tokens and API keys ------------------------------------------------------------------

ISSUED_SESSION_KEY = "issued_secret"
_CREDENTIALS = {
    "tokens": {"model": SdkToken, "form": SdkTokenForm, "template": "accounts/sdk_tokens.html"},
    "keys": {"model": DataKey, "form": DataKeyForm, "template": "accounts/data_keys.html"},
}


def _credential_form(kind: str, project, data=None):
    form_class = _CREDENTIALS[kind]["form"]
    return form_class(data, project=project) if form_class is DataKeyForm else form_class(data)


def _credentials_page(request, project, kind: str, form=None, issued=None, status=200):
    model = _CREDENTIALS[kind]["model"]
    records = model.objects.filter(project=project).select_related("created_by")
    if model is DataKey:
        records = records.prefetch_related("workloads")
    response = render(request, _CREDENTIALS[kind]["template"], {
        "project": project, "records": records, "form": form or _credential_form(kind, project), "issued": issued,
    }, status=status)
    if issued is not None:
        response["Cache-Control"] = "no-store"  # the secret is in this page, once
    return response


@team_view(project=True)
def sdk_tokens(request, project):
    return _credentials_page(request, project, "tokens", issued=_pop_issued(request, project, "tokens"))


@team_view(project=True)
def data_keys(request, project):
    return _credentials_page(request, project, "keys", issued=_pop_issued(request, project, "keys"))


@never_cache
@team_view(MANAGE_CREDENTIALS, project=True)
def credential_create(request, project, kind: str):
    if request.method != "POST":
        return _credentials_page(request, project, kind)
    form = _credential_form(kind, project, request.POST)
    if not form.is_valid():
        return _credentials_page(request, project, kind, form=form, status=400)
    common = {"project": project, "name": form.cleaned_data["name"], "created_by": request.user,
              "expires_at": form.expires_at()}
    if kind == "tokens":
        issued = services.sdk_token_create(scopes=form.cleaned_data["scopes"], **common)
    else:
        issued = services.data_key_create(workloads=form.chosen_workloads(), **common)
    # Post/redirect/get: a reload of the page showing the secret must not create another one. The
    # value waits in the session for the redirected GET, which shows it once and forgets it.
    request.session[ISSUED_SESSION_KEY] = {"project": str(project.pk), "kind": kind, "value": issued.value}
    return redirect(f"accounts:{'sdk_tokens' if kind == 'tokens' else 'data_keys'}",
                    team=request.team.slug, project=project.slug)


def _pop_issued(request, project, kind: str) -> dict | None:
    """The secret just created for this list, once: the session forgets it as it is read."""
    issued = request.session.get(ISSUED_SESSION_KEY)
    if not issued or issued.get("project") != str(project.pk) or issued.get("kind") != kind:
        return None
    del request.session[ISSUED_SESSION_KEY]
    return issued


@require_POST
@team_view(MANAGE_CREDENTIALS, project=True)
def credential_revoke(request, project, kind: str, pk: str):
    record = get_object_or_404(_CREDENTIALS[kind]["model"], pk=pk, project=project)
    services.credential_revoke(credential=record)
    record.refresh_from_db()
    if request.htmx:
        return render(request, f"{_CREDENTIALS[kind]['template']}#row", {"record": record, "project": project})
    messages.success(request, f"{record.display} revoked.")
    return redirect(f"accounts:{'sdk_tokens' if kind == 'tokens' else 'data_keys'}",
                    team=request.team.slug, project=project.slug)
