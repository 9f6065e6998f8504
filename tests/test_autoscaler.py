"""The pure autoscaler: traces of demand on a simulated clock (no database, no clock reads)."""
from __future__ import annotations

import json

import pytest

from workloads.autoscaler import Observation, Policy, State, decide, default_target_inflight

T0 = 1_800_000_000.0  # epoch seconds; the clock is simulated
TICK = 5.0


def run(policy: Policy, demands: list[float], *, tick: float = TICK, state: State | None = None, start: float = T0,
        cap: int | None = None, inflight: list[int] | None = None) -> tuple[list[int], State]:
    """Feed one demand per tick; return the target after each tick and the final state."""
    state = state if state is not None else decide(policy, State(), Observation(demand=0, generation=1), start).state
    targets = []
    for i, demand in enumerate(demands):
        busy = inflight[i] if inflight else int(demand)
        # Replicas are ready as soon as wanted here (boot time is its own test).
        d = decide(policy, state, Observation(demand=demand, inflight=busy, ready=state.target or 0, generation=1, cap=cap),
                   start + (i + 1) * tick)
        state = d.state
        targets.append(d.target)
    return targets, state


P = Policy(min_workers=0, max_workers=8, target_inflight_per_replica=10, scale_down_delay_s=60)


def test_new_workload_starts_one_replica():
    d = decide(P, State(), Observation(demand=0, generation=1), T0)
    assert d.target == 1 and d.reason == "initial scale"


def test_spec_change_starts_one_replica_from_zero():
    _, state = run(P, [0] * 20)
    d = decide(P, state, Observation(demand=0, generation=2), T0 + 200)
    assert state.target == 0 and d.target == 1


# (name, demands per 5 s tick, check(targets))
TRACES = [
    ("step up is immediate", [0, 35, 35, 35], lambda ts: ts[1] == 4),
    ("burst holds capacity for the delay, then goes", [80] + [0] * 20, lambda ts: ts[:12] == [8] * 12 and ts[-1] == 0),
    ("sawtooth shorter than the delay never scales down",
     [40, 0, 0, 40, 0, 0, 40, 0, 0, 40], lambda ts: ts == [4] * 10),
    ("long idle goes to zero after the delay", [5] + [0] * 30, lambda ts: ts[-1] == 0 and ts[10] >= 1),
    ("oscillation around a threshold does not flap",
     [19, 21, 19, 21, 19, 21, 19, 21, 19, 21], lambda ts: len(set(ts[1:])) == 1),
]


@pytest.mark.parametrize("name,demands,check", TRACES, ids=[t[0] for t in TRACES])
def test_traces(name, demands, check):
    targets, _ = run(P, demands)
    assert check(targets), targets


def test_scale_to_zero_waits_exactly_the_delay_after_the_last_demand():
    targets, _ = run(P, [5] + [0] * 20)
    first_zero = targets.index(0)
    assert first_zero * TICK >= P.scale_down_delay_s and (first_zero - 1) * TICK < P.scale_down_delay_s


def test_never_scales_to_zero_with_requests_in_flight():
    targets, _ = run(P, [5] + [0] * 20, inflight=[1] * 21)
    assert 0 not in targets


def test_wakes_from_zero_at_once():
    _, state = run(P, [0] * 20)
    d = decide(P, state, Observation(demand=1, inflight=0, held=1, generation=1), T0 + 500)
    assert state.target == 0 and d.target == 1


def test_panic_never_scales_down():
    policy = Policy(max_workers=8, target_inflight_per_replica=10, scale_down_delay_s=1)
    targets, state = run(policy, [5, 70, 0, 0], tick=1.0)
    assert targets[1] == 7 and targets[2:] == [7, 7] and state.panic_until is not None


def test_restart_with_persisted_state_never_scales_down():
    _, state = run(P, [70, 70])
    reloaded = State.load(json.loads(json.dumps(state.dump())))
    targets, _ = run(P, [0, 0, 0], state=reloaded, start=T0 + 2 * TICK)
    assert targets == [7, 7, 7]


def test_reloaded_state_equals_the_original():
    _, state = run(P, [3, 40, 12, 0])
    assert State.load(json.loads(json.dumps(state.dump()))) == state


def test_missing_demand_keeps_the_target():
    _, state = run(P, [70])
    d = decide(P, state, Observation(demand=None, generation=1), T0 + 1000)
    assert d.target == 7


def test_bounds_min_and_max_workers():
    policy = Policy(min_workers=2, max_workers=3, target_inflight_per_replica=10, scale_down_delay_s=10)
    targets, _ = run(policy, [100] + [0] * 20)
    assert targets[0] == 3 and targets[-1] == 2


def test_cap_binds_and_says_why():
    _, state = run(P, [0])
    d = decide(P, state, Observation(demand=100, generation=1, cap=2, cap_reason="2 GPU slots"), T0 + 10)
    assert d.target == 2 and d.capped and "2 GPU slots" in d.reason


def test_scale_up_delay_waits_unless_from_zero():
    policy = Policy(max_workers=8, target_inflight_per_replica=10, scale_down_delay_s=300, scale_up_delay_s=30)
    targets, _ = run(policy, [5, 50, 50, 50, 50, 50, 50, 50])
    assert targets[1] == 1 and targets[-1] == 5


def test_idle_state_does_not_change_between_ticks():
    _, state = run(P, [0] * 30)
    assert decide(P, state, Observation(demand=0, generation=1), T0 + 31 * TICK).state == state


@pytest.mark.parametrize("backend,task,expected", [("vllm", "text2text", 32), ("llamacpp", "text2text", 4),
                                                   ("vllm-omni", "text2image", 1), ("sglang", "embedding", 16)])
def test_default_target_per_engine(backend, task, expected):
    assert default_target_inflight(backend, task) == expected
    assert Policy.from_dict({"max_workers": 2}, backend, task).target_inflight_per_replica == expected


def test_boot_time_does_not_count_as_idle():
    state = decide(P, State(), Observation(demand=0, generation=1), T0).state
    for i in range(1, 40):  # the engine boots for 195 s, far past the 60 s delay
        d = decide(P, state, Observation(demand=0, ready=0, generation=1), T0 + i * TICK)
        state = d.state
    assert d.target == 1
    ready_at = T0 + 40 * TICK
    targets = [decide(P, state, Observation(demand=0, ready=1, generation=1), ready_at + s).target for s in (30, 61)]
    assert targets == [1, 0]
