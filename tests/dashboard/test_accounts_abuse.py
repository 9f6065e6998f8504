"""Log-in and mail throttles, answers that never tell whether an email has an account, and
invitations that change nothing until the invitee accepts them."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

from accounts.models import Invitation, Membership, Role

from .conftest import login_as

SIGNUP = {"team_name": "T", "password1": "a-long-pass-phrase", "password2": "a-long-pass-phrase"}


@pytest.fixture(autouse=True)
def _locmem_mail(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def login(client, email, password, addr="10.0.0.1"):
    return client.post(reverse("accounts:login"), {"username": email, "password": password}, REMOTE_ADDR=addr)


# --- log-in throttle ------------------------------------------------------------------------------


def test_account_is_locked_after_ten_failures_even_for_the_right_password(client, tenant):
    statuses = [login(client, "owner@example.com", f"wrong-{i}", addr=f"10.0.0.{i}").status_code for i in range(10)]
    assert statuses == [200] * 10  # form errors
    response = login(client, "owner@example.com", "pw-for-tests-123", addr="10.9.9.9")
    assert response.status_code == 200 and b"Too many failed log-ins" in response.content
    assert "_auth_user_id" not in client.session


def test_one_client_address_is_throttled_across_accounts(client, tenant):
    for i in range(50):
        login(client, f"nobody{i}@example.com", "guess")
    response = login(client, "owner@example.com", "pw-for-tests-123")
    assert b"Too many failed log-ins" in response.content and "_auth_user_id" not in client.session
    assert login(client, "owner@example.com", "pw-for-tests-123", addr="10.0.0.2").status_code == 302


def test_admin_login_is_throttled_too(client, tenant):
    tenant.owner.is_staff = tenant.owner.is_superuser = True
    tenant.owner.save()
    for i in range(10):
        client.post("/admin/login/", {"username": "owner@example.com", "password": f"bad{i}"})
    client.post("/admin/login/", {"username": "owner@example.com", "password": "pw-for-tests-123"})
    assert "_auth_user_id" not in client.session


def test_a_successful_login_clears_the_account_counter(client, tenant):
    for i in range(9):
        login(client, "owner@example.com", f"wrong-{i}", addr=f"10.0.1.{i}")
    assert login(client, "owner@example.com", "pw-for-tests-123").status_code == 302
    client.logout()
    login(client, "owner@example.com", "wrong-again")
    assert login(client, "owner@example.com", "pw-for-tests-123").status_code == 302


def test_a_password_reset_ends_the_account_lock_out(client, tenant):
    for i in range(10):
        login(client, "owner@example.com", f"wrong-{i}", addr=f"10.0.4.{i}")
    client.post(reverse("accounts:password_reset"), {"email": "owner@example.com"})
    link = next(line for line in mail.outbox[0].body.splitlines() if "/accounts/reset/" in line)
    form_url = client.get(link.replace("http://testserver", "")).url
    client.post(form_url, {"new_password1": "a-new-pass-phrase", "new_password2": "a-new-pass-phrase"})
    assert login(client, "owner@example.com", "a-new-pass-phrase").status_code == 302


def test_throttle_counters_are_shared_through_the_database_cache(settings, client, tenant):
    settings.CACHES = {**settings.CACHES, "throttle": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "ik_throttle_cache"}}
    from django.core.cache import caches

    caches["throttle"].clear()
    for i in range(10):
        login(client, "owner@example.com", f"wrong-{i}", addr=f"10.0.2.{i}")
    assert b"Too many failed log-ins" in login(client, "owner@example.com", "pw-for-tests-123").content
    caches["throttle"].clear()


# --- password reset -----------------------------------------------------------------------------


def test_reset_mails_are_throttled_per_address(client, tenant):
    responses = [client.post(reverse("accounts:password_reset"), {"email": "owner@example.com"},
                             REMOTE_ADDR=f"10.0.3.{i}") for i in range(20)]
    assert {r.status_code for r in responses} == {302}  # the same answer every time
    assert len(mail.outbox) == 3


def test_reset_mails_are_throttled_per_client(client, tenant, other_tenant):
    for i in range(25):
        client.post(reverse("accounts:password_reset"), {"email": f"user{i}@example.com"})
    client.post(reverse("accounts:password_reset"), {"email": "owner@example.com"})
    assert mail.outbox == []


# --- sign-up ------------------------------------------------------------------------------------


def test_signup_answers_the_same_for_a_new_and_an_existing_email(client, tenant):
    new = client.post(reverse("accounts:signup"), {"email": "new@example.com", **SIGNUP})
    taken = client.post(reverse("accounts:signup"), {"email": "owner@example.com", **SIGNUP})
    assert (new.status_code, new["Location"].split("?")[0]) == (taken.status_code, taken["Location"].split("?")[0])
    assert "_auth_user_id" not in client.session
    to_owner = next(m for m in mail.outbox if m.to == ["owner@example.com"])
    assert "already has one" in to_owner.body and "/accounts/signup/confirm/" not in to_owner.body
    assert tenant.owner.check_password("pw-for-tests-123")  # nothing changed for the owner


def test_unconfirmed_signup_cannot_log_in_and_a_used_link_is_refused(client, db):
    client.post(reverse("accounts:signup"), {"email": "ada@example.com", **SIGNUP})
    assert login(client, "ada@example.com", "a-long-pass-phrase").status_code == 200
    link = next(line for line in mail.outbox[0].body.splitlines() if "/confirm/" in line).replace("http://testserver", "")
    assert client.get(link).status_code == 200 and "_auth_user_id" not in client.session  # a prefetch does nothing
    assert client.post(link).status_code == 302
    client.logout()
    assert client.post(link).status_code == 400


# --- invitations --------------------------------------------------------------------------------


def invite(client, users, email, role="member"):
    return login_as(client, users, "admin").post(reverse("accounts:member_invite", kwargs={"team": "acme"}),
                                                 {"email": email, "role": role}, follow=True)


def accept_link() -> str:
    line = next(line for line in mail.outbox[-1].body.splitlines() if "/invitations/" in line)
    return line.replace("http://testserver", "")


def test_invite_answers_the_same_for_existing_and_new_emails(client, tenant, users, other_tenant):
    existing = invite(client, users, "outsider@example.com")
    new = invite(client, users, "stranger@example.com")
    messages = [[str(m).replace(email, "X") for m in r.context["messages"]]
                for r, email in ((existing, "outsider@example.com"), (new, "stranger@example.com"))]
    assert messages[0] == messages[1] and existing.status_code == new.status_code == 200
    assert not get_user_model().objects.filter(email="stranger@example.com").exists()


def test_invite_adds_nobody_until_the_invitee_accepts(client, tenant, users, other_tenant):
    invite(client, users, "outsider@example.com")
    link = accept_link()
    assert not Membership.objects.filter(team=tenant.team, user=other_tenant.owner).exists()
    client.logout()
    client.force_login(other_tenant.owner)
    assert client.get(link).status_code == 200
    assert client.post(link).status_code == 302
    assert Membership.objects.get(team=tenant.team, user=other_tenant.owner).role == Role.MEMBER
    assert client.post(link).status_code == 404  # used


def test_only_the_invited_email_can_accept(client, tenant, users, other_tenant):
    invite(client, users, "outsider@example.com")
    link = accept_link()
    client.logout()
    client.force_login(users["viewer"])
    assert client.post(link).status_code == 403
    assert Invitation.objects.get().accepted_at is None
    assert not Membership.objects.filter(team=tenant.team, user=other_tenant.owner).exists()


def test_new_invitee_chooses_a_password_and_joins(client, tenant, users):
    invite(client, users, "new@example.com", role="viewer")
    link = accept_link()
    client.logout()
    response = client.post(link, {"password1": "a-long-pass-phrase", "password2": "a-long-pass-phrase"})
    user = get_user_model().objects.get(email="new@example.com")
    assert response.status_code == 302 and user.check_password("a-long-pass-phrase")
    assert Membership.objects.get(team=tenant.team, user=user).role == Role.VIEWER


def test_withdrawn_or_unknown_invitation_is_refused(client, tenant, users):
    invite(client, users, "new@example.com")
    link = accept_link()
    client.post(reverse("accounts:invitation_revoke", kwargs={"team": "acme", "pk": Invitation.objects.get().pk}))
    client.logout()
    assert client.get(link).status_code == 404
    assert client.get("/invitations/not-a-secret/").status_code == 404
