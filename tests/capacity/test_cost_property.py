"""Property: whatever the demand (through the real autoscaler's decide()), launch failures, stuck
terminations and preemptions, the hourly cost of the machines the provider runs for a workload —
and of every instance our rows still bill — never exceeds its ceiling."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers import capacity, cost
from workers.models import Instance
from workloads import autoscaler
from workloads.services import workload_create

from ..specs import vllm_spec
from .fake_provider import FakeProvider

POOL = ["NVIDIA L4", "NVIDIA L40S", "NVIDIA A10G", "NVIDIA H100 80GB HBM3"]

step = st.fixed_dictionaries({
    "demand": st.integers(0, 60),  # requests in flight + held, as the gateways report them
    "sold_out": st.sets(st.sampled_from(POOL)),
    "broken": st.booleans(),
    "stuck": st.booleans(),
    "preempt": st.integers(0, 3),
    "register": st.integers(0, 3),
    "minutes": st.integers(0, 15),
    "overshoot": st.integers(0, 3),
})


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ceiling=st.decimals("0.43", "9", places=2), pool_ceiling=st.none() | st.decimals("0.43", "9", places=2),
       max_workers=st.integers(1, 10), steps=st.lists(step, min_size=1, max_size=12))
def test_running_hourly_cost_never_exceeds_the_ceiling(tenant_factory, ceiling, pool_ceiling, max_workers, steps):
    tenant = tenant_factory()
    pool = {"gpu_pool": POOL, **({"max_hourly_cost_usd": float(pool_ceiling)} if pool_ceiling else {})}
    workload = workload_create(project=tenant.project, data=vllm_spec(
        execution_policy="autoscaling", execution_policy_config={
            "min_workers": 0, "max_workers": max_workers, "max_hourly_cost_usd": float(ceiling),
            "workers": {"source": "cloud", "cloud_pool": pool}}))
    top = cost.ceiling(workload.policy)
    fake = FakeProvider()
    now = timezone.now()
    policy, state = autoscaler.Policy.of(workload), autoscaler.State()
    for s in steps:
        now += timedelta(minutes=s["minutes"])
        # The autoscaler's target for this demand, with the cap the reconcile gives it.
        limit = capacity.cap_for(workload.policy, fake.offers(POOL, None))
        decision = autoscaler.decide(policy, state, autoscaler.Observation(
            demand=s["demand"], inflight=s["demand"], generation=workload.generation, cap=limit.workers), now)
        state = decision.state
        fake.no_capacity, fake.broken, fake.stuck = set(s["sold_out"]), s["broken"], s["stuck"]
        for name in [n for n, i in fake.instances.items() if i["state"] == "running"][: s["preempt"]]:
            fake.preempt(name)
        booting = Instance.objects.filter(workload=workload, state="provisioning", name__in=list(fake.instances))
        for row in booting[: s["register"]]:
            if fake.instances[row.name]["state"] == "running":
                fake.register(row.name)
        # A higher target than the cap (a stale or hand-edited state) must not break the ceiling either.
        capacity.plan_instances(workload, decision.target + s["overshoot"], now, provider=fake)
        capacity.execute(workload.id, now, provider=fake)
        assert fake.billed() <= top
        billed = Instance.objects.filter(workload=workload, state__in=Instance.BILLED_STATES)
        assert sum((r.price_usd_per_hour for r in billed), Decimal(0)) <= top
