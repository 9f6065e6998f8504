"""A revoked or expired data key stops working on the live data plane within the cache TTL, however
idle its cache entry was (no stale positive entry is served past GATEWAY_CACHE_TTL_S)."""
from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.utils import timezone

from accounts import services
from accounts.models import DataKey

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/endpoint/demo/bot/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


def _concurrent_statuses(url: str, key: str, n: int = 100) -> list[int]:
    async def go():
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits) as client:
            responses = await asyncio.gather(*(
                client.post(CHAT, json=HELLO, headers={"authorization": f"Bearer {key}"}) for _ in range(n)))
        return [r.status_code for r in responses]

    return asyncio.run(go())


def test_revoked_key_is_refused_by_all_concurrent_requests_once_the_ttl_passed(live_gateway, tenant, make_workload,
                                                                                 standin):
    make_workload("bot", ports=[standin])
    assert _concurrent_statuses(live_gateway.url, tenant.api_key, n=5) == [200] * 5  # cached as valid
    services.credential_revoke(credential=DataKey.objects.get(project=tenant.project))
    time.sleep(settings.GATEWAY_CACHE_TTL_S + 0.3)  # idle past the TTL, well before any old max-stale bound
    assert _concurrent_statuses(live_gateway.url, tenant.api_key) == [401] * 100


def test_key_cached_as_valid_stops_at_its_expiry(live_gateway, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    expires_at = timezone.now() + timedelta(seconds=0.6)
    key = services.data_key_create(project=tenant.project, expires_at=expires_at)
    assert _concurrent_statuses(live_gateway.url, key.value, n=1) == [200]  # cached for up to 1 s
    time.sleep(max(0.0, (expires_at - timezone.now()).total_seconds()) + 0.05)
    assert _concurrent_statuses(live_gateway.url, key.value, n=1) == [401]
