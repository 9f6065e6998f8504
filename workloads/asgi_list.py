"""ASGI fast path for `GET /api/projects/{project}/workloads`.

The SDK makes this call first on every ensure() and delete(), and it returns the whole project.
Served through Django it pays the full request machinery (middleware chain, request object,
thread hop, DRF dispatch) on every call. Here it runs the same checks (`accounts.auth`) and the
same body (`workloads.wire.project_list_json`) in one worker-thread call, so both paths answer
identically (tests/test_api.py runs against both).
"""
from __future__ import annotations

import json

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from accounts.auth import project_for, require_scope, sdk_token_for
from accounts.models import SdkScope
from inferencekey_web.lib.api_errors import ApiError

from .wire import project_list_json

PREFIX = "/api/projects/"
SUFFIX = "/workloads"


def match(method: str, path: str) -> str | None:
    """The project segment when this is the list route, else None."""
    if method != "GET" or not path.startswith(PREFIX) or not path.endswith(SUFFIX):
        return None
    project = path[len(PREFIX):-len(SUFFIX)]
    return project if project and "/" not in project else None


def _answer(authorization: str, project_ref: str) -> tuple[int, bytes]:
    close_old_connections()
    try:
        token = sdk_token_for(authorization)
        require_scope(token, SdkScope.WORKLOAD_READ)
        project = project_for(token, project_ref)
        return 200, project_list_json(project.id).encode()
    except ApiError as exc:
        return exc.status_code, json.dumps(exc.body).encode()
    finally:
        close_old_connections()


_answer_async = sync_to_async(_answer, thread_sensitive=False)


async def list_workloads(scope, receive, send, project_ref: str) -> None:
    authorization = ""
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
            break
    status, body = await _answer_async(authorization, project_ref)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
