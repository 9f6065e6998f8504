"""Dashboard forms for accounts: sign-up, log-in by email, teams, projects, members, credentials."""
from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.utils import timezone

from inferencekey_web.lib.slugs import MAX_SLUG_LENGTH, canonical_slug

from . import throttle
from .models import ROLE_RANK, Role, SdkScope


class SignupForm(forms.Form):
    email = forms.EmailField()
    team_name = forms.CharField(label="Team name", max_length=120, required=False,
                                help_text="Your team owns projects, workers and keys. You can invite others later.")
    password1 = forms.CharField(label="Password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))
    password2 = forms.CharField(label="Password again", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean_email(self) -> str:
        # Whether the address has an account is never said here (see services.signup_request).
        return self.cleaned_data["email"].strip().lower()

    def clean(self):
        cleaned = super().clean()
        p1, p2 = cleaned.get("password1"), cleaned.get("password2")
        if p1 and p2 and p1 != p2:
            self.add_error("password2", "The two passwords differ.")
        elif p1 and cleaned.get("email"):
            user = get_user_model()(username=cleaned["email"], email=cleaned["email"])
            try:
                password_validation.validate_password(p1, user)
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned


class EmailAuthenticationForm(AuthenticationForm):
    """Log in with the email address (it is the username), case-insensitively."""

    username = forms.CharField(label="Email", widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"}))

    def clean_username(self) -> str:
        return self.cleaned_data["username"].strip().lower()

    def clean(self):
        # Refused before the password is checked, so a throttled guess learns nothing.
        wait = throttle.login_retry_after(self.request, self.cleaned_data.get("username") or "")
        if wait:
            raise forms.ValidationError(
                f"Too many failed log-ins for this account or from your network. Try again in "
                f"{max(1, round(wait / 60))} minute(s), or reset your password.", code="throttled")
        return super().clean()


class InvitedUserPasswordResetForm(PasswordResetForm):
    """Django skips accounts without a usable password; invited users have none until they set
    one, and "forgot password" is how they recover a lost invitation email."""

    def get_users(self, email):
        User = get_user_model()
        return (u for u in User._default_manager.filter(email__iexact=email, is_active=True))

    def save(self, *args, request=None, **kwargs):
        # Same page whatever happens; past the limits the mail is just not sent.
        email = self.cleaned_data["email"]
        if throttle.consume("mail_client", throttle.client_address(request)) and throttle.consume("mail_address", email):
            super().save(*args, request=request, **kwargs)


class InvitationSignupForm(forms.Form):
    """An invitee without an account chooses a password on the invitation page."""

    password1 = forms.CharField(label="Password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))
    password2 = forms.CharField(label="Password again", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def __init__(self, *args, email: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self):
        cleaned = super().clean()
        p1, p2 = cleaned.get("password1"), cleaned.get("password2")
        if p1 and p2 and p1 != p2:
            self.add_error("password2", "The two passwords differ.")
        elif p1:
            try:
                password_validation.validate_password(p1, get_user_model()(username=self.email, email=self.email))
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned


class TeamForm(forms.Form):
    name = forms.CharField(max_length=120)


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=120)
    slug = forms.CharField(max_length=120, required=False,
                           help_text="Used in URLs and by the SDK (project=…); derived from the name when empty.")

    def __init__(self, *args, team=None, instance=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.team, self.instance = team, instance

    def clean_slug(self) -> str:
        raw = self.cleaned_data.get("slug") or ""
        if not raw:
            return ""
        slug = canonical_slug(raw)
        if not slug or len(slug) > MAX_SLUG_LENGTH:
            raise forms.ValidationError(f"Use letters, digits and dashes (at most {MAX_SLUG_LENGTH}).")
        taken = self.team.projects.filter(slug=slug)
        if self.instance is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise forms.ValidationError(f"The team already has a project {slug!r}.")
        return slug


def _roles_up_to(role: str) -> list[tuple[str, str]]:
    return [(value, label) for value, label in Role.choices if ROLE_RANK[Role(value)] <= ROLE_RANK[Role(role)]]


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def __init__(self, *args, inviter_role: str = Role.ADMIN, **kwargs):
        super().__init__(*args, **kwargs)
        # Nobody hands out more power than they hold.
        self.fields["role"].choices = _roles_up_to(inviter_role)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)

    def __init__(self, *args, changer_role: str = Role.ADMIN, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = _roles_up_to(changer_role)


EXPIRY_CHOICES = [("", "Never"), ("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year")]


class CredentialForm(forms.Form):
    name = forms.CharField(max_length=120, required=False, help_text="What uses it, e.g. 'CI deploy' or 'support app'.")
    expires_in_days = forms.ChoiceField(label="Expires", choices=EXPIRY_CHOICES, required=False)

    def expires_at(self):
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + timedelta(days=int(days)) if days else None


class SdkTokenForm(CredentialForm):
    scopes = forms.MultipleChoiceField(choices=SdkScope.choices, widget=forms.CheckboxSelectMultiple,
                                       initial=[SdkScope.WORKLOAD_READ, SdkScope.WORKLOAD_WRITE])


class DataKeyForm(CredentialForm):
    all_workloads = forms.ChoiceField(label="Scope", widget=forms.RadioSelect, initial="all", choices=[
        ("all", "Every workload of the project, present and future"), ("some", "Only the workloads chosen below")])
    workloads = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args, project=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        self.fields["workloads"].choices = list(project.workloads.values_list("id", "slug")) if project else []

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("all_workloads") == "some" and not cleaned.get("workloads"):
            self.add_error("workloads", "Choose at least one workload, or give the key the whole project.")
        return cleaned

    def chosen_workloads(self):
        if self.cleaned_data.get("all_workloads") != "some":
            return None
        return list(self.project.workloads.filter(pk__in=self.cleaned_data["workloads"]))
