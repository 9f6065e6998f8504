"""A small fake Kubernetes API server on loopback: the Pod create / get / list / delete endpoints
the official client calls, each created Pod validated against the Kubernetes schema."""
from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import kubernetes_validate

SCHEMA_VERSION = "1.33"
_POD = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+))?$")


def status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class FakeKube:
    def __init__(self):
        self.pods: dict[tuple[str, str], dict] = {}
        self.quota_exceeded = False
        self.rejected: list[str] = []  # schema errors of refused bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def set_status(self, name: str, namespace: str = "default", **fields):
        self.pods[(namespace, name)]["status"].update(fields)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                url = urlparse(self.path)
                match = _POD.match(url.path)
                return (match, parse_qs(url.query)) if match else (None, {})

            def do_POST(self):  # noqa: N802
                match, _ = self._route()
                if not match or match["name"]:
                    return self._send(404, status(404, "NotFound", "no route"))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    kubernetes_validate.validate(body, SCHEMA_VERSION, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    fake.rejected.append(str(exc).splitlines()[0])
                    return self._send(422, status(422, "Invalid", str(exc).splitlines()[0]))
                if fake.quota_exceeded:
                    return self._send(403, status(403, "Forbidden", 'pods "x" is forbidden: exceeded quota: gpu-quota'))
                key = (match["ns"], body["metadata"]["name"])
                if key in fake.pods:
                    return self._send(409, status(409, "AlreadyExists", f'pods "{key[1]}" already exists'))
                body["metadata"].update(uid=str(uuid.uuid4()), namespace=match["ns"])
                body["status"] = {"phase": "Pending"}
                fake.pods[key] = body
                self._send(201, body)

            def do_GET(self):  # noqa: N802
                match, query = self._route()
                if not match:
                    return self._send(404, status(404, "NotFound", "no route"))
                if match["name"]:
                    pod = fake.pods.get((match["ns"], match["name"]))
                    if pod is None:
                        return self._send(404, status(404, "NotFound", f'pods "{match["name"]}" not found'))
                    return self._send(200, pod)
                wanted = dict(p.split("=", 1) for p in (query.get("labelSelector", [""])[0].split(",")) if p)
                items = [p for (ns, _), p in fake.pods.items() if ns == match["ns"]
                         and all(p["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
                self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

            def do_DELETE(self):  # noqa: N802
                match, _ = self._route()
                pod = fake.pods.pop((match["ns"], match["name"]), None) if match and match["name"] else None
                if pod is None:
                    return self._send(404, status(404, "NotFound", "not found"))
                self._send(200, pod)

        return Handler
