"""Execution policies: validation of `execution_policy_config` and the replica math.

`parse(kind, config, ctx)` checks a wire config and returns a normalised dict (stored as
`Workload.policy`); `desired_replicas(policy, now, load)` says how many replicas should run.

Choices where the product page is silent (documented in the README):
- fixed without a config means `{"replicas": 1}`.
- scheduled may carry `replicas` (default 1, while active); a `cron` fire starts an active
  period of `duration_minutes` (default 60) in `timezone` (default UTC); a `window` is active
  inside it, overnight windows belong to the day they start.
- autoscaling needs `max_hourly_cost_usd` for the cloud source; for private workers it is optional.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterError, croniter

from workers import cost

POLICIES = ("fixed", "scheduled", "autoscaling")
MAX_REPLICAS = 64
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PolicyErrors(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


@dataclass
class PolicyContext:
    """Lookups the validator needs; callables so nothing is queried unless used."""

    gpu_catalog: Callable[[], dict[str, list[str]]] = lambda: {}
    gpu_prices: Callable[[], dict[str, object]] = lambda: {}  # display name → cheapest $/h
    worker_exists: Callable[[str], bool] = lambda worker_id: True
    suggest: Callable[[str, list[str]], list[str]] = lambda name, names: []


@dataclass
class _Collector:
    prefix: str
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add(self, path: str, message: str) -> None:
        self.errors.setdefault(f"{self.prefix}{path}", []).append(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _unknown_keys(c: _Collector, obj: dict, allowed: set[str], base: str = "", hints: dict[str, str] | None = None):
    for key in obj:
        if key in allowed:
            continue
        hint = (hints or {}).get(key)
        c.add(f"{base}{key}", hint or f"unknown key; allowed keys: {', '.join(sorted(allowed))}")


def parse(kind: str, config: Any, ctx: PolicyContext | None = None) -> dict:
    """Validate `config` for policy `kind`; return the normalised policy or raise PolicyErrors."""
    ctx = ctx or PolicyContext()
    c = _Collector("execution_policy_config")
    if config is not None and not isinstance(config, dict):
        c.add("", "must be a JSON object")
        raise PolicyErrors(c.errors)
    parser = {"fixed": _parse_fixed, "scheduled": _parse_scheduled, "autoscaling": _parse_autoscaling}[kind]
    result = parser(c, config, ctx)
    if c.errors:
        raise PolicyErrors(c.errors)
    return result


def _replicas(c: _Collector, obj: dict, default: int) -> int:
    value = obj.get("replicas", default)
    if not _is_int(value) or value < 0:
        c.add(".replicas", "must be an integer ≥ 0")
        return default
    if value > MAX_REPLICAS:
        c.add(".replicas", f"must be at most {MAX_REPLICAS}")
    return value


def _parse_fixed(c: _Collector, config: dict | None, ctx: PolicyContext) -> dict:
    config = {"replicas": 1} if config is None else config
    _unknown_keys(c, config, {"replicas"}, ".")
    if "replicas" not in config:
        c.add(".replicas", "is required for the fixed policy")
    return {"kind": "fixed", "replicas": _replicas(c, config, 1)}


# --- scheduled ---------------------------------------------------------------------------

_WINDOW = re.compile(r"^\s*(?P<days>\S+)\s+(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})\s+(?P<tz>\S+)\s*$")


def _parse_time(text: str) -> int | None:
    """Minutes since midnight for HH:MM (24:00 allowed as an end), else None."""
    hours, minutes = text.split(":")
    h, m = int(hours), int(minutes)
    if (0 <= h <= 23 and 0 <= m <= 59) or (h == 24 and m == 0):
        return h * 60 + m
    return None


def _parse_days(text: str) -> list[int] | None:
    """`Mon-Fri`, `Mon,Wed,Fri`, `Sat-Sun`, `Fri-Mon` (wraps), `Daily`/`*` → weekday numbers."""
    lowered = text.lower()
    if lowered in ("daily", "*", "everyday"):
        return list(range(7))
    days: list[int] = []
    for part in lowered.split(","):
        bounds = part.split("-")
        if len(bounds) == 1 and bounds[0][:3] in DAYS and len(bounds[0]) >= 3:
            days.append(DAYS.index(bounds[0][:3]))
        elif len(bounds) == 2 and all(b[:3] in DAYS and len(b) >= 3 for b in bounds):
            start, end = DAYS.index(bounds[0][:3]), DAYS.index(bounds[1][:3])
            span = (end - start) % 7
            days.extend((start + i) % 7 for i in range(span + 1))
        else:
            return None
    return sorted(set(days))


def parse_window(text: str) -> tuple[dict | None, str]:
    """Parse `Mon-Fri 08:00-20:00 Europe/Madrid`; return (normalised, error message)."""
    match = _WINDOW.match(text)
    if not match:
        return None, "expected '<days> HH:MM-HH:MM <IANA time zone>', e.g. 'Mon-Fri 08:00-20:00 Europe/Madrid'"
    days = _parse_days(match["days"])
    if days is None:
        return None, f"unknown days {match['days']!r}: use Mon..Sun as a range (Mon-Fri), a list (Mon,Wed) or Daily"
    start, end = _parse_time(match["start"]), _parse_time(match["end"])
    if start is None or start == 24 * 60 or end is None:
        return None, "times must be HH:MM between 00:00 and 24:00"
    if start == end:
        return None, "the window is empty: start and end are equal"
    tz = match["tz"]
    if not _zone_ok(tz):
        return None, f"unknown time zone {tz!r}: use an IANA name such as Europe/Madrid or UTC"
    return {"days": days, "start": start, "end": end, "tz": tz}, ""


def _zone_ok(name: str) -> bool:
    if name not in _ZONES:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


_ZONES = available_timezones() | {"UTC"}


def _parse_scheduled(c: _Collector, config: dict | None, ctx: PolicyContext) -> dict:
    if config is None:
        c.add("", "the scheduled policy needs a config with 'cron' or 'window'")
        return {}
    _unknown_keys(c, config, {"cron", "window", "replicas", "timezone", "duration_minutes"}, ".")
    has_cron, has_window = "cron" in config, "window" in config
    if has_cron == has_window:
        c.add("", "give exactly one of 'cron' or 'window'")
        return {}
    result: dict[str, Any] = {"kind": "scheduled", "replicas": _replicas(c, config, 1)}
    if has_window:
        for key in ("timezone", "duration_minutes"):
            if key in config:
                c.add(f".{key}", "only applies to 'cron' (a window carries its own zone and end)")
        window = config["window"]
        if not isinstance(window, str):
            c.add(".window", "must be a string like 'Mon-Fri 08:00-20:00 Europe/Madrid'")
            return result
        parsed, error = parse_window(window)
        if error:
            c.add(".window", error)
        else:
            result["window"] = parsed
        return result
    cron = config["cron"]
    if not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron):
        c.add(".cron", "must be a valid 5-field cron expression, e.g. '0 2 * * *'")
    elif not cron_fires(cron):
        c.add(".cron", f"{cron!r} never fires (no date matches it, e.g. 30 February): the workload would never run")
    tz = config.get("timezone", "UTC")
    if not isinstance(tz, str) or not _zone_ok(tz):
        c.add(".timezone", f"unknown time zone {tz!r}: use an IANA name such as Europe/Madrid or UTC")
    duration = config.get("duration_minutes", 60)
    if not _is_int(duration) or not 1 <= duration <= 7 * 24 * 60:
        c.add(".duration_minutes", "must be an integer between 1 and 10080")
    result.update({"cron": cron, "tz": tz, "duration_minutes": duration})
    return result


# --- autoscaling -------------------------------------------------------------------------

_AUTOSCALING_KEYS = {"min_workers", "max_workers", "max_hourly_cost_usd", "workers", "gpu_pool",
                     "target_inflight_per_replica", "scale_down_delay_s"}
_RENAMED = {
    "min_replicas": "not supported: autoscaling bounds are min_workers / max_workers (use min_workers)",
    "max_replicas": "not supported: autoscaling bounds are min_workers / max_workers (use max_workers)",
}


def _positive_money(c: _Collector, path: str, value: Any) -> float | None:
    if not _is_number(value) or value <= 0:
        c.add(path, "must be greater than zero (US dollars per hour)")
        return None
    return float(value)


def _parse_autoscaling(c: _Collector, config: dict | None, ctx: PolicyContext) -> dict:
    if config is None:
        c.add(".max_hourly_cost_usd", "is required for autoscaling (a cost ceiling in US dollars per hour)")
        return {}
    _unknown_keys(c, config, _AUTOSCALING_KEYS, ".", _RENAMED)
    result: dict[str, Any] = {"kind": "autoscaling"}
    lo, hi = config.get("min_workers", 0), config.get("max_workers")
    if not _is_int(lo) or lo < 0:
        c.add(".min_workers", "must be an integer ≥ 0")
        lo = None
    if hi is None:
        c.add(".max_workers", "is required (an integer ≥ 1)")
    elif not _is_int(hi) or hi < 1:
        c.add(".max_workers", "must be an integer ≥ 1")
        hi = None
    elif hi > MAX_REPLICAS:
        c.add(".max_workers", f"must be at most {MAX_REPLICAS}")
    if lo is not None and hi is not None and lo > hi:
        c.add(".min_workers", f"must be ≤ max_workers ({hi})")
    result.update(min_workers=lo, max_workers=hi)
    # target_inflight_per_replica absent → None: the autoscaler's per-engine default applies
    # (workloads/autoscaler.py default_target_inflight).
    for key, default in (("target_inflight_per_replica", None), ("scale_down_delay_s", 300)):
        value = config.get(key, default)
        if value is not None and (not _is_int(value) or value < 1):
            c.add(f".{key}", "must be an integer ≥ 1")
        result[key] = value

    workers = config.get("workers")
    legacy_pool = config.get("gpu_pool")
    if workers is None and legacy_pool is None:
        c.add(".workers", "is required: {'source': 'cloud', 'cloud_pool': {...}} or {'source': 'private', 'private_worker_ids': [...]}")
        return result
    if workers is not None and not isinstance(workers, dict):
        c.add(".workers", "must be a JSON object")
        return result
    workers = workers or {"source": "cloud"}
    source = workers.get("source")
    if source not in ("cloud", "private"):
        c.add(".workers.source", "must be 'cloud' or 'private'")
        return result
    result["source"] = source

    cost = config.get("max_hourly_cost_usd")
    if cost is None and source == "cloud":
        c.add(".max_hourly_cost_usd", "is required for autoscaling on cloud workers (US dollars per hour, > 0)")
    elif cost is not None:
        result["max_hourly_cost_usd"] = _positive_money(c, ".max_hourly_cost_usd", cost)

    if source == "private":
        _unknown_keys(c, workers, {"source", "private_worker_ids"}, ".workers.")
        if legacy_pool is not None:
            c.add(".gpu_pool", "a GPU pool only applies to the cloud source")
        ids = workers.get("private_worker_ids")
        if not isinstance(ids, list) or not ids:
            c.add(".workers.private_worker_ids", "must be a non-empty list of worker ids (wrk_…)")
            return result
        for i, worker_id in enumerate(ids):
            path = f".workers.private_worker_ids[{i}]"
            if not isinstance(worker_id, str) or not worker_id.startswith("wrk_"):
                c.add(path, "must be a worker id starting with 'wrk_'")
            elif not ctx.worker_exists(worker_id):
                c.add(path, f"no worker {worker_id!r} in this team or shared")
        if len(set(map(str, ids))) != len(ids):
            c.add(".workers.private_worker_ids", "lists a worker more than once")
        result["private_worker_ids"] = list(ids)
        return result

    _unknown_keys(c, workers, {"source", "cloud_pool"}, ".workers.")
    pool = workers.get("cloud_pool")
    if pool is not None and not isinstance(pool, dict):
        c.add(".workers.cloud_pool", "must be a JSON object")
        return result
    pool = pool or {}
    _unknown_keys(c, pool, {"gpu_pool", "max_hourly_cost_usd", "max_instances", "allowed_cuda_versions"}, ".workers.cloud_pool.")
    if legacy_pool is not None:
        if "gpu_pool" in pool:
            c.add(".gpu_pool", "give the pool once: use workers.cloud_pool.gpu_pool (the root gpu_pool is the legacy form)")
        if "allowed_cuda_versions" in pool or "allowed_cuda_versions" in config:
            c.add(".gpu_pool", "the legacy root gpu_pool cannot carry allowed_cuda_versions; move it to workers.cloud_pool.gpu_pool")
        names, base = legacy_pool, ".gpu_pool"
    else:
        names, base = pool.get("gpu_pool"), ".workers.cloud_pool.gpu_pool"
    catalog = ctx.gpu_catalog()
    if not isinstance(names, list) or not names:
        c.add(base, "must be a non-empty list of GPU display names from the catalog (GPU Resources)")
        names = []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            c.add(f"{base}[{i}]", "must be a GPU display name (string)")
        elif name not in catalog:
            close = ctx.suggest(name, list(catalog))
            hint = f"; did you mean {' or '.join(repr(n) for n in close)}?" if close else ""
            c.add(f"{base}[{i}]", f"unknown GPU {name!r}: not in the GPU catalog{hint}")
    if len(set(map(str, names))) != len(names):
        c.add(base, "lists a GPU more than once")
    result["gpu_pool"] = list(names)
    if "max_hourly_cost_usd" in pool:
        result["pool_max_hourly_cost_usd"] = _positive_money(c, ".workers.cloud_pool.max_hourly_cost_usd", pool["max_hourly_cost_usd"])
    if "max_instances" in pool:
        value = pool["max_instances"]
        if not _is_int(value) or value < 1:
            c.add(".workers.cloud_pool.max_instances", "must be an integer ≥ 1")
        result["max_instances"] = value
    if "allowed_cuda_versions" in pool:
        versions = pool["allowed_cuda_versions"]
        runnable = {v for n in names if isinstance(n, str) for v in catalog.get(n, [])}
        if not isinstance(versions, list) or not versions:
            c.add(".workers.cloud_pool.allowed_cuda_versions", "must be a non-empty list of CUDA versions such as '13.0'")
            versions = []
        for i, version in enumerate(versions):
            path = f".workers.cloud_pool.allowed_cuda_versions[{i}]"
            if not isinstance(version, str) or not re.match(r"^\d+\.\d+$", version):
                c.add(path, "must be a CUDA version string such as '12.8'")
            elif version not in runnable:
                c.add(path, f"no GPU in the pool can run CUDA {version}")
        result["allowed_cuda_versions"] = list(versions)
    _check_ceiling(c, result, catalog, ctx)
    return result


def _check_ceiling(c: _Collector, result: dict, catalog: dict[str, list[str]], ctx: PolicyContext) -> None:
    """A ceiling below the cheapest eligible GPU of the pool could never run one worker."""
    top = cost.ceiling(result)
    names = [n for n in result.get("gpu_pool", []) if isinstance(n, str) and n in catalog]
    if c.errors or top is None or not names:
        return
    prices = ctx.gpu_prices()
    if not prices:
        return  # no price list to check against (pure unit tests)
    allowed = result.get("allowed_cuda_versions")
    eligible = cost.eligible_gpus(names, prices, catalog, allowed)
    if not eligible:
        c.add(".workers.cloud_pool.gpu_pool", "no GPU of the pool has a price in the catalog"
              + (" and can run the allowed CUDA versions" if allowed else ""))
        return
    cheapest = eligible[0]
    if top < cheapest.usd_per_hour:
        c.add(f".{cost.ceiling_field(result)}",
              f"${top}/h is below the cheapest GPU of the pool: {cheapest.name} at ${cheapest.usd_per_hour}/h")


# --- replica math ------------------------------------------------------------------------


# A valid cron fires at least every 4 years (29 February) - 8 across a skipped leap year (2100).
_CRON_SEARCH_YEARS = 9


def cron_fires(cron: str) -> bool:
    """Whether a valid cron expression matches any date at all (`0 0 30 2 *` matches none).

    croniter gives up after a bounded search (max_years_between_matches), so this cannot loop."""
    start = datetime(2026, 1, 1)
    try:
        croniter(cron, start, max_years_between_matches=_CRON_SEARCH_YEARS).get_next(datetime)
    except (CroniterError, ValueError, OverflowError):
        return False
    return True


def schedule_active(policy: dict, now: datetime) -> bool:
    """Whether a scheduled policy is inside an active period at `now` (aware datetime)."""
    if "window" in policy:
        w = policy["window"]
        local = now.astimezone(ZoneInfo(w["tz"]))
        minute = local.hour * 60 + local.minute
        today, yesterday = local.weekday(), (local.weekday() - 1) % 7
        if w["start"] < w["end"]:
            return today in w["days"] and w["start"] <= minute < w["end"]
        # Overnight window: it belongs to the day it starts on.
        return (today in w["days"] and minute >= w["start"]) or (yesterday in w["days"] and minute < w["end"])
    tz = ZoneInfo(policy.get("tz", "UTC"))
    local = now.astimezone(tz)
    try:
        last_fire = croniter(policy["cron"], local + timedelta(seconds=1),
                             max_years_between_matches=_CRON_SEARCH_YEARS).get_prev(datetime)
    except CroniterError:
        return False  # a stored schedule that never fires (refused on input since): never active
    return local < last_fire + timedelta(minutes=policy.get("duration_minutes", 60))


def _scan_transitions(policy: dict, now: datetime, count: int) -> list[tuple[datetime, bool]]:
    """Minute-by-minute scan (windows: at most a week between changes)."""
    out: list[tuple[datetime, bool]] = []
    state = schedule_active(policy, now)
    t = now.replace(second=0, microsecond=0)
    horizon = now + timedelta(days=370)
    step = timedelta(minutes=1)
    while len(out) < count and t < horizon:
        t += step
        active = schedule_active(policy, t)
        if active != state:
            out.append((t, active))
            state = active
    return out


MAX_FIRES = 300


def next_transitions(policy: dict, now: datetime, count: int = 5) -> list[tuple[datetime, bool]]:
    """The next `count` (time, becomes_active) changes of a scheduled policy, minute resolution.

    A cron schedule can only change state at a fire or at fire + duration, so only those instants
    are checked (a minute scan takes seconds for a daily cron, minutes for a monthly one)."""
    if "window" in policy:
        return _scan_transitions(policy, now, count)
    tz = ZoneInfo(policy.get("tz", "UTC"))
    duration = timedelta(minutes=policy.get("duration_minutes", 60))
    start = now.replace(second=0, microsecond=0)
    fires = croniter(policy["cron"], (start - duration).astimezone(tz), max_years_between_matches=_CRON_SEARCH_YEARS)
    candidates: set[datetime] = set()
    out: list[tuple[datetime, bool]] = []
    state = schedule_active(policy, now)
    horizon = now + timedelta(days=370)
    for _ in range(MAX_FIRES):  # a schedule that is always on (`* * * * *`) has no transitions
        if len(out) >= count:
            break
        try:
            fire = fires.get_next(datetime)
        except CroniterError:
            break  # no further fire (a schedule that never fires has no transitions)
        if fire > horizon:
            break
        candidates.update({fire, fire + duration})
        # Candidates are emitted in order once no later fire can add an earlier one.
        for t in sorted(c for c in candidates if start < c <= fire):
            candidates.discard(t)
            active = schedule_active(policy, t)
            if active != state:
                out.append((t, active))
                state = active
    return out[:count]


def _window_candidates(w: dict, now: datetime) -> list[datetime]:
    """Instants (UTC-comparable, after `now`) where a window can open or close: each day's start
    and end, as local wall-clock times, over the next 8 days (a window changes at least weekly)."""
    tz = ZoneInfo(w["tz"])
    today = now.astimezone(tz).date()
    out = []
    for offset in range(-1, 9):
        day = today + timedelta(days=offset)
        for minutes in (w["start"], w["end"]):
            # 24:00 and an overnight end fall on the next day; datetime.combine keeps the wall clock.
            local = datetime.combine(day, time(0), tz) + timedelta(minutes=minutes)
            # In UTC: a wall-clock time that a DST jump skips must not be read back as itself, and
            # one that a jump back repeats happens twice (fold 0 and 1).
            for fold in (0, 1):
                instant = datetime.combine(local.date(), local.time(), tz).replace(fold=fold).astimezone(UTC)
                if instant > now:
                    out.append(instant)
    return sorted(set(out))


def _offset_changes(tz: ZoneInfo, now: datetime, days: int) -> list[datetime]:
    """UTC instants in the next `days` where `tz` changes its offset (DST): a repeated or skipped
    wall-clock hour can switch a schedule on or off at an instant that is no day boundary."""
    out = []
    day = timedelta(days=1)
    t = now.astimezone(UTC).replace(second=0, microsecond=0)
    for _ in range(days):
        if t.astimezone(tz).utcoffset() != (t + day).astimezone(tz).utcoffset():
            lo, hi = t, t + day
            while hi - lo > timedelta(minutes=1):
                mid = (lo + (hi - lo) / 2).replace(second=0, microsecond=0)
                if mid.astimezone(tz).utcoffset() == lo.astimezone(tz).utcoffset():
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
        t += day
    return out


def next_change(policy: dict, now: datetime) -> datetime | None:
    """When a scheduled policy next switches on or off (minute resolution), else None (other
    policies, a schedule that never changes). The beat sweep reconciles a scheduled workload only
    once this time has come, so this is computed once per transition, not once per sweep: a
    window checks its ~18 day boundaries instead of scanning minutes."""
    if policy.get("kind") != "scheduled":
        return None
    if "cron" in policy:
        found = next_transitions(policy, now, 1)
        nxt = found[0][0].astimezone(UTC) if found else None
        tz = ZoneInfo(policy.get("tz", "UTC"))
        # Around a DST change the fires' candidates miss a repeated hour: look again at the change,
        # and for the few hours after one, scan minutes (bounded) as the preview does.
        soon = [*_offset_changes(tz, now, 9)[:1], *([nxt] if nxt else [])]
        if (now - timedelta(hours=3)).astimezone(tz).utcoffset() != now.astimezone(tz).utcoffset():
            state, t = schedule_active(policy, now), now.replace(second=0, microsecond=0)
            for _ in range(180):
                t += timedelta(minutes=1)
                if schedule_active(policy, t) != state:
                    soon.append(t.astimezone(UTC))
                    break
        return min(soon, default=None)
    if "window" not in policy:
        return None
    state = schedule_active(policy, now)
    previous = now
    w = policy["window"]
    candidates = sorted(_window_candidates(w, now) + _offset_changes(ZoneInfo(w["tz"]), now, 9))
    for candidate in candidates:
        if schedule_active(policy, candidate) != state:
            # A wall-clock time that a DST jump skips maps to an instant past the real change:
            # find the first minute that differs (bisection; once per transition).
            lo = previous.replace(second=0, microsecond=0)
            hi = candidate
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(second=0, microsecond=0)
                if mid <= lo:
                    break
                if schedule_active(policy, mid) != state:
                    hi = mid
                else:
                    lo = mid
            # UTC: an instant in a repeated wall-clock hour compares unequal across zones (PEP 495).
            return hi.astimezone(UTC)
        previous = candidate
    return None


@dataclass(frozen=True)
class Load:
    """What the autoscaler sees: requests in flight over the workload's replicas."""

    inflight: int = 0
    current_replicas: int = 0
    idle_seconds: float = 0.0


def desired_replicas(policy: dict, now: datetime, load: Load | None = None) -> int:
    kind = policy.get("kind", "fixed")
    if kind == "fixed":
        return policy.get("replicas", 1)
    if kind == "scheduled":
        return policy.get("replicas", 1) if schedule_active(policy, now) else 0
    load = load or Load()
    lo, hi = policy.get("min_workers") or 0, policy.get("max_workers") or 1
    want = math.ceil(load.inflight / max(1, policy.get("target_inflight_per_replica") or 4))
    if want < load.current_replicas and load.idle_seconds < policy.get("scale_down_delay_s", 300):
        want = load.current_replicas  # hold capacity until the scale-down delay has passed
    return max(lo, min(hi, want))


def default_time(minutes: int) -> time:
    return time(minutes // 60 % 24, minutes % 60)
