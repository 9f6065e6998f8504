"""Dashboard fixtures: one user per role in the tenant's team, a workload, a worker with a GPU."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from accounts.models import Membership, Role
from catalog.models import GpuType
from catalog.seed import load_catalog
from workers.models import Gpu, Worker
from workloads import services

from ..specs import vllm_spec

ROLES = ("owner", "admin", "member", "viewer")
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; the browser tests skip without it


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the browser tests (one per test module)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update"],
        )
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def no_reconcile_queue(monkeypatch):
    """Creates and edits queue a reconcile after commit; the dashboard tests need no Celery."""
    from workloads import tasks

    monkeypatch.setattr(tasks.reconcile_workload, "delay", lambda *args, **kwargs: None)


@pytest.fixture
def catalog(db):
    if not GpuType.objects.exists():  # transactional tests flush the migration-seeded catalog
        load_catalog()


@pytest.fixture
def users(tenant, other_tenant) -> dict:
    """owner/admin/member/viewer of the tenant's team, and an outsider (owner of another team)."""
    people = {"owner": tenant.owner, "outsider": other_tenant.owner}
    for role in ("admin", "member", "viewer"):
        user = get_user_model().objects.create_user(username=f"{role}@example.com", email=f"{role}@example.com",
                                                    password="pw-for-tests-123")
        Membership.objects.create(team=tenant.team, user=user, role=Role(role))
        people[role] = user
    return people


def login_as(client, users: dict, who: str):
    if who != "anonymous":
        client.force_login(users[who])
    return client


@pytest.fixture
def workload(tenant):
    return services.workload_create(project=tenant.project, data=vllm_spec())


@pytest.fixture
def worker(tenant):
    worker = Worker.objects.create(team=tenant.team, name="box-1", state=Worker.State.ONLINE, hostname="box-1.lab")
    Gpu.objects.create(worker=worker, index=0, name="NVIDIA L40S", memory_total_mb=46068, utilization_pct=37)
    return worker


@pytest.fixture
def foreign_workload(other_tenant):
    return services.workload_create(project=other_tenant.project, data=vllm_spec(slug="secret-bot", name="Secret"))


@pytest.fixture
def foreign_worker(other_tenant):
    return Worker.objects.create(team=other_tenant.team, name="their-box")
