"""Serving correctness on the real stack: two agents on one host never answer for each other's
workloads, idle SDK clients keep working past the server's keep-alive, rolling updates drop no
request, and a readiness stream follows the newest generation."""
from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from inferencekey import DataClient, ManagementClient, WorkloadSpec

from .conftest import STANDIN_BIN, wait_for

pytestmark = pytest.mark.e2e

CHAT = {"messages": [{"role": "user", "content": "who are you"}]}


def mgmt_for(stack) -> ManagementClient:
    return ManagementClient(base_url=stack.base_url, sdk_token=stack.creds["sdk_token"], project="demo")


def spec(slug: str, model: str = "standin/tiny-chat", extra: str = "", **fields) -> WorkloadSpec:
    return WorkloadSpec(name=slug.title(), slug=slug, model=model, backend="vllm",
                        command=f"vllm serve {model} --max-model-len 512{extra}", **fields)


def chat(client: httpx.Client, slug: str) -> httpx.Response:
    return client.post(f"/endpoint/demo/{slug}/v1/chat/completions", json=CHAT)


def gateway_client(stack) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, timeout=30,
                        headers={"authorization": f"Bearer {stack.creds['api_key']}"})


@pytest.fixture(scope="module", autouse=True)
def _slow_route_cache():
    """A gateway route cache of 4 s (default 1 s) for this module's stack: the window in which a
    gateway may still route to a replica that was just replaced is wide enough for a test to see
    what happens when its engine is stopped too early."""
    saved = os.environ.get("GATEWAY_CACHE_TTL_S")
    os.environ["GATEWAY_CACHE_TTL_S"] = "4"
    yield
    if saved is None:
        os.environ.pop("GATEWAY_CACHE_TTL_S", None)
    else:
        os.environ["GATEWAY_CACHE_TTL_S"] = saved


@pytest.fixture(scope="module")
def second_agent(stack):
    """A private worker of team acme on the same machine, next to the shared local agent."""
    code = ("from accounts.models import Team; from workers import services; "
            "print(services.join_token_create(team=Team.objects.get(slug='acme'), name='mine', accepts_cpu=True).value)")
    token = stack.manage("shell", "-c", code).strip().splitlines()[-1]
    state = stack.data_dir / "agent-mine"
    env = {**stack.env, "PATH": f"{STANDIN_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "IK_JOIN_TOKEN": token}
    log = open(stack.data_dir / "agent-mine.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "workers.agent", "--server", stack.base_url, "--state-dir", str(state),
                             "--name", "mine", "--cpu-only", "--stop-engines-on-exit"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        creds = state / "credentials.json"
        yield wait_for(lambda: creds.exists() and json.loads(creds.read_text())["worker_id"], 30, what="registration")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()


@pytest.fixture
def impostors():
    """Programs answering like an OpenAI engine on the first free ports where the control plane
    places engines, the way another stack's or another user's engines would on a shared host."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            body = json.dumps({"model": "impostor", "choices": [{"message": {"content": "not yours"}}]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            self._answer()

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self._answer()

        def log_message(self, *args):
            pass

    servers = []
    for port in range(20000, 20010):
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError:
            continue  # already held by another program: just as good
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [s.server_address[1] for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_each_workload_is_answered_only_by_its_own_engine(stack, second_agent, impostors):
    mgmt = mgmt_for(stack)
    mgmt.ensure(spec("on-local", model="standin/model-a"))
    mgmt.ensure(spec("on-mine", model="standin/model-b", worker_id=second_agent))
    mgmt.wait_until_ready("on-local", timeout=90, silent=True)
    mgmt.wait_until_ready("on-mine", timeout=90, silent=True)
    with gateway_client(stack) as client:
        answers = {slug: [chat(client, slug) for _ in range(30)] for slug in ("on-local", "on-mine")}
    assert {r.status_code for rs in answers.values() for r in rs} == {200}
    assert {r.json()["model"] for r in answers["on-local"]} == {"standin/model-a"}
    assert {r.json()["model"] for r in answers["on-mine"]} == {"standin/model-b"}
    for slug in ("on-local", "on-mine"):
        mgmt.delete(slug)


def test_idle_sdk_clients_keep_working_past_the_keep_alive(stack):
    mgmt = mgmt_for(stack)
    mgmt.ensure(spec("idle"))
    mgmt.wait_until_ready("idle", timeout=90, silent=True)
    endpoint = DataClient(base_url=stack.base_url, project="demo").endpoint("idle", api_key=stack.creds["api_key"])
    assert endpoint.generate_text(prompt="hi").text == "echo: hi"
    for idle_s in (30, 100):
        time.sleep(idle_s)
        mgmt.ensure(spec("idle"))  # control plane: an unchanged spec, a read and no write
        assert endpoint.generate_text(prompt=f"after {idle_s}s").text == f"echo: after {idle_s}s"
    mgmt.delete("idle")


def _streamed_chat(client: httpx.Client, slug: str) -> tuple[int, str | None, str]:
    """(status, replica id, the text) of a streamed chat; the text ends with [DONE] only if complete."""
    body = {**CHAT, "stream": True}
    with client.stream("POST", f"/endpoint/demo/{slug}/v1/chat/completions", json=body) as response:
        try:
            text = "".join(response.iter_text())
        except httpx.HTTPError as exc:  # the connection dropped mid-stream
            text = f"broken: {exc!r}"
        return response.status_code, response.headers.get("x-inferencekey-replica"), text


def test_rolling_update_drops_no_request(stack):
    # Streams of ~2 s (a generation in progress): in flight whenever the old engine would be stopped.
    mgmt = mgmt_for(stack)
    mgmt.ensure(spec("roll", extra=" --stream-gap-ms 400"))
    mgmt.wait_until_ready("roll", timeout=90, silent=True)
    outcomes: list[tuple[int, str | None, str]] = []
    stop = threading.Event()

    def load():
        with gateway_client(stack) as client:
            while not stop.is_set():
                outcomes.append(_streamed_chat(client, "roll"))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(outcomes) > 4, 30, what="traffic")
        mgmt.ensure(spec("roll", model="standin/tiny-chat-v2", extra=" --stream-gap-ms 400"))  # a new generation
        mgmt.wait_until_ready("roll", timeout=90, silent=True)
        old = outcomes[0][1]
        wait_for(lambda: len(outcomes) > 8 and all(o[1] != old for o in outcomes[-8:]), 60, what="the switch-over")
        time.sleep(10)  # drain grace, in-flight streams finishing, SIGTERM: all under load
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    failed = [o for o in outcomes if o[0] != 200 or not o[2].rstrip().endswith("data: [DONE]")]
    assert failed == [], f"{len(failed)} of {len(outcomes)} requests failed"
    assert len({o[1] for o in outcomes}) == 2  # both generations served
    mgmt.delete("roll")


def _read_stream(stack, slug: str, frames: list) -> None:
    headers = {"authorization": f"Bearer {stack.creds['sdk_token']}", "accept": "text/event-stream"}
    url = f"{stack.base_url}/api/projects/demo/workloads/{slug}/readiness-events"
    with httpx.stream("GET", url, headers=headers, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                frames.append((time.monotonic(), json.loads(line[5:])))


def test_readiness_stream_opened_before_a_patch_follows_the_new_generation(stack, impostors):
    # (With the impostors on the first ports, an engine that could not bind its port used to be
    # reported ready at once: the stream then ended with a `ready` no engine of the workload gave.)
    mgmt = mgmt_for(stack)
    mgmt.ensure(spec("gen", extra=" --boot-s 3"))  # /health answers 503 for 3 s: not ready yet
    frames: list = []
    reader = threading.Thread(target=_read_stream, args=(stack, "gen", frames))
    reader.start()
    wait_for(lambda: frames, 30, what="the first frame")
    patched = time.monotonic()
    mgmt.ensure(spec("gen", model="standin/tiny-chat-v2", extra=" --boot-s 6"))
    reader.join(120)
    at, last = frames[-1]
    assert last["phase"] == "ready"
    assert at - patched >= 6  # the new generation's engine answers /health 6 s after its start at the earliest
    with gateway_client(stack) as client:
        wait_for(lambda: chat(client, "gen").json()["model"] == "standin/tiny-chat-v2", 10, what="the new engine")
    mgmt.delete("gen")


def test_wait_until_ready_after_a_patch_waits_for_the_new_generation(stack, impostors):
    mgmt = mgmt_for(stack)
    mgmt.ensure(spec("after"))
    mgmt.wait_until_ready("after", timeout=90, silent=True)
    for i in range(3):
        mgmt.ensure(spec("after", extra=f" --boot-s 3 --x {i}"))
        patched = time.monotonic()
        mgmt.wait_until_ready("after", timeout=90, silent=True)
        assert time.monotonic() - patched >= 3, i  # the new engine answers /health 3 s after its start
    mgmt.delete("after")
