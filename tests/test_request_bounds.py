"""Bounds on what the control plane accepts: unknown API paths, request bodies, agent reports."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/nope", "/api/projects/demo/nothing/here", "/api/agent/unknown"])
def test_unknown_api_path_is_a_json_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response["content-type"] == "application/json" and response.json()["error"] == "not found"


def test_unknown_dashboard_path_keeps_the_html_404(client):
    response = client.get("/no/such/page/here")
    assert response.status_code == 404 and response["content-type"].startswith("text/html")
