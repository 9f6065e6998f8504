"""The autoscaler: a pure `decide(policy, state, observation, now) -> Decision`, like `reconcile.plan()`.

Interface (h8's cloud path calls the same function; only the cap differs):

    policy = autoscaler.Policy.of(workload)          # min/max workers, target per replica, delays
    obs = autoscaler.Observation(demand=…, inflight=…, ready=…, cap=…, cap_reason=…, …)
    d = autoscaler.decide(policy, autoscaler.State.load(workload.autoscaler), obs, now)
    d.target   # replicas wanted now, min_workers ≤ target ≤ cap (cap wins: never past a cost ceiling)
    d.state    # persist `d.state.dump()` on the workload (JSON) and pass it back next tick
    d.reason   # one line for the workload's message / dashboard ("scaled to zero …", "capped …")

    workloads.demand.observe(workload, now) builds the Observation for a private workload (demand
    summed over gateway processes, ready replicas, the private-slot cap); a cloud caller builds its
    own with `cap` = min(private-equivalent cap, ⌊ceiling ÷ price⌋, max_instances) and a cap_reason.
    workloads.autoscaling.tick(workload_id, now) = observe → decide → persist (compare-and-set) →
    reconcile when the target changed; the Celery task `workloads.tasks.autoscale` runs it (beat every
    AUTOSCALE_INTERVAL_S, and queued at once by the gateway on the first held request).

Behaviour (KubeAI / Knative KPA / Ray Serve, our choices where they differ):
* demand = requests in flight at the gateways + requests held waiting for a replica (+ queued jobs);
  desired = ⌈demand ÷ target_inflight_per_replica⌉.
* scale-up: at once (the newest observation counts; `scale_up_delay_s`, default 0, is the minimum of
  desired over that trailing window, for the cloud path) and always at once from zero.
* stable window 60 s (time-weighted average of demand) for the level that holds; panic window 6 s:
  when the panic window's desired reaches 2× the current target the autoscaler panics for a stable
  window and never scales down while panicking.
* scale-down: the target is the maximum desired over the trailing `scale_down_delay_s` (default 300),
  so a dip shorter than the delay changes nothing; the window lives in the state, so a restart that
  reloads it never scales down early.
* scale to zero (min_workers 0): only when no demand was seen for `scale_down_delay_s` while a
  replica was ready (boot time does not count) and nothing is in flight. Draining replicas finish
  their in-flight requests first (the agent's drain).
* initial scale: a new workload, or a new generation (spec change), starts max(1, min_workers).
* missing observation (no gateway data): keep the current target.

`now` is an aware datetime or epoch seconds; no clock is read here. The state is plain JSON
(times as epoch seconds) and stays small: only changes of demand are stored, so an idle or steady
workload's state does not change between ticks (no write).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

STABLE_WINDOW_S = 60.0
PANIC_WINDOW_S = 6.0
PANIC_THRESHOLD = 2.0
DEFAULT_SCALE_DOWN_DELAY_S = 300

# Requests in flight one replica is sized for when the policy does not say (README "Autoscaling").
# Continuous-batching LLM engines take many concurrent requests; llama.cpp / Ollama run a few slots;
# single-stream image / audio engines and custom backends take one.
_BATCHING = {"vllm", "sglang", "vllm-omni"}
_SINGLE_STREAM_TASKS = {"text2image", "text2audio", "audio2text"}


def default_target_inflight(backend: str, task_type: str) -> int:
    if task_type in _SINGLE_STREAM_TASKS:
        return 1
    if backend in _BATCHING:
        return 16 if task_type in ("embedding", "reranker") else 32
    if backend in ("llamacpp", "ollama"):
        return 4
    return 1  # custom backends: one job at a time unless the policy says otherwise


@dataclass(frozen=True)
class Policy:
    min_workers: int = 0
    max_workers: int = 1
    target_inflight_per_replica: int = 32
    scale_down_delay_s: float = DEFAULT_SCALE_DOWN_DELAY_S
    scale_up_delay_s: float = 0.0  # private: 0; the cloud path may ask for a delay (bypassed from zero)

    @classmethod
    def from_dict(cls, policy: dict, backend: str = "vllm", task_type: str = "text2text",
                  scale_up_delay_s: float = 0.0) -> Policy:
        target = policy.get("target_inflight_per_replica") or default_target_inflight(backend, task_type)
        return cls(
            min_workers=int(policy.get("min_workers") or 0),
            max_workers=int(policy.get("max_workers") or 1),
            target_inflight_per_replica=max(1, int(target)),
            scale_down_delay_s=float(policy.get("scale_down_delay_s") or DEFAULT_SCALE_DOWN_DELAY_S),
            scale_up_delay_s=float(scale_up_delay_s),
        )

    @classmethod
    def of(cls, workload, scale_up_delay_s: float = 0.0) -> Policy:
        return cls.from_dict(workload.policy or {}, workload.backend, workload.task_type or "text2text", scale_up_delay_s)


@dataclass(frozen=True)
class Observation:
    """What the autoscaler sees at `now`. `demand` None: no data (keep the target)."""

    demand: float | None  # inflight + held + queued, summed over gateway processes
    inflight: int = 0  # proxied right now (a replica with requests in flight is never dropped to zero)
    held: int = 0  # waiting at a gateway for a ready replica
    ready: int = 0  # ready replicas of the current generation
    last_request_at: float | None = None  # epoch s of the latest request any gateway saw (short bursts between ticks)
    generation: int = 0  # the workload's spec generation (a change starts one replica)
    cap: int | None = None  # replicas the capacity allows (private slots, cost ceiling); None: max_workers
    cap_reason: str = ""  # why, when it binds (e.g. "2 GPU slots on the listed workers")


@dataclass(frozen=True)
class State:
    """Persisted between ticks (Workload.autoscaler). Times are epoch seconds."""

    target: int | None = None  # None: never decided (initial scale)
    generation: int = 0
    samples: tuple[tuple[float, float], ...] = ()  # (t, demand) at changes; the first may predate the window
    recommendations: tuple[tuple[float, int], ...] = ()  # decreasing (t, desired): max over the delay window
    up_recommendations: tuple[tuple[float, int], ...] = ()  # increasing (t, desired): min over the up-delay window
    panic_until: float | None = None
    last_demand_at: float | None = None

    @classmethod
    def load(cls, data: Any) -> State:
        if not isinstance(data, dict):
            return cls()
        try:
            return cls(
                target=None if data.get("target") is None else int(data["target"]),
                generation=int(data.get("generation") or 0),
                samples=tuple((float(t), float(v)) for t, v in data.get("samples") or ()),
                recommendations=tuple((float(t), int(v)) for t, v in data.get("recommendations") or ()),
                up_recommendations=tuple((float(t), int(v)) for t, v in data.get("up_recommendations") or ()),
                panic_until=None if data.get("panic_until") is None else float(data["panic_until"]),
                last_demand_at=None if data.get("last_demand_at") is None else float(data["last_demand_at"]),
            )
        except (TypeError, ValueError):
            return cls()  # unreadable state: start over (initial scale keeps one replica)

    def dump(self) -> dict:
        out = asdict(self)
        for key in ("samples", "recommendations", "up_recommendations"):
            out[key] = [list(p) for p in out[key]]
        return out


@dataclass(frozen=True)
class Decision:
    target: int
    state: State
    reason: str
    desired: int = 0  # before bounds
    panic: bool = False
    capped: bool = False


def _ts(now: datetime | float) -> float:
    return now.timestamp() if isinstance(now, datetime) else float(now)


def _average(samples: tuple[tuple[float, float], ...], start: float, now: float) -> float:
    """Time-weighted average over [start, now] of the step function the samples describe."""
    span = now - start
    if span <= 0:
        return samples[-1][1] if samples else 0.0
    total = 0.0
    for i, (t, value) in enumerate(samples):
        end = samples[i + 1][0] if i + 1 < len(samples) else now
        lo, hi = max(t, start), min(end, now)
        if hi > lo:
            total += value * (hi - lo)
    return total / span


def _prune_samples(samples: list[tuple[float, float]], start: float) -> list[tuple[float, float]]:
    # Keep the last sample before the window: it gives the level at the window's start.
    while len(samples) >= 2 and samples[1][0] <= start:
        samples.pop(0)
    return samples


def _push_max(window: tuple[tuple[float, int], ...], now: float, value: int, span: float) -> list[tuple[float, int]]:
    """Sliding-window maximum: a decreasing deque (entries dominated by a later, larger one drop)."""
    out = [(t, v) for t, v in window if t > now - span]
    while out and out[-1][1] <= value:
        out.pop()
    out.append((now, value))
    return out


def _push_min(window: tuple[tuple[float, int], ...], now: float, value: int, span: float) -> list[tuple[float, int]]:
    """Sliding-window minimum over the trailing `span` (increasing deque)."""
    out = [(t, v) for t, v in window if t > now - span]
    while out and out[-1][1] >= value:
        out.pop()
    out.append((now, value))
    return out


def decide(policy: Policy, state: State, obs: Observation, now: datetime | float) -> Decision:
    t = _ts(now)
    cap = policy.max_workers if obs.cap is None else max(0, min(policy.max_workers, obs.cap))
    per = policy.target_inflight_per_replica

    def bound(n: int, reason: str, **extra) -> Decision:
        lo = min(policy.min_workers, cap)
        capped = n > cap or policy.min_workers > cap
        final = max(lo, min(n, cap))
        if capped:
            reason = f"{reason}; capped at {cap}" + (f" ({obs.cap_reason})" if obs.cap_reason else " (max_workers)")
        return Decision(final, replace(new, target=final), reason, desired=n, capped=capped, **extra)

    # A new workload or a spec change: start one replica (Knative initial-scale 1) so ensure() →
    # wait_until_ready() → call works; it may fall back to zero after the delay.
    initial = state.target is None or state.generation != obs.generation
    if initial:
        start = max(1, policy.min_workers, state.target or 0)
        state = replace(state, target=start, generation=obs.generation, last_demand_at=t, panic_until=None,
                        recommendations=((t, start),), up_recommendations=())
        if obs.demand is None:
            new = state
            return bound(start, "initial scale")

    if obs.demand is None:
        new = state
        return bound(state.target, "no demand data from the gateways: holding")

    demand = max(0.0, float(obs.demand))
    samples = list(state.samples)
    if not samples or samples[-1][1] != demand:
        samples.append((t, demand))
    samples = _prune_samples(samples, t - STABLE_WINDOW_S)
    stable = _average(tuple(samples), t - STABLE_WINDOW_S, t)
    panic_avg = _average(tuple(samples), t - PANIC_WINDOW_S, t)
    instant = math.ceil(demand / per)
    stable_desired = math.ceil(stable / per)
    panic_desired = max(instant, math.ceil(panic_avg / per))

    last_demand_at = state.last_demand_at
    if demand > 0 or obs.inflight > 0 or (state.target > 0 and obs.ready == 0):
        # Idle time counts only while a replica is ready: an engine that boots for longer than the
        # delay (a large model) is not scaled to zero before it could ever serve.
        last_demand_at = t
    if obs.last_request_at is not None:
        last_demand_at = max(last_demand_at or 0.0, obs.last_request_at)

    current = state.target
    panic_until = state.panic_until
    if panic_until is not None and t >= panic_until:
        panic_until = None
    if current > 0 and panic_desired >= PANIC_THRESHOLD * current:
        panic_until = t + STABLE_WINDOW_S  # (re-)enter panic: hold at least this level for a window
    panicking = panic_until is not None

    # Up: the newest observation counts at once (private), or only once it held for the up delay.
    up_window = state.up_recommendations
    if policy.scale_up_delay_s > 0 and current > 0:
        ups = _push_min(up_window, t, instant, policy.scale_up_delay_s)
        up_desired = ups[0][1]
        up_window = tuple(ups)
    else:
        up_desired = instant
        up_window = ()
    raw = max(stable_desired, up_desired)
    if panicking:
        raw = max(raw, current)
    window = _push_max(state.recommendations, t, raw, policy.scale_down_delay_s)
    desired = window[0][1]

    new = replace(state, samples=tuple(samples), recommendations=tuple(window), up_recommendations=up_window,
                  panic_until=panic_until, last_demand_at=last_demand_at)

    idle_for = t - (last_demand_at if last_demand_at is not None else t)
    if demand == 0 and obs.inflight == 0 and idle_for >= policy.scale_down_delay_s and not panicking:
        # Idle for the whole delay: back to the floor (zero when min_workers is 0). The max-window
        # is reset so the next request starts from here (kept as is once there: no write when idle).
        floor = policy.min_workers
        settled = [v for _, v in state.recommendations] == [floor]
        new = replace(new, recommendations=state.recommendations if settled else ((t, floor),))
        if policy.min_workers == 0:
            return bound(0, "scaled to zero; wakes on the next request")
        return bound(policy.min_workers, f"idle for {idle_for:.0f} s: at min_workers")
    if last_demand_at is not None and idle_for < policy.scale_down_delay_s:
        desired = max(desired, 1)  # recent demand: never zero before the delay
    if initial and desired <= state.target:
        return bound(desired, "initial scale")
    if current == 0 and demand > 0:
        return bound(max(1, desired), f"waking from zero: demand {demand:g}", panic=panicking)
    if desired > current:
        reason = f"scaling up: demand {demand:g}, {per} per replica"
    elif desired < current:
        reason = f"scaling down: no more than {desired} wanted for {policy.scale_down_delay_s:g} s"
    else:
        reason = f"steady: demand {demand:g}, {per} per replica"
    if panicking:
        reason += " (panic: no scale-down)"
    return bound(desired, reason, panic=panicking)


__all__ = ["Decision", "Observation", "Policy", "State", "decide", "default_target_inflight"]
