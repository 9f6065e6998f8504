"""Data-plane benchmark: direct to the engine vs through our gateway vs through LiteLLM's proxy.

    .venv/bin/python bench/bench_gateway.py [--rounds 3] [--duration 5] [--no-litellm]

Starts everything itself on loopback free ports, in a throwaway data dir (SQLite, migrated):
two stand-in engines (tests/standin_engine/server.py: asyncio, keep-alive; one answering at once,
one after 50 ms), the gateway (`uvicorn inferencekey_web.asgi:application`, 1 worker process), and
LiteLLM's proxy (1 worker, `openai/<model>` entries with `api_base` pointing at the same engines,
a master key, access log off). Optional: LiteLLM is skipped when `litellm` is not installed
(`pip install 'litellm[proxy]'`).

Load: `wrk` (Debian package) when on PATH, else a built-in asyncio keep-alive generator. Every
measurement is a bounded run (count and time) of non-streaming chat completions; the three targets
are measured interleaved (order rotated each round) and the median over rounds is reported:

1. added latency at concurrency 1, 0 ms engine (p50/p99; goal: gateway adds <= 1 ms at p50);
2. throughput at concurrency 64, 50 ms engine (goal: >= 0.9x direct and >= 8x LiteLLM);
3. the most requests/s one gateway process sustains on a 0 ms engine (goal: >= 1,500),
   with the gateway's CPU time per request.

Prints a table; asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "standin_engine" / "server.py"
MODEL = "org/bench-model"
PROMPT = [{"role": "user", "content": "Hello, how are you today?"}]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen, headers: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode} during startup")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status < 500:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:g}s")


def post_json(url: str, body: dict, headers: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **headers})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its children (threads included)."""
    total = 0.0
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                pids += [int(p) for p in fh.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError):
            pass
    return total


# ----------------------------------------------------------------------------- setup


def setup_database(data_dir: str, engine0: int, engine50: int) -> str:
    """Migrate a fresh SQLite DB and create a project, a data key and two ready workloads."""
    os.environ["INFERENCEKEY_DATA_DIR"] = data_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "inferencekey_web.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from accounts import services
    from workers.models import Replica, Worker
    from workloads.models import Workload

    call_command("migrate", verbosity=0, interactive=False)
    user = services.user_get_or_create(email="bench@example.com")
    team = services.team_create(name="Bench", owner=user, slug="bench")
    project = services.project_create(team=team, name="Bench", slug="bench")
    key = services.data_key_create(project=project).value
    worker = Worker.objects.create(team=team, name="local", address="127.0.0.1", state="online")
    for slug, port in (("bench-0", engine0), ("bench-50", engine50)):
        workload = Workload.objects.create(project=project, name=slug, slug=slug, model_name=MODEL, backend="vllm",
                                           task_type="text2text")
        Replica.objects.create(workload=workload, worker=worker, state="ready", port=port, launch={"api_base": "/v1"})
    return key


@dataclass
class Target:
    name: str
    url: dict  # engine delay (0 / 50) -> URL
    model: dict  # engine delay -> "model" in the request body
    headers: dict
    pid: int | None = None


@dataclass
class Stack:
    tmp: str
    procs: list = field(default_factory=list)
    targets: list = field(default_factory=list)

    def spawn(self, argv, name, env=None, log=True) -> subprocess.Popen:
        out = open(os.path.join(self.tmp, f"{name}.log"), "wb")
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def start_stack(tmp: str, with_litellm: bool) -> Stack:
    stack = Stack(tmp)
    py = sys.executable
    e0, e50 = free_port(), free_port()
    for port, delay in ((e0, 0), (e50, 50)):
        proc = stack.spawn([py, str(STANDIN), "serve", MODEL, "--host", "127.0.0.1", "--port", str(port),
                            "--delay-ms", str(delay)], f"engine-{delay}ms")
        wait_http(f"http://127.0.0.1:{port}/health", 20, proc)
    engines = {0: e0, 50: e50}
    key = setup_database(os.path.join(tmp, "data"), e0, e50)

    stack.targets.append(Target(
        "direct",
        {d: f"http://127.0.0.1:{p}/v1/chat/completions" for d, p in engines.items()},
        {0: MODEL, 50: MODEL}, {"authorization": f"Bearer {key}"},
    ))

    gw = free_port()
    proc = stack.spawn([py, "-m", "uvicorn", "inferencekey_web.asgi:application", "--host", "127.0.0.1", "--port", str(gw),
                        "--workers", "1", "--no-access-log", "--log-level", "warning"], "gateway",
                       env={"INFERENCEKEY_DATA_DIR": os.path.join(tmp, "data")})
    wait_http(f"http://127.0.0.1:{gw}/healthz", 60, proc)
    stack.targets.append(Target(
        "gateway",
        {d: f"http://127.0.0.1:{gw}/endpoint/bench/bench-{d}/v1/chat/completions" for d in engines},
        {0: "bench-0", 50: "bench-50"}, {"authorization": f"Bearer {key}"}, proc.pid,
    ))

    litellm = shutil.which("litellm", path=os.path.dirname(py)) or shutil.which("litellm")
    if with_litellm and litellm:
        ll = free_port()
        master = "sk-" + secrets.token_hex(32)
        cfg = os.path.join(tmp, "litellm.yaml")
        with open(cfg, "w") as fh:
            fh.write("model_list:\n")
            for d, p in engines.items():
                fh.write(f"  - model_name: bench-{d}\n    litellm_params:\n      model: openai/{MODEL}\n"
                         f"      api_base: http://127.0.0.1:{p}/v1\n      api_key: none\n")
            fh.write(f"litellm_settings:\n  telemetry: false\ngeneral_settings:\n  master_key: {master}\n")
        log_cfg = os.path.join(tmp, "litellm-log.json")
        with open(log_cfg, "w") as fh:  # no access log, as for our gateway
            json.dump({"version": 1, "disable_existing_loggers": False,
                       "loggers": {"uvicorn.access": {"level": "CRITICAL", "propagate": False}}}, fh)
        proc = stack.spawn([litellm, "--config", cfg, "--host", "127.0.0.1", "--port", str(ll), "--num_workers", "1",
                            "--log_config", log_cfg], "litellm",
                           env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
        wait_http(f"http://127.0.0.1:{ll}/health/liveliness", 120, proc)
        stack.targets.append(Target(
            "litellm",
            {d: f"http://127.0.0.1:{ll}/v1/chat/completions" for d in engines},
            {0: "bench-0", 50: "bench-50"}, {"authorization": f"Bearer {master}"}, proc.pid,
        ))
    elif with_litellm:
        print("litellm not installed: `pip install 'litellm[proxy]'` to compare with it", file=sys.stderr)

    for target in stack.targets:  # sanity: every target answers the same completion
        for d in engines:
            reply = post_json(target.url[d], body_for(target, d), target.headers)
            assert reply["choices"][0]["message"]["content"].startswith("echo: "), (target.name, reply)
    return stack


def body_for(target: Target, delay: int) -> dict:
    return {"model": target.model[delay], "messages": PROMPT, "max_tokens": 16}


# ----------------------------------------------------------------------------- load


@dataclass
class Result:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us_per_req: float | None = None


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, body: dict, headers: dict, concurrency: int, duration: float, tmp: str) -> Result:
    script = os.path.join(tmp, "post.lua")
    with open(script, "w") as fh:
        fh.write('wrk.method = "POST"\n')
        fh.write(f"wrk.body = {json.dumps(json.dumps(body))}\n")
        fh.write('wrk.headers["Content-Type"] = "application/json"\n')
        for name, value in headers.items():
            fh.write(f'wrk.headers["{name}"] = "{value}"\n')
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "--timeout", "10s",
                          "-s", script, url], capture_output=True, text=True, timeout=duration + 60).stdout
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return Result(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                  _wrk_ms(pct["50"]), _wrk_ms(pct["90"]), _wrk_ms(pct["99"]), requests, errors)


async def _py_load(url: str, body: bytes, headers: dict, concurrency: int, duration: float) -> Result:
    """Keep-alive HTTP/1.1 load on raw asyncio streams (the fallback when wrk is absent)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    head = (f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-type: application/json\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + f"content-length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + duration

    async def worker():
        nonlocal errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                writer.write(head)
                resp = await reader.readuntil(b"\r\n\r\n")
                status = int(resp[9:12])
                lower = resp.lower()
                if b"content-length:" in lower:
                    await reader.readexactly(int(lower.split(b"content-length:")[1].split(b"\r\n")[0]))
                else:  # chunked
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                latencies.append(time.perf_counter() - t0)
                if status >= 300:
                    errors += 1
        finally:
            writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    ms = sorted(x * 1000 for x in latencies)
    q = lambda f: ms[min(len(ms) - 1, int(len(ms) * f))]  # noqa: E731
    return Result(len(ms) / elapsed, statistics.median(ms), q(0.90), q(0.99), len(ms), errors)


def measure(target: Target, delay: int, concurrency: int, duration: float, tmp: str) -> Result:
    before = cpu_seconds(target.pid) if target.pid else None
    body = body_for(target, delay)
    if shutil.which("wrk"):
        result = run_wrk(target.url[delay], body, target.headers, concurrency, duration, tmp)
    else:
        result = asyncio.run(_py_load(target.url[delay], json.dumps(body).encode(), target.headers, concurrency, duration))
    if before is not None and result.requests:
        result.cpu_us_per_req = (cpu_seconds(target.pid) - before) / result.requests * 1e6
    return result


# ----------------------------------------------------------------------------- report


def med(results: list[Result], attr: str) -> float:
    values = [getattr(r, attr) for r in results if getattr(r, attr) is not None]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="ik-bench-gateway-")
    stack = None
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before start; "
          f"load generator: {'wrk' if shutil.which('wrk') else 'built-in asyncio'}", flush=True)
    try:
        stack = start_stack(tmp, not args.no_litellm)
        names = [t.name for t in stack.targets]
        scenarios = [  # (label, engine delay ms, concurrency)
            ("latency", 0, 1),
            ("throughput", 50, 64),
            ("max16", 0, 16),
            ("max64", 0, 64),
        ]
        results: dict[tuple[str, str], list[Result]] = {}
        for target in stack.targets:  # warm-up: pools, caches, JITless paths
            for delay in (0, 50):
                measure(target, delay, 16, 1.0, tmp)
        for rnd in range(args.rounds):
            order = stack.targets[rnd % len(stack.targets):] + stack.targets[: rnd % len(stack.targets)]
            for label, delay, conc in scenarios:
                for target in order:
                    res = measure(target, delay, conc, args.duration, tmp)
                    results.setdefault((label, target.name), []).append(res)
                    print(f"  round {rnd + 1} {label:<10} {target.name:<8} {res.rps:9.0f} rps  p50 {res.p50_ms:7.2f} ms  "
                          f"p99 {res.p99_ms:7.2f} ms  errors {res.errors}", flush=True)
        report(results, names, args)
    finally:
        if stack is not None:
            stack.stop()
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def report(results, names, args) -> None:
    def r(label, name):
        return results.get((label, name), [])

    print()
    print(f"Median of {args.rounds} interleaved rounds, {args.duration:g} s each; non-streaming chat completions.")
    width = 16
    print(f"{'':44}" + "".join(f"{n:>{width}}" for n in names))

    def row(title, values):
        print(f"{title:44}" + "".join(f"{v:>{width}}" for v in values))

    row("c=1, 0 ms engine: p50 latency", [f"{med(r('latency', n), 'p50_ms'):.3f} ms" for n in names])
    row("c=1, 0 ms engine: p99 latency", [f"{med(r('latency', n), 'p99_ms'):.3f} ms" for n in names])
    base = med(r("latency", "direct"), "p50_ms")
    row("  added p50 vs direct", ["-" if n == "direct" else f"+{med(r('latency', n), 'p50_ms') - base:.3f} ms" for n in names])
    row("c=64, 50 ms engine: throughput", [f"{med(r('throughput', n), 'rps'):.0f} rps" for n in names])
    direct_tp = med(r("throughput", "direct"), "rps")
    row("  vs direct", [f"{med(r('throughput', n), 'rps') / direct_tp:.2f}x" for n in names])
    row("c=64, 50 ms engine: p50 latency", [f"{med(r('throughput', n), 'p50_ms'):.1f} ms" for n in names])
    best = {n: max(med(r("max16", n), "rps"), med(r("max64", n), "rps")) for n in names}
    row("0 ms engine: max rps (best of c=16, c=64)", [f"{best[n]:.0f} rps" for n in names])
    row("  c=16 / c=64", [f"{med(r('max16', n), 'rps'):.0f}/{med(r('max64', n), 'rps'):.0f}" for n in names])
    row("  server CPU per request (c=64)",
        ["-" if n == "direct" else f"{med(r('max64', n), 'cpu_us_per_req'):.0f} us" for n in names])
    errors = {n: sum(x.errors for k, v in results.items() if k[1] == n for x in v) for n in names}
    row("non-2xx / socket errors (all runs)", [str(errors[n]) for n in names])

    print()
    added = med(r("latency", "gateway"), "p50_ms") - base
    gw_tp = med(r("throughput", "gateway"), "rps")
    goals = [
        (f"gateway adds <= 1 ms p50 at c=1: +{added:.3f} ms", added <= 1.0),
        (f"gateway throughput >= 0.9x direct at c=64/50 ms: {gw_tp / direct_tp:.2f}x", gw_tp >= 0.9 * direct_tp),
        (f"gateway sustains >= 1,500 rps on a 0 ms engine: {best['gateway']:.0f}", best["gateway"] >= 1500),
    ]
    if "litellm" in names:
        ll_tp = med(r("throughput", "litellm"), "rps")
        goals.append((f"gateway throughput >= 8x LiteLLM at c=64/50 ms: {gw_tp / ll_tp:.1f}x", gw_tp >= 8 * ll_tp))
        ll_added = med(r("latency", "litellm"), "p50_ms") - base
        print(f"(LiteLLM adds +{ll_added:.3f} ms p50 at c=1)")
    for text, ok in goals:
        print(f"  [{'met ' if ok else 'MISS'}] {text}")


if __name__ == "__main__":
    main()
