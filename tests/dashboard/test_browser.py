"""The dashboard in a real browser: Debian's Chromium driven by Playwright against the live server.

Covers what only a browser shows: htmx swaps (form refresh, schedule preview, revoke), the copy
button, the secret shown once, and what a viewer can and cannot do."""
from __future__ import annotations

import os
import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from accounts import services as account_services
from accounts.models import Membership, Role
from workloads import services as workload_services
from workloads.models import Phase, ReadinessEvent, Workload

from ..specs import vllm_spec
from .conftest import CHROMIUM

# Playwright's sync API runs an event loop in this thread; Django's ORM refuses to run under one.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

PASSWORD = "a-long-pass-phrase"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed"),
]


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def make_user(email: str, team=None, role: str = Role.OWNER):
    user = get_user_model().objects.create_user(username=email, email=email, password=PASSWORD)
    if team is None:
        team = account_services.team_create(name="Acme", owner=user, slug="acme")
        account_services.project_create(team=team, name="Demo", slug="demo")
    else:
        Membership.objects.create(team=team, user=user, role=role)
    return user, team


def log_in(page, email: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", email)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/t/"))


def field_error(page, field: str):
    return page.locator(f'[data-field-error="{field}"]')


def test_signup_project_and_workload_lifecycle(page):
    page.goto("/accounts/signup/")
    page.fill("#id_email", "ada@example.com")
    page.fill("#id_team_name", "Analytical")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    page.locator("#signup-sent").wait_for()  # the same page whether or not the email has an account
    page.goto(next(line for line in mail.outbox[-1].body.splitlines() if "/accounts/signup/confirm/" in line))
    page.click("#confirm-signup")
    page.get_by_text("No projects yet").wait_for()

    page.fill("#id_name", "Demo")
    page.click("text=Create project")
    page.get_by_text("No workloads yet").wait_for()

    page.click("#new-workload")
    page.fill("#id_name", "Support Bot")
    assert page.get_attribute("#id_slug", "placeholder") == "support-bot"  # previewed as the name is typed
    page.fill("#id_model_name", "meta-llama/Llama-3.1-8B-Instruct")
    page.click("#save-workload")  # no command: refused, the error is on that field, worded with its label
    assert field_error(page, "command").inner_text().startswith("Command is required")
    assert page.evaluate("document.activeElement.id") == "id_command"  # focus moved to it
    assert field_error(page, "slug").count() == 0 and not Workload.objects.exists()

    page.fill("#id_command", "vllm serve meta-llama/Llama-3.1-8B-Instruct")
    page.click("#save-workload")  # the blank slug is derived from the name
    page.locator("h1", has_text="Support Bot").wait_for()
    assert page.locator("#live [data-state]").first.is_visible()
    assert "WorkloadSpec(" in page.locator("#sdk-snippet").text_content()

    page.click("text=Workloads")
    assert page.locator("#workloads tr[data-slug=support-bot]").is_visible()
    page.fill("input[name=q]", "no-such-thing")  # htmx swaps the table as you type
    page.get_by_text("No workload matches").wait_for()
    page.fill("input[name=q]", "support")
    page.locator("#workloads tr[data-slug=support-bot]").wait_for()

    page.click("text=Support Bot")
    page.click("#edit-workload")
    page.select_option("#id_execution_policy", "scheduled")  # htmx re-renders the form for this policy
    # Type only once the re-rendered form is in place and htmx has wired its triggers (a loaded CI
    # machine once typed into the form between the swap and the wiring, and no preview was asked for).
    page.wait_for_load_state("networkidle")
    page.locator("#id_window").fill("Mon-Fri 08:00-20:00 Europe/Madrid")
    page.locator("#schedule-preview ol.transitions li").nth(4).wait_for(timeout=20_000)
    page.fill("#id_name", "Support Bot EU")
    page.click("#save-workload")
    page.locator("h1", has_text="Support Bot EU").wait_for()
    workload = Workload.objects.get(slug="support-bot")
    assert workload.execution_policy == "scheduled" and workload.generation == 2

    page.click("#delete-workload")
    page.click("#confirm-delete")
    page.get_by_text("No workloads yet").wait_for()
    assert not Workload.objects.exists()


def test_register_worker_shows_join_command(page):
    make_user("admin@example.com")
    log_in(page, "admin@example.com")
    page.click("text=Workers")
    page.get_by_text("No private workers yet").wait_for()
    page.click("#register-worker")
    page.fill("#id_name", "gpu-box-1")
    page.click("text=Create join command")
    command = page.locator("#agent-command").text_content()
    assert "inferencekey-agent.pyz --server" in command and "IK_JOIN_TOKEN=ik_join_" in command
    page.click("text=Copy")
    page.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == command


def test_api_key_is_shown_once_then_only_its_prefix_and_can_be_revoked(page):
    make_user("admin@example.com")
    log_in(page, "admin@example.com")
    page.goto("/t/acme/p/demo/keys/")
    page.get_by_text("No API keys yet").wait_for()
    page.fill("#id_name", "support app")
    page.click("text=Create key")
    secret = page.locator("#secret-value").input_value()
    assert secret.startswith("ik_live_")

    page.goto("/t/acme/p/demo/keys/")
    assert secret not in page.content()
    row = page.locator("#credentials tbody tr").first
    assert secret[:16] in row.inner_text()  # ik_live_ + the 8-hex lookup id

    page.once("dialog", lambda dialog: dialog.accept())  # hx-confirm
    row.get_by_role("button", name="Revoke").click()
    page.locator('#credentials [data-state="revoked"]').wait_for()


def test_invite_member(page):
    make_user("owner@example.com")
    log_in(page, "owner@example.com")
    page.click("text=Members")
    page.fill("#id_email", "newbie@example.com")
    page.select_option("#id_role", "member")
    page.get_by_role("button", name="Invite", exact=True).click()
    page.get_by_text("Invitation sent to newbie@example.com").wait_for()
    assert page.locator('tr[data-invitation="newbie@example.com"]').is_visible()  # pending until accepted
    assert page.locator('tr[data-member="newbie@example.com"]').count() == 0


def test_viewer_sees_no_edit_controls_and_a_forged_edit_is_refused(page):
    _, team = make_user("owner@example.com")
    make_user("viewer@example.com", team=team, role=Role.VIEWER)
    workload = workload_services.workload_create(project=team.projects.get(), data=vllm_spec())
    log_in(page, "viewer@example.com")
    page.goto("/t/acme/p/demo/workloads/support-bot/")
    page.locator("h1", has_text="Support Bot").wait_for()
    assert page.locator("#edit-workload").count() == 0 and page.locator("#delete-workload").count() == 0
    ReadinessEvent.objects.create(workload=workload, generation=1, phase=Phase.PROVISIONING, message="Placed on box-7")
    page.locator("#live", has_text="Placed on box-7").wait_for()  # the timeline polls; no reload
    page.goto("/t/acme/p/demo/workloads/")
    assert page.locator("#new-workload").count() == 0

    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post("/t/acme/p/demo/workloads/support-bot/edit/", headers={"X-CSRFToken": csrf},
                                 form={"name": "Hacked", "slug": "support-bot", "model_name": "m", "backend": "ollama"})
    assert response.status == 403 and "Not allowed" in response.text()
    workload.refresh_from_db()
    assert workload.name == "Support Bot"


def test_workload_form_works_without_javascript(browser, live_server, catalog):
    make_user("owner@example.com")
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    log_in(page, "owner@example.com")
    page.goto("/t/acme/p/demo/workloads/-/new/")
    page.select_option("#id_backend", "ollama")
    page.select_option("#id_execution_policy", "autoscaling")
    page.click("text=Show the fields for these choices")  # the server re-renders the form for these choices
    assert page.locator("#id_command").count() == 0
    page.fill("#id_name", "Embedder")
    page.fill("#id_slug", "embedder")
    page.fill("#id_model_name", "nomic-embed-text")
    page.fill("#id_max_workers", "2")
    page.fill("#id_max_hourly_cost_usd", "3")
    page.check('input[name=gpu_pool][value="NVIDIA L40S"]')
    page.click("#save-workload")
    page.locator("h1", has_text="Embedder").wait_for()
    assert Workload.objects.get(slug="embedder").policy["gpu_pool"] == ["NVIDIA L40S"]
    context.close()


# --- issue 7: live refresh, secrets, expired sessions, errors, contrast, theme -------------------------


def _workload_with_a_long_log(team):
    from workers.models import Replica, Worker

    workload = workload_services.workload_create(project=team.projects.get(), data=vllm_spec())
    worker = Worker.objects.create(team=team, name="box-1", state=Worker.State.ONLINE)
    log = "\n".join(f"engine line {i}" for i in range(200))
    replica = Replica.objects.create(workload=workload, worker=worker, state=Replica.State.STARTING, log_tail=log)
    return workload, replica


def test_live_refresh_keeps_the_log_open_and_scrolled_and_events_open(page):
    _, team = make_user("owner@example.com")
    workload, replica = _workload_with_a_long_log(team)
    log_in(page, "owner@example.com")
    page.goto("/t/acme/p/demo/workloads/support-bot/")
    page.click(f"#log-details-{replica.id} > summary")
    page.click("#events-details > summary")
    page.eval_on_selector(f"#log-{replica.id}", "el => { el.scrollTop = 400; }")
    ReadinessEvent.objects.create(workload=workload, generation=1, phase=Phase.BOOTSTRAPPING, message="Loading weights")
    page.locator("#live", has_text="Loading weights").wait_for()  # the section was swapped by the poll
    assert page.eval_on_selector(f"#log-details-{replica.id}", "el => el.open")
    assert page.eval_on_selector("#events-details", "el => el.open")
    assert page.eval_on_selector(f"#log-{replica.id}", "el => el.scrollTop") == 400


def test_reloading_after_creating_a_token_creates_no_other(page):
    from accounts.models import SdkToken

    make_user("admin@example.com")
    log_in(page, "admin@example.com")
    page.goto("/t/acme/p/demo/tokens/")
    page.fill("#id_name", "ci")
    page.click("text=Create token")
    assert page.locator("#secret-value").input_value().startswith("ik_sdk_")
    page.reload()
    assert SdkToken.objects.filter(name="ci").count() == 1 and page.locator("#secret-value").count() == 0


def test_expired_session_sends_the_page_to_login_instead_of_swapping_it_in(page):
    _, team = make_user("owner@example.com")
    workload_services.workload_create(project=team.projects.get(), data=vllm_spec())
    log_in(page, "owner@example.com")
    page.goto("/t/acme/p/demo/workloads/support-bot/")
    page.context.clear_cookies()  # the session expires; the next poll is anonymous
    page.wait_for_url(re.compile(r"/accounts/login/\?next=%2Ft%2Facme%2Fp%2Fdemo%2Fworkloads%2Fsupport-bot%2F"))
    assert page.locator("#live").count() == 0


def test_test_endpoint_send_shows_a_network_error(page):
    _, team = make_user("owner@example.com")
    workload_services.workload_create(project=team.projects.get(), data=vllm_spec())
    log_in(page, "owner@example.com")
    page.goto("/t/acme/p/demo/workloads/support-bot/")
    page.route("**/test/", lambda route: route.abort("internetdisconnected"))
    page.get_by_role("button", name="Send").click()
    page.locator("#net-error", has_text="Could not reach the server").wait_for()


def _contrast(rgb_a: str, rgb_b: str) -> float:
    def luminance(rgb: str) -> float:
        channels = [int(c) / 255 for c in re.findall(r"\d+", rgb)[:3]]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(rgb_a), luminance(rgb_b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_badge_tone_meets_wcag_aa_contrast(page, theme):
    make_user("owner@example.com")
    log_in(page, "owner@example.com")
    page.evaluate(f"localStorage.setItem('theme', '{theme}')")
    page.goto("/t/acme/gpus/")
    tones = page.evaluate("""() => ['ok', 'busy', 'warn', 'bad', 'idle'].map(tone => {
        const el = document.createElement('span');
        el.className = 'badge badge-' + tone; el.textContent = tone; document.querySelector('main').appendChild(el);
        const style = getComputedStyle(el);
        return [tone, style.color, style.backgroundColor];
    })""")
    ratios = {tone: round(_contrast(color, background), 2) for tone, color, background in tones}
    assert all(ratio >= 4.5 for ratio in ratios.values()), ratios


def test_saved_dark_theme_is_applied_without_waiting_for_the_deferred_script(page):
    make_user("owner@example.com")
    log_in(page, "owner@example.com")
    page.evaluate("localStorage.setItem('theme', 'dark')")
    page.route("**/js/app.js", lambda route: route.abort())  # only theme.js, in <head>, can apply it
    page.goto("/t/acme/")
    assert page.evaluate("document.documentElement.getAttribute('data-theme')") == "dark"
