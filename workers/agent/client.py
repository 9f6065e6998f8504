"""Control-plane HTTP client (PROTOCOL.md §1–2)."""

from __future__ import annotations

import httpx

from . import AGENT_VERSION


class ControlPlaneError(Exception):
    """Transient failure (network error, 5xx, unexpected reply): log and retry next tick."""


class Unauthorized(Exception):
    """401: join token rejected (register) or worker credential revoked (heartbeat)."""


class Rejected(Exception):
    """A non-retryable 4xx other than 401 (bad request, …)."""


def _error_text(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:300]
    return str(data)[:300]


class ControlPlaneClient:
    def __init__(self, server: str, timeout: float = 10.0, transport: httpx.BaseTransport | None = None):
        self.server = server.rstrip("/")
        self._http = httpx.Client(
            base_url=self.server,
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            headers={"User-Agent": f"inferencekey-agent/{AGENT_VERSION}"},
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            return self._http.post(path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ControlPlaneError(f"{path}: {type(exc).__name__}: {exc}") from exc

    def _json(self, resp: httpx.Response, path: str) -> dict:
        try:
            data = resp.json()
        except ValueError as exc:
            raise ControlPlaneError(f"{path}: HTTP {resp.status_code} with a non-JSON body") from exc
        if not isinstance(data, dict):
            raise ControlPlaneError(f"{path}: HTTP {resp.status_code} with a non-object body")
        return data

    def _check(self, resp: httpx.Response, path: str) -> None:
        if resp.status_code == 401:
            raise Unauthorized(_error_text(resp))
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise ControlPlaneError(f"{path}: HTTP {resp.status_code}: {_error_text(resp)}")
        if resp.status_code >= 400:
            raise Rejected(f"{path}: HTTP {resp.status_code}: {_error_text(resp)}")
        if resp.status_code >= 300:
            raise ControlPlaneError(f"{path}: unexpected HTTP {resp.status_code}")

    def register(self, body: dict) -> dict:
        path = "/api/agent/register"
        resp = self._post(path, body)
        self._check(resp, path)
        data = self._json(resp, path)
        if not isinstance(data.get("worker_id"), str) or not isinstance(data.get("worker_token"), str):
            raise ControlPlaneError(f"{path}: reply lacks worker_id/worker_token")
        return data

    def heartbeat(self, token: str, body: dict) -> dict:
        path = "/api/agent/heartbeat"
        resp = self._post(path, body, token=token)
        self._check(resp, path)
        data = self._json(resp, path)
        replicas = data.get("replicas", [])
        if not isinstance(replicas, list) or not all(isinstance(r, dict) for r in replicas):
            raise ControlPlaneError(f"{path}: 'replicas' is not a list of objects")
        return data

    def offline(self, token: str, engines_stopped: bool) -> None:
        """Say goodbye on a clean stop (PROTOCOL.md §4): the worker is marked offline at once."""
        path = "/api/agent/offline"
        self._check(self._post(path, {"engines_stopped": engines_stopped}, token=token), path)
