"""The dashboard's layout in a real browser at a phone width (390 px) and a desktop width (1440 px):
no page scrolls sideways, and the collapsed navigation reaches every section.

`IK_SCREENSHOTS=/some/dir` also saves a full-page PNG of every page at both widths, to look at."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from accounts import services as account_services
from workers.models import Gpu, Replica, Worker
from workloads import services as workload_services
from workloads.models import Phase, ReadinessEvent

from ..specs import autoscaling, vllm_spec
from .conftest import CHROMIUM
from .test_browser import log_in, make_user

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed"),
]

WIDTHS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1440, "height": 900}}
SCREENSHOTS = os.environ.get("IK_SCREENSHOTS")
EMAIL = "margaret.hamilton-longname@engineering.example.com"


def filled_team():
    """A team with the long names real teams have: every table has rows, every page has content."""
    user, team = make_user(EMAIL)
    project = team.projects.get()
    worker = Worker.objects.create(team=team, name="gpu-box-with-a-long-hostname-01", state=Worker.State.ONLINE,
                                   hostname="gpu-box-with-a-long-hostname-01.datacenter.example.com")
    gpu = Gpu.objects.create(worker=worker, index=0, name="NVIDIA A100-SXM4-80GB", memory_total_mb=81920)
    workload = workload_services.workload_create(project=project, data=vllm_spec(
        name="Customer support assistant (EU)", model_name="meta-llama/Llama-3.1-70B-Instruct-AWQ-INT4"))
    workload_services.workload_create(project=project, data=vllm_spec(
        name="Nightly batch summariser", slug="nightly", execution_policy="scheduled",
        execution_policy_config={"window": "Mon-Fri 08:00-20:00 Europe/Madrid", "replicas": 1}))
    workload_services.workload_create(project=project, data=vllm_spec(
        name="Elastic", slug="elastic", execution_policy="autoscaling", execution_policy_config=autoscaling()))
    replica = Replica.objects.create(workload=workload, worker=worker, state=Replica.State.READY, port=41234,
                                     message="serving on 127.0.0.1:41234 after a warm-up of 42 s",
                                     log_tail="INFO " + "x" * 300 + "\n" + "\n".join(f"line {i}" for i in range(80)))
    replica.gpus.add(gpu)
    ReadinessEvent.objects.create(workload=workload, generation=1, phase=Phase.PROVISIONING,
                                  message="Placed on gpu-box-with-a-long-hostname-01 with 1 GPU")
    for name in ("support app in production, EU region", "staging"):
        account_services.sdk_token_create(project=project, name=name, created_by=user)
        account_services.data_key_create(project=project, name=name, created_by=user)
    return user, team, project, worker, workload


def dashboard_pages(team, project, worker, workload) -> list[str]:
    t, p = f"/t/{team.slug}", f"/t/{team.slug}/p/{project.slug}"
    membership = team.memberships.get()
    return [
        f"{t}/", f"{t}/settings/", f"{t}/members/", f"{t}/members/{membership.pk}/remove/", f"{t}/projects/new/",
        f"{t}/gpus/", f"{t}/workers/", f"{t}/workers/-/new/", f"{t}/workers/{worker.pk}/",
        f"{t}/workers/{worker.pk}/delete/", "/teams/new/",
        f"{p}/settings/", f"{p}/tokens/", f"{p}/keys/", f"{p}/workloads/", f"{p}/workloads/-/new/",
        f"{p}/workloads/{workload.slug}/", f"{p}/workloads/{workload.slug}/edit/",
        f"{p}/workloads/{workload.slug}/delete/", f"{p}/workloads/nightly/edit/", f"{p}/workloads/elastic/",
        f"{p}/workloads/elastic/edit/", f"{t}/no-such-page/",
    ]


def overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def shoot(page, width: str, path: str) -> None:
    if SCREENSHOTS:
        name = path.strip("/").replace("/", "_") or "root"
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{width}-{name}.png"), full_page=True)


@pytest.mark.parametrize("width", WIDTHS)
def test_no_dashboard_page_scrolls_sideways(browser, live_server, catalog, width):
    _, team, project, worker, workload = filled_team()
    context = browser.new_context(base_url=live_server.url, viewport=WIDTHS[width])
    page = context.new_page()
    for path in ("/accounts/login/", "/accounts/signup/", "/accounts/password-reset/"):
        page.goto(path)
        shoot(page, width, path)
        assert overflow(page) <= 0, path
    log_in(page, EMAIL)
    too_wide = {}
    for path in dashboard_pages(team, project, worker, workload):
        page.goto(path)
        shoot(page, width, path)
        if overflow(page) > 0:
            too_wide[path] = overflow(page)
    # Pages that exist only after a submit: a new secret, a join command, a form with errors.
    submits = {f"/t/{team.slug}/p/{project.slug}/tokens/": "text=Create token",
               f"/t/{team.slug}/workers/-/new/": "text=Create join command",
               f"/t/{team.slug}/p/{project.slug}/workloads/-/new/": "#save-workload"}
    for path, button in submits.items():
        page.goto(path)
        page.click(button)
        page.wait_for_load_state()
        shoot(page, width, path + "-submitted")
        if overflow(page) > 0:
            too_wide[path + " (submitted)"] = overflow(page)
    context.close()
    assert too_wide == {}


def test_workload_and_credential_tables_show_every_column_at_desktop_width(browser, live_server, catalog):
    _, team, project, _, _ = filled_team()
    context = browser.new_context(base_url=live_server.url, viewport=WIDTHS["desktop"])
    page = context.new_page()
    log_in(page, EMAIL)
    clipped = {}
    for path in ("workloads/", "tokens/", "keys/"):
        page.goto(f"/t/{team.slug}/p/{project.slug}/{path}")
        # A table wider than its scroll box hides its last columns until scrolled sideways.
        hidden = page.evaluate("""() => [...document.querySelectorAll('.overflow-auto')]
            .map(box => box.scrollWidth - box.clientWidth).filter(px => px > 0)""")
        if hidden:
            clipped[path] = hidden
    context.close()
    assert clipped == {}


def test_phone_menu_reaches_workers_members_and_log_out(browser, live_server):
    make_user("owner@example.com")
    context = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    log_in(page, "owner@example.com")
    workers = page.get_by_role("link", name="Workers")
    assert not workers.is_visible()  # folded
    page.click("#nav-toggle")
    workers.click()
    page.wait_for_url("**/t/acme/workers/")
    page.click("#nav-toggle")
    page.get_by_role("link", name="Members").click()
    page.wait_for_url("**/t/acme/members/")
    shoot(page, "phone", "menu-members")
    page.click("#nav-toggle")
    page.locator("#nav-links .account > summary").click()
    shoot(page, "phone", "menu-open")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/accounts/login/")
    context.close()


def test_without_javascript_the_phone_header_wraps_instead_of_scrolling(browser, live_server):
    make_user("owner@example.com")
    context = browser.new_context(base_url=live_server.url, viewport=WIDTHS["phone"], java_script_enabled=False)
    page = context.new_page()
    log_in(page, "owner@example.com")
    page.goto("/t/acme/p/demo/workloads/")
    shoot(page, "phone", "nojs-workloads")
    assert overflow(page) <= 0 and page.get_by_role("link", name="Members").is_visible()
    assert not page.locator("#nav-toggle").is_visible()  # a button that would do nothing is not shown
    context.close()
